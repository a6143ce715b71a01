"""finale/analyzer/threshold_job.py: the robust threshold formula, the eligibility rules, the JSON
file, the CLI."""
import gzip
import json
import os
import re
import subprocess
import sys
import uuid
from datetime import datetime

import pytest
from conftest import ROOT
from pyspark.testing import assertDataFrameEqual

from finale.analyzer import rules
from finale.analyzer import threshold_job as job
from finale.analyzer.rules import error_rate

RATES_SCHEMA = ("window_start timestamp, window_end timestamp, entity_type string, entity string, "
                "requests long, errors long, error_rate double")
THRESHOLDS_SCHEMA = "scope string, entity string, value double, windows long, requests long"
PARAMS = job.ThresholdParams(window="1 minute", slide="1 minute", min_window_requests=10,
                             min_entity_windows=5, quantile=0.995, z=3.0, delta=0.05)


def rates_frame(spark, samples):
    """samples: (entity_type, entity, requests, error_rate) -> entity_window_counts-shaped rows,
    one window per sample (window i starts at minute i)."""
    rows = []
    for i, (entity_type, entity, requests, rate) in enumerate(samples):
        start = datetime(2026, 11, 28, 9, i % 60)
        rows.append((start, start.replace(second=59), entity_type, entity, requests,
                     round(rate * requests), rate))
    return spark.createDataFrame(rows, RATES_SCHEMA)


def thresholds_only(frame):
    return frame.select("scope", "entity", "value", "windows", "requests")


def test_each_term_of_the_max_and_the_cap(spark):
    samples = (
        # Quantile wins: ten windows at 0 and one at 1. median 0, MAD 0, P99.5 at rank
        # 0.995 * 10 = 9.95 -> 0 + 0.95 * (1 - 0) = 0.95; z term 0; delta term 0.05. T = 0.95.
        [("ip", "10.0.0.1", 20, 0.0)] * 10 + [("ip", "10.0.0.1", 20, 1.0)]
        # MAD wins: 0.1 0.1 0.2 0.3 0.3. median 0.2, |deviations| 0.1 0.1 0 0.1 0.1 -> MAD 0.1;
        # z term 0.2 + 3 * 1.4826 * 0.1 = 0.64478; P99.5 at rank 3.98 -> 0.3; delta 0.25.
        + [("ip", "10.0.0.2", 20, r) for r in (0.1, 0.1, 0.2, 0.3, 0.3)]
        # Delta wins: five windows at 0.2. median 0.2, MAD 0, P99.5 0.2; delta term 0.25.
        + [("url", "/socks/wool", 10, 0.2)] * 5
        # Cap: 0.8 0.8 0.9 1.0 1.0. median 0.9, MAD 0.1; z term 0.9 + 0.44478 = 1.34478 -> 1.
        + [("url", "/cart", 10, r) for r in (0.8, 0.8, 0.9, 1.0, 1.0)]
    )
    thresholds = error_rate.error_rate_thresholds(rates_frame(spark, samples), PARAMS)
    expected = spark.createDataFrame([
        ("ip", "10.0.0.1", 0.95, 11, 220),
        ("ip", "10.0.0.2", 0.64478, 5, 100),
        ("url", "/socks/wool", 0.25, 5, 50),
        ("url", "/cart", 1.0, 5, 50),
    ], THRESHOLDS_SCHEMA)
    assertDataFrameEqual(thresholds_only(thresholds.where("entity is not null")), expected)
    # The ingredients of the winning terms, also hand-computed above.
    ingredients = {row["entity"]: (row["median"], row["mad"], row["upper_quantile"])
                   for row in thresholds.where("entity is not null").collect()}
    assert ingredients["10.0.0.1"] == pytest.approx((0.0, 0.0, 0.95))
    assert ingredients["10.0.0.2"] == pytest.approx((0.2, 0.1, 0.3))
    assert ingredients["/cart"] == pytest.approx((0.9, 0.1, 1.0))


