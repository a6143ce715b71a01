"""finale/tools/alert_notifier.py: the alerts topic -> a REAL Alertmanager -> the test's webhook.

Real components only: Debian's prometheus-alertmanager on 127.0.0.1 (a free port, its own config
and storage in tmp_path), routing to a tiny http.server of the test; the local broker (`kafka`
fixture) with test-specific topics; the notifier and the analyzer as subprocesses. Alerts are
either records built with finale/common/alert.py's fields, or the real analyzer's, from the real
generator's injected incidents (the end-to-end test, which also measures the latencies).
"""
from __future__ import annotations

import json
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import ROOT, free_port, wait_for
from kafka import KafkaAdminClient, KafkaProducer
from test_analyzer_exporter import LiveAnalyzer, scrape
from test_analyzer_pipeline import new_topics

from finale.common import alert
from finale.tools import alert_notifier

ALERTMANAGER = "/usr/bin/prometheus-alertmanager"
INSTALL = "apt-get install -y prometheus-alertmanager"
needs_alertmanager = pytest.mark.skipif(
    shutil.which(ALERTMANAGER) is None, reason=f"Alertmanager missing: {INSTALL}")
# Alertmanager's own timers, short for tests; repeat_interval long: a second notification of the
# same firing alert within a test is a duplicate, never a repeat.
ROUTE = {"group_by": ["alertname", "scope", "entity"], "group_wait": "1s",
         "group_interval": "2s", "repeat_interval": "1h"}


def iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


class Webhook:
    """An http.server receiving Alertmanager's webhook notifications, each kept with its arrival
    time (time.time())."""

    def __init__(self, keep: Path | None = None):
        self.notifications: list[tuple[float, dict]] = []
        received = self.notifications

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append((time.time(), json.loads(body)))
                if keep is not None:  # for a person reading the test's folder afterwards
                    with open(keep, "ab") as out:
                        out.write(body.rstrip() + b"\n")
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def alerts(self, status: str | None = None) -> list[tuple[float, dict]]:
        """(arrival, alert) of every alert of every notification, optionally of one status."""
        return [(at, a) for at, note in self.notifications for a in note["alerts"]
                if status is None or a["status"] == status]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class Alertmanager:
    """The real Alertmanager on 127.0.0.1:port, config and storage in `folder`; stop()/start()
    keep the port, as an outage and a restart of the same server do."""

    def __init__(self, folder: Path, webhook_url: str):
        self.folder, self.port = folder, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {"route": {"receiver": "test", **ROUTE},
                  "receivers": [{"name": "test", "webhook_configs": [
                      {"url": webhook_url, "send_resolved": True}]}]}
        self.config = folder / "alertmanager.yml"
        self.config.write_text(json.dumps(config))  # YAML is a superset of JSON
        self.process = None

    def start(self):
        self.log = open(self.folder / "alertmanager.log", "ab")  # noqa: SIM115 - closed in stop
        self.process = subprocess.Popen(
            [ALERTMANAGER, f"--config.file={self.config}",
             f"--storage.path={self.folder / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address="],
            stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(self.ready, 30, "Alertmanager ready", interval=0.2)

    def ready(self) -> bool:
        import urllib.request
        try:
            with urllib.request.urlopen(self.url + "/-/ready", timeout=1) as answer:
                return answer.status == 200
        except OSError:
            assert self.process.poll() is None, (self.folder / "alertmanager.log").read_text()
            return False

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=20)
        self.log.close()


@pytest.fixture
def webhook(tmp_path):
    hook = Webhook(tmp_path / "webhook.jsonl")
    yield hook
    hook.close()


@pytest.fixture
def alertmanager(tmp_path, webhook):
    manager = Alertmanager(tmp_path, webhook.url)
    manager.start()
    yield manager
    manager.stop()


