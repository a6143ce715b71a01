"""finale/tools/compose_check.py: its verdict on hand-made incidents and alerts (make
compose-test's rule), and the script on a real broker."""
import json

from finale.generator import incidents
from finale.tools import compose_check as check

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
    alerts = {a["alert_id"]: a
              for a in [alert("ip-during-url", "ip", "10.0.0.1", "00:40", "00:55")]}
    missed, cross, outside = check.verdict([URL], alerts, alerts)
    assert (missed, ids(cross), outside) == ([URL], ["ip-during-url"], [])


def test_an_alert_raised_before_its_incident_began_is_not_explained_by_it():
    # Window overlaps the URL incident, but it fired at 10:00:25, before the incident began.
    alerts = {a["alert_id"]: a for a in [alert("early", "url", "/cart/add", "00:10", "00:25")]}
    missed, cross, outside = check.verdict([URL], alerts, alerts)
    assert (missed, cross, ids(outside)) == ([URL], [], ["early"])


def test_main_reads_the_alerts_topic_and_judges_them(kafka, tmp_path, capsys):
    """The whole script on a real broker: the truth file, the alerts topic, the verdict line."""
    from datetime import datetime, timedelta, timezone

    from kafka import KafkaProducer
    from test_analyzer_pipeline import new_topics

    start = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(seconds=120)
    truth = tmp_path / "truth.jsonl"
    truth.write_text(json.dumps({"kind": "ip", "entity": "10.0.0.9", "start": start.isoformat(),
                                 "end": (start + timedelta(seconds=30)).isoformat()}) + "\n")

    def at(seconds):
        return (start + timedelta(seconds=seconds)).isoformat()

    def alert(alert_id, entity, window_start):
        return {"alert_id": alert_id, "entity_type": "ip", "entity": entity,
                "window_start": at(window_start), "window_end": at(window_start + 30),
                "emitted_at": at(window_start + 20), "severity": "critical",
                "errors": 9, "requests": 10}

    for alerts, code, verdict in [
        ([alert("a", "10.0.0.9", 0)], 0,
         "verdict: 1/1 incidents alerted, 1 alerts: 0 outside the incidents, 0 on another scope"),
        ([alert("a", "10.0.0.9", 0), alert("b", "10.0.0.2", 80)], 1,
         "verdict: 1/1 incidents alerted, 2 alerts: 1 outside the incidents, 0 on another scope"),
    ]:
        (topic,) = new_topics(kafka, "compose-check", partitions=1)
        producer = KafkaProducer(bootstrap_servers=kafka)
        for item in alerts:
            producer.send(topic, key=item["alert_id"].encode(), value=json.dumps(item).encode())
        producer.flush()
        producer.close()
        assert check.main(["--bootstrap-servers", kafka, "--topic", topic, "--truth", str(truth),
                           "--settle", "0", "--timeout", "60"]) == code
        assert verdict in capsys.readouterr().out
