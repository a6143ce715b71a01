"""The dead-letter verdict contract: the dead-letter query's cheap verdict (pipeline.dead_letters:
one match of LINE_PATTERN, the date, the future check) and the alerts query's full parse
(parse_access_log -> valid_lines, and dead_letters_of_parse below, the reference) agree on every
line.

Every line is either counted by the windows or a dead letter, never both and never neither, with
the same reason from both paths: hand-written lines with their expected reasons, then the real log
of finale/data (secrepo.com, held out of every tuning) and four damaged copies of it.
"""
import gzip
import re
from datetime import datetime

import pytest
from conftest import ROOT
from pyspark.sql import functions as F
from test_contract_parser import MALFORMED, WELL_FORMED

from finale.analyzer import pipeline
from finale.analyzer.access_log import LINE_PATTERN, parse_access_log

FIXTURE = ROOT / "finale" / "data" / "secrepo-2021-10-22-to-26.log.gz"
# The record's timestamp every line is judged against (the broker's clock on http-logs).
CLOCK = datetime(2027, 1, 1, 0, 0, 0)
OK = None  # counted by the windows
GOOD = '10.0.0.1 - - [31/Dec/2026:23:59:00 +0000] "GET /a HTTP/1.1" 404 512 "-" "curl/8.5.0"'

# (line, expected reason): hand-written.
CASES = [
    *((line, OK) for line, _ in WELL_FORMED),
    (None, "empty_record"),
    ("", "empty_line"),
    ("   ", "empty_line"),
    (" \t ", "unparseable"),  # trim() takes spaces only
    ("hello world", "unparseable"),
    ('10.0.0.1 - - [31/Feb/2026:09:14:03 +0000] "GET / HTTP/1.1" 200 1 "-" "x"', "bad_timestamp"),
    ('10.0.0.1 - - [yesterday] "GET / HTTP/1.1" 200 1 "-" "x"', "bad_timestamp"),
    # Truncated, an unescaped quote, a status that is not 3 digits.
    *((line, "unparseable") for line in MALFORMED[4:]),
    # vhost_combined and common.
    ("shop.example:443 " + GOOD, OK),
    (GOOD.split(' "-"')[0], OK),
    # Within --max-future (5 minutes) of the clock, and beyond it.
    (GOOD.replace("31/Dec/2026:23:59:00", "01/Jan/2027:00:05:00"), OK),
    (GOOD.replace("31/Dec/2026:23:59:00", "01/Jan/2027:00:05:01"), "future_timestamp"),
    (GOOD.replace("/2026:", "/2099:"), "future_timestamp"),
    # A line break at the end is whitespace; inside a line it is no access log.
    (GOOD + "\n", OK),
    (GOOD + "\r\n", OK),
    (GOOD.replace(" - - ", "\n- - "), "unparseable"),
    ("abc\ndef", "unparseable"),
    # \x01, the parser's field separator, in a field: no access log (Apache writes \x01 as \\x01).
    (GOOD.replace("/a ", "/a\x01b "), "unparseable"),
    (GOOD.replace("10.0.0.1", "10.0\x01.0.1"), "unparseable"),
    (GOOD.replace("curl", "cu\x01rl"), "unparseable"),
    # \x01-separated parts that look like fields, behind a line break: neither a crash (the
    # status is not a number) nor a counted line.
    ("a\x01b\x01c\x0128/Nov/2026:09:14:03 +0000\x01GET\x01/\x01H\x01abc\x011\x01-\x01x\ny",
     "unparseable"),
]


def records(spark, lines):
    """Kafka-like records: `value`, the KAFKA_METADATA columns, offset = position in `lines`,
    every record stamped CLOCK."""
    return spark.createDataFrame(
        [(line, b"k", 0, offset, CLOCK) for offset, line in enumerate(lines)],
        "value string, kafka_key binary, kafka_partition int, kafka_offset long, "
        "kafka_timestamp timestamp")


