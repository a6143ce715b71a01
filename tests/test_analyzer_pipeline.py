"""The analyzer's pipeline (finale/analyzer/pipeline.py) end to end: real broker (`kafka`), real
Spark (`spark`).

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
from conftest import free_port, wait_for
from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic
from pyspark.testing import assertDataFrameEqual

from finale.analyzer import access_log, metrics, pipeline, rules, sinks, status
from finale.analyzer import app as analyzer
from finale.analyzer import settings as finale_settings
from finale.analyzer import thresholds as thresholds_file
from finale.analyzer.settings import Settings
from finale.generator import app as generator

RATE = 20                  # lines per second of log time: 12 requests per IP and 30 s window
LINES = 3000               # 150 s of log time
START = "2026-11-28T09:00:00Z"
SEED = 11
INCIDENTS = ("ip@20+30", "url@60+30", "global@110+20")
SETTINGS = Settings(thresholds_path="/nonexistent/thresholds.json")  # the defaults
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


def send(bootstrap, topic, lines, path=None, stamps=None) -> None:
    """Lines -> topic, key = client IP (as the generator does); with `path`, through --replay;
    with `stamps`, each record's Kafka timestamp (datetime, None: the producer's clock)."""
    if path is not None:
        path.write_bytes(b"".join(line + b"\n" for line in lines))
        assert generator.main(["--replay", str(path), "--rate", "1000000", "--compression", "none",
                               "--bootstrap-servers", bootstrap, "--topic", topic]) == 0
        return
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    try:
        for line, stamp in zip(lines, stamps or [None] * len(lines), strict=True):
            producer.send(topic, key=line.split(b" ", 1)[0] or None, value=line,
                          timestamp_ms=None if stamp is None else int(stamp.timestamp() * 1000))
        producer.flush()
    finally:
        producer.close()


def consume(bootstrap, topic) -> list:
    """Every record of `topic` (partition by partition), read until 5 s pass without one."""
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             consumer_timeout_ms=5000)
    try:
        return sorted(consumer, key=lambda record: (record.partition, record.offset))
    finally:
        consumer.close()


class Capture:
    """foreachBatch sinks that keep every emitted row on the driver."""

    def __init__(self):
        self.rows = []

    def __call__(self, batch, batch_id):
        self.rows.extend(batch.collect())


def alerts_query(spark, bootstrap, topic, checkpoint, trigger, counts=None, dead=None,
                 settings=SETTINGS, max_offsets_per_trigger=None):
    captured = Capture()
    source = pipeline.kafka_source(spark, bootstrap, topic, "earliest", max_offsets_per_trigger)
    writers, _ = pipeline.build_queries(
        source, alert_sink=captured, dead_letter_sink=dead or Capture(), counts_sink=counts,
        checkpoint=checkpoint, trigger=trigger, settings=settings, log=lambda message: None)
    return writers, captured


def run_available_now(writer) -> int:
    """Run the query until it has read what is in the topic; the number of records it read."""
    query = writer.start()
    try:
        assert query.awaitTermination(TIMEOUT), f"query {query.name} did not finish"
    finally:
        query.stop()
    assert query.exception() is None
    return sum(progress["numInputRows"] for progress in query.recentProgress)


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).replace(tzinfo=None)


def assert_each_incident_alerts(alerts, truth, thresholds_version) -> None:
    """Each incident of `truth` has an alert on its entity, in a window overlapping it and starting
    soon enough after it began, computed with the thresholds of `thresholds_version`."""
    for incident in truth:
        start, end = parse_time(incident["start"]), parse_time(incident["end"])
        latest_start = start + timedelta(seconds=WINDOW_S + TRIGGER_S + 10)
        matching = [alert for alert in alerts
                    if alert.entity_type == incident["kind"] and alert.entity == incident["entity"]
                    and alert.window_start < end and alert.window_end > start
                    and alert.window_start <= latest_start]
        assert matching, f"no alert for {incident}"
        assert all(alert.thresholds_version == thresholds_version for alert in matching)


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
    read_quietly = run_available_now(writers["alerts"])

    # Every quiet line was read and counted, and none of them alerted.
    assert read_quietly == len(quiet) == LINES
    assert fired_quietly.rows == []
    assert_each_incident_alerts(fired.rows, truth, "defaults")
    # Every alert belongs to an incident: an ip or url alert names an incident's entity, or
    # falls in the global incident (where every IP and URL fails).
    global_incident = truth[2]
    for alert in fired.rows:
        during_global = (alert.window_start < parse_time(global_incident["end"])
                         and alert.window_end > parse_time(global_incident["start"]))
        assert during_global or alert.entity in {incident["entity"] for incident in truth} \
            or alert.entity_type == "global", alert


SURGE_HISTORY_S = 600      # learned from 10 min of the same users, just before the test traffic


@pytest.mark.slow
def test_surge_alerts_on_its_ip_with_learned_thresholds_and_quiet_traffic_does_not(
        spark, kafka, tmp_path):
    """One stream: 10 min of history (the thresholds, learned as threshold_job.py does), then
    150 s of traffic with a 30 s surge of one IP, or the same 150 s without it."""
    start = (datetime.fromisoformat(START.replace("Z", "+00:00"))
             - timedelta(seconds=SURGE_HISTORY_S))
    total = SURGE_HISTORY_S + LINES // RATE
    streams = {}
    for name, extra in (("surge", ["--incident", f"surge@{SURGE_HISTORY_S + 40}+30",
                                   "--truth", str(tmp_path / "truth.jsonl")]),
                        ("quiet", [])):
        path = tmp_path / f"{name}.log"
        assert generator.main(["--history", repr(total / 3600), "--rate", str(RATE),
                               "--seed", str(SEED), "--start-time",
                               start.strftime("%Y-%m-%dT%H:%M:%SZ"), "--output", str(path),
                               *extra]) == 0
        streams[name] = path.read_bytes().splitlines()
    history = SURGE_HISTORY_S * RATE
    assert streams["surge"][:history] == streams["quiet"][:history]
    incident = json.loads((tmp_path / "truth.jsonl").read_text())
    assert incident["kind"] == "surge"

    params = finale_settings.ThresholdParams()
    logs = access_log.parse_access_log(
        spark.createDataFrame([(line.decode(),) for line in streams["quiet"][:history]],
                              "value string"))
    learned = rules.learn_all(metrics.entity_window_counts(logs, params.window, params.slide),
                              params)
    document = thresholds_file.thresholds_document(params, {}, learned)
    path = tmp_path / "thresholds.json"
    path.write_text(json.dumps(document))
    settings = dataclasses.replace(SETTINGS, thresholds_path=path)

    fired, read = {}, {}
    for name, lines in streams.items():
        topic, = new_topics(kafka, name)
        send(kafka, topic, lines[history:], tmp_path / f"{name}-sent.log")
        writers, captured = alerts_query(spark, kafka, topic, tmp_path / f"ck-{name}",
                                         {"availableNow": True}, settings=settings)
        read[name] = run_available_now(writers["alerts"])
        fired[name] = captured.rows

    # Both streams were read whole (150 s at RATE lines/s), and the quiet one never alerted.
    assert read == {"surge": LINES, "quiet": LINES}
    assert fired["quiet"] == []
    incident_start, incident_end = parse_time(incident["start"]), parse_time(incident["end"])
    latest_start = incident_start + timedelta(seconds=WINDOW_S + TRIGGER_S + 10)
    # The surge is all successes on an IP, the global volume unchanged: only surge alerts, on it.
    assert {(alert.rule, alert.entity_type, alert.entity) for alert in fired["surge"]} == {
        ("surge", "ip", incident["entity"])}
    assert all(alert.window_start < incident_end and alert.window_end > incident_start
               and alert.thresholds_version == document["version"] for alert in fired["surge"])
    assert any(alert.window_start <= latest_start for alert in fired["surge"])


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
    source = pipeline.kafka_source(spark, kafka, topic, "earliest", None)
    writers, handler = pipeline.build_queries(
        source, alert_sink=fired, counts_sink=counts,
        dead_letter_sink=sinks.kafka_sink(
            kafka, dlq_topic, lambda dead: sinks.dead_letter_records(dead, topic)),
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
            done = [queries.get(name, {}).get("active") is False
                    for name in ("dead-letters", "alerts")]
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

    letters = [(record.key, record.value, dict(record.headers))
               for record in consume(kafka, dlq_topic)]
    # Each letter keeps its record's key and value and names where it came from (one partition:
    # in order). Every non-empty garbage line here is unparseable (the bad month has a " #k" tail).
    assert letters == [
        (record.key, record.value,
         {"reason": b"empty_line" if record.value == b"" else b"unparseable",
          "source": topic.encode(), "source_partition": b"0",
          "source_offset": str(record.offset).encode(),
          "source_timestamp": str(record.timestamp).encode()})
        for record in consume(kafka, topic) if record.value in set(garbage)]
    assert [letter[1] for letter in letters] == garbage

    # The good lines' window counts are exactly those computed without any garbage.
    clean = metrics.entity_window_counts(
        access_log.parse_access_log(spark.createDataFrame([(line.decode(),) for line in good],
                                                          "value string")),
        SETTINGS.window, SETTINGS.slide)
    streamed = spark.createDataFrame(counts.rows, clean.schema)
    assert streamed.count() == clean.count() > 0                     # one batch: one row each
    assertDataFrameEqual(streamed, clean)


def latest_alerts(rows) -> dict:
    """alert_id -> (requests, errors) of its last emission.

    Update mode re-emits growing windows.
    """
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
    # One partition and at most split_at records per micro-batch: both runs cut the traffic into
    # the same batches (first, then the rest split_at at a time), whatever the machine's speed.
    # Alerts depend on the batches (a window fires when its counts at the end of a batch cross
    # the threshold, and its rate may fall back under it later), so only equal batches make the
    # comparison about the recovered window state and nothing else.
    steady_topic, restarted_topic = new_topics(kafka, "steady", "restarted", partitions=1)
    trigger = {"availableNow": True}
    # Without inhibition: with it, which ip/url alerts are emitted depends on the micro-batch
    # boundaries (an entity alert emitted before the global one of its window crosses its
    # threshold stays, alerts are never retracted). This test is about the recovered window state.
    settings = dataclasses.replace(SETTINGS, inhibit_by_global=False)

    # Uninterrupted: one query sees the first part, then the rest, in one run.
    writers, steady = alerts_query(spark, kafka, steady_topic, tmp_path / "ck-steady", trigger,
                                  settings=settings, max_offsets_per_trigger=split_at)
    send(kafka, steady_topic, first + rest)
    run_available_now(writers["alerts"])

    # Interrupted: stopped after the first part, restarted on the same checkpoint for the rest.
    checkpoint = tmp_path / "ck-restarted"
    writers, before = alerts_query(spark, kafka, restarted_topic, checkpoint, trigger,
                                  settings=settings, max_offsets_per_trigger=split_at)
    send(kafka, restarted_topic, first)
    run_available_now(writers["alerts"])
    send(kafka, restarted_topic, rest)
    writers, after = alerts_query(spark, kafka, restarted_topic, checkpoint, trigger,
                                  settings=settings, max_offsets_per_trigger=split_at)
    run_available_now(writers["alerts"])
    restarted = latest_alerts(before.rows + after.rows)
    assert restarted == latest_alerts(steady.rows)
    split_time = parse_time(START) + timedelta(seconds=split_at / RATE)
    spanning = [alert for alert in restarted.values()
                if alert[0] == "ip" and alert[1] == truth[0]["entity"]
                and alert[2] < split_time < alert[2] + timedelta(seconds=WINDOW_S)]
    assert spanning, "no alert window spans the restart: the test would not see a lost state"


FUTURE_LINE = (b'10.6.6.6 - - [01/Jan/2099:00:00:00 +0000] "GET /socks HTTP/1.1" 200 512 '
               b'"-" "clock/1"')
BAD_TIMESTAMP_LINE = b'10.6.6.7 - - [31/Feb/2026:09:00:00 +0000] "GET /socks HTTP/1.1" 200 512'
# Dated 08:00:00, in records stamped 5 min 1 s and 4 min 59 s earlier: --max-future (5 minutes) is
# judged against the record's Kafka timestamp, not the analyzer's clock (days later, which would
# let both through).
STAMPED_LINES = [b'10.6.6.8 - - [28/Nov/2026:08:00:00 +0000] "GET /socks HTTP/1.1" 200 512',
                 b'10.6.6.9 - - [28/Nov/2026:08:00:00 +0000] "GET /socks HTTP/1.1" 200 512']
STAMPS = [datetime.fromisoformat("2026-11-28T07:54:59+00:00"),
          datetime.fromisoformat("2026-11-28T07:55:01+00:00")]


def start_with_status(writers, handler, spark, status_path, names=("dead-letters", "alerts")):
    """The queries `names` started, the analyzer's status listener on; returns (queries, stop)."""
    listener = status.make_status_listener(handler.stats, status.StatusFile(status_path),
                                           lambda message: None, handler.thresholds)
    spark.streams.addListener(listener)
    queries = [writers[name].start() for name in names]

    def stop():
        for query in queries:
            query.stop()
        spark.streams.removeListener(listener)
    return queries, stop


