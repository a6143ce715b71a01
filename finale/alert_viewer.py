"""Stage 3's alert viewer: the alerts topic as a live table in the terminal (or JSON lines).

    python finale/alert_viewer.py --help

The code is in finale/tools/alert_viewer.py (the finale package, installed into the venv by
`make setup`).
"""
import signal
import sys

try:
    from finale.tools.alert_viewer import main
except ModuleNotFoundError as missing:
    sys.exit(f"error: Python module {missing.name!r} not found: run `make setup`, then "
             "`source .venv/bin/activate` (or run .venv/bin/python)")

if __name__ == "__main__":
    # SIGTERM (the demo stopping us) ends like Ctrl-C: a clean exit, consumer closed.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    sys.exit(main())
