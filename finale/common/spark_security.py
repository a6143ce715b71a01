"""Spark security for the analyzer and the threshold job: authentication, RPC and disk encryption.

`--secure` applies the settings of the top-level conf/spark-defaults.conf (spark.authenticate,
spark.network.crypto.enabled, spark.io.encryption.enabled) with the shared secret read from
`--secret-file` (default .secrets/spark-authenticate.secret, git-ignored, created once with
`make secret`; in docker compose the compose secret /run/secrets/spark_secret).

Why a properties file: pyspark hands every SparkSession.builder.config() value to spark-submit as
`--conf key=value`, on a command line that `ps` shows to every user of the machine. The settings and
the secret are written instead to a properties file (mode 0600, in /dev/shm when it is writable so
it never reaches a disk), given to spark-submit by path through PYSPARK_SUBMIT_ARGS, and removed as
soon as the JVM has started and read it. A Spark standalone master and worker take the same file
with `--properties-file` (security_properties_file). Executors of a standalone cluster get the
secret from their worker in the environment variable Spark itself uses (_SPARK_AUTH_SECRET), never
in argv.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

from finale.common.paths import ROOT

SECURITY_CONF = ROOT / "conf" / "spark-defaults.conf"
DEFAULT_SECRET_FILE = ROOT / ".secrets" / "spark-authenticate.secret"
SECRET_KEY = "spark.authenticate.secret"
SECURITY_KEYS = ("spark.authenticate", "spark.network.crypto.enabled",
                 "spark.io.encryption.enabled")
# A secret shorter than this is a placeholder or a typo, not a key (`make secret` writes 64 hex
# digits).
MIN_SECRET_LENGTH = 16


class SecurityError(ValueError):
    """A one-line problem with the security configuration, naming the fix."""


def read_spark_conf(path: Path) -> dict[str, str]:
    """Key/value pairs of a spark-defaults.conf file (blank lines and # comments skipped)."""
    settings = {}
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, *value = line.split(None, 1)
            settings[key] = value[0].strip() if value else ""
    return settings


def read_secret(path: Path) -> str:
    """The shared secret: the first line of `path`, which must exist and hold a real key."""
    try:
        secret = Path(path).read_text().strip()
    except FileNotFoundError:
        raise SecurityError(f"no Spark secret at {path}: create it once with `make secret` "
                            "(or pass --secret-file)") from None
    except OSError as error:
        raise SecurityError(f"cannot read the Spark secret {path}: {error.strerror}") from None
    if len(secret) < MIN_SECRET_LENGTH or any(c.isspace() for c in secret):
        raise SecurityError(f"the Spark secret in {path} must be one word of at least "
                            f"{MIN_SECRET_LENGTH} characters (`make secret` writes one)")
    return secret


def security_properties(secret_file: Path, conf_file: Path = SECURITY_CONF) -> dict[str, str]:
    """conf_file's settings plus the secret, as Spark properties."""
    settings = read_spark_conf(conf_file)
    missing = [key for key in SECURITY_KEYS if settings.get(key) != "true"]
    if missing:
        raise SecurityError(f"{conf_file} does not set {', '.join(missing)} to true")
    if SECRET_KEY in settings:
        raise SecurityError(f"{conf_file} must not hold {SECRET_KEY}: it goes in the secret file")
    return {**settings, SECRET_KEY: read_secret(secret_file)}


@contextlib.contextmanager
def security_properties_file(properties: dict[str, str]) -> Iterator[Path]:
    """A private (0600) properties file holding `properties`, removed when the block ends."""
    shm = Path("/dev/shm")
    folder = str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None
    handle, name = tempfile.mkstemp(prefix="spark-security-", suffix=".properties", dir=folder)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            for key, value in properties.items():
                # Properties-file escaping: a backslash would start an escape sequence.
                out.write(f"{key}={value.replace(chr(92), chr(92) * 2)}\n")
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)


@contextlib.contextmanager
def spark_submit_properties(properties: dict[str, str] | None) -> Iterator[None]:
    """Inside the block, a new SparkContext's JVM starts with `properties` read from a file.

    Only the JVM that pyspark launches inside the block reads it: a session already running in this
    process is not changed (getOrCreate returns it). None: nothing to add.
    """
    if not properties:
        yield
        return
    previous = os.environ.get("PYSPARK_SUBMIT_ARGS")
    with security_properties_file(properties) as path:
        os.environ["PYSPARK_SUBMIT_ARGS"] = (f"--properties-file {shlex.quote(str(path))} "
                                             f"{previous or 'pyspark-shell'}")
        try:
            yield
        finally:
            if previous is None:
                os.environ.pop("PYSPARK_SUBMIT_ARGS", None)
            else:
                os.environ["PYSPARK_SUBMIT_ARGS"] = previous


