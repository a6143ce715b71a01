"""The generator's seeded traffic: who visits the sock shop, and line i of the log for any i.

- build_traffic_model(...) -> TrafficModel: the users (IP, user agent), the URLs and the
  (error user, error URL) pairs that may fail; a pure function of its arguments.
- LogStream(model, ...).lines(i, j): lines i..j-1 as bytes, in the Apache combined format, with
  the error model and the incidents applied (the model and the format: finale/generator/app.py).
- Pacer / write_paced: which lines are due on the wall clock, written in batches to a file or a
  Kafka sink.

Line i is a pure function of (seed, model, rate, start, incidents, i): drawn from block i // BLOCK,
so any output and any pace give byte-identical lines.
"""
from __future__ import annotations

import math
import random
import sys
import time
from array import array
from dataclasses import dataclass

from finale.generator.incidents import SURGE_MULTIPLIER, Incident
from finale.generator.shop import ERROR_STATUSES, OK_STATUSES, REFERERS, SHOP, URLS, USER_AGENTS

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

BLOCK = 4096  # lines drawn per seeded block: line i only depends on block i // BLOCK
MAX_BATCH = 65536  # most lines written at once (unpaced runs), bounds memory and latency
# s: at high rates, gather 5 ms of lines per write instead of one write per line
MIN_BATCH_INTERVAL = 0.005


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
                 seed: int, incidents: tuple[Incident, ...] = (), incident_error_pct: float = 90.0):
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
        heads: dict[str, bytes] = {}
        for k, (user, (url, method, low, high, _), referer, error) in enumerate(zip(
                users, shop, referers, error_statuses, strict=True)):
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

        The parts are joined only when written: faster than concatenating each line (measured in
        bench/RESULTS.md).
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
                       for v, d in zip(visits, fails, strict=True)]
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
