"""finale/analyzer/exporter.py: the analyzer's `--metrics-port` /metrics, on real Spark and a real
broker. The analyzer runs live (a subprocess, 1-second triggers) on test-specific topics; known
lines and known garbage go in, and /metrics must say exactly how many of each came out.

LiveAnalyzer is also the analyzer of the Prometheus and end-to-end notifier tests. Where
Prometheus is installed (CI), test_monitoring_prometheus.py runs check_exact_metrics on the analyzer
it scrapes, and the test here is skipped: Spark starts once for both.
"""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from conftest import free_port, wait_for
from test_analyzer_checkpoint import THRESHOLDS, lines
from test_analyzer_pipeline import new_topics, send

pytestmark = [pytest.mark.slow, pytest.mark.spark]


def scrape(port: int) -> dict[str, float]:
    """{'name{labels}': value} of a /metrics page (samples only)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


class LiveAnalyzer:
    """The real analyzer on `topics` (logs, alerts, dlq), live, its state in `folder`, serving
    /metrics on a free port. start() returns once its first alerts micro-batch completed."""

    def __init__(self, kafka, topics, folder: Path, *flags: str, thresholds=THRESHOLDS):
        self.kafka, self.topics, self.folder, self.flags = kafka, topics, folder, flags
        self.port = free_port()
        (folder / "thresholds.json").write_text(json.dumps(thresholds))
        self.process = None

    def start(self, timeout: float = 180) -> LiveAnalyzer:
        logs, alerts, dlq = self.topics
        self.log = open(self.folder / "analyzer.log", "ab")  # noqa: SIM115 - closed in stop
        self.process = subprocess.Popen(
            [sys.executable, "-m", "finale.analyzer.app", "--bootstrap-servers", self.kafka,
             "--topic", logs, "--alerts-topic", alerts, "--dlq-topic", dlq,
             "--starting-offsets", "earliest", "--trigger", "1 second",
             "--dead-letter-trigger", "1 second",
             "--thresholds", str(self.folder / "thresholds.json"),
             "--checkpoint", str(self.folder / "checkpoint"),
             "--status-file", str(self.folder / "status.json"),
             "--metrics-port", str(self.port), *self.flags],
            stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(lambda: self.metric('chaussettes_analyzer_batches_total{query="alerts"}'),
                 timeout, "the analyzer's first alerts micro-batch", interval=0.5)
        return self

    def output(self) -> str:
        return (self.folder / "analyzer.log").read_text(errors="replace")

    def metrics(self) -> dict[str, float]:
        assert self.process.poll() is None, self.output()
        try:
            return scrape(self.port)
        except OSError:
            return {}

    def metric(self, name: str) -> float | None:
        return self.metrics().get(name)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


GARBAGE = [b"not an access log line", b"", b"   ", b"{\"json\": true}",
           b'10.0.0.3 - - [31/Feb/2026:09:00:05 +0000] "GET / HTTP/1.1" 200 10 "-" "curl/8"']


@pytest.mark.skipif(shutil.which("/usr/bin/prometheus") is not None,
                    reason="checked by test_monitoring_prometheus.py (one Spark start for both)")
def test_metrics_count_exactly_what_went_in(kafka, tmp_path):
    topics = new_topics(kafka, "logs", "alerts", "dlq")
    analyzer = LiveAnalyzer(kafka, topics, tmp_path).start()
    try:
        check_exact_metrics(kafka, topics[0], analyzer, tmp_path)
    finally:
        analyzer.stop()


def check_exact_metrics(kafka, logs_topic: str, analyzer: LiveAnalyzer, folder: Path) -> None:
    """Known lines and garbage into a fresh analyzer: /metrics says exactly how many of each; a
    broken thresholds file is flagged and counted, the last good version stays."""
    page = analyzer.metrics()
    assert page['chaussettes_analyzer_thresholds_info{version="test"}'] == 1
    assert page["chaussettes_analyzer_thresholds_reload_failing"] == 0
    assert page["chaussettes_analyzer_thresholds_age_seconds"] >= 0
    assert page['chaussettes_analyzer_last_batch_timestamp_seconds{query="alerts"}'] > 0
    # 12 seconds: 10.0.0.9 fails on /cart (12 errors), 10.0.0.1 is served (12), + 5 garbage.
    send(kafka, logs_topic, [*lines(1, 12), *GARBAGE])
    expected = {
        'chaussettes_analyzer_input_rows_total{query="dead-letters"}': 29,
        'chaussettes_analyzer_input_rows_total{query="alerts"}': 29,
        "chaussettes_analyzer_requests_total": 24,
        "chaussettes_analyzer_request_errors_total": 12,
        'chaussettes_analyzer_dead_letters_total{reason="unparseable"}': 2,
        'chaussettes_analyzer_dead_letters_total{reason="empty_line"}': 2,
        'chaussettes_analyzer_dead_letters_total{reason="bad_timestamp"}': 1,
        'chaussettes_analyzer_late_rows_dropped_total{query="alerts"}': 0,
    }

    def counted():
        page = analyzer.metrics()
        got = {name: page.get(name) for name in expected}
        return page if got == expected else None

    page = wait_for(counted, 60, f"the metrics {expected}", interval=0.5)
    assert 'chaussettes_analyzer_dead_letters_total{reason="future_timestamp"}' not in page
    # The alert of 10.0.0.9 (error_rate, ip, every request failing), in at least one version.
    assert page['chaussettes_analyzer_alerts_total{rule="error_rate",severity="critical"}'] \
        >= 1
    assert page['chaussettes_analyzer_backlog_records{query="alerts"}'] == 0
    # The watermark (latest line 09:00:12 - 10 s), set for the batch after the lines', is
    # days behind the batches' clock.
    lag = 'chaussettes_analyzer_watermark_lag_seconds{query="alerts"}'
    assert wait_for(lambda: analyzer.metric(lag), 30, "the watermark lag") > 86400
    assert page['chaussettes_analyzer_batch_duration_seconds{query="alerts"}'] > 0

    # Without input Spark reports idle triggers (about every 10 s): the trigger time moves past
    # the last batch's, so an idle analyzer is not a stalled one (AnalyzerStalled).
    def idle_reported():
        page = analyzer.metrics()
        return (page['chaussettes_analyzer_last_trigger_timestamp_seconds{query="alerts"}']
                > page['chaussettes_analyzer_last_batch_timestamp_seconds{query="alerts"}'] + 5)

    wait_for(idle_reported, 60, "an idle trigger reported", interval=0.5)

    # A broken thresholds file: counted as a failed reload, flagged while it stays broken.
    (folder / "thresholds.json").write_text("{broken")
    send(kafka, logs_topic, lines(13, 14))
    wait_for(lambda: analyzer.metric("chaussettes_analyzer_thresholds_reload_failing") == 1,
             60, "the failing reload on /metrics", interval=0.5)
    # Counted when the batch's progress arrives, just after the batch.
    wait_for(lambda: analyzer.metric("chaussettes_analyzer_thresholds_reload_errors_total"),
             30, "the failed reload counted", interval=0.5)
    assert analyzer.metric("chaussettes_analyzer_thresholds_reload_errors_total") == 1
    assert analyzer.metric('chaussettes_analyzer_thresholds_info{version="test"}') == 1
