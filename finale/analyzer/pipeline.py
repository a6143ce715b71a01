"""The analyzer's pipeline: typed DataFrame -> DataFrame functions, and the two streaming queries
they make (build_queries); finale/analyzer/app.py only wires a source, sinks and triggers to them.

Two queries read the same input (one access-log line per Kafka record):
- `dead-letters`: lines that do not parse, or are dated more than `max_future` after their
  record's timestamp, go to the dead-letter sink with the original key and value and why
  (`reason`: empty_record, empty_line, unparseable, bad_timestamp, future_timestamp); they never
  stop the job and never hide the good lines. This query finds them from the line's shape and
  date alone (dead_letters), without the full parse that only the alerts query needs.
- `alerts`: the good lines, with a watermark on their own time, counted per sliding window for
  every scope in one stateful aggregation (metrics.entity_window_counts, update mode); each
  micro-batch runs every rule with thresholds on the windows it updated (rules.fire_all) and
  hands the alerts to the alert sink, then the same counts to the window-metrics sink
  (metrics_record.py), if any.
"""
from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import DataStreamWriter

from finale.analyzer.access_log import (
    LINE_PATTERN,
    TIME_GROUP,
    parse_access_log,
    parse_time,
)
from finale.analyzer.checkpoint import alerts_checkpoint_plan
from finale.analyzer.metrics import entity_window_counts
from finale.analyzer.rules import fire_all
from finale.analyzer.settings import Settings
from finale.analyzer.sinks import BatchSink
from finale.analyzer.thresholds import ThresholdsFile
from finale.common.cli import duration_seconds

# The Kafka record fields a dead letter keeps (sinks.dead_letter_records): column -> type. A source
# without them (memory or rate source in tests) gives nulls.
KAFKA_METADATA = (("kafka_key", "key", "binary"), ("kafka_partition", "partition", "int"),
                  ("kafka_offset", "offset", "long"), ("kafka_timestamp", "timestamp", "timestamp"))
# Dead-letter reasons, most specific first (the `reason` header of http-logs-dlq).
EMPTY_RECORD, EMPTY_LINE = "empty_record", "empty_line"
UNPARSEABLE, BAD_TIMESTAMP, FUTURE_TIMESTAMP = "unparseable", "bad_timestamp", "future_timestamp"
DEAD_LETTER_REASONS = (EMPTY_RECORD, EMPTY_LINE, UNPARSEABLE, BAD_TIMESTAMP, FUTURE_TIMESTAMP)
MAX_FUTURE_S = duration_seconds(Settings.max_future)


def log_lines(records: DataFrame) -> DataFrame:
    """Kafka records (or any frame with a string/binary `value`) -> `value` as a string and the
    record's KAFKA_METADATA (kafka_key, kafka_partition, kafka_offset, kafka_timestamp)."""
    return records.select(
        F.col("value").cast("string").alias("value"),
        *((F.col(field) if field in records.columns else F.lit(None)).cast(kind).alias(name)
          for name, field, kind in KAFKA_METADATA))


def record_clock(source: DataFrame) -> Column:
    """The time a line's date is checked against (--max-future): the Kafka record's timestamp when
    the source has one, else the micro-batch's own time (current_timestamp(): memory or rate
    sources).

    The record's timestamp is the broker's clock when it stored the line on http-logs (created with
    message.timestamp.type=LogAppendTime, finale/common/topics.py), the producer's on a CreateTime
    topic (the broker refuses one more than message.timestamp.after.max.ms ahead of its own, 1 hour
    by default). Either way it is a column, not the batch's clock: a line is judged the same way by
    both queries and by every replay of the topic, and the generated code stays the same from batch
    to batch (current_timestamp() is a new constant in each batch, which Spark writes into the
    generated Java as a literal: each batch would compile its code again; the cost is measured by
    bench/bench_finale_batch_cost.py)."""
    return F.col("kafka_timestamp") if "timestamp" in source.columns else F.current_timestamp()


