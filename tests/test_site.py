"""A real site, watched end to end (`pytest -m site`): Apache httpd writes its access logs, rsyslog
ships them into Kafka with the project's own config (started by finale/ship.py, as `make ship`
starts it), the analyzer alerts.

One run, with clients on several loopback addresses (127.0.0.x) requesting all along and one of
them scanning for 404s at the end. The faults, each once, while the requests continue:
1. logrotate (the real binary, its own config and state file) rotates with `create`, compression
   and a graceful reload of Apache;
2. logrotate rotates again with `copytruncate`;
3. the shipper (rsyslogd) is killed with -9, then restarted;
4. the broker is stopped for 20 s.

Proved: every line Apache wrote (read back from all its files, rotated and gzipped ones included)
is in the topic, duplicates at most 1 %, the analyzer raises an ip alert naming the scanner and no
ip alert on the normal clients. Apache writes `combined` into access.log and `vhost_combined` into
other_vhosts_access.log (Debian's two logs): a second shipper sends the latter to its own topic,
where every line parses with the fields of its combined twin.

Needs Debian's apache2, rsyslog, rsyslog-kafka and logrotate: .ci/run installs them; elsewhere the
suite is skipped with the install command (and fails under CI=true, so CI never skips it).
"""
import glob
import gzip
import http.client
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest
from conftest import ROOT, free_port, is_loopback, listening_addresses, wait_for
from kafka.admin import KafkaAdminClient, NewTopic
from test_analyzer_faults import Analyzer, end_offsets_total, read_topic

from finale.analyzer.access_log import parse_access_log
from finale.tools import local_kafka, ship

PACKAGES = {"apache2": "apache2", "logrotate": "logrotate", "rsyslogd": "rsyslog"}
SBIN = "/usr/sbin:/sbin:" + os.environ.get("PATH", "")


def missing_packages() -> list[str]:
    missing = [package for binary, package in PACKAGES.items()
               if shutil.which(binary, path=SBIN) is None]
    if not any(glob.glob(pattern) for pattern in ship.OMKAFKA_GLOBS):
        missing.append("rsyslog-kafka")
    return missing


MISSING = missing_packages()
INSTALL = f"apt-get install -y {' '.join(MISSING)}"
if MISSING and os.environ.get("CI"):
    # CI installs them (.ci/run): a skip there would hide the suite.
    pytest.fail(f"CI without {', '.join(MISSING)}: .ci/run should have run `{INSTALL}`",
                pytrace=False)
pytestmark = [pytest.mark.site, pytest.mark.slow, pytest.mark.kafka, pytest.mark.spark,
              pytest.mark.skipif(bool(MISSING), reason=f"needs Debian packages: {INSTALL}")]

SHIP = ROOT / "finale" / "ship.py"
NORMAL_CLIENTS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
SCANNER = "127.0.0.66"
RATE = 5            # requests per second of each normal client
SCAN_RATE = 10      # the scanner's 404s per second
OUTAGE_S = 20       # the broker's stop
WAIT = 240          # deadline of each wait on a real condition (Spark start-up on a loaded machine)
REQUEST_ID = re.compile(rb"[?&]id=(\d+)")


# ------------------------------------------------------------------------------------------------
# The parts: Apache, its clients, logrotate, the shipper
# ------------------------------------------------------------------------------------------------

APACHE_CONF = """\
ServerRoot /etc/apache2
PidFile {run}/httpd.pid
DefaultRuntimeDir {run}
Mutex file:{run} default
Listen 127.0.0.1:{port}
LoadModule mpm_event_module /usr/lib/apache2/modules/mod_mpm_event.so
LoadModule authz_core_module /usr/lib/apache2/modules/mod_authz_core.so
{user}
ServerName 127.0.0.1
# Debian's default page: readable by www-data, whatever the test's temporary folder allows.
DocumentRoot /usr/share/apache2/default-site
ErrorLog {logs}/error.log
# Debian's /etc/apache2/apache2.conf formats, as they are.
LogFormat "%v:%p {combined}" vhost_combined
LogFormat "{combined}" combined
CustomLog {logs}/access.log combined
CustomLog {logs}/other_vhosts_access.log vhost_combined
"""


COMBINED = r'%h %l %u %t \"%r\" %>s %O \"%{Referer}i\" \"%{User-Agent}i\"'


