"""The analyzer's Prometheus metrics: `--metrics-port PORT` serves them on /metrics.

Every value comes from Spark's own StreamingQueryProgress (received by a StreamingQueryListener,
as status.py's), from the alert handler's per-batch counts and from the thresholds file in use;
prometheus-client holds and exposes them. The list, with what each is for, is in
docs/monitoring.md; the Prometheus rules that read them are in conf/prometheus/.

Counters (`_total`) sum every micro-batch since the analyzer started; gauges are the latest
batch's. `query` is the streaming query: `alerts` or `dead-letters` (both read every line).
"""
from __future__ import annotations

import time
from datetime import datetime

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    ProcessCollector,
    start_http_server,
)

from finale.analyzer.status import backlog

PREFIX = "chaussettes_analyzer_"
# The Kafka source's own backlog statistics (per partition, after the batch), when it reports them.
KAFKA_BEHIND = {"avgOffsetsBehindLatest": "avg", "maxOffsetsBehindLatest": "max",
                "minOffsetsBehindLatest": "min"}


def _epoch(text: str | None) -> float | None:
    """Spark's progress time ('2026-11-28T09:00:00.000Z') as Unix seconds, None if absent."""
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class AnalyzerMetrics:
    """The metrics, in their own registry (so several analyzers can live in one test process)."""

    def __init__(self, thresholds=None):
        self.registry = registry = CollectorRegistry()
        ProcessCollector(registry=registry)  # process_start_time_seconds, CPU, memory

        def gauge(name, doc, labels=()):
            return Gauge(PREFIX + name, doc, labels, registry=registry)

        def counter(name, doc, labels=()):
            return Counter(PREFIX + name, doc, labels, registry=registry)

        self.input_rate = gauge("input_rows_per_second",
                                "rows/s arriving, latest micro-batch (Spark inputRowsPerSecond)",
                                ["query"])
        self.processed_rate = gauge(
            "processed_rows_per_second",
            "rows/s processed, latest micro-batch (Spark processedRowsPerSecond)", ["query"])
        self.input_rows = counter("input_rows", "Kafka records read", ["query"])
        self.batches = counter("batches", "micro-batches completed", ["query"])
        self.batch_duration = gauge("batch_duration_seconds",
                                    "duration of the latest micro-batch", ["query"])
        self.last_batch = gauge("last_batch_timestamp_seconds",
                                "when the latest micro-batch completed (Unix time)", ["query"])
        self.last_trigger = gauge(
            "last_trigger_timestamp_seconds",
            "when the query's trigger loop last reported: a completed micro-batch, or an idle "
            "trigger (Spark posts one about every 10 s without input) (Unix time)", ["query"])
        self.backlog = gauge("backlog_records",
                             "records in the topic beyond the latest micro-batch, all partitions "
                             "(latest offsets when it was planned - its end offsets)", ["query"])
        self.kafka_behind = gauge("kafka_offsets_behind_latest",
                                  "Kafka source's offsets behind the latest, per partition "
                                  "(stat: avg, max, min), when the source reports it",
                                  ["query", "stat"])
        self.watermark_lag = gauge("watermark_lag_seconds",
                                   "the latest micro-batch's start - its event-time watermark",
                                   ["query"])
        self.dead_letters = counter("dead_letters", "lines routed to the dead-letter topic",
                                    ["reason"])
        self.late_rows = counter("late_rows_dropped",
                                 "window rows dropped by the watermark "
                                 "(Spark numRowsDroppedByWatermark)", ["query"])
        self.state_rows = gauge("state_rows", "rows in the query's state store", ["query"])
        self.requests = counter("requests", "valid access-log lines counted by the windows")
        self.request_errors = counter("request_errors",
                                      "of those, the lines with a status >= 400")
        self.alerts = counter("alerts", "alert versions emitted", ["rule", "severity"])
        self.thresholds_info = gauge("thresholds_info",
                                     "1 for the thresholds version in use", ["version"])
        self.thresholds_age = gauge(
            "thresholds_age_seconds",
            "age of the thresholds file in use (now - its mtime); 0 with the built-in defaults")
        self.thresholds_failing = gauge(
            "thresholds_reload_failing",
            "1 while the thresholds file on disk is invalid (the last good one stays in use)")
        self.thresholds_errors = counter("thresholds_reload_errors",
                                         "reloads of the thresholds file that failed")
        self.thresholds = thresholds
        self._version: str | None = None
        self._reload_errors_seen = 0
        self.watch_thresholds()

    def watch_thresholds(self) -> None:
        """Read the age and the failing state from `self.thresholds` (a ThresholdsFile) at each
        scrape."""
        thresholds = self.thresholds
        if thresholds is not None:
            self.thresholds_age.set_function(self._thresholds_age)
            self.thresholds_failing.set_function(lambda: 1.0 if thresholds.error else 0.0)

    def _thresholds_age(self) -> float:
        mtime = getattr(self.thresholds, "loaded_mtime", None)
        return max(0.0, time.time() - mtime) if mtime else 0.0

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        start_http_server(port, addr=host, registry=self.registry)

    def record(self, progress, alerts_by_rule: dict[tuple[str, str], int] | None = None) -> None:
        """Account one StreamingQueryProgress (alerts_by_rule: that batch's alerts)."""
        query = progress.name
        self.input_rate.labels(query).set(progress.inputRowsPerSecond or 0.0)
        self.processed_rate.labels(query).set(progress.processedRowsPerSecond or 0.0)
        self.input_rows.labels(query).inc(progress.numInputRows)
        self.batches.labels(query).inc()
        self.batch_duration.labels(query).set(progress.batchDuration / 1000.0)
        self.last_batch.labels(query).set_to_current_time()
        self.last_trigger.labels(query).set_to_current_time()
        behind = backlog(progress.sources)
        if behind is not None:
            self.backlog.labels(query).set(behind)
        for source in progress.sources:
            for key, stat in KAFKA_BEHIND.items():
                value = (source.metrics or {}).get(key)
                if value is not None:
                    self.kafka_behind.labels(query, stat).set(float(value))
        watermark, started = (_epoch((progress.eventTime or {}).get("watermark")),
                              _epoch(progress.timestamp))
        if watermark and started:  # 0 (1970) until the first line sets it
            self.watermark_lag.labels(query).set(max(0.0, started - watermark))
        observed = progress.observedMetrics or {}
        dead = observed.get("dead_letters")
        if dead is not None:
            for reason, count in dead.asDict().items():
                if reason not in ("count", "future") and count:
                    self.dead_letters.labels(reason).inc(int(count))
        lines = observed.get("lines")
        if lines is not None:
            self.requests.inc(int(lines["requests"] or 0))
            self.request_errors.inc(int(lines["errors"] or 0))
        if progress.stateOperators:
            self.late_rows.labels(query).inc(
                sum(op.numRowsDroppedByWatermark for op in progress.stateOperators))
            self.state_rows.labels(query).set(
                sum(op.numRowsTotal for op in progress.stateOperators))
        for (rule, severity), count in (alerts_by_rule or {}).items():
            self.alerts.labels(rule, severity).inc(count)
        if self.thresholds is not None and query == "alerts":
            self._record_thresholds()

    def _record_thresholds(self) -> None:
        version = self.thresholds.version or "none"
        if version != self._version:
            if self._version is not None:
                self.thresholds_info.remove(self._version)
            self.thresholds_info.labels(version).set(1)
            self._version = version
        errors = getattr(self.thresholds, "reload_errors", 0)
        if errors > self._reload_errors_seen:
            self.thresholds_errors.inc(errors - self._reload_errors_seen)
            self._reload_errors_seen = errors

    def listener(self, alert_stats_by_rule: dict[int, dict] | None = None):
        """A StreamingQueryListener feeding these metrics (alert_stats_by_rule:
        AlertBatch.by_rule, batch id -> {(rule, severity): count})."""
        from pyspark.sql.streaming import StreamingQueryListener

        metrics = self

        class MetricsListener(StreamingQueryListener):
            names: dict[str, str] = {}

            def onQueryStarted(self, event):
                self.names[str(event.id)] = event.name

            def onQueryProgress(self, event):
                progress = event.progress
                by_rule = None
                if progress.name == "alerts" and alert_stats_by_rule is not None:
                    by_rule = alert_stats_by_rule.get(progress.batchId)
                metrics.record(progress, by_rule)

            def onQueryIdle(self, event):
                name = self.names.get(str(event.id))
                if name:
                    metrics.last_trigger.labels(name).set_to_current_time()

            def onQueryTerminated(self, event):
                pass

        return MetricsListener()
