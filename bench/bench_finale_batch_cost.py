"""What one small micro-batch of the final-stage analyzer costs, query by query, and what Spark
compiles for it.

Run (a broker first: python finale/local_kafka.py start):
    python bench/bench_finale_batch_cost.py [--lines 30000] [--per-batch 1500] [--cases read,...]

The latency a user sees is set by small batches (a 1 s trigger at 1,000 lines/s reads ~1,500 lines
a batch), where the fixed cost of a batch dominates, not the per-line cost that the throughput
benchmarks measure. --lines lines of generated traffic (an ip incident) are pre-loaded into a fresh
3-partition topic; each case then reads the whole topic with a fresh checkpoint, an available-now
trigger and maxOffsetsPerTrigger = --per-batch, all in one Spark session (local[2]).
Cases (the analyzer's own code, finale.analyzer.pipeline.build_queries; nothing is changed in
finale/ except where a case says "before"):
  read                 Kafka -> value -> noop: a bare micro-batch (the baseline)
  dead-letters         the dead-letter query alone, Kafka sink
  alerts               the alerts query alone (window counts, the alert batch, Kafka sink)
  both                 both queries, as the analyzer runs them (the slower one counts)
  dead-letters-before  dead-letters with the clock the analyzer used before: current_timestamp()
  alerts-before        alerts with that clock and emitted_at = current_timestamp()
For every query, over its batches 3..n (the first two compile, load classes and create state):
the mean `triggerExecution` and its parts from the progress reports (ms), and the Java code
compilations per batch (Spark's CodegenMetrics, read at each progress report: a compilation that
happens at every batch is a constant that changes between batches, e.g. a timestamp literal).
Each case's time is printed as a ratio to `read` measured in the same run. A warm-up run of `both`
comes first (JIT, class loading).
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
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

ALL_CASES = ("read", "dead-letters", "alerts", "both", "dead-letters-before", "alerts-before")
PARTS = ("latestOffset", "queryPlanning", "addBatch", "walCommit", "commitOffsets")


class CompileCounter:
    """Spark's code compilations counted at each progress report of each query (by query name)."""

    def __init__(self, spark):
        from pyspark.sql.streaming import StreamingQueryListener

        metrics = spark._jvm.org.apache.spark.metrics.source.CodegenMetrics
        self.counts: dict[str, list[int]] = {}
        counter = self

        class Listener(StreamingQueryListener):
            def onQueryStarted(self, event):
                pass

            def onQueryProgress(self, event):
                counter.counts.setdefault(event.progress.name, []).append(
                    metrics.METRIC_COMPILATION_TIME().getCount())

            def onQueryIdle(self, event):
                pass

            def onQueryTerminated(self, event):
                pass

        self.listener = Listener()
        spark.streams.addListener(self.listener)


def run_case(case, spark, args, topics, work, counter) -> dict:
    from pyspark.sql import functions as F

    from finale.analyzer import pipeline, sinks
    from finale.analyzer.settings import Settings

    source = pipeline.kafka_source(spark, args.bootstrap_servers, topics["logs"], "earliest",
                                   args.per_batch)
    checkpoint = Path(work) / f"ck-{case}-{time.monotonic_ns()}"
    trigger = {"availableNow": True}
    if case == "read":
        writers = {"read": pipeline.log_lines(source).writeStream.queryName("read").format("noop")
                   .trigger(**trigger).option("checkpointLocation", str(checkpoint / "read"))}
    else:
        before = case.endswith("-before")
        saved = pipeline.record_clock, pipeline.emitted_at
        if before:  # the previous wiring, bench-side: the batch's clock, a timestamp emitted_at
            pipeline.record_clock = lambda _source: F.current_timestamp()
            pipeline.emitted_at = F.current_timestamp
        try:
            settings = Settings(thresholds_path=Path("/nonexistent/thresholds.json"))
            built, _ = pipeline.build_queries(
                source, checkpoint=checkpoint, trigger=trigger, settings=settings,
                alert_sink=sinks.kafka_sink(args.bootstrap_servers, topics["alerts"],
                                            sinks.alert_records),
                dead_letter_sink=sinks.kafka_sink(
                    args.bootstrap_servers, topics["dlq"],
                    lambda dead: sinks.dead_letter_records(dead, topics["logs"])),
                log=lambda message: None)
        finally:
            pipeline.record_clock, pipeline.emitted_at = saved
        names = ("dead-letters", "alerts") if case == "both" else (case.removesuffix("-before"),)
        writers = {name: built[name] for name in names}
    for name in writers:
        counter.counts.pop(name, None)
    queries = {name: writer.start() for name, writer in writers.items()}
    for query in queries.values():
        query.awaitTermination()
    # The listener hears of a batch asynchronously: wait (10 s at most) for every query's last one.
    deadline = time.monotonic() + 10
    while (any(len(counter.counts.get(name, [])) < len(query.recentProgress)
               for name, query in queries.items()) and time.monotonic() < deadline):
        time.sleep(0.1)
    result = {}
    for name, query in queries.items():
        if query.exception() is not None:
            return {"error": str(query.exception()).splitlines()[0]}
        progress = query.recentProgress[2:]
        compiled = counter.counts.get(name, [])
        if len(compiled) != len(query.recentProgress):
            return {"error": f"{name}: {len(query.recentProgress)} batches, the listener heard of "
                             f"{len(compiled)} within 10 s"}
        mean = {key: sum(p["durationMs"].get(key, 0) for p in progress) / len(progress)
                for key in ("triggerExecution", *PARTS)}
        mean["compiles"] = (compiled[-1] - compiled[1]) / (len(compiled) - 2)
        mean["batches"] = len(query.recentProgress)
        mean["rows"] = sum(p["numInputRows"] for p in progress) / len(progress)
        result[name] = mean
    return result


