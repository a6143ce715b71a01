"""Stage 3: Kafka in, alerts out. Error-rate alerts per IP, per URL and overall, in real time.

Run (the broker and its topics first, see local_kafka.py):

    python finale/local_kafka.py start
    python finale/spark_streaming_analyzer.py [--thresholds .state/finale/thresholds.json]
    python finale/log_generator.py --rate 100 --incident ip@30+60     # another terminal
    python finale/alert_viewer.py                                     # another terminal

Two streaming queries read the topic `http-logs` (one Apache access-log line per record):

- `dead-letters`: lines that do not parse, or are dated more than --max-future ahead, go to
  `http-logs-dlq` with the original key and value, headers `reason` (empty_record, empty_line,
  unparseable, bad_timestamp, future_timestamp), `source` (topic), `source_partition`,
  `source_offset`, `source_timestamp`; they never stop the job and never hide the good lines.
- `alerts`: the good lines (the future-dated ones filtered out before the watermark, which they would
  push past all real traffic), with a watermark on their own timestamp, are counted per sliding window for
  three scopes (global, ip, url) in one stateful aggregation (metrics.entity_window_counts, update
  mode); each micro-batch keeps the windows that break a registered rule (rules.RULES: the error
  rate significantly above its threshold, rules.alerts; the requests significantly above their
  learned baseline, rules.surge_alerts) and writes them to `alerts`, key =
  alert_id, value = the alert as JSON. A global alert inhibits the ip/url alerts of its window (one alert, not one per IP and URL, when
  all traffic fails), except those of an entity holding --cause-share of the window's errors (the
  cause); --no-inhibit keeps them all.

The thresholds file (threshold_job.py's output) is validated whole before Spark starts (exit 2 naming
the entry) and re-read when its mtime changes (an invalid new file: the last good one stays in use);
without --thresholds and without the default file, the documented defaults of thresholds.py apply. Each query has its own checkpoint folder under --checkpoint:
a restarted analyzer resumes where it stopped, and since alert ids are deterministic a re-emitted alert
replaces its previous copy in the compacted `alerts` topic. One status line per micro-batch on stdout,
and the same progress as JSON in --status-file (status.py; its fields are in finale/README.md).
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import DataStreamWriter

from finale.analyzer.access_log import LINE_PATTERN, parse_access_log
from finale.analyzer.metrics import entity_window_counts
from finale.analyzer.rules import fire_all
from finale.analyzer.settings import (
    DEFAULT_ALERTS_TOPIC,
    DEFAULT_CHECKPOINT,
    DEFAULT_DLQ_TOPIC,
    DEFAULT_MAX_OFFSETS_PER_TRIGGER,
    DEFAULT_STATUS,
    DEFAULT_THRESHOLDS,
    DEFAULT_TOPIC,
    Settings,
)
from finale.analyzer.sinks import BatchSink, alert_records, dead_letter_records, kafka_sink
from finale.analyzer.status import StatusFile, make_status_listener
from finale.analyzer.thresholds import ThresholdsError, ThresholdsFile, read_thresholds
from finale.common import spark_security
from finale.common.cli import (
    BOOTSTRAP_HELP,
    DEFAULT_BOOTSTRAP,
    HelpFormatter,
    OneLineErrorParser,
    duration_seconds,
    is_interval,
    silence_stdout,
)

# ------------------------------------------------------------------------------------------------
# Analysis: typed DataFrame -> DataFrame functions (the rest of this file only wires them)
# ------------------------------------------------------------------------------------------------

# The Kafka record fields a dead letter keeps (sinks.dead_letter_records): column -> type. A source
# without them (memory or rate source in tests) gives nulls.
KAFKA_METADATA = (("kafka_key", "key", "binary"), ("kafka_partition", "partition", "int"),
                  ("kafka_offset", "offset", "long"), ("kafka_timestamp", "timestamp", "timestamp"))
# Dead-letter reasons, most specific first (the `reason` header of http-logs-dlq).
EMPTY_RECORD, EMPTY_LINE = "empty_record", "empty_line"
UNPARSEABLE, BAD_TIMESTAMP, FUTURE_TIMESTAMP = "unparseable", "bad_timestamp", "future_timestamp"
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
    the source has one, else the micro-batch's own time (current_timestamp(): memory or rate sources).

    The record's timestamp is the broker's clock when it stored the line on http-logs (created with
    message.timestamp.type=LogAppendTime, see local_kafka.TOPICS), the producer's on a CreateTime
    topic (the broker refuses one more than message.timestamp.after.max.ms ahead of its own, 1 hour
    by default). Either way it is a column, not the batch's clock: a line is judged the same way by
    both queries and by every replay of the topic, and the generated code stays the same from batch
    to batch. current_timestamp() is a different constant in each batch that Spark writes into the
    generated Java as a literal, so each batch compiled its code again: 2 compilations a batch in
    the dead-letter query, none with the column, 485 -> 422 ms a 1,500-line batch
    (bench/bench_finale_batch_cost.py; finale/README.md, "Performance")."""
    return F.col("kafka_timestamp") if "timestamp" in source.columns else F.current_timestamp()


