"""Final-stage log generator: the stage-2 sock shop, written to Kafka, with injected incidents.

Run:
  python finale/log_generator.py                              # Kafka localhost:9092, topic http-logs, 10 lines/s
  python finale/log_generator.py --rate 200 --incident ip@30+20 --incident url=/cart@60+15 \
      --incident global@90+10 --truth .state/finale/truth.jsonl
  python finale/log_generator.py --output - --count 5 --seed 1 --start-time 2026-11-28T09:00:00Z
  python finale/log_generator.py --history 24 --rate 20 --output .state/finale/history.log
  python finale/log_generator.py --replay access.log --speed 10      # real logs, 10x their pace

Every line is in the Apache "combined" format (the only place this template is written down):
  %h %l %u [%t] "%r" %>s %b "%{Referer}i" "%{User-agent}i"
  203.0.113.7 - - [28/Nov/2026:09:14:03 +0000] "GET /socks/wool HTTP/1.1" 404 512 "-" "Mozilla/5.0 ..."
with the log time in UTC; line i carries the log time start + i/rate (to the second).

Traffic model: --users users, each one client IP with its own user agent, visit the shop's URLs.
Error model, exactly: the error users are a seeded sample of round(PU/100*users) users, the error
URLs a seeded sample of round(PL/100*len(URLS)) URLs; a request fails (4xx/5xx: 404, 500, 503, 403,
502, ...) with probability PE/100 if and only if its user is an error user AND its URL an error
URL; every other request succeeds (2xx/3xx).

Incidents (--incident KIND[=ENTITY]@START+DURATION, repeatable; START and DURATION in seconds of
log time from line 0): while log time is in [start + START, start + START + DURATION), every
request of that IP (ip), of that URL (url) or every request (global) fails with probability
--incident-error-rate/100 (default 90 %, same 4xx/5xx mix), or with its error-pair probability
if that is higher; a surge (surge[=IP]) makes that IP send SURGE_MULTIPLIER (10) x its normal
share of the lines, all successful (lines of other users reassigned to it: the line rate, hence
the global volume, is unchanged). The incident uses the same per-line draw as the error model, so outside the
incident windows the lines are byte-identical to a run without incidents. ENTITY defaults to a
seeded random pick (a different one for each incident of a kind when possible). --truth FILE
writes one JSON line per incident: {"kind", "entity", "start", "end"} (ISO 8601 UTC log time).

Output, one of:
- Kafka (default): topic --topic of --bootstrap-servers, key = client IP, value = the line
  (no newline); producer tuned for throughput (acks=1, 512 KiB batches, linger 20 ms, --compression);
  delivery failures are reported and make the exit status 1; flushed on exit, Ctrl-C or SIGTERM.
  --kafka-client confluent-kafka: the same records, partitions and counts with librdkafka
  (optional package, several times less CPU per line; finale/outputs.py).
- --output FILE or - (stdout).
- --host/--port given: the stage-2 TCP server, every line broadcast to every connected client.
Lines are written in batches when due (line i at t0 + i/rate of wall time). --history HOURS writes
HOURS of log time (round(HOURS*3600*rate) lines, ending now unless --start-time) as fast as
possible to --output, for the threshold job. --replay FILE sends an existing access log as it is,
at --rate lines/s or, with --speed X, at X times the pace of its own timestamps; --incident and
--truth work with it too (times from the log's first timestamp, incident lines added to the real
ones, which stay unchanged and in their order: finale/replay.py).

Reproducibility: line i is a pure function of (--seed, the model options, --rate, --start-time,
the incidents, i): the same options give byte-identical lines whatever the output or the pace.
Library API: build_traffic_model(...) -> TrafficModel, LogStream(...).lines(i, j), main(argv).
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import random
import selectors
import signal
import socket
import sys
import threading
import time
from array import array
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone

from finale.common.cli import BOOTSTRAP_HELP, DEFAULT_BOOTSTRAP, OneLineErrorParser
from finale.generator.incidents import (
    SURGE_MULTIPLIER,
    Incident,
    incident_spec,
    resolve_incidents,
    write_truth,
)
from finale.generator.outputs import (
    COMPRESSIONS,
    CONFLUENT_MISSING,
    KAFKA_CLIENTS,
    KafkaSinkError,
    log,
    open_kafka,
    open_output,
    topic_name,
    write_stats,
)
from finale.generator.replay import run_replay
from finale.generator.shop import ERROR_STATUSES, OK_STATUSES, REFERERS, SHOP, URLS, USER_AGENTS

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

BLOCK = 4096  # lines drawn per seeded block: line i only depends on block i // BLOCK
MAX_BATCH = 65536  # most lines written at once (unpaced runs), bounds memory and latency
MIN_BATCH_INTERVAL = 0.005  # s: at high rates gather 5 ms of lines per write instead of a write per line
HIGH_WATER = 8 << 20  # bytes queued for one client above which no new batch is made
STALL_TIMEOUT = 10.0  # s: a client with queued bytes that takes nothing for this long is dropped

@dataclass(frozen=True)
class TrafficModel:
    """Who visits the shop and which (user, URL) pairs may fail; a pure function of its arguments."""
    ips: tuple[str, ...]          # one per user
    user_agents: tuple[str, ...]  # aligned with ips: a user keeps one browser
    urls: tuple[str, ...]
    error_ips: frozenset[str]
    error_urls: frozenset[str]


def build_traffic_model(users: int, error_users_pct: float, error_urls_pct: float,
                        seed: int) -> TrafficModel:
    if users < 1 or not 0 <= error_users_pct <= 100 or not 0 <= error_urls_pct <= 100:
        raise ValueError("need users >= 1 and percentages between 0 and 100")
    rng = random.Random(f"chaussettes-model:{seed}")  # str seeds are hashed with SHA-512: stable
    ips: list[str] = []
    seen: set[str] = set()
    while len(ips) < users:
        ip = f"{rng.choice((31, 46, 51, 62, 78, 81, 86, 92, 109, 176, 185, 193, 212))}." \
             f"{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        if ip not in seen:
            seen.add(ip)
            ips.append(ip)
    user_agents = tuple(rng.choice(USER_AGENTS) for _ in ips)
    error_ips = frozenset(rng.sample(ips, round(error_users_pct / 100 * users)))
    error_urls = frozenset(rng.sample(URLS, round(error_urls_pct / 100 * len(URLS))))
    return TrafficModel(tuple(ips), user_agents, URLS, error_ips, error_urls)


def format_log_time(second: int) -> bytes:
    t = time.gmtime(second)
    return (f"{t.tm_mday:02d}/{MONTHS[t.tm_mon - 1]}/{t.tm_year}:"
            f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000").encode()


class LogStream:
    """Line i of the log, as bytes, for any i: drawn block by block from precomputed pools.

    A pool of visits (user, URL, referer, sizes and statuses, pre-formatted around the log time)
    is built once; each line then costs two random 32-bit numbers (which visit, does it fail)
    and three list slots joined at write time, instead of a random.choice per field.
    """

    def __init__(self, model: TrafficModel, error_rate_pct: float, rate: float, start: float,
                 seed: int, incidents: tuple[Incident, ...] = (), incident_error_pct: float = 90.0):
        self.rate, self.start, self.seed = rate, start, seed
        rng = random.Random(f"chaussettes-pool:{seed}")
        pool_size = 1 << max(15, min(20, (8 * len(model.ips)).bit_length()))
        self.mask = pool_size - 1
        users = rng.choices(range(len(model.ips)), k=pool_size)
        shop = rng.choices(SHOP, weights=[weight for *_, weight in SHOP], k=pool_size)
        referers = rng.choices(REFERERS, k=pool_size)
        ok_statuses = {method: rng.choices(*zip(*mix), k=pool_size)
                       for method, mix in OK_STATUSES.items()}
        error_statuses = rng.choices(*zip(*ERROR_STATUSES), k=pool_size)
        # fail iff (32-bit uniform draw) < threshold: exactly never at 0 %, always at 100 %.
        threshold = round(error_rate_pct / 100 * (1 << 32))
        self.heads, self.tails_ok, self.tails_error, self.thresholds = [], [], [], []
        heads: dict[str, bytes] = {}
        for k, (user, (url, method, low, high, _), referer, error) in enumerate(zip(
                users, shop, referers, error_statuses)):
            ip, ok = model.ips[user], ok_statuses[method][k]
            request = f'] "{method} {url} HTTP/1.1" '
            end = f' "{referer}" "{model.user_agents[user]}"\n'
            size = "-" if ok in (204, 304) else rng.randint(low, high)
            # One head object per IP, not per visit: the lines of a block then touch a few
            # cache-hot objects instead of thousands (the same bytes).
            self.heads.append(heads.get(ip) or heads.setdefault(ip, f"{ip} - - [".encode()))
            self.tails_ok.append(f"{request}{ok} {size}{end}".encode())
            self.tails_error.append(f"{request}{error} {rng.randint(200, 1200)}{end}".encode())
            is_error_pair = ip in model.error_ips and url in model.error_urls
            self.thresholds.append(threshold if is_error_pair else 0)
        # Each incident: the range of line indexes it covers and, per visit of the pool, the
        # failure threshold it imposes (0 for visits it does not touch).
        incident_threshold = round(incident_error_pct / 100 * (1 << 32))
        visit_ips = [model.ips[user] for user in users]
        visit_urls = [url for url, *_ in shop]
        self.incidents, self.surges = [], []
        for number, incident in enumerate(incidents):
            if incident.kind == "surge":
                self.surges.append(self._surge(number, incident, visit_ips, pool_size))
                continue
            if incident.kind == "ip":
                touched = [ip == incident.entity for ip in visit_ips]
            elif incident.kind == "url":
                touched = [url == incident.entity for url in visit_urls]
            else:
                touched = [True] * pool_size
            self.incidents.append((self.first_line_at(incident.start),
                                   self.first_line_at(incident.start + incident.duration),
                                   [incident_threshold if t else 0 for t in touched]))
        self.block_index, self.block = -1, []
        self.times: dict[int, bytes] = {}

    def _surge(self, number: int, incident: Incident, visit_ips: list[str], pool_size: int):
        """(first line, end line, seed, draw threshold, head) of a surge incident: each line of its
        time is taken by the IP (its head, the visit's successful tail) iff its surge draw is below
        the threshold, chosen so that the IP sends SURGE_MULTIPLIER x its share of the pool."""
        share = visit_ips.count(incident.entity) / pool_size
        taken = min(1.0, (SURGE_MULTIPLIER - 1) * share / (1 - share)) if share < 1 else 1.0
        return (self.first_line_at(incident.start),
                self.first_line_at(incident.start + incident.duration),
                f"chaussettes-surge:{self.seed}:{number}", round(taken * (1 << 32)),
                f"{incident.entity} - - [".encode())

    def first_line_at(self, offset: float) -> int:
        """The smallest i whose log time start + i/rate is at or after start + offset."""
        i = max(math.ceil(offset * self.rate), 0)
        while i > 0 and (i - 1) / self.rate >= offset:
            i -= 1
        while i / self.rate < offset:
            i += 1
        return i

    def second(self, i: int) -> int:
        return math.floor(self.start + i / self.rate)

    def log_time(self, second: int) -> bytes:
        text = self.times.get(second)
        if text is None:
            if len(self.times) > 100_000:
                self.times.clear()
            text = self.times[second] = format_log_time(second)
        return text

    def _make_block(self, b: int) -> list[bytes]:
        """Block b as a flat list head, log time, tail, head, ... (3 parts per line).

        Joining the parts only when writing is ~3x faster than concatenating each line.
        """
        rng = random.Random(f"chaussettes-lines:{self.seed}:{b}")
        draws = array("I")
        assert draws.itemsize == 4
        draws.frombytes(rng.getrandbits(64 * BLOCK).to_bytes(8 * BLOCK, "little"))
        if sys.byteorder == "big":
            draws.byteswap()
        mask, tails_ok, tails_error, thresholds = (
            self.mask, self.tails_ok, self.tails_error, self.thresholds)
        visits = list(map(mask.__and__, draws[0::2]))
        first = b * BLOCK
        if self.second(first) == self.second(first + BLOCK - 1):
            # One log second for the whole block (any rate >= BLOCK lines/s): the fast path.
            parts = [self.log_time(self.second(first))] * (3 * BLOCK)
        else:
            parts = [b""] * (3 * BLOCK)
            parts[1::3] = [self.log_time(self.second(i)) for i in range(first, first + BLOCK)]
        parts[0::3] = map(self.heads.__getitem__, visits)
        fails = draws[1::2]
        parts[2::3] = [tails_error[v] if d < thresholds[v] else tails_ok[v]
                       for v, d in zip(visits, fails)]
        # Incidents only turn successes into failures, with the line's own draw: a line fails iff
        # its draw is below the highest threshold that applies (error pair or incident).
        for low, high, incident_thresholds in self.incidents:
            for k in range(max(low, first) - first, min(high, first + BLOCK) - first):
                v = visits[k]
                if fails[k] < incident_thresholds[v]:
                    parts[3 * k + 2] = tails_error[v]
        # Surges only reassign lines (the rate is the line rate): a taken line keeps its visit's
        # URL and referer, gets the surging IP and succeeds. Their own draws, so the other lines
        # and the error model stay as they are.
        for low, high, surge_seed, taken, head in self.surges:
            if max(low, first) >= min(high, first + BLOCK):
                continue
            draws_surge = random.Random(f"{surge_seed}:{b}")
            for k in range(max(low, first) - first, min(high, first + BLOCK) - first):
                if draws_surge.getrandbits(32) < taken:
                    parts[3 * k], parts[3 * k + 2] = head, tails_ok[visits[k]]
        return parts

    def lines(self, i: int, j: int) -> bytes:
        """Lines i..j-1 joined (i <= j), each ending with a newline."""
        chunks = []
        while i < j:
            b = i // BLOCK
            if b != self.block_index:
                self.block_index, self.block = b, self._make_block(b)
            end = min(j, (b + 1) * BLOCK)
            chunks.append(b"".join(self.block[3 * (i - b * BLOCK):3 * (end - b * BLOCK)]))
            i = end
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class Pacer:
    """Which lines are due now: line i is due at t0 + i/rate; batches of at least 5 ms."""

    def __init__(self, rate: float, total: int | None, paced: bool = True):
        self.rate, self.total, self.t0 = rate, total, time.monotonic()
        self.paced = paced  # False: every line is due at once (--history), the log time unchanged
        self.last_write = -math.inf

    def due(self, written: int) -> int:
        now = time.monotonic()
        due = int((now - self.t0) * self.rate) + 1 if self.paced else written + MAX_BATCH
        if self.total is not None:
            due = min(due, self.total)
        return min(due, written + MAX_BATCH)

    def wait(self, written: int) -> float:
        """Seconds until the next batch is worth writing."""
        if not self.paced:
            return 0.0
        next_due = self.t0 + written / self.rate
        now = time.monotonic()
        return max(0.0, next_due - now, self.last_write + MIN_BATCH_INTERVAL - now)

    def done(self, written: int) -> bool:
        return self.total is not None and written >= self.total


def write_paced(stream: LogStream, pacer: Pacer, out) -> int:
    """Write the stream's lines when due to `out` (a binary file or a KafkaSink); how many."""
    written = 0
    while not pacer.done(written):
        time.sleep(pacer.wait(written))
        due = pacer.due(written)
        if due > written:
            out.write(stream.lines(written, due))
            out.flush()
            pacer.last_write = time.monotonic()
            written = due
    return written


class Client:
    """One connected client and the bytes queued for it (memoryviews: no copy when partly sent)."""

    def __init__(self, name: str):
        self.name = name
        self.queue: deque[memoryview] = deque()
        self.queued = 0
        self.last_progress = time.monotonic()


class Broadcaster:
    """A single-threaded TCP server: every batch goes to every client connected at that moment.

    Sends never block: what a client cannot take yet is queued. While a client has more than
    HIGH_WATER bytes queued no new batch is made (the lines fall due and go out later in larger
    batches), and a client that takes nothing for STALL_TIMEOUT seconds is dropped, so one stuck
    reader cannot hold the others for long.
    """

    def __init__(self, server: socket.socket):
        self.server = server
        self.selector = selectors.DefaultSelector()
        self.selector.register(server, selectors.EVENT_READ)
        self.clients: dict[socket.socket, Client] = {}

    def poll(self, timeout: float, next_line: int) -> None:
        for key, events in self.selector.select(timeout):
            sock = key.fileobj
            if sock is self.server:
                try:
                    sock, (host, port, *_) = self.server.accept()
                except OSError:
                    continue
                sock.setblocking(False)
                self.clients[sock] = Client(f"{host}:{port}")
                self.selector.register(sock, selectors.EVENT_READ)
                log(f"client {host}:{port} connected at line {next_line}")
                continue
            if events & selectors.EVENT_READ:
                try:
                    if not sock.recv(65536):  # end of stream: the client closed
                        self.drop(sock)
                        continue
                except BlockingIOError:
                    pass
                except OSError:
                    self.drop(sock)
                    continue
            if events & selectors.EVENT_WRITE:
                self.flush(sock)

    def send(self, data: bytes) -> None:
        view = memoryview(data)
        for sock, client in list(self.clients.items()):
            client.queue.append(view)
            client.queued += len(view)
            self.flush(sock)

    def flush(self, sock: socket.socket) -> None:
        client = self.clients[sock]
        queue = client.queue
        try:
            while queue:
                sent = sock.send(queue[0])
                client.queued -= sent
                client.last_progress = time.monotonic()
                if sent < len(queue[0]):
                    queue[0] = queue[0][sent:]
                    break
                queue.popleft()
        except BlockingIOError:
            pass
        except OSError:
            self.drop(sock)
            return
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if queue else 0)
        if self.selector.get_key(sock).events != events:
            self.selector.modify(sock, events)

    def backlogged(self) -> bool:
        """True while some client has over HIGH_WATER bytes queued; drops stalled clients."""
        now = time.monotonic()
        for sock, client in list(self.clients.items()):
            if client.queue and now - client.last_progress > STALL_TIMEOUT:
                self.drop(sock, f" (took nothing for {STALL_TIMEOUT:g} s)")
        return any(client.queued > HIGH_WATER for client in self.clients.values())

    def drop(self, sock: socket.socket, why: str = "") -> None:
        client = self.clients.pop(sock)
        self.selector.unregister(sock)
        sock.close()
        log(f"client {client.name} disconnected{why}")

    def drain(self) -> None:
        """Let the clients take what is queued for them (stalled ones are dropped)."""
        while any(client.queue for client in self.clients.values()):
            self.backlogged()
            self.poll(0.1, -1)

    def close(self) -> None:
        for sock in list(self.clients):
            self.drop(sock)
        self.selector.close()
        self.server.close()


