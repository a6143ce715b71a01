"""Stage 2 end to end: the real generator on a socket, the analyzer as a subprocess with --secure,
and its per-window report compared exactly with the report computed here from the same lines."""
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
from collections import Counter
from datetime import datetime, timezone

import pytest
from conftest import ROOT, free_port, is_loopback, listening_addresses, load_module, wait_for

# Each test starts the stage-2 analyzer, a Spark job, as a subprocess.
pytestmark = pytest.mark.spark

analyzer = load_module("complet", "spark_streaming_analyzer")
generator_lib = load_module("complet", "log_generator")

SEED, RATE, START = 11, 40, "2026-11-28T09:00:00Z"
MODEL = {"users": 12, "error_users": 50.0, "error_urls": 25.0}
ERROR_RATE = 60.0
WINDOW, SLIDE, TOP = 4, 2, 3
WINDOWS_WANTED = 3
LINE = re.compile(r'^(\S+) \S+ \S+ \[([^\]]+)\] "\S+ (\S+) [^"]*" (\d{3}) ')
CONNECTED = re.compile(r"^client \S+ connected at line (\d+)$")
HEADER = re.compile(r"^window (\S+ \S+) -> ")


def generated_lines(count: int) -> list[str]:
    """Lines 0..count-1 exactly as the generator serves them (a pure function of seed and
    options)."""
    model = generator_lib.build_traffic_model(MODEL["users"], MODEL["error_users"],
                                              MODEL["error_urls"], SEED)
    start = datetime.fromisoformat(START.replace("Z", "+00:00")).timestamp()
    stream = generator_lib.LogStream(model, ERROR_RATE, RATE, start, SEED)
    return stream.lines(0, count).decode().splitlines()


def parse(line: str) -> tuple[int, str, str, int]:
    ip, stamp, url, status = LINE.match(line).groups()
    return int(datetime.strptime(stamp, "%d/%b/%Y:%H:%M:%S %z").timestamp()), ip, url, int(status)


def expected_report(requests: list[tuple[int, str, str, int]], window_start: int) -> str:
    """The report of one window, computed in plain Python from the lines it holds."""
    inside = [r for r in requests if window_start <= r[0] < window_start + WINDOW]
    errors = [r for r in inside if r[3] >= 400]

    def top(field: int):
        totals, failed = Counter(r[field] for r in inside), Counter(r[field] for r in errors)
        ranked = sorted(failed, key=lambda key: (-failed[key], -failed[key] / totals[key], key))
        return [(key, failed[key], totals[key]) for key in ranked[:TOP]]

    def utc(epoch: int) -> datetime:
        return datetime.fromtimestamp(epoch, timezone.utc).replace(tzinfo=None)

    return analyzer.format_window_report(
        utc(window_start), utc(window_start + WINDOW), len(inside), len(errors),
        sorted(Counter(r[3] for r in errors).items()), top(1), top(2), TOP)


