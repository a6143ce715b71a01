"""A real local Apache Kafka broker and Spark's Kafka connector, installed and run by the project.

No Docker: the official Apache Kafka jars and Spark's Kafka connector are fetched once from Maven
Central into the git-ignored .cache/jars/ (finale/tools/kafka_jars.py), and the broker runs as a
plain `java` process (single-node KRaft, broker and controller in one JVM) whose data, pid and log
live in the git-ignored .state/kafka/. This module starts, stops and reports on that broker
(creating the project's topics on it: finale/tools/kafka_topics.py) and is the command line:

    python finale/local_kafka.py fetch     # download the jars once (offline no-op afterwards)
    python finale/local_kafka.py start     # start the broker on localhost:9092, create the topics
    python finale/local_kafka.py status    # running or not, pid, port, topics
    python finale/local_kafka.py topics    # topics of any cluster (--bootstrap-servers)
    python finale/local_kafka.py stop      # clean shutdown

The connector lookup (connector_jars, ensure_connector) lives in kafka_jars; it is importable from
here too, for the callers that take it from this module.
"""
from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

from finale.common.cli import DEFAULT_BOOTSTRAP
from finale.common.paths import STATE
from finale.common.topics import TOPICS
from finale.tools.kafka_jars import (
    DEFAULT_IVY_DIR,
    DEFAULT_JARS_DIR,
    FIX_FETCH,
    JAR_SETS,
    KAFKA_VERSION,
    KafkaSetupError,
    complete_jars,
    fetch,
    java_executable,
)
from finale.tools.kafka_jars import connector_jars as connector_jars
from finale.tools.kafka_jars import ensure_connector as ensure_connector
from finale.tools.kafka_topics import admin_client, describe_topics, ensure_topics

DEFAULT_STATE_DIR = STATE / "kafka"
DEFAULT_PORT = 9092

# Kept so a broker started from this process is reaped by stop() instead of lingering as a zombie.
_children: dict[int, subprocess.Popen] = {}


# --------------------------------------------------------------------------------------------
# Broker: start, stop, status
# --------------------------------------------------------------------------------------------

def _alive(pid: int) -> bool:
    """True while `pid` runs (a finished child of ours is reaped, a zombie counts as gone)."""
    child = _children.get(pid)
    if child is not None:
        if child.poll() is None:
            return True
        _children.pop(pid, None)
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z"):
            return False
    return True


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return subprocess.run(["ps", "-p", str(pid), "-o", "command="],
                              capture_output=True, text=True).stdout


def _is_our_broker(pid: int, state_dir: Path = DEFAULT_STATE_DIR) -> bool:
    """Guards against a stale pid file whose pid now belongs to another program, or to another
    Kafka broker (another state dir, a Docker broker): ours runs with this state dir's config."""
    cmdline = _cmdline(pid)
    config = Path(state_dir).resolve() / "server.properties"
    return "kafka.Kafka" in cmdline and str(config) in cmdline.split()