def process(queries) -> None:
    for query in queries:
        query.processAllAvailable()


def final_status(status_path, name, **expected) -> dict:
    """The status of query `name` once its fields reach `expected` (the listener runs async)."""
    def reached():
        query = status.read_status(status_path).get("queries", {}).get(name, {})
        return query if all(query.get(key) == value for key, value in expected.items()) else None
    return wait_for(reached, 60, f"status of {name} with {expected}")


@pytest.mark.slow
@pytest.mark.faults
@pytest.mark.timeout(600)  # three batches of a 3,000-line run on a loaded 2-core machine
def test_live_dead_letters_read_each_whole_cap_at_once_and_a_part_after_their_interval(
        spark, kafka, traffic, tmp_path):
    """pipeline.dead_letter_reading, as app.py wires it for a live trigger: the dead-letter query
    reads a whole cap of records as soon as it is there (a backlog drains at the alerts' pace),
    never a partial one before its interval, and a partial one once the interval passed."""
    _, quiet, _ = traffic

    def dead_letter_query(topic, every, name):
        source, trigger = pipeline.dead_letter_reading(
            spark, kafka, topic, "earliest", 100, {"processingTime": "1 second"}, every)
        assert trigger == {"processingTime": "1 second"}  # the alerts query's, checked each second
        writers, _ = pipeline.build_queries(
            source, alert_sink=Capture(), dead_letter_sink=Capture(), checkpoint=tmp_path / name,
            trigger=trigger, settings=SETTINGS, log=lambda message: None,
            dead_letter_source=source)
        return writers["dead-letters"].start()

    def batches(query) -> list[int]:
        return [p["numInputRows"] for p in query.recentProgress if p["numInputRows"]]

    # An interval of an hour: only whole caps are read. 250 records: 100, 100, then 50 wait.
    topic, = new_topics(kafka, "dlq-caps", partitions=1)
    send(kafka, topic, quiet[:250])
    query = dead_letter_query(topic, "1 hour", "caps")
    try:
        wait_for(lambda: sum(batches(query)) == 200, TIMEOUT, "two whole caps read")
        send(kafka, topic, quiet[250:300])  # 50 + 50 waiting: a whole cap again
        wait_for(lambda: sum(batches(query)) == 300, TIMEOUT, "the third cap read")
        assert batches(query) == [100, 100, 100]
        assert query.exception() is None
    finally:
        query.stop()
    # An interval of 2 seconds: 30 records, less than a cap, are read once it passed.
    topic, = new_topics(kafka, "dlq-interval", partitions=1)
    send(kafka, topic, quiet[:30])
    query = dead_letter_query(topic, "2 seconds", "interval")
    try:
        wait_for(lambda: batches(query) == [30], TIMEOUT, "the 30 records read after 2 s")
    finally:
        query.stop()


