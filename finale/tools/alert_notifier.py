"""Page people: the alerts topic -> Alertmanager's v2 API, which routes them (webhook, e-mail,
Slack, PagerDuty...), deduplicates, groups, silences and inhibits them.

    python finale/alert_notifier.py --alertmanager-url http://127.0.0.1:9093
    python finale/alert_notifier.py --alertmanager-url URL --metrics-port 9109   # + /metrics

It reads the `alerts` topic (finale/common/alert.py's record) in its own consumer group and posts
each polled batch to `URL/api/v2/alerts` as Alertmanager alerts:
- labels: alertname (the rule), severity, scope, entity, service="chaussettes": what fired and
  where. Alertmanager identifies an alert by its labels, so the successive windows of one incident
  and every re-emission of one window are one Alertmanager alert, notified once;
- annotations: summary, cause, window, counts, metric, value, threshold, thresholds_version;
- startsAt = the window start; endsAt = the later of the window end and the analyzer's emission
  time, plus --resolve-timeout: each new firing window pushes endsAt forward, and once the windows
  stop firing the alert resolves by itself.
Within a batch the versions of one label set are merged into one post (earliest start, latest
end, annotations of the latest window), so an update is never posted as a new alert.

Offsets are committed only after Alertmanager answered 2xx; on any failure the same batch is
posted again with a growing backoff (capped at --max-backoff), so an Alertmanager outage delays
the pages but loses none. Re-posting is harmless: Alertmanager merges alerts with equal labels.

`--metrics-port` serves Prometheus metrics (docs/monitoring.md): alerts posted, failed posts,
records read and skipped, and the lag (records of the topic not yet posted).
One log line per post on stdout; bad flags are one line and exit status 2.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from finale.common import alert
from finale.common.cli import (
    BOOTSTRAP_HELP,
    DEFAULT_BOOTSTRAP,
    HelpFormatter,
    OneLineErrorParser,
    duration_seconds,
)
from finale.common.topics import ALERTS

SERVICE = "chaussettes"
DEFAULT_GROUP = "chaussettes-alert-notifier"
DEFAULT_ALERTMANAGER = os.environ.get("ALERTMANAGER_URL", "http://127.0.0.1:9093")
API_PATH = "/api/v2/alerts"


def _time(value) -> datetime | None:
    """An alert record's ISO 8601 UTC text ('2026-11-28T09:00:00.000Z') as a datetime, or None."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def labels(record: dict) -> dict[str, str]:
    """What fired and where: Alertmanager's identity of an alert."""
    return {"alertname": str(record.get("rule") or "unknown"),
            "severity": str(record.get("severity") or "warning"),
            "scope": str(record.get("entity_type") or "-"),
            "entity": str(record.get("entity") or "-"),
            "service": SERVICE}


def annotations(record: dict) -> dict[str, str]:
    unit = record.get("unit")
    return {
        "summary": " ".join(alert.summary(record).split()),  # without the table's padding
        "cause": alert.cause(record) or "-",
        "window": f"{record.get('window_start')} - {record.get('window_end')}",
        "counts": f"{record.get('errors')} errors / {record.get('requests')} requests",
        "metric": str(record.get("metric") or "-"),
        "value": alert.number(record.get("value"), unit),
        "threshold": alert.number(record.get("threshold"), unit),
        "thresholds_version": str(record.get("thresholds_version") or "-"),
        "alert_id": str(record.get("alert_id")),
    }


def to_alertmanager(records: list[dict], resolve_timeout_s: float) -> list[dict]:
    """Alert records -> Alertmanager v2 alerts, one per label set (see the module docstring)."""
    merged: dict[tuple, dict] = {}
    for record in records:
        start = _time(record.get("window_start"))
        end = max(filter(None, (_time(record.get("window_end")),
                                _time(record.get("emitted_at")))), default=None)
        if start is None or end is None:
            continue
        ends = end + timedelta(seconds=resolve_timeout_s)
        key = tuple(sorted(labels(record).items()))
        seen = merged.get(key)
        if seen is None:
            merged[key] = {"start": start, "ends": ends, "latest": record}
            continue
        seen["start"] = min(seen["start"], start)
        seen["ends"] = max(seen["ends"], ends)
        if (str(record.get("window_start")), str(record.get("emitted_at"))) >= (
                str(seen["latest"].get("window_start")), str(seen["latest"].get("emitted_at"))):
            seen["latest"] = record
    return [{"labels": dict(key), "annotations": annotations(entry["latest"]),
             "startsAt": _iso(entry["start"]), "endsAt": _iso(entry["ends"])}
            for key, entry in merged.items()]


class PostError(Exception):
    """Alertmanager did not accept a post: one line saying why."""


