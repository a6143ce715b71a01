"""--replay: send an existing access log unchanged, at a fixed rate or at a multiple of its own
pace.

Real traffic instead of the generated one: the lines are not parsed, only their "[%t]" time is read
(with --speed) to pace them; lines without one keep the pace of the latest line seen. A `.gz` file
is read decompressed.

Incidents (--incident KIND[=ENTITY]@START+DURATION, START relative to the log's first timestamp):
the real lines are never changed, dropped or reordered; each incident adds its own lines, one every
1/--incident-rate s of log time, --incident-error-rate % of them errors (ip: 404, a scanner's
misses; url: 500; global: 503), merged in before the first real line at or after their time:
- ip: that IP (a new one by default, 203.0.113.N: a documentation range, never a real client)
  requests scanner paths (PROBE_URLS) in turn;
- url: that URL (required: a page of the log, e.g. url=/, or a new one) is requested by clients
  198.51.100.1..CLIENTS in turn (documentation range), so no single IP stands out;
- global: those clients request, in turn, the last RECENT_URLS distinct URLs of the real log before
  the line (the site's own pages), so the failure is spread over the site.
An incident adds traffic rather than failing the real lines of its time because a quiet site has
about one request a minute: failing those would not reach any window's --min-requests.
"""
from __future__ import annotations

import calendar
import gzip
import random
import re
import sys
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone

from finale.common.alert import GLOBAL_ENTITY
from finale.common.cli import silence_stdout
from finale.generator.incidents import Incident, write_truth
from finale.generator.outputs import KafkaSinkError, log, open_kafka, open_output, write_stats