def in_the_future(clock: Column, max_future_s: float = MAX_FUTURE_S) -> Column:
    """True for a parsed line dated more than max_future_s after `clock` (record_clock's)."""
    return F.col("event_time") > clock + F.make_dt_interval(secs=F.lit(max_future_s).cast("decimal(18,6)"))


def valid_lines(parsed: DataFrame, clock: Column, max_future_s: float = MAX_FUTURE_S) -> DataFrame:
    """The lines the windows count: parsed, and not dated beyond the future tolerance (one such
    line would push the watermark past every real line and silence alerting)."""
    return parsed.where(~F.col("malformed") & ~in_the_future(clock, max_future_s))


def dead_letters(parsed: DataFrame, clock: Column, max_future_s: float = MAX_FUTURE_S) -> DataFrame:
    """The rows of parse_access_log's output that valid_lines (same `clock`) leaves out: the original
    line, why (`reason`, one of the constants above) and the record's KAFKA_METADATA columns if present."""
    future = ~F.col("malformed") & in_the_future(clock, max_future_s)
    metadata = [name for name, _, _ in KAFKA_METADATA if name in parsed.columns]
    return (
        parsed
        .where(F.col("malformed") | future)
        .select(
            "value",
            F.when(F.col("value").isNull(), F.lit(EMPTY_RECORD))
            .when(F.trim(F.col("value")) == "", F.lit(EMPTY_LINE))
            .when(future, F.lit(FUTURE_TIMESTAMP))
            # The line has the access-log shape but its [%t] does not parse (e.g. 31/Feb).
            .when(F.col("value").rlike(LINE_PATTERN), F.lit(BAD_TIMESTAMP))
            .otherwise(F.lit(UNPARSEABLE))
            .alias("reason"),
            *metadata,
        )
    )


# ------------------------------------------------------------------------------------------------
# Wiring: sources, sinks, queries
# ------------------------------------------------------------------------------------------------

def kafka_source(spark: SparkSession, bootstrap_servers: str, topic: str, starting_offsets: str,
                 max_offsets_per_trigger: int | None) -> DataFrame:
    reader = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", bootstrap_servers)
        .option("subscribe", topic)
        .option("startingOffsets", starting_offsets)
        # Records removed by retention before they were read are skipped with a warning rather
        # than stopping the analyzer: an alerting job must keep running.
        .option("failOnDataLoss", "false")
    )
    if max_offsets_per_trigger:
        reader = reader.option("maxOffsetsPerTrigger", str(max_offsets_per_trigger))
    return reader.load()


