"""A real local Apache Kafka broker and Spark's Kafka connector, installed and run by the project.

No Docker: the official Apache Kafka jars and Spark's Kafka connector are fetched once from Maven
Central into the git-ignored .cache/jars/ (with Maven when it is installed, otherwise with the Ivy
resolver that ships inside pyspark), and the broker runs as a plain `java` process (single-node
KRaft, broker and controller in one JVM) whose data, pid and log live in the git-ignored
.state/kafka/.

Run it:
    python finale/local_kafka.py fetch     # download the jars once (offline no-op afterwards)
    python finale/local_kafka.py start     # start the broker on localhost:9092, create the topics
    python finale/local_kafka.py status    # running or not, pid, port, topics
    python finale/local_kafka.py topics    # topics of any cluster (--bootstrap-servers)
    python finale/local_kafka.py stop      # clean shutdown

From Python (the finale analyzer):
    from finale.tools.local_kafka import ensure_connector
    builder.config("spark.jars", ",".join(ensure_connector()))
ensure_connector() exits with one line naming the fix when the connector is missing, instead of
Spark's "Failed to find data source: kafka" stack trace.
"""
from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from finale.common.cli import DEFAULT_BOOTSTRAP
from finale.common.paths import CACHE, STATE
from finale.common.topics import TOPICS

# Pinned in one place. Kafka 4.2.2: newest patch release of the 4.2 line; its broker class files
# target Java 17 (class version 61) and it resolves from Maven Central without conflicts.
KAFKA_VERSION = "4.2.2"
# Must equal the pinned pyspark: the connector is built against that exact Spark.
SPARK_VERSION = "4.2.0"
SCALA_BINARY = "2.13"
# Kafka's jars log through SLF4J 1.x and ship no binding: log4j2's binding writes the broker log.
LOG4J_VERSION = "2.25.4"
MAVEN_DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"

JAR_SETS = {
    "kafka-broker": (
        f"org.apache.kafka:kafka_{SCALA_BINARY}:{KAFKA_VERSION}",
        f"org.apache.logging.log4j:log4j-slf4j-impl:{LOG4J_VERSION}",
    ),
    "spark-kafka": (f"org.apache.spark:spark-sql-kafka-0-10_{SCALA_BINARY}:{SPARK_VERSION}",),
}

DEFAULT_JARS_DIR = CACHE / "jars"
DEFAULT_IVY_DIR = CACHE / "ivy"
DEFAULT_STATE_DIR = STATE / "kafka"
DEFAULT_PORT = 9092
STAMP = ".complete"
FIX_FETCH = "run `make setup` (or `python finale/local_kafka.py fetch`)"

# Kept so a broker started from this process is reaped by stop() instead of lingering as a zombie.
_children: dict[int, subprocess.Popen] = {}


class KafkaSetupError(RuntimeError):
    """A one-line, user-facing problem: its message says what to do."""


# --------------------------------------------------------------------------------------------
# Jars: fetch, completeness, connector lookup
# --------------------------------------------------------------------------------------------

_VERSION_START = re.compile(r"^\d+\.\d+")


def artifact_of(jar_name: str) -> str:
    """`spark-sql-kafka-0-10_2.13-4.2.0.jar` -> `spark-sql-kafka-0-10_2.13` (the version part
    is the first dash-separated piece that starts like `4.2`)."""
    parts = jar_name[: -len(".jar")].split("-")
    for index, part in enumerate(parts[1:], start=1):
        if _VERSION_START.match(part):
            return "-".join(parts[:index])
    return jar_name[: -len(".jar")]


def pyspark_artifacts() -> set[str]:
    """Artifacts pyspark already ships (spark-core, slf4j, lz4 ...): never added twice."""
    import pyspark

    jars = Path(pyspark.__file__).parent / "jars"
    return {artifact_of(jar.name) for jar in jars.glob("*.jar")}


def _read_stamp(set_dir: Path) -> dict | None:
    try:
        return json.loads((set_dir / STAMP).read_text())
    except (OSError, ValueError):
        return None


