"""The access-log parser contract, held by one suite over every stage's parse_access_log.

A new stage joins the contract by appending its (stage, module) to PARSER_STAGES: nothing else
changes.
"""
from datetime import datetime

import pytest
from conftest import load_module
from pyspark.sql.types import (
    BooleanType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)
from pyspark.testing import assertDataFrameEqual

PARSER_STAGES = [("minimal", "spark_streaming_analyzer"), ("complet", "spark_streaming_analyzer"),
                 ("finale", "access_log")]

SCHEMA = StructType([
    StructField("value", StringType()),
    StructField("ip", StringType()),
    StructField("ident", StringType()),
    StructField("user", StringType()),
    StructField("event_time", TimestampType()),
    StructField("method", StringType()),
    StructField("url", StringType()),
    StructField("protocol", StringType()),
    StructField("status", IntegerType()),
    StructField("bytes", LongType()),
    StructField("referer", StringType()),
    StructField("user_agent", StringType()),
    StructField("malformed", BooleanType()),
])

LONG_AGENT = "Mozilla/5.0 " + "x" * 5000

# (line, expected fields after `value`): hand-written. Python runs in UTC (conftest), so the naive
# datetimes below are UTC instants.
WELL_FORMED = [
    ('192.168.1.10 - - [28/Nov/2026:09:14:03 +0000] "GET /socks/wool HTTP/1.1" 404 512 '
     '"https://chaussettes.io/" "Mozilla/5.0 (X11; Linux x86_64)"',
     ("192.168.1.10", None, None, datetime(2026, 11, 28, 9, 14, 3), "GET", "/socks/wool",
      "HTTP/1.1", 404, 512, "https://chaussettes.io/", "Mozilla/5.0 (X11; Linux x86_64)", False)),
    # common format, with ident and user, '-' size
    ('10.0.0.1 ident alice [28/Nov/2026:09:14:04 +0000] "POST /cart HTTP/1.0" 201 -',
     ("10.0.0.1", "ident", "alice", datetime(2026, 11, 28, 9, 14, 4), "POST", "/cart", "HTTP/1.0",
      201, None, None, None, False)),
    # IPv6 client, '-' referer, size 0
    ('2001:db8::1 - - [28/Nov/2026:23:59:59 +0000] "DELETE /cart/42 HTTP/2.0" 500 0 "-" '
     '"curl/8.5.0"',
     ("2001:db8::1", None, None, datetime(2026, 11, 28, 23, 59, 59), "DELETE", "/cart/42",
      "HTTP/2.0", 500, 0, None, "curl/8.5.0", False)),
    # host name in %h, '-' user agent
    ('crawler-7.example.org - bob [01/Jan/2027:00:00:00 +0000] "HEAD / HTTP/1.1" 304 - "-" "-"',
     ("crawler-7.example.org", None, "bob", datetime(2027, 1, 1), "HEAD", "/", "HTTP/1.1",
      304, None, None, None, False)),
    # escaped quotes, brackets, unicode and an escaped backslash in referer and user agent
    ('10.1.2.3 - - [28/Nov/2026:09:14:05 +0000] "GET /search?q=%22socks%22 HTTP/1.1" 200 42 '
     '"https://chaussettes.io/?q=\\"wool\\"" '
     '"Mozilla/5.0 \\"quoted\\" [brackets] (ünïcødé ☃) back\\\\slash"',
     ("10.1.2.3", None, None, datetime(2026, 11, 28, 9, 14, 5), "GET", "/search?q=%22socks%22",
      "HTTP/1.1", 200, 42, 'https://chaussettes.io/?q="wool"',
      'Mozilla/5.0 "quoted" [brackets] (ünïcødé ☃) back\\slash', False)),
    # request "-" (e.g. a client that timed out before sending it)
    ('10.0.0.9 - - [28/Nov/2026:09:14:06 +0000] "-" 408 - "-" "-"',
     ("10.0.0.9", None, None, datetime(2026, 11, 28, 9, 14, 6), None, None, None,
      408, None, None, None, False)),
    # HTTP/0.9 request: no protocol
    ('10.0.0.8 - - [28/Nov/2026:09:14:06 +0000] "GET /old" 200 7',
     ("10.0.0.8", None, None, datetime(2026, 11, 28, 9, 14, 6), "GET", "/old", None,
      200, 7, None, None, False)),
    # non-UTC offsets are converted to UTC
    ('10.0.0.2 - - [28/Nov/2026:10:14:07 +0100] "GET /a HTTP/1.1" 200 1 "-" "x"',
     ("10.0.0.2", None, None, datetime(2026, 11, 28, 9, 14, 7), "GET", "/a", "HTTP/1.1",
      200, 1, None, "x", False)),
    ('10.0.0.3 - - [27/Nov/2026:23:30:00 -0930] "GET /b HTTP/1.1" 503 1 "-" "x"',
     ("10.0.0.3", None, None, datetime(2026, 11, 28, 9, 0, 0), "GET", "/b", "HTTP/1.1",
      503, 1, None, "x", False)),
    # a very long user agent (Java's regex engine can overflow its stack on such fields)
    (f'10.0.0.4 - - [28/Nov/2026:09:14:08 +0000] "GET /c HTTP/1.1" 200 1 "-" "{LONG_AGENT}"',
     ("10.0.0.4", None, None, datetime(2026, 11, 28, 9, 14, 8), "GET", "/c", "HTTP/1.1",
      200, 1, None, LONG_AGENT, False)),
]

