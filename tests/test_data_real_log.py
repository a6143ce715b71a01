"""finale/data's real access log (secrepo.com, see finale/data/README.md) through the final stage's
parser: every line parses, and the figures the README states are the parser's, not a guess.

One aggregation over the whole fixture (a single Spark job, a few seconds): the counts below were
measured with finale/access_log.py and cross-checked with awk/grep on the uncompressed file.
"""
from datetime import datetime

from conftest import ROOT
from pyspark.sql import functions as F

from finale.analyzer import access_log

FIXTURE = ROOT / "finale" / "data" / "secrepo-2021-10-22-to-26.log.gz"


def test_the_real_log_fixture_parses_as_measured(spark):
    assert FIXTURE.stat().st_size < 2 * 1024 * 1024, "the fixture must stay small"
    parsed = access_log.parse_access_log(spark.read.text(str(FIXTURE)))
    error = F.col("status") >= 400
    figures = parsed.agg(
        F.count(F.lit(1)).alias("lines"),
        F.count_if("malformed").alias("malformed"),
        F.min("event_time").alias("first"),
        F.max("event_time").alias("last"),
        F.count_distinct("ip").alias("ips"),
        F.count_distinct("url").alias("urls"),
        F.count_if(error).alias("errors"),
        F.count_if(F.col("status") == 404).alias("not_found"),
        F.count_if(F.col("status") == 418).alias("teapot"),
        F.count_if(F.col("user_agent").isNull()).alias("no_user_agent"),
        F.count_if(F.col("referer").isNull()).alias("no_referer"),
        F.count_if(F.col("method") == "POST").alias("posts"),
    ).first().asDict()
    assert figures == {
        "lines": 5854,
        "malformed": 0,
        # [22/Oct/2021:02:28:56 -0700] .. [27/Oct/2021:02:33:03 -0700], in UTC.
        "first": datetime(2021, 10, 22, 9, 28, 56),
        "last": datetime(2021, 10, 27, 9, 33, 3),
        "ips": 578,
        "urls": 2809,
        "errors": 292,
        "not_found": 269,
        "teapot": 22,
        "no_user_agent": 18,
        "no_referer": 4686,
        "posts": 31,
    }
