"""Stage 3's analyzer: Spark Structured Streaming, Kafka http-logs in, alerts and dead letters out.

    python finale/spark_streaming_analyzer.py --help

The code is in finale/analyzer/app.py (the finale package, installed into the venv by `make setup`).
"""
import sys

try:
    from finale.analyzer.app import main
except ModuleNotFoundError as missing:
    sys.exit(f"error: Python module {missing.name!r} not found: run `make setup`, then "
             "`source .venv/bin/activate` (or run .venv/bin/python)")

if __name__ == "__main__":
    sys.exit(main())