def complete_jars(name: str, jars_dir: Path = DEFAULT_JARS_DIR) -> list[Path] | None:
    """The jars of set `name` if a finished fetch of the pinned coordinates is on disk, else None."""
    set_dir = Path(jars_dir) / name
    stamp = _read_stamp(set_dir)
    if not stamp or stamp.get("coordinates") != list(JAR_SETS[name]):
        return None
    jars = [set_dir / jar for jar in stamp.get("jars", [])]
    if not jars or not all(jar.is_file() for jar in jars):
        return None
    return jars


def _resolve_maven(coordinates: tuple[str, ...], work: Path) -> list[Path]:
    """Runtime closure of `coordinates` with `mvn dependency:copy-dependencies` on a generated pom."""
    dependencies = "".join(
        "<dependency><groupId>{}</groupId><artifactId>{}</artifactId><version>{}</version>"
        "</dependency>".format(*coordinate.split(":"))
        for coordinate in coordinates
    )
    (work / "pom.xml").write_text(
        '<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>'
        "<groupId>io.chaussettes</groupId><artifactId>jar-fetch</artifactId><version>0</version>"
        f"<packaging>pom</packaging><dependencies>{dependencies}</dependencies></project>"
    )
    out = work / "repo"
    command = [
        shutil.which("mvn") or "mvn", "-B", "-q", "-Dstyle.color=never", "-f", str(work / "pom.xml"),
        f"{MAVEN_DEPENDENCY_PLUGIN}:copy-dependencies", "-DincludeScope=runtime",
        # The repository layout tells artifact and version apart without parsing file names.
        "-Dmdep.useRepositoryLayout=true", f"-DoutputDirectory={out}",
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        output = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout + result.stderr)
        errors = [line for line in output.splitlines() if "[ERROR]" in line]
        detail = errors[0].replace("[ERROR]", "").strip() if errors else "mvn failed"
        raise KafkaSetupError(f"Maven could not download {coordinates[0]} ({detail[:200]}); "
                              "check the network / proxy (~/.m2/settings.xml) and retry, "
                              "or use --resolver ivy")
    return sorted(out.rglob("*.jar"))


_IVY_SCRIPT = """
import sys
from pyspark import SparkConf
from pyspark.java_gateway import launch_gateway
conf = SparkConf().set("spark.jars.packages", sys.argv[1]).set("spark.jars.ivy", sys.argv[2])
gateway = launch_gateway(conf)
print("RESOLVED=" + (gateway.jvm.java.lang.System.getProperty("spark.jars") or ""))
"""


def _resolve_ivy(coordinates: tuple[str, ...], work: Path, ivy_dir: Path) -> list[Path]:
    """Runtime closure of `coordinates` with the Ivy resolver built into pyspark's spark-submit
    (no Maven needed): spark.jars.packages resolved into the cache `ivy_dir`."""
    ivy_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable)
    result = subprocess.run(
        [sys.executable, "-c", _IVY_SCRIPT, ",".join(coordinates), str(ivy_dir)],
        capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL,
    )
    resolved = [line[len("RESOLVED="):] for line in result.stdout.splitlines()
                if line.startswith("RESOLVED=")]
    if result.returncode != 0 or not resolved or not resolved[0]:
        output = (result.stdout + result.stderr).splitlines()
        # Ivy's summary (":: org#artifact;version: not found") first, then any exception.
        problems = ([line.strip() for line in output if re.match(r"\s*:: \S+#\S+;\S+: ", line)]
                    + [line.strip() for line in output if "Exception" in line])
        detail = problems[0] if problems else (output[-1].strip() if output else "no output")
        raise KafkaSetupError(f"Ivy could not download {coordinates[0]} ({detail[:200]}); "
                              "check the network / proxy and retry")
    (work / "repo").mkdir(parents=True, exist_ok=True)
    jars = []
    for uri in resolved[0].split(","):
        path = Path(uri[len("file:"):] if uri.startswith("file:") else uri)
        # Spark names retrieved jars `<groupId>_<artifactId>-<version>.jar` and group ids may
        # hold '_' (org.bitbucket.b_c): the group is the prefix that is a folder of the cache.
        cut = next((index for index, char in enumerate(path.name)
                    if char == "_" and (ivy_dir / "cache" / path.name[:index]).is_dir()), -1)
        target = work / "repo" / path.name[cut + 1:]
        shutil.copy2(path, target)
        jars.append(target)
    if "scala-library" not in {artifact_of(jar.name) for jar in jars}:
        # spark-submit's Ivy always excludes scala-library (Spark ships its own): take pyspark's
        # copy (same Scala 2.13 binary version) so the broker gets one.
        import pyspark

        for jar in (Path(pyspark.__file__).parent / "jars").glob("scala-library-*.jar"):
            shutil.copy2(jar, work / "repo" / jar.name)
            jars.append(work / "repo" / jar.name)
    return sorted(jars)


