"""The log generator contract (see complet/log_generator.py), held for every stage that implements
it, plus the stage-1 teaching generator (minimal/log_generator.py) at the end.

Generators run in-process through `main([...])` writing to a file, or as a subprocess when the test
is about the process itself (exit status, stderr, pacing, sockets, signals).
"""
import functools
import math
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone

import pytest
from conftest import ROOT, free_port, load_module, wait_for

# Stages whose log_generator.py implements the full contract; adding a stage here is all it takes.
GENERATOR_STAGES = ["complet", "finale"]

PYTHON = sys.executable
START = "2026-11-28T09:00:00Z"
UNPACED = "1e9"  # lines/s: far above what Python writes, so the run goes as fast as it can

# Apache combined: %h %l %u [%t] "%r" %>s %b "%{Referer}i" "%{User-agent}i", strictly.
OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
APACHE_COMBINED = re.compile(
    rf"(?P<ip>{OCTET}(?:\.{OCTET}){{3}}) (?P<ident>\S+) (?P<user>\S+) "
    r"\[(?P<time>\d\d/(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)/\d{4}"
    r":\d\d:\d\d:\d\d \+0000)\] "
    r'"(?P<method>GET|POST|PUT|DELETE|HEAD|PATCH|OPTIONS) (?P<url>/[^\s"]*) HTTP/1\.[01]" '
    r"(?P<status>[1-5]\d\d) (?P<bytes>\d+|-) "
    r'"(?P<referer>(?:[^"\\]|\\.)*)" "(?P<agent>(?:[^"\\]|\\.)+)"'
)


def parse(line: str) -> dict:
    match = APACHE_COMBINED.fullmatch(line)
    assert match, f"not an Apache combined line: {line!r}"
    fields = match.groupdict()
    fields["status"] = int(fields["status"])
    fields["time"] = parse_log_time(fields["time"])
    return fields


@functools.lru_cache(maxsize=4096)
def parse_log_time(text: str) -> datetime:
    return datetime.strptime(text, "%d/%b/%Y:%H:%M:%S %z")


