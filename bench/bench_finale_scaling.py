"""Scaling: the pipeline's steady lines/s at local[1], local[2] and on a two-worker Spark cluster.

Run (a broker first: python finale/local_kafka.py start):
    python bench/bench_finale_scaling.py [--lines 300000] [--setups local[1],local[2],cluster]
    python bench/bench_finale_scaling.py --lines 1000000        # the issue's size

For each setup, bench/bench_finale_pipeline.py runs as a subprocess with `--cases counts,analyzer
--master M --lines N --bootstrap-servers B` (it pre-loads its own fresh 3-partition topic on the
same broker, warms up, then reports steady-state lines/s with start-up apart); this script only
reads the rows of its markdown table (`| case | steady lines/s | ...`), so it does not depend on
that script's internals. Setups:
  local[1]  one task slot in the driver's JVM (the same-run baseline of every ratio)
  local[2]  two task slots in the driver's JVM
  cluster   a Spark standalone master and two workers of 1 core each, started here on 127.0.0.1
            by finale/tools/spark_daemon.py (free ports), the driver asking for
            spark.cores.max=2 with 1-core executors: one executor JVM per worker, the driver in a
            JVM of its own
The cluster's daemons always authenticate (spark_daemon has no unauthenticated mode): a fresh
secret goes to a 0600 file in a 0700 folder under the git-ignored .state/scaling/, and the driver
gets it in a 0600 properties file named by PYSPARK_SUBMIT_ARGS
(finale/common/spark_security.py), never on a command line. The driver only authenticates: its
RPC and disk traffic stays unencrypted, like local[n]'s, so the ratios measure the process layout,
not encryption (--secure-cluster adds the project's RPC and disk encryption). The cluster is
stopped at the end, also on error or Ctrl-C, and this script checks that none of its processes
(daemons, executors) is left.

Then a sizing projection from the measured per-core rate of the analyzer case (the product's two
queries): Spark cores and Kafka partitions for --base-rate lines/s x1, x10, x100 at --headroom CPU.
Every setup runs on this one machine (its cores are shared with the driver, the broker and
whatever else runs): the figures are same-run ratios first.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from argparse import Namespace
from itertools import pairwise
from pathlib import Path

from finale.common.cli import HelpFormatter, OneLineErrorParser

ROOT = Path(__file__).resolve().parent.parent
PIPELINE = ROOT / "bench" / "bench_finale_pipeline.py"
STATE = ROOT / ".state" / "scaling"
CASES = ("counts", "analyzer")
SETUPS = ("local[1]", "local[2]", "cluster")
WORKERS, WORKER_CORES = 2, 1
# A table row of the pipeline bench: | case | 12,345 | ... (a failed case has text instead).
ROW = re.compile(r"^\|\s*([\w-]+)\s*\|\s*([^|]*?)\s*\|")
LOAD = re.compile(r"load average ([\d.]+) before, ([\d.]+) after")


class SetupError(RuntimeError):
    """One line: why a setup could not be measured."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def load() -> str:
    return " / ".join(f"{value:.2f}" for value in os.getloadavg())


def broker_problem(bootstrap: str) -> str | None:
    """None if one of the bootstrap servers accepts a TCP connection, else a one-line problem."""
    for server in bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            socket.create_connection((host or "localhost", int(port)), timeout=5).close()
            return None
        except (OSError, ValueError):
            continue
    return (f"no Kafka broker answers at {bootstrap} (start one: python finale/local_kafka.py "
            "start, or pass --bootstrap-servers)")


