"""The analyzer on a Spark standalone cluster with authentication and RPC encryption (no Docker).

A master and a worker are started on loopback from pyspark's own bin/spark-class by
finale/spark_daemon.py, with a fresh secret. The analyzer (a subprocess: its JVM must start with the
secret) then runs its queries on that cluster with the right secret, and is refused with one line
with a wrong secret or none. Run alone: `pytest -m cluster`.
"""
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import urllib.request
from argparse import Namespace

import pytest
from conftest import ROOT, free_port, wait_for
from kafka import KafkaConsumer, KafkaProducer
from test_analyzer_pipeline import new_topics

from finale.analyzer import thresholds as finale_thresholds
from finale.generator import app as generator
from finale.tools import spark_daemon as daemon

pytestmark = [pytest.mark.cluster, pytest.mark.spark, pytest.mark.slow]

RATE, LINES, SEED = 20, 1200, 11       # 60 s of log time, an IP failing from 10 s to 40 s
START = "2026-11-28T09:00:00Z"
INCIDENT = "ip@10+30"
TIMEOUT = 240


def write_secret(path, value: str):
    path.write_text(value)
    path.chmod(0o600)
    return path


def master_json(webui_port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{webui_port}/json/", timeout=5) as answer:
        return json.load(answer)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """(master URL, master web UI port, secret file) of a running master with one worker."""
    folder = tmp_path_factory.mktemp("cluster")
    secret_file = write_secret(folder / "spark.secret", secrets.token_hex(32))
    master_port, webui_port = free_port(), free_port()
    url = f"spark://127.0.0.1:{master_port}"
    common = dict(host="127.0.0.1", secret_file=secret_file, cores=1, memory="1g",
                  master=url, work_dir=folder / "work")
    logs = {role: open(folder / f"{role}.log", "w") for role in ("master", "worker")}
    # Loopback only: the daemons and the executors they start bind and advertise 127.0.0.1.
    popen = dict(stdout=logs["master"], stderr=subprocess.STDOUT, start_new_session=True)
    previous_local_ip = os.environ.get("SPARK_LOCAL_IP")
    os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"
    processes = []
    try:
        processes.append(daemon.start(Namespace(role="master", port=master_port,
                                                webui_port=webui_port, **common), **popen))
        popen["stdout"] = logs["worker"]
        processes.append(daemon.start(Namespace(role="worker", port=free_port(),
                                                webui_port=free_port(), **common), **popen))
        wait_for(lambda: master_json(webui_port)["aliveworkers"] == 1, 120,
                 "the worker to register with the master")
        yield url, webui_port, secret_file
    finally:
        for process in processes:
            os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            process.wait(timeout=60)
        for log in logs.values():
            log.close()
        if previous_local_ip is None:
            del os.environ["SPARK_LOCAL_IP"]
        else:
            os.environ["SPARK_LOCAL_IP"] = previous_local_ip


def analyzer_argv(master: str, bootstrap: str, topics: list[str], checkpoint, *extra) -> list[str]:
    topic, alerts_topic, dlq_topic = topics
    # The documented default thresholds in a real file: an explicit --thresholds must exist.
    thresholds = checkpoint.parent / "thresholds.json"
    thresholds.write_text(json.dumps(finale_thresholds.DEFAULT_THRESHOLDS))
    return [sys.executable, str(ROOT / "finale" / "spark_streaming_analyzer.py"),
            "--master", master, "--bootstrap-servers", bootstrap, "--topic", topic,
            "--alerts-topic", alerts_topic, "--dlq-topic", dlq_topic,
            "--starting-offsets", "earliest", "--trigger", "available-now",
            "--thresholds", str(thresholds),
            "--checkpoint", str(checkpoint), *extra]


def processes_showing(text: str) -> list[int]:
    """Pids of the processes whose command line holds `text` (this process never does)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                if text.encode() in cmdline.read():
                    found.append(int(pid))
        except OSError:
            pass
    return found


def test_right_secret_runs_the_queries_on_the_cluster(cluster, kafka, tmp_path):
    url, webui_port, secret_file = cluster
    traffic, truth = tmp_path / "traffic.log", tmp_path / "truth.jsonl"
    assert generator.main(["--history", repr(LINES / RATE / 3600), "--rate", str(RATE),
                           "--seed", str(SEED), "--start-time", START, "--incident", INCIDENT,
                           "--truth", str(truth), "--output", str(traffic)]) == 0
    incident = json.loads(truth.read_text())
    topics = new_topics(kafka, "cluster-logs", "cluster-alerts", "cluster-dlq", partitions=1)
    producer = KafkaProducer(bootstrap_servers=kafka, linger_ms=5)
    for line in traffic.read_bytes().splitlines():
        producer.send(topics[0], line)
    producer.flush()
    producer.close()

    secret = secret_file.read_text()
    argv = analyzer_argv(url, kafka, topics, tmp_path / "ck", "--secure",
                         "--secret-file", str(secret_file))
    # Executors get SPARK_EXECUTOR_MEMORY: the worker offers 1g, the default would take all of it.
    env = {**os.environ, "SPARK_EXECUTOR_MEMORY": "512m"}
    analyzer = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env)
    output = {}
    readers = [threading.Thread(target=lambda name=name: output.__setitem__(
        name, getattr(analyzer, name).read())) for name in ("stdout", "stderr")]
    for reader in readers:
        reader.start()
    try:
        # While the application runs on the cluster (driver, master, worker and executor are all
        # up), no process shows the secret on its command line.
        apps = wait_for(lambda: [app for app in master_json(webui_port)["activeapps"]
                                 if app["cores"] >= 1], TIMEOUT,
                        "an executor of the analyzer's application on the worker")
        assert [app["name"] for app in apps] == ["chaussettes-finale-analyzer"]
        assert processes_showing(secret) == []
        assert analyzer.wait(timeout=TIMEOUT) == 0
    finally:
        analyzer.kill()
        for reader in readers:
            reader.join()
    stdout = output["stdout"]
    assert ("spark security: spark.authenticate=true spark.network.crypto.enabled=true "
            "spark.io.encryption.enabled=true") in stdout, stdout + output["stderr"]
    consumer = KafkaConsumer(topics[1], bootstrap_servers=kafka, auto_offset_reset="earliest",
                             consumer_timeout_ms=10000)
    alerts = [json.loads(record.value) for record in consumer]
    consumer.close()
    assert {(alert["entity_type"], alert["entity"]) for alert in alerts} == {
        ("ip", incident["entity"])}


def refused(cluster, kafka, tmp_path, *extra) -> subprocess.CompletedProcess:
    url, _, _ = cluster
    topics = new_topics(kafka, "cluster-logs", "cluster-alerts", "cluster-dlq", partitions=1)
    return subprocess.run(analyzer_argv(url, kafka, topics, tmp_path / "ck", *extra),
                          capture_output=True, text=True, timeout=TIMEOUT)


def test_wrong_secret_is_refused_with_one_line(cluster, kafka, tmp_path):
    url, _, _ = cluster
    wrong = write_secret(tmp_path / "wrong.secret", secrets.token_hex(32))
    done = refused(cluster, kafka, tmp_path, "--secure", "--secret-file", str(wrong))
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: the Spark master at {url.removeprefix('spark://')} refused the connection: "
        "authentication failed (start the driver with --secure and the secret file the master "
        "was started with)")
    assert "Traceback" not in done.stderr


def test_no_secret_is_refused_with_one_line(cluster, kafka, tmp_path):
    url, _, _ = cluster
    done = refused(cluster, kafka, tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: the Spark master at {url.removeprefix('spark://')} refused the connection (it "
        "may require authentication: use --secure)")
