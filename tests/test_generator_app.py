"""finale/generator/app.py beyond the stage-2 contract (tests/test_contract_generator.py): Kafka
output on a real broker, incidents and their truth file, --history, --replay."""
import json
import math
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from conftest import ROOT, free_port, wait_for

from finale.generator import app as gen
from finale.generator import traffic

SCRIPT = str(ROOT / "finale" / "log_generator.py")
START = "2026-11-28T09:00:00Z"
T0 = datetime(2026, 11, 28, 9, 0, 0, tzinfo=timezone.utc)


def generate(*flags: str) -> list[str]:
    result = subprocess.run([sys.executable, SCRIPT, *flags], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def log_time(line: str) -> datetime:
    return datetime.strptime(line.split("[", 1)[1].split("]", 1)[0], "%d/%b/%Y:%H:%M:%S %z")


def status(line: str) -> int:
    return int(line.split('" ', 1)[1].split(" ", 1)[0])


def url(line: str) -> str:
    return line.split('"', 2)[1].split(" ")[1]


def new_topic(bootstrap: str, partitions: int) -> str:
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    topic = f"gen-{uuid.uuid4().hex[:12]}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    finally:
        admin.close()
    return topic


def read_topic(bootstrap: str, topic: str) -> dict[int, list[tuple[bytes, bytes]]]:
    """Every record of the topic, {partition: [(key, value), ...]} in offset order: reads up to
    the end offsets of each partition, so the count is exact."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p)
                      for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        ends = consumer.end_offsets(partitions)
        records: dict[int, list] = {tp.partition: [] for tp in partitions}

        def complete() -> bool:
            for batch in consumer.poll(timeout_ms=200).values():
                for record in batch:
                    records[record.partition].append((record.key, record.value))
            return all(len(records[tp.partition]) >= ends[tp] for tp in partitions)

        wait_for(complete, 60, f"the {sum(ends.values())} records of {topic}")
        assert ({p: len(r) for p, r in records.items()}
                == {tp.partition: ends[tp] for tp in partitions})
        return records
    finally:
        consumer.close(autocommit=False)


# --- Kafka output -------------------------------------------------------------------------------

def test_lines_land_in_kafka_keyed_by_ip_in_order(kafka):
    topic = new_topic(kafka, 3)
    flags = ["--seed", "5", "--rate", "1e9", "--count", "5000", "--start-time", START]
    result = subprocess.run([sys.executable, SCRIPT, *flags, "--bootstrap-servers", kafka,
                             "--topic", topic], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"5000 lines delivered to topic {topic}" in result.stderr
    expected = generate(*flags, "--output", "-")
    records = read_topic(kafka, topic)
    assert sum(map(len, records.values())) == 5000
    from kafka.partitioner.default import murmur2

    by_ip: dict[bytes, list[bytes]] = {}
    for partition, items in records.items():
        for key, value in items:
            assert key == value.split(b" ", 1)[0]  # keyed by client IP
            # The partition of the default partitioner (Java client's murmur2): one per IP.
            assert partition == (murmur2(key) & 0x7FFFFFFF) % 3
            by_ip.setdefault(key, []).append(value)
    assert len([p for p in records.values() if p]) == 3  # 50 IPs spread over the partitions
    # Each IP's lines are in one partition, in the order they were generated.
    expected_by_ip: dict[bytes, list[bytes]] = {}
    for line in expected:
        expected_by_ip.setdefault(line.split(" ", 1)[0].encode(), []).append(line.encode())
    assert by_ip == expected_by_ip


@pytest.mark.parametrize("compression, acks", [("gzip", "1"), ("none", "1"), ("gzip", "all")])
def test_confluent_client_sends_what_kafka_python_sends(kafka, tmp_path, compression, acks):
    """--kafka-client confluent-kafka: the same records (key, value), in the same partitions, in
    the same order per partition as the default client for the same seed, and exact counts; with
    --acks all (idempotent producers) too."""
    flags = ["--seed", "5", "--rate", "1e9", "--count", "5000", "--start-time", START]
    from kafka.partitioner.default import murmur2

    expected: dict[int, list[tuple[bytes, bytes]]] = {0: [], 1: [], 2: []}
    for line in generate(*flags, "--output", "-"):
        key = line.split(" ", 1)[0].encode()
        expected[(murmur2(key) & 0x7FFFFFFF) % 3].append((key, line.encode()))
    flags += ["--bootstrap-servers", kafka, "--compression", compression, "--acks", acks]
    records = {}
    for client in ("kafka-python", "confluent-kafka"):
        topic, stats_file = new_topic(kafka, 3), tmp_path / f"{client}.json"
        result = subprocess.run([sys.executable, SCRIPT, *flags, "--topic", topic,
                                 "--kafka-client", client, "--stats-file", str(stats_file)],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert result.stderr.splitlines()[-1] == f"5000 lines delivered to topic {topic} at {kafka}"
        stats = json.loads(stats_file.read_text())
        assert {k: v for k, v in stats.items() if k != "finished_at"} == {
            "output": "kafka", "topic": topic, "lines_sent": 5000, "lines_delivered": 5000,
            "lines_acknowledged": 5000, "lines_failed": 0, "lines_unknown": 0}
        records[client] = read_topic(kafka, topic)
    # Each partition: the lines of its IPs (murmur2 of the key, as the Java client), in order.
    assert records["kafka-python"] == expected
    assert records["confluent-kafka"] == expected


@pytest.mark.parametrize("client", ["kafka-python", "confluent-kafka"])
def test_sigterm_flushes_what_was_sent(kafka, tmp_path, client):
    topic, stats_file = new_topic(kafka, 1), tmp_path / "stats.json"
    process = subprocess.Popen([sys.executable, SCRIPT, "--rate", "500", "--seed", "1",
                                "--bootstrap-servers", kafka, "--topic", topic,
                                "--kafka-client", client, "--stats-file", str(stats_file)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: read_end(kafka, topic) >= 200, 60, "lines in the topic")
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
    stderr = process.stderr.read()
    assert "Traceback" not in stderr
    delivered = int(stderr.split(" lines delivered")[0].split()[-1])
    assert delivered >= 200 and read_end(kafka, topic) == delivered
    stats = json.loads(stats_file.read_text())
    assert stats["lines_delivered"] == stats["lines_acknowledged"] == delivered
    assert stats["lines_failed"] == 0
    if client == "confluent-kafka":  # counted around a C call: exact even when interrupted
        assert stats["lines_sent"] == delivered and stats["lines_unknown"] == 0


def read_end(bootstrap: str, topic: str) -> int:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    try:
        return sum(consumer.end_offsets([TopicPartition(topic, 0)]).values())
    finally:
        consumer.close(autocommit=False)


@pytest.mark.parametrize("client", ["kafka-python", "confluent-kafka"])
def test_unreachable_broker_is_one_line_and_exit_1(client):
    port = free_port()
    result = subprocess.run([sys.executable, SCRIPT, "--bootstrap-servers", f"localhost:{port}",
                             "--count", "10", "--kafka-client", client],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr == (f"error: no Kafka broker answers at localhost:{port} "
                             "(start one: python finale/local_kafka.py start)\n")


def test_missing_confluent_kafka_is_one_line_and_exit_2(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "confluent_kafka", None)  # what `import` sees when absent
    with pytest.raises(SystemExit) as stop:
        gen.main(["--kafka-client", "confluent-kafka", "--count", "1"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.endswith(
        " error: argument --kafka-client: confluent-kafka is not installed: "
        "pip install -e '.[bench]' (make setup installs it with the dev extra)\n")


@pytest.mark.parametrize("topic", ["bad topic", "", "x" * 250, "..", "caf\u00e9"])
def test_bad_topic_name_is_one_line_and_exit_2(topic, capsys):
    with pytest.raises(SystemExit) as stop:
        gen.main(["--topic", topic, "--count", "1"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.endswith(
        f" error: argument --topic: {topic!r} is not a Kafka topic name "
        "(1-249 of letters, digits, '.', '_', '-')\n")


# --- incidents ----------------------------------------------------------------------------------

# 60 s of log time at 100 lines/s, written unpaced by --history (1/60 h).
RATE, COUNT = 100, 6000
MODEL = ["--seed", "21", "--users", "20", "--rate", str(RATE), "--history", repr(1 / 60),
         "--start-time", START, "--output", "-"]


@pytest.fixture(scope="module")
def model():
    return traffic.build_traffic_model(20, 20, 30, 21)


@pytest.fixture(scope="module")
def calm(model):
    return generate(*MODEL)


def test_incidents_fail_their_entity_in_their_window_only(tmp_path, model, calm):
    ip = sorted(set(model.ips) - model.error_ips)[0]  # a user who never fails outside the incident
    truth = tmp_path / "truth.jsonl"
    lines = generate(*MODEL, "--incident", f"ip={ip}@10+10", "--incident", "url=/cart@25.5+10",
                     "--incident", "global@45+5", "--truth", str(truth))
    assert [json.loads(line) for line in truth.read_text().splitlines()] == [
        {"kind": "ip", "entity": ip,
         "start": "2026-11-28T09:00:10.000Z", "end": "2026-11-28T09:00:20.000Z"},
        {"kind": "url", "entity": "/cart",
         "start": "2026-11-28T09:00:25.500Z", "end": "2026-11-28T09:00:35.500Z"},
        {"kind": "global", "entity": "*",
         "start": "2026-11-28T09:00:45.000Z", "end": "2026-11-28T09:00:50.000Z"},
    ]
    assert len(lines) == COUNT
    # Line i has log time 09:00:00 + i/100 s: the windows are these index ranges.
    windows = {"ip": range(1000, 2000), "url": range(2550, 3550), "global": range(4500, 5000)}
    touched = {
        "ip": [i for i in windows["ip"] if lines[i].startswith(ip + " ")],
        "url": [i for i in windows["url"] if url(lines[i]) == "/cart"],
        "global": list(windows["global"]),
    }
    for kind, indexes in touched.items():
        n = len(indexes)
        failures = sum(status(lines[i]) >= 400 for i in indexes)
        # Each touched request fails with probability >= 0.9 (documented level): 5 sd of slack.
        assert n >= 40, kind
        assert failures >= n * 0.9 - 5 * math.sqrt(n * 0.9 * 0.1), (kind, failures, n)
        assert failures / n > 0.8
    incident_lines = set().union(*map(set, touched.values()))
    for i, (line, before) in enumerate(zip(lines, calm, strict=True)):
        if i not in incident_lines:
            assert line == before, i  # the stage-2 model, byte for byte
        else:
            assert line.split('" ', 1)[0] == before.split('" ', 1)[0]  # same visit, maybe failed
    # Outside the incidents, errors only on error pairs (the stage-2 error model, exactly).
    for i, line in enumerate(lines):
        if i not in incident_lines and status(line) >= 400:
            assert line.split(" ", 1)[0] in model.error_ips and url(line) in model.error_urls


def test_incident_at_100_percent_fails_every_touched_line(model, calm):
    lines = generate(*MODEL, "--incident", "url=/search?q=wool+socks@0+30",
                     "--incident-error-rate", "100")
    touched = [line for line in lines[:3000] if url(line) == "/search?q=wool+socks"]
    assert touched and all(status(line) >= 400 for line in touched)
    assert lines[3000:] == calm[3000:]


def test_random_entities_are_seeded_and_distinct(tmp_path, model):
    truths = []
    for run in range(2):
        truth = tmp_path / f"truth{run}.jsonl"
        generate("--seed", "21", "--users", "20", "--count", "10", "--rate", "1e9",
                 "--start-time", START, "--output", "-", "--incident", "ip@1+1",
                 "--incident", "ip@2+1", "--incident", "url@3+1", "--truth", str(truth))
        truths.append([json.loads(line) for line in truth.read_text().splitlines()])
    assert truths[0] == truths[1]
    first_ip, second_ip, some_url = (item["entity"] for item in truths[0])
    assert first_ip in model.ips and second_ip in model.ips and first_ip != second_ip
    assert some_url in model.urls


@pytest.mark.parametrize("spec, message", [
    ("disk@10+5", "unknown incident kind 'disk'"),
    ("url=/nope@10+5", "unknown URL '/nope'"),
    ("ip=10.9.9.9@10+5", "unknown IP '10.9.9.9'"),
    ("ip@10", "must be KIND[=ENTITY]@START+DURATION"),
    ("ip@ten+5", "START must be seconds >= 0"),
    ("ip@10+0", "DURATION seconds > 0"),
    ("global=/cart@1+1", "a global incident takes no entity"),
])
def test_bad_incident_is_one_line_and_exit_2(spec, message):
    result = subprocess.run([sys.executable, SCRIPT, "--incident", spec, "--output", "-"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and message in result.stderr, result.stderr


# --- history ------------------------------------------------------------------------------------

def test_history_writes_hours_of_log_time_unpaced(tmp_path):
    out = tmp_path / "history.log"
    began = time.monotonic()
    generate("--history", "0.5", "--rate", "4", "--seed", "3", "--start-time", START,
             "--output", str(out), "--incident", "global@600+60")
    assert time.monotonic() - began < 30  # 30 min of log time, not paced
    lines = out.read_text().splitlines()
    assert len(lines) == 7200  # 0.5 h * 3600 s * 4 lines/s
    # Line i at 09:00:00 + i/4 s: four lines per second, every second of the half hour.
    assert ([log_time(line) for line in lines]
            == [T0 + timedelta(seconds=i // 4) for i in range(7200)])
    # global@600+60: lines 2400..2639 fail at 90 % (all 240 failing would have odds of 1e-11).
    assert 200 <= sum(status(line) >= 400 for line in lines[2400:2640]) < 240


def test_history_ends_now_by_default():
    lines = generate("--history", "0.01", "--rate", "2", "--seed", "3", "--output", "-")
    assert len(lines) == 72
    now = datetime.now(timezone.utc)
    assert abs((log_time(lines[-1]) - now).total_seconds()) < 30
    assert abs((log_time(lines[0]) - (now - timedelta(seconds=36))).total_seconds()) < 30


# --- replay -------------------------------------------------------------------------------------

REAL_LINES = [
    '127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" 200 2326',
    '192.168.1.10 - - [10/Oct/2000:13:55:36 -0700] "GET /a?b=c HTTP/1.1" 404 - "-" "curl/8.5.0"',
    'not an access-log line at all',
    ('10.0.0.7 - - [10/Oct/2000:13:55:38 -0700] "POST /cart HTTP/1.1" 500 12 "https://x/" '
     '"Mozilla/5.0 \\"quoted\\""'),
    '',
    '10.0.0.8 - - [10/Oct/2000:13:55:40 -0700] "-" 408 0 "-" "-"',
]


def test_replay_sends_the_file_unchanged_in_order(kafka, tmp_path):
    source = tmp_path / "access.log"
    source.write_text("\n".join(REAL_LINES))  # no newline after the last line
    topic = new_topic(kafka, 1)
    result = subprocess.run([sys.executable, SCRIPT, "--replay", str(source), "--rate", "1000",
                             "--bootstrap-servers", kafka, "--topic", topic],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    records = read_topic(kafka, topic)[0]
    assert [value.decode() for _, value in records] == REAL_LINES
    assert [key for key, _ in records] == [b"127.0.0.1", b"192.168.1.10", b"not", b"10.0.0.7",
                                           None, b"10.0.0.8"]


def timed_lines(*flags: str) -> tuple[list[str], float]:
    """The generator's stdout lines and the seconds between the arrival of the first and the
    last one (interpreter start-up, slow on a loaded machine, left out)."""
    process = subprocess.Popen([sys.executable, SCRIPT, *flags], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    lines, arrivals = [], []
    for line in process.stdout:
        arrivals.append(time.monotonic())
        lines.append(line.rstrip("\n"))
    assert process.wait(timeout=60) == 0, process.stderr.read()
    return lines, arrivals[-1] - arrivals[0]


def test_replay_speed_follows_the_log_timestamps(tmp_path):
    source = tmp_path / "access.log"
    source.write_text("\n".join(REAL_LINES) + "\n")  # log times span 4 s
    lines, spread = timed_lines("--replay", str(source), "--speed", "2", "--output", "-")
    assert lines == REAL_LINES
    assert 1.9 <= spread <= 3.5, spread  # 4 s of log time at twice the pace: 2 s


def test_replay_rate_paces_and_count_stops(tmp_path):
    source = tmp_path / "access.log"
    source.write_text("\n".join(REAL_LINES * 10) + "\n")
    lines, spread = timed_lines("--replay", str(source), "--rate", "10", "--count", "21",
                                "--output", "-")
    assert lines == (REAL_LINES * 4)[:21]
    assert 1.9 <= spread <= 3.5, spread  # line 20 is due 2 s after line 0