def serve(stream: LogStream, pacer: Pacer, broadcaster: Broadcaster) -> None:
    written = 0
    while not pacer.done(written):
        if broadcaster.backlogged():
            broadcaster.poll(0.05, written)
            continue
        broadcaster.poll(pacer.wait(written), written)
        due = pacer.due(written)
        if due > written:
            broadcaster.send(stream.lines(written, due))
            pacer.last_write = time.monotonic()
            written = due
    broadcaster.drain()


class DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except None ones: their help says what happens instead."""

    def _get_help_string(self, action):
        return action.help if action.default is None else super()._get_help_string(action)


def positive_float(text: str) -> float:
    value = float(text)
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}")
    return value


def percent(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"must be a percentage between 0 and 100, got {text!r}")
    return value


def at_least(minimum: int):
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {text!r}")
        return value
    parse.__name__ = "integer"  # argparse names the type in its "invalid ... value" message
    return parse


def iso_time(text: str) -> float:
    """ISO 8601 date-time to epoch seconds; without an offset it is taken as UTC."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be an ISO 8601 date-time such as 2026-11-28T09:00:00Z, got {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def port_number(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be between 0 and 65535, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        description="Generate Apache combined access logs of a sock shop, with a controlled "
                    "error model and injected incidents, to Kafka (default), a file or a TCP socket.",
        epilog="Error model: error users = a seeded sample of round(PU/100*users) users, error "
               "URLs = a seeded sample of round(PL/100*URLs) of the shop's %d URLs; a request "
               "fails (404, 500, 503, 403, 502, 400, 429, 504) with probability PE/100 iff its "
               "user is an error user and its URL an error URL; all other requests get 2xx/3xx. "
               "Same --seed and options -> byte-identical lines." % len(URLS),
        formatter_class=DefaultsFormatter)
    parser.add_argument("--rate", type=positive_float, default=10.0,
                        help="lines per second, of log time and of writing (> 0; 1e12 = unpaced)")
    parser.add_argument("--users", type=at_least(1), default=50,
                        help="number of users, each one IP with one user agent (>= 1)")
    parser.add_argument("--error-users", type=percent, default=20.0, metavar="PU",
                        help="%% of the users that are error users (0..100)")
    parser.add_argument("--error-rate", type=percent, default=50.0, metavar="PE",
                        help="%% of the requests that fail on an (error user, error URL) pair (0..100)")
    parser.add_argument("--error-urls", type=percent, default=30.0, metavar="PL",
                        help="%% of the shop's URLs that are error URLs (0..100)")
    parser.add_argument("--seed", type=int, default=None,
                        help="random seed; default: a random one, printed on stderr")
    parser.add_argument("--start-time", type=iso_time, default=None, metavar="ISO8601",
                        help="log time of line 0, e.g. 2026-11-28T09:00:00Z (default: now, UTC)")
    stop = parser.add_mutually_exclusive_group()
    stop.add_argument("--count", type=at_least(0), default=None,
                      help="stop after this many lines (default: never)")
    stop.add_argument("--duration", type=positive_float, default=None, metavar="SECONDS",
                      help="stop after this many seconds, i.e. round(rate*SECONDS) lines (default: never)")
    parser.add_argument("--output", default=None, metavar="FILE",
                        help="write to FILE ('-' = stdout) instead of Kafka (default: Kafka)")
    parser.set_defaults(serve_tcp=False)
    parser.add_argument("--host", default="localhost", action=ServeTcp,
                        help="serve TCP clients on this interface instead of Kafka (stage 2's "
                             "broadcast server, used only when --host or --port is given)")
    parser.add_argument("--port", type=port_number, default=9999, action=ServeTcp,
                        help="TCP port of that server")
    kafka = parser.add_argument_group("Kafka output (the default)")
    kafka.add_argument("--bootstrap-servers", default=DEFAULT_BOOTSTRAP, help=BOOTSTRAP_HELP)
    kafka.add_argument("--topic", type=topic_name, default="http-logs",
                       help="topic the lines go to, key = client IP")
    kafka.add_argument("--compression", choices=COMPRESSIONS, default="gzip",
                       help="producer compression (with kafka-python, lz4, snappy and zstd need "
                            "their Python package)")
    kafka.add_argument("--kafka-client", choices=KAFKA_CLIENTS, default="kafka-python",
                       help="producer library: the same records, partitions and counts; "
                            "confluent-kafka (librdkafka, pip install -r bench/requirements.txt) "
                            "uses several times less CPU per line")
    incidents = parser.add_argument_group("incidents")
    incidents.add_argument("--incident", type=incident_spec, action="append", default=None,
                           metavar="KIND[=ENTITY]@START+DURATION",
                           help="KIND ip|url|global|surge: from START for DURATION seconds of "
                                "log time after line 0, that IP / URL / all traffic mostly fails, "
                                "or (surge) that IP sends 10x its requests, all successful; ENTITY "
                                "default: a seeded random pick; repeatable (e.g. ip@30+20, "
                                "url=/cart@60+15, global@90+10)")
    incidents.add_argument("--incident-error-rate", type=percent, default=90.0, metavar="PI",
                           help="%% of the requests that fail during an incident (0..100)")
    incidents.add_argument("--incident-rate", type=positive_float, default=None, metavar="R",
                           help="with --replay: lines per second of log time each incident adds "
                                "(default 2; see finale/replay.py)")
    incidents.add_argument("--truth", default=None, metavar="FILE",
                           help="write each incident as a JSON line: kind, entity, start, end "
                                "(ISO 8601 UTC log time)")
    parser.add_argument("--stats-file", default=None, metavar="FILE",
                        help="at the end, write the run's counts as JSON (Kafka: lines_sent, "
                             "lines_delivered, lines_acknowledged (by the broker), lines_failed, "
                             "lines_unknown (no answer before close); file: lines_written); "
                             "not with the TCP server")
    modes = parser.add_argument_group("other modes")
    modes.add_argument("--history", type=positive_float, default=None, metavar="HOURS",
                       help="write HOURS of log time, round(HOURS*3600*rate) lines, as fast as "
                            "possible to --output (start: --start-time, default now - HOURS)")
    modes.add_argument("--replay", default=None, metavar="FILE",
                       help="send the lines of an existing access log (.gz too) unchanged, at "
                            "--rate lines/s; with --incident, START counts from its first "
                            "timestamp and each incident adds its own lines (--incident-rate)")
    modes.add_argument("--speed", type=positive_float, default=None, metavar="X",
                       help="with --replay: at X times the pace of the log's own timestamps")
    return parser


