"""The live dashboard (`python finale/dashboard.py`): app.py (command line, Starlette app,
security headers, server-sent events), feed.py (the Kafka thread), state.py (what the page shows,
in memory), static/ (the page, its script and style, the vendored uPlot)."""
