"""finale/web/state.py and the dashboard's command line: what the page is given, worked out by
hand, and bad flags as one line (no browser, no broker)."""
import subprocess
import sys

from conftest import ROOT, free_port

from finale.web.state import DashboardState, merge_top


def metrics(start_s: int, requests: int, errors: int, top_ips=(), emitted="2026-11-28T09:00:31Z"):
    def iso(seconds):
        return f"2026-11-28T09:{seconds // 60:02d}:{seconds % 60:02d}.000Z"
    return {"window_start": iso(start_s), "window_end": iso(start_s + 30), "requests": requests,
            "errors": errors, "error_rate": errors / requests, "top_ips": list(top_ips),
            "top_urls": [], "batch_id": 1, "backlog": 0, "dead_letters_total": 0,
            "emitted_at": emitted}


def entry(entity, requests, errors):
    return {"entity": entity, "requests": requests, "errors": errors}


def test_merge_top_keeps_each_entitys_largest_counts_most_errors_first():
    older = [entry("a", 10, 5), entry("b", 4, 4)]
    newer = [entry("b", 9, 8), entry("c", 3, 1)]   # b grew in the next micro-batch
    assert merge_top(older, newer, 2) == [entry("b", 9, 8), entry("a", 10, 5)]
    assert merge_top(None, [entry("x", 1, 1), "junk", {"entity": 7}], 5) == [entry("x", 1, 1)]


def test_versions_of_a_window_merge_and_the_span_follows_the_newest_window():
    state = DashboardState(span_s=60)
    state.add_metrics(metrics(0, 10, 2, [entry("10.0.0.1", 4, 2)]))
    # The same window later: more requests; its batch updated another IP only.
    state.add_metrics(metrics(0, 20, 5, [entry("10.0.0.2", 6, 3)]))
    state.add_metrics(metrics(10, 30, 3))
    snapshot = state.snapshot()
    base = 1795856400.0  # 2026-11-28T09:00:00Z: 1767225600 (2026-01-01) + 331 days + 9 h
    assert snapshot["chart"] == {"x": [base + 30, base + 40],
                                 "requests_per_s": [0.667, 1.0], "errors_per_s": [0.167, 0.1]}
    end = "2026-11-28T09:00:30.000Z"
    assert snapshot["offenders"]["ips"] == [
        {"entity": "10.0.0.2", "errors": 3, "requests": 6, "window_end": end},
        {"entity": "10.0.0.1", "errors": 2, "requests": 4, "window_end": end},
    ]
    # A window ending 2 minutes later: the first two (ending more than 60 s before) leave.
    state.add_metrics(metrics(120, 5, 0))
    assert state.snapshot()["chart"]["x"] == [base + 150]


def test_an_older_version_delivered_late_does_not_shrink_a_window():
    state = DashboardState()
    state.add_metrics(metrics(0, 20, 5))
    state.add_metrics(metrics(0, 10, 2))
    assert state.snapshot()["chart"]["requests_per_s"] == [0.667]


def test_alerts_newest_first_latest_version_wins_and_junk_is_ignored():
    state = DashboardState()
    first = {"alert_id": "a", "rule": "error_rate", "severity": "warning", "entity_type": "ip",
             "entity": "10.0.0.1", "window_start": "2026-11-28T09:00:00.000Z",
             "window_end": "2026-11-28T09:00:30.000Z", "emitted_at": "2026-11-28T09:00:21.000Z",
             "metric": "error_rate", "value": 0.5, "threshold": 0.3, "unit": "rate",
             "error_share": 0.6}
    state.add_alert(first)
    state.add_alert(dict(first, alert_id="b", entity="10.0.0.2",
                         emitted_at="2026-11-28T09:00:25.000Z"))
    state.add_alert(dict(first, severity="critical", emitted_at="2026-11-28T09:00:29.000Z"))
    state.add_alert({"alert_id": "c", "window_end": "not a time"})
    alerts = state.snapshot()["alerts"]
    assert [(a["alert_id"], a["severity"]) for a in alerts] == [("a", "critical"),
                                                                ("b", "warning")]
    assert alerts[0]["cause"] == "60% of the window's errors"
    assert alerts[0]["measure"] == "error_rate 50.0% > 30.0%"


def run(*flags):
    return subprocess.run([sys.executable, str(ROOT / "finale" / "dashboard.py"), *flags],
                          capture_output=True, text=True, timeout=60)


def test_bad_flags_are_one_line_and_status_2():
    for flags, message in (
            (["--port", "70000"], "--port must be in 1..65535, got 70000"),
            (["--span", "soon"], "--span must be an interval like '15 minutes', got 'soon'"),
            (["--alerts-topic", "x", "--metrics-topic", "x"],
             "--alerts-topic and --metrics-topic must differ, both are 'x'"),
            (["--port", "eighty"], "argument --port: invalid int value: 'eighty'")):
        result = run(*flags)
        assert result.returncode == 2
        assert result.stderr == f"dashboard.py: error: {message}\n"


def test_an_unreachable_broker_is_one_line_and_status_1():
    result = run("--bootstrap-servers", f"localhost:{free_port()}", "--port", str(free_port()))
    assert result.returncode == 1
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith("error: no Kafka broker answers at localhost:")
