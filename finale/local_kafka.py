"""A local Apache Kafka broker (KRaft, official jars) with the project's topics: fetch, start,
stop, status.

    python finale/local_kafka.py --help

The code is in finale/tools/local_kafka.py (the finale package, installed into the venv by
`make setup`).
"""
import sys

try:
    from finale.tools.local_kafka import main
except ModuleNotFoundError as missing:
    sys.exit(f"error: Python module {missing.name!r} not found: run `make setup`, then "
             "`source .venv/bin/activate` (or run .venv/bin/python)")

if __name__ == "__main__":
    sys.exit(main())
