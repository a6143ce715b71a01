"""finale/README.md "Extending": its python blocks, run exactly as the document shows them.

Each example's python blocks are read from the README under their heading and run where the
section says they go, then checked on small static data against hand-computed results. The last
test adds the metric and the rule to a copy of the package, as files, the way a reader would, and
runs every other fast test on that copy: extending must not break any existing test. A reworded
heading or a block that no longer runs fails here.
"""
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from datetime import datetime

import pytest
from conftest import ROOT
from pyspark.testing import assertDataFrameEqual

from finale.analyzer import access_log, metrics, rules, sinks
from finale.analyzer import thresholds as thresholds_file
from finale.analyzer.settings import Settings, ThresholdParams
from finale.common import alert

METRIC = "Add a metric: bytes per window"
RULE = "Add a rule: big transfers"
SINK = "Add a sink: alerts as JSON lines in a file"
COUNTS_SCHEMA = ("window_start timestamp, window_end timestamp, entity_type string, entity string, "
                 "requests long, errors long, error_rate double, bytes long")


def example(heading: str) -> str:
    """The python blocks of README section `### heading`, joined in their order."""
    text = (ROOT / "finale" / "README.md").read_text(encoding="utf-8")
    section = re.search(rf"^### {re.escape(heading)}\n(.*?)(?=^##)", text + "\n##",
                        re.MULTILINE | re.DOTALL)
    assert section, f"no section {heading!r} in finale/README.md"
    blocks = re.findall(r"^```python\n(.*?)^```", section.group(1), re.MULTILINE | re.DOTALL)
    assert blocks, f"no python block under {heading!r}"
    return "\n".join(blocks)


def t(second: int) -> datetime:
    return datetime(2026, 11, 28, 9, 0, second) if second >= 0 else \
        datetime(2026, 11, 28, 8, 59, 60 + second)


def test_add_a_metric_bytes(spark):
    exec(example(METRIC), vars(metrics))
    try:
        lines = [
            '10.0.0.1 - - [28/Nov/2026:09:00:05 +0000] "GET /a HTTP/1.1" 200 100 "-" "curl/8"',
            '10.0.0.1 - - [28/Nov/2026:09:00:12 +0000] "GET /b HTTP/1.1" 500 250 "-" "curl/8"',
            '10.0.0.2 - - [28/Nov/2026:09:00:15 +0000] "GET /a HTTP/1.1" 304 - "-" "curl/8"',
        ]
        logs = access_log.parse_access_log(spark.createDataFrame([(v,) for v in lines],
                                                                 "value string"))
        counts = metrics.entity_window_counts(logs, "30 seconds", "10 seconds")
        assert metrics.counts_columns()[-4:] == ("requests", "errors", "bytes", "error_rate")
        assert counts.columns == list(metrics.counts_columns())
        assert "metric bytes = " in metrics.state_description("30 seconds", "10 seconds")
        ip_bytes = counts.where("entity_type = 'ip'").select("window_start", "entity",
                                                              "requests", "bytes")
    finally:
        metrics.METRICS.pop()
    assertDataFrameEqual(ip_bytes, spark.createDataFrame([
        (t(-20), "10.0.0.1", 1, 100), (t(-10), "10.0.0.1", 2, 350),
        (t(0), "10.0.0.1", 2, 350), (t(10), "10.0.0.1", 1, 250),
        (t(-10), "10.0.0.2", 1, 0), (t(0), "10.0.0.2", 1, 0), (t(10), "10.0.0.2", 1, 0),
    ], "window_start timestamp, entity string, requests long, bytes long"))


def test_add_a_rule_big_transfer(spark):
    exec(example(RULE), {"__name__": "finale.analyzer.rules.big_transfer"})
    try:
        assert rules.RULES["big_transfer"].metric == "bytes"
        assert rules.RULES["big_transfer"].unit == "count"
        w = (t(0), t(30))
        counts = spark.createDataFrame([
            (*w, "global", "*", 80, 0, 0.0, 8_000_000),
            (*w, "ip", "10.0.0.1", 40, 0, 0.0, 3_000_000),  # own 2 MiB: fires, < 4 MiB: warning
            (*w, "ip", "10.0.0.2", 30, 0, 0.0, 1_000_000),  # population 1.5 MB: silent
            (*w, "url", "/big", 10, 0, 0.0, 4_000_000),     # population 1 MB: fires, critical
        ], COUNTS_SCHEMA)
        rows = spark.createDataFrame(
            [("big_transfer", "global", None, 1e7), ("big_transfer", "ip", None, 1.5e6),
             ("big_transfer", "ip", "10.0.0.1", float(2**21)),
             ("big_transfer", "url", None, 1e6)],
            thresholds_file.RULE_THRESHOLDS_SCHEMA)
        # Only big_transfer has rows: error_rate and surge have none, fire_all does not run them.
        fired = rules.fire_all(counts, rows, Settings(), "v9")

        def expected(entity_type, entity, requests, sent, threshold, severity):
            key = (f"big_transfer|{entity_type}|{entity}|{int(w[0].timestamp() * 1e6)}|"
                   f"{int(w[1].timestamp() * 1e6)}")
            return (hashlib.sha256(key.encode()).hexdigest(), "big_transfer", entity_type, entity,
                    *w, requests, 0, 0.0, threshold, "v9", severity, None, None,
                    "bytes", float(sent), "count")

        assertDataFrameEqual(fired, spark.createDataFrame([
            expected("ip", "10.0.0.1", 40, 3_000_000, float(2**21), "warning"),
            expected("url", "/big", 10, 4_000_000, 1e6, "critical"),
        ], alert.RULE_DDL))

        # Learned: 2 x P50 of the windows' bytes, at least 1 MiB. ip population 1e6, 3e6: P50 2e6.
        params = ThresholdParams(min_window_requests=5, min_entity_windows=1, quantile=0.5)
        learned = rules.learn_all(counts, params)["big_transfer"]
        assertDataFrameEqual(learned, spark.createDataFrame([
            ("global", None, 16e6, 1, 80), ("ip", None, 4e6, 2, 70),
            ("ip", "10.0.0.1", 6e6, 1, 40), ("ip", "10.0.0.2", 2e6, 1, 30),
            ("url", None, 8e6, 1, 10), ("url", "/big", 8e6, 1, 10),
        ], "scope string, entity string, value double, windows long, requests long"))
    finally:
        rules.RULES.pop("big_transfer", None)


