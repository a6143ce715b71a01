"""Where the final-stage analyzer's time goes: throughput ceilings, settings, its queries; one run.

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
Cases (wired here, bench-side, from finale's functions; finale/ is only imported, never changed):
  read            Kafka -> value -> noop                                 (ceiling 1)
  parse           + finale parse_access_log -> noop                      (ceiling 2)
  counts          + metrics.entity_window_counts, update mode -> noop   (ceiling 3, the issue's)
  counts-rocksdb  counts with the RocksDB state store provider
  counts-shuffle1 / counts-shuffle4   counts with 1 / 4 shuffle partitions (the analyzer uses 2)
  counts-batch-count  counts -> foreachBatch that only counts the batch: with `alerts-only`, the
                  cost of the alert batch (rules.alerts, its joins, the Kafka write)
  analyzer        the analyzer's two queries as wired today (build_queries, Kafka sinks)
  alerts-only     only the alerts query of build_queries (what the second read + parse costs)
  analyzer-1batch the analyzer with one micro-batch for the whole topic (no maxOffsetsPerTrigger)
Before the cases, the `analyzer` case runs once untimed (JIT and class loading would otherwise
favour whichever case runs later). Each case's figure is printed with its ratio to `counts` (the
issue's ceiling) and to `read`. Prototypes measured here and rejected: bench/RESULTS.md,
"Rejected prototypes".
Topics are deleted at the end; checkpoints go to a temporary folder.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from bench_finale_analyzer import (
    analyzer_session,
    broker_parser,
    chosen_cases,
    connector_jars,
    create_topics,
    delete_topics,
    preload,
)

ALL_CASES = ("read", "parse", "counts", "counts-rocksdb", "counts-shuffle1", "counts-shuffle4",
             "counts-batch-count", "analyzer", "alerts-only", "analyzer-1batch")
DURATION_KEYS = ("latestOffset", "queryPlanning", "getBatch", "addBatch", "walCommit",
                 "commitOffsets")
ROCKSDB = "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider"
HDFS = "org.apache.spark.sql.execution.streaming.state.HDFSBackedStateStoreProvider"


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
        first_start = datetime.fromisoformat(
            progress[0]["timestamp"].replace("Z", "+00:00")).timestamp()
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
    from pyspark.sql import functions as F

    from finale.analyzer import pipeline, sinks
    from finale.analyzer.access_log import parse_access_log
    from finale.analyzer.metrics import entity_window_counts
    from finale.analyzer.settings import Settings

    checkpoint = Path(work) / f"ck-{case}"
    per_trigger = None if case == "analyzer-1batch" else max(1, args.lines // args.batches)
    source = pipeline.kafka_source(spark, args.bootstrap_servers, topics["logs"], "earliest",
                                   per_trigger)
    trigger = {"availableNow": True}
    spark.conf.set("spark.sql.shuffle.partitions",
                   {"counts-shuffle1": "1", "counts-shuffle4": "4"}.get(case, "2"))
    spark.conf.set("spark.sql.streaming.stateStore.providerClass",
                   ROCKSDB if case == "counts-rocksdb" else HDFS)
    settings = Settings(thresholds_path=Path("/nonexistent/thresholds.json"))
    alert_sink = sinks.kafka_sink(args.bootstrap_servers, topics["alerts"], sinks.alert_records)
    dead_letter_sink = sinks.kafka_sink(
        args.bootstrap_servers, topics["dlq"],
        lambda dead: sinks.dead_letter_records(dead, topics["logs"]))

    def noop(frame, name, mode="append"):
        return (frame.writeStream.queryName(name).format("noop").outputMode(mode)
                .trigger(**trigger).option("checkpointLocation", str(checkpoint / name)))

    lines = pipeline.log_lines(source)
    if case == "read":
        writers = [noop(lines, "read")]
    elif case == "parse":
        writers = [noop(parse_access_log(lines), "parse")]
    elif case.startswith("counts"):
        parsed = parse_access_log(lines)
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
        built, _ = pipeline.build_queries(
            source, alert_sink=alert_sink, dead_letter_sink=dead_letter_sink,
            checkpoint=checkpoint, trigger=trigger, settings=settings, log=lambda message: None)
        writers = [built["alerts"]] if case == "alerts-only" else list(built.values())
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


def fmt(rate):
    return "-" if rate is None else f"{rate:,.0f}"


def ratio(value, base):
    return "-" if value is None or not base else f"{value / base:.2f}x"


def main(argv: list[str] | None = None) -> int:
    parser = broker_parser(__doc__)
    parser.add_argument("--lines", type=int, default=300_000,
                        help="lines pre-loaded (issue: 1000000)")
    parser.add_argument("--batches", type=int, default=5,
                        help="micro-batches per case (maxOffsetsPerTrigger = lines / batches)")
    parser.add_argument("--cases", default=",".join(ALL_CASES),
                        help="comma-separated cases to run, in order: " + ", ".join(ALL_CASES))
    parser.add_argument("--master", default="local[2]", help="Spark master URL")
    args = parser.parse_args(argv)
    cases = chosen_cases(parser, args.cases, ALL_CASES)
    if args.lines < 1000 or not 2 <= args.batches <= 100:
        parser.error("need --lines >= 1000 and 2 <= --batches <= 100")

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
            spark = analyzer_session(args.master, jars)
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
        if "error" in r:
            print(f"| {case} | {r['error']} | | | | | | |")
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