def group_members(pgid: int) -> list[int]:
    """Pids of the live processes of process group `pgid` (from /proc: no pgrep needed)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        # Fields after the command name, which is in parentheses and may hold spaces.
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            found.append(int(pid))
    return found


def cpu_seconds(root: int, pgids: tuple[int, ...] = ()) -> float:
    """CPU time (user + system) used so far by the live descendants of pid `root` (itself
    included) and by the processes of the process groups `pgids` (the cluster's daemons and the
    executors they started)."""
    table = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # fields[0] is stat's 3rd field: 1 ppid, 2 pgrp, 11 utime, 12 stime (clock ticks).
        table[int(pid)] = (int(fields[1]), int(fields[2]), int(fields[11]) + int(fields[12]))

    def counted(pid: int) -> bool:
        if table[pid][1] in pgids:
            return True
        while pid in table and pid > 1:
            if pid == root:
                return True
            pid = table[pid][0]
        return False

    total = sum(ticks for pid, (_, _, ticks) in table.items() if counted(pid))
    return total / os.sysconf("SC_CLK_TCK")


class Cluster:
    """A standalone master + WORKERS workers of WORKER_CORES core(s), each in its own process group
    (start_new_session): a worker's executors are its children, in its group, so stopping the
    groups stops every JVM of the cluster."""

    def __init__(self, folder: Path, timeout_s: float, worker_memory: str):
        self.folder, self.timeout_s, self.worker_memory = folder, timeout_s, worker_memory
        self.secret_file = folder / "spark.secret"
        self.processes: list[subprocess.Popen] = []
        self.logs = []
        self.url = self.webui_port = None

    def start(self) -> None:
        from finale.tools import spark_daemon

        handle = os.open(self.secret_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(handle, "w") as out:
            out.write(secrets.token_hex(32))
        master_port, self.webui_port = free_port(), free_port()
        self.url = f"spark://127.0.0.1:{master_port}"
        roles = [("master", Namespace(role="master", host="127.0.0.1", port=master_port,
                                      webui_port=self.webui_port, secret_file=self.secret_file))]
        for index in range(WORKERS):
            roles.append((f"worker{index + 1}", Namespace(
                role="worker", host="127.0.0.1", port=free_port(), webui_port=free_port(),
                secret_file=self.secret_file, master=self.url, cores=WORKER_CORES,
                memory=self.worker_memory, work_dir=self.folder / f"work{index + 1}")))
        for name, args in roles:
            log = open(self.folder / f"{name}.log", "w")
            self.logs.append(log)
            try:
                self.processes.append(spark_daemon.start(
                    args, timeout_s=self.timeout_s, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True))
            except (spark_daemon.DaemonError, OSError) as error:
                raise SetupError(f"{error} (log: {log.name})") from None
        deadline = time.monotonic() + self.timeout_s
        while self.alive_workers() < WORKERS:
            if time.monotonic() > deadline:
                raise SetupError(f"{self.alive_workers()} of {WORKERS} workers registered with the "
                                 f"master within {self.timeout_s:.0f} s (logs: {self.folder})")
            time.sleep(0.5)

    def state(self) -> dict:
        """The master's own view (its web UI's JSON); {} if it does not answer."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.webui_port}/json/",
                                        timeout=5) as answer:
                return json.load(answer)
        except (OSError, ValueError):
            return {}

    def alive_workers(self) -> int:
        return int(self.state().get("aliveworkers", 0))

    def stop(self) -> list[int]:
        """SIGTERM each group, SIGKILL what is left after 60 s; the pids still alive after that."""
        groups = [process.pid for process in self.processes]
        for pgid in groups:
            try:
                os.killpg(pgid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 60
        while any(group_members(pgid) for pgid in groups) and time.monotonic() < deadline:
            time.sleep(0.2)
        for pgid in groups:
            if group_members(pgid):
                try:
                    os.killpg(pgid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        for log in self.logs:
            log.close()
        deadline = time.monotonic() + 10
        left = [pid for pgid in groups for pid in group_members(pgid)]
        while left and time.monotonic() < deadline:
            time.sleep(0.2)
            left = [pid for pgid in groups for pid in group_members(pgid)]
        return left


def driver_properties(cluster: Cluster, executor_memory: str, secure: bool) -> dict[str, str]:
    """What the driver JVM reads from its properties file to use the cluster."""
    from finale.common import spark_security

    properties = {"spark.authenticate": "true",
                  spark_security.SECRET_KEY: spark_security.read_secret(cluster.secret_file),
                  # One 1-core executor on each 1-core worker: both workers, both cores.
                  "spark.cores.max": str(WORKERS * WORKER_CORES),
                  "spark.executor.cores": str(WORKER_CORES),
                  # The worker offers --worker-memory; the default executor memory (1g) could
                  # take all of it and leave the executor unlaunchable.
                  "spark.executor.memory": executor_memory}
    if secure:
        properties.update(spark_security.security_properties(cluster.secret_file))
    return properties


def run_pipeline(master: str, args: argparse.Namespace, env: dict[str, str],
                 pgids: tuple[int, ...] = (), watch=None) -> dict:
    """One pipeline-bench subprocess; its figures per case, its load line, its wall time, and the
    CPU seconds each case used (driver + executors: the child's process tree and `pgids`).
    `watch()`, called every second while it runs, returns a problem to stop it for, or None."""
    command = [sys.executable, str(PIPELINE), "--cases", ",".join(CASES), "--master", master,
               "--lines", str(args.lines), "--bootstrap-servers", args.bootstrap_servers]
    began = time.monotonic()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=env, cwd=ROOT)
    last_error, marks = [], []

    def relay():  # its progress goes on to our stderr; its last line explains a failure
        for line in child.stderr:
            # "# warm-up: ..." then "# <case>: ..." as each case ends: the CPU used between two
            # marks is that case's (the per-core figure that a shared machine does not distort).
            mark = re.match(r"# ([\w-]+): ", line)
            if mark:
                marks.append((mark.group(1), cpu_seconds(child.pid, pgids)))
            sys.stderr.write(line)
            sys.stderr.flush()
            if line.strip():
                last_error[:] = [line.strip()]

    stopped_for = []

    def watching():
        while child.poll() is None:
            problem = watch()
            if problem:
                stopped_for.append(problem)
                child.send_signal(signal.SIGINT)  # it stops Spark and deletes its topics
                return
            time.sleep(1)

    relaying = threading.Thread(target=relay, daemon=True)
    relaying.start()
    if watch is not None:
        threading.Thread(target=watching, daemon=True).start()
    try:
        stdout = child.stdout.read()
        child.wait()
    finally:
        if child.poll() is None:
            # Ctrl-C or SIGTERM here: SIGINT lets it stop Spark and delete its topics.
            child.send_signal(signal.SIGINT)
            try:
                child.wait(timeout=60)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
    relaying.join(timeout=10)
    result = {"seconds": time.monotonic() - began, "rates": {}, "errors": {}, "load": None,
              "cpu": {}}
    for (_, before), (case, after) in pairwise(marks):
        if case in CASES and after > before:
            result["cpu"][case] = args.lines / (after - before)
    for line in stdout.splitlines():
        match = ROW.match(line)
        if match and match.group(1) in CASES:
            value = match.group(2)
            if re.fullmatch(r"[\d,]+(\.\d+)?", value):
                result["rates"][match.group(1)] = float(value.replace(",", ""))
            else:
                result["errors"][match.group(1)] = value or "no figure"
        elif LOAD.search(line) and result["load"] is None:
            result["load"] = "{} / {}".format(*LOAD.search(line).groups())
    if stopped_for:
        result["errors"]["run"] = f"stopped: {stopped_for[0]}"
    elif child.returncode != 0:
        result["errors"]["run"] = (f"exit status {child.returncode}"
                                   + (f": {last_error[0]}" if last_error else ""))
    for case in CASES:
        if case not in result["rates"] and case not in result["errors"]:
            result["errors"][case] = "no row in the pipeline bench's output"
    return result


def measure(setup: str, args: argparse.Namespace, folder: Path) -> dict:
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"}
    if setup != "cluster":
        result = run_pipeline(setup, args, env)
        result.update(master=setup, cores=int(setup[len("local["):-1]))
        return result
    from finale.common import spark_security

    os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"  # the daemons and their executors: loopback only
    cluster = Cluster(folder, args.cluster_timeout, args.worker_memory)
    try:
        cluster.start()
        properties = driver_properties(cluster, args.executor_memory, args.secure_cluster)
        # The master's answer, polled while the driver runs: proof that the application really
        # held both workers' cores (not fewer, which would skew the per-core figure), and a stop
        # if it holds none for too long (Spark's driver would wait for executors forever).
        granted, waiting_since = [0], [None]

        def watch():
            apps = cluster.state().get("activeapps", [])
            cores = sum(int(app.get("cores", 0)) for app in apps)
            granted[0] = max(granted[0], cores)
            if not apps or cores:
                waiting_since[0] = None
                return None
            waiting_since[0] = waiting_since[0] or time.monotonic()
            if time.monotonic() - waiting_since[0] > args.cluster_timeout:
                return (f"the application got no executor from the cluster within "
                        f"{args.cluster_timeout:.0f} s (worker logs: {folder})")
            return None

        with spark_security.security_properties_file(properties) as path:
            env["PYSPARK_SUBMIT_ARGS"] = f"--properties-file {path} pyspark-shell"
            result = run_pipeline(cluster.url, args, env,
                                  tuple(process.pid for process in cluster.processes), watch)
        result.update(master=cluster.url, cores=WORKERS * WORKER_CORES, granted=granted[0])
        if granted[0] != WORKERS * WORKER_CORES:
            result["errors"]["cores"] = (f"the master granted at most {granted[0]} cores to the "
                                         f"application, not {WORKERS * WORKER_CORES}")
        return result
    finally:
        left = cluster.stop()
        if left:
            raise SetupError(f"cluster processes still running after the stop: pids "
                             f"{', '.join(map(str, left))}")


def fmt(value) -> str:
    return "-" if value is None else f"{value:,.0f}"


def report(results: dict, args: argparse.Namespace, before: str) -> None:
    base = results.get("local[1]", {}).get("rates", {})
    print(f"{args.lines:,} lines per setup (bench/bench_finale_pipeline.py --cases "
          f"{','.join(CASES)}: steady-state lines/s, start-up apart), one run each, same broker; "
          f"{os.cpu_count()} CPU cores shared by every setup; load average 1/5/15 min {before} "
          f"before, {load()} after\n")
    print("| setup | master | cores | counts lines/s | analyzer lines/s | counts per core "
          "| analyzer per core | counts vs local[1] | analyzer vs local[1] "
          "| counts / analyzer lines per CPU-s | run s | load before / after (1 min) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for setup, r in results.items():
        if "setup_error" in r:
            print(f"| {setup} | {r['setup_error']} | | | | | | | | | | |")
            continue
        rates, cores = r["rates"], r["cores"]
        cells = [fmt(rates.get(c)) for c in CASES]
        cells += [fmt(rates[c] / cores) if c in rates else "-" for c in CASES]
        cells += [f"{rates[c] / base[c]:.2f}x" if c in rates and base.get(c) else "-"
                  for c in CASES]
        cells.append(" / ".join(fmt(r["cpu"].get(c)) for c in CASES))
        master = r["master"] + (f" ({WORKERS} workers x {WORKER_CORES} core, {r['granted']} "
                                "cores granted)" if "granted" in r else "")
        print(f"| {setup} | {master} | {cores} | {' | '.join(cells)} | "
              f"{r['seconds']:.0f} | {r['load'] or '-'} |")
    for setup, r in results.items():
        for case, error in r.get("errors", {}).items():
            print(f"\n{setup}, {case}: {error}")
    sizing(results, args)


def sizing(results: dict, args: argparse.Namespace) -> None:
    order = [args.size_from] + [s for s in ("cluster", "local[2]", "local[1]")
                                if s != args.size_from]
    source = next((s for s in order if "analyzer" in results.get(s, {}).get("rates", {})), None)
    if source is None:
        print("\nNo analyzer figure measured: no sizing projection.")
        return
    r = results[source]
    per_core = r["rates"]["analyzer"] / r["cores"]
    per_cpu = r["cpu"].get("analyzer")
    one, two = (results.get(s, {}).get("rates", {}).get("analyzer")
                for s in ("local[1]", "local[2]"))
    efficiency = (f"; local[1] -> local[2] gave {two / one:.2f}x the lines/s for 2x the cores "
                  f"({two / one / 2:.0%} of linear)" if one and two else "")
    cpu_text = (f", and {per_cpu:,.0f} lines per CPU-second of its processes (driver, executors, "
                "the cluster's daemons; start-up batch included: what a core does when nothing "
                "else runs on it, which a shared machine does not distort)" if per_cpu else "")
    print(f"\nSizing projection (computed, not measured): the analyzer case (the product's two "
          f"queries) on {source} gave {per_core:,.0f} steady lines/s per core{cpu_text}"
          f"{efficiency}. Base traffic {args.base_rate:,.0f} lines/s (--base-rate). Spark cores "
          f"= traffic / (rate per core x {args.headroom:.0%} CPU headroom), rounded up, from each "
          "of the two rates; Kafka partitions >= cores, since one Kafka partition is read by one "
          "task (at least 3, today's topics); spark.sql.shuffle.partitions >= cores too (the "
          "windowed state's partitions, fixed in the checkpoint at the first start; the analyzer "
          "sets 2). Partitions follow the larger core count.\n")
    print("| traffic | lines/s | Spark executor cores (from lines/s per core) "
          "| Spark executor cores (from lines per CPU-s) | Kafka partitions | shuffle partitions |")
    print("|---|---:|---:|---:|---:|---:|")
    for factor in (1, 10, 100):
        rate = args.base_rate * factor
        cores = max(1, math.ceil(rate / (per_core * args.headroom)))
        by_cpu = max(1, math.ceil(rate / (per_cpu * args.headroom))) if per_cpu else None
        most = max(cores, by_cpu or 0)
        print(f"| x{factor} | {rate:,.0f} | {cores} | {by_cpu or '-'} | {max(3, most)} | "
              f"{max(2, most)} |")
    print(f"\nA linear projection from {r['cores']} cores on one shared machine: it assumes the "
          "per-core rate holds at 10-100x the cores, and it leaves out what was not measured here: "
          "the driver (its own core(s): it plans every micro-batch and runs the alert batch), "
          "Kafka's own capacity, and skew (a partition or a window key hotter than the others).")


def memory_mb(text: str) -> float | None:
    """A Spark memory size (512m, 1g, 1024k, ...) in MiB; None if it is not one."""
    match = re.fullmatch(r"(\d+)([kmgt])b?", text.strip().lower())
    if not match:
        return None
    return int(match.group(1)) * {"k": 1 / 1024, "m": 1, "g": 1024, "t": 1024 ** 2}[match.group(2)]


def interrupted(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = OneLineErrorParser(prog="bench_finale_scaling.py", formatter_class=HelpFormatter,
                                description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap-servers",
                        default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "localhost:9092"),
                        help="Kafka bootstrap servers (env KAFKA_BOOTSTRAP_SERVERS)")
    parser.add_argument("--lines", type=int, default=300_000,
                        help="lines each setup's pipeline bench pre-loads (issue: 1000000)")
    parser.add_argument("--setups", default=",".join(SETUPS),
                        help="comma-separated setups, in order: " + ", ".join(SETUPS))
    parser.add_argument("--base-rate", type=float, default=1000,
                        help="lines/s of the traffic the sizing projection starts from (the "
                             "pipeline bench's generated traffic is 1,000 lines/s of log time)")
    parser.add_argument("--headroom", type=float, default=0.5,
                        help="CPU share the projected cores may use at the projected traffic "
                             "(0.5: half their capacity, room for bursts and catch-up)")
    parser.add_argument("--size-from", choices=SETUPS, default="cluster",
                        help="setup whose analyzer lines/s per core the projection uses (the next "
                             "measured one if it failed)")
    parser.add_argument("--worker-memory", default="1g", help="cluster: memory each worker offers")
    parser.add_argument("--executor-memory", default="768m",
                        help="cluster: spark.executor.memory (at most --worker-memory)")
    parser.add_argument("--cluster-timeout", type=float, default=120,
                        help="cluster: seconds for each daemon to listen and the workers to "
                             "register")
    parser.add_argument("--secure-cluster", action="store_true",
                        help="cluster: the driver also uses conf/spark-defaults.conf (RPC and disk "
                             "encryption), as the analyzer's --secure does")
    args = parser.parse_args(argv)
    setups = [s.strip() for s in args.setups.split(",") if s.strip()]
    unknown = [s for s in setups if s not in SETUPS]
    if unknown or not setups:
        parser.error(f"unknown setup(s) {', '.join(unknown) or '(none given)'}; known: "
                     f"{', '.join(SETUPS)}")
    if args.lines < 1000 or args.base_rate <= 0 or not 0 < args.headroom <= 1:
        parser.error("need --lines >= 1000, --base-rate > 0 and 0 < --headroom <= 1")
    worker, executor = memory_mb(args.worker_memory), memory_mb(args.executor_memory)
    if worker is None or executor is None or executor > worker:
        parser.error(f"--executor-memory {args.executor_memory} and --worker-memory "
                     f"{args.worker_memory} must be sizes like 768m or 1g, the executor's at most "
                     "the worker's (else no executor could start)")
    problem = broker_problem(args.bootstrap_servers)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 1

    # SIGTERM (a stopped `make bench`) unwinds like Ctrl-C: the finally blocks stop the cluster.
    signal.signal(signal.SIGTERM, interrupted)
    # Also when started with SIGINT ignored (a background job): a Python handler here means the
    # pipeline bench starts with SIGINT's default, so the SIGINT sent to it on a stop is handled.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    before = load()
    results = {}
    STATE.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(dir=STATE) as folder:  # mode 0700: holds the secret
            for setup in setups:
                print(f"# {setup}: starting (load {load()})", file=sys.stderr, flush=True)
                try:
                    results[setup] = measure(setup, args, Path(folder))
                except SetupError as error:
                    results[setup] = {"setup_error": str(error)}
                print(f"# {setup}: {results[setup]}", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        print("interrupted: the cluster (if any) is stopped", file=sys.stderr)
        return 130
    report(results, args, before)
    failed = [s for s, r in results.items() if "setup_error" in r or r.get("errors")]
    if failed:
        print(f"error: setup(s) without every figure: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
