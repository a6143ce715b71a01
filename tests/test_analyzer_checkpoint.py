"""finale/analyzer/checkpoint.py: a restart after a change of the state's schema (here, the bytes
metric of finale/README.md "Extending") starts a new checkpoint with the documented message, never
a Spark error, and counts the windows that were open again, so no alert is lost.

Two runs of the real analyzer (subprocesses, available-now) on a real broker, one checkpoint
folder: the first with the stage's metrics, the second with the bytes metric appended to
metrics.METRICS the way the Extending section says.
"""
import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_analyzer_pipeline import consume, new_topics, send

from finale.analyzer import checkpoint
from finale.analyzer.rules.error_rate import ERROR_RATE
from finale.common import alert

pytestmark = [pytest.mark.slow, pytest.mark.spark]

ADD_BYTES = ('from finale.analyzer.metrics import METRICS, Metric, F\n'
             'METRICS.append(Metric("bytes", lambda: F.sum(F.coalesce(F.col("bytes"), F.lit(0)))'
             '.cast("long"), reads=("bytes",)))\n')
# The error_rate rule alone, population thresholds: 10.0.0.9 (every request a 500) fires on its
# own, the global and url scopes (at most half of the requests fail) never do.
THRESHOLDS = {"version": "test", "thresholds": [
    {"rule": ERROR_RATE, "scope": "global", "entity": None, "value": 0.9},
    {"rule": ERROR_RATE, "scope": "ip", "entity": None, "value": 0.3},
    {"rule": ERROR_RATE, "scope": "url", "entity": None, "value": 0.9},
]}


def lines(first: int, last: int) -> list[bytes]:
    """Seconds first..last of 09:00: 10.0.0.9 fails on /cart, 10.0.0.1 is served /, each second."""
    out = []
    for second in range(first, last + 1):
        stamp = f"28/Nov/2026:09:00:{second:02d} +0000"
        out.append(f'10.0.0.9 - - [{stamp}] "GET /cart HTTP/1.1" 500 10 "-" "bot"'.encode())
        out.append(f'10.0.0.1 - - [{stamp}] "GET / HTTP/1.1" 200 100 "-" "curl/8"'.encode())
    return out


def run(kafka, topics, folder: Path, *flags: str, prelude: str = "") -> subprocess.CompletedProcess:
    """The analyzer on `topics` (logs, alerts, dlq), available-now, its state in `folder`, with
    `prelude` (Python code) run before its main() and `flags` appended to its command line."""
    logs, alerts, dlq = topics
    code = f"import sys\n{prelude}from finale.analyzer.app import main\nsys.exit(main())\n"
    return subprocess.run(
        [sys.executable, "-c", code, "--bootstrap-servers", kafka, "--topic", logs,
         "--alerts-topic", alerts, "--dlq-topic", dlq, "--starting-offsets", "earliest",
         "--trigger", "available-now", "--thresholds", str(folder / "thresholds.json"),
         "--checkpoint", str(folder / "checkpoint"), "--status-file", str(folder / "status.json"),
         *flags],
        capture_output=True, text=True, timeout=420)


def latest_alerts(kafka, topic) -> dict[str, dict]:
    """The latest version of every alert of the topic, by (entity, window start)."""
    latest = {}
    for record in consume(kafka, topic):
        decoded = alert.decode(record.value, record.key)
        latest[(decoded["entity"], decoded["window_start"])] = decoded
    return latest


def test_a_new_metric_starts_a_new_checkpoint_and_recounts_the_open_windows(kafka, tmp_path):
    topics = new_topics(kafka, "logs", "alerts", "dlq")
    (tmp_path / "thresholds.json").write_text(json.dumps(THRESHOLDS))
    send(kafka, topics[0], [*lines(1, 12), b"not an access log line"])

    first = run(kafka, topics, tmp_path)
    assert first.returncode == 0, first.stderr
    assert "state changed" not in first.stdout
    old = [path.name for path in (tmp_path / "checkpoint").iterdir()]
    assert sorted(old)[0].startswith("alerts-") and sorted(old)[1] == "dead-letters"
    # 12 seconds of 10.0.0.9 failing: the window 09:00:00-09:00:30 holds 12 requests, 12 errors.
    window = "2026-11-28T09:00:00.000Z"
    assert latest_alerts(kafka, topics[1])[("10.0.0.9", window)]["requests"] == 12

    send(kafka, topics[0], lines(13, 24))
    second = run(kafka, topics, tmp_path, prelude=ADD_BYTES)
    assert second.returncode == 0, second.stderr
    assert "Exception" not in second.stdout + second.stderr
    changed = [line for line in second.stdout.splitlines() if "state changed" in line]
    assert len(changed) == 1, second.stdout
    new = [path for path in (tmp_path / "checkpoint").iterdir() if path.name not in old]
    assert len(new) == 1 and new[0].name.startswith("alerts-")
    previous = tmp_path / "checkpoint" / sorted(old)[0]
    assert (f"checkpoint: the window counts' state changed since {previous} (+metric bytes = "
            in changed[0])
    assert (f"): the alerts query starts a new checkpoint {new[0]}, reading the topic again from "
            "20" in changed[0])
    assert changed[0].endswith(f"; {previous} is kept, delete it once the new one runs")
    assert "metric bytes" in (new[0] / checkpoint.DESCRIPTION_FILE).read_text()
    # The open window was counted again from the topic: both halves, 24 requests and 24 errors,
    # where a new checkpoint without the rewind would have counted the second half alone (12).
    latest = latest_alerts(kafka, topics[1])
    assert (latest[("10.0.0.9", window)]["requests"], latest[("10.0.0.9", window)]["errors"]) == (
        24, 24)
    # The dead-letter query kept its checkpoint: the bad line is a dead letter once, not twice.
    assert [record.value for record in consume(kafka, topics[2])] == [b"not an access log line"]
