"""finale/tools/evaluate_real.py on a slice of the real log (its first 40 lines, 2 h), counts by
hand.

The slice (finale/data/README.md), 09:28:56Z to 11:40:19Z: the first hour holds one burst,
116.86.203.45 with 5 requests (one 404) at 09:50:49-50Z, whole in the two 30 s windows starting
09:50:30 and :40 (the one of 09:50:20 ends at :50 and holds 4) -> the only eligible windows (>= 5
requests), global and ip, both at 0.2: median 0.2, MAD 0, P_0.95 0.2, so
T = max(0.2, 0.2, 0.2 + delta 0.05) = 0.25 for the global and ip populations; no URL window is
eligible (the url scope falls back to the global 0.25), no entity has 30 windows. After the first
hour no window reaches 5 real requests: no alert on the real traffic. Between the real lines of
10:39:54Z and 10:47:09Z, three incidents of 20 s, 1 line a second, all errors, each in its own
four windows (10, 20, 20, 10 lines; Wilson bound at z = 3 of 10/10: 1/1.9 = 0.53 > 0.25):
  ip  203.0.113.1 from 10:42:00Z: 4 ip alerts (error share 1: kept despite the global alert) and
      4 global ones; its 6 scanner paths get at most 4 lines each (< min_requests): no url alert;
  url /           from 10:43:20Z: 4 url + 4 global alerts (one line per client 198.51.100.N);
  global          from 10:44:40Z: 4 global alerts (its 20 lines spread over the 14 real URLs
      seen so far and 20 clients: at most 2 per entity).
20 alerts: 12 on target, 8 collateral (global alerts in the ip and url incidents' time), 0 false.
Latency: the first window that holds the incident's lines ends 10 s after its start (window end);
5 lines (5 s) are the first running count that fires (earliest: 5/5 gives 1/2.8 = 0.357 > 0.25).
"""
import gzip

import pytest
from conftest import ROOT

from finale.analyzer import settings
from finale.generator import incidents
from finale.tools import evaluate_real

FIXTURE = ROOT / "finale" / "data" / "secrepo-2021-10-22-to-26.log.gz"
ORIGIN = "2021-10-22T09:28:56Z"


# Many small Spark jobs (learning, scoring, the running windows of each incident): minutes when
# the machine is shared, as tests/test_tools_evaluate.py.
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_evaluate_real_on_a_slice(spark, tmp_path):
    with gzip.open(FIXTURE, "rb") as source:
        head = [next(source) for _ in range(40)]
    log = tmp_path / "slice.log"
    log.write_bytes(b"".join(head))
    # 10:42:00Z, 10:43:20Z and 10:44:40Z are 4384, 4464 and 4544 s after the first line.
    specs = [incidents.incident_spec(text)
             for text in ("ip@4384+20", "url=/@4464+20", "global@4544+20")]
    params = settings.ThresholdParams(quantile=0.95)

    result = evaluate_real.evaluate_real(spark, log, 1.0, specs, 1.0, 100.0, params,
                                         tmp_path / "out")

    assert result.statistics["first_time"] == ORIGIN
    # Every registered rule learns: error_rate, and surge, whose T is max(P_q, median + z*MAD,
    # 2 x median) of the requests per window: both eligible windows have 5 requests, so 2 x 5.
    assert [(t["rule"], t["scope"], t["entity"], t["value"], t["windows"], t["requests"])
            for t in result.document["thresholds"]] == [
        ("error_rate", "global", None, 0.25, 2, 10), ("error_rate", "ip", None, 0.25, 2, 10),
        ("surge", "global", None, 10.0, 2, 10), ("surge", "ip", None, 10.0, 2, 10)]
    assert result.background == []
    r = result.result
    # 20 error_rate alerts (12 on target, 8 collateral), + 6 surge alerts, collateral: the lines an
    # incident adds (2/s) are a surge against this slice's 5 requests per window. error_rate's own
    # alerts cannot change with surge registered (inhibition acts within each rule).
    assert ((r.incidents, r.detected, r.alerts, r.on_target, r.collateral, r.false)
            == (3, 3, 26, 12, 14, 0))
    assert r.latency_window == {"0:ip": 10.0, "1:url": 10.0, "2:global": 10.0}
    assert r.latency_earliest == {"0:ip": 5.0, "1:url": 5.0, "2:global": 5.0}
    # The scored part: from 10:28:56Z to the last line (11:40:19Z) + 1 s.
    assert r.evaluated_hours == pytest.approx(4284 / 3600)

    with pytest.raises(ValueError, match="starts in the 1 learning hours"):
        evaluate_real.evaluate_real(spark, log, 1.0, [incidents.incident_spec("ip@3000+20")], 1.0,
                                    100.0, params, tmp_path / "early")


def test_reason_names_the_threshold_and_the_cause():
    document = {"thresholds": [{"rule": "error_rate", "scope": "ip", "entity": "173.231.60.198",
                                "value": 0.2}]}
    own = {"rule": "error_rate", "entity_type": "ip", "entity": "173.231.60.198", "errors": 8,
           "requests": 12, "error_rate": 8 / 12, "threshold": 0.2, "error_share": 0.8,
           "top_entities": None, "metric": "error_rate", "value": 8 / 12, "unit": "rate"}
    assert evaluate_real.reason(own, document) == (
        "8/12 errors (67%) > 0.2 (its own); cause: 80% of the window's errors")
    population = dict(own, entity="10.0.0.1", threshold=0.4, error_share=None)
    assert evaluate_real.reason(population, document) == "8/12 errors (67%) > 0.4 (ip population)"
    # A surge alert is about requests, against the surge thresholds only (the ip's own one above
    # is error_rate's): 25 + 3 x sqrt(25) = 40.
    surge = dict(own, rule="surge", requests=41, errors=0, error_rate=0.0, threshold=25.0,
                 error_share=None)
    assert evaluate_real.reason(surge, document) == (
        "surge: 41 requests > 25 + 3 x sqrt(25) = 40.0 (ip population)")
    # Another rule is explained by what its alert says it compared, in its unit.
    transfer = dict(own, rule="big_transfer", errors=0, error_rate=0.0, threshold=2e6,
                    error_share=None, metric="bytes", value=3e6, unit="count")
    assert evaluate_real.reason(transfer, document) == (
        "big_transfer: bytes 3000000 > 2000000 (ip population)")
