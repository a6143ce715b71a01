"""Faults, tested rather than assumed: the analyzer killed with SIGKILL, the broker restarted under
load, a 10x burst. Real broker, real Spark, the scripts as subprocesses (`pytest -m faults`).

Random choices come from one seed, printed (`-s` or the failure report shows it); FAULTS_SEED=N
replays a run.
"""
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from conftest import ROOT, wait_for
from kafka import KafkaConsumer, TopicPartition
from test_analyzer_pipeline import generate, new_topics, parse_time, send

from finale.analyzer import pipeline, sinks, status, thresholds
from finale.analyzer.settings import Settings
from finale.tools import local_kafka

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.spark]

ANALYZER = ROOT / "finale" / "spark_streaming_analyzer.py"
GENERATOR = ROOT / "finale" / "log_generator.py"
# Spark start-up plus a few micro-batches: about a minute idle, several on the shared 2-core machine
# under load (seen: 10 s per 300-line batch at load average 20).
WAIT = 420
BATCH_LINE = re.compile(r" alerts batch (\d+): (\d+) lines in .* backlog (\d+|\?)$")


def seed() -> int:
    value = int(os.environ.get("FAULTS_SEED") or random.SystemRandom().randrange(10**6))
    print(f"FAULTS_SEED={value}")
    return value


def defaults_file(folder: Path) -> Path:
    """The documented default thresholds as a file: runs never depend on .state/."""
    path = folder / "thresholds.json"
    path.write_text(json.dumps(thresholds.DEFAULT_THRESHOLDS))
    return path


class Analyzer:
    """spark_streaming_analyzer.py as a subprocess in its own process group (SIGKILL reaches the
    Python driver and its JVM at once: a crash, no shutdown hook runs)."""

    def __init__(self, folder: Path, bootstrap: str, topic: str, alerts: str, dlq: str, *extra: str,
                 checkpoint: Path | None = None, name: str = "analyzer"):
        self.status_path = folder / f"{name}-status.json"
        self.log_path = folder / f"{name}.log"
        self.log = open(self.log_path, "w")
        self.process = subprocess.Popen(
            [sys.executable, str(ANALYZER), "--bootstrap-servers", bootstrap, "--topic", topic,
             "--alerts-topic", alerts, "--dlq-topic", dlq, "--starting-offsets", "earliest",
             "--thresholds", str(defaults_file(folder)),
             "--checkpoint", str(checkpoint or folder / f"{name}-ck"),
             "--status-file", str(self.status_path), *extra],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def query(self, name: str = "alerts") -> dict:
        return status.read_status(self.status_path).get("queries", {}).get(name, {})

    def batches(self) -> list[tuple[int, int, int | None]]:
        """(batch id, lines in, backlog) of every alerts batch, from the status lines."""
        found = [BATCH_LINE.search(line) for line in self.log_path.read_text().splitlines()]
        return [(int(m[1]), int(m[2]), None if m[3] == "?" else int(m[3])) for m in found if m]

    def wait(self, timeout: float = WAIT) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"the analyzer did not finish in {timeout:.0f} s:\n{self.tail()}")

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(30)
        self.log.close()

    def stop(self) -> int:
        """SIGTERM to the script alone (its clean stop: it stops the queries, then its JVM)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.wait(60)

    def tail(self) -> str:
        return "\n".join(self.log_path.read_text().splitlines()[-15:])


def read_topic(bootstrap: str, topic: str) -> list:
    """Every record of a topic, in offset order per partition (read up to the end offsets)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             auto_offset_reset="earliest", consumer_timeout_ms=1000)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        consumer.assign(partitions)
        end = consumer.end_offsets(partitions)
        records = []
        deadline = time.monotonic() + 60
        while any(consumer.position(p) < end[p] for p in partitions):
            assert time.monotonic() < deadline, f"could not read {topic} to its end"
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()


def end_offsets_total(bootstrap: str, topic: str) -> int:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        return sum(consumer.end_offsets(partitions).values())
    finally:
        consumer.close()


def latest_alerts(records) -> dict:
    """alert_id -> (entity_type, entity, window_start, requests, errors) of its last version."""
    latest = {}
    for record in records:
        alert = json.loads(record.value)
        latest[alert["alert_id"]] = (alert["entity_type"], alert["entity"], alert["window_start"],
                                     alert["requests"], alert["errors"])
    return latest


# ------------------------------------------------------------------------------------------------
# kill -9 of the analyzer, restart on the same checkpoints
# ------------------------------------------------------------------------------------------------

