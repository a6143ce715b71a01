"""The final stage end to end: traffic with injected incidents -> Kafka -> Spark alerts -> viewer.

Run:  make demo                      (90 s of traffic, then a summary)
      make demo DURATION=0           (until Ctrl-C, then the summary)
      python -m finale.tools.demo --duration 120 --rate 200 --seed 7

What it does, in order:
1. uses the Kafka broker answering on --bootstrap-servers, or starts the local one
   (finale/local_kafka.py start), which it then stops at the end;
2. learns the thresholds: 30 min of the same generated traffic (--history, no incidents), then
   threshold_job.py, whose file the analyzer gets;
3. starts spark_streaming_analyzer.py (Kafka `http-logs` -> alerts in `alerts`, a fresh checkpoint,
   reading from the end of the topic) and waits for its first micro-batch;
4. starts the dashboard (dashboard.py on 127.0.0.1:--dashboard-port, 8080; its address is
   printed: open it in a browser while the demo runs), the viewer (alert_viewer.py: the live table
   when stdout is a terminal, else one line per entity that starts alerting) and log_generator.py
   into `http-logs`: --rate lines/s, --users users, incidents at fixed fractions of the run (an
   IP and a URL at 11 %, two others and a traffic surge of a third IP at 39 %, each for 17 %, then
   a global outage at 72 % for 13 %; with DURATION=0 over the first 90 s), their truth in
   .state/finale/demo/truth.jsonl;
5. after --duration seconds of traffic waits until the analyzer has read every line, or stops on
   Ctrl-C; stops everything it started (each child in its own process group: SIGINT, then SIGTERM,
   then SIGKILL) and prints a summary: each incident with its detection latency (the first alert on
   that incident's own scope and entity: its first emitted_at - the incident's start, and its
   arrival here; log time = wall-clock time in live mode; for a surge, the surge rule's alert on
   its IP), the alerts by scope, and which incident
   each alert matched (a window overlapping the incident, on its entity, or any entity for a global
   incident, or the global scope for any incident; none = a false positive).
Output of the children: .state/finale/demo/<name>.log; every alert: .state/finale/demo/alerts.txt.
One demo at a time: a second one would share those files.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from finale.analyzer.status import read_status
from finale.common import alert as alert_record
from finale.common.cli import BOOTSTRAP_HELP, DEFAULT_BOOTSTRAP
from finale.common.paths import FINALE_STATE, ROOT, SCRIPTS
from finale.generator.incidents import AlertBook, read_truth, summary

STATE = FINALE_STATE / "demo"
ANALYZER_STATUS = STATE / "analyzer-status.json"
# Incidents as (kind, start, duration) in fractions of the run: an IP and a URL at a time (other
# entities, so each alert names its incident), two rounds, then a global outage last, since it
# makes every IP and URL alert; the gaps let the 30 s windows of one round close before the next.
SCHEDULE = (("ip", 0.11, 0.17), ("url", 0.11, 0.17), ("ip", 0.39, 0.17), ("url", 0.39, 0.17),
            ("surge", 0.39, 0.17), ("global", 0.72, 0.13))
# DURATION=0 (until Ctrl-C) lays the incidents over the first 90 s.
SCHEDULE_SPAN_FOREVER = 90
MIN_DURATION = 40


def incident_flags(duration: float) -> list[str]:
    span = duration if duration > 0 else SCHEDULE_SPAN_FOREVER
    flags = []
    for kind, start, length in SCHEDULE:
        flags += ["--incident", f"{kind}@{round(start * span)}+{max(round(length * span), 5)}"]
    return flags


class AlertCollector(threading.Thread):
    """Reads every new alert from the end of the topic on, keeping the latest version per alert_id
    and the wall-clock time the first version arrived."""

    def __init__(self, bootstrap_servers: str, topic: str, echo: bool):
        super().__init__(daemon=True)
        from kafka import KafkaConsumer, TopicPartition

        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap_servers.split(","), group_id=None,
                                      enable_auto_commit=False, bootstrap_timeout_ms=10_000)
        partitions = self.consumer.partitions_for_topic(topic) or {0}
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        self.consumer.assign(assigned)
        self.consumer.seek_to_end(*assigned)
        for tp in assigned:  # resolve "end" now, before any traffic, so no alert is missed
            self.consumer.position(tp)
        self.book = AlertBook()
        self.messages = 0
        self.echo = echo
        self.echoed: set[tuple] = set()
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            for records in self.consumer.poll(timeout_ms=300).values():
                for record in records:
                    alert = alert_record.decode(record.value, record.key)
                    if alert is None:
                        continue
                    new = alert["alert_id"] not in self.book.alerts
                    self.book.add(alert)
                    self.messages += 1
                    if new:
                        scope = (alert.get("rule"), alert.get("entity_type"), alert.get("entity"))
                        # One line per rule and entity that starts alerting, not per window.
                        if self.echo and scope not in self.echoed:
                            self.echoed.add(scope)
                            log(f"alert: {alert_record.summary(alert)}")
        self.consumer.close(autocommit=False)

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=10)


class Children:
    """Processes started by the demo, each in its own process group (Ctrl-C reaches the demo only,
    which then stops them in order)."""

    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, argv: list[str], log: Path | None) -> subprocess.Popen:
        out = open(log, "w") if log is not None else None
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=out,
                                stderr=subprocess.STDOUT if out else None,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        self.procs.append((name, proc))
        return proc

    def stop(self, proc: subprocess.Popen, grace: float = 10) -> None:
        for sig, wait in ((signal.SIGINT, grace), (signal.SIGTERM, 5), (signal.SIGKILL, 5)):
            if proc.poll() is not None:
                return
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                pass

    def stop_all(self) -> None:
        for _name, proc in reversed(self.procs):
            self.stop(proc)


def broker_answers(bootstrap_servers: str) -> bool:
    host, _, port = bootstrap_servers.split(",")[0].rpartition(":")
    try:
        with socket.create_connection((host or "localhost", int(port)), timeout=2):
            return True
    except OSError:
        return False


def wait_until(condition, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: the process exited with status {proc.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.5)


def lines_delivered(stats_file: Path) -> int:
    """The generator's delivered lines, from its --stats-file (0 if it wrote none)."""
    try:
        return int(json.loads(stats_file.read_text())["lines_delivered"] or 0)
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def alerts_query(status_file: Path) -> dict:
    """The analyzer's `alerts` query in its status file ({} before it has started)."""
    return read_status(status_file).get("queries", {}).get("alerts", {})


