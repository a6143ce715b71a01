"""The window-metrics record: the traffic of each window, as the analyzer counted it for its alerts.

The analyzer (finale/analyzer/metrics_record.py) writes one record per window its alerts query
updated, in each micro-batch, to topic `http-metrics` (finale/common/topics.py); the dashboard
(finale/dashboard/) reads them. Key = "<window_start>/<window_end>"; value = one JSON object with
these keys (docs/records.md has the same table for readers):

| field | type | what |
|---|---|---|
| window_start, window_end | timestamp | the event-time window (UTC) |
| requests, errors | long | the window's counts for the global scope, so far |
| error_rate | double | errors / requests |
| top_ips, top_urls | array | [{"entity", "requests", "errors"}]: most errors first (see below) |
| batch_id | long | the micro-batch of the alerts query that wrote this version |
| backlog | long | input records beyond the previous micro-batch (null: unknown) |
| dead_letters_total | long | lines sent to the dead-letter topic since the analyzer started |
| emitted_at | string | when the analyzer emitted this version (ISO 8601 UTC, milliseconds) |

top_ips and top_urls: among the IPs and URLs that the micro-batch updated in that window, those
with errors, at most the analyzer's --metrics-top of each.

A window that receives lines in several micro-batches is written again with its grown counts: the
latest version of a key wins (its counts only grow). Readers must accept a field that is null or
absent (a record of an older analyzer).
"""
from __future__ import annotations

import json

ENTRY_TYPE = "array<struct<entity:string,requests:bigint,errors:bigint>>"
# How many IPs and URLs a record names by default (the analyzer's --metrics-top).
DEFAULT_TOP = 5

# (name, Spark SQL type), in the order of the DataFrame columns and of the JSON keys.
FIELDS: tuple[tuple[str, str], ...] = (
    ("window_start", "timestamp"),
    ("window_end", "timestamp"),
    ("requests", "bigint"),
    ("errors", "bigint"),
    ("error_rate", "double"),
    ("top_ips", ENTRY_TYPE),
    ("top_urls", ENTRY_TYPE),
    ("batch_id", "bigint"),
    ("backlog", "bigint"),
    ("dead_letters_total", "bigint"),
    ("emitted_at", "string"),
)
COLUMNS = tuple(name for name, _ in FIELDS)
# What the pure function of the counts computes: the batch's own fields are added when written.
WINDOW_COLUMNS = COLUMNS[:7]
TYPES = dict(FIELDS)
DDL = ", ".join(f"{name} {kind}" for name, kind in FIELDS)
WINDOW_DDL = ", ".join(f"{name} {TYPES[name]}" for name in WINDOW_COLUMNS)


def key(record: dict) -> str:
    """The Kafka key of a record: its window, "<window_start>/<window_end>"."""
    return f"{record['window_start']}/{record['window_end']}"


def decode(value: bytes | str | None) -> dict | None:
    """The record in a Kafka value, or None if it is not a JSON object with a window and counts."""
    try:
        record = json.loads(value) if value is not None else None
    except (TypeError, ValueError):
        return None
    if not isinstance(record, dict):
        return None
    if not all(isinstance(record.get(name), str) for name in ("window_start", "window_end")):
        return None
    if not all(isinstance(record.get(name), int) and not isinstance(record.get(name), bool)
               for name in ("requests", "errors")):
        return None
    return record
