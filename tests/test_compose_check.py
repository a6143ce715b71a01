"""finale/compose_check.py's verdict on hand-made incidents and alerts (make compose-test's rule)."""
from conftest import load_module

check = load_module("finale", "compose_check")
incidents = load_module("finale", "incidents")

URL = incidents.Truth(1, "url", "/cart/add", incidents.parse_time("2026-12-02T10:00:30Z"),
                      incidents.parse_time("2026-12-02T10:01:00Z"))
IP = incidents.Truth(2, "ip", "10.0.0.9", incidents.parse_time("2026-12-02T10:03:00Z"),
                     incidents.parse_time("2026-12-02T10:03:30Z"))


def alert(alert_id, entity_type, entity, window_start, emitted_at):
    """A 30 s window starting at minute:second `window_start` of 10:00, emitted at `emitted_at`."""
    start = incidents.parse_time(f"2026-12-02T10:{window_start}Z")
    end = start.replace(minute=start.minute + (start.second + 30) // 60,
                        second=(start.second + 30) % 60)
    return {"alert_id": alert_id, "entity_type": entity_type, "entity": entity,
            "window_start": start.isoformat(), "window_end": end.isoformat(),
            "emitted_at": f"2026-12-02T10:{emitted_at}Z"}


def ids(alerts):
    return [a["alert_id"] for a in alerts]


def test_exact_cross_scope_and_outside_alerts():
    alerts = {a["alert_id"]: a for a in [
        alert("url-exact", "url", "/cart/add", "00:30", "00:45"),
        alert("ip-during-url", "ip", "10.0.0.1", "00:40", "00:55"),   # requested /cart/add
        alert("ip-exact", "ip", "10.0.0.9", "03:00", "03:15"),
        alert("ip-after-all", "ip", "10.0.0.2", "02:00", "02:20"),     # overlaps no incident
    ]}
    missed, cross, outside = check.verdict([URL, IP], alerts, alerts)
    assert (missed, ids(cross), ids(outside)) == ([], ["ip-during-url"], ["ip-after-all"])


def test_an_incident_alerted_only_on_another_scope_is_missed():
    alerts = {a["alert_id"]: a for a in [alert("ip-during-url", "ip", "10.0.0.1", "00:40", "00:55")]}
    missed, cross, outside = check.verdict([URL], alerts, alerts)
    assert (missed, ids(cross), outside) == ([URL], ["ip-during-url"], [])


def test_an_alert_raised_before_its_incident_began_is_not_explained_by_it():
    # Window overlaps the URL incident, but it fired at 10:00:25, before the incident began.
    alerts = {a["alert_id"]: a for a in [alert("early", "url", "/cart/add", "00:10", "00:25")]}
    missed, cross, outside = check.verdict([URL], alerts, alerts)
    assert (missed, cross, ids(outside)) == ([URL], [], ["early"])
