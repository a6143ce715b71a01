"""Stage 3's alert notifier: the alerts topic -> Alertmanager (which pages people).

    python finale/alert_notifier.py --alertmanager-url http://127.0.0.1:9093

The code is in finale/tools/alert_notifier.py (the finale package, installed into the venv by
`make setup`).
"""
import sys

try:
    from finale.tools.alert_notifier import main
except ModuleNotFoundError as missing:
    sys.exit(f"error: Python module {missing.name!r} not found: run `make setup`, then "
             "`source .venv/bin/activate` (or run .venv/bin/python)")

if __name__ == "__main__":
    sys.exit(main())
