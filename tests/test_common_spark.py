"""finale/common/spark.py: the one session builder. On a local master nothing Spark opens listens
beyond 127.0.0.1 (the UI, the driver's RPC and block-manager ports), checked on the sockets of a
real session."""
import subprocess
import sys

import pytest
from conftest import is_loopback, listening_addresses, wait_for

from finale.common.spark import is_local

pytestmark = pytest.mark.spark

SESSION = """
import sys
from finale.common.spark import spark_session
spark = spark_session("loopback-check", "local[2]", ui=True)
print(spark.sparkContext.uiWebUrl, flush=True)
sys.stdin.read()
"""


@pytest.mark.parametrize("master, local", [
    ("local", True), ("local[2]", True), ("local[*]", True), ("local[2,3]", True),
    ("spark://host:7077", False), ("yarn", False), ("localhost", False)])
def test_local_masters(master, local):
    assert is_local(master) is local


def test_a_local_session_listens_on_loopback_only(tmp_path):
    env_free = {k: v for k, v in __import__("os").environ.items() if k != "SPARK_LOCAL_IP"}
    process = subprocess.Popen([sys.executable, "-c", SESSION], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                               env=env_free)
    try:
        ui = process.stdout.readline().strip()
        assert ui.startswith("http://127.0.0.1:"), ui
        # The UI, the driver's RPC endpoint and its block manager: three listening sockets at
        # least, once the context is up.
        addresses = wait_for(lambda: (lambda found: found if len(found) >= 3 else None)(
            listening_addresses(process.pid)), 60, "Spark's listening sockets")
        assert ui.rsplit(":", 1)[1] in {address.rsplit(":", 1)[1] for address in addresses}
        assert [a for a in addresses if not is_loopback(a)] == [], addresses
    finally:
        process.stdin.close()
        process.wait(60)
