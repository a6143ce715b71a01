"""complet's analysis functions, report and security settings on small hand-computed data."""
import re
import stat
import subprocess
from datetime import datetime, timedelta

import pytest
from conftest import ROOT, load_module
from pyspark.testing import assertDataFrameEqual

analyzer = load_module("complet", "spark_streaming_analyzer")

LOGS_SCHEMA = "event_time timestamp, ip string, url string, status int, malformed boolean"
COUNTS_SCHEMA = ("window_start timestamp, window_end timestamp, ip string, url string, status int, "
                 "requests long")


def at(second: int) -> datetime:
    """2026-11-28 09:00:00 UTC + second."""
    return datetime(2026, 11, 28, 9, 0, 0) + timedelta(seconds=second)


# The sliding windows of 10 s every 5 s around 09:00:00.
W0 = (at(-5), at(5))
W1 = (at(0), at(10))
W2 = (at(5), at(15))


def test_window_counts_puts_each_line_in_every_overlapping_window(spark):
    logs = spark.createDataFrame([
        (at(1), "10.0.0.1", "/x", 200, False),
        (at(6), "10.0.0.1", "/x", 404, False),
        (at(7), "10.0.0.2", "/y", 404, False),
        (at(7), "10.0.0.2", "/y", 404, False),
        (None, None, None, None, True),          # malformed: not counted anywhere
    ], LOGS_SCHEMA)
    counts = analyzer.window_counts(logs, "10 seconds", "5 seconds", "10 seconds")
    assertDataFrameEqual(counts, spark.createDataFrame([
        (*W0, "10.0.0.1", "/x", 200, 1),
        (*W1, "10.0.0.1", "/x", 200, 1),
        (*W1, "10.0.0.1", "/x", 404, 1),
        (*W2, "10.0.0.1", "/x", 404, 1),
        (*W1, "10.0.0.2", "/y", 404, 2),
        (*W2, "10.0.0.2", "/y", 404, 2),
    ], COUNTS_SCHEMA))


@pytest.fixture(scope="module")
def counts(spark):
    # W1: ip 10.0.0.2 has the most errors; .4 and .5 tie on errors (1) with .1 but have a higher
    # error rate (1/2 > 1/4); .4 and .5 tie on both and are ordered by ip. W2 has no error at all.
    return spark.createDataFrame([
        (*W1, "10.0.0.1", "/x", 200, 3),
        (*W1, "10.0.0.1", "/x", 404, 1),
        (*W1, "10.0.0.2", "/x", 500, 2),
        (*W1, "10.0.0.2", "/y", 404, 2),
        (*W1, "10.0.0.3", "/y", 200, 4),
        (*W1, "10.0.0.4", "/z", 503, 1),
        (*W1, "10.0.0.4", "/z", 200, 1),
        (*W1, "10.0.0.5", "/z", 404, 1),
        (*W1, "10.0.0.5", "/z", 200, 1),
        (*W2, "10.0.0.1", "/x", 200, 2),
    ], COUNTS_SCHEMA)


def test_window_summary(spark, counts):
    assertDataFrameEqual(analyzer.window_summary(counts), spark.createDataFrame([
        (*W1, 16, 7, 7 / 16),
        (*W2, 2, 0, 0.0),
    ], "window_start timestamp, window_end timestamp, requests long, errors long, "
       "error_rate double"))


def test_errors_by_status(spark, counts):
    assertDataFrameEqual(analyzer.errors_by_status(counts), spark.createDataFrame([
        (*W1, 404, 4),
        (*W1, 500, 2),
        (*W1, 503, 1),
    ], "window_start timestamp, window_end timestamp, status int, errors long"))


TOP_SCHEMA = ("window_start timestamp, window_end timestamp, rank int, {key} string, errors long, "
              "requests long, error_rate double")


def test_top_ips_ties_broken_by_error_rate_then_ip(spark, counts):
    # 10.0.0.1 (1 error in 4 requests) is 4th: left out of the top 3.
    assertDataFrameEqual(analyzer.top_offenders(counts, "ip", 3), spark.createDataFrame([
        (*W1, 1, "10.0.0.2", 4, 4, 1.0),
        (*W1, 2, "10.0.0.4", 1, 2, 0.5),
        (*W1, 3, "10.0.0.5", 1, 2, 0.5),
    ], TOP_SCHEMA.format(key="ip")))


def test_top_urls(spark, counts):
    # /z and /y both have 2 errors: /z (2 of 4) ranks before /y (2 of 6).
    assertDataFrameEqual(analyzer.top_offenders(counts, "url", 2), spark.createDataFrame([
        (*W1, 1, "/x", 3, 6, 0.5),
        (*W1, 2, "/z", 2, 4, 0.5),
    ], TOP_SCHEMA.format(key="url")))


def test_malformed_count(spark):
    logs = spark.createDataFrame(
        [(None, None, None, None, flag) for flag in (False, True, False, True, True)], LOGS_SCHEMA)
    assertDataFrameEqual(analyzer.malformed_count(logs),
                         spark.createDataFrame([(5, 3)], "lines long, malformed long"))
    assertDataFrameEqual(analyzer.malformed_count(logs.limit(0)),
                         spark.createDataFrame([(0, 0)], "lines long, malformed long"))


