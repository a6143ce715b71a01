"""Stage 3's shipper: a web server's access log followed into Kafka by rsyslog (`make ship`).

    python finale/ship.py --help

The code is in finale/tools/ship.py (the finale package, installed into the venv by
`make setup`).
"""
import signal
import sys

try:
    from finale.tools.ship import main
except ModuleNotFoundError as missing:
    sys.exit(f"error: Python module {missing.name!r} not found: run `make setup`, then "
             "`source .venv/bin/activate` (or run .venv/bin/python)")

if __name__ == "__main__":
    # SIGTERM ends like Ctrl-C: rsyslogd stopped cleanly, its queue saved and position written.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    sys.exit(main())
