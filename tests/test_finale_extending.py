"""finale/README.md "Extending": its python blocks, run exactly as the document shows them.

Each example's fenced python blocks are read from the README under their heading and executed in
the module they tell the reader to append them to, then checked on small static data against
hand-computed results. A reworded heading or a block that no longer runs fails here.
"""
import hashlib
import json
import re
from datetime import datetime

import pytest
from conftest import ROOT
from pyspark.testing import assertDataFrameEqual

from finale.analyzer import access_log, metrics, rules, settings, sinks
from finale.analyzer import thresholds as thresholds_file

COUNTS_SCHEMA = ("window_start timestamp, window_end timestamp, entity_type string, entity string, "
                 "requests long, errors long, error_rate double")


def example(heading: str) -> str:
    """The python blocks of README section `### heading`, joined in their order."""
    text = (ROOT / "finale" / "README.md").read_text(encoding="utf-8")
    section = re.search(rf"^### {re.escape(heading)}\n(.*?)(?=^##)", text + "\n##",
                        re.MULTILINE | re.DOTALL)
    assert section, f"no section {heading!r} in finale/README.md"
    blocks = re.findall(r"^```python\n(.*?)^```", section.group(1), re.MULTILINE | re.DOTALL)
    assert blocks, f"no python block under {heading!r}"
    return "\n".join(blocks)


def t(second: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, 28, 9, minute, second) if second >= 0 else \
        datetime(2026, 11, 28, 8, 59 + minute, 60 + second)


def test_add_a_metric_bytes(spark):
    saved = metrics.METRICS, metrics.INPUT_COLUMNS
    try:
        exec(example("Add a metric: bytes per window"), vars(metrics))
        lines = [
            '10.0.0.1 - - [28/Nov/2026:09:00:05 +0000] "GET /a HTTP/1.1" 200 100 "-" "curl/8"',
            '10.0.0.1 - - [28/Nov/2026:09:00:12 +0000] "GET /b HTTP/1.1" 500 250 "-" "curl/8"',
            '10.0.0.2 - - [28/Nov/2026:09:00:15 +0000] "GET /a HTTP/1.1" 304 - "-" "curl/8"',
        ]
        logs = access_log.parse_access_log(spark.createDataFrame([(v,) for v in lines],
                                                                 "value string"))
        counts = metrics.entity_window_counts(logs, "30 seconds", "10 seconds")
    finally:
        metrics.METRICS, metrics.INPUT_COLUMNS = saved
    assert counts.columns[-4:] == ["requests", "errors", "bytes", "error_rate"]
    assertDataFrameEqual(
        counts.where("entity_type = 'ip'").select("window_start", "entity", "requests", "bytes"),
        spark.createDataFrame([
            (t(-20), "10.0.0.1", 1, 100), (t(-10), "10.0.0.1", 2, 350),
            (t(0), "10.0.0.1", 2, 350), (t(10), "10.0.0.1", 1, 250),
            (t(-10), "10.0.0.2", 1, 0), (t(0), "10.0.0.2", 1, 0), (t(10), "10.0.0.2", 1, 0),
        ], "window_start timestamp, entity string, requests long, bytes long"))


