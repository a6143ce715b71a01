"""The jars behind the local Kafka platform: the Apache Kafka broker's and Spark's Kafka connector.

Both sets are pinned here (KAFKA_VERSION, SPARK_VERSION: the installed pyspark's) and fetched
once from Maven Central into the git-ignored .cache/jars/, one folder per set, with Maven when it
is installed, otherwise with the Ivy resolver that ships inside pyspark. A set counts as present
only when its stamp (written last) names the pinned coordinates and every jar is on disk.

    python finale/local_kafka.py fetch    # the command line (finale/tools/local_kafka.py)

From Python (the finale analyzer):
    from finale.tools.kafka_jars import ensure_connector
    builder.config("spark.jars", ",".join(ensure_connector()))
ensure_connector() exits with one line naming the fix when the connector is missing, instead of
Spark's "Failed to find data source: kafka" stack trace. java_executable() finds the Java 17+
that the broker runs on.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from finale.common.paths import CACHE

# Pinned in one place. Kafka 4.2.2, a patch release of the 4.2 line: its broker class files
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
STAMP = ".complete"
FIX_FETCH = "run `make setup` (or `python finale/local_kafka.py fetch`)"


class KafkaSetupError(RuntimeError):
    """A one-line, user-facing problem: its message says what to do."""


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
    """The jars of set `name` if a finished fetch of the pinned coordinates is on disk, else
    None."""
    set_dir = Path(jars_dir) / name
    stamp = _read_stamp(set_dir)
    if not stamp or stamp.get("coordinates") != list(JAR_SETS[name]):
        return None
    jars = [set_dir / jar for jar in stamp.get("jars", [])]
    if not jars or not all(jar.is_file() for jar in jars):
        return None
    return jars


def _resolve_maven(coordinates: tuple[str, ...], work: Path) -> list[Path]:
    """Runtime closure of `coordinates` with `mvn dependency:copy-dependencies` on a generated
    pom."""
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
        shutil.which("mvn") or "mvn", "-B", "-q", "-Dstyle.color=never",
        "-f", str(work / "pom.xml"),
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
        raise KafkaSetupError(f"Kafka {KAFKA_VERSION} needs Java 17+, "
                              f"{java} is Java {major or '?'} "
                              "(set JAVA_HOME / PATH to a JDK 17+)")
    return java
