"""The window metrics the analyzer publishes (topic `http-metrics`, record:
finale/common/window_metrics.py), computed from the counts its alerts query already has.

`window_metrics(counts, top_n)` is a pure DataFrame -> DataFrame function over a micro-batch of
metrics.entity_window_counts' output (the windows and entities the batch updated): per window, the
global scope's requests, errors and error rate, and the top_n IPs and URLs by errors among the
batch's rows. `metrics_sink` is the foreachBatch sink of pipeline.AlertBatch that writes them: the
logs are not read a second time, and no second aggregation keeps state.
"""
from __future__ import annotations

from collections.abc import Callable

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from finale.analyzer.metrics import GLOBAL_SCOPE
from finale.analyzer.sinks import BatchSink, kafka_sink
from finale.common import window_metrics as record

TOP_SCOPES = (("ip", "top_ips"), ("url", "top_urls"))


def window_metrics(counts: DataFrame, top_n: int) -> DataFrame:
    """Window counts (counts_columns()) -> one row per window of the global scope, with
    record.WINDOW_COLUMNS: the global counts, and for each of ip and url up to top_n entries
    {entity, requests, errors} with errors > 0, most errors first (then most requests, then the
    entity's name, so equal counts always come in the same order); an empty list when none.

    One aggregation per window (a single shuffle of the micro-batch's rows): the global row's
    counts, and the offenders collected and sorted on (-errors, -requests, entity)."""
    window = ["window_start", "window_end"]
    is_global = F.col("entity_type") == GLOBAL_SCOPE

    def offenders(scope: str):
        ranked = F.struct((-F.col("errors")).alias("by_errors"),
                          (-F.col("requests")).alias("by_requests"),
                          F.col("entity"), F.col("requests"), F.col("errors"))
        return F.collect_list(
            F.when((F.col("entity_type") == scope) & (F.col("errors") > 0), ranked))

    def top(name: str):
        return F.transform(F.slice(F.array_sort(name), 1, top_n), lambda entry: F.struct(
            entry["entity"].alias("entity"), entry["requests"].alias("requests"),
            entry["errors"].alias("errors"))).cast(record.ENTRY_TYPE)

    return (
        counts.groupBy(*window)
        .agg(*(F.max(F.when(is_global, F.col(name))).alias(name)
               for name in ("requests", "errors", "error_rate")),
             *(offenders(scope).alias(name) for scope, name in TOP_SCOPES))
        # A window whose global row the batch did not update (never, in the analyzer: every
        # line counts for the global scope) has no total to show.
        .where(F.col("requests").isNotNull())
        .select(*window, "requests", "errors", "error_rate",
                *(top(name).alias(name) for _, name in TOP_SCOPES))
    )


def metrics_records(metrics: DataFrame) -> DataFrame:
    """Records (record.COLUMNS) -> Kafka records: key = "<window_start>/<window_end>" (ISO 8601
    UTC, as in the value), value = the record as JSON."""
    iso = "yyyy-MM-dd'T'HH:mm:ss.SSS'Z'"
    return metrics.select(
        F.concat(F.date_format("window_start", iso), F.lit("/"),
                 F.date_format("window_end", iso)).alias("key"),
        F.to_json(F.struct(*record.COLUMNS)).alias("value"),
    )


def metrics_sink(bootstrap_servers: str, topic: str, top_n: int,
                 health: Callable[[], dict], emitted_at: Callable[[], object]) -> BatchSink:
    """The foreachBatch sink of the window counts: window_metrics + the batch's own fields
    (batch_id; backlog and dead_letters_total from `health()`, the analyzer's latest status;
    emitted_at) -> `topic`."""
    def write(counts_batch: DataFrame, batch_id: int) -> None:
        status = health()
        metrics = window_metrics(counts_batch, top_n).select(
            *record.WINDOW_COLUMNS,
            F.lit(batch_id).cast("bigint").alias("batch_id"),
            F.lit(status.get("backlog")).cast("bigint").alias("backlog"),
            F.lit(status.get("dead_letters_total")).cast("bigint").alias("dead_letters_total"),
            emitted_at().alias("emitted_at"))
        kafka_sink(bootstrap_servers, topic, metrics_records)(metrics, batch_id)
    return write
