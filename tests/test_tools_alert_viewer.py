"""finale/tools/alert_viewer.py: deduplication by alert_id against a real broker, the plain table
of the alert record (finale/common/alert.py), and the rich table of a terminal, cut to its width."""
import io
import json
import subprocess
import sys
import uuid

from conftest import ROOT

from finale.common import alert as alert_record
from finale.tools import alert_viewer as viewer


def alert(alert_id, entity_type, entity, requests, errors, emitted_at, severity="warning",
          window=("2026-11-28T09:00:00.000Z", "2026-11-28T09:00:30.000Z")):
    return {"alert_id": alert_id, "rule": "error_rate", "entity_type": entity_type,
            "entity": entity, "window_start": window[0], "window_end": window[1],
            "requests": requests, "errors": errors, "error_rate": errors / requests,
            "threshold": 0.05, "thresholds_version": "v1", "severity": severity,
            "error_share": None, "top_entities": None, "metric": "error_rate",
            "value": errors / requests, "unit": "rate", "emitted_at": emitted_at}


A1 = alert("a", "ip", "10.0.0.1", 20, 10, "2026-11-28T09:00:21.000Z")
A1_AGAIN = dict(A1, emitted_at="2026-11-28T09:00:25.000Z")  # a re-delivery: same content
A2 = alert("a", "ip", "10.0.0.1", 40, 30, "2026-11-28T09:00:31.000Z", severity="critical")
B1 = alert("b", "url", "/cart", 50, 9, "2026-11-28T09:00:22.000Z")
C1 = alert("c", "global", "*", 1000, 120, "2026-11-28T09:00:40.000Z",
           window=("2026-11-28T09:00:10.000Z", "2026-11-28T09:00:40.000Z"))


def produce(bootstrap, topic, values):
    from kafka import KafkaAdminClient, KafkaProducer
    from kafka.admin import NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        admin.close()
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    for value in values:
        raw = value if isinstance(value, bytes) else json.dumps(value).encode()
        key = value["alert_id"].encode() if isinstance(value, dict) else None
        producer.send(topic, key=key, value=raw)
    producer.flush()
    producer.close()


def test_json_output_is_deduplicated_by_alert_id(kafka):
    topic = f"alerts-{uuid.uuid4().hex[:12]}"
    # C1 last: --max-alerts 3 stops on it, after every other record was read.
    produce(kafka, topic, [A1, B1, A1_AGAIN, A2, b"not json", C1])
    result = subprocess.run(
        [sys.executable, str(ROOT / "finale" / "alert_viewer.py"), "--bootstrap-servers", kafka,
         "--topic", topic, "--from-beginning", "--json", "--max-alerts", "3", "--timeout", "60"],
        capture_output=True, text=True, timeout=90)
    assert result.returncode == 0, result.stderr
    # A1_AGAIN differs from A1 only by emitted_at: dropped. A2 is a newer version of "a": printed.
    assert [json.loads(line) for line in result.stdout.splitlines()] == [A1, B1, A2, C1]
    assert result.stderr == f"warning: skipped a record that is not a JSON alert at {topic}/0@4\n"


def test_table_keeps_the_latest_version_newest_first(kafka):
    topic = f"alerts-{uuid.uuid4().hex[:12]}"
    produce(kafka, topic, [A1, B1, A2])
    result = subprocess.run(
        [sys.executable, str(ROOT / "finale" / "alert_viewer.py"), "--bootstrap-servers", kafka,
         "--topic", topic, "--from-beginning", "--max-alerts", "2", "--timeout", "60"],
        capture_output=True, text=True, timeout=90)
    assert result.returncode == 0, result.stderr
    # Not a terminal: each refresh is a header line and a plain table, without colour codes.
    last_refresh = result.stdout.rsplit(" UTC: 2 alerts ---\n", 1)[1]
    assert last_refresh == viewer.render_table([A2, B1]) + "\n"
    assert "\033[" not in result.stdout


def test_alert_book_latest_version_wins():
    book = viewer.AlertBook()
    assert [book.add(a) for a in (A1, B1, A1_AGAIN, A2, C1)] == [True, True, False, True, True]
    assert book.newest_first() == [C1, A2, B1]