MAX_OFFSETS = 1000  # 3,000 lines -> 4 batches (999 x 3 + 3): room for a kill before the last


def reference_run(spark, bootstrap: str, topic: str, alerts: str, dlq: str, folder: Path) -> None:
    """The uninterrupted run: the analyzer's own queries and Kafka sinks, in the test session's
    Spark (one Spark start-up less than another subprocess), with the script's settings."""
    source = pipeline.kafka_source(spark, bootstrap, topic, "earliest", MAX_OFFSETS)
    writers, _ = pipeline.build_queries(
        source,
        alert_sink=sinks.kafka_sink(bootstrap, alerts, sinks.alert_records),
        dead_letter_sink=sinks.kafka_sink(
            bootstrap, dlq, lambda dead: sinks.dead_letter_records(dead, topic)),
        checkpoint=folder / "steady-ck", trigger={"availableNow": True},
        settings=Settings(thresholds_path=defaults_file(folder)),
        log=lambda message: None)
    query = writers["alerts"].start()
    try:
        assert query.awaitTermination(WAIT), "the uninterrupted run did not finish"
    finally:
        query.stop()
    assert query.exception() is None
    progress = [p if isinstance(p, dict) else json.loads(p.json) for p in query.recentProgress]
    # The cap is shared out over the 3 partitions, rounded down: 998-1000 records per full batch.
    assert MAX_OFFSETS - 2 <= max(p["numInputRows"] for p in progress) <= MAX_OFFSETS


@pytest.mark.timeout(3 * WAIT)  # three analyzer runs, each bounded by WAIT
def test_kill_9_then_restart_gives_the_alerts_and_counts_of_an_uninterrupted_run(spark, kafka,
                                                                                tmp_path):
    rng = random.Random(seed())
    lines = generate(tmp_path / "traffic.log", ("ip@20+30", "url@60+30", "global@110+20"))
    topic, steady_alerts, crashed_alerts, dlq = new_topics(
        kafka, "faults-in", "faults-steady", "faults-crashed", "faults-dlq")
    send(kafka, topic, lines)
    # available-now + maxOffsetsPerTrigger: the batch boundaries depend on the offsets only, and a
    # batch killed half-way is planned again with the end offsets its offset log holds. So the
    # inhibition's batch dependence cannot differ between the runs: inhibition stays on.
    flags = ("--trigger", "available-now", "--max-offsets-per-trigger", str(MAX_OFFSETS))
    reference_run(spark, kafka, topic, steady_alerts, dlq, tmp_path)

    # The random moment: after alerts batch k (0 or 1) has been reported, plus 0-1 s into the next
    # (at least two batches and the final no-data one are still to come: more than 1 s even idle).
    kill_after, delay = rng.randint(0, 1), rng.uniform(0, 1)
    print(f"kill -9 after alerts batch {kill_after} + {delay:.2f} s")
    checkpoint = tmp_path / "crashed-ck"
    crashed = Analyzer(tmp_path, kafka, topic, crashed_alerts, dlq, *flags, checkpoint=checkpoint,
                       name="crashed")
    wait_for(lambda: crashed.query().get("batch_id", -1) >= kill_after or crashed.process.poll(),
             WAIT, f"alerts batch {kill_after}", interval=0.2)
    time.sleep(delay)  # the chosen moment itself, not a wait for a condition
    assert crashed.process.poll() is None, "the analyzer ended before the kill:\n" + crashed.tail()
    crashed.kill()
    read_before_kill = crashed.query().get("rows_read_total", 0)
    assert 0 < read_before_kill < len(lines)

    restarted = Analyzer(tmp_path, kafka, topic, crashed_alerts, dlq, *flags,
                         checkpoint=checkpoint, name="restarted")
    assert restarted.wait() == 0, restarted.tail()
    restarted.kill()

    reference = latest_alerts(read_topic(kafka, steady_alerts))
    recovered = latest_alerts(read_topic(kafka, crashed_alerts))
    # Same alert ids and, per alert, the same window counts: a line counted twice after the
    # restart would raise a window's requests.
    print(f"killed after {read_before_kill} of {len(lines)} lines committed; restart read "
          f"{restarted.query()['rows_read_total']}; {len(recovered)} alert ids, reference "
          f"{len(reference)}")
    assert recovered == reference
    assert {alert[0] for alert in reference.values()} == {"ip", "url", "global"}
    # The restart went on from the checkpoint, not from the start of the topic.
    # (The killed batch may have committed before its progress reached the status file.)
    left = len(lines) - read_before_kill
    assert left - MAX_OFFSETS <= restarted.query()["rows_read_total"] <= left