def broker_info(state_dir: Path = DEFAULT_STATE_DIR) -> dict | None:
    """{'pid', 'port', 'bootstrap_servers', ...} of the running local broker, or None.

    A state file that is not what start() wrote (truncated, edited by hand) is a KafkaSetupError
    naming the file, not a traceback: a broker may still run from it, so it is not just ignored.
    """
    path = Path(state_dir) / "broker.json"
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise KafkaSetupError(f"cannot read the local broker's state file {path}: "
                              f"{error.strerror}") from None
    try:
        info = json.loads(text)
        valid = (isinstance(info, dict) and isinstance(info.get("pid"), int) and info["pid"] > 0
                 and isinstance(info.get("port"), int)
                 and isinstance(info.get("bootstrap_servers"), str))
    except ValueError:
        valid = False
    if not valid:
        raise KafkaSetupError(f"the local broker's state file {path} is damaged: stop any broker "
                              f"still running from {state_dir} (`pgrep -af kafka.Kafka`), then "
                              f"delete {path}")
    if _alive(info["pid"]) and _is_our_broker(info["pid"], state_dir):
        return info
    return None


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        # SO_REUSEADDR as the broker's own server socket has it: the TIME_WAIT connections that a
        # broker stopped a moment ago leaves behind must not count as "in use", only a listener.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def _state_lock(state_dir: Path):
    """Two starts at once (two test sessions) must not both format and launch a broker."""
    import fcntl

    state_dir.mkdir(parents=True, exist_ok=True)
    with open(state_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _cluster_id(state_dir: Path) -> str:
    """Generated once and kept: the formatted storage is bound to it."""
    path = state_dir / "cluster.id"
    if path.exists():
        return path.read_text().strip()
    while True:  # Kafka's Uuid: 16 random bytes, URL-safe base64, never starting with '-'
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            break
    path.write_text(cluster_id + "\n")
    return cluster_id


def _write_configs(state_dir: Path, port: int, controller_port: int) -> Path:
    data_dir = state_dir / "data"
    header = "# Generated by finale/local_kafka.py at each start: edit the script, not this file."
    properties = f"""{header}
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@localhost:{controller_port}
listeners=PLAINTEXT://localhost:{port},CONTROLLER://localhost:{controller_port}
advertised.listeners=PLAINTEXT://localhost:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs={data_dir}
# One node: one partition and one replica unless a topic asks for more.
num.partitions=1
default.replication.factor=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=3
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=3
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
# A laptop broker: keep a day of logs in small segments.
log.retention.hours=24
log.segment.bytes=67108864
num.network.threads=2
num.io.threads=2
"""
    (state_dir / "server.properties").write_text(properties)
    (state_dir / "log4j2.properties").write_text(
        "# The broker's stdout is .state/kafka/kafka.log (see local_kafka.py start).\n"
        "appender.out.type=Console\nappender.out.name=out\n"
        "appender.out.layout.type=PatternLayout\n"
        "appender.out.layout.pattern=[%d{ISO8601}] %p %m (%c)%n\n"
        "rootLogger.level=INFO\nrootLogger.appenderRef.out.ref=out\n"
        "logger.state.name=state.change.logger\nlogger.state.level=WARN\n"
        "logger.request.name=kafka.request.logger\nlogger.request.level=WARN\n"
    )
    return state_dir / "server.properties"


def _last_error(log_path: Path) -> str:
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        return "no log"
    for line in reversed(lines):
        if " ERROR " in line or "Exception" in line:
            return line.strip()[:300]
    return lines[-1].strip()[:300] if lines else "empty log"


def wait_until_ready(bootstrap_servers: str, timeout_s: float, pid: int | None = None,
                     log_path: Path | None = None) -> float:
    """Block until the broker answers a metadata request; seconds waited. KafkaSetupError on
    timeout or if the broker process dies first."""
    from kafka.errors import KafkaConfigurationError, KafkaError

    started = time.monotonic()
    deadline = started + timeout_s
    while True:
        if pid is not None and not _alive(pid):
            raise KafkaSetupError(f"the broker exited during startup: {_last_error(log_path)} "
                                  f"(full log: {log_path})")
        host, _, port = bootstrap_servers.split(",")[0].rpartition(":")
        try:
            # A cheap TCP probe first: the admin client's bootstrap waits seconds per failure.
            socket.create_connection((host or "localhost", int(port)), timeout=1).close()
            admin = admin_client(bootstrap_servers, timeout_s=2)
            try:
                admin.list_topics()
            finally:
                admin.close()
            return time.monotonic() - started
        except KafkaConfigurationError:
            raise
        except (KafkaError, OSError):
            if time.monotonic() > deadline:
                raise KafkaSetupError(f"no answer from the broker at {bootstrap_servers} after "
                                      f"{timeout_s:.0f} s (see {log_path})") from None
            time.sleep(0.2)


def start(port: int | None = None, timeout_s: float = 90.0, state_dir: Path = DEFAULT_STATE_DIR,
          jars_dir: Path = DEFAULT_JARS_DIR, log=print,
          default_port: int = DEFAULT_PORT) -> tuple[dict, bool]:
    """Start the local broker unless it runs already; (broker info, True if started here).

    port None: reuse the running broker whatever its port, else start on `default_port`.
    An explicit port that differs from the running broker's is an error, not a silent no-op:
    the caller would talk to the wrong port.
    """
    if port is not None and not 0 < port < 65536:
        raise KafkaSetupError(f"the broker port must be 1..65535, got {port}")
    # Absolute: the broker's command line names its config by this path, which is how
    # broker_info() later tells our broker from any other Kafka process.
    state_dir = Path(state_dir).resolve()
    with _state_lock(state_dir):
        info = broker_info(state_dir)
        if info and port is not None and info["port"] != port:
            raise KafkaSetupError(f"the local broker already runs on port {info['port']}, not "
                                  f"{port}: use --bootstrap-servers {info['bootstrap_servers']}, "
                                  "or stop it first")
        if info:
            log(f"Kafka already running (pid {info['pid']}, {info['bootstrap_servers']})")
            return info, False
        port = default_port if port is None else port
        java = java_executable()
        jars = complete_jars("kafka-broker", jars_dir)
        if not jars:
            raise KafkaSetupError(f"the Kafka {KAFKA_VERSION} broker jars are not in "
                                  f"{Path(jars_dir) / 'kafka-broker'}: {FIX_FETCH}")
        if not _port_free(port):
            raise KafkaSetupError(f"port {port} is already in use by another program: stop it, "
                                  "or use --port (or point clients at that cluster with "
                                  "--bootstrap-servers / KAFKA_BOOTSTRAP_SERVERS)")
        controller_port = _free_port()
        config = _write_configs(state_dir, port, controller_port)
        classpath = str(Path(jars[0]).parent / "*")
        log_path = state_dir / "kafka.log"
        jvm = [java, "-Xms128m", "-Xmx512m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
               "-Djava.awt.headless=true",
               f"-Dlog4j2.configurationFile={state_dir / 'log4j2.properties'}", "-cp", classpath]
        if not (state_dir / "data" / "meta.properties").exists():
            formatted = subprocess.run(
                jvm + ["kafka.tools.StorageTool", "format", "--ignore-formatted",
                       "-t", _cluster_id(state_dir), "-c", str(config)],
                capture_output=True, text=True)
            if formatted.returncode != 0:
                detail = (formatted.stderr or formatted.stdout).strip().splitlines()
                raise KafkaSetupError(f"formatting {state_dir / 'data'} failed: "
                                      f"{detail[-1] if detail else 'no output'}")
        if log_path.exists() and log_path.stat().st_size > 20_000_000:
            log_path.replace(log_path.with_name("kafka.log.1"))  # keep one previous log
        began = time.monotonic()
        with open(log_path, "ab") as log_file:
            process = subprocess.Popen(
                jvm + ["kafka.Kafka", str(config)], stdin=subprocess.DEVNULL, stdout=log_file,
                stderr=subprocess.STDOUT, cwd=state_dir,
                # Own session: Ctrl-C in the calling terminal does not reach the broker.
                start_new_session=True)
        _children[process.pid] = process
        info = {"pid": process.pid, "port": port, "controller_port": controller_port,
                "bootstrap_servers": f"localhost:{port}", "kafka_version": KAFKA_VERSION,
                "log": str(log_path), "started_at": time.time()}
        (state_dir / "kafka.pid").write_text(f"{process.pid}\n")
        (state_dir / "broker.json").write_text(json.dumps(info, indent=1))
        try:
            wait_until_ready(info["bootstrap_servers"], timeout_s, process.pid, log_path)
            info["ready_after_s"] = round(time.monotonic() - began, 2)
            created = ensure_topics(info["bootstrap_servers"], align_configs=True)
        except BaseException:
            _stop_pid(process.pid, 15)
            raise
        log(f"Kafka {KAFKA_VERSION} started (pid {process.pid}, {info['bootstrap_servers']}, "
            f"ready in {info['ready_after_s']:.1f} s, log {log_path})"
            + (f"; created topics {', '.join(created)}" if created else ""))
        return info, True


def _stop_pid(pid: int, timeout_s: float) -> bool:
    """SIGTERM (Kafka's clean shutdown), wait, then SIGKILL the whole group; True if killed."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _alive(pid):
            return False
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    while _alive(pid):
        time.sleep(0.05)
    return True


def stop(timeout_s: float = 30.0, state_dir: Path = DEFAULT_STATE_DIR, log=print) -> bool:
    """Stop the local broker; False if it was not running."""
    state_dir = Path(state_dir)
    with _state_lock(state_dir):
        info = broker_info(state_dir)
        if not info:
            log("Kafka is not running")
            return False
        killed = _stop_pid(info["pid"], timeout_s)
        for name in ("kafka.pid", "broker.json"):
            (state_dir / name).unlink(missing_ok=True)
        log(f"Kafka stopped (pid {info['pid']}"
            + (", killed after the deadline)" if killed else ")"))
        return True


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    formatter = argparse.ArgumentDefaultsHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=formatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    fetch_cmd = commands.add_parser("fetch", formatter_class=formatter,
                                    help="download the broker and connector jars (once)")
    fetch_cmd.add_argument("--resolver", choices=("auto", "maven", "ivy"),
                           default=os.environ.get("CHAUSSETTES_JAR_RESOLVER", "auto"),
                           help="auto = Maven if `mvn` is on the PATH, else pyspark's Ivy "
                                "(env CHAUSSETTES_JAR_RESOLVER)")
    fetch_cmd.add_argument("--jars-dir", type=Path, default=DEFAULT_JARS_DIR,
                           help="where the jar sets go")
    fetch_cmd.add_argument("--ivy-dir", type=Path, default=DEFAULT_IVY_DIR,
                           help="Ivy cache for --resolver ivy")
    fetch_cmd.add_argument("--only", choices=tuple(JAR_SETS), default=None,
                           help="fetch this jar set only (the Docker image needs no broker jars)")
    fetch_cmd.add_argument("--force", action="store_true",
                           help="download again even if the jars are complete")

    start_cmd = commands.add_parser("start", formatter_class=formatter,
                                    help="start the local broker and create the topics")
    start_cmd.add_argument("--port", type=int, default=None,
                           help=f"client port of the local broker (None: {DEFAULT_PORT}, or the "
                                "port it already runs on; an explicit port that differs from "
                                "the running broker's is an error)")
    start_cmd.add_argument("--timeout", type=float, default=90.0,
                           help="seconds to wait for the broker to answer")
    start_cmd.add_argument("--jars-dir", type=Path, default=DEFAULT_JARS_DIR,
                           help="where `fetch` put the jars")

    stop_cmd = commands.add_parser("stop", formatter_class=formatter,
                                   help="stop the local broker (SIGTERM, then SIGKILL)")
    stop_cmd.add_argument("--timeout", type=float, default=30.0,
                          help="seconds to wait for a clean shutdown before SIGKILL")

    status_cmd = commands.add_parser("status", formatter_class=formatter,
                                     help="is the local broker running: pid, port, topics "
                                          "(exit status 3 if not)")
    for command in (start_cmd, stop_cmd, status_cmd):
        command.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR,
                             help="the broker's data, config, pid and log")

    topics_cmd = commands.add_parser("topics", formatter_class=formatter,
                                     help="list (or --create) the topics of a cluster")
    topics_cmd.add_argument("--bootstrap-servers", default=DEFAULT_BOOTSTRAP,
                            help="cluster to talk to (env KAFKA_BOOTSTRAP_SERVERS)")
    topics_cmd.add_argument("--create", action="store_true",
                            help=f"first create the missing project topics ({', '.join(TOPICS)})")
    return parser


def _print_topics(topics: dict[str, int]) -> None:
    for topic, partitions in sorted(topics.items()):
        print(f"  {topic}: {partitions} partition{'s' if partitions > 1 else ''}")


def run(args: argparse.Namespace) -> int:
    if args.command == "fetch":
        fetch(args.resolver, args.jars_dir, args.ivy_dir, args.force, only=args.only)
    elif args.command == "start":
        start(args.port, args.timeout, args.state_dir, args.jars_dir)
    elif args.command == "stop":
        stop(args.timeout, args.state_dir)
    elif args.command == "status":
        info = broker_info(args.state_dir)
        if not info:
            print(f"Kafka is not running (state in {args.state_dir})")
            return 3
        print(f"Kafka {info['kafka_version']} running: pid {info['pid']}, port {info['port']}, "
              f"bootstrap servers {info['bootstrap_servers']}, log {info['log']}")
        _print_topics(describe_topics(info["bootstrap_servers"]))
    elif args.command == "topics":
        if args.create:
            created = ensure_topics(args.bootstrap_servers)
            print(f"created: {', '.join(created) or 'nothing (all exist)'}")
        topics = describe_topics(args.bootstrap_servers)
        print(f"topics of {args.bootstrap_servers}:")
        _print_topics(topics)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "port", None) is not None and not 0 < args.port < 65536:
        parser.error(f"--port must be 1..65535, got {args.port}")
    if getattr(args, "timeout", 1) <= 0:
        parser.error(f"--timeout must be > 0, got {args.timeout}")
    try:
        return run(args)
    except KafkaSetupError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # Like json.tool: the reader went away (`| head`); silence the flush at exit too.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except Exception as error:  # kafka-python's errors when talking to a cluster
        if type(error).__module__.startswith("kafka"):
            where = getattr(args, "bootstrap_servers", DEFAULT_BOOTSTRAP)
            print(f"error: Kafka at {where} did not answer ({str(error).splitlines()[0][:200]}): "
                  "start the local broker (`python finale/local_kafka.py start`) or pass "
                  "--bootstrap-servers", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