def in_the_future(clock: Column, max_future_s: float = MAX_FUTURE_S,
                  event_time: Column | None = None) -> Column:
    """True for a line whose `event_time` (default: the column event_time) is more than
    max_future_s after `clock` (record_clock's)."""
    tolerance = F.make_dt_interval(secs=F.lit(max_future_s).cast("decimal(18,6)"))
    return (F.col("event_time") if event_time is None else event_time) > clock + tolerance


def valid_lines(parsed: DataFrame, clock: Column, max_future_s: float = MAX_FUTURE_S) -> DataFrame:
    """The lines the windows count: parsed, and not dated beyond the future tolerance (one such
    line would push the watermark past every real line and silence alerting)."""
    return parsed.where(~F.col("malformed") & ~in_the_future(clock, max_future_s))


def dead_letter_reason(value: Column, event_time: Column, shaped: Column, clock: Column,
                       max_future_s: float) -> Column:
    """Why a line is a dead letter, most specific reason first; null for a line the windows
    count. `shaped`: the line has the access-log shape (LINE_PATTERN); `event_time`: its [%t]
    parsed, null if not a valid date."""
    return (F.when(value.isNull(), F.lit(EMPTY_RECORD))
            .when(F.trim(value) == "", F.lit(EMPTY_LINE))
            .when(~shaped, F.lit(UNPARSEABLE))
            # The line has the access-log shape but its [%t] does not parse (e.g. 31/Feb).
            .when(event_time.isNull(), F.lit(BAD_TIMESTAMP))
            .when(in_the_future(clock, max_future_s, event_time), F.lit(FUTURE_TIMESTAMP)))


def dead_letters(lines: DataFrame, clock: Column, max_future_s: float = MAX_FUTURE_S) -> DataFrame:
    """The lines (log_lines' output) that valid_lines(parse_access_log(lines)) leaves out, found
    without parsing them: the original line, why (`reason`, one of the constants above) and the
    record's KAFKA_METADATA columns if present.

    The verdict needs the line's shape and its date only: one match of LINE_PATTERN (its %t group,
    empty if the line does not match) and parse_time, the parser's own, then the future check
    against the same `clock`. The typed fields are the alerts query's work.
    tests/test_contract_dead_letters.py holds this verdict to the full parse's on every line."""
    metadata = [name for name, _, _ in KAFKA_METADATA if name in lines.columns]
    # Two projections: the reason reads `time` and `event_time` several times, and Spark keeps
    # projections apart rather than run the regex or the date's arithmetic once per use.
    timed = (
        lines.select("value", *metadata,
                     F.regexp_extract("value", LINE_PATTERN, TIME_GROUP).alias("time"))
        .select("value", *metadata, "time",
                parse_time(F.nullif(F.col("time"), F.lit(""))).alias("event_time"))
    )
    reason = dead_letter_reason(F.col("value"), F.col("event_time"), F.col("time") != "",
                                clock, max_future_s)
    dead = F.col("reason").isNotNull()
    return (
        timed.select("value", reason.alias("reason"), *metadata)
        # Counted on the way (no extra pass) for the status line and /metrics
        # (progress.observedMetrics). Also a wall: the optimizer never moves a filter across an
        # observe, and pushed below the projections, the filter would inline the regex and the
        # date's arithmetic into one CASE WHEN, where Spark runs them again for every use.
        .observe("dead_letters", F.count_if(dead).alias("count"),
                 F.count_if(F.col("reason") == FUTURE_TIMESTAMP).alias("future"),
                 *(F.count_if(F.col("reason") == reason).alias(reason)
                   for reason in DEAD_LETTER_REASONS))
        .where(dead)
    )


