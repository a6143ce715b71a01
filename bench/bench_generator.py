"""Pacing and throughput benchmark of a stage's log generator (default: complet).

Run:  .venv/bin/python bench/bench_generator.py [--seconds 10] [--stage complet]

For each --rate in 1, 10, 100, 1000, 10000, 100000 it runs the generator for --seconds, once writing
to a pipe read by this script (`--output -`) and once serving one TCP client (this script), and
prints the achieved rate, measured where the lines arrive (least-squares slope of the lines
received against time), and its error in %. Then it measures the highest rate reached unpaced
(--rate 1e12), to the pipe and to the socket, against a baseline measured in the same run: the naive
generator (one random.choice per field, one strftime, one write or sendall per line).
Every figure is wall-clock on whatever else the machine is doing (nothing is pinned to a core);
the unpaced runs also give lines per CPU second of the writer, which depends much less on the load.
"""
import argparse
import os
import platform
import resource
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable

# The naive generator: what a first attempt looks like. It prints/sends `count` lines as fast as
# it can, to stdout or to the first client of a server on PORT.
BASELINE = r'''
import random, socket, sys, time
count, sink = int(sys.argv[1]), sys.argv[2]
IPS = [f"81.{random.randrange(256)}.{random.randrange(256)}.{random.randrange(1, 255)}"
       for _ in range(50)]
URLS = ["/", "/socks", "/socks/wool", "/socks/cotton", "/cart", "/cart/add", "/checkout",
        "/api/products"]
METHODS = ["GET", "GET", "GET", "POST"]
STATUSES = [200, 200, 200, 200, 304, 302, 404, 500, 503]
REFERERS = ["-", "https://chaussettes.io/", "https://www.google.com/"]
AGENTS = ["Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
          "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/131.0.0.0 Safari/537.36"]
if sink == "stdout":
    write = sys.stdout.write
else:
    server = socket.create_server(("127.0.0.1", int(sink)))
    print("listening", file=sys.stderr, flush=True)
    client, _ = server.accept()
    write = lambda line: client.sendall(line.encode())
for _ in range(count):
    stamp = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime())
    write(f'{random.choice(IPS)} - - [{stamp}] '
          f'"{random.choice(METHODS)} {random.choice(URLS)} HTTP/1.1" '
          f'{random.choice(STATUSES)} {random.randint(200, 20000)} "{random.choice(REFERERS)}" '
          f'"{random.choice(AGENTS)}"\n')
'''


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def count_arrivals(read) -> list[tuple[float, int]]:
    """Read until EOF; return (arrival time, lines received so far) for each read that had lines."""
    arrivals, lines = [], 0
    while chunk := read():
        newlines = chunk.count(b"\n")
        if newlines:
            lines += newlines
            arrivals.append((time.perf_counter(), lines))
    return arrivals


def rate_of(arrivals: list[tuple[float, int]]) -> float:
    """Least-squares slope of lines received against time: lines per second.

    A fit over every arrival rather than (last - first) / span, so that one line delayed by the
    scheduler (common at 1 line/s on a loaded machine) does not weigh as much as the whole run.
    """
    if len(arrivals) < 2:
        return float("nan")
    n = len(arrivals)
    mean_t = sum(t for t, _ in arrivals) / n
    mean_lines = sum(lines for _, lines in arrivals) / n
    covariance = sum((t - mean_t) * (lines - mean_lines) for t, lines in arrivals)
    variance = sum((t - mean_t) ** 2 for t, _ in arrivals)
    return covariance / variance


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def via_pipe(command: list[str]) -> list[tuple[float, int]]:
    process = subprocess.Popen(command, stdout=subprocess.PIPE)
    fd = process.stdout.fileno()
    result = count_arrivals(lambda: os.read(fd, 1 << 20))
    if process.wait() != 0:
        sys.exit(f"error: {' '.join(command)} failed")
    return result


def cpu_rate(via, *arguments) -> tuple[float, float]:
    """(lines/s of wall time at the reader, lines per CPU second of the writer process)."""
    cpu_before = children_cpu()
    arrivals = via(*arguments)
    return rate_of(arrivals), arrivals[-1][1] / (children_cpu() - cpu_before)


