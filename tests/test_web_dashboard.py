"""finale/web/ (`python finale/dashboard.py`) in a real browser: headless Chromium (Debian's
`chromium`) driven by selenium through `chromium-driver`, a real broker, the real dashboard as a
subprocess, records on test-specific topics.

- The page loads with no console error, under a Content-Security-Policy, and its chart has points
  within seconds of window metrics reaching Kafka.
- Hostile alerts and metrics (an entity `/<img src=x onerror=alert(1)>`, a URL carrying
  `<script>`) are shown as literal text: no dialog, no element created.
- The real analyzer's alert for an injected incident is on the page within 5 s of reaching the
  alerts topic; the test saves a screenshot in .state/screenshots/dashboard.png (git-ignored: a
  test run never changes the checkout; docs/img/dashboard.png, shown by the README, is such a
  screenshot copied there) and prints the delay and the page's weight.

`.ci/run` installs chromium and chromium-driver when missing; elsewhere, without them, these tests
are skipped with the command that installs them.
"""
import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from conftest import ROOT, free_port, wait_for
from test_analyzer_checkpoint import THRESHOLDS
from test_analyzer_pipeline import new_topics

from finale.common import window_metrics

pytestmark = [pytest.mark.browser, pytest.mark.kafka]

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
INSTALL = "apt-get install -y chromium chromium-driver"
SCREENSHOT = ROOT / ".state" / "screenshots" / "dashboard.png"
HOSTILE_IMG = "/<img src=x onerror=alert(1)>"
HOSTILE_SCRIPT = "/search?q=<script>alert(2)</script>"


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@pytest.fixture(scope="module")
def browser():
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if shutil.which(path) is None]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed: {INSTALL}")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1280,1150"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


class Dashboard:
    """`python finale/dashboard.py` on a free port, reading the given topics."""

    def __init__(self, kafka, alerts_topic, metrics_topic):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "finale" / "dashboard.py"), "--port", str(self.port),
             "--bootstrap-servers", kafka, "--alerts-topic", alerts_topic,
             "--metrics-topic", metrics_topic],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_for(lambda: self.answers() or self.process.poll() is not None, 30,
                 "the dashboard to answer")
        assert self.process.poll() is None, self.process.communicate()

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "api/state", timeout=2) as response:
                return json.load(response)["feed"]["connected"]
        except (OSError, ValueError):
            return False

    def stop(self) -> tuple[str, str]:
        self.process.terminate()
        out, err = self.process.communicate(timeout=20)
        return out, err


@pytest.fixture
def topics(kafka):
    return new_topics(kafka, "alerts", "metrics", partitions=1)


@pytest.fixture
def dashboard(kafka, topics):
    server = Dashboard(kafka, *topics)
    try:
        yield server
    finally:
        out, err = server.stop()
        assert server.process.returncode == 0, err
        assert out.startswith(f"dashboard: {server.url} (")
        assert err == ""


def produce(kafka, topic, records: list[tuple[str, dict]]) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=kafka)
    try:
        for key, value in records:
            producer.send(topic, key=key.encode(), value=json.dumps(value).encode())
        producer.flush()
    finally:
        producer.close()


def metrics_record(end: datetime, requests: int, errors: int, top_urls=()) -> tuple[str, dict]:
    record = {"window_start": iso(end - timedelta(seconds=30)), "window_end": iso(end),
              "requests": requests, "errors": errors, "error_rate": errors / requests,
              "top_ips": [], "top_urls": list(top_urls), "batch_id": 3, "backlog": 0,
              "dead_letters_total": 1, "emitted_at": iso(datetime.now(timezone.utc))}
    return window_metrics.key(record), record


def alert_record(alert_id, entity_type, entity, end: datetime, top_entities=None, share=None):
    return alert_id, {
        "alert_id": alert_id, "rule": "error_rate", "entity_type": entity_type, "entity": entity,
        "window_start": iso(end - timedelta(seconds=30)), "window_end": iso(end),
        "requests": 40, "errors": 30, "error_rate": 0.75, "threshold": 0.05,
        "thresholds_version": "test", "severity": "critical", "error_share": share,
        "top_entities": top_entities, "metric": "error_rate", "value": 0.75, "unit": "rate",
        "emitted_at": iso(datetime.now(timezone.utc))}


def open_page(driver, url: str) -> None:
    """`url` in the shared browser, the console of the earlier pages forgotten."""
    driver.get("about:blank")
    driver.get_log("browser")  # reading the log empties it
    driver.get(url)


def console_errors(driver) -> list[dict]:
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def text_of(driver, selector) -> list[str]:
    return driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0])).map(e => e.textContent)",
        selector)


def page_weight(driver) -> dict[str, int]:
    """Bytes transferred per URL of the page (the navigation and every finished resource; the
    event stream, still open, is not counted)."""
    entries = driver.execute_script(
        "return performance.getEntriesByType('navigation').concat("
        "performance.getEntriesByType('resource')).map(e => [e.name, e.transferSize])")
    return {name: size for name, size in entries}


