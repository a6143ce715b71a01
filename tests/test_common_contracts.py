"""The contracts declared once in finale/common/ hold wherever they are used: the topics that
docker-compose.yml creates are finale/common/topics.py's, and every writer and reader of an alert
uses the one record of finale/common/alert.py."""
import json
import shlex
from datetime import datetime

import yaml
from conftest import ROOT

from finale.analyzer import sinks
from finale.common import alert
from finale.common.topics import TOPICS
from finale.tools import alert_viewer

SURGE = {"alert_id": "id-1", "rule": "surge", "entity_type": "ip", "entity": "10.0.0.7",
         "window_start": "2026-11-28T09:00:00.000Z", "window_end": "2026-11-28T09:00:30.000Z",
         "requests": 120, "errors": 0, "error_rate": 0.0, "threshold": 25.3,
         "thresholds_version": "v1", "severity": "critical", "error_share": None,
         "top_entities": None, "metric": "requests", "value": 120.0, "unit": "count",
         "emitted_at": "2026-11-28T09:00:31.250Z"}


def compose_topics() -> dict[str, tuple[int, dict[str, str]]]:
    """The topics docker-compose.yml's one-shot `topics` service creates: name -> (partitions,
    configs), read from its kafka-topics.sh command lines."""
    service = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["topics"]
    script = "\n".join(service["command"])
    created = {}
    for line in script.splitlines():
        words = shlex.split(line)
        if "--topic" not in words:
            continue
        name = words[words.index("--topic") + 1]
        partitions = int(words[words.index("--partitions") + 1])
        configs = dict(words[i + 1].split("=", 1) for i, word in enumerate(words)
                       if word == "--config")
        created[name] = (partitions, configs)
    return created


def test_compose_creates_the_declared_topics_with_their_configs():
    assert compose_topics() == {name: (topic.partitions, topic.configs)
                                for name, topic in TOPICS.items()}


def test_the_kafka_sink_writes_the_one_alert_record(spark):
    frame = spark.createDataFrame([(*[SURGE[name] for name in alert.COLUMNS[:4]],
                                    datetime(2026, 11, 28, 9, 0, 0),
                                    datetime(2026, 11, 28, 9, 0, 30),
                                    *[SURGE[name] for name in alert.COLUMNS[6:]])], alert.DDL)
    [record] = sinks.alert_records(frame).collect()
    assert record.key == "id-1"
    # Every field, in the record's order; null cause fields are left out by to_json.
    value = json.loads(record.value)
    assert list(value) == [name for name in alert.COLUMNS if SURGE[name] is not None]
    assert {**value, "error_share": None, "top_entities": None} == SURGE


def test_the_viewer_reads_and_shows_the_one_alert_record():
    class Record:
        topic, partition, offset, key = "alerts", 0, 7, b"id-1"
        value = json.dumps(SURGE).encode()

    assert alert_viewer.decode(Record) == SURGE
    header, row = alert_viewer.render_table([SURGE]).splitlines()
    assert header.split() == ["EMITTED", "SEVERITY", "RULE", "SCOPE", "ENTITY", "WINDOW", "(UTC)",
                              "REQUESTS", "ERRORS", "VALUE", "THRESHOLD"]
    assert row.split() == ["09:00:31", "critical", "surge", "ip", "10.0.0.7",
                           "09:00:00-09:00:30", "120", "0", "120", "25.3"]


def test_one_line_summary_of_an_alert_in_its_rules_unit():
    assert alert.summary(SURGE) == ("critical surge      ip     10.0.0.7               window "
                                    "09:00:00-09:00:30 requests 120 > 25.3 (0/120 errors)")
    rate = dict(SURGE, rule="error_rate", metric="error_rate", value=0.571, threshold=0.3,
                unit="rate")
    assert alert.measure(rate) == "error_rate 57.1% > 30.0%"
    assert alert.number(None, "rate") == "-" and alert.number(True, "count") == "-"


def test_decode_takes_the_id_from_the_key_and_refuses_what_is_not_an_alert():
    without_id = {name: value for name, value in SURGE.items() if name != "alert_id"}
    assert alert.decode(json.dumps(without_id), b"from-key")["alert_id"] == "from-key"
    assert alert.decode(json.dumps(without_id)) is None
    assert alert.decode(b"not json") is None and alert.decode(b"[1, 2]") is None