def kafka_source(spark: SparkSession, bootstrap_servers: str, topic: str, starting_offsets: str,
                 max_offsets_per_trigger: int | None,
                 starting_timestamp_ms: int | None = None,
                 min_offsets_per_trigger: int | None = None,
                 max_trigger_delay_s: float | None = None) -> DataFrame:
    """The Kafka records of `topic`. A query without checkpoint starts at `starting_offsets`
    (latest, earliest) or, when given, at the first record of each partition stamped at or after
    `starting_timestamp_ms` (a partition without one starts at its end). With
    `min_offsets_per_trigger`, a micro-batch waits until that many records are there or
    `max_trigger_delay_s` passed since the last one."""
    reader = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", bootstrap_servers)
        .option("subscribe", topic)
        .option("startingOffsets", starting_offsets)
        # Records removed by retention before they were read are skipped with a warning rather
        # than stopping the analyzer: an alerting job must keep running.
        .option("failOnDataLoss", "false")
    )
    if starting_timestamp_ms is not None:
        reader = (reader.option("startingTimestamp", str(starting_timestamp_ms))
                  .option("startingOffsetsByTimestampStrategy", "latest"))
    if max_offsets_per_trigger:
        reader = reader.option("maxOffsetsPerTrigger", str(max_offsets_per_trigger))
    if min_offsets_per_trigger:
        reader = reader.option("minOffsetsPerTrigger", str(min_offsets_per_trigger))
        if max_trigger_delay_s is not None:
            reader = reader.option("maxTriggerDelay", f"{round(max_trigger_delay_s * 1000)}ms")
    return reader.load()


def dead_letter_reading(spark: SparkSession, bootstrap_servers: str, topic: str,
                        starting_offsets: str, max_offsets_per_trigger: int | None,
                        trigger: dict, every: str) -> tuple[DataFrame | None, dict]:
    """The dead-letter query's own source and trigger, for a live `trigger` (processingTime) with
    a cap: a batch at most `every` (a Spark interval) apart while lines come in, and as soon as a
    whole cap of records is there. So a few lines wait `every` and cost one batch, while a backlog
    or a high rate is read in full batches at the alerts query's pace. (A fixed `every` trigger
    would read at most one cap per `every`: a ceiling on the rate the query can keep up with.)
    (None, {"processingTime": every}) otherwise: no cap, or an available-now run, which reads
    everything anyway."""
    if not max_offsets_per_trigger or "processingTime" not in trigger:
        return None, ({"processingTime": every} if "processingTime" in trigger else trigger)
    source = kafka_source(spark, bootstrap_servers, topic, starting_offsets,
                          max_offsets_per_trigger,
                          min_offsets_per_trigger=max_offsets_per_trigger,
                          max_trigger_delay_s=duration_seconds(every))
    return source, trigger


