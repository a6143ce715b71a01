"""finale/analyzer/access_log.parse_time: its arithmetic fast path gives exactly
try_to_timestamp's answer.

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
