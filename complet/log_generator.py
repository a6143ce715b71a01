"""Stage 2 log generator: a configurable, reproducible sock shop writing Apache access logs.

Run:
  python complet/log_generator.py                     # serve localhost:9999, 10 lines/s, forever
  python complet/log_generator.py --output - --count 5 --seed 1 --start-time 2026-11-28T09:00:00Z

Every line is in the Apache "combined" format (the only place this template is written down):
  %h %l %u [%t] "%r" %>s %b "%{Referer}i" "%{User-agent}i"
  203.0.113.7 - - [28/Nov/2026:09:14:03 +0000] "GET /socks/wool HTTP/1.1" 404 512 "-" "curl/8.5.0"
with the log time in UTC; line i carries the log time start + i/rate (to the second).

Traffic model: --users users, each one client IP with its own user agent, visit the shop's URLs.
Error model, exactly: the error users are a seeded sample of round(PU/100*users) users, the error
URLs a seeded sample of round(PL/100*len(URLS)) URLs; a request fails (4xx/5xx: 404, 500, 503, 403,
502, ...) with probability PE/100 if and only if its user is an error user AND its URL an error
URL; every other request succeeds (2xx/3xx).

Output: by default a TCP server (--host, --port) that broadcasts every line to every connected
client; clients come and go at any time and stderr says
  client HOST:PORT connected at line N        (N = index of the first line that client receives)
  client HOST:PORT disconnected
With --output - (stdout) or --output FILE it writes there instead. Lines are written in batches
when due (line i at t0 + i/rate of wall time), so the pace holds from 1 to 100,000+ lines/s;
a huge --rate (e.g. 1e12) writes as fast as possible.

Reproducibility: line i is a pure function of (--seed, the model options, --rate, --start-time, i):
the same options give byte-identical lines whatever the output, the pace or the batching, so
`--output - --count M` regenerates exactly what a socket client received from its line N on.
Library API: build_traffic_model(...) -> TrafficModel, LogStream(...).lines(i, j), main(argv).
"""
from __future__ import annotations

import argparse
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

# The shop: (URL, method, smallest and largest response size in bytes, relative popularity).
SHOP = (
    ("/", "GET", 8_000, 14_000, 12),
    ("/socks", "GET", 15_000, 30_000, 8),
    ("/socks/wool", "GET", 9_000, 16_000, 5),
    ("/socks/cotton", "GET", 9_000, 16_000, 5),
    ("/socks/merino", "GET", 9_000, 16_000, 4),
    ("/socks/bamboo", "GET", 9_000, 16_000, 3),
    ("/socks/cashmere", "GET", 9_000, 16_000, 2),
    ("/socks/striped", "GET", 9_000, 16_000, 3),
    ("/socks/christmas", "GET", 9_000, 16_000, 3),
    ("/socks/running", "GET", 9_000, 16_000, 3),
    ("/socks/hiking", "GET", 9_000, 16_000, 2),
    ("/socks/kids", "GET", 9_000, 16_000, 2),
    ("/socks/sale", "GET", 12_000, 25_000, 4),
    ("/search?q=wool+socks", "GET", 10_000, 20_000, 3),
    ("/cart", "GET", 5_000, 9_000, 5),
    ("/cart/add", "POST", 200, 600, 4),
    ("/cart/remove", "POST", 200, 600, 1),
    ("/checkout", "GET", 6_000, 11_000, 3),
    ("/checkout/payment", "POST", 300, 1_200, 2),
    ("/checkout/confirm", "GET", 4_000, 7_000, 2),
    ("/account", "GET", 5_000, 8_000, 2),
    ("/login", "POST", 150, 500, 2),
    ("/logout", "GET", 150, 400, 1),
    ("/api/products", "GET", 2_000, 40_000, 4),
    ("/api/products/42", "GET", 600, 2_000, 3),
    ("/api/cart", "GET", 300, 3_000, 3),
    ("/api/orders", "POST", 300, 1_500, 2),
    ("/api/stock?sku=SOCK-WOOL-42", "GET", 80, 200, 2),
    ("/api/recommendations", "GET", 1_000, 6_000, 2),
    ("/static/css/main.css", "GET", 20_000, 20_000, 4),
    ("/static/js/app.js", "GET", 90_000, 90_000, 4),
    ("/favicon.ico", "GET", 1_150, 1_150, 2),
)
URLS = tuple(url for url, *_ in SHOP)
USER_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
    "Mozilla/5.0 (iPad; CPU OS 17_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.6 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "curl/8.5.0",
    "python-requests/2.32.3",
)
REFERERS = ("-", "-", "https://chaussettes.io/", "https://chaussettes.io/socks",
            "https://chaussettes.io/cart", "https://www.google.com/", "https://duckduckgo.com/",
            "https://www.instagram.com/", "https://www.facebook.com/")