def test_populations_small_windows_and_entities_without_history(spark):
    params = job.ThresholdParams(min_window_requests=10, min_entity_windows=3,
                                 quantile=0.995, z=3.0, delta=0.05)
    samples = [
        # global: 0 0.1 0.2 (the 5-request window at 1.0 is too small to count).
        # median 0.1, MAD 0.1 -> 0.1 + 0.44478 = 0.54478; P99.5 at rank 1.99 -> 0.199; delta 0.15.
        ("global", "*", 100, 0.0), ("global", "*", 100, 0.1), ("global", "*", 100, 0.2),
        ("global", "*", 5, 1.0),
        # /a: three windows at 0 -> own threshold, delta wins: 0.05.
        ("url", "/a", 10, 0.0), ("url", "/a", 10, 0.0), ("url", "/a", 10, 0.0),
        # /b: two eligible windows (< 3) -> no own threshold; the 9-request window does not count.
        ("url", "/b", 20, 0.5), ("url", "/b", 20, 0.5), ("url", "/b", 9, 1.0),
        # url population: 0 0 0 0.5 0.5. median 0, MAD 0, P99.5 at rank 3.98 -> 0.5; delta 0.05.
        # ip population: one IPv6 window at 0.25 -> 0.25 + delta = 0.30; no own threshold.
        ("ip", "2001:db8::1", 12, 0.25),
    ]
    thresholds = error_rate.error_rate_thresholds(rates_frame(spark, samples), params)
    expected = spark.createDataFrame([
        ("global", None, 0.54478, 3, 300),
        ("ip", None, 0.30, 1, 12),
        ("url", None, 0.5, 5, 70),
        ("url", "/a", 0.05, 3, 30),
    ], THRESHOLDS_SCHEMA)
    assertDataFrameEqual(thresholds_only(thresholds), expected)


def test_a_robust_threshold_ignores_an_incident_in_the_history(spark):
    # 20 quiet windows around 0.02 and 2 incident windows at 0.9: median/MAD stay put, whereas a
    # mean + 3 sd rule would be dragged to 0.1 + 3 * 0.25 = 0.86.
    quiet = [0.01, 0.02, 0.03, 0.02] * 5
    samples = [("global", "*", 100, r) for r in quiet + [0.9, 0.9]]
    params = job.ThresholdParams(min_window_requests=1, quantile=0.5, z=3.0, delta=0.0)
    value = error_rate.error_rate_thresholds(rates_frame(spark, samples), params).first()["value"]
    # median 0.02; |deviations| ten 0.0, ten 0.01, two 0.88 -> MAD 0.01 (the 11th and 12th of 22
    # sorted deviations are both 0.01): 0.02 + 3 * 1.4826 * 0.01 = 0.064478.
    assert value == pytest.approx(0.064478)


def log_line(ip, second, url, status, common=False):
    line = f'{ip} - - [28/Nov/2026:09:00:{second:02d} +0000] "GET {url} HTTP/1.1" {status} 512'
    return line if common else line + ' "https://chaussettes.io/" "Mozilla/5.0 (X11; Linux x86_64)"'


TINY_LOG = [
    log_line("10.0.0.1", 1, "/a", 200),
    log_line("10.0.0.1", 2, "/a", 500),
    log_line("shop.example.com", 3, "/b", 200),
    log_line("2001:db8::7", 4, "/b", 404),
    "this is not an access-log line",
    log_line("10.0.0.1", 10, "/b", 200, common=True),
]
TINY_OPTIONS = ["--window", "1 minute", "--slide", "1 minute",
                "--min-window-requests", "1", "--min-entity-windows", "1"]


def current_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def run_job(tmp_path, lines, name, *extra):
    log = tmp_path / f"{name}.log"
    log.write_text("\n".join(lines) + "\n")
    output = tmp_path / f"{name}.json"
    assert job.main(["--input", str(log), "--output", str(output), *TINY_OPTIONS, *extra]) == 0
    return json.loads(output.read_text())


