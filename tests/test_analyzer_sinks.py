"""finale/analyzer/sinks.py: alert sinks chosen by --alert-sink, and what a failing sink does.

The contract (sinks.py's docstring): a sink that raises stops the analyzer with exit status 1 and
one line naming the sink; the micro-batch is not committed, so the next start runs it again and
the alert is delivered: nothing is lost. Checked with the real analyzer (a subprocess, available
now) on a real broker: first with a sink that always fails, then with the Kafka sink.
"""
import json

import pytest
from test_analyzer_checkpoint import THRESHOLDS, latest_alerts, lines, run
from test_analyzer_pipeline import new_topics, send

from finale.analyzer import sinks

BROKEN = ('from finale.analyzer.sinks import alert_sink\n'
          '@alert_sink("broken", "always fails")\n'
          'def broken(arg, context):\n'
          '    def write(batch, batch_id):\n'
          '        raise OSError("disk full")\n'
          '    return write\n')


@pytest.mark.slow
@pytest.mark.spark
@pytest.mark.faults
def test_a_failing_sink_stops_the_analyzer_naming_it_and_the_batch_is_delivered_on_restart(
        kafka, tmp_path):
    topics = new_topics(kafka, "logs", "alerts", "dlq")
    (tmp_path / "thresholds.json").write_text(json.dumps(THRESHOLDS))
    send(kafka, topics[0], lines(1, 12))

    failed = run(kafka, topics, tmp_path, "--alert-sink", "kafka", "--alert-sink", "broken",
                 prelude=BROKEN)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert failed.stderr.splitlines()[-1] == (
        "error: query alerts failed: alert sink broken failed on batch 0: disk full")
    # The Kafka sink, called first, wrote the batch's alert before the broken one failed.
    window = "2026-11-28T09:00:00.000Z"
    assert latest_alerts(kafka, topics[1])[("10.0.0.9", window)]["requests"] == 12

    restarted = run(kafka, topics, tmp_path)
    assert restarted.returncode == 0, restarted.stderr
    # Batch 0 was not committed: the restart runs it again (at-least-once), so the alert is
    # written a second time with the same id, and nothing of the batch is lost.
    assert "alerts batch 0: 24 lines in" in restarted.stdout, restarted.stdout
    records = [record for record in latest_alerts(kafka, topics[1]).values()]
    assert [(alert["entity"], alert["window_start"], alert["requests"])
            for alert in records if alert["window_start"] == window] == [("10.0.0.9", window, 12)]


def test_an_unknown_sink_is_a_one_line_error():
    from finale.analyzer import app

    with pytest.raises(SystemExit) as stop:
        app.parse_args(["--alert-sink", "nowhere=/tmp/x"])
    assert stop.value.code == 2
    with pytest.raises(ValueError, match=r"unknown alert sink 'nowhere' \(known: kafka\)"):
        sinks.alert_sinks(["nowhere"], sinks.SinkContext("localhost:9092", "alerts"))
