"""finale/generator/incidents.py and finale/analyzer/status.py: truth file, incident matching,
scoring, alert book, status file.

Pure Python (no Spark, no broker): exact expectations worked out by hand from the docstrings.
"""
import json
from datetime import datetime, timedelta, timezone

import pytest

from finale.analyzer import status
from finale.common import alert as alert_record
from finale.generator import incidents

T0 = datetime(2026, 11, 28, 9, 0, tzinfo=timezone.utc)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def iso(seconds: float) -> str:
    return at(seconds).isoformat().replace("+00:00", "Z")


def truth(number, kind, entity, start, end):
    return incidents.Truth(number, kind, entity, at(start), at(end))


IP = truth(1, "ip", "10.0.0.1", 60, 120)
URL = truth(2, "url", "/cart", 60, 120)
GLOBAL = truth(3, "global", "*", 300, 360)


def alert(entity_type, entity, start, end):
    return {"alert_id": f"{entity_type}-{entity}-{start}", "entity_type": entity_type,
            "entity": entity, "window_start": iso(start), "window_end": iso(end)}


def test_truth_file_round_trip(tmp_path):
    path = tmp_path / "truth.jsonl"
    written = (incidents.Incident("ip", "10.0.0.1", 60, 60),
               incidents.Incident("global", "*", 300, 60))
    assert incidents.write_truth(str(path), written, T0.timestamp()) is None
    assert json.loads(path.read_text().splitlines()[0]) == {
        "kind": "ip", "entity": "10.0.0.1", "start": "2026-11-28T09:01:00.000Z",
        "end": "2026-11-28T09:02:00.000Z"}
    assert incidents.read_truth(path) == [IP, truth(2, "global", "*", 300, 360)]
    assert incidents.read_truth(tmp_path / "absent.jsonl") == []
    assert incidents.write_truth(str(tmp_path / "no" / "dir.jsonl"), written, 0).startswith(
        f"error: cannot write {tmp_path / 'no' / 'dir.jsonl'}: ")


@pytest.mark.parametrize("entity_type, entity, start, end, expected", [
    ("ip", "10.0.0.1", 90, 120, True),     # inside
    ("ip", "10.0.0.1", 30, 60, False),     # ends when the incident starts: no overlap
    ("ip", "10.0.0.1", 119, 149, True),    # one second of overlap
    ("ip", "10.0.0.2", 90, 120, False),    # another IP
    ("url", "10.0.0.1", 90, 120, False),   # another scope
])
def test_on_target_is_same_scope_same_entity_overlapping_window(entity_type, entity, start, end,
                                                                expected):
    assert incidents.on_target(entity_type, entity, at(start), at(end), IP) is expected


def test_on_target_global_incident_is_entity_star():
    assert incidents.on_target("global", "*", at(330), at(360), GLOBAL)
    assert not incidents.on_target("ip", "10.0.0.1", at(330), at(360), GLOBAL)


def test_score_counts_on_target_collateral_false_and_quiet():
    fired = [
        ("ip", "10.0.0.1", at(90), at(120)),     # on target (IP)
        ("url", "/cart", at(100), at(130)),      # on target (URL)
        ("ip", "10.0.0.9", at(100), at(130)),    # in the incidents' time, other entity: collateral
        ("global", "*", at(200), at(230)),       # in no incident: false
        ("global", "*", at(330), at(360)),       # on target (global)
        ("ip", "10.0.0.7", at(600), at(630)),    # false, in the quiet phase
        ("url", "/", at(700), at(730)),          # false, in the quiet phase
    ]
    assert incidents.score(fired, [IP, URL, GLOBAL], quiet_start=at(600)) == {
        "on_target": 3, "collateral": 1, "false": 3, "quiet": 2}
    assert incidents.score([], [IP], at(600)) == {"on_target": 0, "collateral": 0, "false": 0,
                                                  "quiet": 0}


def test_match_incident_prefers_own_entity_then_global_then_any_for_a_global_alert():
    both = [IP, URL, truth(4, "global", "*", 60, 120)]
    # Its own entity (rank 3) wins over the global incident of the same time (rank 2).
    assert incidents.match_incident(alert("ip", "10.0.0.1", 90, 120), at(121), both) is IP
    # Another IP in that time: explained by the global incident only.
    assert incidents.match_incident(alert("ip", "10.0.0.9", 90, 120), at(121), both) is both[2]
    # Without a global incident, another IP is a false positive; a global alert is explained by
    # any incident of its time (one failing IP raises the global rate): the first one listed.
    assert incidents.match_incident(alert("ip", "10.0.0.9", 90, 120), at(121), [IP, URL]) is None
    assert incidents.match_incident(alert("global", "*", 90, 120), at(121), [IP, URL]) is IP