def window_blocks(output: list[str]) -> dict[int, str]:
    """The analyzer's window reports by window start (epoch seconds)."""
    blocks, current = {}, None
    for line in output:
        header = HEADER.match(line)
        if header:
            start = datetime.strptime(header[1], "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc)
            current = int(start.timestamp())
            blocks[current] = ""
        elif not line.startswith("  "):
            current = None
        if current is not None:
            blocks[current] += line + "\n"
    return blocks


def collect(stream, into: list[str]):
    threading.Thread(target=lambda: into.extend(line.rstrip("\n") for line in stream),
                     daemon=True).start()


@pytest.mark.slow
def test_secure_analyzer_reports_every_window_exactly(tmp_path):
    port = free_port()
    generator = subprocess.Popen(
        [sys.executable, str(ROOT / "complet" / "log_generator.py"), "--port", str(port),
         "--rate", str(RATE), "--seed", str(SEED), "--start-time", START,
         "--users", str(MODEL["users"]), "--error-users", str(MODEL["error_users"]),
         "--error-urls", str(MODEL["error_urls"]), "--error-rate", str(ERROR_RATE)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    events, output = [], []
    collect(generator.stderr, events)
    analyzer_process = None
    stderr_path = tmp_path / "analyzer.err"
    try:
        wait_for(lambda: any(line.startswith("listening on") for line in events), 30,
                 "the generator to listen")
        with open(stderr_path, "w") as stderr:
            analyzer_process = subprocess.Popen(
                [sys.executable, str(ROOT / "complet" / "spark_streaming_analyzer.py"),
                 "--port", str(port), "--window", f"{WINDOW} seconds",
                 "--slide", f"{SLIDE} seconds", "--watermark", "1 second", "--top", str(TOP),
                 "--checkpoint", str(tmp_path / "checkpoints"), "--secure"],
                stdout=subprocess.PIPE, stderr=stderr, text=True, start_new_session=True,
                env={**os.environ, "SPARK_AUTHENTICATE_SECRET": secrets.token_hex(32)})
        collect(analyzer_process.stdout, output)

        # The Spark conf really has the production security settings.
        wait_for(lambda: output, 240, "the analyzer's security banner")
        assert output[0] == ("spark security: spark.authenticate=true "
                             "spark.network.crypto.enabled=true spark.io.encryption.enabled=true "
                             "(secret from $SPARK_AUTHENTICATE_SECRET)")

        # Three connections: the analyzer's port check, then one per query (windows, malformed).
        def first_lines():
            found = [int(m[1]) for m in map(CONNECTED.match, list(events)) if m]
            return found if len(found) == 3 else None

        n = max(wait_for(first_lines, 240, "3 client connections"))
        # local[2]: the UI and the driver's ports listen on loopback only.
        listening = listening_addresses(analyzer_process.pid)
        assert listening and [a for a in listening if not is_loopback(a)] == [], listening
        # Windows starting after the time of the last line sent before both queries were
        # connected hold only lines that both queries received: their reports must be exact.
        lines = generated_lines(n + RATE * 600)
        requests = [parse(line) for line in lines]
        first_covered = requests[n - 1][0] + 1
        first_covered += -first_covered % SLIDE
        wanted = [first_covered + k * SLIDE for k in range(WINDOWS_WANTED)]
        wait_for(lambda: wanted[-1] in window_blocks(output), 240,
                 f"{WINDOWS_WANTED} complete windows")

        analyzer_process.send_signal(signal.SIGINT)
        assert analyzer_process.wait(timeout=120) == 0
        blocks = window_blocks(output)
        covered = sorted(start for start in blocks if start >= first_covered)
        # No window skipped, each printed once (dict keys).
        assert covered[:WINDOWS_WANTED] == wanted
        assert ([blocks[start] for start in wanted]
                == [expected_report(requests, start) for start in wanted])
        # The data has errors.
        assert any(blocks[start].count("requests failed") for start in wanted)

        # Malformed lines are reported per batch with a running total (the generator makes none).
        malformed = [re.match(r"^malformed lines: (\d+) of (\d+) in this batch, "
                              r"(\d+) of (\d+) since start$", line)
                     for line in output if line.startswith("malformed")]
        assert malformed and all(m for m in malformed)
        totals = [0, 0]
        for m in malformed:
            totals = [totals[0] + int(m[1]), totals[1] + int(m[2])]
            assert (int(m[1]), totals) == (0, [int(m[3]), int(m[4])])
        # A clean stop: no Python traceback, no Java thread dying on the way out.
        spark_log = stderr_path.read_text()
        assert "Traceback" not in spark_log and "Exception in thread" not in spark_log
    finally:
        if analyzer_process is not None and analyzer_process.poll() is None:
            os.killpg(analyzer_process.pid, signal.SIGKILL)
            analyzer_process.wait()
        generator.terminate()
        generator.wait(timeout=30)


def test_nothing_listening_is_one_line_and_exit_1():
    port = free_port()
    result = subprocess.run(
        [sys.executable, str(ROOT / "complet" / "spark_streaming_analyzer.py"),
         "--port", str(port), "--secure"],
        capture_output=True, text=True, timeout=120)
    assert (result.returncode, result.stdout, result.stderr) == (
        1, "", f"no log generator is listening on localhost:{port}: "
               "start python complet/log_generator.py first\n")
