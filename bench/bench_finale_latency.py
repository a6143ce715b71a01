"""The analyzer's pipeline latency (statistical delay excluded) and CPU, per trigger and rate.

Run (a broker first: python finale/local_kafka.py start):
    python bench/bench_finale_latency.py [--rates 1000,10000] [--duration 60]
        [--triggers "0 seconds,500 milliseconds,1 second,2 seconds"] [--incident-every 2]

For every rate and trigger: fresh topics, the analyzer script itself
(finale/spark_streaming_analyzer.py, defaults except --trigger and --no-inhibit, earliest offsets,
fresh checkpoint, default thresholds) is started and its first micro-batch (50 warm-up lines)
awaited, so start-up is excluded; then the generator
sends --rate lines/s in real time for --duration s, with an incident starting every
--incident-every s and lasting --incident-length s (ip and url in turn, a different entity each
time as far as the shop has them), so that a run has enough alerts for its p99; once the
analyzer's status lines show every line through the alerts query, it is stopped with Ctrl-C. Then
both topics are read back with their Kafka timestamps and, for every
alert (first copy of each alert_id), the pipeline latency is computed as the issue defines it:
alert Kafka timestamp - Kafka timestamp of the line that made the window fire, i.e. the first line
(in Kafka time) after which the window's running counts for that entity met the alert condition
(requests >= 5, errors >= 3, Wilson lower bound at z = 3 > the alert's threshold: rules.alerts).
Prints one markdown row per run: alerts, p50, p99, max latency, the analyzer's CPU (cores busy
during the traffic, from /proc: the Python driver and its JVM), and p50 as a ratio to the first
trigger of --triggers at the same rate (the baseline of the same run). The line timestamps are the
broker's (the topic is LogAppendTime, as http-logs): when each line was written to Kafka.
"""
from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from bench_finale_analyzer import (
    broker_parser,
    create_topics,
    delete_topics,
    start_analyzer_script,
)

ROOT = Path(__file__).resolve().parent.parent

LINE = re.compile(r'^(\S+) \S+ \S+ \[([^\]]+)\] "(?:\S+ (\S+?)(?: \S+)?|[^"]*)" (\d{3}) ')
CLOCK_TICK = os.sysconf("SC_CLK_TCK")
ALERTS_IN = re.compile(r" alerts batch \d+: (\d+) lines in")


def end_offsets(bootstrap: str, topic: str) -> list[int]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        return list(consumer.end_offsets(partitions).values())
    finally:
        consumer.close()


def cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of a process and all its descendants (from /proc)."""
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / CLOCK_TICK
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def read_topic(bootstrap: str, topic: str) -> list[tuple[float, bytes]]:
    """Every record of a topic: (Kafka timestamp in s, value)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                             fetch_max_bytes=64 * 1024 * 1024, max_poll_records=50_000)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        ends = consumer.end_offsets(partitions)
        records = []
        deadline = time.monotonic() + 300
        while any(consumer.position(p) < ends[p] for p in partitions):
            if time.monotonic() > deadline:
                raise RuntimeError(f"reading {topic} back took more than 300 s")
            for batch in consumer.poll(timeout_ms=1000).values():
                records += [(r.timestamp / 1000, r.value) for r in batch]
        return records
    finally:
        consumer.close()


def wilson(errors: int, requests: int, z: float = 3.0) -> float:
    p, z2 = errors / requests, z * z
    centre = p + z2 / (2 * requests)
    margin = z * math.sqrt(p * (1 - p) / requests + z2 / (4 * requests * requests))
    return (centre - margin) / (1 + z2 / requests)


