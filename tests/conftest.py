"""Shared fixtures: one local Spark session for the whole run, stage modules loaded by path."""
import importlib.util
import os
import socket
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STAGES = ("minimal", "complet", "finale")

# Everything runs in UTC: Spark's session time zone and the Python side that compares timestamps.
os.environ["TZ"] = "UTC"
time.tzset()


def load_module(stage: str, name: str):
    """Import ROOT/stage/name.py under a unique module name (the stages share file names)."""
    stage_dir = ROOT / stage
    if str(stage_dir) not in sys.path and stage == "finale":
        # finale's scripts import their sibling modules (access_log, local_kafka, ...).
        sys.path.insert(0, str(stage_dir))
    module_name = f"{stage}_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, stage_dir / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


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


def spark_extra_jars() -> list[str]:
    """Jars the test session needs on its classpath (the Kafka connector, see finale/)."""
    return []


@pytest.fixture(scope="session")
def spark():
    from pyspark.sql import SparkSession

    builder = (
        SparkSession.builder.master("local[2]")
        .appName("chaussettes-tests")
        # 200 shuffle partitions (the default) make small local jobs about ten times slower.
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.driver.extraJavaOptions", "-Duser.timezone=UTC")
    )
    jars = spark_extra_jars()
    if jars:
        builder = builder.config("spark.jars", ",".join(jars))
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()