def test_add_a_sink_json_lines_file(spark, tmp_path):
    exec(example(SINK), vars(sinks))
    try:
        path = tmp_path / "alerts.jsonl"
        sink = sinks.alert_sinks([f"jsonl={path}"], sinks.SinkContext("localhost:1", "alerts"))
    finally:
        sinks.ALERT_SINKS.pop("jsonl")
    surge = ("id-1", "surge", "ip", "10.0.0.1", t(0), t(30), 120, 0, 0.0, 25.0, "v1", "critical",
             None, None, "requests", 120.0, "count", "2026-11-28T09:00:31.000Z")
    alerts = spark.createDataFrame([surge], alert.DDL)
    sink(alerts, 0)
    sink(alerts.limit(0), 1)  # a batch without alerts: called, writes nothing
    assert [json.loads(line) for line in path.read_text().splitlines()] == [
        {"alert_id": "id-1", "rule": "surge", "entity_type": "ip", "entity": "10.0.0.1",
         "window_start": "2026-11-28T09:00:00.000Z", "window_end": "2026-11-28T09:00:30.000Z",
         "requests": 120, "errors": 0, "error_rate": 0.0, "threshold": 25.0,
         "thresholds_version": "v1", "severity": "critical", "metric": "requests",
         "value": 120.0, "unit": "count", "emitted_at": "2026-11-28T09:00:31.000Z"}]
    # Each line is sorted JSON, as the block writes it.
    assert path.read_text().startswith('{"alert_id": "id-1", "emitted_at": ')


@pytest.mark.parametrize("heading", [METRIC, RULE, SINK])
def test_examples_are_short(heading):
    # Each short enough to follow in ten minutes: the code stays under 30 lines.
    assert len(example(heading).splitlines()) <= 30


@pytest.mark.slow
# The whole fast suite runs inside: the inner run's own timeout, not the 300 s of one test.
@pytest.mark.timeout(1500)
def test_the_metric_and_the_rule_as_files_keep_every_fast_test_green(tmp_path):
    """The metric appended to metrics.py and the rule as rules/big_transfer.py, in a copy of the
    project; then every fast test but these (-m "not kafka and not slow") on the copy."""
    copy = tmp_path / "project"
    ignore = shutil.ignore_patterns("__pycache__", ".venv", ".cache", ".state", ".git")
    for name in ("finale", "tests", "minimal", "complet", "conf"):
        shutil.copytree(ROOT / name, copy / name, ignore=ignore)
    for name in ("pyproject.toml", "docker-compose.yml", "Makefile"):
        shutil.copy(ROOT / name, copy)
    if (ROOT / ".cache").exists():
        (copy / ".cache").symlink_to(ROOT / ".cache")
    with (copy / "finale" / "analyzer" / "metrics.py").open("a", encoding="utf-8") as out:
        out.write("\n" + example(METRIC))
    (copy / "finale" / "analyzer" / "rules" / "big_transfer.py").write_text(example(RULE))
    # The copy's package comes first on the path, before the installed (editable) one.
    env = {**os.environ, "PYTHONPATH": str(copy)}
    probe = subprocess.run(
        [sys.executable, "-c", "import finale.analyzer.metrics as m, finale.analyzer.rules as r; "
         "print(m.__file__); print(list(r.RULES)); print(m.counts_columns())"],
        cwd=copy, env=env, capture_output=True, text=True, timeout=120)
    assert probe.stdout.splitlines() == [
        str(copy / "finale" / "analyzer" / "metrics.py"),
        "['error_rate', 'surge', 'big_transfer']",
        "('window_start', 'window_end', 'entity_type', 'entity', 'requests', 'errors', 'bytes', "
        "'error_rate')"], probe.stderr
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m",
         "not kafka and not slow", "--ignore", "tests/test_extending.py"],
        cwd=copy, env=env, capture_output=True, text=True, timeout=1500)
    summary = result.stdout.strip().splitlines()[-1]
    assert result.returncode == 0, result.stdout[-3000:]
    assert re.fullmatch(r"=* ?\d+ passed, \d+ deselected in .*", summary), summary
