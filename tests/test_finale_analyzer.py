"""finale/spark_streaming_analyzer.py end to end: real broker (`kafka`), real Spark (`spark`).

Traffic comes from finale/log_generator.py (stage-2 error model on, fixed seed and start time,
generated unpaced with --history, sent with --replay): log time is separate from the pace, so a few
minutes of log time reach Kafka in a second. Every test uses its own topics and checkpoints.
"""
import dataclasses
import json
import os
import uuid
from datetime import datetime, timedelta

import pytest
from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic
from pyspark.testing import assertDataFrameEqual

from conftest import free_port, load_module, wait_for

analyzer = load_module("finale", "spark_streaming_analyzer")
generator = load_module("finale", "log_generator")
metrics = load_module("finale", "metrics")
thresholds_file = load_module("finale", "thresholds")
status = load_module("finale", "status")
access_log = load_module("finale", "access_log")

RATE = 20                  # lines per second of log time: 12 requests per IP and 30 s window
LINES = 3000               # 150 s of log time
START = "2026-11-28T09:00:00Z"
SEED = 11
INCIDENTS = ("ip@20+30", "url@60+30", "global@110+20")
SETTINGS = analyzer.Settings(thresholds_path="/nonexistent/thresholds.json")  # the defaults
WINDOW_S, TRIGGER_S = 30, 5
TIMEOUT = 240


def generate(path, incidents=(), truth=None) -> list[bytes]:
    argv = ["--history", repr(LINES / RATE / 3600), "--rate", str(RATE), "--seed", str(SEED),
            "--start-time", START, "--output", str(path)]
    for incident in incidents:
        argv += ["--incident", incident]
    if truth is not None:
        argv += ["--truth", str(truth)]
    assert generator.main(argv) == 0
    lines = path.read_bytes().splitlines()
    assert len(lines) == LINES
    return lines


@pytest.fixture(scope="module")
def traffic(tmp_path_factory):
    """(lines with incidents, the same lines without, the incidents' truth)."""
    folder = tmp_path_factory.mktemp("traffic")
    with_incidents = generate(folder / "incidents.log", INCIDENTS, folder / "truth.jsonl")
    quiet = generate(folder / "quiet.log")
    truth = [json.loads(line) for line in (folder / "truth.jsonl").read_text().splitlines()]
    assert [incident["kind"] for incident in truth] == ["ip", "url", "global"]
    return with_incidents, quiet, truth


def new_topics(bootstrap, *names, partitions=3) -> list[str]:
    """Fresh topics with unique names, so tests never see each other's records."""
    unique = [f"test-analyzer-{name}-{uuid.uuid4().hex[:8]}" for name in names]
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="test-analyzer")
    try:
        admin.create_topics([NewTopic(topic, partitions, 1) for topic in unique],
                            wait_for_metadata=True)
    finally:
        admin.close()
    return unique


def send(bootstrap, topic, lines, path=None) -> None:
    """Lines -> topic, key = client IP (as the generator does); with `path`, through --replay."""
    if path is not None:
        path.write_bytes(b"".join(line + b"\n" for line in lines))
        assert generator.main(["--replay", str(path), "--rate", "1000000", "--compression", "none",
                               "--bootstrap-servers", bootstrap, "--topic", topic]) == 0
        return
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    try:
        for line in lines:
            producer.send(topic, key=line.split(b" ", 1)[0] or None, value=line)
        producer.flush()
    finally:
        producer.close()


class Capture:
    """foreachBatch sinks that keep every emitted row on the driver."""

    def __init__(self):
        self.rows = []

    def __call__(self, batch, batch_id):
        self.rows.extend(batch.collect())


def alerts_query(spark, bootstrap, topic, checkpoint, trigger, counts=None, dead=None,
                 settings=SETTINGS):
    captured = Capture()
    source = analyzer.kafka_source(spark, bootstrap, topic, "earliest", None)
    writers, _ = analyzer.build_queries(
        source, alert_sink=captured, dead_letter_sink=dead or Capture(), counts_sink=counts,
        checkpoint=checkpoint, trigger=trigger, settings=settings, log=lambda message: None)
    return writers, captured


def run_available_now(writer):
    query = writer.start()
    try:
        assert query.awaitTermination(TIMEOUT), f"query {query.name} did not finish"
    finally:
        query.stop()
    assert query.exception() is None


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).replace(tzinfo=None)