def start_analyzer(children: Children, args: argparse.Namespace, checkpoint: Path,
                   flags: list[str]) -> subprocess.Popen:
    """The analyzer, started and through its first micro-batch (its status file says so)."""
    analyzer_log = STATE / "analyzer.log"
    ANALYZER_STATUS.unlink(missing_ok=True)
    log(f"starting the analyzer (log: {analyzer_log.relative_to(ROOT)})")
    analyzer = children.start("analyzer", [
        sys.executable, str(SCRIPTS / "spark_streaming_analyzer.py"),
        "--bootstrap-servers", args.bootstrap_servers, "--starting-offsets", "latest",
        "--checkpoint", str(checkpoint), "--status-file", str(ANALYZER_STATUS),
        *flags], analyzer_log)
    # Its first micro-batch fixes where it starts reading (the end of http-logs): traffic
    # sent before that would be skipped, and the first batch is also the slowest one.
    wait_until(lambda: alerts_query(ANALYZER_STATUS).get("batch_id") is not None,
               args.startup_timeout, "the analyzer's first micro-batch", analyzer)
    log("the analyzer is running")
    return analyzer


def drain(analyzer: subprocess.Popen, sent: int, timeout: float) -> None:
    """Wait until the analyzer has read the `sent` lines of this run (its status file's count)."""
    log(f"the generator is done ({sent} lines sent); waiting for the analyzer to read them "
        f"(at most {timeout:g} s)")
    since = alerts_query(ANALYZER_STATUS).get("updated_at") or ""

    def caught_up() -> bool:
        # It counted every line, or a micro-batch reported after the last line found nothing new.
        query = alerts_query(ANALYZER_STATUS)
        return (query.get("rows_read_total", 0) >= sent
                or (query.get("updated_at", "") > since and query.get("rows_read") == 0))
    try:
        wait_until(caught_up, timeout, "the analyzer to catch up", analyzer)
        # Their alerts leave at the end of that micro-batch: one trigger more.
        time.sleep(6)
    except RuntimeError as error:
        log(f"{error}: summarizing what came so far")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Run the final stage end to end with injected incidents, then summarize.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--duration", type=float, default=90,
                        help=f"seconds of traffic (0 = until Ctrl-C; else >= {MIN_DURATION})")
    parser.add_argument("--rate", type=float, default=100, help="generated lines per second")
    parser.add_argument("--seed", type=int, default=7,
                        help="generator seed (traffic and incidents)")
    parser.add_argument("--users", type=int, default=20,
                        help="generator users (client IPs): few keep the alert table readable")
    parser.add_argument("--bootstrap-servers", default=DEFAULT_BOOTSTRAP, help=BOOTSTRAP_HELP)
    parser.add_argument("--startup-timeout", type=float, default=300,
                        help="seconds allowed for the broker and the analyzer to start")
    parser.add_argument("--dashboard-port", type=int, default=8080,
                        help="port of the dashboard on 127.0.0.1 (0: no dashboard)")
    parser.add_argument("--drain-timeout", type=float, default=180,
                        help="seconds allowed, after the traffic, for the analyzer to catch up")
    args = parser.parse_args(argv)
    if args.duration < 0 or 0 < args.duration < MIN_DURATION:
        parser.error(f"--duration must be 0 or >= {MIN_DURATION}, got {args.duration:g}")
    if args.users < 1:
        parser.error(f"--users must be >= 1, got {args.users}")
    if args.rate <= 0:
        parser.error(f"--rate must be > 0, got {args.rate:g}")
    if not 0 <= args.dashboard_port < 65536:
        parser.error(f"--dashboard-port must be in 0..65535, got {args.dashboard_port}")
    return args


