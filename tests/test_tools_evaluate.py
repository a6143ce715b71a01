"""finale/tools/evaluate.py: learned thresholds catch every injected incident and stay quiet on
normal traffic."""
from datetime import datetime

import pytest
from pyspark.testing import assertDataFrameEqual

from finale.analyzer import access_log
from finale.tools import evaluate


def test_running_window_counts_are_the_prefixes_the_analyzer_sees(spark):
    # One IP, a 10-second tumbling window: lines at :00, :00 (error), :05 (error) and one at :12.
    lines = [f'{ip} - - [28/Nov/2026:09:00:{second:02d} +0000] "GET {url} HTTP/1.1" {status} 10'
             for ip, second, url, status in (("10.0.0.1", 0, "/a", 200),
                                             ("10.0.0.1", 0, "/b", 500),
                                             ("10.0.0.1", 5, "/a", 404),
                                             ("10.0.0.1", 12, "/a", 200),
                                             ("10.0.0.2", 3, "/a", 500))]
    logs = access_log.parse_access_log(spark.createDataFrame([(v,) for v in lines],
                                                             "value string"))
    running = evaluate.running_window_counts(logs, "10 seconds", "10 seconds", "ip", "10.0.0.1")
    expected = spark.createDataFrame([
        # [09:00:00, 09:00:01): 2 requests, 1 error; [09:00:00, 09:00:06): 3 requests, 2 errors.
        (datetime(2026, 11, 28, 9, 0, 0), datetime(2026, 11, 28, 9, 0, 1),
         "ip", "10.0.0.1", 2, 1, 0.5),
        (datetime(2026, 11, 28, 9, 0, 0), datetime(2026, 11, 28, 9, 0, 6),
         "ip", "10.0.0.1", 3, 2, 2 / 3),
        (datetime(2026, 11, 28, 9, 0, 10), datetime(2026, 11, 28, 9, 0, 13),
         "ip", "10.0.0.1", 1, 0, 0.0),
    ], "window_start timestamp, window_end timestamp, entity_type string, entity string, "
       "requests long, errors long, error_rate double")
    # The built-in metrics (a metric added to metrics.METRICS adds a column).
    assertDataFrameEqual(running.select(*expected.columns), expected)


# About 60 s on an idle 2-core machine, several times that when it is shared: a longer timeout.
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_every_incident_alerts_and_a_quiet_hour_raises_none(spark, tmp_path):
    # The generator's default error model (20 % error users, 30 % error URLs, 50 % failures) at
    # 10 lines/s over 10 users: 20 min of history, the ip, url, global and surge incidents (2 min
    # each), then one hour of the same traffic without incidents.
    scenario = evaluate.Scenario(seed=11, rate=10, users=10, history=20 * 60, quiet=60 * 60)
    [result] = evaluate.evaluate_seed(spark, scenario, [("30 seconds", "10 seconds")],
                                      evaluate.ThresholdParams(), tmp_path)
    assert result.incidents == 4
    detected = {key.split(":")[1] for key, latency in result.latency_window.items()
                if latency is not None}
    assert detected == {"ip", "url", "global", "surge"}
    assert result.detected == 4 and result.recall == 1.0
    assert result.quiet_alerts == 0
    # Each incident fired within its first window (30 s) plus one slide, in log time.
    assert all(latency <= 40 for latency in result.latency_window.values())
    assert all(0 <= latency <= result_latency
               for latency, result_latency in zip(result.latency_earliest.values(),
                                                  result.latency_window.values(), strict=True))


def test_windows_longer_than_the_gap_between_incidents_are_refused(capsys):
    # 180 s between the end of one incident and the start of the next: a longer window could
    # overlap an ip/url incident and the global one, whose alert would inhibit theirs.
    assert evaluate.SCHEDULE_GAP == 180
    with pytest.raises(SystemExit) as refused:
        evaluate.main(["--windows", "30 seconds", "181 seconds"])
    assert refused.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "evaluate.py: error: window '181 seconds' is longer than the 180 s between the incidents: "
        "it could overlap an ip/url incident and the global one, whose alert inhibits theirs"]