def test_match_incident_needs_the_incident_begun_when_raised_and_a_window():
    # Window overlaps but the alert was raised before the incident began: not explained by it.
    assert incidents.match_incident(alert("ip", "10.0.0.1", 50, 80), at(59), [IP]) is None
    assert incidents.match_incident(alert("ip", "10.0.0.1", 50, 80), at(60), [IP]) is IP
    assert incidents.match_incident(alert("ip", "10.0.0.1", 0, 60), at(90), [IP]) is None
    assert incidents.match_incident({"entity_type": "ip", "entity": "10.0.0.1"}, at(90),
                                    [IP]) is None


def test_alert_book_keeps_latest_first_version_and_arrival():
    book = incidents.AlertBook()
    first = {**alert("ip", "10.0.0.1", 90, 120), "errors": 3, "emitted_at": iso(121)}
    again = {**first, "emitted_at": iso(126)}                 # re-emitted, same content
    grown = {**first, "errors": 5, "emitted_at": iso(131)}
    assert [book.add(a) for a in (first, again, grown)] == [True, False, True]
    assert book.alerts == {first["alert_id"]: grown}
    assert book.firsts == {first["alert_id"]: first}
    assert list(book.arrivals) == [first["alert_id"]]
    assert alert_record.clock(iso(121)) == "09:02:01" and alert_record.clock(None) == "-"


def test_status_file_counts_per_query_and_totals(tmp_path):
    path = tmp_path / "status" / "analyzer.json"
    status_file = status.StatusFile(path)
    status_file.update("alerts", batch_id=0, rows_read=10, rows_read_total=10, active=True)
    status_file.update("alerts", batch_id=1, rows_read=0, rows_read_total=0, active=True)
    status_file.update("dead-letters", batch_id=0, dead_letters=2, dead_letters_total=2)
    document = status.read_status(path)
    assert document["pid"] > 0
    alerts = document["queries"]["alerts"]
    assert {key: alerts[key] for key in ("name", "batch_id", "rows_read", "rows_read_total")} == {
        "name": "alerts", "batch_id": 1, "rows_read": 0, "rows_read_total": 10}
    assert document["queries"]["dead-letters"]["dead_letters_total"] == 2
    assert document["updated_at"] == document["queries"]["dead-letters"]["updated_at"]
    assert [p.name for p in path.parent.iterdir()] == ["analyzer.json"]   # no temporary left
    assert status.read_status(tmp_path / "absent.json") == {}


def test_a_surge_incident_is_detected_by_the_surge_rule_on_its_ip():
    surge = truth(4, "surge", "10.0.0.5", 60, 120)
    assert incidents.on_target("ip", "10.0.0.5", at(90), at(120), surge, "surge")
    assert incidents.on_target("ip", "10.0.0.5", at(90), at(120), surge)        # rule not given
    assert not incidents.on_target("ip", "10.0.0.5", at(90), at(120), surge, "error_rate")
    assert not incidents.on_target("ip", "10.0.0.1", at(90), at(120), IP, "surge")
    assert incidents.score([("ip", "10.0.0.5", at(90), at(120), "surge"),
                            ("ip", "10.0.0.5", at(90), at(120), "error_rate"),
                            ("ip", "10.0.0.5", at(200), at(230), "surge")], [surge], at(600)) == {
        "on_target": 1, "collateral": 1, "false": 1, "quiet": 0}
    surge_alert = {**alert("ip", "10.0.0.5", 90, 120), "rule": "surge"}
    assert incidents.match_incident(surge_alert, at(121), [IP, surge]) is surge
    # An error_rate alert (no rule field: an old alert) on the surging IP is not explained by it.
    assert incidents.match_incident(alert("ip", "10.0.0.5", 90, 120), at(121), [surge]) is None
    assert incidents.incident_spec("surge=10.0.0.5@60+60") == ("surge", "10.0.0.5", 60.0, 60.0)


def test_backlog_is_latest_minus_end_offsets_summed_over_partitions():
    from types import SimpleNamespace

    source = SimpleNamespace(
        latestOffset=json.dumps({"http-logs": {"0": 1500, "1": 900, "2": 700}}),
        endOffset=json.dumps({"http-logs": {"0": 1200, "1": 900, "2": 650}}))
    assert status.backlog([source]) == 300 + 0 + 50
    # A batch re-planned from the offset log after a restart carries no latest offsets.
    assert status.backlog([SimpleNamespace(latestOffset=None, endOffset=source.endOffset)]) is None
    assert status.backlog([]) == 0
