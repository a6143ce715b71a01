"""How fast the final-stage analyzer goes: sustained throughput and alert latency, on a real broker.

Run (a broker first: python finale/local_kafka.py start):
    python bench/bench_finale_analyzer.py throughput [--lines 200000] [--rate 1000]
    python bench/bench_finale_analyzer.py latency [--rate 100] [--duration 240]

throughput: --lines lines of generated traffic (finale/log_generator.py --history, --rate lines per
  second of log time, stage-2 error model, 3 incidents) are pre-loaded into a fresh 3-partition
  topic; then the analyzer's two queries (dead letters + alerts, Kafka sinks, default window, slide,
  watermark and thresholds) process the whole topic with an available-now trigger. Prints the
  wall time from the queries' start to the end of both, and lines/s (lines / that time).
latency: the analyzer script runs live (its defaults: 1 s trigger; earliest offsets of a fresh
  topic), the generator sends --rate lines/s in real time with an incident every 40 s (ip, url,
  alternately), and a consumer of the alerts topic notes, for every incident, the first alert for
  its entity.
  Latency = Kafka timestamp of that alert - the incident's start (log time = wall time here).
  Prints each incident's latency, then p50 and p95.
Topics are created fresh and deleted at the end; checkpoints go to a temporary folder.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

DEFAULT_BOOTSTRAP = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "localhost:9092")
GENERATOR = ROOT / "finale" / "log_generator.py"


def create_topics(bootstrap: str, prefix: str) -> dict[str, str]:
    from kafka.admin import KafkaAdminClient, NewTopic

    names = {role: f"{prefix}-{role}-{uuid.uuid4().hex[:6]}" for role in ("logs", "alerts", "dlq")}
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="bench-analyzer")
    try:
        # As finale/local_kafka.TOPICS: the lines' record timestamps are the broker's clock.
        admin.create_topics([NewTopic(names["logs"], 3, 1,
                                      topic_configs={"message.timestamp.type": "LogAppendTime"}),
                             NewTopic(names["alerts"], 1, 1),
                             NewTopic(names["dlq"], 1, 1)], wait_for_metadata=True)
    finally:
        admin.close()
    return names


def delete_topics(bootstrap: str, topics: dict[str, str]) -> None:
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="bench-analyzer")
    try:
        admin.delete_topics(list(topics.values()))
    finally:
        admin.close()


def run_generator(*flags: str) -> None:
    result = subprocess.run([sys.executable, str(GENERATOR), "--seed", "3", *flags],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if result.returncode != 0:
        raise SystemExit(f"error: generator failed: {result.stderr.strip().splitlines()[-1:]}")


def preload(bootstrap: str, topic: str, lines: int, work: Path, *incidents: str) -> None:
    """`lines` generated lines (1,000 lines/s of log time from 2026-11-28T09:00:00Z, --incident
    flags `incidents`) into `topic`, sent unpaced without compression (through a file in `work`)."""
    history = Path(work) / "history.log"
    run_generator("--history", repr(lines / 1000 / 3600), "--rate", "1000",
                  "--start-time", "2026-11-28T09:00:00Z", "--output", str(history), *incidents)
    run_generator("--replay", str(history), "--rate", "1e9", "--compression", "none",
                  "--bootstrap-servers", bootstrap, "--topic", topic)


def connector_jars(bootstrap: str) -> list[str] | None:
    """The Spark Kafka connector's jars (fetched once), or None after a one-line error on stderr
    if no broker answers at `bootstrap`."""
    from finale.analyzer.app import check_kafka
    from finale.tools import local_kafka

    jars = local_kafka.ensure_connector()
    problem = check_kafka(bootstrap, [])
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return None
    return jars


def analyzer_session(master: str, jars: list[str]):
    """A Spark session with the analyzer's own settings (finale.common.spark), Spark's log quiet."""
    from finale.common.spark import spark_session

    return spark_session("chaussettes-finale-analyzer", master, jars=jars, ui=True,
                         log_level="ERROR")


def broker_parser(doc: str) -> argparse.ArgumentParser:
    """A benchmark's argument parser: its doc's first line, defaults in --help,
    --bootstrap-servers."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--bootstrap-servers", default=DEFAULT_BOOTSTRAP,
                        help="Kafka bootstrap servers (env KAFKA_BOOTSTRAP_SERVERS)")
    return parser


