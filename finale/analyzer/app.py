"""The analyzer's command line: Kafka `http-logs` in, alerts and dead letters out.

    python finale/local_kafka.py start
    python finale/spark_streaming_analyzer.py [--thresholds .state/finale/thresholds.json]
    python finale/log_generator.py --rate 100 --incident ip@30+60     # another terminal
    python finale/alert_viewer.py                                     # another terminal

This module only wires: it checks the arguments and the thresholds file (exit 2 with one line
naming the fault, before Spark starts), the broker and its topics, starts Spark
(finale/common/spark.py), the Kafka sources, the sinks chosen by --alert-sink
(finale/analyzer/sinks.py) and the two queries of finale/analyzer/pipeline.py, each with its
checkpoint under --checkpoint (the alerts query's named after its state's schema:
finale/analyzer/checkpoint.py). One status line per micro-batch on stdout and the same progress
as JSON in --status-file (finale/analyzer/status.py). Ctrl-C or SIGTERM stop the queries between
two micro-batches; the checkpoints let a restart resume.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from pyspark.errors import StreamingQueryException

from finale.analyzer.checkpoint import (
    STATE_CHANGED_MESSAGE,
    alerts_checkpoint_plan,
    record_description,
)
from finale.analyzer.metrics_record import metrics_sink
from finale.analyzer.pipeline import (
    build_queries,
    dead_letter_reading,
    emitted_at,
    kafka_source,
)
from finale.analyzer.settings import (
    DEFAULT_ALERTS_TOPIC,
    DEFAULT_CHECKPOINT,
    DEFAULT_DLQ_TOPIC,
    DEFAULT_MAX_OFFSETS_PER_TRIGGER,
    DEFAULT_METRICS_TOPIC,
    DEFAULT_STATUS,
    DEFAULT_THRESHOLDS,
    DEFAULT_TOPIC,
    Settings,
)
from finale.analyzer.sinks import (
    ALERT_SINKS,
    SinkContext,
    alert_sinks,
    dead_letter_records,
    kafka_sink,
)
from finale.analyzer.status import (
    StatusFile,
    failure_line,
    make_status_listener,
    pipeline_health,
)
from finale.analyzer.thresholds import ThresholdsError, read_thresholds
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
from finale.common.spark import is_local, spark_session
from finale.common.window_metrics import DEFAULT_TOP


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="spark_streaming_analyzer.py",
        description="Kafka access logs -> alerts (topic alerts) and dead letters (http-logs-dlq).",
        formatter_class=HelpFormatter)
    add = parser.add_argument
    add("--bootstrap-servers", default=DEFAULT_BOOTSTRAP, help=BOOTSTRAP_HELP)
    add("--topic", default=DEFAULT_TOPIC, help="input topic: one access-log line per record")
    add("--alerts-topic", default=DEFAULT_ALERTS_TOPIC,
        help="output topic of the alerts (key = alert_id), for the kafka alert sink")
    add("--alert-sink", action="append", metavar="NAME[=ARG]",
        help="where alerts go, repeatable, called in order; one of: "
             + "; ".join(f"{name}: {help}" for name, (_, help) in ALERT_SINKS.items())
             + " (default: kafka)")
    add("--dlq-topic", default=DEFAULT_DLQ_TOPIC,
        help="output topic of the lines that do not parse")
    add("--metrics-topic", default=DEFAULT_METRICS_TOPIC,
        help="output topic of each window's traffic (requests, errors, top offenders; "
             "docs/records.md), the dashboard's input; '' to write none")
    add("--metrics-top", type=int, default=DEFAULT_TOP,
        help="IPs and URLs with the most errors named in each window-metrics record")
    add("--starting-offsets", default="latest", choices=("latest", "earliest"),
        help="where a query without checkpoint starts reading (a checkpoint always wins)")
    add("--max-offsets-per-trigger", type=int, default=DEFAULT_MAX_OFFSETS_PER_TRIGGER,
        help="most Kafka records read per micro-batch, so a backlog (outage, burst) is drained in "
             "bounded batches (0: no limit, one batch reads everything available)")
    add("--window", default=Settings.window, help="sliding window length (Spark interval)")
    add("--slide", default=Settings.slide, help="sliding window step (Spark interval)")
    add("--watermark", default=Settings.watermark,
        help="how late (event time) a line may arrive and still be counted")
    # The latency against CPU trade-off of the trigger is measured by bench/bench_finale_latency.py
    # (bench/RESULTS.md): a shorter trigger alerts sooner for more CPU.
    add("--trigger", default="1 second",
        help="micro-batch interval of the alerts query (Spark interval), or 'available-now': both "
             "queries process what is in the topic and exit (a longer interval: less CPU, later "
             "alerts)")
    # Dead letters are for a person to read later, and each of their batches takes a core from
    # the alerts query for a while: fewer, larger batches keep the alerts early.
    add("--dead-letter-trigger", default="10 seconds",
        help="longest wait between two micro-batches of the dead-letter query while lines come "
             "in (Spark interval); it runs one sooner as soon as --max-offsets-per-trigger "
             "records are there (with no cap: its fixed interval). With --trigger available-now "
             "both queries process what is in the topic and exit")
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
             "the broker stored it) is a dead letter (future_timestamp), never counted "
             "(Spark interval)")
    add("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT,
        help="checkpoint folder: dead-letters/ and alerts-<state schema>/ (a new metric, scope or "
             "window starts a new one, docs/analyzer.md)")
    add("--status-file", type=Path, default=DEFAULT_STATUS,
        help="progress of every query as JSON, replaced after each micro-batch (docs/analyzer.md)")
    add("--metrics-port", type=int, default=None,
        help="serve Prometheus metrics on http://HOST:PORT/metrics (docs/monitoring.md; "
             "default: none)")
    add("--metrics-host", default="127.0.0.1",
        help="interface of --metrics-port (0.0.0.0 in a container)")
    add("--master", default=os.environ.get("SPARK_MASTER", "local[2]"),
        help="Spark master URL, e.g. spark://host:7077 (env SPARK_MASTER)")
    add("--spark-ui", action="store_true",
        help="on a cluster master, serve the Spark UI too (off there by default: it listens on "
             "every interface; put it behind spark.acls.enable and spark.ui.filters, "
             "docs/deployment.md). In local mode it is always on, on 127.0.0.1")
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
    if args.metrics_top < 0:
        parser.error(f"--metrics-top must be >= 0, got {args.metrics_top}")
    if not 0 < args.cause_share <= 1:
        parser.error(f"--cause-share must be in (0, 1], got {args.cause_share}")
    if not args.confidence_z >= 0:
        parser.error(f"--confidence-z must be >= 0, got {args.confidence_z}")
    if not args.bootstrap_servers.strip():
        parser.error("--bootstrap-servers must not be empty")
    for spec in args.alert_sink or []:
        if spec.partition("=")[0] not in ALERT_SINKS:
            parser.error(f"--alert-sink {spec!r}: unknown sink (known: {', '.join(ALERT_SINKS)})")
    if args.metrics_port is not None and not 0 < args.metrics_port < 65536:
        parser.error(f"--metrics-port must be in 1..65535, got {args.metrics_port}")
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
    from finale.tools.kafka_topics import check_topics
    return check_topics(bootstrap_servers, topics, timeout_s, client_id="analyzer-check")


def last_record_time(bootstrap_servers: str, offsets: dict[str, dict[str, int]],
                     timeout_s: float = 15.0) -> float | None:
    """The latest Kafka timestamp (epoch seconds) of the records just before `offsets`
    ({topic: {partition: offset}}, a checkpoint's committed offsets); None if none can be read
    (an empty topic, records deleted by retention, no broker)."""
    from kafka import KafkaConsumer, TopicPartition
    from kafka.errors import KafkaError

    wanted = {TopicPartition(topic, int(partition)): offset - 1
              for topic, partitions in offsets.items()
              for partition, offset in partitions.items() if offset > 0}
    if not wanted:
        return None
    stamps = []
    try:
        consumer = KafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False,
                                 client_id="analyzer-rewind",
                                 request_timeout_ms=int(timeout_s * 1000) + 1000)
        try:
            consumer.assign(list(wanted))
            for partition, offset in wanted.items():
                consumer.seek(partition, offset)
            deadline = time.monotonic() + timeout_s
            while wanted and time.monotonic() < deadline:
                for partition, records in consumer.poll(timeout_ms=500).items():
                    for record in records:
                        if wanted.get(partition) == record.offset:
                            stamps.append(record.timestamp / 1000)
                            del wanted[partition]
                            consumer.pause(partition)
        finally:
            consumer.close()
    except (KafkaError, OSError, ValueError):
        return None
    return max(stamps) if stamps else None


def log(message: str) -> None:
    stamp = datetime.now(timezone.utc).strftime("%H:%M:%S")
    try:
        print(f"{stamp} {message}", flush=True)
    except BrokenPipeError:
        # Output piped into `head` and closed: stop printing, keep analysing (as json.tool does).
        silence_stdout()


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
    from finale.tools.kafka_jars import ensure_connector

    jars = ensure_connector()  # exits 1 with one line naming the fix
    problem = check_kafka(args.bootstrap_servers, [args.topic, args.alerts_topic, args.dlq_topic]
                          + ([args.metrics_topic] if args.metrics_topic else []))
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 1
    metrics = None
    if args.metrics_port is not None:
        from finale.analyzer.exporter import AnalyzerMetrics

        metrics = AnalyzerMetrics()
        try:
            # Served before Spark starts: a scrape then says the analyzer is up, not down.
            metrics.serve(args.metrics_port, args.metrics_host)
        except OSError as error:
            print(f"error: cannot serve metrics on {args.metrics_host}:{args.metrics_port}: "
                  f"{error.strerror or error}", file=sys.stderr)
            return 1
    settings = settings_from_args(args)
    trigger = ({"availableNow": True} if args.trigger == "available-now"
               else {"processingTime": args.trigger})
    try:
        spark = spark_session("chaussettes-finale-analyzer", args.master, jars=jars,
                              ui=is_local(args.master) or args.spark_ui,
                              security=spark_security.properties_from_args(args))
    except spark_security.SecurityError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if args.secure:
        log(spark_security.security_banner(spark.sparkContext.getConf()))
    plan = alerts_checkpoint_plan(
        args.checkpoint, settings,
        record_time=lambda offsets: last_record_time(args.bootstrap_servers, offsets))
    source = kafka_source(spark, args.bootstrap_servers, args.topic, args.starting_offsets,
                          args.max_offsets_per_trigger)
    alerts_source = None
    if plan.previous is not None:
        since = datetime.fromtimestamp(plan.since, timezone.utc)
        log(STATE_CHANGED_MESSAGE.format(previous=plan.previous, changes=plan.changes,
                                         path=plan.path, since=f"{since:%Y-%m-%dT%H:%M:%SZ}"))
        alerts_source = kafka_source(spark, args.bootstrap_servers, args.topic,
                                     args.starting_offsets, args.max_offsets_per_trigger,
                                     starting_timestamp_ms=int(plan.since * 1000))
    dead_letter_source, dead_letter_trigger = dead_letter_reading(
        spark, args.bootstrap_servers, args.topic, args.starting_offsets,
        args.max_offsets_per_trigger, trigger, args.dead_letter_trigger)
    record_description(plan)
    status = StatusFile(args.status_file)
    window_sink = None
    if args.metrics_topic:
        window_sink = metrics_sink(args.bootstrap_servers, args.metrics_topic, args.metrics_top,
                                   lambda: pipeline_health(status), emitted_at)
    writers, handler = build_queries(
        source,
        alert_sink=alert_sinks(args.alert_sink or ["kafka"],
                               SinkContext(args.bootstrap_servers, args.alerts_topic)),
        dead_letter_sink=kafka_sink(args.bootstrap_servers, args.dlq_topic,
                                    lambda dead: dead_letter_records(dead, args.topic)),
        checkpoint=args.checkpoint, trigger=trigger, dead_letter_trigger=dead_letter_trigger,
        settings=settings, log=log, alerts_source=alerts_source, alerts_checkpoint=plan.path,
        metrics_sink=window_sink, dead_letter_source=dead_letter_source)
    listener = make_status_listener(handler.stats, status, log, handler.thresholds)
    spark.streams.addListener(listener)
    if metrics is not None:
        metrics.thresholds = handler.thresholds
        metrics.watch_thresholds()
        spark.streams.addListener(metrics.listener(handler.by_rule))
    queries = [writer.start() for writer in writers.values()]
    dead_letter_note = ("" if args.trigger == "available-now"
                        else f" (dead letters: {args.dead_letter_trigger} at most"
                             + (f" or every {args.max_offsets_per_trigger} lines)"
                                if args.max_offsets_per_trigger else ")"))
    log(f"started queries {', '.join(writers)}: {args.topic} -> {args.alerts_topic} "
        f"(+ {args.dlq_topic}{', ' + args.metrics_topic if args.metrics_topic else ''}) "
        f"on {args.bootstrap_servers}, window {args.window} "
        f"every {args.slide}, watermark {args.watermark}, max future {args.max_future}, "
        f"trigger {args.trigger}{dead_letter_note}"
        f", thresholds {args.thresholds}{'' if args.thresholds.exists() else ' (absent: defaults)'}"
        f", alert sinks {', '.join(args.alert_sink or ['kafka'])}, checkpoint {plan.path}")
    # Ctrl-C / SIGTERM only set a flag: PySpark's own SIGINT handler raises KeyboardInterrupt in
    # the middle of a py4j call, which leaves tracebacks and a half-closed gateway behind.
    stop_requested = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop_requested.set())
    try:
        # Until every query has ended (available-now), one fails, or we are asked to stop.
        while any(query.isActive for query in queries) and not stop_requested.is_set():
            try:
                ended = spark.streams.awaitAnyTermination(1)
            except StreamingQueryException:
                break  # a query failed: said below, in one line, from its own exception
            if ended:
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
            print(f"error: query {query.name} failed: {failure_line(query.exception())}",
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
