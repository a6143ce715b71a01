"""--replay: send an existing access log unchanged, at a fixed rate or at a multiple of its own pace.

Real traffic instead of the generated one: the lines are not parsed, only their "[%t]" time is read
(with --speed) to pace them; lines without one keep the pace of the latest line seen.
"""
from __future__ import annotations

import calendar
import re
import sys
import time

from cli import silence_stdout
from outputs import log, open_kafka, open_output, write_stats

# "[28/Nov/2026:09:14:03 +0000]" of an access-log line, for --replay --speed.
LOG_TIME = re.compile(rb"\[(\d\d)/(\w{3})/(\d{4}):(\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)\]")
MONTH_NUMBERS = {month: number for number, month in
                 enumerate(b"Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split(), 1)}
MIN_BATCH_INTERVAL = 0.005  # s: lines due within 5 ms go out together (as the generator's batches)
MAX_BATCH = 65536  # most lines written at once, bounds memory and latency


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


def run_replay(args) -> int:
    """log_generator.py --replay: the file to Kafka (default) or --output; the exit status."""
    kafka = args.output is None
    if kafka:
        out = open_kafka(args)
        if out is None:
            return 1
    else:
        out = open_output(args.output)
        if out is None:
            return 1
    from kafka.errors import KafkaError

    ok, written = True, 0
    try:
        with open(args.replay, "rb") as source:
            written = replay(source, out, args.rate, args.speed, args.count)
    except KeyboardInterrupt:
        pass
    except KafkaError as error:
        log(f"error: Kafka at {args.bootstrap_servers}: {type(error).__name__}: {error}")
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
