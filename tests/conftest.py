"""Shared fixtures: one local Spark session for the whole run, stage modules loaded by path."""
import importlib.util
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STAGES = ("minimal", "complet", "finale")
# finale's modules that the stage-parametrized contract suites load by the stages' common names.
FINALE_MODULES = {"log_generator": "finale.generator.app",
                  "access_log": "finale.analyzer.access_log",
                  "spark_streaming_analyzer": "finale.analyzer.app"}

# Everything runs in UTC: Spark's session time zone and the Python side that compares timestamps.
os.environ["TZ"] = "UTC"
time.tzset()


def load_module(stage: str, name: str):
    """Import ROOT/stage/name.py under a unique module name (the stages share file names).

    For the standalone scripts of minimal/ and complet/; finale is a package, imported as such."""
    stage_dir = ROOT / stage
    if stage == "finale":
        return importlib.import_module(FINALE_MODULES[name])
    module_name = f"{stage}_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, stage_dir / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def pytest_collection_modifyitems(items):
    """The kafka and spark markers follow the fixtures a test uses, directly or through another
    fixture, so `-m "not kafka"` can never run a test that needs the broker."""
    for item in items:
        for fixture in ("kafka", "spark"):
            if fixture in item.fixturenames:
                item.add_marker(fixture)


def free_port() -> int:
    """A TCP port nothing listens on right now, so tests never collide with a running demo."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(condition, timeout: float, what: str, interval: float = 0.05):
    """Poll `condition` until it returns a truthy value; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def process_tree(pid: int) -> set[int]:
    """`pid` and its descendants (a Python script and the JVM it started)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    tree, grown = {pid}, True
    while grown:
        children = {child for child, parent in parents.items() if parent in tree} - tree
        tree |= children
        grown = bool(children)
    return tree


def listening_addresses(pid: int) -> list[str]:
    """The local address:port of every TCP socket that `pid` or a descendant listens on
    (`ss -ltnp`)."""
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    tree = process_tree(pid)
    found = []
    for line in out.splitlines():
        pids = {int(p) for p in re.findall(r"pid=(\d+)", line)}
        if pids & tree:
            found.append(line.split()[3])
    return found


def is_loopback(address: str) -> bool:
    host = address.rsplit(":", 1)[0].strip("[]")
    return host.startswith("127.") or host in ("::1", "::ffff:127.0.0.1")


def spark_extra_jars() -> list[str]:
    """Jars the test session needs on its classpath (the Kafka connector, see finale/)."""
    from finale.tools import local_kafka
    try:
        return local_kafka.connector_jars()
    except local_kafka.KafkaSetupError:
        # Tests without Kafka still run; the `kafka` fixture fails with the one-line fix.
        return []


@pytest.fixture(scope="session")
def kafka():
    """Bootstrap servers of a real Kafka broker with the project's topics.

    KAFKA_BOOTSTRAP_SERVERS set: that cluster, nothing started. Otherwise the project's local
    broker (finale/local_kafka.py): reused if running, else started on a free port. A broker
    started by tests is stopped by the last test session still using it (several sessions may
    share it); a broker started by hand (`local_kafka.py start`) is left running.
    """
    from finale.tools import local_kafka
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        local_kafka.ensure_topics(external)
        yield external
        return
    users = local_kafka.DEFAULT_STATE_DIR / "test-sessions"
    users.mkdir(parents=True, exist_ok=True)
    me = users / str(os.getpid())
    me.touch()
    # Holds the pid of a broker started by tests, so a broker started by hand is never stopped.
    started_by_tests = users / "started-by-tests.pid"
    try:
        local_kafka.connector_jars()
        info, started = local_kafka.start(default_port=free_port(), log=lambda message: None)
        if started:
            started_by_tests.write_text(str(info["pid"]))
        else:
            local_kafka.ensure_topics(info["bootstrap_servers"])
    except local_kafka.KafkaSetupError as error:
        me.unlink(missing_ok=True)
        pytest.fail(f"local Kafka: {error}", pytrace=False)
    try:
        yield info["bootstrap_servers"]
    finally:
        me.unlink(missing_ok=True)
        others = [path for path in users.iterdir()
                  if path.name.isdigit() and local_kafka._alive(int(path.name))]
        running = local_kafka.broker_info()
        ours = started_by_tests.exists() and started_by_tests.read_text() == str(
            running and running["pid"])
        if ours and not others:
            local_kafka.stop(log=lambda message: None)
        if not others:
            started_by_tests.unlink(missing_ok=True)


@pytest.fixture
def own_broker(tmp_path):
    """(info, state dir) of a broker of this test alone (own state dir and port): a test may stop
    and restart it (an outage) without touching any other test."""
    from finale.tools import local_kafka
    state_dir = tmp_path / "kafka"
    info, _ = local_kafka.start(free_port(), state_dir=state_dir, log=lambda message: None)
    try:
        yield info, state_dir
    finally:
        local_kafka.stop(state_dir=state_dir, log=lambda message: None)


@pytest.fixture(scope="session")
def spark():
    """One local Spark session for the run, built as the stage builds its own (one builder:
    finale/common/spark.py), with the Kafka connector when it is there."""
    from finale.common.spark import spark_session

    session = spark_session("chaussettes-tests", "local[2]", jars=spark_extra_jars(),
                            log_level="ERROR")
    yield session
    session.stop()
