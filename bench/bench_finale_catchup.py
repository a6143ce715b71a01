"""The analyzer against its ceiling, uncapped and with its default cap, catching up an outage's
backlog, and its alert latency: before and after a change, in one run.

Run (a broker first: python finale/local_kafka.py start):
    python bench/bench_finale_catchup.py [--lines 1000000] [--backlog 600000] [--before REV]
        [--caps 100000,200000] [--latency-rates 1000,10000] [--latency-duration 90]

"before" is the analyzer of git revision --before (its finale/ extracted with `git archive` into
.state/bench/, run with PYTHONPATH pointing there), "after" the working tree's. Every figure of
both comes from the same run on the same pre-loaded topics:
- throughput: --lines generated lines (1,000 lines/s of log time, 3 incidents) in a fresh
  3-partition topic, read to the end with an available-now trigger by
  `ceiling`   Kafka -> that revision's parse_access_log -> its window counts -> noop (one query),
  `uncapped`  the analyzer's two queries (build_queries, Kafka sinks), no maxOffsetsPerTrigger,
  `default`   the same with that revision's default --max-offsets-per-trigger,
  `cap N`     (after only, --caps) the same with maxOffsetsPerTrigger N;
  lines/s = lines / wall time from the queries' start to the end of both (start-up included,
  Spark's own start excluded), and the longest micro-batch (triggerExecution).
- catch-up: --backlog lines (10 minutes at 1,000 lines/s) already in a fresh topic when the
  analyzer's queries start with their live triggers (alerts 1 s, dead letters 10 s, each wired as
  that revision's app.py does) and default cap: the time until each query has read every line,
  and the longest micro-batch.
- latency: bench_finale_latency.run at each --latency-rates (the analyzer script itself, 1 s
  trigger, --latency-duration s of traffic, an 8 s incident every 2 s): p50 and p99 from a line to
  its alert.
Each revision's Spark cases run in one child process of this script (one Spark session: an
untimed warm-up run first, then the cases in the order above). Topics are deleted at the end.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_finale_analyzer import (
    ROOT,
    analyzer_session,
    broker_parser,
    connector_jars,
    create_topics,
    delete_topics,
    preload,
)

STATE = ROOT / ".state" / "bench"
# The revision before the dead-letter verdict and the measured default cap.
BEFORE = "74d8db7"


def code_of(revision: str) -> Path:
    """A folder holding `revision`'s finale/ (git archive), with the working tree's .cache (jars)
    linked in; raises RuntimeError with git's message if the revision is unknown."""
    folder = STATE / f"code-{revision}"
    if not (folder / "finale").is_dir():
        folder.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", revision, "finale"],
                                 capture_output=True)
        if archive.returncode != 0:
            raise RuntimeError(archive.stderr.decode(errors="replace").strip())
        subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    cache = folder / ".cache"
    if not cache.exists():
        cache.symlink_to(ROOT / ".cache")
    return folder


def progress_of(queries) -> dict[str, dict[int, dict]]:
    """query name -> batch id -> progress, of the progress reports still held by Spark."""
    return {query.name: {p["batchId"]: p for p in query.recentProgress} for query in queries}


def longest_batch_s(seen: dict[str, dict[int, dict]]) -> float:
    return max((p["durationMs"].get("triggerExecution", 0) / 1000
                for batches in seen.values() for p in batches.values()), default=0.0)