def test_page_loads_clean_under_a_csp_and_charts_metrics_within_seconds(
        browser, dashboard, kafka, topics):
    alerts_topic, metrics_topic = topics
    with urllib.request.urlopen(dashboard.url, timeout=5) as response:
        headers = response.headers
    policy = headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "default-src 'none'" in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert headers["X-Content-Type-Options"] == "nosniff"
    # Nothing but GET (and HEAD): no endpoint changes anything.
    for path in ("", "api/state", "events"):
        request = urllib.request.Request(dashboard.url + path, data=b"{}", method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=5)
        assert refused.value.code == 405

    open_page(browser, dashboard.url)
    wait_for(lambda: text_of(browser, "#connection") == ["live"], 10, "the event stream")
    assert browser.find_element("id", "chart").get_attribute("data-points") == "0"
    now = datetime.now(timezone.utc).replace(microsecond=0)
    windows = [metrics_record(now - timedelta(seconds=10 * i), 300 + i, 6 + i,
                              top_urls=[{"entity": "/cart", "requests": 40, "errors": 6}])
               for i in range(12)]
    produce(kafka, metrics_topic, windows)
    sent = time.monotonic()
    wait_for(lambda: browser.find_element("id", "chart").get_attribute("data-points") == "12",
             5, "the chart's 12 points")
    print(f"\nchart points on the page {time.monotonic() - sent:.2f} s after reaching Kafka")
    # Requests/s of the newest window (300 requests in 30 s), the health of its batch.
    assert browser.execute_script("return document.getElementById('chart').dataset.points") == "12"
    assert text_of(browser, "#top-urls tbody tr") == ["/cart640"]
    assert text_of(browser, "#health-batch") == ["3"]
    assert text_of(browser, "#health-dead") == ["1 since the analyzer started"]
    assert console_errors(browser) == []
    weight = page_weight(browser)
    assert all(size > 0 for size in weight.values()), weight
    print(f"page weight: {sum(weight.values()) / 1000:.1f} kB transferred ({len(weight)} files)")


def test_hostile_strings_render_as_literal_text(browser, dashboard, kafka, topics):
    from selenium.common.exceptions import NoAlertPresentException

    alerts_topic, metrics_topic = topics
    now = datetime.now(timezone.utc).replace(microsecond=0)
    produce(kafka, alerts_topic, [
        alert_record("img", "url", HOSTILE_IMG, now, share=0.9),
        alert_record("script", "global", "*", now, top_entities=[
            {"entity_type": "url", "entity": HOSTILE_SCRIPT, "requests": 30, "errors": 29}]),
    ])
    produce(kafka, metrics_topic, [metrics_record(now, 100, 60, top_urls=[
        {"entity": HOSTILE_SCRIPT, "requests": 30, "errors": 29},
        {"entity": HOSTILE_IMG, "requests": 30, "errors": 28}])])
    open_page(browser, dashboard.url)
    wait_for(lambda: len(text_of(browser, "#alerts tbody tr")) == 2, 10, "the two alerts")
    wait_for(lambda: len(text_of(browser, "#top-urls tbody tr")) == 2, 10, "the two URLs")

    # The strings are in the page as text, character for character.
    entities = text_of(browser, "#alerts tbody td:nth-child(5)")
    causes = text_of(browser, "#alerts tbody td:nth-child(8)")
    assert sorted(entities) == sorted([HOSTILE_IMG, "*"])
    assert f"url {HOSTILE_SCRIPT} 29/30" in causes
    assert text_of(browser, "#top-urls tbody td:first-child") == [HOSTILE_SCRIPT, HOSTILE_IMG]
    # No element was made of them: no image at all, only the page's own two scripts.
    assert browser.execute_script("return document.getElementsByTagName('img').length") == 0
    assert browser.execute_script(
        "return Array.from(document.scripts).map(s => new URL(s.src).pathname)") == [
        "/static/vendor/uplot/uPlot.iife.min.js", "/static/dashboard.js"]
    assert browser.execute_script(
        "return document.querySelectorAll('#alerts tbody *, #top-urls tbody *').length") == (
        2 * 9 + 2 * 4)  # 2 rows of 8 cells, 2 rows of 3 cells: nothing else
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text  # noqa: B018 - reading it is what raises
    assert console_errors(browser) == []