def latencies(lines: list[tuple[float, bytes]], alerts: list[tuple[float, bytes]]) -> list[float]:
    """Pipeline latency of every alert (first copy of each alert_id), see the module doc."""
    first: dict[str, tuple[float, dict]] = {}
    for stamp, value in alerts:
        alert = json.loads(value)
        if alert["alert_id"] not in first or stamp < first[alert["alert_id"]][0]:
            first[alert["alert_id"]] = (stamp, alert)
    wanted = {(a["entity_type"], a["entity"]) for _, a in first.values()}
    events: dict[tuple[str, str], list[tuple[float, float, bool]]] = {}
    times: dict[str, float] = {}
    for stamp, value in sorted(lines, key=lambda record: record[0]):
        match = LINE.match(value.decode("utf-8", "replace"))
        if not match:
            continue
        ip, when, url, status = match.groups()
        if when not in times:
            times[when] = datetime.strptime(when, "%d/%b/%Y:%H:%M:%S %z").timestamp()
        event = (stamp, times[when], int(status) >= 400)
        for key in (("global", "*"), ("ip", ip), ("url", url)):
            if key in wanted:
                events.setdefault(key, []).append(event)
    result = []
    for stamp, alert in first.values():
        start = datetime.fromisoformat(alert["window_start"].replace("Z", "+00:00")).timestamp()
        end = datetime.fromisoformat(alert["window_end"].replace("Z", "+00:00")).timestamp()
        requests = errors = 0
        entity = (alert["entity_type"], alert["entity"])
        for kafka_time, event_time, error in events.get(entity, ()):
            if not start <= event_time < end:
                continue
            requests, errors = requests + 1, errors + error
            if requests >= 5 and errors >= 3 and wilson(errors, requests) > alert["threshold"]:
                result.append(stamp - kafka_time)
                break
    return result


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def incident_flags(duration: float, every: float, length: float) -> list[str]:
    """--incident flags: one every `every` s from 2 s on, `length` s each, ip and url in turn."""
    flags, start, kinds = [], 2.0, ("ip", "url")
    while start + length <= duration:
        flags += ["--incident", f"{kinds[len(flags) // 2 % 2]}@{start:g}+{length:g}"]
        start += every
    return flags


