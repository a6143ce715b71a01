"""log_generator.py --replay with --incident/--truth on a slice of the real log.

The code under test is finale/generator/replay.py. No Spark, no broker: the replay to a file,
compared line by line with what finale/generator/replay.py's docstring says it adds, worked out
by hand from the slice's timestamps.
"""
import gzip
import json

from conftest import ROOT

from finale.generator import app as generator
from finale.generator import replay

FIXTURE = ROOT / "finale" / "data" / "secrepo-2021-10-22-to-26.log.gz"


def real_slice(tmp_path, lines: int):
    with gzip.open(FIXTURE, "rb") as source:
        head = [next(source) for _ in range(lines)]
    path = tmp_path / "slice.log.gz"  # gzipped: --replay reads .gz too
    with gzip.open(path, "wb") as out:
        out.writelines(head)
    return path, [line.decode() for line in head]


def test_replay_adds_incident_lines_and_keeps_the_real_ones(tmp_path):
    path, real = real_slice(tmp_path, 4)
    # Line 1 is at 02:28:56 -0700 = 09:28:56Z (the origin), line 2 at 09:47:52Z, 3 at 09:49:49Z.
    assert real[0].startswith("51.222.253.14 - - [22/Oct/2021:02:28:56 -0700]")
    assert "[22/Oct/2021:02:47:52 -0700]" in real[1] and "[22/Oct/2021:02:49:49 -0700]" in real[2]
    out, truth = tmp_path / "out.log", tmp_path / "truth.jsonl"
    status = generator.main([
        "--replay", str(path), "--output", str(out), "--truth", str(truth), "--rate", "1000000",
        "--incident", "ip@2+2", "--incident", "global@1200+1", "--incident", "url=/@1200+0.5",
        "--incident-rate", "2", "--incident-error-rate", "100"])
    assert status == 0

    def added(ip, clock, url, code, kind):
        return (f'{ip} - - [22/Oct/2021:{clock} +0000] "GET {url} HTTP/1.1" {code} 512 "-" '
                f'"chaussettes-incident/{kind}"\n')

    # ip@2+2 at 2 lines/s: 4 lines from 09:28:58 (the new IP 203.0.113.1, scanner paths), before
    # real line 2. global@1200+1 (09:48:56) and url=/@1200+0.5 (1 line), before real line 3
    # (09:49:49), in time order, the earlier incident first at equal times; the global lines
    # request the real URLs seen so far (lines 1 and 2), in turn.
    ftp = "/Datasets%20Description/Network/ftp.html"
    ssl = "/Datasets%20Description/Network/ssl.html"
    assert out.read_text().splitlines(keepends=True) == [
        real[0],
        added("203.0.113.1", "09:28:58", "/wp-login.php", 404, "ip"),
        added("203.0.113.1", "09:28:58", "/wp-admin/setup-config.php", 404, "ip"),
        added("203.0.113.1", "09:28:59", "/.env", 404, "ip"),
        added("203.0.113.1", "09:28:59", "/xmlrpc.php", 404, "ip"),
        real[1],
        added("198.51.100.1", "09:48:56", ftp, 503, "global"),
        added("198.51.100.1", "09:48:56", "/", 500, "url"),
        added("198.51.100.2", "09:48:56", ssl, 503, "global"),
        real[2],
        real[3],
    ]
    assert [json.loads(line) for line in truth.read_text().splitlines()] == [
        {"kind": "ip", "entity": "203.0.113.1", "start": "2021-10-22T09:28:58.000Z",
         "end": "2021-10-22T09:29:00.000Z"},
        {"kind": "global", "entity": "*", "start": "2021-10-22T09:48:56.000Z",
         "end": "2021-10-22T09:48:57.000Z"},
        {"kind": "url", "entity": "/", "start": "2021-10-22T09:48:56.000Z",
         "end": "2021-10-22T09:48:56.500Z"},
    ]


def test_replay_incident_after_the_last_line_and_out_of_order_lines(tmp_path):
    # Lines 363-365 of the real log: line 364 is 607 s behind line 363 (a long download, logged
    # when it ended). The latest time seen decides: an incident 1 s after 363 is not merged in
    # before 364 (whose own time is earlier) but before 365; one after the last line follows it.
    with gzip.open(FIXTURE, "rb") as source:
        lines = [line for number, line in enumerate(source, 1) if number in (1, 363, 364, 365)]
    path = tmp_path / "slice.log"
    path.write_bytes(b"".join(lines))
    text = [line.decode() for line in lines]
    first = generator.main(["--replay", str(path), "--output", str(tmp_path / "a.log"),
                            "--rate", "1000000"])
    assert first == 0 and (tmp_path / "a.log").read_text().splitlines(keepends=True) == text
    origin, t363, t364, t365 = (replay.line_epoch(line) for line in lines)
    assert t364 + 607 == t363 and t363 + 1 < t365
    status = generator.main([
        "--replay", str(path), "--output", str(tmp_path / "b.log"), "--rate", "1000000",
        "--incident", f"ip=10.9.9.9@{t363 + 1 - origin:g}+0.5", "--incident",
        f"ip=10.9.9.8@{t365 + 100 - origin:g}+0.5", "--incident-error-rate", "100"])
    assert status == 0
    out = (tmp_path / "b.log").read_text().splitlines(keepends=True)
    assert [line.split()[0] for line in out] == [
        text[0].split()[0], text[1].split()[0], text[2].split()[0], "10.9.9.9", text[3].split()[0],
        "10.9.9.8"]
    assert [line for line in out if "chaussettes-incident" not in line] == text


def test_replay_incident_errors_are_one_line(tmp_path, capsys):
    path, _ = real_slice(tmp_path, 2)
    assert generator.main(["--replay", str(path), "--output", str(tmp_path / "o.log"),
                           "--incident", "url@0+10"]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        "argument --incident: a url incident on a replayed log needs its URL, e.g. url=/"]
    assert generator.main(["--replay", str(path), "--output", str(tmp_path / "o.log"),
                           "--incident", 'ip=a"b@0+10']) == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        "argument --incident: no space or quote in an entity, got 'a\"b'"]
