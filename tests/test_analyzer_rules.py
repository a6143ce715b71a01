"""finale/analyzer/metrics.py, rules/ and thresholds.py on small static DataFrames.

Each result is compared against hand-computed rows.
"""
import hashlib
import json
from datetime import datetime

import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from finale.analyzer import access_log, metrics, rules
from finale.analyzer import settings as finale_settings
from finale.analyzer import thresholds as thresholds_file
from finale.analyzer.rules import common as rules_common
from finale.analyzer.rules import error_rate, surge
from finale.common import alert

COUNTS_SCHEMA = ("window_start timestamp, window_end timestamp, entity_type string, entity string, "
                 "requests long, errors long, error_rate double")
# The alerts a rule returns: the alert record without emitted_at (finale/common/alert.py).
ALERTS_SCHEMA = alert.RULE_DDL


def RATE(value: float) -> tuple:
    """The metric fields of an error_rate alert: the rate it compared, shown as a rate."""
    return ("error_rate", value, "rate")


def t(second: int, minute: int = 0) -> datetime:
    """09:minute:second on the test day (naive = UTC: the session and Python both run in UTC)."""
    return datetime(2026, 11, 28, 9, minute, second) if second >= 0 else \
        datetime(2026, 11, 28, 8, 59, 60 + second)


def line(ip: str, second: int, request: str, status: int) -> str:
    return (f'{ip} - - [28/Nov/2026:09:00:{second:02d} +0000] "{request}" {status} 100 '
            f'"-" "curl/8.5.0"')


def test_entity_window_counts_three_scopes_overlapping_windows(spark):
    lines = [
        line("10.0.0.1", 5, "GET /a HTTP/1.1", 500),
        line("10.0.0.1", 15, "GET /a HTTP/1.1", 200),
        line("10.0.0.2", 12, "GET /b HTTP/1.1", 404),
        line("10.0.0.2", 25, "-", 400),          # no request line: global and ip only
        "this is not a log line",                # malformed: counted nowhere
        line("10.0.0.3", 19, "GET /a HTTP/1.1", 399),  # 399 is not an error
    ]
    logs = access_log.parse_access_log(spark.createDataFrame([(v,) for v in lines], "value string"))

    counts = metrics.entity_window_counts(logs, "20 seconds", "10 seconds")

    # Each line falls in two 20 s windows starting on a multiple of 10 s.
    w1, w2, w3, w4 = (t(-10), t(10)), (t(0), t(20)), (t(10), t(30)), (t(20), t(40))
    expected = spark.createDataFrame([
        (*w1, "global", "*", 1, 1, 1.0),
        (*w1, "ip", "10.0.0.1", 1, 1, 1.0),
        (*w1, "url", "/a", 1, 1, 1.0),
        (*w2, "global", "*", 4, 2, 0.5),          # 05 (500), 15, 12 (404), 19 (399)
        (*w2, "ip", "10.0.0.1", 2, 1, 0.5),
        (*w2, "ip", "10.0.0.2", 1, 1, 1.0),
        (*w2, "ip", "10.0.0.3", 1, 0, 0.0),
        (*w2, "url", "/a", 3, 1, 1 / 3),
        (*w2, "url", "/b", 1, 1, 1.0),
        (*w3, "global", "*", 4, 2, 0.5),          # 15, 12 (404), 25 (400), 19
        (*w3, "ip", "10.0.0.1", 1, 0, 0.0),
        (*w3, "ip", "10.0.0.2", 2, 2, 1.0),
        (*w3, "ip", "10.0.0.3", 1, 0, 0.0),
        (*w3, "url", "/a", 2, 0, 0.0),
        (*w3, "url", "/b", 1, 1, 1.0),
        (*w4, "global", "*", 1, 1, 1.0),
        (*w4, "ip", "10.0.0.2", 1, 1, 1.0),
    ], COUNTS_SCHEMA)
    assert counts.columns == list(metrics.counts_columns())
    # The built-in metrics (a metric added to METRICS adds a column this test does not know).
    counts = counts.select(*expected.columns)
    assert dict(counts.dtypes) == dict(expected.dtypes)
    assertDataFrameEqual(counts, expected)


