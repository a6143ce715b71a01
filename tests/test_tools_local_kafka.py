"""The local Kafka platform (finale/tools/local_kafka.py): a real broker, real topics, Spark's
connector."""
import json
import os
import shutil
import socket
import subprocess
import sys
import uuid

import pytest
from conftest import ROOT, free_port, wait_for
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from finale.tools import kafka_jars, local_kafka

SCRIPT = str(ROOT / "finale" / "local_kafka.py")
EXTERNAL = bool(os.environ.get("KAFKA_BOOTSTRAP_SERVERS"))


def run_script(*args, env=None):
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True,
                          timeout=120, env=env)


def test_lines_make_a_round_trip_through_kafka_and_spark(spark, kafka):
    from kafka import KafkaProducer

    run = uuid.uuid4().hex[:8]
    # Fixed keys: the client's murmur2 partitioner spreads them over the 3 partitions.
    keys = [f"10.0.0.{host}" for host in range(1, 7)]
    lines = [(keys[i % len(keys)],
              f'{keys[i % len(keys)]} - - [28/Nov/2026:09:14:{i:02d} +0000] '
              f'"GET /socks/{run}/{i} HTTP/1.1" 200 {100 + i} "-" "pytest"')
             for i in range(24)]
    producer = KafkaProducer(bootstrap_servers=kafka, acks="all")
    try:
        sent = [producer.send("http-logs", key=key.encode(), value=line.encode()).get(timeout=30)
                for key, line in lines]
    finally:
        producer.close()
    partitions = sorted({meta.partition for meta in sent})
    assert len(partitions) >= 2, f"keys all landed in partition {partitions}"
    # Explicit offsets: exactly the range this test wrote (other sessions may share the topic).
    starting = {"http-logs": {str(p): min(m.offset for m in sent if m.partition == p)
                              for p in partitions}}
    ending = {"http-logs": {str(p): max(m.offset for m in sent if m.partition == p) + 1
                            for p in partitions}}

    records = (
        spark.read.format("kafka")
        .option("kafka.bootstrap.servers", kafka)
        .option("subscribe", "http-logs")
        .option("startingOffsets", json.dumps(starting))
        .option("endingOffsets", json.dumps(ending))
        .load()
        .where(F.col("value").cast("string").contains(f"/socks/{run}/"))
        .select("partition", "offset", F.col("key").cast("string").alias("key"),
                F.col("value").cast("string").alias("value"))
    )
    expected = spark.createDataFrame(
        [(meta.partition, meta.offset, key, line)
         for (key, line), meta in zip(lines, sent, strict=True)],
        "partition int, offset long, key string, value string",
    )
    assertDataFrameEqual(records.orderBy("partition", "offset"),
                         expected.orderBy("partition", "offset"), checkRowOrder=True)
    # In order per partition: offsets grow in the order the lines were sent.
    for partition in partitions:
        offsets = [meta.offset for meta in sent if meta.partition == partition]
        assert offsets == sorted(offsets)


def test_topics_have_the_expected_configuration(kafka):
    from kafka import KafkaAdminClient
    from kafka.admin import ConfigResource, ConfigResourceType

    admin = KafkaAdminClient(bootstrap_servers=kafka)
    try:
        described = {topic["name"]: len(topic["partitions"]) for topic in
                     admin.describe_topics(["http-logs", "alerts", "http-logs-dlq",
                                            "http-metrics"])}
        configs = admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name,
                            ["cleanup.policy", "message.timestamp.type", "retention.ms"])
             for name in ("http-logs", "alerts", "http-logs-dlq", "http-metrics")],
            config_filter="all")["topic"]
    finally:
        admin.close()
    assert described == {"http-logs": 3, "alerts": 1, "http-logs-dlq": 1, "http-metrics": 1}
    assert {name: config["cleanup.policy"]["value"] for name, config in configs.items()} == {
        "http-logs": "delete", "alerts": "compact,delete", "http-logs-dlq": "delete",
        "http-metrics": "delete"}
    # 7 days, 7 days (compacted and deleted: each window's alert has its own id), 14 days; the
    # window metrics 6 hours.
    assert {name: config["retention.ms"]["value"] for name, config in configs.items()} == {
        "http-logs": "604800000", "alerts": "604800000", "http-logs-dlq": "1209600000",
        "http-metrics": "21600000"}
    # The analyzer's --max-future check trusts the record timestamp: the broker's clock on
    # http-logs.
    timestamp_types = {name: config["message.timestamp.type"]["value"]
                       for name, config in configs.items()}
    assert timestamp_types == {
        "http-logs": "LogAppendTime", "alerts": "CreateTime", "http-logs-dlq": "CreateTime",
        "http-metrics": "CreateTime"}


