"""The analyzer's state and memory under many distinct IPs: flat once the watermark passes?

Run (a broker first: python finale/local_kafka.py start):
    python bench/bench_finale_state.py [--ips 100000] [--rate 1000] [--duration 300] [--every 15]

The analyzer script itself (finale/spark_streaming_analyzer.py, default settings: 30 s windows every
10 s, 10 s watermark, 5 s trigger) reads fresh topics while this script sends --rate lines/s in
real time, the client IP cycling through --ips distinct addresses (10.x.y.z), log time = now. Every
--every seconds it samples the alerts query's state rows (stateOperators numRowsTotal, from the
status file), its watermark and lines read, and the resident memory (RSS, /proc) of the Python
driver and of its JVM, and the JVM's live heap after a forced full GC (jcmd). The state holds the
open windows only: 3 overlapping windows (30 s / 10 s) per scope, each with the distinct IPs of
its 30 s, so it grows until the first windows close (window + watermark = 40 s of log time) and
should stay flat afterwards, although the IPs keep changing (each IP comes back every ips / rate
seconds). Prints one markdown row per sample, then the last sample as a ratio to the first one
after the plateau began (the baseline, same run).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from bench_finale_analyzer import create_topics, delete_topics

from finale.common.cli import DEFAULT_BOOTSTRAP

ROOT = Path(__file__).resolve().parent.parent
PAGE = os.sysconf("SC_PAGE_SIZE")


def descendants(pid: int) -> list[int]:
    """The pids of every descendant of `pid` (from /proc; a process gone meanwhile is skipped)."""
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        try:
            for task in Path(f"/proc/{current}/task").iterdir():
                children = [int(c) for c in (task / "children").read_text().split()]
                out += children
                todo += children
        except FileNotFoundError:
            continue
    return out


def rss_mb(pid: int) -> tuple[float, float]:
    """(RSS of the process, RSS of its descendants) in MB, from /proc (0 for a process gone)."""
    def own(current: int) -> float:
        try:
            return int(Path(f"/proc/{current}/statm").read_text().split()[1]) * PAGE / 1e6
        except (FileNotFoundError, ProcessLookupError):
            return 0.0

    return own(pid), sum(own(child) for child in descendants(pid))


def live_heap_mb(pid: int) -> float | None:
    """The driver JVM's heap in use right after a full GC (jcmd GC.run, then GC.heap_info): what
    the JVM really retains. RSS alone keeps growing while the JVM lazily expands its heap towards
    its maximum, leak or no leak; the live heap is the figure that must stay flat."""
    import re
    import shutil

    jcmd = shutil.which("jcmd") or (os.path.join(os.environ["JAVA_HOME"], "bin", "jcmd")
                                    if os.environ.get("JAVA_HOME") else None)
    jvms = []
    for child in descendants(pid):
        try:  # a short-lived child (a Python worker) may be gone already
            if b"java" in Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")[0]:
                jvms.append(child)
        except OSError:
            continue
    if not jcmd or not jvms:
        return None
    try:
        subprocess.run([jcmd, str(jvms[0]), "GC.run"], capture_output=True, timeout=60, check=True)
        info = subprocess.run([jcmd, str(jvms[0]), "GC.heap_info"], capture_output=True, text=True,
                              timeout=60, check=True).stdout
    except (subprocess.SubprocessError, OSError):
        return None
    used = re.search(r"used (\d+)K", info)
    return int(used.group(1)) / 1024 if used else None


def send_lines(bootstrap: str, topic: str, ips: int, rate: float, until: float,
               sent: list[int]) -> None:
    """Real-time traffic: line i at t0 + i / rate, its IP the (i mod ips)-th address."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, batch_size=256 * 1024)
    began, index = time.monotonic(), 0
    try:
        while time.monotonic() < until:
            due = int((time.monotonic() - began) * rate)
            stamp = datetime.now(timezone.utc).strftime("%d/%b/%Y:%H:%M:%S +0000")
            for i in range(index, due):
                n = i % ips
                ip = f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"
                status = 500 if i % 20 == 0 else 200
                producer.send(topic, key=ip.encode(), value=(
                    f'{ip} - - [{stamp}] "GET /socks/{i % 50} HTTP/1.1" {status} 512 "-" "bench"'
                ).encode())
            index = max(index, due)
            sent[0] = index
            time.sleep(0.05)
        producer.flush()
    finally:
        producer.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap-servers", default=DEFAULT_BOOTSTRAP, help="Kafka cluster")
    parser.add_argument("--ips", type=int, default=100_000, help="distinct client IPs")
    parser.add_argument("--rate", type=float, default=1000.0, help="lines per second")
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of traffic")
    parser.add_argument("--every", type=float, default=15.0, help="seconds between samples")
    args = parser.parse_args(argv)
    if args.ips < 1 or args.rate <= 0 or args.duration <= 0 or args.every <= 0:
        parser.error("--ips, --rate, --duration and --every must be > 0")

    topics = create_topics(args.bootstrap_servers, "bench-state")
    work = Path(tempfile.mkdtemp(prefix="bench-state-"))
    status_path = work / "status.json"
    with open(work / "analyzer.log", "w") as log_file:
        analyzer = subprocess.Popen(
            [sys.executable, str(ROOT / "finale" / "spark_streaming_analyzer.py"),
             "--bootstrap-servers", args.bootstrap_servers, "--topic", topics["logs"],
             "--alerts-topic", topics["alerts"], "--dlq-topic", topics["dlq"],
             "--starting-offsets", "earliest", "--checkpoint", str(work / "ck"),
             "--status-file", str(status_path)],
            stdout=log_file, stderr=subprocess.STDOUT)
    samples = []
    try:
        def alerts_query() -> dict:
            try:
                return json.loads(status_path.read_text())["queries"].get("alerts", {})
            except (OSError, ValueError, KeyError):
                return {}

        while not alerts_query().get("active"):
            if analyzer.poll() is not None:
                raise SystemExit(f"error: the analyzer exited, see {work / 'analyzer.log'}")
            time.sleep(0.5)
        began, first_line = time.monotonic(), datetime.now(timezone.utc)
        sent = [0]
        sender = threading.Thread(target=send_lines, args=(
            args.bootstrap_servers, topics["logs"], args.ips, args.rate,
            began + args.duration, sent), daemon=True)
        sender.start()
        print(f"{args.ips:,} IPs at {args.rate:g} lines/s for {args.duration:g} s "
              f"(an IP every {args.ips / args.rate:g} s)")
        print("| t (s) | lines sent | lines read | backlog | watermark | state rows "
              "| driver RSS MB (Python + JVM) | JVM live heap MB (after a full GC) |")
        print("|---:|---:|---:|---:|---|---:|---:|---:|")
        while sender.is_alive():
            time.sleep(args.every)
            query = alerts_query()
            python_mb, jvm_mb = rss_mb(analyzer.pid)
            heap = live_heap_mb(analyzer.pid)
            sample = {"heap": heap, "t": time.monotonic() - began, "sent": sent[0],
                      "read": query.get("rows_read_total", 0), "backlog": query.get("backlog"),
                      "watermark": query.get("watermark"), "state": query.get("state_rows", 0),
                      "rss": python_mb + jvm_mb, "python": python_mb, "jvm": jvm_mb}
            samples.append(sample)
            print(f"| {sample['t']:.0f} | {sample['sent']:,} | {sample['read']:,} | "
                  f"{sample['backlog']} | {sample['watermark']} | {sample['state']:,} | "
                  f"{sample['rss']:.0f} ({python_mb:.0f} + {jvm_mb:.0f}) | "
                  f"{'-' if heap is None else f'{heap:.0f}'} |", flush=True)
    finally:
        if analyzer.poll() is None:
            analyzer.send_signal(signal.SIGINT)
            analyzer.wait(60)
        delete_topics(args.bootstrap_servers, topics)
    # The plateau: the samples whose watermark is past the end of the first windows (30 s after
    # the first line), i.e. from when Spark drops closed windows. On a loaded machine the first
    # micro-batch (Spark start-up, code generation) takes minutes: log time, not wall time.
    first_end = first_line.timestamp() + 30
    plateau = [s for s in samples if s["watermark"] and datetime.fromisoformat(
        s["watermark"].replace("Z", "+00:00")).timestamp() >= first_end]
    if len(plateau) >= 2:
        first, last = plateau[0], plateau[-1]
        print(f"plateau from t={first['t']:.0f} s to t={last['t']:.0f} s: state rows "
              f"{first['state']:,} -> {last['state']:,} "
              f"(x{last['state'] / max(first['state'], 1):.2f}), "
              f"driver RSS {first['rss']:.0f} -> {last['rss']:.0f} MB "
              f"(x{last['rss'] / first['rss']:.2f}), JVM live heap "
              + (f"{first['heap']:.0f} -> {last['heap']:.0f} MB "
                 f"(x{last['heap'] / first['heap']:.2f}, "
                 f"min {min(s['heap'] for s in plateau if s['heap']):.0f}, "
                 f"max {max(s['heap'] for s in plateau if s['heap']):.0f})"
                 if first["heap"] and last["heap"] else "-")
              + f"; state rows min {min(s['state'] for s in plateau):,}"
              f" max {max(s['state'] for s in plateau):,}")
    print(f"analyzer log: {work / 'analyzer.log'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
