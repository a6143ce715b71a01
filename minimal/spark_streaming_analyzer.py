"""Stage 1: read Apache access logs from a TCP socket with Spark Structured Streaming, show HTTP errors.

Two terminals: `python minimal/log_generator.py` (serves lines on localhost:9999), then
`python minimal/spark_streaming_analyzer.py`: prints the 4xx/5xx requests, one table per micro-batch.
"""
import argparse
import socket
import sys

from pyspark.sql import Column, DataFrame, SparkSession, functions as F

# Apache "combined" log format; the "common" format is the same without the last two fields:
#   %h %l %u [%t] "%r" %>s %b "%{Referer}i" "%{User-agent}i"
# Any line that does not match falls into the second alternative and yields empty groups,
# so one regexp_replace pass turns every line into FIELD_COUNT separated fields.
LOG_PATTERN = (
    r'^(\S+) (\S+) (\S+) \[([^\]]+)\] '          # %h %l %u [%t]
    r'"(?:(\S+) (\S+?)(?: (\S+))?|[^"]*)" '      # "%r": method url protocol (or "-")
    r'(\d{3}) (\d+|-)'                           # %>s %b
    # "%{Referer}i" "%{User-agent}i", with \" escapes; unrolled ([^"\\]* rather than (?:[^"\\]|\\.)*)
    # because Java's regex engine recurses once per repetition of a group: a 2,000-character user
    # agent overflowed the stack of the task thread.
    r'(?: "([^"\\]*(?:\\.[^"\\]*)*)" "([^"\\]*(?:\\.[^"\\]*)*)")?'
    r'\s*$|^.*$'
)
FIELDS = ["ip", "ident", "user", "time", "method", "url", "protocol",
          "status", "bytes", "referer", "user_agent"]
SEPARATOR = "\u0001"
TIME_FORMAT = "dd/MMM/yyyy:HH:mm:ss Z"


def parse_access_log(lines: DataFrame) -> DataFrame:
    fields = F.split(
        F.regexp_replace("value", LOG_PATTERN,
                         SEPARATOR.join(f"${i}" for i in range(1, len(FIELDS) + 1))),
        SEPARATOR)
    raw = {name: F.nullif(fields[i], F.lit("")) for i, name in enumerate(FIELDS)}
    event_time = F.try_to_timestamp(raw["time"], F.lit(TIME_FORMAT))
    ok = event_time.isNotNull()

    def keep(column: Column) -> Column:
        return F.when(ok, column)

    def dash_is_null(column: Column) -> Column:
        return F.nullif(column, F.lit("-"))

    return lines.select(
        "value",
        keep(raw["ip"]).alias("ip"),
        keep(dash_is_null(raw["ident"])).alias("ident"),
        keep(dash_is_null(raw["user"])).alias("user"),
        event_time.alias("event_time"),
        keep(raw["method"]).alias("method"),
        keep(raw["url"]).alias("url"),
        keep(raw["protocol"]).alias("protocol"),
        keep(raw["status"].cast("int")).alias("status"),
        keep(dash_is_null(raw["bytes"]).try_cast("long")).alias("bytes"),
        keep(dash_is_null(F.regexp_replace(raw["referer"], r'\\(.)', "$1"))).alias("referer"),
        keep(dash_is_null(F.regexp_replace(raw["user_agent"], r'\\(.)', "$1"))).alias("user_agent"),
        (~ok).alias("malformed"),
    )


def http_errors(logs: DataFrame) -> DataFrame:
    """The failed requests (status 4xx or 5xx) of parsed logs, with the fields worth reading."""
    return logs.where(F.col("status") >= 400).select("event_time", "ip", "method", "url", "status", "bytes")


def error_stream(spark: SparkSession, host: str, port: int) -> DataFrame:
    """The query wiring: socket lines -> parsed logs -> errors (the sink is the caller's choice)."""
    lines = spark.readStream.format("socket").option("host", host).option("port", port).load()
    return http_errors(parse_access_log(lines))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--host", default="localhost", help="host of the log generator")
    parser.add_argument("--port", type=int, default=9999, help="port of the log generator")
    args = parser.parse_args(argv)
    try:  # Spark would fail later with a long Java stack trace: check the port ourselves first.
        socket.create_connection((args.host, args.port), timeout=5).close()
    except OSError:
        print(f"no log generator is listening on {args.host}:{args.port}: "
              "start python minimal/log_generator.py first", file=sys.stderr)
        return 1
    spark = (SparkSession.builder.master("local[2]").appName("chaussettes-minimal")
             .config("spark.sql.shuffle.partitions", "2")
             .config("spark.sql.session.timeZone", "UTC").getOrCreate())
    spark.sparkContext.setLogLevel("WARN")
    query = error_stream(spark, args.host, args.port).writeStream.format("console").start()
    try:
        query.awaitTermination()
    except KeyboardInterrupt:  # Ctrl-C ends the demo: no traceback
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