def test_a_topic_of_an_older_version_gets_the_declared_configs_only_when_asked(kafka):
    """A broker made by an older version holds `alerts` compact-only: the local broker's start
    aligns it (align_configs), `topics --create` on another cluster leaves it alone."""
    from kafka import KafkaAdminClient
    from kafka.admin import ConfigResource, ConfigResourceType, NewTopic

    from finale.common.topics import ALERTS, Topic
    from finale.tools.kafka_topics import ensure_topics

    name = f"old-alerts-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=kafka)

    def configs() -> tuple[str, str, str]:
        found = admin.describe_configs([ConfigResource(
            ConfigResourceType.TOPIC, name, ["cleanup.policy", "retention.ms", "segment.ms"])],
            config_filter="all")["topic"][name]
        return tuple(found[key]["value"] for key in ("cleanup.policy", "retention.ms",
                                                      "segment.ms"))
    try:
        admin.create_topics([NewTopic(name, 1, 1, topic_configs={
            "cleanup.policy": "compact", "retention.ms": "3600000", "segment.ms": "3600000"})],
            wait_for_metadata=True)
        declared = {name: Topic(name, 1, dict(ALERTS.configs))}
        assert ensure_topics(kafka, declared) == []
        assert configs() == ("compact", "3600000", "3600000")
        assert ensure_topics(kafka, declared, align_configs=True) == []
        # The declared ones set, the topic's own segment.ms kept.
        assert wait_for(lambda: configs() == ("compact,delete", "604800000", "3600000"), 10,
                        "the aligned configs")
    finally:
        admin.delete_topics([name])
        admin.close()


@pytest.mark.skipif(EXTERNAL, reason="KAFKA_BOOTSTRAP_SERVERS points at another cluster")
def test_start_is_idempotent_and_status_reports_the_broker(kafka):
    info = local_kafka.broker_info()
    assert info and info["bootstrap_servers"] == kafka

    again = run_script("start")
    assert again.returncode == 0, again.stderr
    assert again.stdout == f"Kafka already running (pid {info['pid']}, {kafka})\n"
    assert local_kafka.broker_info()["pid"] == info["pid"]

    # Asking for another port is refused: the caller would talk to the wrong port.
    other = free_port()
    wrong = run_script("start", "--port", str(other))
    assert wrong.returncode == 1
    assert wrong.stderr == (f"error: the local broker already runs on port {info['port']}, not "
                            f"{other}: use --bootstrap-servers {kafka}, or stop it first\n")

    status = run_script("status")
    assert status.returncode == 0, status.stderr
    assert status.stdout.splitlines()[0] == (
        f"Kafka {kafka_jars.KAFKA_VERSION} running: pid {info['pid']}, port {info['port']}, "
        f"bootstrap servers {kafka}, log {info['log']}")
    assert {"  http-logs: 3 partitions", "  alerts: 1 partition",
            "  http-logs-dlq: 1 partition"} <= set(status.stdout.splitlines()[1:])