def test_dead_letter_reading_off_without_a_cap_or_a_live_trigger(spark):
    assert pipeline.dead_letter_reading(spark, "unused:9092", "t", "earliest", 0,
                                        {"processingTime": "1 second"}, "10 seconds") == (
        None, {"processingTime": "10 seconds"})
    assert pipeline.dead_letter_reading(spark, "unused:9092", "t", "earliest", 100,
                                        {"availableNow": True}, "10 seconds") == (
        None, {"availableNow": True})


def test_a_line_dated_2099_is_a_dead_letter_and_alerting_goes_on(spark, kafka, traffic, tmp_path):
    with_incidents, _, truth = traffic
    topic, dlq_topic = new_topics(kafka, "future", "future-dlq", partitions=1)
    fired = Capture()
    source = pipeline.kafka_source(spark, kafka, topic, "earliest", None)
    writers, handler = pipeline.build_queries(
        source, alert_sink=fired,
        dead_letter_sink=sinks.kafka_sink(
            kafka, dlq_topic, lambda dead: sinks.dead_letter_records(dead, topic)),
        checkpoint=tmp_path / "ck", trigger={"processingTime": "1 second"}, settings=SETTINGS,
        log=lambda message: None)
    status_path = tmp_path / "status.json"
    queries, stop = start_with_status(writers, handler, spark, status_path)
    late = with_incidents[:5 * RATE]            # the first 5 s of log time, sent again at the end
    try:
        # The 2099 line in a micro-batch of its own: before the fix its watermark
        # (2098-12-31T23:59:50) applied to every later batch and all the traffic was dropped
        # as late.
        send(kafka, topic, [FUTURE_LINE, BAD_TIMESTAMP_LINE, *STAMPED_LINES],
             stamps=[None, None, *STAMPS])
        process(queries)
        send(kafka, topic, with_incidents)
        process(queries)
        # 150 s of log time in: the watermark is ~140 s, so these windows are closed.
        send(kafka, topic, late)
        process(queries)
    finally:
        stop()
    assert all(query.exception() is None for query in queries)
    assert_each_incident_alerts(fired.rows, truth, "defaults")

    sent = consume(kafka, topic)
    assert [(record.key, record.value, dict(record.headers))
            for record in consume(kafka, dlq_topic)] == [
        (sent[offset].key, line, {"reason": reason, "source": topic.encode(),
                                  "source_partition": b"0", "source_offset": str(offset).encode(),
                                  "source_timestamp": str(sent[offset].timestamp).encode()})
        for offset, (line, reason) in enumerate([(FUTURE_LINE, b"future_timestamp"),
                                                 (BAD_TIMESTAMP_LINE, b"bad_timestamp"),
                                                 (STAMPED_LINES[0], b"future_timestamp")])]
    assert sent[0].key == b"10.6.6.6"
    assert [record.timestamp for record in sent[2:4]] == [int(s.timestamp() * 1000) for s in STAMPS]

    total = 4 + len(with_incidents) + len(late)
    dead = final_status(status_path, "dead-letters", rows_read_total=total)
    assert (dead["dead_letters_total"], dead["future_timestamps_total"]) == (3, 2)
    alerts = final_status(status_path, "alerts", rows_read_total=total)
    assert alerts["watermark"].startswith("2026-11-28T09:02:")
    # Late lines are counted, not dropped in silence: Spark's numRowsDroppedByWatermark counts
    # (window, entity) rows of the partial aggregation: per line of `late` 3 windows (30 s every
    # 10 s) of its global, ip and url entities, one row per distinct (window, entity).
    lines = access_log.parse_access_log(
        spark.createDataFrame([(line.decode(),) for line in late], "value string"))
    late_rows = metrics.entity_window_counts(lines, SETTINGS.window, SETTINGS.slide).count()
    assert alerts["late_rows_dropped_total"] == late_rows > 0