def emitted_at() -> Column:
    """The driver's clock now, as the text to_json writes for a timestamp (UTC, milliseconds).

    Text, not current_timestamp(): Spark writes a timestamp constant into the generated Java as a
    literal, so a new one each batch meant compiling part of the alert batch's code again; a string
    constant is passed to the code by reference (finale/README.md, "Performance")."""
    now = datetime.now(timezone.utc)
    return F.lit(now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z")


class AlertBatch:
    """foreachBatch of the alerts query: updated window counts -> every rule's alerts -> sink."""

    def __init__(self, settings: Settings, alert_sink: BatchSink,
                 counts_sink: BatchSink | None = None, log: Callable[[str], None] = print):
        self.settings, self.alert_sink, self.counts_sink = settings, alert_sink, counts_sink
        self.thresholds = ThresholdsFile(settings.thresholds_path, log,
                                         required=settings.thresholds_required,
                                         window=settings.window, slide=settings.slide)
        self.stats: dict[int, int] = {}  # batch id -> alerts out

    def __call__(self, counts_batch: DataFrame, batch_id: int) -> None:
        spark = counts_batch.sparkSession
        threshold_rows, version = self.thresholds.current(spark)
        # Persisted: every rule reads the batch, and without the cache each read would run the
        # stateful aggregation again. Each Spark job costs a fixed 10-100 ms here, whatever its
        # size, so a batch runs two: the sink's, which computes the alerts (the aggregation
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
                out = fired.count()
            finally:
                fired.unpersist()
        finally:
            counts_batch.unpersist()
        self.stats[batch_id] = out
        if len(self.stats) > 1000:
            self.stats.pop(min(self.stats))


def build_queries(source: DataFrame, *, alert_sink: BatchSink, dead_letter_sink: BatchSink,
                  checkpoint: Path, trigger: dict, settings: Settings = Settings(),
                  counts_sink: BatchSink | None = None, log: Callable[[str], None] = print,
                  dead_letter_trigger: dict | None = None,
                  ) -> tuple[dict[str, DataStreamWriter], AlertBatch]:
    """The two queries as unstarted writers {"dead-letters": ..., "alerts": ...} + the alert handler.

    `source`: a streaming frame with a `value` column (Kafka records, or a memory/rate source in
    tests). Sinks are foreachBatch functions; `trigger` is passed to DataStreamWriter.trigger
    (e.g. {"processingTime": "5 seconds"} or {"availableNow": True}), `dead_letter_trigger` the
    dead-letter query's if it differs; each query checkpoints in its own sub-folder of `checkpoint`.
    """
    parsed = parse_access_log(log_lines(source))
    max_future_s, clock = duration_seconds(settings.max_future), record_clock(source)
    dead_letter_writer = (
        dead_letters(parsed, clock, max_future_s)
        # Counted on the way (no extra pass) for the status line: progress.observedMetrics.
        .observe("dead_letters", F.count(F.lit(1)).alias("count"),
                 F.count(F.when(F.col("reason") == FUTURE_TIMESTAMP, 1)).alias("future"))
        .writeStream
        .queryName("dead-letters")
        .foreachBatch(dead_letter_sink)
        .trigger(**(dead_letter_trigger or trigger))
        .option("checkpointLocation", str(Path(checkpoint) / "dead-letters"))
    )
    counts = entity_window_counts(
        # Filtered before the watermark: a far-future line must never advance it.
        valid_lines(parsed, clock, max_future_s).withWatermark("event_time", settings.watermark),
        settings.window, settings.slide)
    handler = AlertBatch(settings, alert_sink, counts_sink, log)
    alert_writer = (
        counts.writeStream
        .queryName("alerts")
        # update: a window is re-evaluated every time its counts change, so an incident alerts
        # while the window is still open instead of after the watermark closes it.
        .outputMode("update")
        .foreachBatch(handler)
        .trigger(**trigger)
        .option("checkpointLocation", str(Path(checkpoint) / "alerts"))
    )
    return {"dead-letters": dead_letter_writer, "alerts": alert_writer}, handler


# ------------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="spark_streaming_analyzer.py",
        description="Kafka access logs -> error-rate alerts (topic alerts) and dead letters.",
        formatter_class=HelpFormatter)
    add = parser.add_argument
    add("--bootstrap-servers", default=DEFAULT_BOOTSTRAP, help=BOOTSTRAP_HELP)
    add("--topic", default=DEFAULT_TOPIC, help="input topic: one access-log line per record")
    add("--alerts-topic", default=DEFAULT_ALERTS_TOPIC, help="output topic of the alerts (key = alert_id)")
    add("--dlq-topic", default=DEFAULT_DLQ_TOPIC, help="output topic of the lines that do not parse")
    add("--starting-offsets", default="latest", choices=("latest", "earliest"),
        help="where a query without checkpoint starts reading (a checkpoint always wins)")
    add("--max-offsets-per-trigger", type=int, default=DEFAULT_MAX_OFFSETS_PER_TRIGGER,
        help="most Kafka records read per micro-batch, so a backlog (outage, burst) is drained in "
             "bounded batches (0: no limit, one batch reads everything available)")
    add("--window", default=Settings.window, help="sliding window length (Spark interval)")
    add("--slide", default=Settings.slide, help="sliding window step (Spark interval)")
    add("--watermark", default=Settings.watermark,
        help="how late (event time) a line may arrive and still be counted")
    # 1 second: a quarter of the alert latency of 5 seconds at 1,000 lines/s (p50 1.2 s against
    # 4.5 s, bench/bench_finale_latency.py) for 2.4 times the CPU; `0 seconds` is no faster.
    # finale/README.md, "Performance".
    add("--trigger", default="1 second",
        help="micro-batch interval of the alerts query (Spark interval), or 'available-now': both "
             "queries process what is in the topic and exit ('5 seconds': less than half the CPU, "
             "about 3.4 s more latency)")
    # Dead letters are for a person to read later; each of their batches takes a core for a few
    # hundred ms from the alerts query: at 1,000 lines/s, 10 s instead of 1 s brought the alert
    # latency's p50 from 3.1 s to 1.7 s (bench_finale_latency.py; finale/README.md, "Performance").
    add("--dead-letter-trigger", default="10 seconds",
        help="micro-batch interval of the dead-letter query (Spark interval); with --trigger "
             "available-now both queries process what is in the topic and exit")
    add("--min-requests", type=int, default=Settings.min_requests,
        help="fewest requests in a window for it to alert")
    add("--min-errors", type=int, default=Settings.min_errors,
        help="fewest errors in a window for it to alert")
    add("--confidence-z", type=float, default=Settings.z,
        help="z of the Wilson lower bound that must exceed the threshold (3.0 ~ 99.9 %% one-sided)")
    add("--no-inhibit", dest="inhibit_by_global", action="store_false",
        help="keep the ip/url alerts of windows in which the global scope alerts (default: a "
             "global alert inhibits them)")
    add("--cause-share", type=float, default=Settings.cause_share,
        help="an ip/url alert holding at least this share (0..1] of its window's errors is the "
             "cause of the global alert and is never inhibited")
    add("--thresholds", type=Path, default=None,
        help=f"thresholds JSON of threshold_job.py, re-read when it changes; must exist and be "
             f"valid (unset: {DEFAULT_THRESHOLDS.relative_to(DEFAULT_THRESHOLDS.parents[2])} if it "
             f"exists, else the documented defaults)")
    add("--max-future", default=Settings.max_future,
        help="a line dated more than this after its Kafka record's timestamp (on http-logs: when "
             "the broker stored it) is a dead letter (future_timestamp), never counted (Spark interval)")
    add("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT,
        help="checkpoint folder, one sub-folder per query")
    add("--status-file", type=Path, default=DEFAULT_STATUS,
        help="progress of every query as JSON, replaced after each micro-batch (see finale/README.md)")
    add("--master", default=os.environ.get("SPARK_MASTER", "local[2]"),
        help="Spark master URL, e.g. spark://host:7077 (env SPARK_MASTER)")
    spark_security.add_security_options(parser)
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    for flag in ("window", "slide", "watermark", "max_future"):
        if not is_interval(getattr(args, flag)):
            parser.error(f"--{flag.replace('_', '-')} must be a Spark interval like '30 seconds', "
                         f"got {getattr(args, flag)!r}")
    if args.trigger != "available-now" and not is_interval(args.trigger):
        parser.error(f"--trigger must be a Spark interval like '5 seconds' or 'available-now', "
                     f"got {args.trigger!r}")
    if not is_interval(args.dead_letter_trigger):
        parser.error(f"--dead-letter-trigger must be a Spark interval like '10 seconds', "
                     f"got {args.dead_letter_trigger!r}")
    window, slide = duration_seconds(args.window), duration_seconds(args.slide)
    if window <= 0 or slide <= 0 or slide > window:
        parser.error(f"need 0 < --slide <= --window, got {args.slide!r} and {args.window!r}")
    for flag in ("min_requests", "min_errors"):
        if getattr(args, flag) < 0:
            parser.error(f"--{flag.replace('_', '-')} must be >= 0, got {getattr(args, flag)}")
    if args.max_offsets_per_trigger < 0:
        parser.error(f"--max-offsets-per-trigger must be >= 0 (0: no limit), "
                     f"got {args.max_offsets_per_trigger}")
    if not 0 < args.cause_share <= 1:
        parser.error(f"--cause-share must be in (0, 1], got {args.cause_share}")
    if not args.confidence_z >= 0:
        parser.error(f"--confidence-z must be >= 0, got {args.confidence_z}")
    if not args.bootstrap_servers.strip():
        parser.error("--bootstrap-servers must not be empty")
    args.thresholds_required = args.thresholds is not None
    if args.thresholds is None:
        args.thresholds = DEFAULT_THRESHOLDS
    try:
        # The whole file, before Spark starts: a bad entry is an error now, not at the first batch.
        read_thresholds(args.thresholds, args.thresholds_required, args.window, args.slide)
    except ThresholdsError as error:
        parser.error(f"--thresholds {error}")
    return args


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The analysis parameters given on the command line."""
    return Settings(window=args.window, slide=args.slide, watermark=args.watermark,
                    min_requests=args.min_requests, min_errors=args.min_errors,
                    z=args.confidence_z, thresholds_path=args.thresholds,
                    thresholds_required=args.thresholds_required, max_future=args.max_future,
                    inhibit_by_global=args.inhibit_by_global, cause_share=args.cause_share)


def check_kafka(bootstrap_servers: str, topics: list[str], timeout_s: float = 15.0) -> str | None:
    """None if the broker answers and the topics exist, else one line saying what is wrong."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers, client_id="analyzer-check",
                                 request_timeout_ms=int(timeout_s * 1000),
                                 bootstrap_timeout_ms=int(timeout_s * 1000))
        try:
            existing = set(admin.list_topics())
        finally:
            admin.close()
    except (KafkaError, OSError, ValueError) as error:
        return (f"no Kafka broker answers at {bootstrap_servers} ({type(error).__name__}): start one "
                "with `python finale/local_kafka.py start` or set --bootstrap-servers")
    missing = [topic for topic in topics if topic not in existing]
    if missing:
        return (f"topic(s) {', '.join(missing)} do not exist on {bootstrap_servers}: "
                "`python finale/local_kafka.py start` creates the project's topics")
    return None