def via_socket(command: list[str], port: int) -> list[tuple[float, int]]:
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    # Both the generator and the baseline say "listening..." on stderr once the port is open.
    if not process.stderr.readline().startswith("listening"):
        process.kill()
        sys.exit(f"error: {' '.join(command)} did not start listening")
    with socket.create_connection(("127.0.0.1", port), timeout=30) as client:
        result = count_arrivals(lambda: client.recv(1 << 20))
    process.stderr.read()  # connect/disconnect messages
    if process.wait() != 0:
        sys.exit(f"error: {' '.join(command)} failed")
    return result


def generator(stage: str, *flags: str) -> list[str]:
    return [PYTHON, str(ROOT / stage / "log_generator.py"), "--seed", "1", *flags]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each paced run")
    parser.add_argument("--rates", default="1,10,100,1000,10000,100000",
                        help="comma-separated paced rates, lines/s ('' = only the unpaced runs)")
    parser.add_argument("--unpaced-lines", type=int, default=2_000_000,
                        help="lines written by each unpaced run (generator and baseline)")
    parser.add_argument("--stage", default="complet", help="stage folder holding log_generator.py")
    args = parser.parse_args(argv)
    try:
        rates = [float(rate) for rate in args.rates.split(",") if rate.strip()]
    except ValueError:
        parser.error(f"--rates must be comma-separated numbers, got {args.rates!r}")
    if args.seconds <= 0 or args.unpaced_lines < 2 or any(rate <= 0 for rate in rates):
        parser.error("--seconds, --rates must be > 0 and --unpaced-lines >= 2")

    print(f"# {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.node()}, "
          f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}, "
          f"Python {platform.python_version()}, stage {args.stage}, "
          f"{args.seconds:g} s per paced run", flush=True)
    print(f"{'rate':>8} | {'pipe achieved':>13} {'error':>7} | "
          f"{'socket achieved':>15} {'error':>7}")
    try:
        for rate in rates:
            flags = ["--rate", f"{rate:g}", "--duration", f"{args.seconds:g}"]
            pipe = rate_of(via_pipe(generator(args.stage, *flags, "--output", "-")))
            port = free_port()
            sock = rate_of(via_socket(generator(args.stage, *flags, "--host", "127.0.0.1",
                                                 "--port", str(port)), port))
            print(f"{rate:>8g} | {pipe:>13.2f} {100 * (pipe - rate) / rate:>+6.2f}% | "
                  f"{sock:>15.2f} {100 * (sock - rate) / rate:>+6.2f}%", flush=True)

        n = str(args.unpaced_lines)
        port, baseline_port = free_port(), free_port()
        unpaced = ("--rate", "1e12", "--count", n)
        results = {
            "pipe": (cpu_rate(via_pipe, generator(args.stage, *unpaced, "--output", "-")),
                     cpu_rate(via_pipe, [PYTHON, "-c", BASELINE, n, "stdout"])),
            "socket": (cpu_rate(via_socket, generator(args.stage, *unpaced, "--host", "127.0.0.1",
                                                      "--port", str(port)), port),
                       cpu_rate(via_socket, [PYTHON, "-c", BASELINE, n, str(baseline_port)],
                                baseline_port)),
        }
    except KeyboardInterrupt:
        return 130
    # Wall-clock rates depend on what else runs; lines per CPU second of the writer (start-up and
    # pool building included) are close to what an idle core would do.
    print(f"\nunpaced, {args.unpaced_lines:,} lines | generator lines/s (per CPU s) "
          f"| naive baseline lines/s (per CPU s) | ratio")
    for sink, ((ours, ours_cpu), (naive, naive_cpu)) in results.items():
        print(f"{sink:>6} | {ours:>11,.0f} ({ours_cpu:>9,.0f}) | "
              f"{naive:>11,.0f} ({naive_cpu:>9,.0f}) "
              f"| {ours / naive:.1f}x ({ours_cpu / naive_cpu:.1f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