@pytest.mark.slow
@pytest.mark.faults
@pytest.mark.timeout(600)  # two batches of a 3,000-line run on a loaded 2-core machine
def test_a_bad_thresholds_file_on_hot_reload_keeps_the_last_good_one(spark, kafka, traffic,
                                                                     tmp_path):
    with_incidents, _, truth = traffic
    path = tmp_path / "thresholds.json"
    good = {"version": "good", "thresholds": thresholds_file.DEFAULT_THRESHOLDS["thresholds"]}
    path.write_text(json.dumps(good))
    settings = dataclasses.replace(SETTINGS, thresholds_path=path, thresholds_required=True)
    (topic,) = new_topics(kafka, "reload", partitions=1)
    fired, messages = Capture(), []
    source = pipeline.kafka_source(spark, kafka, topic, "earliest", None)
    writers, handler = pipeline.build_queries(
        source, alert_sink=fired, dead_letter_sink=Capture(), checkpoint=tmp_path / "ck",
        trigger={"processingTime": "1 second"}, settings=settings, log=messages.append)
    status_path = tmp_path / "status.json"
    queries, stop = start_with_status(writers, handler, spark, status_path, names=("alerts",))
    first = 15 * RATE                           # the traffic before the first incident (20 s)
    try:
        send(kafka, topic, with_incidents[:first])
        process(queries)
        assert fired.rows == []
        path.write_text(json.dumps({"version": "bad", "thresholds": [
            {"rule": "error_rate", "scope": "ip", "entity": None, "value": "0.3"}]}))
        os.utime(path, (1, 1))                  # a new mtime, whatever the clock's resolution
        send(kafka, topic, with_incidents[first:])
        process(queries)
        assert queries[0].isActive and queries[0].exception() is None
    finally:
        stop()
    error = (f"{path}: thresholds[0] (rule error_rate, scope ip, entity None): "
             "value '0.3' is not a number")
    assert messages == [f"warning: thresholds not reloaded, keeping version good: {error}"]
    assert_each_incident_alerts(fired.rows, truth, "good")
    assert {alert.thresholds_version for alert in fired.rows} == {"good"}
    alerts = final_status(status_path, "alerts", rows_read_total=len(with_incidents))
    assert (alerts["thresholds_version"], alerts["thresholds_error"]) == ("good", error)