@pytest.mark.slow
def test_incidents_alert_and_steady_background_does_not(spark, kafka, traffic, tmp_path):
    with_incidents, quiet, truth = traffic
    incident_topic, quiet_topic = new_topics(kafka, "incidents", "quiet")
    send(kafka, incident_topic, with_incidents, tmp_path / "incidents.log")
    send(kafka, quiet_topic, quiet, tmp_path / "quiet.log")

    writers, fired = alerts_query(spark, kafka, incident_topic, tmp_path / "ck-incidents",
                                  {"availableNow": True})
    run_available_now(writers["alerts"])
    writers, fired_quietly = alerts_query(spark, kafka, quiet_topic, tmp_path / "ck-quiet",
                                          {"availableNow": True})
    run_available_now(writers["alerts"])

    assert fired_quietly.rows == []
    for incident in truth:
        start, end = parse_time(incident["start"]), parse_time(incident["end"])
        latest_start = start + timedelta(seconds=WINDOW_S + TRIGGER_S + 10)
        matching = [alert for alert in fired.rows
                    if alert.entity_type == incident["kind"] and alert.entity == incident["entity"]
                    and alert.window_start < end and alert.window_end > start
                    and alert.window_start <= latest_start]
        assert matching, f"no alert for {incident}"
        assert all(alert.thresholds_version == "defaults" for alert in matching)
    # Every alert belongs to an incident: an ip or url alert names an incident's entity, or
    # falls in the global incident (where every IP and URL fails).
    global_incident = truth[2]
    for alert in fired.rows:
        during_global = (alert.window_start < parse_time(global_incident["end"])
                         and alert.window_end > parse_time(global_incident["start"]))
        assert during_global or alert.entity in {incident["entity"] for incident in truth} \
            or alert.entity_type == "global", alert


GARBAGE = [
    b"",                                                             # empty record
    b"GET /socks HTTP/1.1",                                          # a request, not a log line
    b'10.9.9.9 - - [28/Foo/2026:09:00:10 +0000] "GET / HTTP/1.1" 200 5 "-" "x"',  # bad month
    b'10.9.9.9 - - [28/Nov/2026:09:00:10 +0000] "GET / HTTP/1.1" 200',           # truncated
    "chaussettes \u00e9t\u00e9 \u2603".encode(),                    # not ASCII, not a log
]


