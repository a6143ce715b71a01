"""Watch the alerts of the final stage: a live table in the terminal, or JSON lines for pipes.

Reads the Kafka topic `alerts` written by spark_streaming_analyzer.py (key = alert_id, value = one
JSON alert). The analyzer may send the same alert several times: Spark's update mode re-emits a
window whose counts grew, and a replayed micro-batch re-sends what it had sent. The viewer keeps one
alert per alert_id, the latest version winning (like the compacted topic itself).

Run:
    python finale/alert_viewer.py                      # live table, new alerts only
    python finale/alert_viewer.py --from-beginning     # every alert still in the topic
    python finale/alert_viewer.py --json --from-beginning --timeout 5 | jq .entity

Output:
- default: a table, newest first (by emitted_at), redrawn when something changes; on a terminal it
  redraws in place with the severity in colour (critical red, warning yellow), otherwise each
  refresh is printed after a `--- HH:MM:SS UTC: N alerts ---` line, without colour.
- `--json`: one JSON alert a line, printed when an alert_id is new or when a later version differs
  (emitted_at aside); exact re-deliveries are dropped, so the last line of an alert_id is its
  latest version.
It stops on Ctrl-C, after `--max-alerts` distinct alerts, or after `--timeout` seconds.
"""
from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import time
from datetime import datetime, timezone

from finale.common.cli import BOOTSTRAP_HELP, DEFAULT_BOOTSTRAP, silence_stdout

# AlertBook: the latest version per alert_id; emitted_at changes at every (re-)emission of the
# same content, so it is not part of "what changed".
from finale.generator.incidents import AlertBook, cause, clock

COLUMNS = ("EMITTED", "SEVERITY", "SCOPE", "ENTITY", "WINDOW (UTC)", "REQUESTS", "ERRORS",
           "RATE", "THRESHOLD")
# Rules whose threshold is a number of requests per window, not a rate (rules.py: surge).
COUNT_THRESHOLD_RULES = ("surge",)
SEVERITY_COLOURS = {"critical": "\033[1;31m", "warning": "\033[33m"}
RESET = "\033[0m"
CLEAR_SCREEN = "\033[H\033[2J"


def _number(value, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def render_table(alerts: list[dict], colour: bool = False, max_rows: int | None = None) -> str:
    """The alerts (already in display order) as an aligned text table, one line per alert."""
    rows = []
    for alert in alerts[:max_rows] if max_rows is not None else alerts:
        rows.append((
            clock(alert.get("emitted_at")),
            str(alert.get("severity") or "-"),
            str(alert.get("entity_type") or "-"),
            str(alert.get("entity") or "-"),
            f"{clock(alert.get('window_start'))}-{clock(alert.get('window_end'))}",
            _number(alert.get("requests"), "d"),
            _number(alert.get("errors"), "d"),
            _number(alert.get("error_rate"), ".1%"),
            _number(alert.get("threshold"),
                    ".1f" if alert.get("rule") in COUNT_THRESHOLD_RULES else ".1%"),
            cause(alert),
        ))
    # The CAUSE column only when an alert has one: alerts of analyzers before the cause fields
    # keep their table.
    columns = COLUMNS + ("CAUSE",) if any(row[-1] for row in rows) else COLUMNS
    rows = [row[:len(columns)] for row in rows]
    right_aligned = {5, 6, 7, 8}
    widths = [max([len(columns[i])] + [len(row[i]) for row in rows]) for i in range(len(columns))]

    def line(cells, severity: str | None = None) -> str:
        out = []
        for i, cell in enumerate(cells):
            padded = cell.rjust(widths[i]) if i in right_aligned else cell.ljust(widths[i])
            if colour and i == 1 and severity in SEVERITY_COLOURS:
                padded = f"{SEVERITY_COLOURS[severity]}{padded}{RESET}"
            out.append(padded)
        return "  ".join(out).rstrip()

    lines = [line(columns)]
    lines += [line(row, row[1].lower()) for row in rows]
    hidden = len(alerts) - len(rows)
    if hidden > 0:
        lines.append(f"... {hidden} older alert(s) not shown")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Show the alerts of topic `alerts`, one per alert_id (latest version wins).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--bootstrap-servers", default=DEFAULT_BOOTSTRAP, help=BOOTSTRAP_HELP)
    parser.add_argument("--topic", default="alerts", help="topic to read the alerts from")
    parser.add_argument("--from-beginning", action="store_true",
                        help="read every alert still in the topic, not only new ones")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON alert a line (new or changed alerts) instead of a table")
    parser.add_argument("--max-alerts", type=int, default=None,
                        help="stop after this many distinct alerts (default: never)")
    parser.add_argument("--timeout", type=float, default=None,
                        help="stop after this many seconds (default: never)")
    parser.add_argument("--refresh", type=float, default=1.0,
                        help="seconds between two redraws of the table, at most one per change")
    args = parser.parse_args(argv)
    if args.max_alerts is not None and args.max_alerts < 1:
        parser.error(f"--max-alerts must be >= 1, got {args.max_alerts}")
    if args.timeout is not None and args.timeout <= 0:
        parser.error(f"--timeout must be > 0, got {args.timeout}")
    if args.refresh <= 0:
        parser.error(f"--refresh must be > 0, got {args.refresh}")
    return args


def open_consumer(bootstrap_servers: str, topic: str, from_beginning: bool):
    """A consumer on every partition of `topic`, without a consumer group (nothing committed)."""
    from kafka import KafkaConsumer

    return KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap_servers.split(","),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest" if from_beginning else "latest",
        client_id="chaussettes-alert-viewer",
        bootstrap_timeout_ms=5_000,
    )