def start_case(spark, case: str, bootstrap: str, topics: dict, checkpoint: Path,
               cap: int | None, trigger: dict, dead_letter_every: str | None = None):
    """The case's started queries, wired from the imported revision's finale functions as its
    app.py wires them (`dead_letter_every`: --dead-letter-trigger, for a live `trigger`)."""
    from pyspark.sql import functions as F

    from finale.analyzer import pipeline, sinks
    from finale.analyzer.access_log import parse_access_log
    from finale.analyzer.metrics import entity_window_counts
    from finale.analyzer.settings import Settings

    settings = Settings(thresholds_path=Path("/nonexistent/thresholds.json"))
    source = pipeline.kafka_source(spark, bootstrap, topics["logs"], "earliest", cap)
    extra = {}
    if dead_letter_every is None:
        dead_letter_trigger = None
    elif hasattr(pipeline, "dead_letter_reading"):
        extra["dead_letter_source"], dead_letter_trigger = pipeline.dead_letter_reading(
            spark, bootstrap, topics["logs"], "earliest", cap, trigger, dead_letter_every)
    else:  # revisions before it: a fixed interval
        dead_letter_trigger = {"processingTime": dead_letter_every}
    if case == "ceiling":
        parsed = parse_access_log(pipeline.log_lines(source))
        counts = entity_window_counts(
            parsed.where(~F.col("malformed")).withWatermark("event_time", settings.watermark),
            settings.window, settings.slide)
        return [counts.writeStream.queryName("ceiling").format("noop").outputMode("update")
                .trigger(**trigger).option("checkpointLocation", str(checkpoint / "ceiling"))
                .start()]
    writers, _ = pipeline.build_queries(
        source,
        alert_sink=sinks.kafka_sink(bootstrap, topics["alerts"], sinks.alert_records),
        dead_letter_sink=sinks.kafka_sink(
            bootstrap, topics["dlq"], lambda dead: sinks.dead_letter_records(dead, topics["logs"])),
        checkpoint=checkpoint, trigger=trigger, dead_letter_trigger=dead_letter_trigger,
        settings=settings, log=lambda message: None, **extra)
    return [writer.start() for writer in writers.values()]


def child(options: dict) -> int:
    """One revision's Spark cases (the revision is whatever `finale` imports); one JSON line per
    case on stdout."""
    from finale.analyzer.app import build_parser
    from finale.analyzer.settings import DEFAULT_MAX_OFFSETS_PER_TRIGGER

    bootstrap, lines, backlog = options["bootstrap"], options["lines"], options["backlog"]
    spark = analyzer_session(options["master"], options["jars"])
    work = Path(tempfile.mkdtemp(prefix="bench-catchup-"))

    def available_now(case, topics, cap, name):
        began = time.monotonic()
        queries = start_case(spark, case, bootstrap, topics, work / name, cap,
                             {"availableNow": True})
        for query in queries:
            query.awaitTermination()
        wall = time.monotonic() - began
        failed = [q.name for q in queries if q.exception() is not None]
        if failed:
            return {"case": name, "error": f"query {failed[0]} failed"}
        return {"case": name, "lines/s": lines / wall, "wall_s": wall, "cap": cap,
                "longest_batch_s": longest_batch_s(progress_of(queries)),
                "batches": max(len(q.recentProgress) for q in queries)}

    try:
        available_now("uncapped", options["topics"], None, "warm-up")  # untimed: JIT, classes
        print(json.dumps({"default_cap": DEFAULT_MAX_OFFSETS_PER_TRIGGER}), flush=True)
        cases = [("ceiling", None, "ceiling"), ("analyzer", None, "uncapped"),
                 ("analyzer", DEFAULT_MAX_OFFSETS_PER_TRIGGER, "default")]
        cases += [("analyzer", cap, f"cap {cap:,}") for cap in options["caps"]]
        for case, cap, name in cases:
            print(json.dumps(available_now(case, options["topics"], cap, name)), flush=True)
        # Catch-up: the live triggers, the default cap, a backlog already there.
        defaults = build_parser()
        began = time.monotonic()
        queries = start_case(
            spark, "analyzer", bootstrap, options["backlog_topics"], work / "catch-up",
            DEFAULT_MAX_OFFSETS_PER_TRIGGER, {"processingTime": defaults.get_default("trigger")},
            defaults.get_default("dead_letter_trigger"))
        seen: dict[str, dict[int, dict]] = {}
        caught_up: dict[str, float] = {}  # query name -> seconds until it had read every line
        deadline = time.monotonic() + 1800
        while len(caught_up) < len(queries) and time.monotonic() < deadline:
            for name, batches in progress_of(queries).items():
                seen.setdefault(name, {}).update(batches)
                if (name not in caught_up
                        and sum(p["numInputRows"] for p in seen[name].values()) >= backlog):
                    caught_up[name] = time.monotonic() - began
            if any(q.exception() is not None for q in queries):
                break
            time.sleep(0.2)
        for query in queries:
            query.stop()
        print(json.dumps({"case": "catch-up", "caught_up_s": caught_up,
                          "cap": DEFAULT_MAX_OFFSETS_PER_TRIGGER,
                          "longest_batch_s": longest_batch_s(seen),
                          "batches": max(len(b) for b in seen.values())}), flush=True)
    finally:
        spark.stop()
    return 0


