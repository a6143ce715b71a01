"""Watch the alerts of the final stage: a live table in the terminal, or JSON lines for pipes.

Reads the Kafka topic `alerts` written by the analyzer (key = alert_id, value = one JSON alert,
finale/common/alert.py). The analyzer may send the same alert several times: Spark's update mode
re-emits a window whose counts grew, and a replayed micro-batch re-sends what it had sent. The
viewer keeps one alert per alert_id, the latest version winning (like the compacted topic).

Run:
    python finale/alert_viewer.py                      # live table, new alerts only
    python finale/alert_viewer.py --from-beginning     # every alert still in the topic
    python finale/alert_viewer.py --json --from-beginning --timeout 5 | jq .entity

Output:
- default: a table, newest first (by emitted_at), redrawn when something changes. One line per
  alert: when, severity, rule, scope, entity, window, counts, the value the rule compared and its
  threshold in the rule's unit (a rate as a percentage, a count as a number), and the cause when
  the alert has one. On a terminal it redraws in place with the severity in colour (critical red,
  warning yellow); otherwise each refresh is printed after a `--- HH:MM:SS UTC: N alerts ---`
  line, without colour.
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

from finale.common import alert
from finale.common.cli import BOOTSTRAP_HELP, DEFAULT_BOOTSTRAP, silence_stdout
from finale.common.topics import ALERTS

# AlertBook: the latest version per alert_id (emitted_at is not part of "what changed").
from finale.generator.incidents import AlertBook

# (header, the cell of an alert, right-aligned): the table, one alert a line. VALUE and THRESHOLD
# read in the rule's unit (a rate as a percentage, a count as a number): the record says which.
COLUMNS = (
    ("EMITTED", lambda a: alert.clock(a.get("emitted_at")), False),
    ("SEVERITY", lambda a: str(a.get("severity") or "-"), False),
    ("RULE", lambda a: str(a.get("rule") or "-"), False),
    ("SCOPE", lambda a: str(a.get("entity_type") or "-"), False),
    ("ENTITY", lambda a: str(a.get("entity") or "-"), False),
    ("WINDOW (UTC)", lambda a: f"{alert.clock(a.get('window_start'))}-"
                               f"{alert.clock(a.get('window_end'))}", False),
    ("REQUESTS", lambda a: alert.number(a.get("requests"), "count"), True),
    ("ERRORS", lambda a: alert.number(a.get("errors"), "count"), True),
    ("VALUE", lambda a: alert.number(a.get("value"), a.get("unit")), True),
    ("THRESHOLD", lambda a: alert.number(a.get("threshold"), a.get("unit")), True),
    ("CAUSE", alert.cause, False),
)
SEVERITY_COLOURS = {"critical": "\033[1;31m", "warning": "\033[33m"}
RESET = "\033[0m"
CLEAR_SCREEN = "\033[H\033[2J"


def render_table(alerts: list[dict], colour: bool = False, max_rows: int | None = None) -> str:
    """The alerts (already in display order) as an aligned text table, one line per alert."""
    shown = alerts[:max_rows] if max_rows is not None else alerts
    rows = [tuple(cell(a) for _, cell, _ in COLUMNS) for a in shown]
    # The CAUSE column only when an alert has one.
    count = len(COLUMNS) if any(row[-1] for row in rows) else len(COLUMNS) - 1
    headers = [header for header, _, _ in COLUMNS[:count]]
    right_aligned = {i for i, (_, _, right) in enumerate(COLUMNS) if right}
    rows = [row[:count] for row in rows]
    widths = [max([len(headers[i])] + [len(row[i]) for row in rows]) for i in range(count)]

    def line(cells, severity: str | None = None) -> str:
        out = []
        for i, cell in enumerate(cells):
            padded = cell.rjust(widths[i]) if i in right_aligned else cell.ljust(widths[i])
            if colour and i == 1 and severity in SEVERITY_COLOURS:
                padded = f"{SEVERITY_COLOURS[severity]}{padded}{RESET}"
            out.append(padded)
        return "  ".join(out).rstrip()

    lines = [line(headers)]
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
    parser.add_argument("--topic", default=ALERTS.name, help="topic to read the alerts from")
    parser.add_argument("--from-beginning", action="store_true",
                        help="read every alert still in the topic, not only new ones")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON alert a line (new or changed alerts) instead of a "
                             "table")
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
    """The alert in a Kafka record (alert.decode), or None with a warning naming the record."""
    decoded = alert.decode(record.value, record.key)
    if decoded is None:
        print(f"warning: skipped a record that is not a JSON alert at {record.topic}/"
              f"{record.partition}@{record.offset}", file=sys.stderr)
    return decoded


def run(args: argparse.Namespace, consumer, out=sys.stdout) -> None:
    book = AlertBook()
    tty = out.isatty()
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    dirty, last_draw = not args.json, 0.0

    def draw() -> None:
        if tty:
            # Lines kept free: the title, a blank, the header, "more", the cursor.
            rows = max(shutil.get_terminal_size().lines - 5, 3)
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
