"""conf/prometheus/rules.yml on a REAL Prometheus (Debian's /usr/bin/prometheus, 127.0.0.1, its own
config in tmp_path, 1 s scrape and evaluation intervals) scraping the REAL analyzer (live, on a
real broker, test-specific topics):
- first, known lines and garbage give exact counts on /metrics (test_analyzer_exporter.py's
  check, run here to start Spark once);
- the metrics are there and they move while lines arrive;
- when the input turns to garbage, DeadLetterRatioHigh fires within its `for` + one scrape
  interval of the ratio crossing 20 % (measured, printed);
- a stopped analyzer fires AnalyzerDown (measured, printed).

The rules are the shipped file with each `for` shortened to FOR_IN_TEST (a copy in tmp_path; the
test checks that nothing else differs), so the test takes seconds instead of minutes;
PROMETHEUS_RULES_AS_SHIPPED=1 runs them with the shipped `for` values (the figures of
docs/monitoring.md).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from datetime import datetime, timezone

import pytest
import yaml
from conftest import ROOT, free_port, wait_for
from kafka import KafkaProducer
from test_analyzer_exporter import LiveAnalyzer, check_exact_metrics
from test_analyzer_pipeline import new_topics

PROMETHEUS = "/usr/bin/prometheus"
FOR_IN_TEST = "5s"
AS_SHIPPED = os.environ.get("PROMETHEUS_RULES_AS_SHIPPED") == "1"
pytestmark = [
    pytest.mark.slow, pytest.mark.spark,
    pytest.mark.skipif(shutil.which(PROMETHEUS) is None,
                       reason="Prometheus missing: apt-get install -y prometheus")]


def rules_for_test(folder) -> dict:
    """The shipped rules, each `for` set to FOR_IN_TEST (unless AS_SHIPPED), written to folder."""
    shipped = yaml.safe_load((ROOT / "conf" / "prometheus" / "rules.yml").read_text())
    rules = json.loads(json.dumps(shipped))
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "for" in rule and not AS_SHIPPED:
                rule["for"] = FOR_IN_TEST
    # Nothing but the hold times differs from the shipped file.
    strip = [[{k: v for k, v in rule.items() if k != "for"} for rule in group["rules"]]
             for group in rules["groups"]]
    assert strip == [[{k: v for k, v in rule.items() if k != "for"} for rule in group["rules"]]
                     for group in shipped["groups"]]
    (folder / "rules.yml").write_text(yaml.safe_dump(rules))
    return {rule["alert"]: rule.get("for") for group in rules["groups"]
            for rule in group["rules"] if "alert" in rule}


class Prometheus:
    def __init__(self, folder, analyzer_port: int):
        self.folder, self.port = folder, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.holds = rules_for_test(folder)
        (folder / "prometheus.yml").write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": ["rules.yml"],
            "scrape_configs": [{"job_name": "chaussettes-analyzer", "static_configs": [
                {"targets": [f"127.0.0.1:{analyzer_port}"]}]}]}))
        self.log = open(folder / "prometheus.log", "wb")  # noqa: SIM115 - closed in stop
        self.process = subprocess.Popen(
            [PROMETHEUS, f"--config.file={folder / 'prometheus.yml'}",
             f"--storage.tsdb.path={folder / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(self.ready, 60, "Prometheus ready", interval=0.2)

    def ready(self) -> bool:
        assert self.process.poll() is None, (self.folder / "prometheus.log").read_text()
        try:
            with urllib.request.urlopen(self.url + "/-/ready", timeout=1) as answer:
                return answer.status == 200
        except OSError:
            return False

    def query(self, expr: str) -> list[dict]:
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
        with urllib.request.urlopen(url, timeout=5) as answer:
            return json.load(answer)["data"]["result"]

    def value(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    def firing(self, name: str) -> bool:
        return bool(self.query(f'ALERTS{{alertname="{name}",alertstate="firing"}}'))

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=30)
        self.log.close()


class Feeder(threading.Thread):
    """Lines dated now into the logs topic at `rate` lines/s: access-log lines, or garbage once
    `garbage` is set."""

    def __init__(self, kafka, topic, rate: int = 50):
        super().__init__(daemon=True)
        self.producer = KafkaProducer(bootstrap_servers=kafka, linger_ms=5)
        self.topic, self.rate = topic, rate
        self.garbage, self.done = threading.Event(), threading.Event()

    def run(self):
        n = 0
        while not self.done.is_set():
            stamp = datetime.now(timezone.utc).strftime("%d/%b/%Y:%H:%M:%S +0000")
            for _ in range(self.rate // 10):
                n += 1
                line = (f"<log format v2> {n}" if self.garbage.is_set() else
                        f'10.0.0.{n % 20} - - [{stamp}] "GET /p/{n % 7} HTTP/1.1" '
                        f'{500 if n % 10 == 0 else 200} 10 "-" "curl/8"')
                self.producer.send(self.topic, value=line.encode())
            self.done.wait(0.1)
        self.producer.close()


def test_exact_metrics_then_prometheus_fires_dead_letter_ratio_then_analyzer_down(
        kafka, tmp_path):
    topics = new_topics(kafka, "logs", "alerts", "dlq")
    analyzer = LiveAnalyzer(kafka, topics, tmp_path).start()
    feeder = Feeder(kafka, topics[0])
    prometheus = None
    try:
        # First the exact counts (test_analyzer_exporter.py), on this fresh analyzer.
        check_exact_metrics(kafka, topics[0], analyzer, tmp_path)
        prometheus = Prometheus(tmp_path, analyzer.port)
        feeder.start()
        # The metrics are there, and they move.
        wait_for(lambda: prometheus.value('up{job="chaussettes-analyzer"}') == 1, 30,
                 "the analyzer scraped")
        read = 'chaussettes_analyzer_input_rows_total{query="alerts"}'
        first = wait_for(lambda: prometheus.value(read), 60, "lines counted")
        wait_for(lambda: (prometheus.value(read) or 0) > first, 30, "more lines counted")
        wait_for(lambda: (prometheus.value("chaussettes:requests:rate1m") or 0) > 0, 30,
                 "the request rate recorded")
        # 1 line in 10 answers 500: the error ratio of the recording rule is 10 %.
        ratio = wait_for(lambda: prometheus.value("chaussettes:request_errors:ratio_rate1m"),
                         30, "the error ratio recorded")
        assert 0.05 < ratio < 0.15
        assert not prometheus.firing("DeadLetterRatioHigh")
        time.sleep(10)  # 10 s of good lines in the 5-minute window before the format changes

        feeder.garbage.set()
        switched = time.monotonic()
        ratio_expr = "chaussettes:dead_letters:rate5m / chaussettes:lines:rate5m"
        wait_for(lambda: (prometheus.value(ratio_expr) or 0) > 0.2, 120,
                 "the dead-letter ratio above 20 %", interval=0.2)
        crossed = time.monotonic()
        hold = float(prometheus.holds["DeadLetterRatioHigh"].rstrip("sm")) * (
            60 if prometheus.holds["DeadLetterRatioHigh"].endswith("m") else 1)
        wait_for(lambda: prometheus.firing("DeadLetterRatioHigh"), hold + 60,
                 "DeadLetterRatioHigh firing", interval=0.2)
        fired = time.monotonic()
        print(f"\nDeadLetterRatioHigh (for {prometheus.holds['DeadLetterRatioHigh']}): "
              f"ratio > 20 % {crossed - switched:.1f} s after the switch to garbage, firing "
              f"{fired - crossed:.1f} s later ({fired - switched:.1f} s after the switch)")
        # Within its `for` + one scrape interval (1 s) + one evaluation (1 s) of the crossing.
        assert fired - crossed <= hold + 2 + 1

        analyzer.stop()
        stopped = time.monotonic()
        wait_for(lambda: prometheus.firing("AnalyzerDown"), 120, "AnalyzerDown firing",
                 interval=0.2)
        print(f"AnalyzerDown (for {prometheus.holds['AnalyzerDown']}): firing "
              f"{time.monotonic() - stopped:.1f} s after the analyzer stopped")
    finally:
        feeder.done.set()
        analyzer.stop()
        if prometheus is not None:
            prometheus.stop()
