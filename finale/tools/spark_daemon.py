"""A Spark standalone master or worker with the project's Spark security
(finale/common/spark_security.py).

Run (the same secret file as the analyzer's --secret-file):

    python -m finale.tools.spark_daemon master --host 127.0.0.1 --port 7077
    python -m finale.tools.spark_daemon worker --host 127.0.0.1 --port 7078 \
        --master spark://127.0.0.1:7077
    python finale/spark_streaming_analyzer.py --secure --master spark://127.0.0.1:7077

It runs pyspark's own `bin/spark-class` (no Spark install needed) with `--properties-file`: the
settings of conf/spark-defaults.conf and the secret, in a 0600 file that is removed as soon as the
daemon listens on its port (it has read the file by then). The daemon's output goes to this
process's stdout/stderr; SIGTERM or Ctrl-C stops it. The master's REST submission server is turned
off (it does not authenticate), the web UI (--webui-port) shows the workers and applications.
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from finale.common import spark_security
from finale.common.cli import OneLineErrorParser

ROLES = {"master": "org.apache.spark.deploy.master.Master",
         "worker": "org.apache.spark.deploy.worker.Worker"}
# The REST submission server (port 6066) would accept applications without the secret.
DAEMON_PROPERTIES = {"spark.master.rest.enabled": "false"}


class DaemonError(RuntimeError):
    """One line: why the daemon did not start."""


def spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).resolve().parent


def daemon_argv(args: argparse.Namespace, properties_file: Path) -> list[str]:
    argv = [str(spark_home() / "bin" / "spark-class"), ROLES[args.role],
            "--host", args.host, "--port", str(args.port), "--webui-port", str(args.webui_port),
            "--properties-file", str(properties_file)]
    if args.role == "worker":
        argv += ["--cores", str(args.cores), "--memory", args.memory]
        if args.work_dir is not None:
            argv += ["--work-dir", str(args.work_dir)]
        argv.append(args.master)
    return argv


def listening(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
        return True
    except OSError:
        return False


def start(args: argparse.Namespace, timeout_s: float = 120.0, **popen) -> subprocess.Popen:
    """The daemon, started, listening on its port; its properties file already removed."""
    properties = {**spark_security.security_properties(args.secret_file), **DAEMON_PROPERTIES}
    env = {**os.environ, "SPARK_HOME": str(spark_home())}
    with spark_security.security_properties_file(properties) as path:
        process = subprocess.Popen(daemon_argv(args, path), env=env, **popen)
        deadline = time.monotonic() + timeout_s
        while not listening(args.host, args.port):
            if process.poll() is not None:
                raise DaemonError(f"the Spark {args.role} exited with status {process.returncode}")
            if time.monotonic() > deadline:
                process.kill()
                raise DaemonError(f"the Spark {args.role} did not listen on "
                                  f"{args.host}:{args.port} within {timeout_s:.0f} s")
            time.sleep(0.2)
    return process


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="spark_daemon.py", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Start a Spark standalone master or worker with authentication and encryption.")
    parser.add_argument("role", choices=tuple(ROLES), help="which daemon")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind and advertise")
    parser.add_argument("--port", type=int, default=7077, help="RPC port")
    parser.add_argument("--webui-port", type=int, default=8080, help="web UI port")
    parser.add_argument("--master", default="spark://127.0.0.1:7077",
                        help="worker: the master's URL")
    parser.add_argument("--cores", type=int, default=1, help="worker: cores it offers")
    parser.add_argument("--memory", default="1g", help="worker: memory it offers (e.g. 1g, 512m)")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="worker: folder of the executors' files (None: Spark's work/)")
    parser.add_argument("--secret-file", type=Path, default=spark_security.DEFAULT_SECRET_FILE,
                        help="file holding the shared Spark secret (`make secret`)")
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    for flag in ("port", "webui_port"):
        if not 1 <= getattr(args, flag) <= 65535:
            parser.error(f"--{flag.replace('_', '-')} must be in 1..65535, "
                         f"got {getattr(args, flag)}")
    if args.cores < 1:
        parser.error(f"--cores must be >= 1, got {args.cores}")
    if args.role == "worker" and not args.master.startswith("spark://"):
        parser.error(f"--master must be a spark://host:port URL, got {args.master!r}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        process = start(args)
    except (DaemonError, spark_security.SecurityError) as error:
        print(f"spark_daemon.py: error: {error}", file=sys.stderr)
        return 1
    # `docker stop` (SIGTERM) and Ctrl-C stop the daemon; its exit status is ours.
    signal.signal(signal.SIGTERM, lambda *_: process.terminate())
    try:
        return process.wait()
    except KeyboardInterrupt:
        process.terminate()
        process.wait()
        return 130


if __name__ == "__main__":
    sys.exit(main())