# ------------------------------------------------------------------------------------------------
# The broker stopped for 10-20 s while the generator and the analyzer run
# ------------------------------------------------------------------------------------------------

RATE, SECONDS = 100, 70


def generator_argv(seed_value: int, start: str) -> list[str]:
    """The generator's traffic: its lines depend on seed, start time and line index only, so the
    same flags with --history rebuild, offline, exactly the lines a live run sends."""
    return [sys.executable, str(GENERATOR), "--rate", str(RATE), "--seed", str(seed_value),
            "--start-time", start, "--incident", "ip@15+45"]


@pytest.mark.kafka
@pytest.mark.timeout(2 * WAIT)
def test_broker_restart_under_load_loses_no_acknowledged_line_and_still_alerts(own_broker,
                                                                                tmp_path):
    info, state_dir = own_broker
    bootstrap, port = info["bootstrap_servers"], info["port"]
    rng = random.Random(seed())
    seed_value, outage_s = rng.randrange(1, 10**6), rng.uniform(10, 20)
    analyzer_run = Analyzer(tmp_path, bootstrap, "http-logs", "alerts", "http-logs-dlq",
                            "--trigger", "2 seconds")
    try:
        wait_for(lambda: analyzer_run.query().get("active") or analyzer_run.process.poll(),
                 WAIT, "the analyzer's queries to start", interval=0.5)
        start = datetime.now(timezone.utc).replace(microsecond=0)
        stats_path = tmp_path / "generator-stats.json"
        with open(tmp_path / "generator.log", "w") as generator_log:
            generator_run = subprocess.Popen(
                generator_argv(seed_value, start.isoformat()) + [
                    "--duration", str(SECONDS), "--bootstrap-servers", bootstrap,
                    "--truth", str(tmp_path / "truth.jsonl"), "--stats-file", str(stats_path)],
                stdout=generator_log, stderr=subprocess.STDOUT)
        # The outage begins 20 s into the traffic (the broker holds 20 s of lines), the analyzer
        # running (its first micro-batch may still be on its way on a loaded machine).
        wait_for(lambda: end_offsets_total(bootstrap, "http-logs") >= 20 * RATE,
                 WAIT, "20 s of traffic in the topic", interval=0.5)
        assert analyzer_run.process.poll() is None, analyzer_run.tail()
        stopped_at = datetime.now(timezone.utc)
        assert local_kafka.stop(state_dir=state_dir, log=lambda message: None)
        print(f"broker stopped at {stopped_at:%H:%M:%S} for {outage_s:.1f} s")
        time.sleep(outage_s)  # the outage itself (its length is the fault being injected)
        local_kafka.start(port, state_dir=state_dir, log=lambda message: None)
        restarted_at = datetime.now(timezone.utc)
        assert generator_run.wait(SECONDS + 150) == 0, (tmp_path / "generator.log").read_text()
        stats = json.loads(stats_path.read_text())
        print("generator:", {k: v for k, v in stats.items() if k.startswith("lines_")})
        assert stats["lines_sent"] == RATE * SECONDS
        assert stats["lines_acknowledged"] + stats["lines_failed"] == stats["lines_sent"]
        assert stats["lines_unknown"] == 0

        # Every acknowledged line is in the topic: the run's lines, rebuilt offline, against the
        # topic's records (retries without idempotence may add duplicates, never lose a line).
        expected_path = tmp_path / "expected.log"
        subprocess.run(generator_argv(seed_value, start.isoformat()) + [
            "--history", repr(SECONDS / 3600), "--output", str(expected_path)], check=True)
        expected = Counter(expected_path.read_bytes().splitlines())
        in_topic = Counter(record.value for record in read_topic(bootstrap, "http-logs"))
        found = sum((expected & in_topic).values())
        print(f"in the topic: {sum(in_topic.values())} records, {found} of the "
              f"{sum(expected.values())} lines sent")
        assert found >= stats["lines_acknowledged"]
        assert found + stats["lines_failed"] == stats["lines_sent"]

        # The analyzer resumed by itself and read everything: its backlog drains to 0.
        wait_for(lambda: (analyzer_run.query().get("backlog") == 0
                          and analyzer_run.query().get("rows_read_total", 0)
                          >= sum(in_topic.values())) or analyzer_run.process.poll() is not None,
                 WAIT, "the analyzer to catch up after the outage", interval=0.5)
        assert analyzer_run.process.poll() is None, analyzer_run.tail()
        assert analyzer_run.query()["active"] and analyzer_run.query()["error"] is None
    finally:
        analyzer_run.stop()
        analyzer_run.kill()

    # The ip incident (log time +15 s to +60 s) spans the outage, and still alerts after it.
    incident = json.loads((tmp_path / "truth.jsonl").read_text().splitlines()[0])
    alerts = latest_alerts(read_topic(bootstrap, "alerts"))
    on_incident = [alert for alert in alerts.values()
                   if alert[:2] == ("ip", incident["entity"])]
    assert on_incident, f"no alert on {incident['entity']}"
    outage_windows = [alert for alert in on_incident
                      if parse_time(alert[2]) + timedelta(seconds=30)
                      > stopped_at.replace(tzinfo=None) and parse_time(alert[2])
                      < restarted_at.replace(tzinfo=None)]
    assert outage_windows, f"no alert window of {incident['entity']} overlaps the outage"


