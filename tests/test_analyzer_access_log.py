"""finale/analyzer/access_log: the three formats it reads, and parse_time, whose arithmetic fast
path gives exactly try_to_timestamp's answer.

The fast path only takes the canonical %t it can prove valid and hands everything else to Spark's
pattern formatter; these tests hold it to that on hand-computed instants (leap days, offsets on
both sides, the end of a year) and on thousands of generated strings, canonical or not, valid or
not, compared row by row with try_to_timestamp(time, TIME_FORMAT) in the same Spark job.
"""
import random
from datetime import datetime

import pytest
from pyspark.sql import functions as F

from finale.analyzer import access_log

MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]

# (%t, the UTC instant by hand; None: not a date). Python runs in UTC (conftest).
HAND_COMPUTED = [
    ("28/Nov/2026:09:14:03 +0000", datetime(2026, 11, 28, 9, 14, 3)),
    ("01/Jan/1970:00:00:00 +0000", datetime(1970, 1, 1)),
    # 23:59:59 at -01:30 is 01:29:59 UTC the next day: 1 March, 2024 being a leap year.
    ("29/Feb/2024:23:59:59 -0130", datetime(2024, 3, 1, 1, 29, 59)),
    ("29/Feb/2000:00:00:00 +0000", datetime(2000, 2, 29)),  # divisible by 400: leap
    ("29/Feb/1900:00:00:00 +0000", None),                   # divisible by 100: not leap
    ("29/Feb/2026:00:00:00 +0000", None),
    ("31/Apr/2026:00:00:00 +0000", None),
    ("31/Dec/2026:23:30:00 -0930", datetime(2027, 1, 1, 9, 0)),
    ("01/Jan/2027:05:00:00 +1400", datetime(2026, 12, 31, 15, 0)),
    ("28/Nov/2026:24:00:00 +0000", None),
    ("28/Nov/2026:09:60:00 +0000", None),
    ("00/Nov/2026:09:14:03 +0000", None),
    ("28/Nov/2026:09:14:03", None),
    ("28/Nov/2026 09:14:03 +0000", None),
    ("", None),
]


def test_hand_computed_instants(spark):
    frame = spark.createDataFrame([(text,) for text, _ in HAND_COMPUTED], "time string")
    got = [row[0] for row in frame.select(access_log.parse_time(F.col("time"))).collect()]
    assert got == [instant for _, instant in HAND_COMPUTED]


def generated_times(count: int, seed: int) -> list[str]:
    """Canonical strings with fields in and out of range, plus mutations of them (lower-case
    month, one digit, no offset, a letter for a digit, extra text): each takes one path or the
    other."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        day = rng.choice([rng.randint(1, 28), rng.randint(0, 32)])
        month = rng.choice(MONTHS)
        year = rng.choice([rng.randint(1899, 2101), 1900, 2000, 2024, 2100, 3000, 1600])
        hour, minute, second = rng.randint(0, 24), rng.randint(0, 60), rng.randint(0, 60)
        sign = rng.choice("+-")
        offset = (f"{rng.choice([0, 1, 5, 9, 12, 14, 18, 19]):02d}"
                  f"{rng.choice([0, 30, 45, 59, 60]):02d}")
        text = f"{day:02d}/{month}/{year:04d}:{hour:02d}:{minute:02d}:{second:02d} {sign}{offset}"
        mutation = rng.randrange(8)
        if mutation == 0:
            text = text.replace(month, month.lower())
        elif mutation == 1:
            text = text[1:]
        elif mutation == 2:
            text = text[:-6]
        elif mutation == 3:
            position = rng.randrange(len(text))
            text = text[:position] + "x" + text[position + 1:]
        elif mutation == 4:
            text += " "
        out.append(text)
    return out


@pytest.mark.parametrize("seed", [1, 2])
def test_fast_path_equals_the_formatter_on_generated_times(spark, seed):
    times = generated_times(5000, seed)
    frame = spark.createDataFrame([(text,) for text in times], "time string")
    rows = frame.select(
        "time",
        access_log.parse_time(F.col("time")).alias("fast"),
        F.try_to_timestamp(F.col("time"), F.lit(access_log.TIME_FORMAT)).alias("formatter"),
    ).collect()
    differ = [(row["time"], row["fast"], row["formatter"]) for row in rows
              if row["fast"] != row["formatter"]]
    assert differ == []
    # Both kinds are there in numbers: valid dates and strings that are not one.
    valid = sum(row["formatter"] is not None for row in rows)
    assert 1000 < valid < 4000


# The same request in each format the parser reads (access_log's docstring), as Apache 2.4 writes
# it (Debian's LogFormat lines): the fields are the same, vhost_combined's `host:port` is skipped.
# (line, ip, user, status, bytes, referer, user_agent)
FORMATS = {
    "combined": ('203.0.113.7 - alice [06/Dec/2026:21:38:15 +0100] "GET /socks?id=1 HTTP/1.1" '
                 '404 397 "https://chaussettes.io/" "curl/7.88.1"',
                 "203.0.113.7", "alice", 404, 397, "https://chaussettes.io/", "curl/7.88.1"),
    "common": ('203.0.113.7 - alice [06/Dec/2026:21:38:15 +0100] "GET /socks?id=1 HTTP/1.1" '
               '404 397', "203.0.113.7", "alice", 404, 397, None, None),
    "vhost_combined": ('shop.example:443 203.0.113.7 - alice [06/Dec/2026:21:38:15 +0100] '
                       '"GET /socks?id=1 HTTP/1.1" 404 397 "https://chaussettes.io/" '
                       '"curl/7.88.1"',
                       "203.0.113.7", "alice", 404, 397, "https://chaussettes.io/", "curl/7.88.1"),
    # An IPv6 client in vhost_combined: the prefix ends at the first space, the address is whole.
    "vhost_combined, IPv6 client": (
        '127.0.0.1:80 2001:db8::1 - alice [06/Dec/2026:21:38:15 +0100] '
        '"GET /socks?id=1 HTTP/1.1" 404 397 "-" "-"', "2001:db8::1", "alice", 404, 397, None,
        None),
}


@pytest.mark.parametrize("name", FORMATS)
def test_each_format_gives_the_same_fields(spark, name):
    line, ip, user, status, size, referer, agent = FORMATS[name]
    row = access_log.parse_access_log(spark.createDataFrame([(line,)], "value string")).first()
    assert (row.ip, row.user, row.event_time, row.method, row.url, row.protocol, row.status,
            row.bytes, row.referer, row.user_agent, row.malformed) == (
        ip, user, datetime(2026, 12, 6, 20, 38, 15), "GET", "/socks?id=1", "HTTP/1.1", status,
        size, referer, agent, False)


@pytest.mark.parametrize("line", [
    # A vhost prefix and nothing after the client: not an access-log line.
    "shop.example:443 203.0.113.7",
    # Two prefixes: no format has that.
    'a:1 b:2 203.0.113.7 - - [06/Dec/2026:21:38:15 +0100] "GET / HTTP/1.1" 200 1 "-" "-"',
    # nginx's JSON logs, a format of another kind.
    '{"remote_addr":"203.0.113.7","status":200}',
])
def test_lines_of_no_format_are_malformed(spark, line):
    row = access_log.parse_access_log(spark.createDataFrame([(line,)], "value string")).first()
    assert row.malformed and row.ip is None and row.event_time is None
