"""Checks the alerts of a running docker compose stack against the generator's truth file.

Run inside the stack (`make compose-test` does, through the `check` service of the profile `check`):

    docker compose --profile check run --rm check

It waits for the generator's truth file (.state/truth.jsonl: the incidents it schedules), then reads
every alert of the topic `alerts` until the last incident has ended plus --settle seconds (the
analyzer alerts while a window is open: its windows and micro-batches are done by then), prints the
demo's summary (finale/generator/incidents.py: each incident, its detection latency, the alerts
matched) and exits 0 only if every incident raised an alert on its own scope and entity, and no
alert fired outside the incidents (its window overlaps none; see verdict for the alerts on another
scope during one). Exit 1 otherwise, 2 on a timeout.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from finale.common.cli import BOOTSTRAP_HELP, DEFAULT_BOOTSTRAP, OneLineErrorParser
from finale.generator.incidents import (
    AlertBook,
    match_incident,
    overlaps,
    parse_time,
    read_truth,
    summary,
)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="compose_check.py", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Every incident of the truth file alerted, and no alert outside them.")
    parser.add_argument("--bootstrap-servers", default=DEFAULT_BOOTSTRAP, help=BOOTSTRAP_HELP)
    parser.add_argument("--topic", default="alerts", help="the analyzer's alerts topic")
    parser.add_argument("--truth", type=Path, default=Path(".state/truth.jsonl"),
                        help="the generator's --truth file")
    parser.add_argument("--settle", type=float, default=45.0,
                        help="seconds after the last incident's end until the verdict")
    parser.add_argument("--timeout", type=float, default=900.0,
                        help="most seconds to wait for the truth file and the incidents")
    return parser


def during(alert: dict, raised, incident) -> bool:
    """The alert's window overlaps the incident, which had begun when the alert was raised."""
    return (overlaps(parse_time(alert["window_start"]), parse_time(alert["window_end"]), incident)
            and incident.start <= raised)


def verdict(incidents, alerts: dict[str, dict], firsts: dict[str, dict]) -> tuple[list, list, list]:
    """(incidents without an alert on their own scope and entity, alerts that no incident explains
    but that overlap one in time, alerts outside every incident); an alert counts from its first
    version's emitted_at.

    The middle group is incidents.match_incident's "no incident" narrowed to what the generator
    makes possible: outside incidents only the pairs (error-prone user, error-prone URL) fail, so an
    IP that never fails alerts during a URL incident only because it requested that URL (and a URL
    during an IP incident because that IP requested it). They are reported, not failures; an alert
    outside every incident is a false alert.
    """
    raised = {alert_id: parse_time(firsts[alert_id]["emitted_at"]) for alert_id in alerts}
    matched = {alert_id: match_incident(alert, raised[alert_id], incidents)
               for alert_id, alert in alerts.items()}
    missed = [incident for incident in incidents
              if not any(found is incident and alerts[alert_id]["entity_type"] == incident.kind
                         and (incident.kind == "global"
                              or alerts[alert_id]["entity"] == incident.entity)
                         for alert_id, found in matched.items())]
    unmatched = [alerts[alert_id] for alert_id, found in matched.items() if found is None]
    cross = [alert for alert in unmatched
             if any(during(alert, raised[alert["alert_id"]], incident) for incident in incidents)]
    return missed, cross, [alert for alert in unmatched if alert not in cross]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from kafka import KafkaConsumer, TopicPartition

    deadline = time.monotonic() + args.timeout
    while not (args.truth.exists() and read_truth(args.truth)):
        if time.monotonic() > deadline:
            print(f"compose_check.py: error: no truth file {args.truth} after {args.timeout:.0f} s",
                  file=sys.stderr)
            return 2
        time.sleep(1)
    incidents = read_truth(args.truth)
    verdict_at = max(incident.end for incident in incidents).timestamp() + args.settle
    print(f"{len(incidents)} incidents scheduled; verdict at "
          f"{datetime.fromtimestamp(verdict_at, timezone.utc):%H:%M:%S}", flush=True)
    if verdict_at - time.time() > deadline - time.monotonic():
        print("compose_check.py: error: the incidents end after --timeout", file=sys.stderr)
        return 2

    # Partitions assigned by hand and read from their beginning (as demo.py's collector does):
    # no subscription, no consumer group, nothing that could leave the consumer unassigned.
    consumer = KafkaConsumer(bootstrap_servers=args.bootstrap_servers.split(","), group_id=None,
                             enable_auto_commit=False)
    partitions = [TopicPartition(args.topic, p)
                  for p in sorted(consumer.partitions_for_topic(args.topic) or {0})]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    book, messages = AlertBook(), 0
    try:
        # Until the verdict time, then until the topic is drained (a poll that returns nothing).
        while True:
            polled = consumer.poll(timeout_ms=1000)
            for records in polled.values():
                for record in records:
                    book.add(json.loads(record.value))
                    messages += 1
            if not polled and time.time() >= verdict_at:
                break
    finally:
        consumer.close()
    missed, cross, outside = verdict(incidents, book.alerts, book.firsts)
    print(summary(incidents, book.alerts, book.firsts, book.arrivals, messages)[0])
    print(f"verdict: {len(incidents) - len(missed)}/{len(incidents)} incidents alerted, "
          f"{len(book.alerts)} alerts: {len(outside)} outside the incidents, {len(cross)} on "
          "another scope during an incident (an IP requesting a failing URL, or the reverse)",
          flush=True)
    return 0 if not missed and not outside else 1


if __name__ == "__main__":
    sys.exit(main())