def decode(record) -> dict | None:
    """The alert in a Kafka record, or None (with a warning) when it is not a JSON alert."""
    try:
        alert = json.loads(record.value)
    except (TypeError, ValueError):
        alert = None
    if not isinstance(alert, dict):
        print(f"warning: skipped a record that is not a JSON object at {record.topic}/"
              f"{record.partition}@{record.offset}", file=sys.stderr)
        return None
    if not alert.get("alert_id"):
        if record.key is None:
            print(f"warning: skipped an alert without alert_id at {record.topic}/"
                  f"{record.partition}@{record.offset}", file=sys.stderr)
            return None
        alert["alert_id"] = record.key.decode("utf-8", "replace")
    return alert


def run(args: argparse.Namespace, consumer, out=sys.stdout) -> None:
    book = AlertBook()
    tty = out.isatty()
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    dirty, last_draw = not args.json, 0.0

    def draw() -> None:
        if tty:
            rows = max(shutil.get_terminal_size().lines - 5, 3)  # title, blank, header, "more", cursor
            out.write(CLEAR_SCREEN)
            out.write(f"Chaussettes.io alerts ({len(book)}, newest first) - "
                      f"{datetime.now(timezone.utc):%H:%M:%S} UTC - Ctrl-C to quit\n\n")
            out.write(render_table(book.newest_first(), colour=True, max_rows=rows) + "\n")
        else:
            out.write(f"--- {datetime.now(timezone.utc):%H:%M:%S} UTC: {len(book)} alerts ---\n")
            out.write(render_table(book.newest_first()) + "\n")
        out.flush()

    while True:
        if args.max_alerts is not None and len(book) >= args.max_alerts:
            break
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            break
        wait = 0.5 if deadline is None else max(min(0.5, deadline - now), 0.0)
        batches = consumer.poll(timeout_ms=int(wait * 1000))
        for records in batches.values():
            for record in records:
                alert = decode(record)
                if alert is None or not book.add(alert):
                    continue
                if args.json:
                    out.write(json.dumps(alert, sort_keys=True) + "\n")
                else:
                    dirty = True
        if args.json:
            out.flush()
        elif dirty and time.monotonic() - last_draw >= args.refresh:
            draw()
            dirty, last_draw = False, time.monotonic()
    if not args.json and dirty:  # what changed since the last redraw (or the empty table)
        draw()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from kafka.errors import KafkaError

    try:
        consumer = open_consumer(args.bootstrap_servers, args.topic, args.from_beginning)
    except KafkaError:
        print(f"error: no Kafka broker answers at {args.bootstrap_servers} "
              "(start one: python finale/local_kafka.py start)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    try:
        run(args, consumer)
    except KafkaError as error:
        print(f"error: Kafka at {args.bootstrap_servers}: {type(error).__name__}: {error}",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:
        # The reader went away (`| head`): say nothing, and keep Python from failing on exit flush.
        silence_stdout()
        return 1
    finally:
        consumer.close(autocommit=False)
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    sys.exit(main())