def run_child(code: Path | None, options: dict) -> list[dict]:
    """This script's child() under `code` (None: the working tree); its JSON lines."""
    env = dict(os.environ)
    if code is not None:
        env["PYTHONPATH"] = str(code)
    result = subprocess.run([sys.executable, __file__, "--child", json.dumps(options)],
                            env=env, capture_output=True, text=True)
    if result.returncode != 0:
        tail = result.stderr.strip().splitlines()[-3:]
        raise RuntimeError(f"the {code or 'working tree'} cases failed: {' / '.join(tail)}")
    sys.stderr.write(result.stderr[-2000:])
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def main(argv: list[str] | None = None) -> int:
    if argv is None and len(sys.argv) == 3 and sys.argv[1] == "--child":
        return child(json.loads(sys.argv[2]))
    parser = broker_parser(__doc__)
    parser.add_argument("--lines", type=int, default=1_000_000, help="lines of the throughput runs")
    parser.add_argument("--backlog", type=int, default=600_000,
                        help="lines of the catch-up backlog (10 minutes at 1,000 lines/s)")
    parser.add_argument("--before", default=BEFORE, help="git revision of the 'before' analyzer")
    parser.add_argument("--caps", default="",
                        help="comma-separated maxOffsetsPerTrigger values also measured (after)")
    parser.add_argument("--latency-rates", default="1000,10000",
                        help="comma-separated lines/s of the latency runs ('' for none)")
    parser.add_argument("--latency-duration", type=float, default=90,
                        help="seconds of traffic of each latency run")
    parser.add_argument("--master", default="local[2]", help="Spark master URL")
    args = parser.parse_args(argv)
    try:
        caps = [int(cap) for cap in args.caps.split(",") if cap.strip()]
        rates = [float(rate) for rate in args.latency_rates.split(",") if rate.strip()]
    except ValueError:
        parser.error("--caps and --latency-rates are numbers separated by commas")
    if args.lines < 1000 or args.backlog < 1000 or min(caps, default=1) < 1:
        parser.error("need --lines >= 1000, --backlog >= 1000 and --caps >= 1")
    jars = connector_jars(args.bootstrap_servers)
    if jars is None:
        return 1
    try:
        before = code_of(args.before)
    except RuntimeError as error:
        print(f"error: --before {args.before}: {error}", file=sys.stderr)
        return 1

    load_before = os.getloadavg()
    topics = create_topics(args.bootstrap_servers, "bench-catchup")
    backlog_topics = create_topics(args.bootstrap_servers, "bench-backlog")
    results: dict[str, list[dict]] = {}
    latency: dict[tuple[str, float], dict] = {}
    try:
        with tempfile.TemporaryDirectory() as work:
            preload(args.bootstrap_servers, topics["logs"], args.lines, Path(work),
                    "--incident", "ip@60+30", "--incident", "url@120+30",
                    "--incident", "global@170+10")
            preload(args.bootstrap_servers, backlog_topics["logs"], args.backlog, Path(work))
        options = {"bootstrap": args.bootstrap_servers, "lines": args.lines,
                   "backlog": args.backlog, "master": args.master, "jars": jars,
                   "topics": topics, "backlog_topics": backlog_topics}
        results["before"] = run_child(before, {**options, "caps": []})
        results["after"] = run_child(None, {**options, "caps": caps})
        if rates:
            import bench_finale_latency

            latency_args = type("Args", (), {
                "bootstrap_servers": args.bootstrap_servers, "master": args.master,
                "duration": args.latency_duration, "incident_every": 2.0,
                "incident_length": 8.0})()
            for rate in rates:
                for label, code in (("before", before), ("after", None)):
                    latency_args.code_root = code
                    try:
                        latency[(label, rate)] = bench_finale_latency.run(
                            latency_args, rate, "1 second")
                    except RuntimeError as error:
                        latency[(label, rate)] = {"error": str(error)}
    except RuntimeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        delete_topics(args.bootstrap_servers, topics)
        delete_topics(args.bootstrap_servers, backlog_topics)
    report(args, results, latency, load_before)
    return 0