def emitted_at() -> Column:
    """The driver's clock now, as the text to_json writes for a timestamp (UTC, milliseconds).

    Text, not current_timestamp(): Spark writes a timestamp constant into the generated Java as a
    literal, so a new one each batch would compile part of the alert batch's code again; a string
    constant is passed to the code by reference."""
    now = datetime.now(timezone.utc)
    return F.lit(now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z")


class AlertBatch:
    """foreachBatch of the alerts query: updated window counts -> every rule's alerts -> sink."""

    def __init__(self, settings: Settings, alert_sink: BatchSink,
                 counts_sink: BatchSink | None = None, log: Callable[[str], None] = print,
                 metrics_sink: BatchSink | None = None):
        self.settings, self.alert_sink, self.counts_sink = settings, alert_sink, counts_sink
        self.metrics_sink = metrics_sink
        self.thresholds = ThresholdsFile(settings.thresholds_path, log,
                                         required=settings.thresholds_required,
                                         window=settings.window, slide=settings.slide)
        self.stats: dict[int, int] = {}  # batch id -> alerts out
        self.by_rule: dict[int, dict[tuple[str, str], int]] = {}  # id -> (rule, severity) -> n

    def __call__(self, counts_batch: DataFrame, batch_id: int) -> None:
        spark = counts_batch.sparkSession
        threshold_rows, version = self.thresholds.current(spark)
        # Persisted: every rule reads the batch, and without the cache each read would run the
        # stateful aggregation again. Each Spark job has a fixed cost whatever its size, so a
        # batch runs two: the sink's, which computes the alerts (the aggregation
        # included) and writes them, then a count of the cached alerts for the status line. In
        # that order, an alert reaches Kafka one job earlier than with count-then-write.
        # (The rows updated are in the query's progress, stateOperators.numRowsUpdated.)
        counts_batch = counts_batch.persist()
        try:
            if self.counts_sink is not None:
                self.counts_sink(counts_batch, batch_id)
            fired = (
                fire_all(counts_batch, threshold_rows, self.settings, version)
                .withColumn("emitted_at", emitted_at())
                .persist()
            )
            try:
                self.alert_sink(fired, batch_id)
                # One small job, as a count would be: the total and the /metrics' split.
                by_rule = {(row["rule"], row["severity"]): row["count"]
                           for row in fired.groupBy("rule", "severity").count().collect()}
            finally:
                fired.unpersist()
            # After the alerts, which must not wait: the window metrics from the same counts.
            if self.metrics_sink is not None:
                self.metrics_sink(counts_batch, batch_id)
        finally:
            counts_batch.unpersist()
        self.stats[batch_id] = sum(by_rule.values())
        self.by_rule[batch_id] = by_rule
        if len(self.stats) > 1000:
            self.stats.pop(min(self.stats))
            self.by_rule.pop(min(self.by_rule))


def build_queries(source: DataFrame, *, alert_sink: BatchSink, dead_letter_sink: BatchSink,
                  checkpoint: Path, trigger: dict, settings: Settings = Settings(),
                  counts_sink: BatchSink | None = None, log: Callable[[str], None] = print,
                  dead_letter_trigger: dict | None = None, alerts_source: DataFrame | None = None,
                  alerts_checkpoint: Path | None = None, metrics_sink: BatchSink | None = None,
                  dead_letter_source: DataFrame | None = None,
                  ) -> tuple[dict[str, DataStreamWriter], AlertBatch]:
    """The two queries as unstarted writers {"dead-letters": ..., "alerts": ...} + the alert
    handler.

    `source`: a streaming frame with a `value` column (Kafka records, or a memory/rate source in
    tests); `alerts_source`, if given, is the alerts query's own (app.py rewinds it after a change
    of the state's schema), `dead_letter_source` the dead-letter query's (dead_letter_reading).
    Sinks are foreachBatch functions; `trigger` is passed to DataStreamWriter.trigger (e.g.
    {"processingTime": "5 seconds"} or {"availableNow": True}),
    `dead_letter_trigger` the dead-letter query's if it differs. The dead-letter query checkpoints
    in `checkpoint`/dead-letters, the alerts query in `alerts_checkpoint`, by default the folder of
    its state's schema under `checkpoint` (checkpoint.alerts_checkpoint_plan). `metrics_sink`, if
    given, receives each micro-batch's window counts after the alerts are written
    (metrics_record.metrics_sink: topic http-metrics).
    """
    max_future_s, clock = duration_seconds(settings.max_future), record_clock(source)
    dead_letter_writer = (
        dead_letters(log_lines(source if dead_letter_source is None else dead_letter_source),
                     clock, max_future_s)
        .writeStream
        .queryName("dead-letters")
        .foreachBatch(dead_letter_sink)
        .trigger(**(dead_letter_trigger or trigger))
        .option("checkpointLocation", str(Path(checkpoint) / "dead-letters"))
    )
    alerts_input = parse_access_log(log_lines(source if alerts_source is None else alerts_source))
    counts = entity_window_counts(
        # Filtered before the watermark: a far-future line must never advance it.
        valid_lines(alerts_input, clock, max_future_s)
        # The lines counted and their errors, on the way, for the analyzer's /metrics (exporter.py).
        .observe("lines", F.count(F.lit(1)).alias("requests"),
                 F.count(F.when(F.col("status") >= 400, 1)).alias("errors"))
        .withWatermark("event_time", settings.watermark),
        settings.window, settings.slide)
    if alerts_checkpoint is None:
        alerts_checkpoint = alerts_checkpoint_plan(checkpoint, settings).path
    handler = AlertBatch(settings, alert_sink, counts_sink, log, metrics_sink)
    alert_writer = (
        counts.writeStream
        .queryName("alerts")
        # update: a window is re-evaluated every time its counts change, so an incident alerts
        # while the window is still open instead of after the watermark closes it.
        .outputMode("update")
        .foreachBatch(handler)
        .trigger(**trigger)
        .option("checkpointLocation", str(alerts_checkpoint))
    )
    return {"dead-letters": dead_letter_writer, "alerts": alert_writer}, handler