def test_thresholds_hot_reload_on_mtime_change(spark, tmp_path):
    path = tmp_path / "thresholds.json"
    messages = []
    thresholds = thresholds_file.ThresholdsFile(path, messages.append)

    def document(version, value):
        return json.dumps({"version": version,
                           "thresholds": [{"rule": "error_rate", "scope": "global",
                                           "entity": None, "value": value}]})

    frame, version = thresholds.current(spark)                  # no file: the defaults
    assert version == "defaults" and frame.count() == 3
    path.write_text(document("v1", 0.2))
    frame, version = thresholds.current(spark)
    assert (version, [row.value for row in frame.collect()]) == ("v1", [0.2])
    path.write_text(document("v2", 0.4))
    # A different mtime, whatever the clock.
    os.utime(path, (1, 1))
    frame, version = thresholds.current(spark)
    assert (version, [row.value for row in frame.collect()]) == ("v2", [0.4])
    path.write_text('{"version": "v3", "thresh')                 # half-written: keep v2
    os.utime(path, (2, 2))
    frame, version = thresholds.current(spark)
    assert (version, [row.value for row in frame.collect()]) == ("v2", [0.4])
    assert messages[-1].startswith("warning: thresholds not reloaded, keeping version v2")


def test_cli_no_inhibit_reaches_the_settings():
    assert analyzer.settings_from_args(analyzer.parse_args([])).inhibit_by_global is True
    assert (analyzer.settings_from_args(analyzer.parse_args(["--no-inhibit"])).inhibit_by_global
            is False)
    assert Settings().inhibit_by_global is True
    assert analyzer.settings_from_args(analyzer.parse_args([])).cause_share == 0.5
    assert analyzer.settings_from_args(
        analyzer.parse_args(["--cause-share", "1"])).cause_share == 1.0
    for bad in ("0", "1.5", "nan"):
        with pytest.raises(SystemExit):
            analyzer.parse_args(["--cause-share", bad])


def test_cli_one_line_errors(kafka, capsys):
    with pytest.raises(SystemExit) as bad_flag:
        analyzer.main(["--window", "30s"])
    assert bad_flag.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "spark_streaming_analyzer.py: error: --window must be a Spark interval like '30 seconds', "
        "got '30s'"]
    with pytest.raises(SystemExit) as bad_trigger:
        analyzer.main(["--dead-letter-trigger", "10"])
    assert bad_trigger.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "spark_streaming_analyzer.py: error: --dead-letter-trigger must be a Spark interval like "
        "'10 seconds', got '10'"]
    assert analyzer.parse_args([]).dead_letter_trigger == "10 seconds"

    missing = f"test-analyzer-absent-{uuid.uuid4().hex[:8]}"
    assert analyzer.main(["--bootstrap-servers", kafka, "--topic", missing]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: topic(s) {missing} do not exist on {kafka}: `python finale/local_kafka.py start` "
        "creates the project's topics"]

    nobody = f"localhost:{free_port()}"
    problem = analyzer.check_kafka(nobody, ["http-logs"], timeout_s=2)
    assert problem.startswith(f"no Kafka broker answers at {nobody} (")