def post(base_url: str, alerts: list[dict], timeout_s: float = 10.0) -> None:
    """POST the alerts to Alertmanager; PostError unless it answers 2xx."""
    request = urllib.request.Request(
        base_url.rstrip("/") + API_PATH, data=json.dumps(alerts).encode(), method="POST",
        headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as answer:
            if not 200 <= answer.status < 300:
                raise PostError(f"HTTP {answer.status}")
    except urllib.error.HTTPError as error:
        body = error.read(200).decode("utf-8", "replace").strip().splitlines()
        raise PostError(f"HTTP {error.code}{': ' + body[0] if body else ''}") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise PostError(f"{type(reason).__name__}: {reason}") from None


class Metrics:
    """The notifier's Prometheus metrics (prometheus-client), in their own registry."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge

        self.registry = CollectorRegistry()
        prefix = "chaussettes_notifier_"
        self.records = Counter(prefix + "records", "alert records read from the alerts topic",
                               registry=self.registry)
        self.skipped = Counter(prefix + "records_skipped",
                               "records that are not a JSON alert (not posted)",
                               registry=self.registry)
        self.posted = Counter(prefix + "alerts_posted",
                              "Alertmanager alerts accepted (one per label set and batch)",
                              registry=self.registry)
        self.failed = Counter(prefix + "post_failures",
                              "posts Alertmanager did not accept (each retried)",
                              registry=self.registry)
        self.lag = Gauge(prefix + "lag_records",
                         "records of the alerts topic not yet accepted by Alertmanager",
                         registry=self.registry)
        self.last_post = Gauge(prefix + "last_post_timestamp_seconds",
                               "when Alertmanager last accepted a post (Unix time)",
                               registry=self.registry)

    def serve(self, port: int, host: str) -> None:
        from prometheus_client import start_http_server

        start_http_server(port, addr=host, registry=self.registry)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = OneLineErrorParser(
        prog="alert_notifier.py",
        description="Post the alerts of topic `alerts` to Alertmanager (v2 API).",
        formatter_class=HelpFormatter)
    add = parser.add_argument
    add("--alertmanager-url", default=DEFAULT_ALERTMANAGER,
        help="Alertmanager's base URL (env ALERTMANAGER_URL)")
    add("--bootstrap-servers", default=DEFAULT_BOOTSTRAP, help=BOOTSTRAP_HELP)
    add("--alerts-topic", default=ALERTS.name, help="topic to read the alerts from")
    add("--group-id", default=DEFAULT_GROUP,
        help="consumer group: its committed offsets say which alerts were posted")
    add("--from-beginning", action="store_true",
        help="a group without committed offsets starts at the topic's start (default: its end)")
    add("--resolve-timeout", default="2 minutes",
        help="an alert resolves this long after its last firing window's end (Spark interval)")
    add("--max-backoff", type=float, default=30.0,
        help="longest wait in seconds between two attempts of a failed post")
    add("--metrics-port", type=int, default=None,
        help="serve Prometheus metrics on this port (default: none)")
    add("--metrics-host", default="127.0.0.1",
        help="interface of --metrics-port (0.0.0.0 in a container)")
    add("--timeout", type=float, default=None,
        help="stop after this many seconds (default: never)")
    args = parser.parse_args(argv)
    try:
        args.resolve_timeout_s = duration_seconds(args.resolve_timeout)
    except ValueError:
        parser.error(f"--resolve-timeout must be a Spark interval like '2 minutes', "
                     f"got {args.resolve_timeout!r}")
    if not args.alertmanager_url.startswith(("http://", "https://")):
        parser.error(f"--alertmanager-url must start with http:// or https://, "
                     f"got {args.alertmanager_url!r}")
    if args.max_backoff <= 0:
        parser.error(f"--max-backoff must be > 0, got {args.max_backoff}")
    if args.metrics_port is not None and not 0 < args.metrics_port < 65536:
        parser.error(f"--metrics-port must be in 1..65535, got {args.metrics_port}")
    if args.timeout is not None and args.timeout <= 0:
        parser.error(f"--timeout must be > 0, got {args.timeout}")
    return args


def log(message: str) -> None:
    print(f"{datetime.now(timezone.utc):%H:%M:%S} {message}", flush=True)


class Notifier:
    """The poll -> post (retried) -> commit loop, on an open consumer."""

    def __init__(self, args: argparse.Namespace, consumer, metrics: Metrics,
                 stop: threading.Event, log: Callable[[str], None] = log):
        self.args, self.consumer, self.metrics, self.stop, self.log = (
            args, consumer, metrics, stop, log)
        self.pending: dict = {}  # partition -> first offset of the batch not yet committed

    def update_lag(self) -> None:
        try:
            assigned = self.consumer.assignment()
            if not assigned:
                return
            ends = self.consumer.end_offsets(list(assigned))
            # A batch polled but not yet accepted by Alertmanager is still to be posted: from
            # its first offset, not from the consumer's position.
            self.metrics.lag.set(sum(
                max(0, ends[tp] - self.pending.get(tp, self.consumer.position(tp)))
                for tp in assigned))
        except Exception:  # noqa: BLE001 - a lag we cannot read now is read at the next poll
            pass

    def deliver(self, alerts: list[dict]) -> bool:
        """Post until Alertmanager accepts (True) or we are asked to stop (False)."""
        backoff, failures, said = 0.5, 0, None
        while not self.stop.is_set():
            try:
                post(self.args.alertmanager_url, alerts)
            except PostError as error:
                self.metrics.failed.inc()
                failures += 1
                # One line when it starts failing or the error changes, then one a minute.
                if said is None or str(error) != said[0] or time.monotonic() - said[1] >= 60:
                    self.log(f"warning: Alertmanager at {self.args.alertmanager_url} did not "
                             f"accept {len(alerts)} alert(s) ({error}); retrying (backoff up to "
                             f"{self.args.max_backoff:g} s), offsets not committed")
                    said = (str(error), time.monotonic())
                self.update_lag()
                self.stop.wait(backoff)
                backoff = min(backoff * 2, self.args.max_backoff)
                continue
            if failures:
                self.log(f"Alertmanager accepted the alert(s) after {failures} failed attempt(s)")
            self.metrics.posted.inc(len(alerts))
            self.metrics.last_post.set_to_current_time()
            return True
        return False

    def step(self) -> None:
        from kafka import TopicPartition
        from kafka.errors import CommitFailedError

        batches = self.consumer.poll(timeout_ms=500, max_records=500)
        records = [record for partition in batches.values() for record in partition]
        if records:
            decoded = []
            for record in records:
                self.metrics.records.inc()
                value = alert.decode(record.value, record.key)
                if value is None:
                    self.metrics.skipped.inc()
                    self.log(f"warning: skipped a record that is not a JSON alert at "
                             f"{record.topic}/{record.partition}@{record.offset}")
                else:
                    decoded.append(value)
            payload = to_alertmanager(decoded, self.args.resolve_timeout_s)
            for record in reversed(records):
                self.pending[TopicPartition(record.topic, record.partition)] = record.offset
            if payload and not self.deliver(payload):
                return  # stopping: nothing committed, the next start posts the batch again
            try:
                self.consumer.commit()
                self.pending.clear()
            except CommitFailedError as error:
                # The group rebalanced meanwhile: the batch is read and posted again (harmless).
                self.pending.clear()
                self.log(f"warning: offsets not committed ({error}); the batch will be re-posted")
            if payload:
                names = ", ".join(f"{a['labels']['alertname']} {a['labels']['scope']} "
                                  f"{a['labels']['entity']}" for a in payload[:5])
                more = f" (+{len(payload) - 5})" if len(payload) > 5 else ""
                self.log(f"posted {len(payload)} alert(s) from {len(records)} record(s): "
                         f"{names}{more}")
        self.update_lag()

    def run(self) -> None:
        deadline = None if self.args.timeout is None else time.monotonic() + self.args.timeout
        while not self.stop.is_set():
            if deadline is not None and time.monotonic() >= deadline:
                break
            self.step()


def open_consumer(args: argparse.Namespace):
    from kafka import KafkaConsumer

    return KafkaConsumer(
        args.alerts_topic,
        bootstrap_servers=args.bootstrap_servers.split(","),
        group_id=args.group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest" if args.from_beginning else "latest",
        client_id="chaussettes-alert-notifier",
        # A long Alertmanager outage keeps one batch in retries: the group must not evict us.
        max_poll_interval_ms=3_600_000,
        bootstrap_timeout_ms=5_000,
    )


def main(argv: list[str] | None = None) -> int:
    import signal

    args = parse_args(argv)
    from kafka.errors import KafkaError

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    metrics = Metrics()
    if args.metrics_port is not None:
        try:
            metrics.serve(args.metrics_port, args.metrics_host)
        except OSError as error:
            print(f"error: cannot serve metrics on {args.metrics_host}:{args.metrics_port}: "
                  f"{error.strerror or error}", file=sys.stderr)
            return 1
    try:
        consumer = open_consumer(args)
    except KafkaError:
        print(f"error: no Kafka broker answers at {args.bootstrap_servers} "
              "(start one: python finale/local_kafka.py start)", file=sys.stderr)
        return 1
    metrics_note = ("" if args.metrics_port is None
                    else f", metrics on http://{args.metrics_host}:{args.metrics_port}/metrics")
    log(f"notifier started: {args.alerts_topic} on {args.bootstrap_servers} (group "
        f"{args.group_id}) -> {args.alertmanager_url}{API_PATH}, resolve timeout "
        f"{args.resolve_timeout}{metrics_note}")
    try:
        Notifier(args, consumer, metrics, stop).run()
    except KafkaError as error:
        print(f"error: Kafka at {args.bootstrap_servers}: {type(error).__name__}: {error}",
              file=sys.stderr)
        return 1
    finally:
        consumer.close(autocommit=False)
    log("notifier stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