MALFORMED = [
    "hello world",
    "",
    # impossible date, then no date at all
    '10.0.0.1 - - [31/Feb/2026:09:14:03 +0000] "GET / HTTP/1.1" 200 1 "-" "x"',
    '10.0.0.1 - - [yesterday] "GET / HTTP/1.1" 200 1 "-" "x"',
    # truncated lines: inside the request, inside the user agent
    '192.168.1.10 - - [28/Nov/2026:09:14:03 +0000] "GET /socks/wool HTT',
    '192.168.1.10 - - [28/Nov/2026:09:14:03 +0000] "GET / HTTP/1.1" 404 512 '
    '"https://chaussettes.io/" "Mozilla/5.0 (X11',
    # unescaped quote inside the user agent, status that is not 3 digits
    '10.0.0.1 - - [28/Nov/2026:09:14:03 +0000] "GET / HTTP/1.1" 200 1 "-" "a "b" c"',
    '10.0.0.1 - - [28/Nov/2026:09:14:03 +0000] "GET / HTTP/1.1" OK 1 "-" "x"',
    # a line break inside the line, and \x01 (a control character Apache writes as \x01) in the
    # URL: each once made finale's parser fail the whole job
    '10.0.0.1 - - [28/Nov/2026:09:14:03 +0000]\n"GET / HTTP/1.1" 200 1 "-" "x"',
    '10.0.0.1 - - [28/Nov/2026:09:14:03 +0000] "GET /a\x01b HTTP/1.1" 200 1 "-" "x"',
]


@pytest.fixture(params=PARSER_STAGES, ids=[stage for stage, _ in PARSER_STAGES])
def parse_access_log(request):
    stage, module = request.param
    return load_module(stage, module).parse_access_log


def lines_frame(spark, lines):
    return spark.createDataFrame([(line,) for line in lines], "value string")


def test_schema_is_the_contract(spark, parse_access_log):
    # Names, order and types; nullability is Spark's business (e.g. `malformed` is never null).
    schema = parse_access_log(lines_frame(spark, [WELL_FORMED[0][0]])).schema
    assert [(field.name, field.dataType) for field in schema] == [
        (field.name, field.dataType) for field in SCHEMA]


def test_well_formed_lines(spark, parse_access_log):
    parsed = parse_access_log(lines_frame(spark, [line for line, _ in WELL_FORMED]))
    expected = spark.createDataFrame([(line, *fields) for line, fields in WELL_FORMED], SCHEMA)
    assertDataFrameEqual(parsed, expected)


def test_malformed_lines_are_flagged_and_leave_good_lines_intact(spark, parse_access_log):
    # Malformed and good lines interleaved in one DataFrame: one row out per row in, no exception.
    good = WELL_FORMED[:3]
    lines = [MALFORMED[0], good[0][0], *MALFORMED[1:5], good[1][0], *MALFORMED[5:], good[2][0]]
    parsed = parse_access_log(lines_frame(spark, lines))
    expected = spark.createDataFrame(
        [(line, *([None] * 11), True) for line in MALFORMED]
        + [(line, *fields) for line, fields in good],
        SCHEMA)
    assertDataFrameEqual(parsed, expected)
