"""Where the final-stage analyzer's time goes: throughput ceilings and candidate changes, one run.

Run (a broker first: python finale/local_kafka.py start):
    python bench/bench_finale_pipeline.py [--lines 300000] [--batches 5] [--cases read,parse,...]
    python bench/bench_finale_pipeline.py --lines 1000000        # the issue's size

--lines lines of generated traffic (finale/log_generator.py --history, 1,000 lines/s of log time,
3 incidents) are pre-loaded once into a fresh 3-partition topic; then every case reads the whole
topic in the same Spark session (local[2] unless --master), with a fresh checkpoint, an
available-now trigger and maxOffsetsPerTrigger = lines / --batches, so each query runs several
micro-batches: the first one (start-up: planning, code generation, JIT, state store creation) is
reported apart from the others (steady state = lines of batches 2..n / time from the end of batch 1
to the end of the last batch, from the queries' progress; with two queries the slower one counts).
Cases (each a prototype of the wiring, bench-side; finale/ is only imported, never changed):
  read            Kafka -> value -> noop                                 (ceiling 1)
  parse           + finale parse_access_log -> noop                      (ceiling 2)
  parse-lite      + a cheaper parser prototype (below) -> noop
  counts          + metrics.entity_window_counts, update mode -> noop   (ceiling 3, the issue's)
  counts-lite     counts over parse-lite: what the cheaper parser would give the analyzer's
                  path (which never computes the referer and user agent: Spark prunes them)
  counts-rocksdb  counts with the RocksDB state store provider
  counts-shuffle1 / counts-shuffle4   counts with 1 / 4 shuffle partitions (the analyzer uses 2)
  counts-batch-count  counts -> foreachBatch that only counts the batch: with `alerts-only`, the
                  cost of the alert batch (rules.alerts, its joins, the Kafka write)
  analyzer        the analyzer's two queries as wired today (build_queries, Kafka sinks)
  alerts-only     only the alerts query of build_queries (what the second read + parse costs)
  analyzer-1batch the analyzer with one micro-batch for the whole topic (no maxOffsetsPerTrigger)
  single-query    one query reads and parses once; foreachBatch writes the dead letters and
                  keeps the window counts itself (prototype, see SingleQueryBatch)
  realtime-dlq    the dead-letter query with trigger(realTime=...) into a Kafka sink (Spark 4.2)
Before the cases, the `analyzer` case runs once untimed (JIT and class loading would otherwise
favour whichever case runs later). Each case's figure is printed with its ratio to `counts` (the
issue's ceiling) and to `read`.
Topics are deleted at the end; checkpoints go to a temporary folder.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

from bench_finale_analyzer import (
    broker_parser,
    chosen_cases,
    connector_jars,
    create_topics,
    delete_topics,
    preload,
)

ALL_CASES = ("read", "parse", "parse-lite", "counts", "counts-lite", "counts-rocksdb",
             "counts-shuffle1", "counts-shuffle4", "counts-batch-count", "analyzer", "alerts-only",
             "analyzer-1batch", "single-query", "realtime-dlq")
DURATION_KEYS = ("latestOffset", "queryPlanning", "getBatch", "addBatch", "walCommit",
                 "commitOffsets")
ROCKSDB = "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider"
HDFS = "org.apache.spark.sql.execution.streaming.state.HDFSBackedStateStoreProvider"


def parse_lite(lines):
    """Prototype of a cheaper parser with the stage parser's output columns and malformed rule.

    Differences from access_log.parse_access_log (measured by the `parse-lite` case):
    the timestamp is built from the fixed-width [%t] field's substrings with try_make_timestamp
    instead of try_to_timestamp's pattern formatter, and the referer and user agent are only
    unescaped when they contain a backslash.
    """
    from pyspark.sql import functions as F

    from finale.analyzer import access_log

    split_lines = lines.select("value", F.split(
        F.regexp_replace("value", access_log.LOG_PATTERN,
                         access_log.SEPARATOR.join(f"${i}" for i in range(1, len(access_log.FIELDS) + 1))),
        access_log.SEPARATOR).alias("fields"))
    raw = {name: F.nullif(F.col("fields")[i], F.lit("")) for i, name in enumerate(access_log.FIELDS)}
    t = raw["time"]  # dd/MMM/yyyy:HH:mm:ss +zzzz
    # Month number from its position in one string (no map, no pattern formatter).
    month = (F.instr(F.lit("JanFebMarAprMayJunJulAugSepOctNovDec"), F.substring(t, 4, 3)) + 2) / 3
    offset = F.substring(t, 22, 5)
    stamp = F.try_make_timestamp(
        F.substring(t, 8, 4).try_cast("int"),
        F.when((month % 1 == 0) & (month >= 1), month.cast("int")),
        F.substring(t, 1, 2).try_cast("int"), F.substring(t, 13, 2).try_cast("int"),
        F.substring(t, 16, 2).try_cast("int"), F.substring(t, 19, 2).try_cast("decimal(16,6)"),
        F.concat(F.substring(offset, 1, 3), F.lit(":"), F.substring(offset, 4, 2)))
    well_formed = F.length(t) == 26
    timed = split_lines.select("value", "fields",
                               F.when(well_formed, stamp).alias("event_time"))
    parsed = F.col("event_time").isNotNull()

    def keep(column):
        return F.when(parsed, column)

    def dash_is_null(column):
        return F.nullif(column, F.lit("-"))

    def unescape(column):
        return F.when(column.contains("\\"), F.regexp_replace(column, r"\\(.)", "$1")).otherwise(column)

    return timed.select(
        "value", keep(raw["ip"]).alias("ip"), keep(dash_is_null(raw["ident"])).alias("ident"),
        keep(dash_is_null(raw["user"])).alias("user"), "event_time",
        keep(raw["method"]).alias("method"), keep(raw["url"]).alias("url"),
        keep(raw["protocol"]).alias("protocol"), keep(raw["status"].cast("int")).alias("status"),
        keep(dash_is_null(raw["bytes"]).try_cast("long")).alias("bytes"),
        keep(dash_is_null(unescape(raw["referer"]))).alias("referer"),
        keep(dash_is_null(unescape(raw["user_agent"]))).alias("user_agent"),
        (~parsed).alias("malformed"))


class SingleQueryBatch:
    """Prototype: one query, one read and one parse per line. foreachBatch gets the parsed batch,
    writes its dead letters, and keeps the open windows' counts itself (a cached frame merged with
    each batch's partial counts; windows that end before the watermark are dropped), then runs
    the alert batch on the windows the batch updated. Not durable across restarts as written
    (the merged counts would have to be written next to the checkpoint): it measures the gain."""

    def __init__(self, analyzer, settings, alert_sink, dead_letter_sink, log, clock):
        self.analyzer, self.settings, self.clock = analyzer, settings, clock
        self.alert_batch = analyzer.AlertBatch(settings, alert_sink, None, log)
        self.dead_letter_sink = dead_letter_sink
        self.state = None
        self.max_event_time = None

    def __call__(self, batch, batch_id):
        from pyspark.sql import functions as F

        from finale.analyzer.metrics import entity_window_counts

        batch = batch.persist()
        try:
            self.dead_letter_sink(self.analyzer.dead_letters(batch, self.clock), batch_id)
            partial = entity_window_counts(batch, self.settings.window, self.settings.slide)
            keys = ["window_start", "window_end", "entity_type", "entity"]
            latest = batch.agg(F.max("event_time")).first()[0]
            if latest is not None and (self.max_event_time is None or latest > self.max_event_time):
                self.max_event_time = latest
            merged = partial.select(*keys, "requests", "errors")
            if self.state is not None:
                merged = merged.unionByName(self.state)
            merged = (merged.groupBy(*keys).agg(F.sum("requests").alias("requests"),
                                                F.sum("errors").alias("errors"))
                      .withColumn("error_rate", (F.col("errors") / F.col("requests")).cast("double")))
            if self.max_event_time is not None:
                watermark = F.lit(self.max_event_time) - F.expr(f"INTERVAL {self.settings.watermark}")
                merged = merged.where(F.col("window_end") > watermark)
            merged = merged.localCheckpoint(eager=True)  # cuts the lineage; cached on executors
            updated = merged.join(partial.select(*keys), keys, "left_semi")
            self.alert_batch(updated, batch_id)
            if self.state is not None:
                self.state.unpersist()
            self.state = merged.select(*keys, "requests", "errors")
        finally:
            batch.unpersist()


def steady_state(queries) -> dict:
    """Start-up / steady-state split of finished queries, from their progress reports."""
    per_query, rows_total, startup, breakdown = [], 0, 0.0, {}
    for query in queries:
        progress = [p for p in query.recentProgress]
        ends, rows = [], []
        for p in progress:
            began = datetime.fromisoformat(p["timestamp"].replace("Z", "+00:00")).timestamp()
            ends.append(began + p["durationMs"].get("triggerExecution", 0) / 1000)
            rows.append(p["numInputRows"])
            for key in DURATION_KEYS:
                breakdown[key] = breakdown.get(key, 0) + p["durationMs"].get(key, 0)
        if not progress:
            continue
        first_start = datetime.fromisoformat(progress[0]["timestamp"].replace("Z", "+00:00")).timestamp()
        startup = max(startup, ends[0] - first_start)
        steady_rows, steady_s = sum(rows[1:]), ends[-1] - ends[0]
        per_query.append((steady_rows / steady_s if steady_s > 0 and steady_rows else None,
                          len(progress)))
        rows_total = max(rows_total, sum(rows))
    rates = [rate for rate, _ in per_query if rate is not None]
    return {"steady": min(rates) if rates else None, "first_batch_s": startup,
            "batches": max((n for _, n in per_query), default=0), "rows": rows_total,
            "breakdown": breakdown}


def run_case(case, spark, args, topics, work):
    """Start the case's queries, wait for them, return the measured figures."""
    import spark_streaming_analyzer as analyzer
    from pyspark.sql import functions as F

    from finale.analyzer.access_log import parse_access_log
    from finale.analyzer.metrics import entity_window_counts

    checkpoint = Path(work) / f"ck-{case}"
    per_trigger = None if case == "analyzer-1batch" else max(1, args.lines // args.batches)
    source = analyzer.kafka_source(spark, args.bootstrap_servers, topics["logs"], "earliest",
                                   per_trigger)
    trigger = {"availableNow": True}
    spark.conf.set("spark.sql.shuffle.partitions",
                   {"counts-shuffle1": "1", "counts-shuffle4": "4"}.get(case, "2"))
    spark.conf.set("spark.sql.streaming.stateStore.providerClass",
                   ROCKSDB if case == "counts-rocksdb" else HDFS)
    settings = analyzer.Settings(thresholds_path=Path("/nonexistent/thresholds.json"))
    alert_sink = analyzer.kafka_sink(args.bootstrap_servers, topics["alerts"], analyzer.alert_records)
    dead_letter_sink = analyzer.kafka_sink(
        args.bootstrap_servers, topics["dlq"],
        lambda dead: analyzer.dead_letter_records(dead, topics["logs"]))

    def noop(frame, name, mode="append"):
        return (frame.writeStream.queryName(name).format("noop").outputMode(mode)
                .trigger(**trigger).option("checkpointLocation", str(checkpoint / name)))

    lines = analyzer.log_lines(source)
    if case == "read":
        writers = [noop(lines, "read")]
    elif case == "parse":
        writers = [noop(parse_access_log(lines), "parse")]
    elif case == "parse-lite":
        writers = [noop(parse_lite(lines), "parse-lite")]
    elif case.startswith("counts"):
        parsed = parse_lite(lines) if case == "counts-lite" else parse_access_log(lines)
        counts = entity_window_counts(
            parsed.where(~F.col("malformed")).withWatermark("event_time", settings.watermark),
            settings.window, settings.slide)
        if case == "counts-batch-count":
            writers = [counts.writeStream.queryName(case).outputMode("update")
                       .foreachBatch(lambda batch, _: batch.count()).trigger(**trigger)
                       .option("checkpointLocation", str(checkpoint / case))]
        else:
            writers = [noop(counts, case, "update")]
    elif case in ("analyzer", "alerts-only", "analyzer-1batch"):
        built, _ = analyzer.build_queries(
            source, alert_sink=alert_sink, dead_letter_sink=dead_letter_sink, checkpoint=checkpoint,
            trigger=trigger, settings=settings, log=lambda message: None)
        writers = [built["alerts"]] if case == "alerts-only" else list(built.values())
    elif case == "single-query":
        handler = SingleQueryBatch(analyzer, settings, alert_sink, dead_letter_sink, lambda m: None,
                                   analyzer.record_clock(source))
        writers = [parse_access_log(lines).writeStream.queryName("single").foreachBatch(handler)
                   .trigger(**trigger).option("checkpointLocation", str(checkpoint / "single"))]
    elif case == "realtime-dlq":
        return realtime_case(spark, args, topics, checkpoint)
    else:
        raise ValueError(case)
    began = time.monotonic()
    queries = [writer.start() for writer in writers]
    for query in queries:
        query.awaitTermination()
    wall = time.monotonic() - began
    for query in queries:
        if query.exception() is not None:
            return {"error": str(query.exception()).splitlines()[0]}
    figures = steady_state(queries)
    figures["wall"] = args.lines / wall
    figures["queries"] = len(queries)
    return figures


def realtime_case(spark, args, topics, checkpoint):
    """trigger(realTime=...) on the stateless dead-letter query into a Kafka sink (Real-Time Mode
    needs a Kafka sink, not foreachBatch). Runs --realtime-seconds, then reports what it read."""
    import spark_streaming_analyzer as analyzer

    from finale.analyzer.access_log import parse_access_log

    source = analyzer.kafka_source(spark, args.bootstrap_servers, topics["logs"], "earliest", None)
    dead = analyzer.dead_letter_records(
        analyzer.dead_letters(parse_access_log(analyzer.log_lines(source)),
                              analyzer.record_clock(source)), topics["logs"])
    try:
        query = (dead.writeStream.queryName("realtime-dlq").format("kafka")
                 .option("kafka.bootstrap.servers", args.bootstrap_servers)
                 .option("topic", topics["dlq"]).outputMode("update")
                 .option("checkpointLocation", str(checkpoint / "realtime-dlq"))
                 .trigger(realTime="5 seconds").start())
    except Exception as error:  # noqa: BLE001 - the point is to report Spark's own answer
        return {"error": f"{type(error).__name__}: {str(error).strip().splitlines()[0]}"}
    deadline = time.monotonic() + args.realtime_seconds
    while time.monotonic() < deadline and query.isActive:
        time.sleep(0.5)
    rows = sum(p["numInputRows"] for p in query.recentProgress)
    error = query.exception()
    query.stop()
    if error is not None:
        return {"error": str(error).strip().splitlines()[0]}
    return {"note": f"ran {args.realtime_seconds:.0f} s, {rows} lines in progress reports, "
                    f"{len(query.recentProgress)} progress reports"}


def fmt(rate):
    return "-" if rate is None else f"{rate:,.0f}"


def ratio(value, base):
    return "-" if value is None or not base else f"{value / base:.2f}x"


def main(argv: list[str] | None = None) -> int:
    parser = broker_parser(__doc__)
    parser.add_argument("--lines", type=int, default=300_000, help="lines pre-loaded (issue: 1000000)")
    parser.add_argument("--batches", type=int, default=5,
                        help="micro-batches per case (maxOffsetsPerTrigger = lines / batches)")
    parser.add_argument("--cases", default=",".join(ALL_CASES),
                        help="comma-separated cases to run, in order: " + ", ".join(ALL_CASES))
    parser.add_argument("--realtime-seconds", type=float, default=20,
                        help="realtime-dlq: how long the real-time query runs")
    parser.add_argument("--master", default="local[2]", help="Spark master URL")
    args = parser.parse_args(argv)
    cases = chosen_cases(parser, args.cases, ALL_CASES)
    if args.lines < 1000 or not 2 <= args.batches <= 100 or args.realtime_seconds <= 0:
        parser.error("need --lines >= 1000, 2 <= --batches <= 100 and --realtime-seconds > 0")

    import spark_streaming_analyzer as analyzer

    jars = connector_jars(args.bootstrap_servers)
    if jars is None:
        return 1
    load_before = os.getloadavg()
    topics = create_topics(args.bootstrap_servers, "bench-pipeline")
    results = {}
    spark = None
    try:
        with tempfile.TemporaryDirectory() as work:
            preload(args.bootstrap_servers, topics["logs"], args.lines, work, "--incident",
                    "ip@60+30", "--incident", "url@120+30", "--incident", "global@170+10")
            spark = analyzer.build_spark(args.master, jars)
            spark.sparkContext.setLogLevel("ERROR")
            began = time.monotonic()
            run_case("analyzer", spark, args, topics, Path(work) / "warm-up")
            print(f"# warm-up: {time.monotonic() - began:.0f} s", file=sys.stderr, flush=True)
            for case in cases:
                began = time.monotonic()
                results[case] = run_case(case, spark, args, topics, work)
                print(f"# {case}: {results[case]} ({time.monotonic() - began:.0f} s, load "
                      f"{os.getloadavg()[0]:.2f})", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        return 130
    finally:
        if spark is not None:
            spark.stop()
        delete_topics(args.bootstrap_servers, topics)
    load_after = os.getloadavg()

    base = results.get("counts", {}).get("steady")
    read = results.get("read", {}).get("steady")
    print(f"{args.lines:,} lines, 3 partitions, {args.master}, maxOffsetsPerTrigger "
          f"{args.lines // args.batches:,}; load average {load_before[0]:.2f} before, "
          f"{load_after[0]:.2f} after\n")
    print("| case | steady lines/s | vs counts | vs read | wall lines/s (start-up incl.) "
          "| first batch s | batches | addBatch / latestOffset / planning / walCommit / "
          "commitOffsets (ms, all batches) |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for case, r in results.items():
        if "error" in r or "note" in r:
            print(f"| {case} | {r.get('error') or r.get('note')} | | | | | | |")
            continue
        b = r["breakdown"]
        print(f"| {case} | {fmt(r['steady'])} | {ratio(r['steady'], base)} | "
              f"{ratio(r['steady'], read)} | {fmt(r['wall'])} | {r['first_batch_s']:.1f} | "
              f"{r['batches']} | {b.get('addBatch', 0):,} / {b.get('latestOffset', 0):,} / "
              f"{b.get('queryPlanning', 0):,} / {b.get('walCommit', 0):,} / "
              f"{b.get('commitOffsets', 0):,} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