@pytest.mark.slow
@pytest.mark.spark
def test_the_analyzers_alert_is_on_the_page_within_5_s(browser, kafka, tmp_path):
    from kafka import KafkaConsumer, KafkaProducer

    logs, dlq = new_topics(kafka, "logs", "dlq")
    alerts_topic, metrics_topic = new_topics(kafka, "alerts", "metrics", partitions=1)
    (tmp_path / "thresholds.json").write_text(json.dumps(THRESHOLDS))
    analyzer = subprocess.Popen(
        [sys.executable, str(ROOT / "finale" / "spark_streaming_analyzer.py"),
         "--bootstrap-servers", kafka, "--topic", logs, "--alerts-topic", alerts_topic,
         "--dlq-topic", dlq, "--metrics-topic", metrics_topic, "--starting-offsets", "earliest",
         "--thresholds", str(tmp_path / "thresholds.json"),
         "--checkpoint", str(tmp_path / "checkpoint"), "--status-file",
         str(tmp_path / "status.json")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    dashboard = Dashboard(kafka, alerts_topic, metrics_topic)
    producer = KafkaProducer(bootstrap_servers=kafka, linger_ms=5)
    try:
        open_page(browser, dashboard.url)
        wait_for(lambda: text_of(browser, "#connection") == ["live"], 10, "the event stream")
        # The time each alert row first appears, taken by the page's own clock.
        browser.execute_script("""
            window.seenAt = {};
            new MutationObserver(() => {
              for (const row of document.querySelectorAll('#alerts tbody tr')) {
                if (!(row.dataset.alertId in window.seenAt)) {
                  window.seenAt[row.dataset.alertId] = Date.now();
                }
              }
            }).observe(document.getElementById('alerts'), {childList: true, subtree: true});""")

        def line(ip, moment, path, status):
            stamp = moment.strftime("%d/%b/%Y:%H:%M:%S +0000")
            return f'{ip} - - [{stamp}] "GET {path} HTTP/1.1" {status} 512 "-" "test"'.encode()

        def send(lines):
            for value in lines:
                producer.send(logs, key=value.split(b" ", 1)[0], value=value)
            producer.flush()

        # Five minutes of past traffic, 6 lines a second, 1 in 6 a 404.
        # A scanner among them, 10.0.2.2: two 404s a second for 20 s, two minutes in.
        start = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=5)
        send([line(f"10.0.1.{second % 6}", start + timedelta(seconds=second),
                   "/missing" if n == 0 else f"/p/{n}", 404 if n == 0 else 200)
              for second in range(300) for n in range(6)]
             + [line("10.0.2.2", start + timedelta(seconds=120 + i // 2), "/wp-login.php", 404)
                for i in range(40)])
        wait_for(lambda: int(browser.find_element("id", "chart").get_attribute(
            "data-points")) >= 25 or analyzer.poll() is not None, 120,
            "the chart to draw the past traffic")
        assert analyzer.poll() is None, analyzer.communicate()[0]
        # The incident, now: 10.0.0.66 gets only 500s on /cart, 2 a second for 4 s.
        now = datetime.now(timezone.utc)
        send([line("10.0.0.66", now + timedelta(seconds=i // 2), "/cart", 500)
              for i in range(8)] + [line("10.0.1.1", now, "/", 200)])

        consumer = KafkaConsumer(alerts_topic, bootstrap_servers=kafka,
                                 auto_offset_reset="earliest", consumer_timeout_ms=1000)
        firsts = {}  # alert_id -> (its first record's Kafka timestamp, the alert)

        def incident_alert():
            for record in consumer:
                decoded = json.loads(record.value)
                firsts.setdefault(decoded["alert_id"], (record.timestamp, decoded))
            return [(stamp, alert) for stamp, alert in firsts.values()
                    if alert["entity"] == "10.0.0.66"]

        [(in_kafka_ms, alert)] = wait_for(incident_alert, 90, "the incident's alert in Kafka")[:1]
        seen = wait_for(lambda: browser.execute_script(
            "return window.seenAt[arguments[0]]", alert["alert_id"]), 5,
            "the incident's alert on the page")
        delay_ms = seen - in_kafka_ms
        print(f"\nalert in Kafka -> on the page: {delay_ms} ms")
        assert 0 <= delay_ms <= 5000
        assert text_of(browser, f"#alerts tr[data-alert-id='{alert['alert_id']}'] td")[4] == (
            "10.0.0.66")
        consumer.close()
        assert console_errors(browser) == []
        # The screenshot of the README: the past traffic, its 404s and the incident, once the
        # window metrics of the incident's batch (written after its alerts) are drawn too.
        wait_for(lambda: text_of(browser, "#health-batch") not in (["-"], ["0"]), 10,
                 "the metrics of the incident's batch")
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(SCREENSHOT))
        weight = page_weight(browser)
        print(f"page weight: {sum(weight.values()) / 1000:.1f} kB transferred ({len(weight)} "
              f"files): " + ", ".join(f"{Path(name).name or '/'} {size}"
                                      for name, size in weight.items()))
    finally:
        producer.close()
        dashboard.stop()
        analyzer.terminate()
        try:
            analyzer.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            analyzer.kill()
            analyzer.communicate()
