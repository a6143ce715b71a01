"""Stage 3's live dashboard: the traffic of the last 15 minutes and its alerts on one web page.

    python finale/dashboard.py --help
    python finale/dashboard.py                      # then open http://127.0.0.1:8080/

The code is in finale/web/ (the finale package, installed into the venv by `make setup`).
"""
import signal
import sys

try:
    from finale.web.app import main
except ModuleNotFoundError as missing:
    sys.exit(f"error: Python module {missing.name!r} not found: run `make setup`, then "
             "`source .venv/bin/activate` (or run .venv/bin/python)")

if __name__ == "__main__":
    # SIGTERM before the server starts (the demo stopping us early) ends like Ctrl-C.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    sys.exit(main())