# "[28/Nov/2026:09:14:03 +0000]" of an access-log line, for --replay --speed.
LOG_TIME = re.compile(rb"\[(\d\d)/(\w{3})/(\d{4}):(\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)\]")
MONTH_NUMBERS = {month: number for number, month in
                 enumerate(b"Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split(), 1)}
MIN_BATCH_INTERVAL = 0.005  # s: lines due within 5 ms go out together (as the generator's batches)
MAX_BATCH = 65536  # most lines written at once, bounds memory and latency


# Paths scanners probe (an ip incident's requests), and the status each incident kind fails with.
PROBE_URLS = ("/wp-login.php", "/wp-admin/setup-config.php", "/.env", "/xmlrpc.php",
              "/phpmyadmin/index.php", "/.git/config")
ERROR_STATUS = {"ip": 404, "url": 500, "global": 503}
CLIENTS = 50  # the url and global incidents' clients: 198.51.100.1..50
RECENT_URLS = 25
REQUEST_URL = re.compile(rb'\] "[A-Z]+ (\S+)')


def default_incident_entity(kind: str, number: int) -> str:
    """The entity of `--incident KIND@...` without one (number: the incident's index from 1)."""
    if kind == "ip":
        return f"203.0.113.{number}"
    if kind == "global":
        return GLOBAL_ENTITY
    raise ValueError("a url incident on a replayed log needs its URL, e.g. url=/")


def open_log(path: str):
    """A replayed log as a binary file, decompressed if its name ends in .gz."""
    return gzip.open(path, "rb") if str(path).endswith(".gz") else open(path, "rb")


def first_log_time(path: str) -> float | None:
    """The log time of the first line of `path` that has one (what incident times count from)."""
    with open_log(path) as source:
        for line in source:
            moment = line_epoch(line)
            if moment is not None:
                return moment
    return None


class IncidentLines:
    """The lines one incident adds: line k at origin + start + k/rate of log time."""

    def __init__(self, incident: Incident, origin: float, rate: float, error_pct: float,
                 seed: int) -> None:
        self.incident, self.origin, self.rate, self.error_pct = incident, origin, rate, error_pct
        self.count = max(1, round(incident.duration * rate))
        self.rng = random.Random(
            f"chaussettes-replay:{seed}:{incident.kind}:{incident.entity}:{incident.start}")

    def time(self, k: int) -> float:
        return self.origin + self.incident.start + k / self.rate

    def line(self, k: int, recent: list[bytes]) -> bytes:
        """Line k (called in order of k: the error draws are seeded per incident); `recent`: the
        real log's latest distinct URLs at that point (what a global incident requests)."""
        kind, entity = self.incident.kind, self.incident.entity
        client = f"198.51.100.{k % CLIENTS + 1}"
        if kind == "ip":
            ip, url = entity, PROBE_URLS[k % len(PROBE_URLS)]
        elif kind == "url":
            ip, url = client, entity
        else:
            url = recent[k % len(recent)].decode("utf-8", "replace") if recent else "/"
            ip = client
        status = ERROR_STATUS[kind] if self.rng.random() * 100 < self.error_pct else 200
        stamp = datetime.fromtimestamp(int(self.time(k)), timezone.utc).strftime(
            "%d/%b/%Y:%H:%M:%S +0000")
        return (f'{ip} - - [{stamp}] "GET {url} HTTP/1.1" {status} 512 "-" '
                f'"chaussettes-incident/{kind}"\n').encode()


def inject(source: Iterable[bytes], incidents: tuple[Incident, ...], rate: float,
           error_pct: float, seed: int) -> Iterator[bytes]:
    """The lines of `source` unchanged and in their order, with each incident's lines merged in
    before the first real line whose log time (the latest seen: the log is not in order) reaches
    theirs, in time order (the earlier incident first at equal times); what is left after the last
    real line follows it. Times count from the first line that has one."""
    recent: OrderedDict[bytes, None] = OrderedDict()
    streams: list[IncidentLines] = []
    pending: list[tuple[float, int, int]] = []  # (time of the next line, incident number, k)

    def due_until(limit: float | None) -> Iterator[bytes]:
        while pending:
            moment, number, k = min(pending)
            if limit is not None and moment > limit:
                return
            pending.remove((moment, number, k))
            yield streams[number].line(k, list(recent))
            if k + 1 < streams[number].count:
                pending.append((streams[number].time(k + 1), number, k + 1))

    latest = None
    for line in source:
        moment = line_epoch(line)
        if moment is not None:
            if latest is None:
                streams = [IncidentLines(incident, moment, rate, error_pct, seed)
                           for incident in incidents]
                pending = [(stream.time(0), number, 0) for number, stream in enumerate(streams)]
            latest = moment if latest is None else max(latest, moment)
            yield from due_until(latest)
            match = REQUEST_URL.search(line)
            if match is not None:
                recent[match.group(1)] = None
                recent.move_to_end(match.group(1))
                if len(recent) > RECENT_URLS:
                    recent.popitem(last=False)
        yield line if line.endswith(b"\n") else line + b"\n"
    yield from due_until(None)


def line_epoch(line: bytes) -> float | None:
    """The log time of an access-log line in epoch seconds, None if it has none."""
    match = LOG_TIME.search(line)
    if match is None or match.group(2) not in MONTH_NUMBERS:
        return None
    day, month, year, hour, minute, second, sign, off_h, off_m = match.groups()
    offset = (int(off_h) * 3600 + int(off_m) * 60) * (1 if sign == b"+" else -1)
    return calendar.timegm((int(year), MONTH_NUMBERS[month], int(day), int(hour), int(minute),
                            int(second))) - offset


def replay(source, out, rate: float, speed: float | None, total: int | None) -> int:
    """Write the lines of `source` (a binary file) to `out` unchanged, line n due at t0 + n/rate,
    or with `speed` at t0 + (its log time - the first line's log time) / speed (the latest log time
    seen so far, for lines out of order or without a time). Returns the number of lines written."""
    t0 = time.monotonic()
    batch: list[bytes] = []
    written, first_time, latest = 0, None, 0.0
    for line in source:
        if total is not None and written + len(batch) >= total:
            break
        if not line.endswith(b"\n"):
            line += b"\n"
        n = written + len(batch)
        if speed is None:
            offset = n / rate
        else:
            moment = line_epoch(line)
            if moment is not None:
                first_time = moment if first_time is None else first_time
                latest = max(latest, (moment - first_time) / speed)
            offset = latest
        due = t0 + offset
        # Lines due within the next MIN_BATCH_INTERVAL go together: never a sleep per line.
        if due > time.monotonic() + MIN_BATCH_INTERVAL or len(batch) >= MAX_BATCH:
            if batch:
                out.write(b"".join(batch))
                out.flush()
                written += len(batch)
                batch = []
            time.sleep(max(0.0, due - time.monotonic()))
        batch.append(line)
    if batch:
        out.write(b"".join(batch))
        out.flush()
        written += len(batch)
    return written


def replay_incidents(specs, path: str,
                     truth: str | None) -> tuple[tuple[Incident, ...], str | None]:
    """--incident specs of a replay -> Incidents (default entities), and their truth written
    (times from the log's first timestamp); (incidents, None) or ((), the one-line error)."""
    try:
        incidents = tuple(Incident(kind, entity or default_incident_entity(kind, number), start,
                                   duration)
                          for number, (kind, entity, start, duration) in enumerate(specs, 1))
    except ValueError as error:
        return (), f"argument --incident: {error}"
    for incident in incidents:
        if incident.kind == "global" and incident.entity != GLOBAL_ENTITY:
            return (), ("argument --incident: a global incident takes no entity, "
                        f"got {incident.entity!r}")
        if any(c.isspace() or c == '"' for c in incident.entity):
            return (), ("argument --incident: no space or quote in an entity, "
                        f"got {incident.entity!r}")
    if truth is not None and incidents:
        try:
            origin = first_log_time(path)
        except (OSError, EOFError) as error:
            return (), f"error: cannot read {path}: {error}"
        if origin is None:
            return (), f"error: {path} has no line with a [%t] time to count incidents from"
        problem = write_truth(truth, incidents, origin)
        if problem is not None:
            return (), problem
    return incidents, None


def run_replay(args) -> int:
    """log_generator.py --replay: the file to Kafka (default) or --output; the exit status."""
    args.incident, problem = replay_incidents(args.incident, args.replay, args.truth)
    if problem is not None:
        log(problem)
        return 1
    kafka = args.output is None
    if kafka:
        out = open_kafka(args)
        if out is None:
            return 1
    else:
        out = open_output(args.output)
        if out is None:
            return 1
    ok, written = True, 0
    try:
        with open_log(args.replay) as source:
            lines = (inject(source, args.incident, args.incident_rate, args.incident_error_rate,
                            args.seed or 0) if args.incident else source)
            written = replay(lines, out, args.rate, args.speed, args.count)
    except KeyboardInterrupt:
        pass
    except KafkaSinkError as error:
        log(f"error: Kafka at {args.bootstrap_servers}: {error}")
        ok = False
    except BrokenPipeError:
        silence_stdout()
    finally:
        if kafka:
            ok = out.close() and ok
        elif out is not sys.stdout.buffer:
            out.close()
    write_stats(args.stats_file, out.stats() if kafka else {"output": args.output,
                                                             "lines_written": written})
    return 0 if ok else 1