def run(args, rate: float, trigger: str) -> dict:
    topics = create_topics(args.bootstrap_servers, "bench-latency")
    work = Path(tempfile.mkdtemp(prefix="bench-latency-"))
    log_path = work / "analyzer.log"
    analyzer = None
    try:
        # --no-inhibit: inhibition holds an ip/url alert back while its window's global alert
        # fires, and lets it out if the global one stops: a rule's decision, not pipeline delay.
        analyzer = start_analyzer_script(args, topics, work, "--trigger", trigger, "--no-inhibit")
        # A first micro-batch needs data: a few warm-up lines, so start-up is over before the clock.
        warm_up = subprocess.run(
            [sys.executable, str(ROOT / "finale" / "log_generator.py"), "--seed", "4", "--count",
             "50", "--rate", "1e9", "--bootstrap-servers", args.bootstrap_servers,
             "--topic", topics["logs"]],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if warm_up.returncode != 0:
            raise RuntimeError(f"generator failed: {warm_up.stderr.strip().splitlines()[-1:]}")
        deadline = time.monotonic() + 300
        while "alerts batch 0" not in log_path.read_text(errors="replace"):
            if analyzer.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the analyzer did not start, see {log_path}")
            time.sleep(0.2)
        cpu_before, began = cpu_seconds(analyzer.pid), time.monotonic()
        generator = subprocess.run(
            [sys.executable, str(ROOT / "finale" / "log_generator.py"), "--seed", "5",
             "--rate", str(rate), "--duration", str(args.duration),
             "--bootstrap-servers", args.bootstrap_servers, "--topic", topics["logs"],
             *incident_flags(args.duration, args.incident_every, args.incident_length)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if generator.returncode != 0:
            raise RuntimeError(f"generator failed: {generator.stderr.strip().splitlines()[-1:]}")
        sent_for = time.monotonic() - began
        cpu = (cpu_seconds(analyzer.pid) - cpu_before) / sent_for
        # Every line through the alerts query (its status lines count them), then Ctrl-C.
        total = sum(end for end in end_offsets(args.bootstrap_servers, topics["logs"]))
        deadline = time.monotonic() + 300
        while sum(int(n) for n in ALERTS_IN.findall(log_path.read_text(errors="replace"))) < total:
            if analyzer.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"the analyzer did not process all {total} lines, see {log_path}")
            time.sleep(0.5)
        analyzer.send_signal(signal.SIGINT)
        analyzer.wait(90)
        lines = read_topic(args.bootstrap_servers, topics["logs"])
        measured = latencies(lines, read_topic(args.bootstrap_servers, topics["alerts"]))
        return {"latencies": measured, "cpu": cpu, "sent_rate": len(lines) / sent_for}
    finally:
        if analyzer is not None and analyzer.poll() is None:
            analyzer.kill()
        delete_topics(args.bootstrap_servers, topics)


def main(argv: list[str] | None = None) -> int:
    parser = broker_parser(__doc__)
    parser.add_argument("--rates", default="1000,10000", help="comma-separated lines/s to send")
    parser.add_argument("--triggers", default="0 seconds,500 milliseconds,1 second,2 seconds",
                        help="comma-separated analyzer --trigger values "
                             "(the first is the baseline)")
    parser.add_argument("--duration", type=float, default=60, help="seconds of traffic per run")
    parser.add_argument("--incident-every", type=float, default=2,
                        help="seconds between the starts of two incidents")
    parser.add_argument("--incident-length", type=float, default=8,
                        help="seconds an incident lasts")
    parser.add_argument("--master", default="local[2]", help="Spark master URL")
    args = parser.parse_args(argv)
    try:
        rates = [float(r) for r in args.rates.split(",")]
    except ValueError:
        parser.error(f"--rates must be numbers separated by commas, got {args.rates!r}")
    triggers = [t.strip() for t in args.triggers.split(",") if t.strip()]
    if not rates or min(rates) <= 0 or not triggers or args.duration < 15:
        parser.error("need rates > 0, at least one trigger and --duration >= 15")
    if not 0 < args.incident_length <= args.duration - 2 or args.incident_every <= 0:
        parser.error("need 0 < --incident-length <= --duration - 2 and --incident-every > 0")
    incidents = len(incident_flags(args.duration, args.incident_every, args.incident_length)) // 2

    from finale.analyzer.app import check_kafka

    problem = check_kafka(args.bootstrap_servers, [])
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 1
    print(f"load average {os.getloadavg()[0]:.2f} before; {args.duration:g} s of traffic per run, "
          f"{incidents} incidents of {args.incident_length:g} s "
          f"(one every {args.incident_every:g} s)\n")
    print("| rate lines/s (sent) | trigger | alerts | p50 s | p99 s | max s | p50 vs first trigger "
          "| analyzer CPU (cores) | load |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    try:
        for rate in rates:
            base = None
            for trigger in triggers:
                try:
                    r = run(args, rate, trigger)
                except RuntimeError as error:
                    print(f"| {rate:,.0f} | {trigger} | error: {error} | | | | | | |", flush=True)
                    continue
                values = r["latencies"]
                if not values:
                    print(f"| {rate:,.0f} ({r['sent_rate']:,.0f}) | {trigger} | 0 | | | | | "
                          f"{r['cpu']:.2f} | {os.getloadavg()[0]:.2f} |", flush=True)
                    continue
                p50 = percentile(values, 0.5)
                base = base or p50
                print(f"| {rate:,.0f} ({r['sent_rate']:,.0f}) | {trigger} | {len(values)} | "
                      f"{p50:.2f} | {percentile(values, 0.99):.2f} | {max(values):.2f} | "
                      f"{p50 / base:.2f}x | {r['cpu']:.2f} | {os.getloadavg()[0]:.2f} |",
                      flush=True)
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