def log(message: str) -> None:
    stamp = datetime.now(timezone.utc).strftime("%H:%M:%S")
    try:
        print(f"{stamp} {message}", flush=True)
    except BrokenPipeError:
        # Output piped into `head` and closed: stop printing, keep analysing (as json.tool does).
        silence_stdout()


def build_spark(master: str, jars: list[str],
                security: dict[str, str] | None = None) -> SparkSession:
    """The session; `security` (spark_security.properties_from_args) reaches the JVM in a file."""
    builder = (
        SparkSession.builder.master(master)
        .appName("chaussettes-finale-analyzer")
        .config("spark.jars", ",".join(jars))
        .config("spark.sql.shuffle.partitions", "2")
        # Generated classes kept for reuse (default 100): in a session running both queries and
        # other work, 100 was seen evicting and compiling 8 classes again at every batch.
        .config("spark.sql.codegen.cache.maxEntries", "1000")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.driver.extraJavaOptions", "-Duser.timezone=UTC")
        .config("spark.ui.showConsoleProgress", "false")
    )
    spark = spark_security.get_or_create(builder, security)
    spark.sparkContext.setLogLevel("WARN")
    return spark


def stop_between_batches(queries, timeout_s: float = 5.0) -> None:
    """Stop each query when no micro-batch of it is running (at most timeout_s of waiting).

    A query stopped in the middle of its foreachBatch interrupts a py4j call, and Spark then
    matches the long Python traceback against a regex that overflows the JVM's stack: a page of
    `java.lang.StackOverflowError` on the terminal at every Ctrl-C, for a stop that is otherwise
    clean (the batch is re-run from the offset log at the next start either way)."""
    deadline = time.monotonic() + timeout_s
    for query in queries:
        while query.isActive and time.monotonic() < deadline:
            try:
                if not query.status["isTriggerActive"]:
                    break
            except Exception:  # noqa: BLE001 - a query ending meanwhile: stop() below is a no-op
                break
            time.sleep(0.01)
        query.stop()