class ServeTcp(argparse.Action):
    """--host / --port: store the value and switch the output to the TCP server."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        namespace.serve_tcp = True


def check_combinations(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.history is not None:
        if args.output is None:
            parser.error("argument --history: needs --output FILE or --output -")
        if args.count is not None or args.duration is not None:
            parser.error("argument --history: HOURS sets the number of lines, drop --count/--duration")
    if args.replay is not None:
        for flag, value in (("--history", args.history), ("--duration", args.duration)):
            if value is not None:
                parser.error(f"argument --replay: cannot be combined with {flag}")
        if not os.path.isfile(args.replay) or not os.access(args.replay, os.R_OK):
            parser.error(f"argument --replay: cannot read {args.replay!r}")
    if args.speed is not None and args.replay is None:
        parser.error("argument --speed: only with --replay")
    if args.incident_rate is not None and args.replay is None:
        parser.error("argument --incident-rate: only with --replay (generated incidents fail "
                     "the generated traffic)")
    if args.replay is not None and args.incident_rate is None:
        args.incident_rate = 2.0
    if args.serve_tcp and (args.output is not None or args.replay is not None):
        parser.error("argument --host/--port: the TCP server cannot be combined with --output or --replay")
    if args.serve_tcp and args.stats_file is not None:
        parser.error("argument --stats-file: not with the TCP server (--host/--port)")
    to_kafka = args.output is None and not args.serve_tcp
    if to_kafka and args.kafka_client == "confluent-kafka":
        try:
            import confluent_kafka  # noqa: F401  (optional: bench/requirements.txt)
        except ImportError:
            parser.error(f"argument --kafka-client: {CONFLUENT_MISSING}")
    if args.compression not in ("gzip", "none") and args.kafka_client == "kafka-python":
        from kafka import codec
        if not getattr(codec, f"has_{args.compression}")():
            parser.error(f"argument --compression: {args.compression} needs its Python package, "
                         "which is not installed (gzip and none always work)")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.incident = args.incident or []
    check_combinations(parser, args)
    # kafka-python logs connection retries as warnings; failures are reported here in one line.
    kafka_logger = logging.getLogger("kafka")
    kafka_logger.addHandler(logging.NullHandler())
    kafka_logger.propagate = False
    # `kill` (SIGTERM) stops it as cleanly as Ctrl-C; signal handlers only exist in the main thread.
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous_sigterm = (signal.signal(signal.SIGTERM, signal.default_int_handler)
                        if in_main_thread else None)
    try:
        if args.replay is not None:
            return run_replay(args)
        seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 32)
        if args.history is not None:
            total = round(args.history * 3600 * args.rate)
            start = args.start_time if args.start_time is not None else time.time() - args.history * 3600
        else:
            total = args.count if args.duration is None else round(args.rate * args.duration)
            start = args.start_time if args.start_time is not None else time.time()
        model = build_traffic_model(args.users, args.error_users, args.error_urls, seed)
        incidents = resolve_incidents(parser, args.incident, model, seed)
        problem = None if args.truth is None else write_truth(args.truth, incidents, start)
        if problem is not None:
            log(problem)
            return 1
        stream = LogStream(model, args.error_rate, args.rate, start, seed, incidents,
                           args.incident_error_rate)
        if args.output is not None:
            return _run_to_file(args, seed, stream, total)
        if args.serve_tcp:
            return _run_server(args, seed, stream, total)
        return _run_kafka(args, seed, stream, total)
    except KeyboardInterrupt:
        return 0
    finally:
        if previous_sigterm is not None:
            signal.signal(signal.SIGTERM, previous_sigterm)


def _run_kafka(args, seed: int, stream: LogStream, total: int | None) -> int:
    sink = open_kafka(args)
    if sink is None:
        return 1
    log(f"sending to topic {args.topic} at {args.bootstrap_servers}, {args.rate:g} lines/s"
        + (f", seed {seed}" if args.seed is None else ""))
    failed = False
    try:
        write_paced(stream, Pacer(args.rate, total), sink)
    except KeyboardInterrupt:
        pass  # what was sent so far still gets delivered below
    except KafkaSinkError as error:  # e.g. the broker went away and the send buffer stayed full
        log(f"error: Kafka at {args.bootstrap_servers}: {error}")
        failed = True
    finally:
        delivered = sink.close()
        write_stats(args.stats_file, sink.stats())
    return 0 if delivered and not failed else 1


def _run_to_file(args, seed: int, stream: LogStream, total: int | None) -> int:
    if args.seed is None:
        log(f"seed {seed}")
    out = open_output(args.output)
    if out is None:
        return 1
    try:
        written = write_paced(stream, Pacer(args.rate, total, paced=args.history is None), out)
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): that ends the output, it is not an error.
        # Point stdout at devnull so the interpreter's final flush does not complain.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    finally:
        if out is not sys.stdout.buffer:
            out.close()
    write_stats(args.stats_file, {"output": args.output, "lines_written": written})
    return 0


def _run_server(args, seed: int, stream: LogStream, total: int | None) -> int:
    try:
        server = socket.create_server((args.host, args.port))
    except OSError as error:
        log(f"error: cannot listen on {args.host}:{args.port}: {error.strerror or error}")
        return 1
    server.setblocking(False)
    host, port = server.getsockname()[:2]
    log(f"listening on {host}:{port}, {args.rate:g} lines/s, seed {seed}")
    broadcaster = Broadcaster(server)
    try:
        serve(stream, Pacer(args.rate, total), broadcaster)
    finally:
        broadcaster.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