class Apache:
    """A real httpd on 127.0.0.1:<free port>, its config and logs in the test's folder."""

    def __init__(self, folder: Path):
        self.logs, self.run = folder / "logs", folder / "run"
        self.logs.mkdir()
        self.run.mkdir()
        self.port = free_port()
        conf = folder / "httpd.conf"
        # As root, Apache hands the requests to an unprivileged user (Debian's www-data).
        user = "User www-data\nGroup www-data" if os.geteuid() == 0 else ""
        conf.write_text(APACHE_CONF.format(run=self.run, logs=self.logs, port=self.port,
                                           user=user, combined=COMBINED))
        self.output = open(folder / "apache.out", "w")
        self.process = subprocess.Popen(
            [shutil.which("apache2", path=SBIN), "-f", str(conf), "-DFOREGROUND"],
            stdout=self.output, stderr=subprocess.STDOUT)
        wait_for(self.answers, 30, "Apache to listen")

    def answers(self) -> bool:
        assert self.process.poll() is None, (self.logs / "error.log").read_text()
        try:
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
            # Logged like any request: id 0, the ids of the clients start at 1.
            connection.request("HEAD", "/index.html?id=0")
            return connection.getresponse().status == 200
        except OSError:
            return False

    @property
    def pidfile(self) -> Path:
        return self.run / "httpd.pid"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)
        self.output.close()


class Clients:
    """HTTP clients, each bound to its own loopback address; every request carries a unique id
    (`?id=N`), so a line can be traced from Apache's files to the topic."""

    def __init__(self, port: int):
        self.port = port
        self.ids = itertools.count(1)
        self.lock = threading.Lock()
        self.done: dict[int, tuple[str, int, float]] = {}  # id -> (address, status, finished)
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []

    def request(self, address: str, path: str) -> None:
        with self.lock:
            request_id = next(self.ids)
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10,
                                                source_address=(address, 0))
        try:
            connection.request("GET", f"{path}?id={request_id}",
                               headers={"User-Agent": "site-test/1.0"})
            response = connection.getresponse()
            response.read()
            self.done[request_id] = (address, response.status, time.time())
        except OSError:
            pass  # not answered (e.g. during Apache's reload): then not logged either
        finally:
            connection.close()

    def start(self, address: str, path: str, rate: float, count: int | None = None) -> None:
        def loop():
            for n in itertools.count():
                if self.stopping.is_set() or (count is not None and n >= count):
                    return
                self.request(address, path)
                time.sleep(1 / rate)
        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        self.threads.append(thread)

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(30)


LOGROTATE_CONF = """\
{logs}/access.log {logs}/other_vhosts_access.log {{
    rotate 10
    compress
    delaycompress
    missingok
    {mode}
}}
"""
# Debian's /etc/logrotate.d/apache2: rename, a new file, then a graceful reload of Apache.
CREATE = """create 0644
    sharedscripts
    postrotate
        kill -USR1 "$(cat {pidfile})"
    endscript"""