def log(message: str) -> None:
    print(f"[demo {datetime.now(timezone.utc):%H:%M:%S}] {message}", flush=True)


def ensure_broker(args: argparse.Namespace) -> bool:
    """A broker answering on --bootstrap-servers: the running one, or the local one started now
    (True: started here, to be stopped at the end)."""
    if broker_answers(args.bootstrap_servers):
        log(f"using the Kafka broker already running at {args.bootstrap_servers}")
        return False
    log("starting the local Kafka broker (finale/local_kafka.py start)")
    port = args.bootstrap_servers.split(",")[0].rpartition(":")[2]
    started = subprocess.run([sys.executable, str(SCRIPTS / "local_kafka.py"), "start",
                              "--port", port],
                             cwd=ROOT, timeout=args.startup_timeout, capture_output=True, text=True)
    if started.returncode != 0:
        last = (started.stderr.strip().splitlines() or ["local_kafka.py start failed"])[-1]
        raise RuntimeError(last.removeprefix("error: "))
    for line in started.stdout.strip().splitlines():
        log(line)
    # It may have been started meanwhile by someone else (tests): then it is not ours to stop.
    return "already running" not in started.stdout


def learn_thresholds(args: argparse.Namespace) -> list[str]:
    """The analyzer's flags for thresholds learned from generated history."""
    python = sys.executable
    # --- hook: learn thresholds from generated history (thresholds helper) ---------------
    # Half an hour of the same traffic (same --seed, --rate and error model, no incidents),
    # ending now and written as fast as the generator can, then threshold_job.py learns from
    # it and the analyzer gets the file (it re-reads it when it changes).
    history, thresholds_file = STATE / "history.log", STATE / "thresholds.json"
    log(f"learning the thresholds from 30 min of generated history ({history.relative_to(ROOT)})")
    subprocess.run([python, str(SCRIPTS / "log_generator.py"), "--seed", str(args.seed),
                    "--rate", str(args.rate), "--users", str(args.users),
                    "--history", "0.5", "--output", str(history)],
                   cwd=ROOT, check=True, timeout=args.startup_timeout)
    with open(STATE / "threshold_job.log", "w") as job_log:
        learned = subprocess.run([python, str(SCRIPTS / "threshold_job.py"),
                                  "--input", str(history), "--output", str(thresholds_file)],
                                 cwd=ROOT, check=True, timeout=args.startup_timeout,
                                 stdout=subprocess.PIPE, stderr=job_log, text=True)
    log(learned.stdout.strip() or f"thresholds written to {thresholds_file.relative_to(ROOT)}")
    # --- end of hook ------------------------------------------------------------------------
    return ["--thresholds", str(thresholds_file)]


def start_dashboard(children: Children, args: argparse.Namespace) -> None:
    """The dashboard on 127.0.0.1:--dashboard-port, its address printed once it answers; a demo
    without it (port taken, --dashboard-port 0) goes on."""
    if not args.dashboard_port:
        return
    dashboard_log = STATE / "dashboard.log"
    address = f"http://127.0.0.1:{args.dashboard_port}/"
    dashboard = children.start("dashboard", [
        sys.executable, str(SCRIPTS / "dashboard.py"), "--port", str(args.dashboard_port),
        "--bootstrap-servers", args.bootstrap_servers], dashboard_log)

    def listening() -> bool:
        # Its first line, printed once it holds the port (a server answering there may be
        # another program's).
        return dashboard_log.exists() and dashboard_log.read_text().startswith("dashboard: http")
    try:
        wait_until(listening, 30, "the dashboard", dashboard)
    except RuntimeError:
        said = dashboard_log.read_text().strip().splitlines() if dashboard_log.exists() else []
        log(f"no dashboard: {said[-1] if said else 'it did not answer'} "
            f"(make demo DASHBOARD_PORT=... or --dashboard-port N; 0: none)")
        return
    log(f"dashboard: {address} (open it in a browser; served while the demo runs)")