def check_standalone_master(jvm, master: str, timeout_s: float = 10.0) -> None:
    """Prove, before the SparkContext registers, that a spark:// master answers and accepts this
    driver's credentials; SecurityError with one line otherwise.

    Without it a refused driver retries its registration for a minute (3 x 20 s), then fails with
    "Cannot call methods on a stopped SparkContext", which names neither the master nor the secret.
    The check opens an RPC connection with the driver's own SecurityManager (the same settings and
    secret the SparkContext will use) and looks the Master endpoint up.
    """
    addresses = [address.strip() for address in master.removeprefix("spark://").split(",")]
    # A refused connection makes Spark's network layer log Java stack traces on stderr, also
    # after our one line: silenced for the check, and after it if it fails (we exit then).
    log4j = jvm.org.apache.logging.log4j
    level = log4j.LogManager.getRootLogger().getLevel()
    log4j.core.config.Configurator.setRootLevel(log4j.Level.OFF)
    problems = []
    for address in addresses:
        host, _, port = address.rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout=timeout_s).close()
        except (OSError, ValueError):
            problems.append(f"no Spark master answers at {address}")
            continue
        conf = jvm.org.apache.spark.SparkConf()
        config = getattr(getattr(jvm.org.apache.spark.internal.config, "package$"), "MODULE$")
        manager = jvm.org.apache.spark.SecurityManager(conf, jvm.scala.Option.empty(),
                                                       config.AUTH_SECRET_FILE())
        rpc = jvm.org.apache.spark.rpc.RpcEnv.create("chaussettes-master-check", host, 0, conf,
                                                     manager, True)
        try:
            rpc.setupEndpointRef(jvm.org.apache.spark.rpc.RpcAddress(host, int(port)), "Master")
            log4j.core.config.Configurator.setRootLevel(level)
            return
        except Exception:  # py4j's error holds the Java stack trace: the line below says it all
            problems.append(f"the Spark master at {address} refused the connection: authentication "
                            "failed (start the driver with --secure and the secret file the master "
                            "was started with)" if conf.get("spark.authenticate", "false") == "true"
                            else f"the Spark master at {address} refused the connection (it may "
                            "require authentication: use --secure)")
        finally:
            rpc.shutdown()
    raise SecurityError("; ".join(problems))


def get_or_create(builder, security: dict[str, str] | None):
    """builder.getOrCreate() with `security` handed to the JVM in a file (spark_submit_properties);
    for a spark:// master, the master's answer is checked first (check_standalone_master)."""
    from pyspark import SparkConf, SparkContext

    # The builder's own options (master, app name, .config() values) as it would pass them.
    options = {key: str(value) for key, value in builder._options.items()}
    with spark_submit_properties(security):
        if options.get("spark.master", "").startswith("spark://"):
            # The JVM is launched here (with the builder's options, as getOrCreate would launch it)
            # so that the check runs before the SparkContext tries to register.
            SparkContext._ensure_initialized(conf=SparkConf(loadDefaults=False).setAll(options.items()))
            check_standalone_master(SparkContext._jvm, options["spark.master"])
        return builder.getOrCreate()


def add_security_options(parser: argparse.ArgumentParser) -> None:
    """--secure and --secret-file, shared by the analyzer and the threshold job."""
    parser.add_argument("--secure", action="store_true",
                        help=f"run Spark with {', '.join(SECURITY_KEYS)} (settings of "
                             f"{SECURITY_CONF.relative_to(ROOT)}, secret from --secret-file)")
    parser.add_argument("--secret-file", type=Path, default=DEFAULT_SECRET_FILE,
                        help="with --secure: file holding the shared Spark secret (created once "
                             "by `make secret`; never in git, an image or a command line)")


def properties_from_args(args: argparse.Namespace) -> dict[str, str] | None:
    """The security properties that --secure asks for (None without it); SecurityError if
    unusable."""
    return security_properties(args.secret_file) if args.secure else None


def security_banner(conf) -> str:
    """What the running Spark really has (read back from its SparkConf), never the secret."""
    return "spark security: " + " ".join(f"{key}={conf.get(key, 'false')}" for key in SECURITY_KEYS)
