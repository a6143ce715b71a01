"""Stage 1 end to end: the real generator on a socket, the analyzer's own query wiring, exact
rows."""
import re
import subprocess
import sys
import threading
from datetime import datetime, timezone

import pytest
from conftest import ROOT, free_port, load_module, wait_for
from pyspark.testing import assertDataFrameEqual

# Each test starts the stage-1 analyzer, a Spark job, as a subprocess.
pytestmark = pytest.mark.spark

analyzer = load_module("minimal", "spark_streaming_analyzer")
LINE = re.compile(r'^(\S+) \S+ \S+ \[([^\]]+)\] "(\S+) (\S+) [^"]*" (\d{3}) (\d+|-) ')
ERRORS_SCHEMA = "event_time timestamp, ip string, method string, url string, status int, bytes long"


def expected_error(line: str) -> tuple:
    """The row http_errors gives for an error line, computed here independently of Spark."""
    ip, stamp, method, url, status, size = LINE.match(line).groups()
    event_time = (datetime.strptime(stamp, "%d/%b/%Y:%H:%M:%S %z").astimezone(timezone.utc)
                  .replace(tzinfo=None))
    return event_time, ip, method, url, int(status), None if size == "-" else int(size)


def start_collecting(process) -> list[str]:
    lines = []
    threading.Thread(target=lambda: lines.extend(line.rstrip("\n") for line in process.stdout),
                     daemon=True).start()
    return lines


@pytest.mark.slow
def test_errors_of_the_socket_stream_are_exactly_the_generated_error_lines(spark):
    port = free_port()
    generator = subprocess.Popen(
        [sys.executable, str(ROOT / "minimal" / "log_generator.py"), "--port", str(port),
         "--rate", "20"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    query = None
    try:
        output = start_collecting(generator)
        wait_for(lambda: any(line.startswith("# listening") for line in output), 30,
                 "the generator to listen")
        table = f"minimal_errors_{port}"
        query = (analyzer.error_stream(spark, "localhost", port)
                 .writeStream.format("memory").queryName(table).start())
        wait_for(lambda: spark.table(table).count() >= 5, 240, "5 error rows from the stream",
                 interval=0.5)
        query.stop()
        received = spark.table(table)
        count = received.count()
        # Spark's is the only connection: it receives every line printed after its marker.
        snapshot = list(output)
        markers = [i for i, line in enumerate(snapshot) if line.startswith("# client ")]
        assert snapshot[markers[0]].endswith(" connected")
        sent = [line for line in snapshot[markers[0] + 1:] if not line.startswith("#")]
        error_lines = [line for line in sent if int(LINE.match(line).group(5)) >= 400]
        # The query saw a prefix of `sent`, so its errors are the first `count` error lines.
        assert count >= 5 and len(error_lines) >= count
        assertDataFrameEqual(received, spark.createDataFrame(
            [expected_error(line) for line in error_lines[:count]], ERRORS_SCHEMA))
    finally:
        if query is not None:
            query.stop()
        generator.terminate()
        generator.wait(timeout=30)


def test_nothing_listening_is_one_line_and_exit_1():
    port = free_port()
    result = subprocess.run(
        [sys.executable, str(ROOT / "minimal" / "spark_streaming_analyzer.py"),
         "--port", str(port)],
        capture_output=True, text=True, timeout=120)
    assert (result.returncode, result.stdout, result.stderr) == (
        1, "", f"no log generator is listening on localhost:{port}: "
               "start python minimal/log_generator.py first\n")