def logrotate(folder: Path, apache: Apache, mode: str) -> None:
    """One forced rotation by the real logrotate, with its own config and state file."""
    conf = folder / f"logrotate-{mode.split()[0]}.conf"
    conf.write_text(LOGROTATE_CONF.format(logs=apache.logs, mode=mode.format(
        pidfile=apache.pidfile)))
    result = subprocess.run([shutil.which("logrotate", path=SBIN), "--force", "--state",
                             str(folder / "logrotate.state"), str(conf)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


class Shipper:
    """finale/ship.py (rsyslogd with conf/rsyslog/http-logs.conf) following one file."""

    def __init__(self, folder: Path, access_log: Path, bootstrap: str, topic: str, name: str):
        self.argv = [sys.executable, str(SHIP), "--access-log", str(access_log),
                     "--bootstrap-servers", bootstrap, "--topic", topic,
                     "--state-dir", str(folder / name)]
        self.log = open(folder / f"{name}.log", "a")
        self.pidfile = folder / name / "rsyslogd.pid"
        self.start()

    def start(self) -> None:
        self.process = subprocess.Popen(self.argv, stdout=self.log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        wait_for(lambda: self.rsyslogd_pid() is not None, 30, "rsyslogd to start")

    def rsyslogd_pid(self) -> int | None:
        assert self.process.poll() is None, Path(self.log.name).read_text()
        try:
            pid = int(self.pidfile.read_text())
            os.kill(pid, 0)
            return pid
        except (OSError, ValueError):
            return None

    def kill_9(self) -> None:
        os.kill(self.rsyslogd_pid(), signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            self.process.wait(60)
        self.log.close()


# ------------------------------------------------------------------------------------------------
# Reading the truth back: Apache's files, the topic
# ------------------------------------------------------------------------------------------------

def file_lines(logs: Path, name: str) -> list[bytes]:
    """Every line of a log and of its rotated copies (name.1, name.2.gz, ...)."""
    lines = []
    for path in sorted(logs.glob(name + "*")):
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as handle:
            lines.extend(handle.read().splitlines())
    return lines


def request_ids(lines) -> Counter:
    return Counter(int(REQUEST_ID.search(line)[1]) for line in lines)


def rotated_files(logs: Path) -> list[str]:
    return sorted(path.name for path in logs.glob("access.log*"))


# ------------------------------------------------------------------------------------------------
# The run
# ------------------------------------------------------------------------------------------------

@pytest.mark.faults
@pytest.mark.timeout(900)
def test_apache_log_shipped_through_rotations_crash_and_outage_and_the_scanner_alerts(
        own_broker, spark, tmp_path):
    info, state_dir = own_broker
    bootstrap, port = info["bootstrap_servers"], info["port"]
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic("vhost-logs", 3, 1)], wait_for_metadata=True)
    admin.close()
    analyzer = Analyzer(tmp_path, bootstrap, "http-logs", "alerts", "http-logs-dlq",
                        "--trigger", "2 seconds")
    apache = Apache(tmp_path)
    shipper = Shipper(tmp_path, apache.logs / "access.log", bootstrap, "http-logs", "ship")
    vhost_shipper = Shipper(tmp_path, apache.logs / "other_vhosts_access.log", bootstrap,
                            "vhost-logs", "ship-vhost")
    clients = Clients(apache.port)
    report, phases = {}, {}
    try:
        for address in NORMAL_CLIENTS:
            clients.start(address, "/index.html", RATE)

        def shipped() -> int:
            return end_offsets_total(bootstrap, "http-logs")

        def current_lines() -> int:
            return len((apache.logs / "access.log").read_bytes().splitlines())

        wait_for(lambda: shipped() >= 100, WAIT, "100 lines shipped", interval=0.5)
        phases["steady"] = 0

        def phase(name: str) -> None:
            """The ids from here on are counted under `name` in the report."""
            with clients.lock:
                phases[name] = next(clients.ids)

        # 1. Rename rotation with a graceful reload, as Debian's logrotate.d/apache2 does it.
        phase("logrotate create")
        logrotate(tmp_path, apache, CREATE)
        assert rotated_files(apache.logs) == ["access.log", "access.log.1"]
        wait_for(lambda: current_lines() >= 50, WAIT, "50 lines in the new access.log")

        # 2. In-place truncation: the file keeps its inode, the shipper starts it over.
        phase("logrotate copytruncate")
        logrotate(tmp_path, apache, "copytruncate")
        assert rotated_files(apache.logs) == ["access.log", "access.log.1", "access.log.2.gz"]
        wait_for(lambda: current_lines() >= 50, WAIT, "50 lines after copytruncate")

        # 3. The shipper crashes (no shutdown: no queue saved, no position written) and restarts
        # while the clients go on.
        phase("kill -9 shipper")
        written = current_lines()
        shipper.kill_9()
        wait_for(lambda: current_lines() >= written + 30, WAIT, "30 lines while it is down")
        shipper.start()

        # 4. The broker stops for 20 s; the clients go on, the shipper queues.
        wait_for(lambda: shipped() >= len(file_lines(apache.logs, "access.log")), WAIT,
                 "the shipper to catch up after its restart", interval=0.5)
        phase("broker stopped 20 s")
        assert local_kafka.stop(state_dir=state_dir, log=lambda message: None)
        time.sleep(OUTAGE_S)  # the outage itself: its length is the fault being injected
        local_kafka.start(port, state_dir=state_dir, log=lambda message: None)

        # The scanner, once the analyzer counts: 404s from one address.
        wait_for(lambda: analyzer.query().get("batch_id", -1) >= 1
                 or analyzer.process.poll() is not None, WAIT, "the analyzer's first batches",
                 interval=0.5)
        assert analyzer.process.poll() is None, analyzer.tail()
        # The analyzer in local mode: its Spark UI and driver ports on loopback only.
        listening = listening_addresses(analyzer.process.pid)
        assert listening and [a for a in listening if not is_loopback(a)] == [], listening
        phase("scan")
        scan_started = time.time()
        clients.start(SCANNER, "/wp-login.php", SCAN_RATE, count=SCAN_RATE * 20)

        def scanner_alert():
            alerts = [(record.timestamp, json.loads(record.value))
                      for record in read_topic(bootstrap, "alerts")]
            return [(stamp, alert) for stamp, alert in alerts
                    if alert["entity_type"] == "ip" and alert["entity"] == SCANNER]
        first = wait_for(scanner_alert, WAIT, "an ip alert on the scanner", interval=1)[0]
        clients.stop()
    finally:
        clients.stop()
        report["files"] = rotated_files(apache.logs)
        apache.stop()

    try:
        # Every line Apache wrote, over all its files, is in the topic.
        written = request_ids(file_lines(apache.logs, "access.log"))
        assert set(written.values()) == {1}, "Apache wrote a request twice?"
        wait_for(lambda: set(written) <= set(request_ids(
            r.value for r in read_topic(bootstrap, "http-logs"))), WAIT,
            "every written line in http-logs", interval=1)
        in_topic = request_ids(record.value for record in read_topic(bootstrap, "http-logs"))
        lost = set(written) - set(in_topic)
        duplicates = sum(in_topic.values()) - len(in_topic)
        answered = {i for i, (_, status, _) in clients.done.items() if status}
        report.update(written=len(written), shipped=sum(in_topic.values()),
                      duplicated=duplicates, lost=len(lost),
                      answered_not_in_files=len(answered - set(written)))
        bounds = [*phases.values(), max(written) + 1]
        report["phases"] = {
            name: {"written": sum(1 for i in written if low <= i < high),
                   "shipped": sum(n for i, n in in_topic.items() if low <= i < high),
                   "duplicated": sum(n - 1 for i, n in in_topic.items() if low <= i < high)}
            for name, low, high in zip(phases, bounds, bounds[1:], strict=False)}
        assert not lost
        assert duplicates <= 0.01 * len(written)
        # The lines are the records, unchanged, keyed by their client address.
        records = {int(REQUEST_ID.search(r.value)[1]): r
                   for r in read_topic(bootstrap, "http-logs")}
        by_id = {int(REQUEST_ID.search(line)[1]): line
                 for line in file_lines(apache.logs, "access.log")}
        assert all(records[i].value == line and records[i].key == line.split(b" ")[0]
                   for i, line in by_id.items())

        # The alert names the scanner and no normal client; the time from Apache writing the
        # last line the alert counts to the alert in Kafka.
        stamp, alert = first
        ip_alerts = {json.loads(r.value)["entity"] for r in read_topic(bootstrap, "alerts")
                     if json.loads(r.value)["entity_type"] == "ip"}
        assert ip_alerts == {SCANNER}
        start, end = (datetime.fromisoformat(alert[bound].replace("Z", "+00:00"))
                      for bound in ("window_start", "window_end"))
        window = [i for i, (address, _, _) in sorted(clients.done.items())
                  if address == SCANNER and i in by_id and start <= apache_time(by_id[i]) < end]
        last_needed = clients.done[window[alert["requests"] - 1]][2]
        report["scan_to_alert_s"] = round(stamp / 1000 - last_needed, 2)
        report["scan_start_to_alert_s"] = round(stamp / 1000 - scan_started, 2)
        assert end_offsets_total(bootstrap, "http-logs-dlq") == 0, "an Apache line went to the DLQ"

        # vhost_combined: every line Apache wrote is in its topic, keyed by the client address,
        # and parses into the fields of its combined twin.
        vhost_written = file_lines(apache.logs, "other_vhosts_access.log")
        vhost_records = read_topic(bootstrap, "vhost-logs")
        assert set(request_ids(vhost_written)) <= set(request_ids(r.value for r in vhost_records))
        assert all(r.key == r.value.split(b" ")[1] for r in vhost_records)
        fields = "ip", "user", "event_time", "method", "url", "status", "user_agent"
        parsed = {
            name: {int(REQUEST_ID.search(row.value.encode())[1]): tuple(row[f] for f in fields)
                   for row in parse_access_log(spark.createDataFrame(
                       [(line.decode(),) for line in lines], "value string")).collect()
                   if not row.malformed}
            for name, lines in (("vhost", vhost_written), ("combined", by_id.values()))}
        assert len(parsed["vhost"]) == len(vhost_written)
        assert parsed["vhost"] == {i: parsed["combined"][i] for i in parsed["vhost"]}
    finally:
        print("site run:", json.dumps(report))
        shipper.stop()
        vhost_shipper.stop()
        analyzer.stop()
        analyzer.kill()


def apache_time(line: bytes) -> datetime:
    """A line's %t, as an aware datetime."""
    return datetime.strptime(re.search(rb"\[([^\]]+)\]", line)[1].decode(), "%d/%b/%Y:%H:%M:%S %z")