def run(args: argparse.Namespace) -> int:
    from finale.tools import local_kafka

    jars = local_kafka.ensure_connector()  # exits 1 with one line naming the fix
    problem = check_kafka(args.bootstrap_servers, [args.topic, args.alerts_topic, args.dlq_topic])
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 1
    settings = settings_from_args(args)
    trigger = ({"availableNow": True} if args.trigger == "available-now"
               else {"processingTime": args.trigger})
    dead_letter_trigger = ({"availableNow": True} if args.trigger == "available-now"
                           else {"processingTime": args.dead_letter_trigger})
    try:
        spark = build_spark(args.master, jars, spark_security.properties_from_args(args))
    except spark_security.SecurityError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if args.secure:
        log(spark_security.security_banner(spark.sparkContext.getConf()))
    source = kafka_source(spark, args.bootstrap_servers, args.topic, args.starting_offsets,
                          args.max_offsets_per_trigger)
    writers, handler = build_queries(
        source,
        alert_sink=kafka_sink(args.bootstrap_servers, args.alerts_topic, alert_records),
        dead_letter_sink=kafka_sink(args.bootstrap_servers, args.dlq_topic,
                                    lambda dead: dead_letter_records(dead, args.topic)),
        checkpoint=args.checkpoint, trigger=trigger, dead_letter_trigger=dead_letter_trigger,
        settings=settings, log=log)
    listener = make_status_listener(handler.stats, StatusFile(args.status_file), log,
                                    handler.thresholds)
    spark.streams.addListener(listener)
    queries = [writer.start() for writer in writers.values()]
    log(f"started queries {', '.join(writers)}: {args.topic} -> {args.alerts_topic} "
        f"(+ {args.dlq_topic}) on {args.bootstrap_servers}, window {args.window} every {args.slide}, "
        f"watermark {args.watermark}, max future {args.max_future}, trigger {args.trigger}"
        f"{'' if args.trigger == 'available-now' else f' (dead letters {args.dead_letter_trigger})'}, thresholds {args.thresholds}"
        f"{'' if args.thresholds.exists() else ' (absent: defaults)'}, checkpoint {args.checkpoint}")
    # Ctrl-C / SIGTERM only set a flag: PySpark's own SIGINT handler raises KeyboardInterrupt in
    # the middle of a py4j call, which leaves tracebacks and a half-closed gateway behind.
    stop_requested = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop_requested.set())
    try:
        # Until every query has ended (available-now), one fails, or we are asked to stop.
        while any(query.isActive for query in queries) and not stop_requested.is_set():
            if spark.streams.awaitAnyTermination(1):
                spark.streams.resetTerminated()
                if any(query.exception() is not None for query in queries):
                    break
    finally:
        stop_between_batches(queries)
        # Drains the listener bus while Python still answers its callbacks (the JVM would
        # otherwise post the last events to a closed gateway and print stack traces).
        spark.stop()
    if stop_requested.is_set():
        log("interrupted: queries stopped, the checkpoints let a restart resume")
        return 130
    for query in queries:
        if query.exception() is not None:
            print(f"error: query {query.name} failed: {str(query.exception()).splitlines()[0]}",
                  file=sys.stderr)
            return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except KeyboardInterrupt:
        log("interrupted: queries stopped, the checkpoints let a restart resume")
        return 130


if __name__ == "__main__":
    sys.exit(main())
