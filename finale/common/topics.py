"""The project's Kafka topics and their configs: the one declaration.

finale/tools/local_kafka.py creates them on the local broker; docker-compose.yml's `topics`
service creates the same ones (tests/test_common_contracts.py fails when the two disagree); the
scripts' topic defaults are these names.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Topic:
    name: str
    partitions: int
    configs: dict[str, str] = field(default_factory=dict)
    purpose: str = ""


DAY_MS = 24 * 3600 * 1000

# One access-log line per record, key = the client address. The broker stamps each record
# (LogAppendTime): the analyzer's --max-future check compares a line's date with that clock, so
# a producer's wrong clock cannot make a far-future line look recent. Kept 7 days: the analyzer
# reads it live, and threshold_job.py --kafka learns from that week.
LOGS = Topic("http-logs", 3, {"message.timestamp.type": "LogAppendTime",
                              "retention.ms": str(7 * DAY_MS)},
             "the access-log lines, one per record")
# key = alert_id, value = the alert record (finale/common/alert.py). Compacted: an alert
# re-emitted by a later micro-batch or a replay replaces its earlier copy. And deleted after 7
# days: every window has its own alert_id, so compaction alone would keep every alert for ever.
ALERTS = Topic("alerts", 1, {"cleanup.policy": "compact,delete", "retention.ms": str(7 * DAY_MS)},
               "the alerts, one record per alert_id, 7 days")
# The lines the analyzer cannot count, unchanged, with why in the headers. Kept 14 days: a log
# format that changed on a Friday is still there to look at on Monday, and after the week off.
DEAD_LETTERS = Topic("http-logs-dlq", 1, {"retention.ms": str(14 * DAY_MS)},
                     "the lines that do not parse, with a reason header")

# key = the window, value = its traffic (finale/common/window_metrics.py), one record per window
# and micro-batch that updated it. 6 hours kept: far more than a dashboard's last 15 minutes, and
# the afternoon of an incident can still be looked at; the alerts hold what must be kept longer.
METRICS = Topic("http-metrics", 1, {"retention.ms": str(6 * 3600 * 1000)},
                "the traffic of each window (requests, errors, top offenders), kept 6 hours")

TOPICS: dict[str, Topic] = {topic.name: topic
                            for topic in (LOGS, ALERTS, DEAD_LETTERS, METRICS)}
