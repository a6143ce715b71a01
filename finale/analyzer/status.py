"""The analyzer's progress, machine-readable: one JSON file, replaced atomically after every
micro-batch.

{"pid", "started_at", "updated_at", "queries": {NAME: {
    "name", "id", "active", "batch_id", "rows_read", "rows_read_total", "input_offsets", "backlog",
    "watermark", "state_rows", "alerts_emitted", "alerts_emitted_total", "dead_letters",
    "dead_letters_total", "future_timestamps", "future_timestamps_total", "late_rows_dropped",
    "late_rows_dropped_total", "thresholds_version", "thresholds_error", "batch_duration_ms",
    "updated_at", "error"}}}

Times are ISO 8601 UTC. `rows_read` and the per-batch counts are those of the query's latest
micro-batch, the `_total` ones sum every batch since the analyzer started. A healthy analyzer: every
query `active` and `updated_at` recent (a micro-batch runs at least once per trigger, even idle
ones report progress about every 10 s). The human status line of each batch goes to the log.
`future_timestamps` (dead-letters query): the dead letters dated beyond --max-future.
`late_rows_dropped` (alerts query): Spark's numRowsDroppedByWatermark, the (window, entity) rows
of lines older than the watermark that the aggregation dropped (rows, not lines: a line counts in
up to 3 scopes x window/slide windows, partially aggregated first; 0 means no line was dropped).
`thresholds_version` / `thresholds_error` (alerts query): the thresholds in use, and why the file
on disk is not (null when it is).
"""
from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from finale.common.cli import write_json_atomically


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def read_status(path: Path) -> dict:
    """The status document, or {} while the analyzer has not written one (or it cannot be read)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


class StatusFile:
    """The status document of one analyzer run, rewritten whole after every change."""

    def __init__(self, path: Path | None):
        self.path = None if path is None else Path(path)
        self.lock = threading.Lock()
        self.document = {"pid": os.getpid(), "started_at": now_iso(), "updated_at": now_iso(),
                         "queries": {}}

    def update(self, name: str, **fields) -> None:
        with self.lock:
            query = self.document["queries"].setdefault(name, {"name": name})
            for key, value in fields.items():
                if key.endswith("_total"):
                    value += query.get(key, 0)
                query[key] = value
            query["updated_at"] = self.document["updated_at"] = now_iso()
            if self.path is not None:
                write_json_atomically(self.path, self.document, indent=None)


def pipeline_health(status: StatusFile) -> dict:
    """What the window-metrics record says of the pipeline, from the latest progress: the alerts
    query's backlog and the dead letters written since start (None while unknown)."""
    with status.lock:
        queries = status.document["queries"]
        return {"backlog": queries.get("alerts", {}).get("backlog"),
                "dead_letters_total": queries.get("dead-letters", {}).get("dead_letters_total")}


def _offsets(source, which: str = "endOffset") -> object:
    offsets = getattr(source, which)
    try:
        return json.loads(offsets) if isinstance(offsets, str) else offsets
    except ValueError:
        return offsets


def backlog(sources) -> int | None:
    """Records in the topics beyond this batch when it was planned: the latest offsets (fetched to
    plan it) minus its end offsets, summed over partitions; None when a source does not report both
    (a batch re-run from the offset log after a restart fetches no latest offsets)."""
    behind = 0
    for source in sources:
        latest, end = _offsets(source, "latestOffset"), _offsets(source)
        if not isinstance(latest, dict) or not isinstance(end, dict):
            return None
        for topic, partitions in latest.items():
            for partition, offset in partitions.items():
                behind += max(0, int(offset) - int(end.get(topic, {}).get(partition, offset)))
    return behind


def progress_fields(progress, alert_stats: dict[int, int]) -> dict:
    """The status fields of one StreamingQueryProgress (alert_stats: AlertBatch.stats)."""
    observed = (progress.observedMetrics or {}).get("dead_letters")
    dead = int(observed["count"]) if observed is not None else 0
    future = int(observed["future"]) if observed is not None else 0
    late = sum(op.numRowsDroppedByWatermark for op in progress.stateOperators)
    alerts_out = alert_stats.get(progress.batchId, 0) if progress.name == "alerts" else 0
    return {
        "id": str(progress.id), "active": True, "batch_id": progress.batchId,
        "rows_read": progress.numInputRows, "rows_read_total": progress.numInputRows,
        "input_offsets": [_offsets(source) for source in progress.sources],
        "backlog": backlog(progress.sources),
        "watermark": (progress.eventTime or {}).get("watermark"),
        "state_rows": sum(op.numRowsTotal for op in progress.stateOperators),
        "alerts_emitted": alerts_out, "alerts_emitted_total": alerts_out,
        "dead_letters": dead, "dead_letters_total": dead,
        "future_timestamps": future, "future_timestamps_total": future,
        "late_rows_dropped": late, "late_rows_dropped_total": late,
        "batch_duration_ms": progress.batchDuration, "error": None,
    }


def status_line(progress, fields: dict, alert_stats: dict[int, int]) -> str:
    """The human line of one micro-batch: lines in, dead letters / window rows and alerts out."""
    rate = progress.processedRowsPerSecond or 0.0
    if progress.name == "alerts":
        # Update mode: every window row the aggregation updated is one row of the batch.
        updated = sum(op.numRowsUpdated for op in progress.stateOperators)
        out = alert_stats.get(progress.batchId, 0)
        detail = (f"{updated} window rows updated, {out} alerts out, "
                  f"watermark {fields['watermark'] or '-'}, "
                  f"{fields['late_rows_dropped']} late rows dropped")
    else:
        detail = (f"{fields['dead_letters']} dead letters out "
                  f"({fields['future_timestamps']} future timestamps)")
    behind = "?" if fields["backlog"] is None else fields["backlog"]
    return (f"{progress.name} batch {progress.batchId}: {progress.numInputRows} lines in "
            f"({rate:.0f} lines/s), {detail}, backlog {behind}")


def make_status_listener(alert_stats: dict[int, int], status: StatusFile,
                         log: Callable[[str], None], thresholds=None):
    """A listener writing the status file and one log line per micro-batch and query.
    `thresholds`: the alerts query's ThresholdsFile, whose version and error go in its status."""
    from pyspark.sql.streaming import StreamingQueryListener

    class StatusListener(StreamingQueryListener):
        names: dict[str, str] = {}

        def onQueryStarted(self, event):
            self.names[str(event.id)] = event.name
            status.update(event.name, id=str(event.id), active=True, error=None)

        def onQueryProgress(self, event):
            fields = progress_fields(event.progress, alert_stats)
            if thresholds is not None and event.progress.name == "alerts":
                fields.update(thresholds_version=thresholds.version,
                              thresholds_error=thresholds.error)
            status.update(event.progress.name, **fields)
            log(status_line(event.progress, fields, alert_stats))

        def onQueryIdle(self, event):
            pass

        def onQueryTerminated(self, event):
            name = self.names.get(str(event.id), str(event.id))
            error = failure_line(event.exception) if event.exception else None
            status.update(name, active=False, error=error)
            if error:
                log(f"query {name} failed: {error}")

    return StatusListener()


def failure_line(exception) -> str:
    """The one line that says why a query failed: a sink's own SinkError line (it names the sink)
    when the failure came from one, else the first line of Spark's message."""
    text = str(exception)
    sink = re.search(r"SinkError: (.*)", text)
    return sink.group(1).strip() if sink else (text.strip().splitlines() or ["unknown"])[0]
