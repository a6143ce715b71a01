"""Follow a web server's access log into Kafka's http-logs with rsyslog (`make ship`).

    make ship ACCESS_LOG=/var/log/apache2/access.log
    python finale/ship.py --access-log /var/log/nginx/access.log --bootstrap-servers host:9092

The shipper is rsyslog (imfile reads the file, omkafka produces), run in the foreground as the
user's own process with the project's config, conf/rsyslog/http-logs.conf: the same file the
compose `site` profile runs. Each line becomes one record, unchanged, keyed by its client address.
The file is followed across rotations (renamed, or truncated in place by copytruncate); its
position and a disk queue live in .state/ship/<file>/, so a restart resumes where it stopped and a
broker outage loses nothing. Ctrl-C stops it (the queue is saved, the position written).

This module only checks the inputs and the packages, chooses the state folder and starts
`rsyslogd -n -f conf/rsyslog/http-logs.conf -i PIDFILE`. The system's rsyslog, if any, is left
alone: no system socket, no system config, a pid file of its own.
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

from finale.common.cli import BOOTSTRAP_HELP, HelpFormatter, OneLineErrorParser
from finale.common.paths import ROOT, STATE
from finale.common.topics import LOGS

PROG = "ship.py"
CONFIG = ROOT / "conf" / "rsyslog" / "http-logs.conf"
STATE_ROOT = STATE / "ship"
INSTALL = "sudo apt-get install rsyslog rsyslog-kafka"
# Where Debian's rsyslog-kafka puts omkafka (multiarch folder), and other layouts.
OMKAFKA_GLOBS = ("/usr/lib/*/rsyslog/omkafka.so", "/usr/lib/rsyslog/omkafka.so",
                 "/usr/lib64/rsyslog/omkafka.so")
# rsyslogd flushes the queue at stop within omkafka's closeTimeout (the config's 10 s).
STOP_TIMEOUT_S = 30


class ShipError(Exception):
    """A problem the user fixes (a missing package, a missing file): one line."""


def rsyslogd_path() -> str:
    """The rsyslogd binary: on the PATH, or in /usr/sbin (not on a normal user's PATH on Debian)."""
    found = shutil.which("rsyslogd") or shutil.which("rsyslogd", path="/usr/sbin:/sbin")
    if found is None:
        raise ShipError(f"rsyslogd not found: the shipper is Debian's rsyslog with its Kafka "
                        f"output, install them with `{INSTALL}`")
    return found


def check_omkafka() -> None:
    if not any(glob.glob(pattern) for pattern in OMKAFKA_GLOBS):
        raise ShipError(f"rsyslog's Kafka output (omkafka.so) not found: install the package "
                        f"rsyslog-kafka (`{INSTALL}`)")


def default_bootstrap() -> str:
    """KAFKA_BOOTSTRAP_SERVERS, else the project's local broker if it runs (make demo), else
    localhost:9092."""
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        return os.environ["KAFKA_BOOTSTRAP_SERVERS"]
    from finale.tools.local_kafka import broker_info
    info = broker_info()
    return info["bootstrap_servers"] if info else "localhost:9092"


def state_dir_for(access_log: Path) -> Path:
    """.state/ship/<file name>-<hash of its absolute path>: one folder per followed file, a name
    a reader recognises, and nothing of the path but safe characters."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", access_log.name)[:60] or "log"
    digest = hashlib.sha256(str(access_log).encode()).hexdigest()[:12]
    return STATE_ROOT / f"{name}-{digest}"


def broker_answers(bootstrap_servers: str, timeout_s: float = 2.0) -> bool:
    """True if one of the bootstrap servers accepts a TCP connection."""
    for server in bootstrap_servers.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            with socket.create_connection((host.strip("[]") or "localhost", int(port)), timeout_s):
                return True
        except (OSError, ValueError):
            continue
    return False


def rsyslog_environment(access_log: Path, state_dir: Path, bootstrap_servers: str,
                        topic: str) -> dict[str, str]:
    """The variables conf/rsyslog/http-logs.conf reads."""
    return {**os.environ, "SHIP_ACCESS_LOG": str(access_log), "SHIP_STATE_DIR": str(state_dir),
            "SHIP_BROKERS": bootstrap_servers, "SHIP_TOPIC": topic}


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog=PROG, formatter_class=HelpFormatter,
        description="Follow a web server's access log (combined, common or vhost_combined) into "
                    "Kafka with rsyslog, in the foreground; Ctrl-C stops it.")
    parser.add_argument("--access-log", type=Path, required=True, metavar="FILE",
                        help="the access log to follow, e.g. /var/log/apache2/access.log")
    parser.add_argument("--bootstrap-servers", default=None,
                        help=BOOTSTRAP_HELP + "; unset: the local broker of make demo if it "
                             "runs, else localhost:9092")
    parser.add_argument("--topic", default=LOGS.name, help="Kafka topic of the lines")
    parser.add_argument("--state-dir", type=Path, default=None,
                        help="file position and disk queue (default: .state/ship/<file>-<hash>)")
    return parser


def check_access_log(parser: argparse.ArgumentParser, access_log: Path) -> Path:
    access_log = access_log.expanduser().absolute()
    if not access_log.is_file():
        parser.error(f"--access-log {access_log}: no such file")
    if not os.access(access_log, os.R_OK):
        parser.error(f"--access-log {access_log}: not readable by this user (on Debian, "
                     f"/var/log/apache2 is readable by the group adm: `sudo adduser $USER adm`)")
    return access_log


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    access_log = check_access_log(parser, args.access_log)
    if not args.topic or any(c.isspace() for c in args.topic):
        parser.error(f"--topic {args.topic!r}: not a topic name")
    try:
        rsyslogd = rsyslogd_path()
        check_omkafka()
    except ShipError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 1
    bootstrap = args.bootstrap_servers or default_bootstrap()
    state_dir = (args.state_dir or state_dir_for(access_log)).absolute()
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        state_dir.chmod(0o700)  # the queue holds log lines: only this user reads them
    except OSError as error:
        print(f"{PROG}: error: cannot use {state_dir} for the shipper's state: "
              f"{error.strerror or error}", file=sys.stderr)
        return 1
    command = [rsyslogd, "-n", "-f", str(CONFIG), "-i", str(state_dir / "rsyslogd.pid")]
    environment = rsyslog_environment(access_log, state_dir, bootstrap, args.topic)

    # The config checked first (rsyslogd -N1): an error there is shown as rsyslog words it.
    check = subprocess.run([rsyslogd, "-N1", "-f", str(CONFIG)], env=environment,
                           capture_output=True, text=True)
    if check.returncode != 0:
        problem = [line for line in (check.stderr + check.stdout).splitlines() if line.strip()]
        print(f"{PROG}: error: rsyslog refuses conf/rsyslog/http-logs.conf: "
              f"{problem[0] if problem else 'exit status ' + str(check.returncode)}",
              file=sys.stderr)
        return 1
    if not broker_answers(bootstrap):
        print(f"{PROG}: warning: no Kafka broker answers at {bootstrap} yet: the lines wait in "
              f"the disk queue until one does", file=sys.stderr)
    print(f"{PROG}: following {access_log} -> {bootstrap} topic {args.topic} "
          f"(rsyslog, state in {state_dir}); Ctrl-C stops", flush=True)
    # rsyslogd in a session of its own: Ctrl-C reaches this script only, which stops rsyslogd
    # with SIGTERM, its clean stop (queue saved, position written).
    process = subprocess.Popen(command, env=environment, start_new_session=True)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        return process.wait()
    except KeyboardInterrupt:
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        print(f"{PROG}: stopped (position and queue saved in {state_dir})", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