def start_viewer(children: Children, args: argparse.Namespace, tty: bool) -> None:
    viewer = [sys.executable, str(SCRIPTS / "alert_viewer.py"), "--bootstrap-servers",
              args.bootstrap_servers]
    if tty:
        children.start("viewer", viewer, None)
    else:
        children.start("viewer", [*viewer, "--json"], STATE / "viewer.log")


def run_traffic(children: Children, args: argparse.Namespace, truth: Path,
                analyzer: subprocess.Popen) -> None:
    """The generator with the incidents, until --duration (then the analyzer catches up) or
    Ctrl-C."""
    incidents = incident_flags(args.duration)
    stats_file = STATE / "generator-stats.json"
    stats_file.unlink(missing_ok=True)
    generator_argv = [sys.executable, str(SCRIPTS / "log_generator.py"), "--rate", str(args.rate),
                      "--seed", str(args.seed), "--users", str(args.users),
                      "--bootstrap-servers", args.bootstrap_servers,
                      "--truth", str(truth), *incidents, "--stats-file", str(stats_file)]
    if args.duration > 0:
        generator_argv += ["--duration", str(args.duration)]
    log(f"starting the generator: {args.rate:g} lines/s, {args.users} users, incidents "
        f"{' '.join(incidents[1::2])} (seconds from now)")
    generator = children.start("generator", generator_argv, STATE / "generator.log")
    if args.duration > 0:
        try:
            generator.wait(timeout=args.duration + 30)
        except subprocess.TimeoutExpired:
            log("the generator did not finish in time")
        drain(analyzer, lines_delivered(stats_file), args.drain_timeout)
    else:
        log("running until Ctrl-C")
        generator.wait()


def print_summary(args: argparse.Namespace, truth: Path, collector: AlertCollector) -> None:
    book = collector.book
    text, listing = summary(read_truth(truth), book.alerts, book.firsts, book.arrivals,
                            collector.messages)
    (STATE / "alerts.txt").write_text(listing)
    print(f"\n=== Summary ({args.rate:g} lines/s, seed {args.seed}; "
          f"truth {truth.relative_to(ROOT)}, every alert in "
          f"{(STATE / 'alerts.txt').relative_to(ROOT)}) ===")
    print(text)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    STATE.mkdir(parents=True, exist_ok=True)
    children = Children()
    collector = None
    started_broker = False
    tty = sys.stdout.isatty()
    truth = STATE / "truth.jsonl"
    truth.unlink(missing_ok=True)
    # A fresh checkpoint: the analyzer reads from the end of http-logs, not an earlier demo's
    # traffic.
    checkpoint = STATE / "checkpoint"
    shutil.rmtree(checkpoint, ignore_errors=True)
    return_code = 0
    try:
        started_broker = ensure_broker(args)
        analyzer = start_analyzer(children, args, checkpoint, learn_thresholds(args))
        collector = AlertCollector(args.bootstrap_servers, "alerts", echo=not tty)
        collector.start()
        start_dashboard(children, args)
        start_viewer(children, args, tty)
        run_traffic(children, args, truth, analyzer)
    except KeyboardInterrupt:
        log("Ctrl-C: stopping")
    except (RuntimeError, subprocess.SubprocessError, OSError) as error:
        log(f"error: {error}")
        return_code = 1
    finally:
        # A second Ctrl-C (or a SIGTERM) must not skip the cleanup.
        previous = {sig: signal.signal(sig, signal.SIG_IGN)
                    for sig in (signal.SIGINT, signal.SIGTERM)}
        children.stop_all()
        if collector is not None:
            collector.stop()
        if started_broker:
            log("stopping the local Kafka broker")
            subprocess.run([sys.executable, str(SCRIPTS / "local_kafka.py"), "stop"], cwd=ROOT)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if collector is not None:
        print_summary(args, truth, collector)
    return return_code


def _interrupt(signum, frame):
    raise KeyboardInterrupt


if __name__ == "__main__":
    # Ctrl-C and SIGTERM both end the demo through its cleanup. Installing the handler also matters
    # when the demo was started with SIGINT ignored (a background job): the children would inherit
    # the ignored SIGINT, and ignore the SIGINT that asks them to stop first.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    sys.exit(main())