@pytest.mark.slow
def test_dead_letters_one_for_one_and_good_lines_untouched(spark, kafka, traffic, tmp_path):
    _, quiet, _ = traffic
    good = quiet[:2000]
    garbage = [GARBAGE[k % len(GARBAGE)] + (b" #%d" % k if k % len(GARBAGE) else b"")
               for k in range(20)]                                   # 1 %: 20 in 2000
    mixed = []
    for k, line in enumerate(good):
        mixed.append(line)
        if k % 100 == 50:
            mixed.append(garbage[k // 100])
    topic, dlq_topic = new_topics(kafka, "mixed", "dlq", partitions=1)
    send(kafka, topic, mixed)

    counts, fired = Capture(), Capture()
    source = analyzer.kafka_source(spark, kafka, topic, "earliest", None)
    writers, handler = analyzer.build_queries(
        source, alert_sink=fired, counts_sink=counts,
        dead_letter_sink=analyzer.kafka_sink(
            kafka, dlq_topic, lambda dead: analyzer.dead_letter_records(dead, topic)),
        checkpoint=tmp_path / "ck", trigger={"availableNow": True}, settings=SETTINGS,
        log=lambda message: None)
    # The analyzer's own listener: its status file must account for every line and letter.
    status_path = tmp_path / "status.json"
    listener = status.make_status_listener(handler.stats, status.StatusFile(status_path),
                                           lambda message: None)
    spark.streams.addListener(listener)
    try:
        run_available_now(writers["dead-letters"])
        run_available_now(writers["alerts"])

        def finished() -> dict:
            queries = status.read_status(status_path).get("queries", {})
            done = [queries.get(name, {}).get("active") is False for name in ("dead-letters", "alerts")]
            return all(done) and queries
        queries = wait_for(finished, 60, "both queries' final status")
    finally:
        spark.streams.removeListener(listener)
    for name in ("dead-letters", "alerts"):
        assert queries[name]["rows_read_total"] == len(mixed) == 2020
        assert queries[name]["input_offsets"][-1] == {topic: {"0": 2020}}
        assert queries[name]["error"] is None
    assert queries["dead-letters"]["dead_letters_total"] == 20
    assert queries["alerts"]["alerts_emitted_total"] == len(fired.rows)

    consumer = KafkaConsumer(dlq_topic, bootstrap_servers=kafka, auto_offset_reset="earliest",
                             consumer_timeout_ms=5000)
    try:
        letters = [(record.value, dict(record.headers)) for record in consumer]
    finally:
        consumer.close()
    not_a_log_line = (b"not an Apache access-log line (common/combined format with a valid "
                      b"[dd/MMM/yyyy:HH:mm:ss Z] timestamp)")
    assert letters == [                                              # one partition: in order
        (value, {"reason": b"empty line" if value == b"" else not_a_log_line,
                 "source": topic.encode()})
        for value in garbage]

    # The good lines' window counts are exactly those computed without any garbage.
    clean = metrics.entity_window_counts(
        access_log.parse_access_log(spark.createDataFrame([(line.decode(),) for line in good],
                                                          "value string")),
        SETTINGS.window, SETTINGS.slide)
    streamed = spark.createDataFrame(counts.rows, clean.schema)
    assert streamed.count() == clean.count() > 0                     # one batch: one row each
    assertDataFrameEqual(streamed, clean)


def latest_alerts(rows) -> dict:
    """alert_id -> (requests, errors) of its last emission (update mode re-emits growing windows)."""
    latest = {}
    for row in sorted(rows, key=lambda row: row.emitted_at):
        latest[row.alert_id] = (row.entity_type, row.entity, row.window_start, row.requests,
                                row.errors)
    return latest


@pytest.mark.slow
def test_restart_on_checkpoint_gives_the_alerts_of_an_uninterrupted_run(spark, kafka, traffic,
                                                                       tmp_path):
    with_incidents, _, truth = traffic
    # Split in the middle of the ip incident: its windows span the restart and only a
    # recovered state gives them the counts of the uninterrupted run.
    split_at = 35 * RATE
    first, rest = with_incidents[:split_at], with_incidents[split_at:]
    steady_topic, restarted_topic = new_topics(kafka, "steady", "restarted")
    trigger = {"processingTime": "1 second"}
    # Without inhibition: with it, which ip/url alerts are emitted depends on the micro-batch
    # boundaries (an entity alert emitted before the global one of its window crosses its
    # threshold stays, alerts are never retracted), and the two runs legitimately split the
    # traffic into different batches. This test is about the recovered window state.
    settings = dataclasses.replace(SETTINGS, inhibit_by_global=False)

    # Uninterrupted: one query sees the first part, then the rest.
    writers, steady = alerts_query(spark, kafka, steady_topic, tmp_path / "ck-steady", trigger,
                                  settings=settings)
    send(kafka, steady_topic, first)
    query = writers["alerts"].start()
    try:
        query.processAllAvailable()
        send(kafka, steady_topic, rest)
        query.processAllAvailable()
    finally:
        query.stop()
    assert query.exception() is None

    # Interrupted: stopped after the first part, restarted on the same checkpoint for the rest.
    checkpoint = tmp_path / "ck-restarted"
    writers, before = alerts_query(spark, kafka, restarted_topic, checkpoint, trigger,
                                  settings=settings)
    send(kafka, restarted_topic, first)
    query = writers["alerts"].start()
    try:
        query.processAllAvailable()
    finally:
        query.stop()
    send(kafka, restarted_topic, rest)
    writers, after = alerts_query(spark, kafka, restarted_topic, checkpoint, trigger,
                                  settings=settings)
    query = writers["alerts"].start()
    try:
        query.processAllAvailable()
    finally:
        query.stop()
    assert query.exception() is None

    restarted = latest_alerts(before.rows + after.rows)
    assert restarted == latest_alerts(steady.rows)
    split_time = parse_time(START) + timedelta(seconds=split_at / RATE)
    spanning = [alert for alert in restarted.values()
                if alert[0] == "ip" and alert[1] == truth[0]["entity"]
                and alert[2] < split_time < alert[2] + timedelta(seconds=WINDOW_S)]
    assert spanning, "no alert window spans the restart: the test would not see a lost state"


def test_thresholds_hot_reload_on_mtime_change(spark, tmp_path):
    path = tmp_path / "thresholds.json"
    messages = []
    thresholds = thresholds_file.ThresholdsFile(path, messages.append)

    def document(version, value):
        return json.dumps({"version": version,
                           "thresholds": [{"scope": "global", "entity": None, "value": value}]})

    frame, version = thresholds.current(spark)                  # no file: the defaults
    assert version == "defaults" and frame.count() == 3
    path.write_text(document("v1", 0.2))
    frame, version = thresholds.current(spark)
    assert (version, [row.value for row in frame.collect()]) == ("v1", [0.2])
    path.write_text(document("v2", 0.4))
    os.utime(path, (1, 1))                                      # a different mtime, whatever the clock
    frame, version = thresholds.current(spark)
    assert (version, [row.value for row in frame.collect()]) == ("v2", [0.4])
    path.write_text('{"version": "v3", "thresh')                 # half-written: keep v2
    os.utime(path, (2, 2))
    frame, version = thresholds.current(spark)
    assert (version, [row.value for row in frame.collect()]) == ("v2", [0.4])
    assert messages[-1].startswith("warning: thresholds not reloaded, keeping version v2")


def test_cli_no_inhibit_reaches_the_settings():
    assert analyzer.settings_from_args(analyzer.parse_args([])).inhibit_by_global is True
    assert analyzer.settings_from_args(analyzer.parse_args(["--no-inhibit"])).inhibit_by_global is False
    assert analyzer.Settings().inhibit_by_global is True


def test_cli_one_line_errors(kafka, capsys):
    with pytest.raises(SystemExit) as bad_flag:
        analyzer.main(["--window", "30s"])
    assert bad_flag.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "spark_streaming_analyzer.py: error: --window must be a Spark interval like '30 seconds', "
        "got '30s'"]

    missing = f"test-analyzer-absent-{uuid.uuid4().hex[:8]}"
    assert analyzer.main(["--bootstrap-servers", kafka, "--topic", missing]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: topic(s) {missing} do not exist on {kafka}: `python finale/local_kafka.py start` "
        "creates the project's topics"]

    nobody = f"localhost:{free_port()}"
    problem = analyzer.check_kafka(nobody, ["http-logs"], timeout_s=2)
    assert problem.startswith(f"no Kafka broker answers at {nobody} (")