def test_alert_fixtures_are_records_of_the_one_schema():
    assert tuple(A1) == alert_record.COLUMNS


def test_render_table():
    expected = (
        "EMITTED   SEVERITY  RULE        SCOPE   ENTITY    WINDOW (UTC)       REQUESTS  ERRORS"
        "  VALUE  THRESHOLD\n"
        "09:00:40  warning   error_rate  global  *         09:00:10-09:00:40      1000     120"
        "  12.0%       5.0%\n"
        "09:00:31  critical  error_rate  ip      10.0.0.1  09:00:00-09:00:30        40      30"
        "  75.0%       5.0%"
    )
    assert viewer.render_table([C1, A2]) == expected
    assert viewer.render_table([C1, A2], max_rows=1) == (
        viewer.render_table([C1]) + "\n... 1 older alert(s) not shown")


def test_render_table_shows_value_and_threshold_in_the_rules_unit():
    # A count rule (surge): its value and threshold are requests, not rates.
    surge = dict(alert("s", "ip", "10.0.0.7", 300, 0, "2026-11-28T09:00:50.000Z"),
                 rule="surge", threshold=24.5, metric="requests", value=300.0, unit="count")
    assert viewer.render_table([surge]).splitlines()[1] == (
        "09:00:50  warning   surge  ip     10.0.0.7  09:00:00-09:00:30       300       0"
        "    300       24.5")
    # An alert of an older analyzer, without metric, value and unit: '-', not a wrong number.
    old = {key: value for key, value in A1.items() if key not in ("metric", "value", "unit")}
    assert viewer.render_table([old]).splitlines()[1].endswith("20      10      -       0.05")


def test_render_table_cause_column_when_an_alert_names_its_cause():
    scanner = dict(A2, error_share=54 / 55, top_entities=None)
    named = dict(C1, error_share=None, top_entities=[
        {"entity_type": "ip", "entity": "198.51.100.7", "requests": 60, "errors": 54},
        {"entity_type": "ip", "entity": "10.0.0.2", "requests": 1, "errors": 1},
        {"entity_type": "url", "entity": "/wp-login.php", "requests": 54, "errors": 54}])
    expected = (
        "EMITTED   SEVERITY  RULE        SCOPE   ENTITY    WINDOW (UTC)       REQUESTS  ERRORS"
        "  VALUE  THRESHOLD  CAUSE\n"
        "09:00:40  warning   error_rate  global  *         09:00:10-09:00:40      1000     120"
        "  12.0%       5.0%  ip 198.51.100.7 54/60, url /wp-login.php 54/54\n"
        "09:00:31  critical  error_rate  ip      10.0.0.1  09:00:00-09:00:30        40      30"
        "  75.0%       5.0%  98% of the window's errors"
    )
    assert viewer.render_table([named, scanner]) == expected
    # Alerts without a cause: no CAUSE column.
    assert viewer.render_table([C1, A2]) == viewer.render_table([dict(C1, top_entities=None), A2])
    assert "CAUSE" not in viewer.render_table([C1, A2])