def requested_resolver(resolver: str = "auto") -> str:
    """The resolver asked for: the argument, or env CHAUSSETTES_JAR_RESOLVER when it is `auto`."""
    return os.environ.get("CHAUSSETTES_JAR_RESOLVER", resolver) if resolver == "auto" else resolver


def pick_resolver(resolver: str = "auto") -> str:
    """`auto` means Maven when `mvn` is on the PATH, else pyspark's Ivy."""
    resolver = requested_resolver(resolver)
    if resolver == "auto":
        return "maven" if shutil.which("mvn") else "ivy"
    if resolver == "maven" and not shutil.which("mvn"):
        raise KafkaSetupError("`mvn` is not on the PATH: install Maven or use --resolver ivy")
    return resolver


def fetch(resolver: str = "auto", jars_dir: Path = DEFAULT_JARS_DIR,
          ivy_dir: Path = DEFAULT_IVY_DIR, force: bool = False, log=print,
          only: str | None = None) -> dict[str, list[Path]]:
    """Download every jar set (or just set `only`) that is not complete yet; {set name: jars}."""
    jars_dir, ivy_dir = Path(jars_dir), Path(ivy_dir)
    result = {}
    for name, coordinates in JAR_SETS.items():
        if only is not None and name != only:
            continue
        jars = None if force else complete_jars(name, jars_dir)
        if jars:
            log(f"{name}: {len(jars)} jars already in {jars_dir / name}")
            result[name] = jars
            continue
        requested, used = requested_resolver(resolver), pick_resolver(resolver)
        log(f"{name}: downloading {', '.join(coordinates)} with {used} ...")
        jars_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=f".{name}-", dir=jars_dir) as tmp:
            work = Path(tmp)
            if used == "maven":
                try:
                    found = _resolve_maven(coordinates, work)
                except KafkaSetupError as error:
                    if requested != "auto":
                        raise
                    # auto: a broken Maven setup should not block a user who has pyspark.
                    log(f"{name}: {error}; trying pyspark's Ivy instead ...")
                    used = "ivy"
            if used == "ivy":
                found = _resolve_ivy(coordinates, work, ivy_dir)
            skip = pyspark_artifacts() if name == "spark-kafka" else set()
            staged = work / "jars"
            staged.mkdir()
            for jar in found:
                if artifact_of(jar.name) not in skip:
                    shutil.copy2(jar, staged / jar.name)
            names = sorted(jar.name for jar in staged.iterdir())
            # The stamp is written last: an interrupted fetch is never taken for a complete one.
            (staged / STAMP).write_text(json.dumps(
                {"coordinates": list(coordinates), "resolver": used, "jars": names}, indent=1))
            set_dir = jars_dir / name
            shutil.rmtree(set_dir, ignore_errors=True)
            staged.rename(set_dir)
        result[name] = [set_dir / jar for jar in names]
        log(f"{name}: {len(names)} jars in {set_dir}")
    return result