def chosen_cases(parser: argparse.ArgumentParser, text: str, known: tuple[str, ...]) -> list[str]:
    """The comma-separated case names of `text`; an unknown one is an argparse error."""
    cases = [case.strip() for case in text.split(",") if case.strip()]
    unknown = [case for case in cases if case not in known]
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; known: {', '.join(known)}")
    return cases


def start_analyzer_script(args, topics: dict[str, str], work: Path,
                          *flags: str) -> subprocess.Popen:
    """finale/spark_streaming_analyzer.py on `topics` (earliest offsets, a fresh checkpoint, the
    documented default thresholds written to `work`, --master args.master) + `flags`; its output
    goes to work/analyzer.log. (An explicit --thresholds path must exist: the analyzer refuses a
    missing one rather than fall back to the defaults.) With `args.code_root` (a folder holding
    another revision's finale/, bench_finale_catchup.code_of), that revision's analyzer runs."""
    import json

    from finale.analyzer.thresholds import DEFAULT_THRESHOLDS

    root = getattr(args, "code_root", None) or ROOT
    env = {**os.environ, "PYTHONPATH": str(root)} if root != ROOT else None
    (work / "thresholds.json").write_text(json.dumps(DEFAULT_THRESHOLDS))
    with open(work / "analyzer.log", "w") as log_file:
        return subprocess.Popen(
            [sys.executable, str(root / "finale" / "spark_streaming_analyzer.py"),
             "--bootstrap-servers", args.bootstrap_servers, "--topic", topics["logs"],
             "--alerts-topic", topics["alerts"], "--dlq-topic", topics["dlq"],
             "--starting-offsets", "earliest", "--checkpoint", str(work / "ck"),
             "--thresholds", str(work / "thresholds.json"), "--master", args.master, *flags],
            stdout=log_file, stderr=subprocess.STDOUT, env=env)


def start_queries(spark, bootstrap, topics, checkpoint, trigger):
    from finale.analyzer import pipeline, sinks
    from finale.analyzer.settings import Settings

    source = pipeline.kafka_source(spark, bootstrap, topics["logs"], "earliest", None)
    writers, handler = pipeline.build_queries(
        source,
        alert_sink=sinks.kafka_sink(bootstrap, topics["alerts"], sinks.alert_records),
        dead_letter_sink=sinks.kafka_sink(
            bootstrap, topics["dlq"],
            lambda dead: sinks.dead_letter_records(dead, topics["logs"])),
        checkpoint=checkpoint, trigger=trigger,
        settings=Settings(thresholds_path=Path("/nonexistent/thresholds.json")),
        log=lambda message: None)
    return [writer.start() for writer in writers.values()], handler


def throughput(args, spark) -> None:
    topics = create_topics(args.bootstrap_servers, "bench-throughput")
    try:
        with tempfile.TemporaryDirectory() as work:
            history = Path(work) / "history.log"
            hours = args.lines / args.rate / 3600
            run_generator("--history", repr(hours), "--rate", str(args.rate),
                          "--start-time", "2026-11-28T09:00:00Z", "--output", str(history),
                          "--incident", "ip@60+30", "--incident", "url@120+30",
                          "--incident", "global@170+10")
            began = time.monotonic()
            run_generator("--replay", str(history), "--rate", "1e9", "--compression", "none",
                          "--bootstrap-servers", args.bootstrap_servers, "--topic", topics["logs"])
            print(f"pre-loaded {args.lines} lines into {topics['logs']} in "
                  f"{time.monotonic() - began:.1f} s", flush=True)
            queries, handler = start_queries(spark, args.bootstrap_servers, topics,
                                             Path(work) / "ck", {"availableNow": True})
            began = time.monotonic()
            for query in queries:
                query.awaitTermination()
            elapsed = time.monotonic() - began
            for query in queries:
                if query.exception() is not None:
                    raise SystemExit(f"error: query {query.name} failed")
            alerts = sum(handler.stats.values())
            print(f"analyzer: {args.lines} lines in {elapsed:.1f} s = {args.lines / elapsed:,.0f} "
                  f"lines/s (both queries, {len(handler.stats)} alert batch(es), {alerts} alert "
                  f"rows out, master {args.master}, load average {os.getloadavg()[0]:.1f})")
    finally:
        delete_topics(args.bootstrap_servers, topics)