def test_bad_flag_is_one_line_and_status_2():
    result = subprocess.run([sys.executable, str(ROOT / "finale" / "alert_viewer.py"),
                             "--max-alerts", "0"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1].endswith("--max-alerts must be >= 1, got 0")


def test_unreachable_broker_is_one_line_and_status_1():
    from conftest import free_port

    result = subprocess.run([sys.executable, str(ROOT / "finale" / "alert_viewer.py"),
                             "--bootstrap-servers", f"localhost:{free_port()}", "--timeout", "1"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith("error: no Kafka broker answers at localhost:")


# A URL as long as a scanner's, and a global alert naming it as its cause.
LONG_URL = "/catalog/socks/" + "x" * 150 + "?color=red"
LONG = dict(alert("l", "url", LONG_URL, 50, 40, "2026-11-28T09:00:45.000Z", severity="critical"),
            error_share=0.8)
NAMED = dict(C1, top_entities=[
    {"entity_type": "ip", "entity": "198.51.100.7", "requests": 60, "errors": 54},
    {"entity_type": "url", "entity": LONG_URL, "requests": 54, "errors": 54}])


def terminal(width: int, renderable) -> tuple[str, str]:
    """What a terminal `width` columns wide shows: (text, the same with its colour codes)."""
    from rich.console import Console

    console = Console(width=width, record=True, file=io.StringIO(), force_terminal=True,
                      color_system="standard")
    console.print(renderable)
    return console.export_text(clear=False), console.export_text(styles=True)


def test_rich_table_at_60_columns_drops_columns_and_cuts_the_url():
    text, styled = terminal(60, viewer.rich_table([LONG, NAMED, A2, B1], 60))
    # One line per alert under the header: nothing wraps. Left out first: window, counts, scope,
    # threshold and cause; the long URL ends in an ellipsis.
    assert [line.rstrip() for line in text.splitlines()] == [
        "EMITTED   SEVERITY  RULE        ENTITY                 VALUE",
        "09:00:45  critical  error_rate  /catalog/socks/xxxxx…  80.0%",
        "09:00:40  warning   error_rate  *                      12.0%",
        "09:00:31  critical  error_rate  10.0.0.1               75.0%",
        "09:00:22  warning   error_rate  /cart                  18.0%",
    ]
    assert max(len(line) for line in text.splitlines()) <= 60
    # The severity in colour, set by rich (bold red, yellow), not by hand-written codes.
    assert "\x1b[1;31mcritical\x1b[0m" in styled and "\x1b[33mwarning \x1b[0m" in styled


def test_rich_table_at_200_columns_shows_every_column_and_cuts_the_long_cells():
    text, _ = terminal(200, viewer.rich_table([LONG, NAMED, A2, B1], 200))
    lines = [line.rstrip() for line in text.splitlines()]
    assert lines == [
        "EMITTED   SEVERITY  RULE        SCOPE   ENTITY" + " " * 47 + "WINDOW (UTC)       REQUESTS"
        "  ERRORS  VALUE  THRESHOLD  CAUSE",
        "09:00:45  critical  error_rate  url     /catalog/socks/" + "x" * 35 + "…  "
        "09:00:00-09:00:30        50      40  80.0%       5.0%  80% of the window's errors",
        "09:00:40  warning   error_rate  global  *" + " " * 52 + "09:00:10-09:00:40      1000"
        "     120  12.0%       5.0%  ip 198.51.100.7 54/60, url /catalog/socks/xxxxxxxxx…",
        "09:00:31  critical  error_rate  ip      10.0.0.1" + " " * 45 + "09:00:00-09:00:30"
        "        40      30  75.0%       5.0%",
        "09:00:22  warning   error_rate  url     /cart" + " " * 48 + "09:00:00-09:00:30        50"
        "       9  18.0%       5.0%",
    ]
    assert max(len(line) for line in text.splitlines()) == 200


def test_rich_table_renders_log_data_as_text_not_markup():
    # Console markup in an entity is shown as is, not interpreted (no style, nothing dropped).
    hostile = dict(A1, entity="/[bold red]x[/bold red][link=http://evil]y")
    text, styled = terminal(200, viewer.rich_table([hostile], 200))
    assert "/[bold red]x[/bold red][link=http://evil]y" in text
    assert "http://evil" not in styled.replace("[link=http://evil]", "")


def test_live_view_keeps_the_header_when_alerts_outnumber_the_lines():
    alerts = [alert(str(i), "ip", f"10.0.0.{i}", 20, 10, f"2026-11-28T09:00:{i:02d}.000Z")
              for i in range(30)]
    text, _ = terminal(60, viewer.live_view(alerts[::-1], 60, 12))
    lines = text.splitlines()
    # 12 lines: the title, a blank, the header, 8 alerts and the count of the others.
    assert len(lines) == 12
    assert lines[0].startswith("Chaussettes.io alerts (30, newest first) - ")
    assert lines[2].startswith("EMITTED   SEVERITY  RULE")
    assert lines[3].startswith("09:00:29") and lines[10].startswith("09:00:22")
    assert lines[11].rstrip() == "... 22 older alert(s) not shown"
