"""Stage 1: read Apache access logs from a TCP socket with Spark Structured Streaming, show errors.
Run `python minimal/log_generator.py` (serves localhost:9999), then this script in a second
terminal: it prints the failed (4xx/5xx) requests, one table per micro-batch. Ctrl-C stops it."""
import argparse
import signal
import socket
import sys
import time

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

# Apache "combined" log format; the "common" format is the same without the last two fields:
#   %h %l %u [%t] "%r" %>s %b "%{Referer}i" "%{User-agent}i"
# A line that does not match takes the `^.*$` branch: empty groups, so one pass makes 11 fields.
LOG_PATTERN = (
    # No \x01 (SEPARATOR) anywhere: one inside a field would shift the fields after it.
    r'^(?![^\x01]*+\x01)(\S+) (\S+) (\S+) \[([^\]]+)\] '  # %h %l %u [%t]
    r'"(?:(\S+) (\S+?)(?: (\S+))?|[^"]*)" '      # "%r": method url protocol (or "-")
    r'(\d{3}) (\d+|-)'                           # %>s %b
    # "%{Referer}i" "%{User-agent}i", unrolled: (?:[^"\\]|\\.)* overflows Java's stack on long ones
    r'(?: "([^"\\]*(?:\\.[^"\\]*)*)" "([^"\\]*(?:\\.[^"\\]*)*)")?'
    r'\s*$|(?s:^.*$)'  # (?s): a line break inside a line is replaced too
)
FIELDS = ["ip", "ident", "user", "time", "method", "url", "protocol",
          "status", "bytes", "referer", "user_agent"]
SEPARATOR = "\u0001"
TIME_FORMAT = "dd/MMM/yyyy:HH:mm:ss Z"


def parse_access_log(lines: DataFrame) -> DataFrame:
    # Three projections: in one, Spark would re-run the regex for every field (bench/RESULTS.md).
    fields = F.split(F.regexp_replace("value", LOG_PATTERN, SEPARATOR.join(
        f"${i}" for i in range(1, len(FIELDS) + 1))), SEPARATOR)
    raw = {name: F.nullif(F.get("fields", i), F.lit("")) for i, name in enumerate(FIELDS)}
    timed = (lines.select("value", fields.alias("fields")).select(
        "value", "fields", F.try_to_timestamp(raw["time"], F.lit(TIME_FORMAT)).alias("event_time")))
    ok = F.col("event_time").isNotNull()

    def keep(column: Column) -> Column:
        return F.when(ok, column)

    def dash_is_null(column: Column) -> Column:
        return F.nullif(column, F.lit("-"))

    return timed.select(
        "value",
        keep(raw["ip"]).alias("ip"),
        keep(dash_is_null(raw["ident"])).alias("ident"),
        keep(dash_is_null(raw["user"])).alias("user"),
        "event_time",
        keep(raw["method"]).alias("method"),
        keep(raw["url"]).alias("url"),
        keep(raw["protocol"]).alias("protocol"),
        keep(raw["status"].try_cast("int")).alias("status"),
        keep(dash_is_null(raw["bytes"]).try_cast("long")).alias("bytes"),
        keep(dash_is_null(F.regexp_replace(raw["referer"], r'\\(.)', "$1"))).alias("referer"),
        keep(dash_is_null(F.regexp_replace(raw["user_agent"], r'\\(.)', "$1"))).alias("user_agent"),
        (~ok).alias("malformed"),
    )


def http_errors(logs: DataFrame) -> DataFrame:
    """The failed requests (status 4xx or 5xx) of parsed logs, with the fields worth reading."""
    return (logs.where(F.col("status") >= 400)
            .select("event_time", "ip", "method", "url", "status", "bytes"))


def error_stream(spark: SparkSession, host: str, port: int) -> DataFrame:  # the wiring, sink apart
    lines = spark.readStream.format("socket").option("host", host).option("port", port).load()
    return http_errors(parse_access_log(lines))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--host", default="localhost", help="host of the log generator")
    parser.add_argument("--port", type=int, default=9999, help="port of the log generator")
    args = parser.parse_args(argv)
    try:  # Spark would fail later with a long Java stack trace: check the port first.
        socket.create_connection((args.host, args.port), timeout=5).close()
    except OSError:
        print(f"no log generator is listening on {args.host}:{args.port}: "
              "start python minimal/log_generator.py first", file=sys.stderr)
        return 1
    spark = (SparkSession.builder.master("local[2]").appName("chaussettes-minimal")
             .config("spark.sql.shuffle.partitions", "2")
             .config("spark.sql.session.timeZone", "UTC").getOrCreate())
    query = error_stream(spark, args.host, args.port).writeStream.format("console").start()
    signal.signal(signal.SIGINT, signal.default_int_handler)  # pyspark's own calls the JVM mid-call
    try:
        while query.isActive:
            time.sleep(0.5)
    except KeyboardInterrupt:
        query.stop()
        return 0
    print(f"the query stopped: {query.exception()}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