def report(args, results, latency, load_before) -> None:
    from bench_finale_latency import percentile

    print(f"{args.lines:,} lines (throughput) and {args.backlog:,} (catch-up), 3 partitions, "
          f"{args.master}; before = {args.before}, after = the working tree; load average "
          f"{load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after\n")
    print("| run | before: lines/s | vs its ceiling | longest batch s | after: lines/s "
          "| vs its ceiling | vs its uncapped | longest batch s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    by = {label: {r["case"]: r for r in rows if "case" in r} for label, rows in results.items()}
    caps = {label: next((r["default_cap"] for r in rows if "default_cap" in r), None)
            for label, rows in results.items()}

    def cells(label, name, base_names):
        r = by[label].get(name)
        if r is None:
            return ["", *([""] * len(base_names)), ""]
        if "error" in r:
            return [r["error"], *([""] * len(base_names)), ""]
        ratios = []
        for base in base_names:
            b = by[label].get(base, {}).get("lines/s")
            ratios.append(f"{r['lines/s'] / b:.2f}x" if b else "")
        return [f"{r['lines/s']:,.0f}", *ratios, f"{r['longest_batch_s']:.1f}"]

    names = ["ceiling", "uncapped", "default", *(n for n in by["after"]
                                                 if n.startswith("cap "))]
    for name in names:
        title = {"default": f"default cap (before {caps['before'] or 'none'}, after "
                            f"{caps['after'] or 'none'})"}.get(name, name)
        before = cells("before", name, ["ceiling"]) if name in by["before"] else ["", "", ""]
        after = cells("after", name, ["ceiling", "uncapped"])
        print(f"| {title} | {' | '.join(before)} | {' | '.join(after)} |")
    print("\n| catch-up of the backlog (live triggers, default cap) | before | after |")
    print("|---|---:|---:|")
    rows = {label: by[label].get("catch-up", {}) for label in ("before", "after")}
    for query in ("alerts", "dead-letters"):
        times = [rows[k].get("caught_up_s", {}).get(query) for k in ("before", "after")]
        print(f"| {query}: time to read every line, s (lines/s) | "
              + " | ".join("not caught up" if t is None else f"{t:.1f} ({args.backlog / t:,.0f})"
                           for t in times) + " |")
    print("| longest micro-batch, s | "
          + " | ".join(f"{rows[k].get('longest_batch_s', 0):.1f}" for k in ("before", "after"))
          + " |")
    if latency:
        print("\n| alert latency, 1 s trigger | alerts | p50 s | p99 s |")
        print("|---|---:|---:|---:|")
        for (label, rate), r in latency.items():
            if "error" in r or not r.get("latencies"):
                print(f"| {rate:,.0f} lines/s, {label} | {r.get('error', 'no alert')} | | |")
                continue
            values = r["latencies"]
            print(f"| {rate:,.0f} lines/s, {label} (sent {r['sent_rate']:,.0f}) | {len(values)} | "
                  f"{percentile(values, 0.5):.2f} | {percentile(values, 0.99):.2f} |")


if __name__ == "__main__":
    sys.exit(main())