def test_json_file_structure_statistics_and_version(spark, tmp_path, capsys):
    document = run_job(tmp_path, TINY_LOG, "tiny")
    assert (tmp_path / "tiny.json").stat().st_mode & 0o777 == 0o666 & ~current_umask()
    version, generated_at = document.pop("version"), document.pop("generated_at")
    assert re.fullmatch(r"[0-9a-f]{16}", version)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", generated_at)
    # The built-in rules' rows, in their order (a rule added to finale/analyzer/rules/ adds its own
    # after them: the file holds every registered rule's).
    learned = len(document["thresholds"])
    document["thresholds"] = [item for item in document["thresholds"]
                              if item["rule"] in rules.BUILT_IN]
    # One 1-minute window, 5 parsed lines (2 errors). Entity rates: 10.0.0.1 1/3, shop 0, v6 1;
    # /a 1/2, /b 1/3. Each entity has one window: T = rate + delta (capped at 1).
    # ip population 0, 1/3, 1: median 1/3, MAD 1/3 -> 1/3 + 3 * 1.4826 / 3 > 1 -> 1.
    # url population 1/3, 1/2: median 5/12, MAD 1/12 -> 5/12 + 3 * 1.4826 / 12 = 0.787317
    # (P99.5 = 1/3 + 0.995 / 6 = 0.499167, delta term 0.466667).
    assert document == {
        "parameters": {"window": "1 minute", "slide": "1 minute", "min_window_requests": 1,
                       "min_entity_windows": 1, "quantile": 0.995, "z": 3.0, "delta": 0.05},
        "input": {"lines": 6, "parsed": 5, "malformed": 1,
                  "first_time": "2026-11-28T09:00:01Z", "last_time": "2026-11-28T09:00:10Z"},
        "thresholds": [
            {"rule": "error_rate", "scope": "global", "entity": None, "value": 0.45,
             "windows": 1, "requests": 5},
            {"rule": "error_rate", "scope": "ip", "entity": None, "value": 1.0,
             "windows": 3, "requests": 5},
            {"rule": "error_rate", "scope": "ip", "entity": "10.0.0.1", "value": 0.383333,
             "windows": 1, "requests": 3},
            {"rule": "error_rate", "scope": "ip", "entity": "2001:db8::7", "value": 1.0,
             "windows": 1, "requests": 1},
            {"rule": "error_rate", "scope": "ip", "entity": "shop.example.com", "value": 0.05,
             "windows": 1, "requests": 1},
            {"rule": "error_rate", "scope": "url", "entity": None, "value": 0.787317,
             "windows": 2, "requests": 5},
            {"rule": "error_rate", "scope": "url", "entity": "/a", "value": 0.55,
             "windows": 1, "requests": 2},
            {"rule": "error_rate", "scope": "url", "entity": "/b", "value": 0.383333,
             "windows": 1, "requests": 3},
            # surge: T = max(P99.5, median + 3 * 1.4826 * MAD, 2 * median) of the requests.
            # global [5]: 10; ip population [1, 1, 3]: P99.5 = 1 + 0.99 * 2 = 2.98 (MAD 0);
            # one window each: 2 * requests; url population [2, 3]: median 2.5, MAD 0.5:
            # max(2.995, 4.7239, 5) = 5.
            {"rule": "surge", "scope": "global", "entity": None, "value": 10.0,
             "windows": 1, "requests": 5},
            {"rule": "surge", "scope": "ip", "entity": None, "value": 2.98,
             "windows": 3, "requests": 5},
            {"rule": "surge", "scope": "ip", "entity": "10.0.0.1", "value": 6.0,
             "windows": 1, "requests": 3},
            {"rule": "surge", "scope": "ip", "entity": "2001:db8::7", "value": 2.0,
             "windows": 1, "requests": 1},
            {"rule": "surge", "scope": "ip", "entity": "shop.example.com", "value": 2.0,
             "windows": 1, "requests": 1},
            {"rule": "surge", "scope": "url", "entity": None, "value": 5.0,
             "windows": 2, "requests": 5},
            {"rule": "surge", "scope": "url", "entity": "/a", "value": 4.0,
             "windows": 1, "requests": 2},
            {"rule": "surge", "scope": "url", "entity": "/b", "value": 6.0,
             "windows": 1, "requests": 3},
        ],
    }
    assert (f"thresholds {version}: {learned} thresholds from 5 parsed lines (1 malformed"
            in capsys.readouterr().out)

    # Same input and parameters: same version. One more line: a new version.
    assert run_job(tmp_path, TINY_LOG, "again")["version"] == version
    changed = run_job(tmp_path, TINY_LOG + [log_line("10.0.0.9", 20, "/a", 503)], "changed",
                      "--plot", str(tmp_path / "rates.png"))
    assert changed["version"] != version
    assert changed["input"]["lines"] == 7
    png = (tmp_path / "rates.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000


def test_rotated_and_gzipped_files_give_the_thresholds_of_the_whole_log(spark, tmp_path):
    """The site's own history as logrotate leaves it (Debian: access.log, access.log.1, then
    access.log.2.gz ...), read through the documented glob: the thresholds of the same lines in one
    file, vhost_combined lines (other_vhosts_access.log) included."""
    whole = run_job(tmp_path, TINY_LOG, "whole")
    logs = tmp_path / "apache2"
    logs.mkdir()
    oldest, older, current = TINY_LOG[:2], TINY_LOG[2:4], TINY_LOG[4:]
    with gzip.open(logs / "access.log.2.gz", "wt") as rotated:
        rotated.write("\n".join(oldest) + "\n")
    (logs / "access.log.1").write_text("\n".join(older) + "\n")
    # The current file as Apache leaves it mid-line is not a case: logrotate rotates whole files.
    (logs / "other_vhosts_access.log").write_text("\n".join(
        "shop.example:443 " + line for line in current) + "\n")
    output = tmp_path / "rotated.json"
    assert job.main(["--input", str(logs / "access.log*"), str(logs / "other_vhosts_access.log*"),
                     "--output", str(output), *TINY_OPTIONS]) == 0
    rotated = json.loads(output.read_text())
    # "this is not an access-log line" got the vhost prefix too: still malformed, as before.
    assert rotated["input"] == whole["input"] == {
        "lines": 6, "parsed": 5, "malformed": 1,
        "first_time": "2026-11-28T09:00:01Z", "last_time": "2026-11-28T09:00:10Z"}
    assert rotated["thresholds"] == whole["thresholds"]
    assert rotated["version"] == whole["version"]


@pytest.mark.parametrize("argv, message", [
    (["--input", "x.log", "--quantile", "1.5"], "--quantile must be in (0, 1], got 1.5"),
    (["--input", "x.log", "--window", "soon"], "bad duration 'soon'"),
    (["--input", "x.log", "--window", "10 seconds", "--slide", "1 minute"],
     "is longer than --window"),
    (["--input", "x.log", "--since", "2026-11-28T09:00:00Z"], "use them with --kafka"),
    (["--kafka", "--since", "yesterday"], "not an ISO 8601 time"),
    (["--input", "/nonexistent/*.log"], "--input /nonexistent/*.log: no such file"),
    (["--min-window-requests", "0", "--input", "x.log"],
     "--min-window-requests must be in [1, inf]"),
])
def test_bad_options_exit_2_with_one_line(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.log").write_text(TINY_LOG[0] + "\n")
    with pytest.raises(SystemExit) as exit_info:
        job.main(argv)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("threshold_job.py: error: ")
    assert message in error


def test_cli_bad_option_as_a_subprocess():
    result = subprocess.run([sys.executable, str(ROOT / "finale" / "threshold_job.py"),
                             "--input", "x.log", "--delta", "-1"],
                            capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 2
    assert result.stderr == ("threshold_job.py: error: argument --delta: --delta must be in "
                             "[0, 1], got -1\n")
    assert result.stdout == ""


# Starting (or joining) the broker takes a while on a shared machine: a longer timeout.
@pytest.mark.timeout(900)
def test_kafka_time_range_by_record_timestamp(spark, kafka, tmp_path):
    from kafka import KafkaAdminClient, KafkaProducer
    from kafka.admin import NewTopic

    topic = f"thresholds-history-{uuid.uuid4().hex[:12]}"
    admin = KafkaAdminClient(bootstrap_servers=kafka)
    try:
        admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
    finally:
        admin.close()
    # Six records one second apart in Kafka time, alternating partitions; --since/--until select
    # [t0 + 1 s, t0 + 4 s): the 2nd (a line), 3rd (malformed) and 4th (a line).
    t0_ms = 1_795_852_800_000  # 2026-11-28T08:00:00Z
    values = [log_line("10.0.0.1", i, "/a", 200 if i != 3 else 503) for i in range(6)]
    values[2] = "garbage in the topic"
    producer = KafkaProducer(bootstrap_servers=kafka)
    for i, value in enumerate(values):
        producer.send(topic, value=value.encode(), partition=i % 2, timestamp_ms=t0_ms + 1000 * i)
    producer.flush()
    producer.close()
    output = tmp_path / "kafka.json"
    assert job.main(["--kafka", "--bootstrap-servers", kafka, "--topic", topic,
                     "--since", "2026-11-28T08:00:01Z", "--until", "2026-11-28T08:00:04Z",
                     "--output", str(output), *TINY_OPTIONS]) == 0
    document = json.loads(output.read_text())
    assert document["input"] == {"lines": 3, "parsed": 2, "malformed": 1,
                                 "first_time": "2026-11-28T09:00:01Z",
                                 "last_time": "2026-11-28T09:00:03Z"}
    # One window, 2 requests, 1 error: every scope's threshold is 0.5 + delta (error_rate) and
    # 2 x 2 requests (surge).
    for rule, value in (("error_rate", 0.55), ("surge", 4.0)):
        assert {(t["scope"], t["entity"], t["value"]) for t in document["thresholds"]
                if t["rule"] == rule} == {
            ("global", None, value), ("ip", None, value), ("ip", "10.0.0.1", value),
            ("url", None, value), ("url", "/a", value)}