def test_wilson_lower_bound_matches_hand_computation(spark):
    # 8 errors out of 10 at z = 1.96: p = 0.8, z² = 3.8416,
    # (0.8 + 3.8416/20 - 1.96·sqrt(0.8·0.2/10 + 3.8416/400)) / (1 + 3.8416/10)
    # = (0.99208 - 1.96·sqrt(0.025604)) / 1.38416 = (0.99208 - 0.3136245) / 1.38416 = 0.4901568
    frame = spark.createDataFrame([(8, 10), (0, 0), (0, 10), (10, 10)],
                                  "errors long, requests long")
    bounds = [row[0] for row in frame.select(
        rules_common.wilson_lower_bound(F.col("errors"), F.col("requests"), 1.96)).collect()]
    assert bounds[0] == pytest.approx(0.4901568, abs=1e-7)
    assert bounds[1] is None                      # no request: no bound, never fires
    assert bounds[2] == pytest.approx(0.0, abs=1e-12)
    # 10/10: p = 1, margin = z·sqrt(z²/400) = z²/20: (1 + z²/20 - z²/20) / (1 + z²/10) = 1/1.38416
    assert bounds[3] == pytest.approx(1 / 1.38416, abs=1e-6)


W = (t(0), t(30))


def counts_frame(spark, rows):
    return spark.createDataFrame([(*W, kind, entity, n, e, e / n) for kind, entity, n, e in rows],
                                 COUNTS_SCHEMA)


def alert_id(entity_type: str, entity: str, window=W) -> str:
    micros = [int((bound - datetime(1970, 1, 1)).total_seconds()) * 1_000_000 for bound in window]
    return hashlib.sha256(f"error_rate|{entity_type}|{entity}|{micros[0]}|{micros[1]}"
                          .encode()).hexdigest()


THRESHOLDS = [
    ("global", None, 0.10),
    ("ip", None, 0.30),
    ("ip", "10.0.0.9", 0.60),   # a known noisy client: its own, higher threshold
    ("url", "/quiet", 0.01),    # a URL that must never fail
]


def test_alerts_threshold_entity_then_population_then_global(spark):
    # Every expected Wilson bound below is at z = 1:
    # (p + 1/2n - sqrt(p(1-p)/n + 1/4n²)) / (1 + 1/n).
    counts = counts_frame(spark, [
        ("ip", "10.0.0.9", 20, 10),   # own threshold 0.60: bound 0.391 -> no alert
        # ip population 0.30: bound 0.391 -> alert (rate 0.5: critical)
        ("ip", "10.0.0.1", 20, 10),
        ("ip", "10.0.0.4", 100, 34),  # rate 0.34 > 0.30 but bound 0.2944 -> no alert
        ("url", "/x", 20, 10),        # no url population: global 0.10 -> alert, critical
        ("url", "/quiet", 100, 3),    # own 0.01: bound (0.035 - 0.017776)/1.01 = 0.01705 -> alert
        ("global", "*", 1000, 150),   # global 0.10: bound 0.1391 -> alert, 0.15 < 0.20: warning
    ])
    thresholds = spark.createDataFrame(THRESHOLDS, thresholds_file.THRESHOLDS_SCHEMA)

    # inhibit_by_global=False: this test is about which threshold applies; the global row fires
    # in the same window W, and by default it would inhibit the ip and url alerts (tested below).
    fired = error_rate.error_rate_alerts(counts, thresholds, min_requests=5, min_errors=3, z=1.0,
                         thresholds_version="v1", inhibit_by_global=False)

    # error_share: the entity's errors / the 150 global errors of W. top_entities: the 3 ips and
    # the urls with errors, most first (ties by name).
    top = [("ip", "10.0.0.4", 100, 34), ("ip", "10.0.0.1", 20, 10), ("ip", "10.0.0.9", 20, 10),
           ("url", "/x", 20, 10), ("url", "/quiet", 100, 3)]
    expected = spark.createDataFrame([
        (alert_id("ip", "10.0.0.1"), "error_rate", "ip", "10.0.0.1", *W, 20, 10, 0.5, 0.30, "v1",
         "critical", 10 / 150, None, *RATE(0.5)),
        (alert_id("url", "/x"), "error_rate", "url", "/x", *W, 20, 10, 0.5, 0.10, "v1", "critical",
         10 / 150, None, *RATE(0.5)),
        (alert_id("url", "/quiet"), "error_rate", "url", "/quiet", *W, 100, 3, 0.03, 0.01, "v1",
         "critical", 3 / 150, None, *RATE(0.03)),
        (alert_id("global", "*"), "error_rate", "global", "*", *W, 1000, 150, 0.15, 0.10, "v1",
         "warning", None, top, *RATE(0.15)),
    ], ALERTS_SCHEMA)
    assert fired.columns == list(alert.RULE_COLUMNS)
    assertDataFrameEqual(fired, expected)

    # The global row the Wilson bound holds back (12/100: bound 0.0912 < 0.10) on its own:
    quiet = counts_frame(spark, [("global", "*", 100, 12)])
    assert error_rate.error_rate_alerts(quiet, thresholds, 5, 3, 1.0).count() == 0
    # ... and fires once the confidence asked for is low enough (z = 0.5: bound 0.1043).
    assert error_rate.error_rate_alerts(quiet, thresholds, 5, 3, 0.5).count() == 1