def connector_jars(jars_dir: Path = DEFAULT_JARS_DIR) -> list[str]:
    """Absolute paths of Spark's Kafka connector jars; KafkaSetupError (one line) if absent,
    incomplete or for another Spark version than the installed pyspark."""
    import pyspark

    if pyspark.__version__ != SPARK_VERSION:
        raise KafkaSetupError(f"pyspark {pyspark.__version__} is installed but the Kafka connector "
                              f"is pinned for Spark {SPARK_VERSION}: run `make setup`")
    jars = complete_jars("spark-kafka", jars_dir)
    if not jars:
        raise KafkaSetupError(f"Spark's Kafka connector {JAR_SETS['spark-kafka'][0]} is not in "
                              f"{Path(jars_dir) / 'spark-kafka'}: {FIX_FETCH}")
    return [str(jar) for jar in jars]


def ensure_connector(jars_dir: Path = DEFAULT_JARS_DIR) -> list[str]:
    """connector_jars() for scripts: exit 1 with one line on stderr instead of a stack trace."""
    try:
        return connector_jars(jars_dir)
    except KafkaSetupError as error:
        raise SystemExit(f"error: {error}") from None


# --------------------------------------------------------------------------------------------
# Broker: start, stop, status
# --------------------------------------------------------------------------------------------

def java_executable() -> str:
    """`java` 17+ (JAVA_HOME first, then the PATH), else KafkaSetupError naming the fix."""
    java_home = os.environ.get("JAVA_HOME")
    java = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")
    if not java or not Path(java).exists():
        raise KafkaSetupError("Java 17+ is needed and `java` was not found (install a JDK 17+, "
                              "e.g. apt-get install openjdk-17-jdk-headless, or set JAVA_HOME)")
    version = subprocess.run([java, "-version"], capture_output=True, text=True).stderr
    match = re.search(r'version "(\d+)(?:\.(\d+))?', version)
    major = int(match.group(1)) if match else 0
    if major == 1 and match.group(2):  # "1.8.0_392" is Java 8
        major = int(match.group(2))
    if major < 17:
        raise KafkaSetupError(f"Kafka {KAFKA_VERSION} needs Java 17+, {java} is Java {major or '?'} "
                              "(set JAVA_HOME / PATH to a JDK 17+)")
    return java


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
    properties = f"""# Generated by finale/local_kafka.py at each start: edit the script, not this file.
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


def _admin(bootstrap_servers: str, timeout_s: float = 10.0):
    from kafka import KafkaAdminClient

    return KafkaAdminClient(bootstrap_servers=bootstrap_servers, client_id="local-kafka",
                            request_timeout_ms=int(timeout_s * 1000))


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
            admin = _admin(bootstrap_servers, timeout_s=2)
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


def ensure_topics(bootstrap_servers: str, topics: dict = TOPICS) -> list[str]:
    """Create the project's topics that do not exist yet (idempotent); names created."""
    from kafka.errors import TopicAlreadyExistsError

    admin = _admin(bootstrap_servers)
    try:
        existing = set(admin.list_topics())
        missing = {name: {"num_partitions": topic.partitions, "replication_factor": 1,
                          "configs": topic.configs}
                   for name, topic in topics.items() if name not in existing}
        if missing:
            try:
                admin.create_topics(missing, wait_for_metadata=True)
            except TopicAlreadyExistsError:  # created meanwhile by someone else: fine
                pass
        return sorted(missing)
    finally:
        admin.close()


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
            created = ensure_topics(info["bootstrap_servers"])
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
        log(f"Kafka stopped (pid {info['pid']}" + (", killed after the deadline)" if killed else ")"))
        return True


def describe_topics(bootstrap_servers: str) -> dict[str, int]:
    """{topic: partition count} of the cluster, internal topics left out."""
    admin = _admin(bootstrap_servers)
    try:
        return {topic["name"]: len(topic["partitions"])
                for topic in admin.describe_topics(admin.list_topics())
                if not topic["name"].startswith("__")}
    finally:
        admin.close()


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    formatter = argparse.ArgumentDefaultsHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=formatter)
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