def dead_letters_of_parse(parsed, clock):
    """The dead letters from parse_access_log's output (the alerts query's full parse), with
    pipeline.dead_letter_reason: the reference verdict pipeline.dead_letters is held to."""
    metadata = [name for name, _, _ in pipeline.KAFKA_METADATA if name in parsed.columns]
    reason = pipeline.dead_letter_reason(F.col("value"), F.col("event_time"),
                                         F.col("value").rlike(LINE_PATTERN), clock,
                                         pipeline.MAX_FUTURE_S)
    return (parsed.where(F.col("malformed") | pipeline.in_the_future(clock))
            .select("value", reason.alias("reason"), *metadata))


def verdicts(spark, lines) -> dict[str, dict[int, str | None]]:
    """offset -> reason (None: counted) by each path: the dead-letter query's verdict, the full
    parse's reference, and valid_lines (the alerts query's input) as the complement."""
    frame, clock = records(spark, lines), F.col("kafka_timestamp")
    parsed = parse_access_log(frame)

    def reasons(dead):
        found = {row.kafka_offset: row.reason for row in dead.collect()}
        return {offset: found.get(offset) for offset in range(len(lines))}

    counted = {row.kafka_offset for row in
               pipeline.valid_lines(parsed, clock).select("kafka_offset").collect()}
    return {
        "dead_letters": reasons(pipeline.dead_letters(frame, clock)),
        "dead_letters_of_parse": reasons(dead_letters_of_parse(parsed, clock)),
        "valid_lines": {offset: OK if offset in counted else "left out"
                        for offset in range(len(lines))},
    }


def test_hand_written_lines_get_the_same_verdict_from_both_paths(spark):
    lines = [line for line, _ in CASES]
    expected = {offset: reason for offset, (_, reason) in enumerate(CASES)}
    found = verdicts(spark, lines)
    assert found["dead_letters"] == expected
    assert found["dead_letters_of_parse"] == expected
    assert found["valid_lines"] == {offset: OK if reason is OK else "left out"
                                    for offset, reason in expected.items()}


def test_dead_letters_keep_the_line_and_its_record_metadata(spark):
    dead = pipeline.dead_letters(records(spark, ["hello", GOOD]), F.col("kafka_timestamp"))
    assert [tuple(row) for row in dead.collect()] == [
        ("hello", "unparseable", b"k", 0, 0, CLOCK)]
    assert dead.columns == ["value", "reason", "kafka_key", "kafka_partition", "kafka_offset",
                            "kafka_timestamp"]


@pytest.mark.slow
def test_the_real_log_and_its_damaged_copies_get_the_same_verdict_from_both_paths(spark):
    real = gzip.decompress(FIXTURE.read_bytes()).decode().splitlines()
    assert len(real) == 5854
    damaged = {
        # The clock is 2027-01-01: every real line (2021) is in the past, and in 2099 in the future.
        "future_timestamp": [line.replace("/2021:", "/2099:", 1) for line in real],
        # 31 February: the line keeps its shape, its date does not exist.
        "bad_timestamp": [re.sub(r"^(\S+ \S+ \S+ \[)\d\d/Oct/", r"\g<1>31/Feb/", line)
                          for line in real],
        # Cut inside the request's quotes, a \x01 in the URL, a line break after the address.
        "unparseable": ([line[:line.index('"') + 4] for line in real]
                        + [line.replace(" HTTP/1", "\x01 HTTP/1", 1) for line in real]
                        + [line.replace(" ", "\n", 1) for line in real]),
    }
    assert all("[31/Feb/2021:" in line for line in damaged["bad_timestamp"])
    lines = real + [line for group in damaged.values() for line in group]
    found = verdicts(spark, lines)
    assert found["dead_letters"] == found["dead_letters_of_parse"]
    assert found["valid_lines"] == {offset: OK if reason is OK else "left out"
                                    for offset, reason in found["dead_letters"].items()}
    counts: dict[str | None, int] = {}
    for reason in found["dead_letters"].values():
        counts[reason] = counts.get(reason, 0) + 1
    assert counts == {OK: 5854, "future_timestamp": 5854, "bad_timestamp": 5854,
                      "unparseable": 3 * 5854}