def test_add_a_rule_error_count(spark):
    namespace = dict(vars(rules))
    exec(example("Add a rule: too many errors, whatever the rate"), namespace)
    try:
        assert list(rules.RULES) == ["error_rate", "surge", "error_count"]
        assert rules.RULES["error_count"].value_range is None
        w = (t(0), t(30))
        counts = spark.createDataFrame([
            (*w, "global", "*", 70, 37, 37 / 70),
            (*w, "ip", "10.0.0.1", 40, 12, 0.3),       # own threshold 10: fires, 12 < 20: warning
            (*w, "ip", "10.0.0.2", 40, 9, 0.225),      # population 10: 9 < 10, silent
            (*w, "url", "/a", 30, 25, 25 / 30),        # population 12: fires, 25 >= 24: critical
        ], COUNTS_SCHEMA)
        rows = spark.createDataFrame(
            [("error_count", "global", None, 50.0), ("error_count", "ip", None, 10.0),
             ("error_count", "ip", "10.0.0.1", 10.0), ("error_count", "url", None, 12.0)],
            thresholds_file.RULE_THRESHOLDS_SCHEMA)
        # Only error_count has rows: error_rate and surge have no threshold and stay silent.
        fired = rules.fire_all(counts, rows, settings.Settings(), "v9")

        def alert(entity_type, entity, requests, errors, threshold, severity):
            key = (f"error_count|{entity_type}|{entity}|{int(w[0].timestamp() * 1e6)}|"
                   f"{int(w[1].timestamp() * 1e6)}")
            return (hashlib.sha256(key.encode()).hexdigest(), "error_count", entity_type, entity,
                    *w, requests, errors, errors / requests, threshold, "v9", severity,
                    None, None)  # the cause fields are error_rate's: null here

        assertDataFrameEqual(fired, spark.createDataFrame([
            alert("ip", "10.0.0.1", 40, 12, 10.0, "warning"),
            alert("url", "/a", 30, 25, 12.0, "critical"),
        ], fired.schema))

        # Learned: 2 x P50 of the window errors, at least 10. ip population 9, 12: P50 10.5 -> 21.
        params = settings.ThresholdParams(min_window_requests=5, min_entity_windows=1, quantile=0.5)
        learned = rules.learn_all(counts, params)["error_count"]
        assertDataFrameEqual(learned, spark.createDataFrame([
            ("global", None, 74.0, 1, 70), ("ip", None, 21.0, 2, 80),
            ("ip", "10.0.0.1", 24.0, 1, 40), ("ip", "10.0.0.2", 18.0, 1, 40),
            ("url", None, 50.0, 1, 30), ("url", "/a", 50.0, 1, 30),
        ], "scope string, entity string, value double, windows long, requests long"))
    finally:
        rules.RULES.pop("error_count", None)


def test_add_a_sink_json_lines_file(spark, tmp_path):
    namespace = dict(vars(sinks))
    exec(example("Add a sink: alerts as JSON lines in a file"), namespace)
    alerts = spark.createDataFrame([
        ("id-1", "surge", "ip", "10.0.0.1", t(0), t(30), 120, 0, 0.0, 25.0, "v1", "critical",
         None, None, t(31)),
        ("id-2", "error_rate", "url", "/cart", t(10), t(40), 25, 24, 0.96, 0.3, "v1", "critical",
         None, None, datetime(2026, 11, 28, 9, 0, 41, 500000)),
    ], "alert_id string, rule string, entity_type string, entity string, "
       "window_start timestamp, window_end timestamp, requests long, errors long, "
       "error_rate double, threshold double, thresholds_version string, severity string, "
       "error_share double, top_entities array<struct<entity_type:string,entity:string,"
       "requests:bigint,errors:bigint>>, emitted_at timestamp")
    path = tmp_path / "alerts.jsonl"
    sink = namespace["jsonl_file_sink"](path)
    sink(alerts.where("alert_id = 'id-1'"), 0)
    sink(alerts.where("alert_id = 'id-2'"), 1)
    assert [json.loads(line) for line in path.read_text().splitlines()] == [
        {"alert_id": "id-1", "rule": "surge", "entity_type": "ip", "entity": "10.0.0.1",
         "window_start": "2026-11-28T09:00:00.000Z", "window_end": "2026-11-28T09:00:30.000Z",
         "requests": 120, "errors": 0, "error_rate": 0.0, "threshold": 25.0,
         "thresholds_version": "v1", "severity": "critical",
         "emitted_at": "2026-11-28T09:00:31.000Z"},
        {"alert_id": "id-2", "rule": "error_rate", "entity_type": "url", "entity": "/cart",
         "window_start": "2026-11-28T09:00:10.000Z", "window_end": "2026-11-28T09:00:40.000Z",
         "requests": 25, "errors": 24, "error_rate": 0.96, "threshold": 0.3,
         "thresholds_version": "v1", "severity": "critical",
         "emitted_at": "2026-11-28T09:00:41.500Z"},
    ]
    # Each line is sorted JSON, as the block writes it.
    assert path.read_text().splitlines()[0].startswith(
        '{"alert_id": "id-1", "emitted_at": "2026-11-28T09:00:31.000Z", "entity": ')


@pytest.mark.parametrize("heading", ["Add a metric: bytes per window",
                                     "Add a rule: too many errors, whatever the rate",
                                     "Add a sink: alerts as JSON lines in a file"])
def test_examples_are_short(heading):
    # "Each short enough to follow in ten minutes": the code stays under 30 lines.
    assert len(example(heading).splitlines()) <= 30
