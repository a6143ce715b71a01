"""How fast the final-stage generator fills Kafka, against the same generator writing to /dev/null.

Run (a broker first: python finale/local_kafka.py start):
    python bench/bench_finale_generator.py [--lines 200000] [--bootstrap-servers localhost:9092]

Each case runs finale/log_generator.py unpaced (--rate 1e9: nothing waits, so the rate is what the
generator and its sink sustain) in a subprocess and times it from start to exit, i.e. including the
interpreter start and, for Kafka, the final flush: every line is acknowledged by the broker when
the clock stops. Each Kafka case writes into a fresh 3-partition topic (deleted afterwards) and the
topic's end offsets are checked to hold exactly --lines records. Cases:
  /dev/null                  --output /dev/null (baseline: generation alone)
  kafka-python gzip / none   the generator's default producer (acks=1, 512 KiB batches, linger
                             20 ms, gzip), and without compression
  confluent-kafka gzip / none  the same generator with --kafka-client confluent-kafka
  bare CLIENT gzip / none    bench/bare_producer.py sending the same lines (written to a file
                             first by the generator) with the same producer settings: what each
                             client library allows without the generator
(confluent-kafka cases only when it is installed: the bench extra of pyproject.toml). Each
generator case runs right before its bare client's, so both see about the same machine. Each case
runs --repeat times and the best run counts (other programs share the machine: the best run is the
one they disturbed least). Prints one line per case: seconds, lines/s, the share of the baseline
rate, the lines per CPU-second the process itself used (user + sys time of the generator or bare
producer, its client library's threads included: what a shared machine's load changes least; the
broker's own work is not in it) and, for a generator case, its wall-clock and CPU rates as shares
of its bare client's.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GENERATOR = ROOT / "finale" / "log_generator.py"


def run_case(flags: list[str], command: list[str] | None = None) -> tuple[float, float]:
    """(wall-clock seconds, CPU seconds of the process) of one run of the generator with `flags`
    (or of `command`, a bare producer)."""
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.monotonic()
    result = subprocess.run(command or [sys.executable, str(GENERATOR), "--rate", "1e9", "--seed",
                                        "1", "--start-time", "2026-11-28T09:00:00Z", *flags],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    elapsed = time.monotonic() - began
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise RuntimeError(f"generator failed ({result.returncode}): "
                           f"{result.stderr.strip().splitlines()[-1:]}")
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    return elapsed, cpu


def topic_records(admin, consumer, topic: str) -> int:
    from kafka import TopicPartition

    partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
    return sum(consumer.end_offsets(partitions).values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--lines", type=int, default=200_000, help="lines per case")
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs per case; the best one counts (the machine may be shared)")
    parser.add_argument("--bootstrap-servers",
                        default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "localhost:9092"),
                        help="Kafka bootstrap servers (env KAFKA_BOOTSTRAP_SERVERS)")
    args = parser.parse_args(argv)
    if args.lines < 1:
        parser.error(f"--lines must be >= 1, got {args.lines}")
    if args.repeat < 1:
        parser.error(f"--repeat must be >= 1, got {args.repeat}")

    from kafka import KafkaAdminClient, KafkaConsumer
    from kafka.admin import NewTopic
    from kafka.errors import KafkaError

    try:
        admin = KafkaAdminClient(bootstrap_servers=args.bootstrap_servers)
        consumer = KafkaConsumer(bootstrap_servers=args.bootstrap_servers, group_id=None)
    except KafkaError:
        print(f"error: no Kafka broker answers at {args.bootstrap_servers} "
              "(start one: python finale/local_kafka.py start)", file=sys.stderr)
        return 1
    count = ["--count", str(args.lines)]
    results = []
    work = Path(tempfile.mkdtemp(prefix="bench-generator-"))
    try:
        runs = [run_case([*count, "--output", os.devnull]) for _ in range(args.repeat)]
        baseline = args.lines / min(wall for wall, _ in runs)
        results.append(("/dev/null", baseline, args.lines / min(cpu for _, cpu in runs)))
        lines_file = work / "lines.log"
        run_case([*count, "--output", str(lines_file)])
        clients = ["kafka-python"]
        if importlib.util.find_spec("confluent_kafka") is not None:
            clients.append("confluent-kafka")
        # (name, compression, client, bare): the generator with that client, then the bare client.
        cases = [(f"{prefix}{client} {c}", c, client, bare) for client in clients
                 for c in ("gzip", "none") for prefix, bare in (("", False), ("bare ", True))]
        for name, compression, client, bare in cases:
            best, best_cpu = 0.0, 0.0
            for _ in range(args.repeat):
                topic = f"bench-{uuid.uuid4().hex[:10]}"
                admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
                try:
                    command = None if not bare else [
                        sys.executable, str(ROOT / "bench" / "bare_producer.py"), str(lines_file),
                        "--client", client, "--topic", topic, "--compression", compression,
                        "--bootstrap-servers", args.bootstrap_servers]
                    elapsed, cpu = run_case([*count, "--bootstrap-servers", args.bootstrap_servers,
                                             "--topic", topic, "--compression", compression,
                                             "--kafka-client", client], command)
                    stored = topic_records(admin, consumer, topic)
                    if stored != args.lines:
                        raise RuntimeError(f"{topic} holds {stored} records, not {args.lines}")
                    best = max(best, args.lines / elapsed)
                    best_cpu = max(best_cpu, args.lines / cpu)
                finally:
                    admin.delete_topics([topic])
            results.append((name, best, best_cpu))
    except (RuntimeError, KafkaError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        shutil.rmtree(work, ignore_errors=True)
        admin.close()
        consumer.close()
    print(f"{args.lines} lines per case, unpaced, best of {args.repeat} runs, "
          f"on {os.cpu_count()} CPU cores (load average {os.getloadavg()[0]:.1f})")
    rates = {name: (rate, cpu_rate) for name, rate, cpu_rate in results}
    for name, rate, cpu_rate in results:
        bare = rates.get(f"bare {name}")
        print(f"  {name:<26} {args.lines / rate:6.2f} s  {rate:9,.0f} lines/s  "
              f"{rate / baseline:6.1%} of the baseline  ({cpu_rate:9,.0f} lines per CPU-second)"
              + (f"  {rate / bare[0]:6.1%} of bare, {cpu_rate / bare[1]:6.1%} per CPU-second"
                 if bare else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