def test_window_reports_text(counts):
    assert analyzer.window_reports(counts, 3) == [
        "window 2026-11-28 09:00:00 -> 09:00:10 UTC\n"
        "  requests 16, errors 7, error rate 43.75 %\n"
        "  errors by status: 404: 4, 500: 2, 503: 1\n"
        "  top 3 IPs by errors:\n"
        "    1. 10.0.0.2  4 of 4 requests failed (100.00 %)\n"
        "    2. 10.0.0.4  1 of 2 requests failed (50.00 %)\n"
        "    3. 10.0.0.5  1 of 2 requests failed (50.00 %)\n"
        "  top 3 URLs by errors:\n"
        "    1. /x  3 of 6 requests failed (50.00 %)\n"
        "    2. /z  2 of 4 requests failed (50.00 %)\n"
        "    3. /y  2 of 6 requests failed (33.33 %)\n",
        "window 2026-11-28 09:00:05 -> 09:00:15 UTC\n"
        "  requests 2, errors 0, error rate 0.00 %\n"
        "  errors by status: none\n"
        "  top 3 IPs by errors: none\n"
        "  top 3 URLs by errors: none\n",
    ]


# ---------------------------------------------------------------- security settings

SECURITY = {"spark.authenticate": "true", "spark.network.crypto.enabled": "true",
            "spark.io.encryption.enabled": "true"}


def test_committed_conf_has_the_settings_and_no_secret():
    assert analyzer.read_spark_conf(analyzer.SECURITY_CONF) == SECURITY


def test_secret_from_environment(tmp_path):
    secret_file = tmp_path / "secrets" / "spark.secret"
    settings, source = analyzer.security_settings(
        analyzer.SECURITY_CONF, secret_file, {"SPARK_AUTHENTICATE_SECRET": "s3cret"})
    assert (settings, source) == ({**SECURITY, "spark.authenticate.secret": "s3cret"},
                                  "$SPARK_AUTHENTICATE_SECRET")
    assert not secret_file.exists()


def test_secret_file_generated_as_make_secret_does_then_reused(tmp_path):
    """Stage 2's --secure and finale's `make secret` give the same file: the path, 64 hex digits,
    the folder 0700 (no other user of the machine reaches it), the file 0644 (compose's non-root
    containers read it once bind-mounted; a 0600 file of another user gives them 'Permission
    denied')."""
    secret_file = tmp_path / "secrets" / "spark.secret"
    settings, source = analyzer.security_settings(analyzer.SECURITY_CONF, secret_file, {})
    secret = secret_file.read_text()
    assert re.fullmatch(r"[0-9a-f]{64}", secret)
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o644
    assert stat.S_IMODE(secret_file.parent.stat().st_mode) == 0o700
    assert (settings, source) == ({**SECURITY, "spark.authenticate.secret": secret},
                                  str(secret_file))
    assert analyzer.security_settings(analyzer.SECURITY_CONF, secret_file, {})[0] == settings

    # The same path as finale's make secret, which keeps that file (the deployment's one secret)
    # and gives it, and a file left 0600 by an older version, the same modes.
    assert analyzer.SECRET_FILE.relative_to(ROOT).as_posix() == ".secrets/spark-authenticate.secret"
    secret_file.chmod(0o600)
    made = subprocess.run(["make", "--no-print-directory", "-f", str(ROOT / "Makefile"), "secret",
                           f"SECRET_FILE={secret_file}"], cwd=tmp_path, capture_output=True,
                          text=True)
    assert made.returncode == 0, made.stderr
    assert secret_file.read_text() == secret
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o644
    fresh = tmp_path / "fresh" / "spark.secret"
    made = subprocess.run(["make", "--no-print-directory", "-f", str(ROOT / "Makefile"), "secret",
                           f"SECRET_FILE={fresh}"], cwd=tmp_path, capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    assert re.fullmatch(r"[0-9a-f]{64}", fresh.read_text())
    assert (stat.S_IMODE(fresh.stat().st_mode), stat.S_IMODE(fresh.parent.stat().st_mode)) == (
        0o644, 0o700)


# ---------------------------------------------------------------- command line

@pytest.mark.parametrize("argv, message", [
    (["--window", "soon"], "argument --window: 'soon' is not a duration"),
    (["--slide", "0 seconds"], "argument --slide: '0 seconds' is not a duration"),
    (["--window", "10 seconds", "--slide", "1 minute"],
     "--slide (1 minute) must not be longer than --window"),
    (["--top", "0"], "argument --top: '0' is not an integer >= 1"),
    (["--port", "70000"], "--port must be in 1..65535"),
])
def test_bad_arguments_exit_2_with_one_line(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        analyzer.parse_args(argv)
    assert exit_info.value.code == 2
    last_line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "error: " in last_line and message in last_line


def test_defaults():
    args = analyzer.parse_args([])
    assert (args.host, args.port, args.window, args.slide, args.watermark, args.top, args.secure,
            args.master) == ("localhost", 9999, "30 seconds", "10 seconds", "10 seconds", 3, False,
                             "local[2]")