def test_missing_connector_is_a_one_line_error(tmp_path):
    code = ("import sys; from finale.tools import kafka_jars; "
            "kafka_jars.ensure_connector(sys.argv[1])")
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr == (
        "error: Spark's Kafka connector org.apache.spark:spark-sql-kafka-0-10_2.13:4.2.0 is not "
        f"in {tmp_path / 'spark-kafka'}: run `make setup` (or `python finale/local_kafka.py "
        "fetch`)\n")


def test_connector_of_another_version_is_refused(tmp_path):
    jars = kafka_jars.complete_jars("spark-kafka")
    assert jars, "run make setup first"
    stale = tmp_path / "spark-kafka"
    stale.mkdir()
    stamp = json.loads((jars[0].parent / kafka_jars.STAMP).read_text())
    stamp["coordinates"] = ["org.apache.spark:spark-sql-kafka-0-10_2.13:4.1.0"]
    (stale / kafka_jars.STAMP).write_text(json.dumps(stamp))
    for name in stamp["jars"]:
        (stale / name).write_bytes(b"")
    with pytest.raises(kafka_jars.KafkaSetupError, match="is not in .*run `make setup`"):
        kafka_jars.connector_jars(tmp_path)
    assert kafka_jars.connector_jars() == [str(jar) for jar in jars]


def test_fetch_when_complete_is_an_offline_no_op_without_maven():
    # No mvn and no network needed: PATH holds nothing, only the stamps are read. PYTHONPATH, if
    # set, is kept: it says which copy of the package runs.
    env = {"PATH": "", "HOME": "/nonexistent",
           **{key: os.environ[key] for key in ("PYTHONPATH",) if key in os.environ}}
    result = run_script("fetch", "--resolver", "maven", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        f"kafka-broker: {len(kafka_jars.complete_jars('kafka-broker'))} jars already in "
        f"{kafka_jars.DEFAULT_JARS_DIR / 'kafka-broker'}\n"
        f"spark-kafka: {len(kafka_jars.complete_jars('spark-kafka'))} jars already in "
        f"{kafka_jars.DEFAULT_JARS_DIR / 'spark-kafka'}\n")


# The connector's runtime closure minus what pyspark already ships (spark-*, slf4j, lz4, ...).
CONNECTOR_JARS = ["commons-pool2-2.13.1.jar", "kafka-clients-3.9.2.jar",
                  "spark-sql-kafka-0-10_2.13-4.2.0.jar",
                  "spark-token-provider-kafka-0-10_2.13-4.2.0.jar"]


@pytest.mark.slow
@pytest.mark.spark  # the Ivy resolver runs spark-submit
@pytest.mark.parametrize("resolver", ["maven", "ivy"])
def test_both_resolvers_fetch_the_same_connector(resolver, tmp_path):
    """Maven (fills ~/.m2) and the no-Maven path, pyspark's Ivy (cache in .cache/ivy): both are
    offline after their first run."""
    if resolver == "maven" and not shutil.which("mvn"):
        pytest.skip("Maven is not installed (the Ivy case covers this machine)")
    saved = kafka_jars.JAR_SETS
    kafka_jars.JAR_SETS = {"spark-kafka": saved["spark-kafka"]}
    try:
        fetched = kafka_jars.fetch(resolver, jars_dir=tmp_path, log=lambda message: None)
    finally:
        kafka_jars.JAR_SETS = saved
    assert sorted(jar.name for jar in fetched["spark-kafka"]) == CONNECTOR_JARS
    stamp = json.loads((tmp_path / "spark-kafka" / kafka_jars.STAMP).read_text())
    assert stamp["resolver"] == resolver
    assert kafka_jars.connector_jars(tmp_path) == [str(tmp_path / "spark-kafka" / name)
                                                    for name in CONNECTOR_JARS]