# Weighted status mixes: (status, weight). A 304 or a 204 sends no body, logged as "-".
OK_STATUSES = {"GET": ((200, 88), (304, 7), (302, 3), (301, 2)),
               "POST": ((200, 60), (201, 20), (302, 15), (204, 5))}
ERROR_STATUSES = ((404, 35), (500, 20), (503, 15), (403, 10), (502, 10), (400, 4), (429, 3),
                  (504, 3))
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

BLOCK = 4096  # lines drawn per seeded block: line i only depends on block i // BLOCK
MAX_BATCH = 65536  # most lines written at once (unpaced runs), bounds memory and latency
MIN_BATCH_INTERVAL = 0.005  # s: at high rates, 5 ms of lines per write instead of a write per line
HIGH_WATER = 8 << 20  # bytes queued for one client above which no new batch is made
STALL_TIMEOUT = 10.0  # s: a client with queued bytes that takes nothing for this long is dropped


@dataclass(frozen=True)
class TrafficModel:
    """Who visits the shop and which (user, URL) pairs may fail; a pure function of its
    arguments."""
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
                 seed: int):
        self.rate, self.start, self.seed = rate, start, seed
        rng = random.Random(f"chaussettes-pool:{seed}")
        pool_size = 1 << max(15, min(20, (8 * len(model.ips)).bit_length()))
        self.mask = pool_size - 1
        users = rng.choices(range(len(model.ips)), k=pool_size)
        shop = rng.choices(SHOP, weights=[weight for *_, weight in SHOP], k=pool_size)
        referers = rng.choices(REFERERS, k=pool_size)
        ok_statuses = {method: rng.choices(*zip(*mix, strict=True), k=pool_size)
                       for method, mix in OK_STATUSES.items()}
        error_statuses = rng.choices(*zip(*ERROR_STATUSES, strict=True), k=pool_size)
        # fail iff (32-bit uniform draw) < threshold: exactly never at 0 %, always at 100 %.
        threshold = round(error_rate_pct / 100 * (1 << 32))
        self.heads, self.tails_ok, self.tails_error, self.thresholds = [], [], [], []
        for k, (user, (url, method, low, high, _), referer, error) in enumerate(zip(
                users, shop, referers, error_statuses, strict=True)):
            ip, ok = model.ips[user], ok_statuses[method][k]
            request = f'] "{method} {url} HTTP/1.1" '
            end = f' "{referer}" "{model.user_agents[user]}"\n'
            size = "-" if ok in (204, 304) else rng.randint(low, high)
            self.heads.append(f"{ip} - - [".encode())
            self.tails_ok.append(f"{request}{ok} {size}{end}".encode())
            self.tails_error.append(f"{request}{error} {rng.randint(200, 1200)}{end}".encode())
            is_error_pair = ip in model.error_ips and url in model.error_urls
            self.thresholds.append(threshold if is_error_pair else 0)
        self.block_index, self.block = -1, []
        self.times: dict[int, bytes] = {}

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

        Joining the parts only when writing costs less than concatenating each line first.
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
        parts[2::3] = [tails_error[v] if d < thresholds[v] else tails_ok[v]
                       for v, d in zip(visits, draws[1::2], strict=True)]
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

    def __init__(self, rate: float, total: int | None):
        self.rate, self.total, self.t0 = rate, total, time.monotonic()
        self.last_write = -math.inf

    def due(self, written: int) -> int:
        now = time.monotonic()
        due = int((now - self.t0) * self.rate) + 1
        if self.total is not None:
            due = min(due, self.total)
        return min(due, written + MAX_BATCH)

    def wait(self, written: int) -> float:
        """Seconds until the next batch is worth writing."""
        next_due = self.t0 + written / self.rate
        now = time.monotonic()
        return max(0.0, next_due - now, self.last_write + MIN_BATCH_INTERVAL - now)

    def done(self, written: int) -> bool:
        return self.total is not None and written >= self.total


