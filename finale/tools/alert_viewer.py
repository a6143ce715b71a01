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
  the alert has one. On a terminal it is a rich `Live` table redrawn in place, the severity in
  colour (critical red, warning yellow), cut to the terminal: the least useful columns are left
  out on a narrow terminal, then the entity and the cause end in an ellipsis, so a row never wraps
  and the header stays. Otherwise each refresh is printed whole after a
  `--- HH:MM:SS UTC: N alerts ---` line, without colour.
- `--json`: one JSON alert a line, printed when an alert_id is new or when a later version differs
  (emitted_at aside); exact re-deliveries are dropped, so the last line of an alert_id is its
  latest version.
It stops on Ctrl-C, after `--max-alerts` distinct alerts, or after `--timeout` seconds.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from datetime import datetime, timezone

from finale.common import alert
from finale.common.cli import BOOTSTRAP_HELP, DEFAULT_BOOTSTRAP, silence_stdout
from finale.common.topics import ALERTS

# AlertBook: the latest version per alert_id (emitted_at is not part of "what changed").
from finale.generator.incidents import AlertBook

# (header, the cell of an alert, right-aligned, priority, shortest width on a terminal): the table,
# one alert a line. VALUE and THRESHOLD read in the rule's unit (a rate as a percentage, a count as
# a number): the record says which. On a terminal narrower than the table, the columns of highest
# priority number are left out first, then ENTITY and CAUSE are cut (None: never narrower than
# their content), so a row never wraps.
COLUMNS = (
    ("EMITTED", lambda a: alert.clock(a.get("emitted_at")), False, 0, None),
    ("SEVERITY", lambda a: str(a.get("severity") or "-"), False, 0, None),
    ("RULE", lambda a: str(a.get("rule") or "-"), False, 1, None),
    ("SCOPE", lambda a: str(a.get("entity_type") or "-"), False, 4, None),
    ("ENTITY", lambda a: str(a.get("entity") or "-"), False, 0, 12),
    ("WINDOW (UTC)", lambda a: f"{alert.clock(a.get('window_start'))}-"
                               f"{alert.clock(a.get('window_end'))}", False, 5, None),
    ("REQUESTS", lambda a: alert.number(a.get("requests"), "count"), True, 3, None),
    ("ERRORS", lambda a: alert.number(a.get("errors"), "count"), True, 3, None),
    ("VALUE", lambda a: alert.number(a.get("value"), a.get("unit")), True, 1, None),
    ("THRESHOLD", lambda a: alert.number(a.get("threshold"), a.get("unit")), True, 2, None),
    ("CAUSE", alert.cause, False, 2, 12),
)
SEVERITY_STYLES = {"critical": "bold red", "warning": "yellow"}
GAP = 2  # spaces between two columns, as in the plain table


def _cells(alerts: list[dict], max_rows: int | None) -> tuple[list[int], list[tuple[str, ...]]]:
    """The indexes of COLUMNS to show (CAUSE only when an alert has one) and the shown rows."""
    shown = alerts[:max_rows] if max_rows is not None else alerts
    rows = [tuple(column[1](a) for column in COLUMNS) for a in shown]
    count = len(COLUMNS) if any(row[-1] for row in rows) else len(COLUMNS) - 1
    return list(range(count)), rows


def render_table(alerts: list[dict], max_rows: int | None = None) -> str:
    """The alerts (already in display order) as an aligned text table, one line per alert: the
    output when stdout is not a terminal (no colour, nothing cut)."""
    indexes, rows = _cells(alerts, max_rows)
    headers = [COLUMNS[i][0] for i in indexes]
    widths = [max([len(COLUMNS[i][0])] + [len(row[i]) for row in rows]) for i in indexes]

    def line(cells) -> str:
        return "  ".join(cell.rjust(width) if COLUMNS[i][2] else cell.ljust(width)
                         for i, cell, width in zip(indexes, cells, widths, strict=True)).rstrip()

    lines = [line(headers)] + [line([row[i] for i in indexes]) for row in rows]
    hidden = len(alerts) - len(rows)
    if hidden > 0:
        lines.append(f"... {hidden} older alert(s) not shown")
    return "\n".join(lines)


