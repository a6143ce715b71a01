"""Stage 3's log generator: the sock shop's Apache access log into Kafka (http-logs), with
incidents.

    python finale/log_generator.py --help

The code is in finale/generator/app.py (the finale package, installed into the venv by
`make setup`).
"""
import sys

try:
    from finale.generator.app import main
except ModuleNotFoundError as missing:
    sys.exit(f"error: Python module {missing.name!r} not found: run `make setup`, then "
             "`source .venv/bin/activate` (or run .venv/bin/python)")

if __name__ == "__main__":
    sys.exit(main())