def test_global_alert_inhibits_the_ip_and_url_alerts_of_its_window_only(spark):
    # W1: all traffic fails (global, an IP and a URL alert); W2 (overlapping W1, other bounds): only
    # one IP fails, the global rate stays low. Thresholds: the population ones, z = 1.
    w1, w2 = (t(0), t(30)), (t(10), t(40))
    counts = spark.createDataFrame([
        # 50/100: bound (0.5 + 0.005 - sqrt(0.0025 + 0.000025)) / 1.01 = 0.4503 > 0.10, critical
        (*w1, "global", "*", 100, 50, 0.5),
        # 10/20: bound (0.5 + 0.025 - sqrt(0.0125 + 0.000625)) / 1.05 = 0.3909 > 0.30, critical
        (*w1, "ip", "10.0.0.1", 20, 10, 0.5),
        (*w1, "url", "/x", 20, 10, 0.5),
        # 10/100: bound (0.1 + 0.005 - sqrt(0.0009 + 0.000025)) / 1.01 = 0.0738 < 0.10
        (*w2, "global", "*", 100, 10, 0.1),
        (*w2, "ip", "10.0.0.2", 20, 10, 0.5),
    ], COUNTS_SCHEMA)
    thresholds = spark.createDataFrame(
        [("global", None, 0.10), ("ip", None, 0.30), ("url", None, 0.30)],
        thresholds_file.THRESHOLDS_SCHEMA)

    def row(entity_type, entity, window, requests, errors, threshold, share=None, top=None):
        return (alert_id(entity_type, entity, window), "error_rate", entity_type, entity, *window,
                requests, errors, errors / requests, threshold, "v1", "critical", share, top,
                *RATE(errors / requests))

    global_w1 = row("global", "*", w1, 100, 50, 0.10,
                    top=[("ip", "10.0.0.1", 20, 10), ("url", "/x", 20, 10)])
    # 10 of the 50 errors of W1 (0.2 < the 0.5 cause share): inhibited.
    ip_w1 = row("ip", "10.0.0.1", w1, 20, 10, 0.30, share=0.2)
    url_w1 = row("url", "/x", w1, 20, 10, 0.30, share=0.2)
    ip_w2 = row("ip", "10.0.0.2", w2, 20, 10, 0.30, share=1.0)

    inhibited = error_rate.error_rate_alerts(counts, thresholds, 5, 3, 1.0, "v1")
    assert inhibited.columns == list(alert.RULE_COLUMNS)
    assertDataFrameEqual(inhibited, spark.createDataFrame([global_w1, ip_w2], ALERTS_SCHEMA))

    everything = error_rate.error_rate_alerts(counts, thresholds, 5, 3, 1.0, "v1",
                                              inhibit_by_global=False)
    assertDataFrameEqual(everything,
                         spark.createDataFrame([global_w1, ip_w1, url_w1, ip_w2], ALERTS_SCHEMA))


