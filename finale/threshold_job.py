"""Stage 3's threshold job: a Spark batch job that learns every rule's thresholds from past logs.

    python finale/threshold_job.py --help

The code is in finale/analyzer/threshold_job.py (the finale package, installed into the venv by
`make setup`).
"""
import sys

try:
    from finale.analyzer.threshold_job import main
except ModuleNotFoundError as missing:
    sys.exit(f"error: Python module {missing.name!r} not found: run `make setup`, then "
             "`source .venv/bin/activate` (or run .venv/bin/python)")

if __name__ == "__main__":
    sys.exit(main())
