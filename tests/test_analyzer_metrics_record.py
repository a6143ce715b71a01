"""finale/analyzer/metrics_record.py: the window-metrics record (finale/common/window_metrics.py).

`window_metrics` on a static frame of window counts with rows worked out by hand, then the real
analyzer (a subprocess, available now) on a real broker: the records on its --metrics-topic carry
the exact counts of a known input.
"""
import json
from datetime import datetime

import pytest
from pyspark.testing import assertDataFrameEqual
from test_analyzer_checkpoint import THRESHOLDS, lines, run
from test_analyzer_pipeline import consume, new_topics, send

from finale.analyzer import metrics
from finale.analyzer.metrics_record import metrics_records, window_metrics
from finale.common import window_metrics as record

W1 = (datetime(2026, 11, 28, 9, 0, 0), datetime(2026, 11, 28, 9, 0, 30))
W2 = (datetime(2026, 11, 28, 9, 0, 10), datetime(2026, 11, 28, 9, 0, 40))
COUNTS_DDL = ("window_start timestamp, window_end timestamp, entity_type string, entity string, "
              "requests bigint, errors bigint, error_rate double")


def counts(spark, rows):
    frame = spark.createDataFrame([(*window, scope, entity, requests, errors, errors / requests)
                                   for window, scope, entity, requests, errors in rows],
                                  COUNTS_DDL)
    # The columns window_metrics reads, all of them columns of the analyzer's counts.
    assert set(frame.columns) <= set(metrics.counts_columns())
    return frame


def test_window_metrics_global_counts_and_top_offenders_by_errors(spark):
    frame = counts(spark, [
        (W1, "global", "*", 10, 4),
        (W1, "ip", "10.0.0.1", 5, 3),
        (W1, "ip", "10.0.0.2", 3, 1),
        (W1, "ip", "10.0.0.3", 2, 0),        # no error: not an offender
        (W1, "url", "/b", 3, 1),
        (W1, "url", "/cart", 4, 3),
        (W1, "url", "/a", 3, 1),             # ties /b on errors and requests: by name, /a first
        (W2, "global", "*", 3, 1),
        (W2, "ip", "10.0.0.9", 1, 1),
        (W2, "ip", "10.0.0.8", 2, 1),        # ties 10.0.0.9 on errors: more requests first
        (W2, "url", "/", 3, 1),
    ])
    expected = spark.createDataFrame([
        (*W1, 10, 4, 0.4, [("10.0.0.1", 5, 3), ("10.0.0.2", 3, 1)],
         [("/cart", 4, 3), ("/a", 3, 1)]),
        (*W2, 3, 1, 1 / 3, [("10.0.0.8", 2, 1), ("10.0.0.9", 1, 1)], [("/", 3, 1)]),
    ], record.WINDOW_DDL)
    assertDataFrameEqual(window_metrics(frame, 2), expected, checkRowOrder=False)


def test_window_metrics_without_errors_has_empty_lists(spark):
    frame = counts(spark, [(W1, "global", "*", 2, 0), (W1, "ip", "10.0.0.1", 2, 0),
                           (W1, "url", "/", 2, 0)])
    expected = spark.createDataFrame([(*W1, 2, 0, 0.0, [], [])], record.WINDOW_DDL)
    assertDataFrameEqual(window_metrics(frame, 5), expected)


def test_metrics_records_key_is_the_window_and_value_the_json_record(spark):
    frame = spark.createDataFrame(
        [(*W1, 10, 4, 0.4, [("10.0.0.1", 5, 3)], [], 7, None, 2, "2026-11-28T09:00:31.250Z")],
        record.DDL)
    [kafka_record] = metrics_records(frame).collect()
    assert kafka_record.key == "2026-11-28T09:00:00.000Z/2026-11-28T09:00:30.000Z"
    value = json.loads(kafka_record.value)
    # Every field in the record's order, a null one (backlog unknown) left out by to_json.
    assert value == {"window_start": "2026-11-28T09:00:00.000Z",
                     "window_end": "2026-11-28T09:00:30.000Z", "requests": 10, "errors": 4,
                     "error_rate": 0.4,
                     "top_ips": [{"entity": "10.0.0.1", "requests": 5, "errors": 3}],
                     "top_urls": [], "batch_id": 7, "dead_letters_total": 2,
                     "emitted_at": "2026-11-28T09:00:31.250Z"}
    assert list(value) == [name for name in record.COLUMNS if name != "backlog"]
    assert record.key(value) == kafka_record.key
    assert record.decode(kafka_record.value) == value


def test_decode_refuses_what_is_not_a_window_record():
    assert record.decode(b"not json") is None
    assert record.decode(b"[1]") is None
    assert record.decode(json.dumps({"window_start": "a", "window_end": "b"})) is None
    assert record.decode(json.dumps({"window_start": "a", "window_end": "b", "requests": True,
                                     "errors": 0})) is None


@pytest.mark.slow
@pytest.mark.spark
def test_the_analyzer_publishes_the_exact_window_counts(kafka, tmp_path):
    logs, alerts, dlq, metrics_topic = new_topics(kafka, "logs", "alerts", "dlq", "metrics")
    (tmp_path / "thresholds.json").write_text(json.dumps(THRESHOLDS))
    # Seconds 1..12 of 09:00: each second 10.0.0.9 gets a 500 on /cart, 10.0.0.1 a 200 on /.
    send(kafka, logs, lines(1, 12))
    result = run(kafka, (logs, alerts, dlq), tmp_path, "--metrics-topic", metrics_topic,
                 "--metrics-top", "3")
    assert result.returncode == 0, result.stdout + result.stderr
    latest = {}
    for kafka_record in consume(kafka, metrics_topic):
        value = record.decode(kafka_record.value)
        assert kafka_record.key.decode() == record.key(value)
        latest[kafka_record.key.decode()] = value

    def window(start, end, seconds):
        # `seconds` seconds of traffic in the window: 2 requests and 1 error each.
        return {"window_start": f"2026-11-28T{start}.000Z", "window_end": f"2026-11-28T{end}.000Z",
                "requests": 2 * seconds, "errors": seconds, "error_rate": 0.5,
                "top_ips": [{"entity": "10.0.0.9", "requests": seconds, "errors": seconds}],
                "top_urls": [{"entity": "/cart", "requests": seconds, "errors": seconds}]}

    # 30 s windows every 10 s: 09:00:01-09 in the first, all 12 s in the next two, 10-12 in the
    # last.
    assert {key: {name: value[name] for name in record.WINDOW_COLUMNS}
            for key, value in latest.items()} == {
        f"2026-11-28T{start}.000Z/2026-11-28T{end}.000Z": window(start, end, seconds)
        for start, end, seconds in (("08:59:40", "09:00:10", 9), ("08:59:50", "09:00:20", 12),
                                    ("09:00:00", "09:00:30", 12), ("09:00:10", "09:00:40", 3))}
    # One micro-batch read the 24 lines; the first one has no earlier progress to report.
    assert {value["batch_id"] for value in latest.values()} == {0}
    assert all(value.get("backlog") is None for value in latest.values())