def write_to_file(stream: LogStream, pacer: Pacer, out) -> None:
    written = 0
    while not pacer.done(written):
        time.sleep(pacer.wait(written))
        due = pacer.due(written)
        if due > written:
            out.write(stream.lines(written, due))
            out.flush()
            pacer.last_write = time.monotonic()
            written = due


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


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class OneLineErrorParser(argparse.ArgumentParser):
    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


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
                    "error model, to a TCP socket (default) or a file.",
        epilog="Error model: error users = a seeded sample of round(PU/100*users) users, error "
               f"URLs = a seeded sample of round(PL/100*URLs) of the shop's {len(URLS)} URLs; a "
               "request fails (404, 500, 503, 403, 502, 400, 429, 504) with probability PE/100 "
               "iff its user is an error user and its URL an error URL; all other requests get "
               "2xx/3xx. Same --seed and options -> byte-identical lines.",
        formatter_class=DefaultsFormatter)
    parser.add_argument("--rate", type=positive_float, default=10.0,
                        help="lines per second, of log time and of writing (> 0; 1e12 = unpaced)")
    parser.add_argument("--users", type=at_least(1), default=50,
                        help="number of users, each one IP with one user agent (>= 1)")
    parser.add_argument("--error-users", type=percent, default=20.0, metavar="PU",
                        help="%% of the users that are error users (0..100)")
    parser.add_argument("--error-rate", type=percent, default=50.0, metavar="PE",
                        help="%% of the requests that fail on an (error user, error URL) pair "
                             "(0..100)")
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
                      help="stop after this many seconds, i.e. round(rate*SECONDS) lines "
                           "(default: never)")
    parser.add_argument("--output", default=None, metavar="FILE",
                        help="write to FILE ('-' = stdout) instead of serving TCP clients "
                             "(default: serve)")
    parser.add_argument("--host", default="localhost", help="interface the TCP server listens on")
    parser.add_argument("--port", type=port_number, default=9999, help="TCP port of the server")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 32)
    start = args.start_time if args.start_time is not None else time.time()
    total = args.count if args.duration is None else round(args.rate * args.duration)
    model = build_traffic_model(args.users, args.error_users, args.error_urls, seed)
    stream = LogStream(model, args.error_rate, args.rate, start, seed)
    # `kill` (SIGTERM) stops it as cleanly as Ctrl-C; signal handlers only exist in the main thread.
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous_sigterm = (signal.signal(signal.SIGTERM, signal.default_int_handler)
                        if in_main_thread else None)
    try:
        if args.output is not None:
            return _run_to_file(args, seed, stream, total)
        return _run_server(args, seed, stream, total)
    except KeyboardInterrupt:
        return 0
    finally:
        if previous_sigterm is not None:
            signal.signal(signal.SIGTERM, previous_sigterm)


def _run_to_file(args, seed: int, stream: LogStream, total: int | None) -> int:
    if args.seed is None:
        log(f"seed {seed}")
    if args.output == "-":
        out = sys.stdout.buffer
    else:
        try:
            out = open(args.output, "wb")
        except OSError as error:
            log(f"error: cannot write {args.output}: {error.strerror}")
            return 1
    try:
        write_to_file(stream, Pacer(args.rate, total), out)
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): that ends the output, it is not an error.
        # Point stdout at devnull so the interpreter's final flush does not complain.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    finally:
        if out is not sys.stdout.buffer:
            out.close()
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