def start_notifier(kafka, topic, manager_url, folder: Path, *flags) -> tuple[subprocess.Popen, int]:
    """The notifier (a subprocess, its own consumer group) and its metrics port."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "finale" / "alert_notifier.py"),
         "--bootstrap-servers", kafka, "--alerts-topic", topic,
         "--alertmanager-url", manager_url, "--group-id", f"notifier-{topic}",
         "--from-beginning", "--max-backoff", "2", "--metrics-port", str(port), *flags],
        stdout=open(folder / "notifier.log", "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115

    def serving() -> bool:
        assert process.poll() is None, (folder / "notifier.log").read_text()
        try:
            return "chaussettes_notifier_records_total" in scrape(port)
        except OSError:
            return False

    wait_for(serving, 30, "the notifier's /metrics", interval=0.2)
    return process, port


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def record(ip: str, window_start: datetime, window: int = 30, **fields) -> dict:
    """An ip error_rate alert record with every field of finale/common/alert.py."""
    start, end = iso(window_start), iso(window_start + timedelta(seconds=window))
    values = {"rule": "error_rate", "entity_type": "ip", "entity": ip, "window_start": start,
              "window_end": end, "requests": 20, "errors": 18, "error_rate": 0.9,
              "threshold": 0.3, "thresholds_version": "test-v1", "severity": "critical",
              "error_share": 0.75, "top_entities": None, "metric": "error_rate", "value": 0.9,
              "unit": "rate", "emitted_at": iso(datetime.now(timezone.utc)), **fields}
    values["alert_id"] = f"{values['rule']}|ip|{ip}|{start}"
    return {name: values.get(name) for name in alert.COLUMNS}


def produce(kafka, topic, records: list[dict]) -> None:
    producer = KafkaProducer(bootstrap_servers=kafka)
    try:
        for value in records:
            producer.send(topic, key=value["alert_id"].encode(), value=json.dumps(value).encode())
        producer.flush()
    finally:
        producer.close()


def committed(kafka, group: str) -> int:
    admin = KafkaAdminClient(bootstrap_servers=kafka, client_id="test-notifier")
    try:
        offsets = admin.list_group_offsets(group).get(group, {})
    finally:
        admin.close()
    return sum(meta.offset for meta in offsets.values() if meta.offset >= 0)


def test_records_become_alertmanager_alerts_one_per_label_set():
    """Pure: labels, annotations, startsAt/endsAt, and the merge of the versions of a batch."""
    t0 = datetime(2026, 11, 28, 9, 0, tzinfo=timezone.utc)
    first = record("10.0.0.9", t0, emitted_at="2026-11-28T09:00:12.000Z")
    later = record("10.0.0.9", t0 + timedelta(seconds=10), errors=25, requests=27,
                   emitted_at="2026-11-28T09:00:21.000Z")
    other = record("10.0.0.7", t0, severity="warning", error_share=None)
    posted = alert_notifier.to_alertmanager([later, first, other, {"rule": "no window"}], 60)
    assert posted == [
        {"labels": {"alertname": "error_rate", "severity": "critical", "scope": "ip",
                    "entity": "10.0.0.9", "service": "chaussettes"},
         "annotations": {
             "summary": " ".join(alert.summary(later).split()),
             "cause": "75% of the window's errors",
             "window": "2026-11-28T09:00:10.000Z - 2026-11-28T09:00:40.000Z",
             "counts": "25 errors / 27 requests", "metric": "error_rate", "value": "90.0%",
             "threshold": "30.0%", "thresholds_version": "test-v1",
             "alert_id": later["alert_id"]},
         # The earliest window's start; the latest window's end + 60 s.
         "startsAt": "2026-11-28T09:00:00.000Z", "endsAt": "2026-11-28T09:01:40.000Z"},
        {"labels": {"alertname": "error_rate", "severity": "warning", "scope": "ip",
                    "entity": "10.0.0.7", "service": "chaussettes"},
         "annotations": {**alert_notifier.annotations(other), "cause": "-"},
         "startsAt": "2026-11-28T09:00:00.000Z",
         "endsAt": iso(max(t0 + timedelta(seconds=30),
                           datetime.fromisoformat(other["emitted_at"].replace("Z", "+00:00")))
                       + timedelta(seconds=60))},
    ]


def test_bad_flags_are_one_line_errors():
    for flags, message in (
            (["--resolve-timeout", "soon"], "--resolve-timeout must be a Spark interval"),
            (["--alertmanager-url", "127.0.0.1:9093"], "must start with http:// or https://"),
            (["--metrics-port", "0"], "--metrics-port must be in 1..65535")):
        done = subprocess.run([sys.executable, str(ROOT / "finale" / "alert_notifier.py"), *flags],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 2
        assert done.stderr.count("\n") == 1 and message in done.stderr, done.stderr


@needs_alertmanager
@pytest.mark.slow
def test_one_notification_per_incident_then_resolved_and_never_twice(
        kafka, tmp_path, alertmanager, webhook):
    (topic,) = new_topics(kafka, "alerts", partitions=1)
    notifier, port = start_notifier(kafka, topic, alertmanager.url, tmp_path,
                                    "--resolve-timeout", "3 seconds")
    try:
        now = datetime.now(timezone.utc)
        # Three versions of one window (update mode) and the next window: one incident.
        versions = [record("10.0.0.9", now - timedelta(seconds=20), requests=n, errors=n - 2)
                    for n in (10, 14, 20)]
        produce(kafka, topic, versions)
        firing = wait_for(lambda: webhook.alerts("firing"), 30, "the firing notification")
        produce(kafka, topic, [record("10.0.0.9", now - timedelta(seconds=10))])
        labels = firing[0][1]["labels"]
        assert labels == {"alertname": "error_rate", "severity": "critical", "scope": "ip",
                          "entity": "10.0.0.9", "service": "chaussettes"}
        assert firing[0][1]["annotations"]["cause"] == "75% of the window's errors"
        # The version Alertmanager had when its group_wait ended: the notifier may have polled
        # the first version alone.
        assert firing[0][1]["annotations"]["counts"] in (
            "8 errors / 10 requests", "12 errors / 14 requests", "18 errors / 20 requests")
        # endsAt = the last window's end (now + 20 s) + 3 s: resolved by Alertmanager afterwards.
        resolved = wait_for(lambda: webhook.alerts("resolved"), 60, "the resolved notification")
        assert resolved[0][1]["labels"] == labels
        assert resolved[0][0] >= (now + timedelta(seconds=23)).timestamp()
        wait_for(lambda: committed(kafka, f"notifier-{topic}") == 4, 20, "offsets committed")
        # Nothing notified twice: one firing, one resolved notification for the incident.
        assert [a["status"] for _, a in webhook.alerts()] == ["firing", "resolved"]
        metrics = scrape(port)
        assert metrics["chaussettes_notifier_records_total"] == 4
        assert metrics["chaussettes_notifier_post_failures_total"] == 0
        assert metrics["chaussettes_notifier_lag_records"] == 0
        assert metrics["chaussettes_notifier_alerts_posted_total"] >= 2
    finally:
        stop(notifier)


@needs_alertmanager
@pytest.mark.slow
def test_an_alertmanager_outage_delays_the_notification_and_loses_nothing(
        kafka, tmp_path, alertmanager, webhook):
    (topic,) = new_topics(kafka, "alerts", partitions=1)
    notifier, port = start_notifier(kafka, topic, alertmanager.url, tmp_path)
    try:
        alertmanager.stop()
        down_at = time.time()
        produce(kafka, topic, [record("10.0.0.5", datetime.now(timezone.utc))])
        wait_for(lambda: scrape(port)["chaussettes_notifier_post_failures_total"] >= 2, 20,
                 "failed posts while Alertmanager is down")
        # Nothing committed while Alertmanager cannot take the alert: it is still to be posted.
        assert committed(kafka, f"notifier-{topic}") == 0
        wait_for(lambda: scrape(port)["chaussettes_notifier_lag_records"] == 1, 10,
                 "a lag of 1 record during the outage")
        while time.time() < down_at + 20:  # the outage lasts 20 s
            assert notifier.poll() is None
            time.sleep(0.5)
        assert webhook.notifications == []
        alertmanager.start()
        up_at = time.time()
        firing = wait_for(lambda: webhook.alerts("firing"), 30, "the notification after restart")
        assert firing[0][1]["labels"]["entity"] == "10.0.0.5"
        assert firing[0][0] >= up_at
        wait_for(lambda: committed(kafka, f"notifier-{topic}") == 1, 20, "the offset committed")
        assert scrape(port)["chaussettes_notifier_records_total"] == 1
        assert len(webhook.alerts("firing")) == 1
        log = (tmp_path / "notifier.log").read_text()
        # One warning for the whole outage (the error never changed), then the recovery.
        assert log.count("did not accept 1 alert(s) (ConnectionRefusedError") == 1, log
        assert "Alertmanager accepted the alert(s) after " in log
    finally:
        stop(notifier)


# Five ip incidents of 20 s, starting 5 s apart, at 100 lines/s. Each IP sends about 2 lines/s
# (50 users), so a 30 s window that holds a whole incident (one always does: 30 - 20 = the 10 s
# slide) counts about 36 errors in 60 requests: a Wilson lower bound (z = 3) of about 0.41, over
# the test's ip threshold of 0.3 whatever the micro-batches' timing. (An 8 s incident reached it
# only in a window's first seconds, so only when a batch ended there: flaky under load.) Five IPs
# failing at once are about 9 % of the lines, far below the global threshold of 0.9: no global
# alert inhibits them.
E2E_INCIDENTS = [f"ip@{15 + 5 * k}+20" for k in range(5)]


@needs_alertmanager
@pytest.mark.slow
@pytest.mark.spark
@pytest.mark.timeout(600)  # Spark's start and 70 s of traffic on a busy machine
def test_generator_to_webhook_end_to_end_measures_page_and_resolve_times(
        kafka, tmp_path, alertmanager, webhook):
    """generator -> http-logs -> analyzer -> alerts -> notifier -> Alertmanager -> webhook: each
    incident pages once, naming its IP, rule, severity and cause, then resolves. Prints the time
    from each incident's first line to its page (p50) and from its end to its resolution."""
    topics = new_topics(kafka, "logs", "alerts", "dlq")
    analyzer = LiveAnalyzer(kafka, topics, tmp_path).start()
    notifier, _ = start_notifier(kafka, topics[1], alertmanager.url, tmp_path,
                                 "--resolve-timeout", "10 seconds")
    truth = tmp_path / "truth.jsonl"
    generator = subprocess.Popen(
        [sys.executable, str(ROOT / "finale" / "log_generator.py"), "--bootstrap-servers", kafka,
         "--topic", topics[0], "--rate", "100", "--duration", "70", "--seed", "19",
         "--truth", str(truth), *(f"--incident={spec}" for spec in E2E_INCIDENTS)],
        stdout=subprocess.DEVNULL, stderr=open(tmp_path / "generator.log", "wb"))  # noqa: SIM115
    try:
        incidents = wait_for(lambda: truth.exists() and len(truth.read_text().splitlines()) == 5
                             and [json.loads(line) for line in truth.read_text().splitlines()],
                             30, "the truth file")
        ips = [incident["entity"] for incident in incidents]
        assert len(set(ips)) == 5

        def pages(status):
            return {a["labels"]["entity"]: (at, a) for at, a in reversed(webhook.alerts(status))
                    if a["labels"]["entity"] in ips and a["labels"]["scope"] == "ip"}

        def statuses_by_alert(ip) -> dict[str, list[str]]:
            """severity -> the statuses in which the webhook saw that alert of `ip`, in order."""
            by_alert: dict[str, list[str]] = {}
            for _, a in webhook.alerts():
                if a["labels"]["entity"] == ip and a["labels"]["scope"] == "ip":
                    by_alert.setdefault(a["labels"]["severity"], []).append(a["status"])
            return by_alert

        wait_for(lambda: all(statuses_by_alert(ip) and all(
            statuses[-1] == "resolved" for statuses in statuses_by_alert(ip).values())
            for ip in ips), 240, "every incident's alerts paged and resolved", interval=0.5)
        assert generator.wait(timeout=60) == 0
        firing, resolved = pages("firing"), pages("resolved")
        to_page, to_resolve = [], []
        for incident in incidents:
            at, page = firing[incident["entity"]]
            assert page["labels"]["alertname"] == "error_rate"
            assert page["labels"]["severity"] in ("warning", "critical")
            assert page["annotations"]["cause"].endswith("of the window's errors")
            start = datetime.fromisoformat(incident["start"].replace("Z", "+00:00")).timestamp()
            end = datetime.fromisoformat(incident["end"].replace("Z", "+00:00")).timestamp()
            to_page.append(at - start)
            to_resolve.append(resolved[incident["entity"]][0] - end)
        # Every update of an alert reached Alertmanager as the same alert (its labels): each alert
        # of an incident fires, then resolves, and never fires again. An incident whose windows
        # crossed both severities has two alerts (severity is a label); Alertmanager shows both
        # in the notifications of their group (rule, scope, entity), which repeat the one already
        # firing when the other joins or resolves.
        for ip in ips:
            for statuses in statuses_by_alert(ip).values():
                resolved_at = statuses.index("resolved")
                assert resolved_at > 0, statuses
                assert set(statuses[:resolved_at]) == {"firing"}, statuses
                assert set(statuses[resolved_at:]) == {"resolved"}, statuses
        print(f"\nfirst line -> page: p50 {statistics.median(to_page):.1f} s "
              f"(each: {', '.join(f'{t:.1f}' for t in to_page)}); incident end -> resolved: "
              f"p50 {statistics.median(to_resolve):.1f} s "
              f"(each: {', '.join(f'{t:.1f}' for t in to_resolve)}), resolve timeout 10 s")
        assert statistics.median(to_page) < 30
    finally:
        if generator.poll() is None:
            generator.kill()
        stop(notifier)
        analyzer.stop()