def test_start_refuses_a_port_held_by_another_program(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", free_port()))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(local_kafka.KafkaSetupError, match=f"^port {port} is already in use"):
            local_kafka.start(port=port, state_dir=tmp_path, log=lambda message: None)
    assert local_kafka.broker_info(tmp_path) is None


def test_a_port_left_in_time_wait_by_a_stopped_broker_counts_as_free():
    # A broker stopped a moment ago leaves its accepted connections in TIME_WAIT on its port;
    # `make demo` run twice in a row must not take that for "in use" (the broker can bind it).
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Java's server sockets do
    listener.bind(("127.0.0.1", free_port()))
    listener.listen()
    port = listener.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = listener.accept()
    accepted.close()  # the server side closes first: its end of the connection goes to TIME_WAIT
    listener.close()
    client.close()
    # The server end reaches TIME_WAIT once the kernel has handled the client's FIN (FIN_WAIT2
    # before that, which does block a bind): wait for it rather than assume it.
    wait_for(lambda: local_kafka._port_free(port), 5, f"port {port} to count as free")
    with socket.socket() as plain, pytest.raises(OSError):
        plain.bind(("127.0.0.1", port))  # the TIME_WAIT is there: a bind without SO_REUSEADDR fails


def test_start_without_jars_names_the_fix(tmp_path):
    with pytest.raises(local_kafka.KafkaSetupError,
                       match=r"broker jars are not in .*: run `make setup`"):
        local_kafka.start(port=free_port(), state_dir=tmp_path / "state",
                          jars_dir=tmp_path / "jars", log=lambda message: None)


def test_stop_when_not_running_is_a_no_op(tmp_path):
    messages = []
    assert local_kafka.stop(state_dir=tmp_path, log=messages.append) is False
    assert messages == ["Kafka is not running"]


def _run_cli(*args):
    return subprocess.run([sys.executable, str(ROOT / "finale" / "local_kafka.py"), *args],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("port", ["0", "65536", "-1"])
def test_start_refuses_a_port_out_of_range(port, tmp_path):
    result = _run_cli("start", "--port", port, "--state-dir", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1].endswith(f"error: --port must be 1..65535, got {port}")
    assert "Traceback" not in result.stderr
    with pytest.raises(local_kafka.KafkaSetupError,
                       match="^the broker port must be 1..65535, got 0$"):
        local_kafka.start(port=0, state_dir=tmp_path, log=lambda message: None)


@pytest.mark.parametrize("content", ['{"pid": 12', '{"pid": "12", "port": 9092}', '[]', ''])
def test_a_damaged_state_file_is_a_one_line_error(content, tmp_path):
    (tmp_path / "broker.json").write_text(content)
    for command in ("status", "stop", "start"):
        result = _run_cli(command, "--state-dir", str(tmp_path))
        assert result.returncode == 1, (command, result.stderr)
        assert result.stderr == (f"error: the local broker's state file {tmp_path}/broker.json is "
                                 f"damaged: stop any broker still running from {tmp_path} "
                                 f"(`pgrep -af kafka.Kafka`), then delete "
                                 f"{tmp_path}/broker.json\n"), command


def test_a_stale_pid_of_another_kafka_broker_is_never_stopped(tmp_path):
    # The pid in broker.json now belongs to another Kafka broker (another state dir, a Docker
    # broker): `kafka.Kafka` on its command line, but not our config. It must be left alone.
    other_config = tmp_path / "other" / "server.properties"
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "kafka.Kafka",
                              str(other_config)])
    try:
        state = tmp_path / "state"
        state.mkdir()
        (state / "broker.json").write_text(json.dumps(
            {"pid": other.pid, "port": 9092, "bootstrap_servers": "localhost:9092"}))
        assert local_kafka.broker_info(state) is None
        assert local_kafka.stop(state_dir=state, log=lambda message: None) is False
        assert _run_cli("status", "--state-dir", str(state)).returncode == 3
        assert other.poll() is None  # still running
        # The same process with our config path on its command line is ours.
        (state / "server.properties").write_text("")
        assert local_kafka._is_our_broker(other.pid, tmp_path / "other")
    finally:
        other.kill()
        other.wait()