def fitting_columns(indexes: list[int], rows: list[tuple[str, ...]], width: int) -> list[int]:
    """The columns that fit `width` at their shortest (CAUSE and ENTITY at their minimum width,
    the others at their content's), leaving out the highest priority numbers first."""
    def shortest(i: int) -> int:
        natural = max([len(COLUMNS[i][0])] + [len(row[i]) for row in rows])
        return natural if COLUMNS[i][4] is None else min(natural, COLUMNS[i][4])

    kept = list(indexes)
    for priority in sorted({COLUMNS[i][3] for i in indexes}, reverse=True):
        if sum(shortest(i) for i in kept) + GAP * (len(kept) - 1) <= width or priority == 0:
            break
        kept = [i for i in kept if COLUMNS[i][3] < priority]
    return kept


def rich_table(alerts: list[dict], width: int, max_rows: int | None = None):
    """The alerts as a rich Table that fits `width` columns: one line per alert, the severity in
    colour, ENTITY and CAUSE cut with an ellipsis when the line would not fit. Every cell is a
    rich Text (never console markup: entities and causes come from log lines)."""
    from rich.table import Table
    from rich.text import Text

    indexes, rows = _cells(alerts, max_rows)
    indexes = fitting_columns(indexes, rows, width)
    table = Table(box=None, padding=(0, GAP // 2), pad_edge=False, show_edge=False,
                  header_style="bold", expand=False)
    for i in indexes:
        header, _, right, _, shortest = COLUMNS[i]
        # Cut columns are the only wrappable ones, so rich narrows them first; their cells never
        # wrap (Text no_wrap) but end in an ellipsis.
        table.add_column(header, justify="right" if right else "left",
                         no_wrap=shortest is None, overflow="ellipsis",
                         min_width=None if shortest is None else min(shortest, len(header)))
    for row in rows:
        cells = []
        for i in indexes:
            style = SEVERITY_STYLES.get(row[i].lower(), "") if COLUMNS[i][0] == "SEVERITY" else ""
            cells.append(Text(row[i], style=style, no_wrap=True, overflow="ellipsis"))
        table.add_row(*cells)
    hidden = len(alerts) - len(rows)
    if hidden > 0:
        table.caption = Text(f"... {hidden} older alert(s) not shown", no_wrap=True,
                             overflow="ellipsis")
        table.caption_justify = "left"
    return table


def live_view(alerts: list[dict], width: int, height: int):
    """What the terminal shows: a title line and the table, cut to width x height."""
    from rich.console import Group
    from rich.text import Text

    # Lines kept free: the title, a blank, the header, "more".
    rows = max(height - 4, 1)
    title = Text(f"Chaussettes.io alerts ({len(alerts)}, newest first) - "
                 f"{datetime.now(timezone.utc):%H:%M:%S} UTC - Ctrl-C to quit",
                 no_wrap=True, overflow="ellipsis")
    return Group(title, Text(""), rich_table(alerts, width, max_rows=rows))


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
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    dirty, last_draw = not args.json, 0.0
    live = None
    if not args.json and out.isatty():
        from rich.console import Console
        from rich.live import Live

        console = Console(file=out)
        # Redrawn by us when something changed (at most every --refresh), not on a timer.
        live = Live(console=console, auto_refresh=False, vertical_overflow="crop")
        live.start()

    def draw() -> None:
        if live is not None:
            live.update(live_view(book.newest_first(), live.console.width,
                                  live.console.height), refresh=True)
            return
        out.write(f"--- {datetime.now(timezone.utc):%H:%M:%S} UTC: {len(book)} alerts ---\n")
        out.write(render_table(book.newest_first()) + "\n")
        out.flush()

    try:
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
    finally:
        if live is not None:
            live.stop()


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