@pytest.fixture(scope="module", params=GENERATOR_STAGES)
def stage(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def gen(stage):
    return load_module(stage, "log_generator")


@pytest.fixture(scope="module")
def run(gen, tmp_path_factory):
    """run(*flags) -> list of lines written by main([*flags, --output FILE])."""
    def run_generator(*flags: str) -> list[str]:
        out = tmp_path_factory.mktemp("gen") / "access.log"
        assert gen.main([*flags, "--output", str(out)]) == 0
        text = out.read_text()
        assert text.endswith("\n") or text == ""
        return text.splitlines()
    return run_generator


def script(stage: str) -> str:
    return str(ROOT / stage / "log_generator.py")


# --- error model -------------------------------------------------------------------------------

USERS, PU, PL, PE, SEED, COUNT = 40, 25, 30, 20, 11, 30_000
MODEL_FLAGS = ["--users", str(USERS), "--error-users", str(PU), "--error-urls", str(PL),
               "--seed", str(SEED)]


@pytest.fixture(scope="module")
def error_run(run):
    lines = run(*MODEL_FLAGS, "--error-rate", str(PE), "--rate", UNPACED, "--count", str(COUNT),
                "--start-time", START)
    return [parse(line) for line in lines]


@pytest.fixture(scope="module")
def model(gen):
    return gen.build_traffic_model(USERS, PU, PL, SEED)


def test_model_samples_exactly_the_requested_shares(gen, model):
    assert len(model.ips) == len(set(model.ips)) == USERS
    assert len(model.error_ips) == 10  # round(25/100 * 40)
    assert model.error_ips <= set(model.ips)
    assert len(model.urls) == len(set(model.urls)) >= 25  # ~30 URLs of a sock shop
    assert len(model.error_urls) == round(PL / 100 * len(model.urls))
    assert model.error_urls <= set(model.urls)
    assert gen.build_traffic_model(USERS, PU, PL, SEED) == model  # a pure function of its arguments
    assert gen.build_traffic_model(USERS, PU, PL, SEED + 1).error_ips != model.error_ips
    assert gen.build_traffic_model(7, 0, 0, SEED).error_ips == frozenset()
    assert gen.build_traffic_model(7, 100, 100, SEED).error_urls == frozenset(model.urls)
    assert len(gen.build_traffic_model(10, 25, 0, SEED).error_ips) == 2  # round(2.5): to even


def test_every_line_is_apache_combined_and_comes_from_the_model(error_run, model):
    assert len(error_run) == COUNT
    assert {line["ip"] for line in error_run} == set(model.ips)
    assert {line["url"] for line in error_run} == set(model.urls)
    agents = {}
    for line in error_run:
        assert agents.setdefault(line["ip"], line["agent"]) == line["agent"], \
            "a user keeps one agent"
        assert line["status"] in range(200, 400) or line["status"] in range(400, 600)


def test_errors_come_exactly_from_error_users_on_error_urls(error_run, model):
    errors = [line for line in error_run if line["status"] >= 400]
    assert {line["ip"] for line in errors} == model.error_ips
    assert {line["url"] for line in errors} == model.error_urls
    off_pairs = [line for line in error_run
                 if not (line["ip"] in model.error_ips and line["url"] in model.error_urls)]
    assert off_pairs and all(200 <= line["status"] < 400 for line in off_pairs)
    assert {line["status"] for line in errors} >= {404, 500, 503}  # a realistic mix, not one code


def test_error_rate_on_error_pairs_is_binomial(error_run, model):
    on_pairs = [line for line in error_run
                if line["ip"] in model.error_ips and line["url"] in model.error_urls]
    n = len(on_pairs)
    failures = sum(line["status"] >= 400 for line in on_pairs)
    p = PE / 100
    # Each request on an error pair fails independently with probability p, so failures ~ B(n, p).
    # 5 standard deviations: a correct generator fails this with probability < 1e-6 for any seed,
    # while a wrong rule (1 - p = 80 %, p^2 = 4 %, or p applied to all of an error user's requests,
    # which also breaks the test above) lands far outside (n is ~2000, so 5 sd is ~4.5 points).
    assert n > 1000
    assert abs(failures - n * p) <= 5 * math.sqrt(n * p * (1 - p)), (failures, n)


@pytest.mark.parametrize("error_rate", ["0", "100"])
def test_error_rate_extremes(run, model, error_rate):
    lines = [parse(line) for line in run(*MODEL_FLAGS, "--error-rate", error_rate,
                                         "--rate", UNPACED, "--count", "5000")]
    for line in lines:
        on_pair = line["ip"] in model.error_ips and line["url"] in model.error_urls
        assert (line["status"] >= 400) == (on_pair and error_rate == "100"), line


# --- options -----------------------------------------------------------------------------------

@pytest.mark.parametrize("flags", [
    ["--error-users", "101"], ["--error-rate", "-1"], ["--error-urls", "100.5"],
    ["--rate", "0"], ["--rate", "-5"], ["--rate", "nan"], ["--users", "0"], ["--users", "2.5"],
    ["--start-time", "28/11/2026 09:00"], ["--count", "-1"], ["--duration", "0"],
])
def test_bad_option_is_one_line_and_exit_2(stage, flags):
    result = subprocess.run([PYTHON, script(stage), *flags, "--output", "-"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and "error:" in result.stderr, result.stderr
    assert flags[0] in result.stderr


def test_help_documents_defaults_and_error_model(stage):
    result = subprocess.run([PYTHON, script(stage), "--help"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0
    help_text = " ".join(result.stdout.split())
    for default in ("(default: 10.0)", "(default: 50)", "(default: 20.0)", "(default: 30.0)",
                    "(default: localhost)", "(default: 9999)"):
        assert default in help_text
    assert "round(PU/100*users)" in help_text and "PE/100" in help_text


def test_same_seed_same_bytes_other_seed_other_lines(run):
    flags = ["--rate", UNPACED, "--count", "3000", "--start-time", START]
    first = run("--seed", "42", *flags)
    assert run("--seed", "42", *flags) == first
    other = run("--seed", "43", *flags)
    assert len(other) == len(first)
    assert sum(a == b for a, b in zip(first, other, strict=True)) < 30


def test_line_i_does_not_depend_on_where_the_run_stops(run):
    flags = ["--seed", "5", "--rate", UNPACED, "--start-time", START]
    long = run(*flags, "--count", "9001")
    assert run(*flags, "--count", "4097") == long[:4097]
    assert run(*flags, "--count", "1") == long[:1]


def test_start_time_and_log_time_spacing(run):
    # line i has log time start + i/rate: 09:00:00.25 + i/8 s crosses 09:00:01 at i = 6.
    lines = run("--seed", "1", "--rate", "8", "--count", "12",
                "--start-time", "2026-11-28T09:00:00.25Z")
    seconds = [parse(line)["time"].second for line in lines]
    assert seconds == [0] * 6 + [1] * 6
    # An offset is honoured and printed as UTC; a time without offset is UTC.
    for start in ("2026-11-28T10:00:59+01:00", "2026-11-28T09:00:59"):
        times = [parse(line)["time"]
                 for line in run("--seed", "1", "--rate", UNPACED, "--count", "3",
                                 "--start-time", start)]
        assert times == [datetime(2026, 11, 28, 9, 0, 59, tzinfo=timezone.utc)] * 3


@pytest.mark.parametrize("count", ["0", "1", "4097"])
def test_count_gives_exactly_n_lines(run, count):
    assert len(run("--seed", "3", "--rate", UNPACED, "--count", count)) == int(count)


@pytest.mark.parametrize("rate, duration, expected", [("400", "0.5", 200), ("1000", "0.3333", 333),
                                                      ("3", "0.5", 2)])
def test_duration_gives_round_rate_times_seconds_lines(run, rate, duration, expected):
    assert len(run("--seed", "3", "--rate", rate, "--duration", duration)) == expected


def test_reader_leaving_early_is_a_quiet_exit(stage):
    process = subprocess.Popen([PYTHON, script(stage), "--rate", UNPACED, "--seed", "1",
                                "--output", "-"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        parse(process.stdout.readline().decode().rstrip("\n"))
        process.stdout.close()  # like `| head -1`: the next write gets EPIPE
        assert process.wait(timeout=30) == 0
        assert process.stderr.read() == b""
    finally:
        if process.poll() is None:
            process.kill()


def test_unwritable_output_is_one_line_and_exit_1(stage, tmp_path):
    result = subprocess.run([PYTHON, script(stage), "--count", "1", "--seed", "1",
                             "--output", str(tmp_path / "missing" / "access.log")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert len(result.stderr.splitlines()) == 1 and "error:" in result.stderr, result.stderr


def test_pacing_to_stdout(stage):
    began = time.monotonic()
    result = subprocess.run([PYTHON, script(stage), "--rate", "200", "--duration", "2",
                             "--output", "-"],
                            capture_output=True, text=True, timeout=60)
    elapsed = time.monotonic() - began
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 400
    for line in lines:
        parse(line)
    # The last line is due 399/200 s after the first, so < 1.995 s is impossible; the upper bound
    # leaves room for interpreter start-up on a loaded machine.
    assert 1.8 <= elapsed <= 6, elapsed


# --- TCP server --------------------------------------------------------------------------------

def collect(stream, into: list[str]) -> None:
    """Append each line of a subprocess pipe to `into` as it arrives (run in a thread)."""
    for line in stream:
        into.append(line.rstrip("\n"))


class Server:
    """The generator as a TCP server in a subprocess, with its stderr collected line by line."""

    def __init__(self, stage: str, *flags: str):
        self.port = free_port()
        self.process = subprocess.Popen(
            [PYTHON, script(stage), "--host", "127.0.0.1", "--port", str(self.port), *flags],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.stderr: list[str] = []
        threading.Thread(target=collect, args=(self.process.stderr, self.stderr),
                         daemon=True).start()
        wait_for(lambda: any(line.startswith("listening on") for line in self.stderr), 30,
                 "the generator to listen")


    def connected_at(self, client: socket.socket) -> int:
        port = client.getsockname()[1]
        pattern = re.compile(rf"client 127\.0\.0\.1:{port} connected at line (\d+)")
        found = wait_for(lambda: next(filter(None, map(pattern.fullmatch, self.stderr)), None), 10,
                         "the connect message")
        return int(found.group(1))

    def disconnected(self, port: int) -> bool:
        return f"client 127.0.0.1:{port} disconnected" in self.stderr

    def stop(self, sig=signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=10)
        finally:
            if self.process.poll() is None:
                self.process.kill()


class Client:
    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buffer = b""

    def read_lines(self, n: int) -> list[str]:
        while self.buffer.count(b"\n") < n:
            chunk = self.sock.recv(65536)
            assert chunk, "the server closed the connection"
            self.buffer += chunk
        *lines, self.buffer = self.buffer.split(b"\n", n)
        return [line.decode() for line in lines]


def test_socket_clients_come_and_go_and_get_the_regenerated_lines(stage, run):
    flags = ["--rate", "2000", "--seed", "9", "--start-time", START]
    server = Server(stage, *flags)
    try:
        a = Client(server.port)
        a_from = server.connected_at(a.sock)
        a_lines = a.read_lines(300)
        b = Client(server.port)  # connects later: its first line is further on
        b_from = server.connected_at(b.sock)
        b_lines = b.read_lines(200)
        a_lines += a.read_lines(100)
        a_port = a.sock.getsockname()[1]
        a.sock.close()
        wait_for(lambda: server.disconnected(a_port), 10, "the disconnect message")
        b_lines += b.read_lines(200)  # the others keep receiving
        c = Client(server.port)  # and a new client can still connect
        c_from = server.connected_at(c.sock)
        c_lines = c.read_lines(100)
        assert server.process.poll() is None
        assert server.stop() == 0  # SIGTERM is a clean stop
    finally:
        if server.process.poll() is None:
            server.process.kill()
    assert a_from < a_from + 300 <= b_from < c_from
    regenerated = run(*flags, "--count", str(max(a_from + 400, b_from + 400, c_from + 100)))
    assert a_lines == regenerated[a_from:a_from + 400]
    assert b_lines == regenerated[b_from:b_from + 400]
    assert c_lines == regenerated[c_from:c_from + 100]
    for line in a_lines + b_lines + c_lines:
        parse(line)


def test_socket_count_ends_the_server_after_the_last_line(stage):
    server = Server(stage, "--rate", "1000", "--seed", "2", "--count", "2000",
                    "--start-time", START)
    try:
        client = Client(server.port)
        first = server.connected_at(client.sock)
        lines = client.read_lines(2000 - first)
        assert client.sock.recv(1) == b""  # then the server closes the connection
        assert server.process.wait(timeout=10) == 0
    finally:
        server.stop()
    assert len(lines) == 2000 - first


def test_port_in_use_is_one_line_and_exit_1(stage):
    with socket.create_server(("127.0.0.1", 0)) as busy:
        result = subprocess.run([PYTHON, script(stage), "--host", "127.0.0.1",
                                 "--port", str(busy.getsockname()[1])],
                                capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert len(result.stderr.splitlines()) == 1 and "error: cannot listen" in result.stderr


def test_ctrl_c_is_a_clean_exit(stage):
    server = Server(stage, "--rate", "100")
    client = Client(server.port)
    client.read_lines(5)
    assert server.stop(signal.SIGINT) == 0
    assert not any("Traceback" in line for line in server.stderr)


# --- stage 1: the teaching generator -----------------------------------------------------------

def test_minimal_generator_shows_exactly_what_each_client_received():
    minimal = load_module("minimal", "log_generator")
    errors = sum(status >= 400 for status in minimal.STATUSES) / len(minimal.STATUSES)
    assert 0.2 <= errors <= 0.3  # enough errors for the stage-1 analyzer to show
    port = free_port()
    process = subprocess.Popen([PYTHON, str(ROOT / "minimal" / "log_generator.py"),
                                "--host", "127.0.0.1", "--port", str(port), "--rate", "20"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout: list[str] = []
    threading.Thread(target=collect, args=(process.stdout, stdout), daemon=True).start()
    try:
        wait_for(lambda: any(line.startswith("# listening on") for line in stdout), 30, "listening")
        received = {}
        for _ in range(2):  # a client that leaves does not stop the server: the next one is served
            client = Client(port)
            name = f"127.0.0.1:{client.sock.getsockname()[1]}"
            received[name] = client.read_lines(8)
            client.sock.close()
            wait_for(lambda name=name: f"# client {name} disconnected" in stdout, 10,
                     "the disconnect line")
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0
        assert "Traceback" not in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
    now = datetime.now(timezone.utc)
    for name, lines in received.items():
        start = stdout.index(f"# client {name} connected") + 1
        sent_after_connect = [line for line in stdout[start:] if not line.startswith("#")]
        assert lines == sent_after_connect[:8]
        for line in lines:
            assert abs((parse(line)["time"] - now).total_seconds()) < 60


def test_minimal_generator_bad_input():
    minimal = str(ROOT / "minimal" / "log_generator.py")
    with socket.create_server(("127.0.0.1", 0)) as busy:
        result = subprocess.run([PYTHON, minimal, "--host", "127.0.0.1",
                                 "--port", str(busy.getsockname()[1])],
                                capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert len(result.stderr.splitlines()) == 1 and "error: cannot listen" in result.stderr
    result = subprocess.run([PYTHON, minimal, "--rate", "0"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2 and "--rate" in result.stderr and "Traceback" not in result.stderr