def latency(args, spark) -> None:
    from kafka import KafkaConsumer

    topics = create_topics(args.bootstrap_servers, "bench-latency")
    alerts_seen: list[tuple[float, dict]] = []
    stop = threading.Event()

    def consume():
        consumer = KafkaConsumer(topics["alerts"], bootstrap_servers=args.bootstrap_servers,
                                 auto_offset_reset="earliest", consumer_timeout_ms=500)
        while not stop.is_set():
            for record in consumer:
                alerts_seen.append((record.timestamp / 1000, json.loads(record.value)))
        consumer.close()

    reader = threading.Thread(target=consume, daemon=True)
    reader.start()
    work = Path(tempfile.mkdtemp(prefix="bench-latency-"))
    log_path = work / "analyzer.log"
    analyzer = None
    try:
        # The real script, as a user runs it (default trigger, window, slide, watermark).
        analyzer = start_analyzer_script(args, topics, work)
        deadline = time.monotonic() + 300
        while "started queries" not in log_path.read_text(errors="replace"):
            if analyzer.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"error: the analyzer did not start, see {log_path}")
            time.sleep(0.5)
        incidents = []
        for k, at in enumerate(range(30, int(args.duration) - 40, 40)):
            incidents += ["--incident", f"{'ip' if k % 2 == 0 else 'url'}@{at}+30"]
        truth_path = work / "truth.jsonl"
        run_generator("--rate", str(args.rate), "--duration", str(args.duration),
                      "--truth", str(truth_path), "--bootstrap-servers", args.bootstrap_servers,
                      "--topic", topics["logs"], *incidents)
        time.sleep(30)  # the last incident's windows: one slide + triggers
    finally:
        if analyzer is not None and analyzer.poll() is None:
            analyzer.send_signal(2)  # Ctrl-C: the script stops its queries and exits
            try:
                analyzer.wait(60)
            except subprocess.TimeoutExpired:
                analyzer.kill()
        stop.set()
        reader.join(5)
        delete_topics(args.bootstrap_servers, topics)
    print(f"analyzer exit status {analyzer.returncode}, its output: {log_path}")
    if alerts_seen:
        print("first alert: " + json.dumps(alerts_seen[0][1]))
    latencies = []
    for line in truth_path.read_text().splitlines():
        incident = json.loads(line)
        start = datetime.fromisoformat(incident["start"].replace("Z", "+00:00")).timestamp()
        seen = [stamp for stamp, alert in alerts_seen
                if (alert["entity_type"], alert["entity"]) == (incident["kind"], incident["entity"])
                and stamp >= start]
        if seen:
            latencies.append(min(seen) - start)
            print(f"{incident['kind']} {incident['entity']}: first alert {latencies[-1]:.1f} s "
                  "after the incident started")
        else:
            print(f"{incident['kind']} {incident['entity']}: no alert")
    if latencies:
        ordered = sorted(latencies)
        p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
        print(f"alert latency over {len(ordered)} incidents: "
              f"p50 {statistics.median(ordered):.1f} s, p95 {p95:.1f} s, "
              f"max {ordered[-1]:.1f} s (rate {args.rate:g} lines/s, "
              f"load average {os.getloadavg()[0]:.1f})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("mode", choices=("throughput", "latency"), help="what to measure")
    parser.add_argument("--bootstrap-servers", default=DEFAULT_BOOTSTRAP,
                        help="Kafka bootstrap servers")
    parser.add_argument("--lines", type=int, default=200_000, help="throughput: lines pre-loaded")
    parser.add_argument("--rate", type=float, default=None,
                        help="lines per second of log time (default: 1000 throughput, 100 latency)")
    parser.add_argument("--duration", type=float, default=240,
                        help="latency: seconds of live traffic")
    parser.add_argument("--master", default="local[2]", help="Spark master URL")
    args = parser.parse_args(argv)
    if args.rate is None:
        args.rate = 1000.0 if args.mode == "throughput" else 100.0
    if args.lines < 1 or args.rate <= 0 or args.duration < 90:
        parser.error("need --lines >= 1, --rate > 0 and --duration >= 90")

    jars = connector_jars(args.bootstrap_servers)
    if jars is None:
        return 1
    if args.mode == "latency":  # runs the analyzer script itself: no Spark session here
        try:
            latency(args, None)
        except KeyboardInterrupt:
            return 130
        return 0
    spark = analyzer_session(args.master, jars)
    try:
        throughput(args, spark)
    except KeyboardInterrupt:
        return 130
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