# ------------------------------------------------------------------------------------------------
# A 10x burst for 30 s: bounded micro-batches, backlog visible, drained
# ------------------------------------------------------------------------------------------------

# At a 5 s trigger the burst brings 1,000 lines per trigger, the cap takes 600: the backlog
# builds up whatever the machine's speed, and the base traffic then lets it drain.
BASE_RATE, BURST_S, LIMIT = 20, 30, 600


@pytest.mark.timeout(2 * WAIT)
def test_burst_is_drained_in_bounded_batches_with_the_backlog_visible(kafka, tmp_path):
    topic, alerts, dlq = new_topics(kafka, "burst-in", "burst-alerts", "burst-dlq")
    analyzer_run = Analyzer(tmp_path, kafka, topic, alerts, dlq, "--trigger", "5 seconds",
                            "--max-offsets-per-trigger", str(LIMIT))
    generators = []

    def generator(rate: int, seconds: int, seed_value: int) -> subprocess.Popen:
        process = subprocess.Popen(
            [sys.executable, str(GENERATOR), "--rate", str(rate), "--duration", str(seconds),
             "--seed", str(seed_value), "--bootstrap-servers", kafka, "--topic", topic],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        generators.append(process)
        return process

    try:
        wait_for(lambda: analyzer_run.query().get("active") or analyzer_run.process.poll(),
                 WAIT, "the analyzer's queries to start", interval=0.5)
        base = generator(BASE_RATE, BURST_S + 30, 1)
        wait_for(lambda: analyzer_run.query().get("rows_read_total", 0) >= 5 * BASE_RATE,
                 WAIT, "the analyzer to read the base traffic", interval=0.5)
        # 9x more on top of the base rate: 10x the traffic for 30 s.
        burst = generator(9 * BASE_RATE, BURST_S, 2)
        assert burst.wait(BURST_S + 60) == 0
        burst_end = time.monotonic()
        assert base.wait(120) == 0
        total = end_offsets_total(kafka, topic)
        assert total == BASE_RATE * (BURST_S + 30) + 9 * BASE_RATE * BURST_S
        wait_for(lambda: analyzer_run.query().get("rows_read_total", 0) >= total
                 or analyzer_run.process.poll() is not None, WAIT,
                 "the analyzer to drain the burst", interval=0.5)
        drained_s = time.monotonic() - burst_end
        assert analyzer_run.process.poll() is None, analyzer_run.tail()
        assert analyzer_run.query()["rows_read_total"] == total
        wait_for(lambda: analyzer_run.query().get("backlog") == 0, 30, "backlog 0", interval=0.5)
    finally:
        for process in generators:
            if process.poll() is None:
                process.kill()
                process.wait()
        analyzer_run.stop()
        analyzer_run.kill()
    batches = analyzer_run.batches()
    sizes = [lines_in for _, lines_in, _ in batches]
    peak = max((backlog or 0) for _, _, backlog in batches)
    print(f"burst: {total} lines, {len(batches)} alerts batches, largest {max(sizes)}, "
          f"peak backlog {peak}, drained {drained_s:.1f} s after the burst ended")
    # The backlog did build up, and the cap (shared out over 3 partitions, rounded down) held it.
    assert LIMIT - 2 <= max(sizes) <= LIMIT, sizes
    assert peak > LIMIT                        # the backlog was visible while it lasted
    assert sum(sizes) == total