def main(argv: list[str] | None = None) -> int:
    parser = broker_parser(__doc__)
    parser.add_argument("--lines", type=int, default=30_000, help="lines pre-loaded")
    parser.add_argument("--per-batch", type=int, default=1_500,
                        help="maxOffsetsPerTrigger: lines per micro-batch")
    parser.add_argument("--cases", default=",".join(ALL_CASES),
                        help="comma-separated cases, in order: " + ", ".join(ALL_CASES))
    parser.add_argument("--master", default="local[2]", help="Spark master URL")
    args = parser.parse_args(argv)
    cases = chosen_cases(parser, args.cases, ALL_CASES)
    if args.per_batch < 100 or args.lines < 5 * args.per_batch:
        parser.error("need --per-batch >= 100 and --lines >= 5 x --per-batch (5 batches or more)")

    jars = connector_jars(args.bootstrap_servers)
    if jars is None:
        return 1
    load_before = os.getloadavg()[0]
    topics = create_topics(args.bootstrap_servers, "bench-batch-cost")
    results, spark = {}, None
    try:
        with tempfile.TemporaryDirectory() as work:
            preload(args.bootstrap_servers, topics["logs"], args.lines, work,
                    "--incident", "ip@5+10")
            spark = analyzer_session(args.master, jars)
            counter = CompileCounter(spark)
            run_case("both", spark, args, topics, work, counter)  # warm-up
            for case in cases:
                began = time.monotonic()
                results[case] = run_case(case, spark, args, topics, work, counter)
                print(f"# {case}: {results[case]} ({time.monotonic() - began:.0f} s, load "
                      f"{os.getloadavg()[0]:.2f})", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        return 130
    finally:
        if spark is not None:
            spark.stop()
        delete_topics(args.bootstrap_servers, topics)

    base = results.get("read", {}).get("read", {}).get("triggerExecution")
    print(f"{args.lines:,} lines, {args.per_batch:,} per micro-batch, {args.master}; load average "
          f"{load_before:.2f} before, {os.getloadavg()[0]:.2f} after; means over batches 3..n\n")
    print("| case | query | lines/batch | batch ms | vs read | compilations/batch | "
          + " | ".join(f"{part} ms" for part in PARTS) + " |")
    print("|---|---|---:|---:|---:|---:|" + "---:|" * len(PARTS))
    for case, per_query in results.items():
        if "error" in per_query:
            print(f"| {case} | error: {per_query['error']} |" + " |" * (4 + len(PARTS)))
            continue
        for name, m in per_query.items():
            ratio = f"{m['triggerExecution'] / base:.2f}x" if base else "-"
            print(f"| {case} | {name} | {m['rows']:,.0f} | {m['triggerExecution']:,.0f} | "
                  f"{ratio} | {m['compiles']:.1f} | "
                  + " | ".join(f"{m[part]:,.0f}" for part in PARTS) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