def test_scanner_alone_in_a_quiet_window_keeps_its_alerts_and_is_named_by_the_global_one(spark):
    # Issue 12's case: a quiet 30 s window (4 ordinary requests, one of them a 404) and a scanner,
    # one IP, 60 requests in 30 s (2 a second), 54 of them 404 on one /wp-admin/ URL and 6 of /.
    scanner, probe = "198.51.100.7", "/wp-admin/setup-config.php"
    lines = [line("10.0.0.1", second, "GET / HTTP/1.1", 200) for second in (3, 11, 24)]
    lines.append(line("10.0.0.2", 17, "GET /feed HTTP/1.1", 404))
    for k in range(60):
        request = "GET / HTTP/1.1" if k % 10 == 0 else f"GET {probe} HTTP/1.1"
        lines.append(line(scanner, k // 2, request, 200 if k % 10 == 0 else 404))
    logs = access_log.parse_access_log(spark.createDataFrame([(v,) for v in lines], "value string"))
    counts = metrics.entity_window_counts(logs, "30 seconds", "30 seconds")  # one window: W
    thresholds = spark.createDataFrame(
        [("global", None, 0.10), ("ip", None, 0.30), ("url", None, 0.30)],
        thresholds_file.THRESHOLDS_SCHEMA)

    # W: 64 requests, 55 errors. The scanner holds 54 of them, and so does its probe URL: share
    # 54/55 >= 0.5, the cause, kept despite the global alert. 10.0.0.2 and /feed (1 request, 1
    # error) do not fire (min_requests 5) but are in top_entities; / (9 requests, 0 errors) is not.
    # Wilson bounds at z = 3 (55/64: 0.70, 54/60: 0.72, 54/54: 1/1.1667 = 0.857) are far above.
    top = [("ip", scanner, 60, 54), ("ip", "10.0.0.2", 1, 1), ("url", probe, 54, 54),
           ("url", "/feed", 1, 1)]
    global_alert = (alert_id("global", "*"), "error_rate", "global", "*", *W, 64, 55, 55 / 64, 0.10,
                    "v1", "critical", None, top, *RATE(55 / 64))
    expected = spark.createDataFrame([
        global_alert,
        (alert_id("ip", scanner), "error_rate", "ip", scanner, *W, 60, 54, 0.9, 0.30, "v1",
         "critical", 54 / 55, None, *RATE(0.9)),
        (alert_id("url", probe), "error_rate", "url", probe, *W, 54, 54, 1.0, 0.30, "v1",
         "critical", 54 / 55, None, *RATE(1.0)),
    ], ALERTS_SCHEMA)
    assertDataFrameEqual(error_rate.error_rate_alerts(counts, thresholds, 5, 3, 3.0, "v1"),
                         expected)
    # Only a sole cause kept (cause_share 1.0): 54/55 is not enough, both are inhibited.
    assertDataFrameEqual(error_rate.error_rate_alerts(counts, thresholds, 5, 3, 3.0, "v1",
                                                      cause_share=1.0),
                         spark.createDataFrame([global_alert], ALERTS_SCHEMA))


def test_alerts_min_requests_and_min_errors_gates(spark):
    thresholds = spark.createDataFrame(THRESHOLDS, thresholds_file.THRESHOLDS_SCHEMA)
    counts = counts_frame(spark, [
        ("ip", "10.0.0.2", 4, 4),   # bound 1/1.25 = 0.8 > 0.30, but only 4 requests
        ("url", "/y", 5, 2),        # bound (0.5 - 0.2408)/1.2 = 0.216 > 0.10, but only 2 errors
    ])

    def fired(min_requests, min_errors):
        return sorted(row.entity for row in
                      error_rate.error_rate_alerts(counts, thresholds, min_requests, min_errors,
                                                   1.0).collect())

    assert fired(5, 3) == []
    assert fired(4, 3) == ["10.0.0.2"]
    assert fired(5, 2) == ["/y"]
    assert fired(4, 2) == ["/y", "10.0.0.2"]


def test_alert_id_deterministic_and_unique_per_rule_entity_window(spark):
    thresholds = spark.createDataFrame(THRESHOLDS, thresholds_file.THRESHOLDS_SCHEMA)
    later = (t(10), t(40))
    counts = spark.createDataFrame([
        (*W, "ip", "10.0.0.1", 20, 10, 0.5),
        (*W, "url", "10.0.0.1", 20, 10, 0.5),     # same entity string, other type
        (*later, "ip", "10.0.0.1", 20, 10, 0.5),  # same entity, next window
    ], COUNTS_SCHEMA)
    recounted = spark.createDataFrame([(*W, "ip", "10.0.0.1", 40, 30, 0.75)], COUNTS_SCHEMA)

    first = {(r.entity_type, r.window_start): r.alert_id
             for r in error_rate.error_rate_alerts(counts, thresholds, 5, 3, 1.0).collect()}
    again = {(r.entity_type, r.window_start): r.alert_id
             for r in error_rate.error_rate_alerts(counts, thresholds, 5, 3, 1.0).collect()}
    grown = error_rate.error_rate_alerts(recounted, thresholds, 5, 3, 1.0, "v2").collect()

    assert first == again
    assert first == {("ip", W[0]): alert_id("ip", "10.0.0.1"),
                     ("url", W[0]): alert_id("url", "10.0.0.1"),
                     ("ip", later[0]): alert_id("ip", "10.0.0.1", later)}
    assert len(set(first.values())) == 3
    # The same window re-evaluated with more lines (update mode) keeps its id.
    assert [row.alert_id for row in grown] == [first[("ip", W[0])]]


def test_read_thresholds_defaults_file_and_bad_file(spark, tmp_path):
    missing = thresholds_file.read_thresholds(tmp_path / "absent.json")
    assert missing["version"] == "defaults"
    assertDataFrameEqual(
        thresholds_file.rule_thresholds_frame(spark, missing),
        spark.createDataFrame([("error_rate", "global", None, 0.10),
                               ("error_rate", "ip", None, 0.30),
                               ("error_rate", "url", None, 0.30)],
                              thresholds_file.RULE_THRESHOLDS_SCHEMA))

    path = tmp_path / "thresholds.json"
    path.write_text(json.dumps({"version": "abc", "thresholds": [
        {"rule": "error_rate", "scope": "global", "entity": None, "value": 0.05, "windows": 10,
         "requests": 900},
        {"rule": "surge", "scope": "url", "entity": "/cart", "value": 20.0, "windows": 9,
         "requests": 90},
    ]}))
    data = thresholds_file.read_thresholds(path)
    assert data["version"] == "abc"
    frame = thresholds_file.rule_thresholds_frame(spark, data)
    assert frame.columns == ["rule", "scope", "entity", "value"]
    assertDataFrameEqual(frame, spark.createDataFrame(
        [("error_rate", "global", None, 0.05), ("surge", "url", "/cart", 20.0)],
        thresholds_file.RULE_THRESHOLDS_SCHEMA))

    path.write_text('{"version": "abc", "thresholds": [')   # half-written
    with pytest.raises(ValueError, match="not valid JSON"):
        thresholds_file.read_thresholds(path)


def test_thresholds_file_of_an_unknown_rule_is_refused_until_its_code_is_deployed(spark, tmp_path):
    path = tmp_path / "thresholds.json"
    path.write_text(json.dumps({"version": "new", "thresholds": [
        {"rule": "error_rate", "scope": "ip", "entity": None, "value": 0.3},
        {"rule": "traffic_drop", "scope": "global", "entity": None, "value": 0.5},
        {"scope": "global", "entity": None, "value": 0.05},
    ]}))
    # Only a registered rule's thresholds load (a file for another analyzer is refused whole).
    with pytest.raises(thresholds_file.ThresholdsError,
                       match=r"thresholds\[1\] \(rule traffic_drop, scope global, entity None\): "
                             r"unknown rule \(known: error_rate, surge.*; deploy a new rule's code "
                             r"before thresholds that name it\)"):
        thresholds_file.read_thresholds(path)
    rules.register("traffic_drop", fire=error_rate.fire_error_rate,
                   learn=error_rate.error_rate_thresholds, metric="error_rate", unit="rate")
    try:
        # Once the rule is deployed, the file is refused for its next fault: an item without rule.
        with pytest.raises(thresholds_file.ThresholdsError,
                           match=r"thresholds\[2\] \(rule None, scope global, entity None\): "
                                 r"unknown rule"):
            thresholds_file.read_thresholds(path)
        document = json.loads(path.read_text())
        del document["thresholds"][2]
        path.write_text(json.dumps(document))
        data = thresholds_file.read_thresholds(path)
    finally:
        del rules.RULES["traffic_drop"]
    assert [row.rule for row in thresholds_file.rule_thresholds_frame(spark, data).collect()] == [
        "error_rate", "traffic_drop"]


def test_fire_all_gives_each_registered_rule_only_its_own_thresholds(spark):
    counts = counts_frame(spark, [("ip", "10.0.0.1", 20, 10), ("ip", "10.0.0.2", 20, 2)])
    settings = finale_settings.Settings(z=1.0)
    # A row of another rule at 0.0 would make both IPs fire if error_rate saw it.
    every_rule = spark.createDataFrame(
        [("error_rate", "ip", None, 0.30), ("other", "ip", None, 0.0)],
        thresholds_file.RULE_THRESHOLDS_SCHEMA)
    assert list(rules.RULES)[:2] == ["error_rate", "surge"]   # built-in first, then by name
    fired = rules.fire_all(counts, every_rule, settings, "v1")
    assert [(row.rule, row.entity, row.threshold) for row in fired.collect()] == [
        ("error_rate", "10.0.0.1", 0.30)]

    # A second rule is one registration: fire_all returns its alerts too, in the same columns.
    def every_window(counts, thresholds, settings, version):
        assert thresholds.columns == ["scope", "entity", "value"]
        return error_rate.error_rate_alerts(counts, thresholds, 1, 0, 0.0, version,
                                            inhibit_by_global=False) \
            .withColumn("rule", F.lit("other"))

    rules.register("other", fire=every_window, learn=error_rate.error_rate_thresholds,
                   metric="error_rate", unit="rate")
    try:
        with pytest.raises(ValueError, match="already registered"):
            rules.register("other", fire=every_window, learn=error_rate.error_rate_thresholds,
                           metric="error_rate", unit="rate")
        fired = rules.fire_all(counts, every_rule, settings, "v1")
        assert sorted((row.rule, row.entity, row.threshold) for row in fired.collect()) == [
            ("error_rate", "10.0.0.1", 0.30), ("other", "10.0.0.1", 0.0),
            ("other", "10.0.0.2", 0.0)]
    finally:
        del rules.RULES["other"]


def test_surge_entity_then_population_threshold_poisson_margin_and_inhibition(spark):
    # (entity_type, entity, requests, errors) in one window w1, plus one in the next window w2.
    w1, w2 = (t(0), t(30)), (t(10), t(40))
    counts = spark.createDataFrame([
        (*w1, "global", "*", 100, 0, 0.0),
        (*w1, "ip", "10.0.0.1", 41, 0, 0.0),     # own T 25: 25 + 3 * 5 = 40 < 41 -> fires
        (*w1, "ip", "10.0.0.2", 40, 0, 0.0),     # own T 25: 40 is not > 40 -> silent
        (*w1, "ip", "10.0.0.3", 14, 0, 0.0),     # population T 4: 4 + 3 * 2 = 10 < 14 -> fires
        (*w1, "ip", "10.0.0.4", 4, 0, 0.0),      # below min_requests 5 -> silent
        (*w1, "url", "/a", 100, 0, 0.0),         # no url threshold, no global fallback -> silent
        (*w2, "global", "*", 200, 0, 0.0),       # global T 81: 81 + 3 * 9 = 108 < 200 -> fires
        (*w2, "ip", "10.0.0.1", 60, 0, 0.0),     # would fire, inhibited by the global surge
    ], COUNTS_SCHEMA)
    thresholds = spark.createDataFrame(
        [("global", None, 81.0), ("ip", None, 4.0), ("ip", "10.0.0.1", 25.0),
         ("ip", "10.0.0.2", 25.0)], thresholds_file.THRESHOLDS_SCHEMA)

    def alert(window, entity_type, entity, requests, threshold, severity):
        alert_id = hashlib.sha256(
            f"surge|{entity_type}|{entity}|{int(window[0].timestamp() * 1e6)}|"
            f"{int(window[1].timestamp() * 1e6)}".encode()).hexdigest()
        return (alert_id, "surge", entity_type, entity, *window, requests, 0, 0.0, threshold,
                "v7", severity, None, None,  # no cause fields: they are error_rate's
                "requests", float(requests), "count")

    fired = surge.surge_alerts(counts, thresholds, 5, 3.0, "v7")
    assertDataFrameEqual(fired, spark.createDataFrame([
        alert(w1, "ip", "10.0.0.1", 41, 25.0, "warning"),      # 41 < 2 x 25
        alert(w1, "ip", "10.0.0.3", 14, 4.0, "critical"),      # 14 >= 2 x 4
        alert(w2, "global", "*", 200, 81.0, "critical"),
    ], ALERTS_SCHEMA))
    kept = surge.surge_alerts(counts, thresholds, 5, 3.0, "v7", inhibit_by_global=False)
    assert sorted((r.entity, r.window_start) for r in kept.collect()) == [
        ("*", w2[0]), ("10.0.0.1", w1[0]), ("10.0.0.1", w2[0]), ("10.0.0.3", w1[0])]
    # The defaults hold no surge threshold: the rule is silent without a thresholds file.
    settings = finale_settings.Settings()
    defaults = thresholds_file.rule_thresholds_frame(spark, thresholds_file.DEFAULT_THRESHOLDS)
    assert rules.fire_all(counts, defaults, settings).where("rule = 'surge'").count() == 0


def test_surge_thresholds_learned_from_request_counts(spark):
    params = finale_settings.ThresholdParams(
        min_window_requests=5, min_entity_windows=3, quantile=0.5, z=3.0)
    rows = []
    # 10.0.0.1: 10, 12, 11, 30 requests (4 windows); 10.0.0.2: 6, 6 (2 windows: population only);
    # one window of 4 requests is not eligible. Global: 20 in each window.
    for minute, requests in enumerate((10, 12, 11, 30)):
        rows.append((t(0, minute), t(0, minute + 1), "ip", "10.0.0.1", requests, 0, 0.0))
    for minute in range(2):
        rows.append((t(0, minute), t(0, minute + 1), "ip", "10.0.0.2", 6, 0, 0.0))
        rows.append((t(0, minute), t(0, minute + 1), "global", "*", 20, 0, 0.0))
    rows.append((t(0, 5), t(0, 6), "ip", "10.0.0.3", 4, 0, 0.0))
    counts = spark.createDataFrame(rows, COUNTS_SCHEMA)

    learned = surge.surge_thresholds(counts, params).select("scope", "entity", "value", "windows",
                                                            "requests")
    # 10.0.0.1: median 11.5, MAD median(1.5, 0.5, 0.5, 18.5) = 1, P50 = 11.5:
    #   max(11.5, 11.5 + 4.4478, 23) = 23.
    # ip population 6, 6, 10, 11, 12, 30: median 10.5, MAD median(4.5, 4.5, 0.5, 0.5, 1.5, 19.5)
    #   = 3: max(10.5, 10.5 + 13.3434, 21) = 23.8434.  global 20, 20: max(20, 20, 40) = 40.
    assertDataFrameEqual(learned, spark.createDataFrame([
        ("global", None, 40.0, 2, 40),
        ("ip", None, 10.5 + 3 * 1.4826 * 3, 6, 75),
        ("ip", "10.0.0.1", 23.0, 4, 63),
    ], "scope string, entity string, value double, windows long, requests long"))
