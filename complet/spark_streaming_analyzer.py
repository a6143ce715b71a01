"""Stage 2: windowed metrics of access logs read from a TCP socket with Spark Structured Streaming.

Two terminals: `python complet/log_generator.py` (serves lines on localhost:9999), then
`python complet/spark_streaming_analyzer.py [--window "30 seconds"] [--slide "10 seconds"]
[--secure]`.

Event time is the log's own timestamp. Once the watermark has passed the end of a sliding window,
that window is printed once, final: requests, errors, error rate, errors by status, and the top N
IPs and URLs by errors with their error rates. A second query counts the malformed lines (printed
per batch and since start); they never stop the job. With --secure the Spark security settings of
conf/spark-defaults.conf are applied (authentication, RPC and local-disk encryption).
"""
import argparse
import contextlib
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import sys
import tempfile
import threading
from datetime import datetime
from pathlib import Path

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

ROOT = Path(__file__).resolve().parent.parent
SECURITY_CONF = ROOT / "conf" / "spark-defaults.conf"
SECRET_ENV = "SPARK_AUTHENTICATE_SECRET"
SECRET_FILE = ROOT / ".secrets" / "spark-authenticate.secret"
LOCAL_MASTER = re.compile(r"^local(\[[^\]]*\])?$")
SECURITY_KEYS = ("spark.authenticate", "spark.network.crypto.enabled",
                 "spark.io.encryption.enabled")

# Apache "combined" log format; the "common" format is the same without the last two fields:
#   %h %l %u [%t] "%r" %>s %b "%{Referer}i" "%{User-agent}i"
# Any line that does not match falls into the second alternative and yields empty groups,
# so one regexp_replace pass turns every line into FIELD_COUNT separated fields.
LOG_PATTERN = (
    # No \x01 (SEPARATOR) anywhere: one inside a field would shift the fields after it.
    r'^(?![^\x01]*+\x01)(\S+) (\S+) (\S+) \[([^\]]+)\] '  # %h %l %u [%t]
    r'"(?:(\S+) (\S+?)(?: (\S+))?|[^"]*)" '      # "%r": method url protocol (or "-")
    r'(\d{3}) (\d+|-)'                           # %>s %b
    # "%{Referer}i" "%{User-agent}i", with \" escapes; unrolled ([^"\\]* rather than
    # (?:[^"\\]|\\.)*) because Java's regex engine recurses once per repetition of a group: a
    # 2,000-character user agent overflowed the stack of the task thread.
    r'(?: "([^"\\]*(?:\\.[^"\\]*)*)" "([^"\\]*(?:\\.[^"\\]*)*)")?'
    r'\s*$|(?s:^.*$)'  # (?s): a line break inside a line is replaced too
)
FIELDS = ["ip", "ident", "user", "time", "method", "url", "protocol",
          "status", "bytes", "referer", "user_agent"]
SEPARATOR = "\u0001"
TIME_FORMAT = "dd/MMM/yyyy:HH:mm:ss Z"


def parse_access_log(lines: DataFrame) -> DataFrame:
    # Three projections, not one: in a single one Spark re-runs the regex for every field (a shared
    # expression under CASE WHEN is not reused: bench/RESULTS.md); it never merges them back.
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


# ---------------------------------------------------------------- analyses (DataFrame -> DataFrame)

def _errors(column: str = "status") -> Column:
    """1 for a failed request (4xx/5xx), else 0: summed, it counts errors."""
    return F.when(F.col(column) >= 400, 1).otherwise(0)


def window_counts(logs: DataFrame, window: str, slide: str, watermark: str) -> DataFrame:
    """Requests per sliding event-time window and (ip, url, status): the only stateful step.

    The watermark bounds the state and, in append mode, makes each window come out once, when final.
    Columns: window_start, window_end, ip, url, status, requests.
    """
    return (logs
            .where(~F.col("malformed"))
            .withWatermark("event_time", watermark)
            .groupBy(F.window("event_time", window, slide).alias("window"), "ip", "url", "status")
            .agg(F.count(F.lit(1)).alias("requests"))
            .select(F.col("window.start").alias("window_start"),
                    F.col("window.end").alias("window_end"), "ip", "url", "status", "requests"))


def window_summary(counts: DataFrame) -> DataFrame:
    """Per window: requests, errors, error_rate (errors / requests)."""
    return (counts
            .groupBy("window_start", "window_end")
            .agg(F.sum("requests").alias("requests"),
                 F.sum(F.col("requests") * _errors()).alias("errors"))
            .withColumn("error_rate", F.col("errors") / F.col("requests")))


def errors_by_status(counts: DataFrame) -> DataFrame:
    """Per window and failing status: errors."""
    return (counts
            .where(F.col("status") >= 400)
            .groupBy("window_start", "window_end", "status")
            .agg(F.sum("requests").alias("errors")))


def top_offenders(counts: DataFrame, key: str, n: int) -> DataFrame:
    """Per window, the n values of `key` (ip or url) with the most errors, among those with errors.

    Ties: more errors first, then the higher error rate, then `key` in ascending order, so the
    ranking is deterministic. Columns: window_start, window_end, rank, <key>, errors, requests,
    error_rate.
    """
    ranking = Window.partitionBy("window_start", "window_end").orderBy(
        F.col("errors").desc(), F.col("error_rate").desc(), F.col(key).asc())
    return (counts
            .groupBy("window_start", "window_end", key)
            .agg(F.sum(F.col("requests") * _errors()).alias("errors"),
                 F.sum("requests").alias("requests"))
            .where(F.col("errors") > 0)
            .withColumn("error_rate", F.col("errors") / F.col("requests"))
            .withColumn("rank", F.row_number().over(ranking))
            .where(F.col("rank") <= n)
            .select("window_start", "window_end", "rank", key, "errors", "requests", "error_rate"))


def malformed_count(logs: DataFrame) -> DataFrame:
    """One row: lines and malformed lines among the parsed logs."""
    return logs.agg(F.count(F.lit(1)).alias("lines"),
                    F.coalesce(F.sum(F.col("malformed").cast("long")), F.lit(0)).alias("malformed"))


# ------------------------------------------------------------ report (plain Python, deterministic)

def format_window_report(window_start: datetime, window_end: datetime, requests: int, errors: int,
                         status_errors: list[tuple[int, int]], top_ips: list[tuple[str, int, int]],
                         top_urls: list[tuple[str, int, int]], n: int) -> str:
    """The text block of one window. status_errors: (status, errors) sorted by status;
    top_*: (value, errors, requests) in rank order."""
    def rate(part: int, whole: int) -> str:
        return f"{100 * part / whole:.2f} %"

    def ranking(title: str, rows: list[tuple[str, int, int]]) -> list[str]:
        lines = [f"  top {n} {title} by errors:" + ("" if rows else " none")]
        lines += [f"    {rank}. {value}  {errs} of {reqs} requests failed ({rate(errs, reqs)})"
                  for rank, (value, errs, reqs) in enumerate(rows, 1)]
        return lines

    statuses = ", ".join(f"{status}: {count}" for status, count in status_errors) or "none"
    lines = [f"window {window_start:%Y-%m-%d %H:%M:%S} -> {window_end:%H:%M:%S} UTC",
             f"  requests {requests}, errors {errors}, error rate {rate(errors, requests)}",
             f"  errors by status: {statuses}"]
    lines += ranking("IPs", top_ips) + ranking("URLs", top_urls)
    return "\n".join(lines) + "\n"


def window_reports(counts: DataFrame, n: int) -> list[str]:
    """The report of every window in `counts` (finalized windows), in window order."""
    def by_window(rows, value):
        grouped = {}
        for row in rows:
            grouped.setdefault((row.window_start, row.window_end), []).append(value(row))
        return grouped

    statuses = by_window(errors_by_status(counts).orderBy("status").collect(),
                         lambda row: (row.status, row.errors))
    ips = by_window(top_offenders(counts, "ip", n).orderBy("rank").collect(),
                    lambda row: (row.ip, row.errors, row.requests))
    urls = by_window(top_offenders(counts, "url", n).orderBy("rank").collect(),
                     lambda row: (row.url, row.errors, row.requests))
    reports = []
    for summary in window_summary(counts).orderBy("window_start").collect():
        key = (summary.window_start, summary.window_end)
        reports.append(format_window_report(*key, summary.requests, summary.errors,
                                            statuses.get(key, []), ips.get(key, []),
                                            urls.get(key, []), n))
    return reports


# ---------------------------------------------------------------- security

def read_spark_conf(path: Path) -> dict[str, str]:
    """Key/value pairs of a spark-defaults.conf file (blank lines and # comments skipped)."""
    settings = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, value = re.split(r"\s+", line, maxsplit=1)
            settings[key] = value
    return settings


def security_settings(conf_file: Path, secret_file: Path,
                      environ=os.environ) -> tuple[dict[str, str], str]:
    """The settings of conf_file plus spark.authenticate.secret, and where the secret came from.

    The secret is never in git: it comes from $SPARK_AUTHENTICATE_SECRET, or else from secret_file
    (git-ignored), generated the first time exactly as `make secret` does: 64 hex digits, the
    folder 0700 (no other user of the machine reaches the file), the file 0644 (so the non-root
    containers of finale's docker compose can read it once bind-mounted). Spark only reads
    spark.authenticate.secret.file on Kubernetes, so the file's content is passed as the secret.
    """
    settings = read_spark_conf(conf_file)
    if environ.get(SECRET_ENV):
        settings["spark.authenticate.secret"] = environ[SECRET_ENV]
        return settings, f"${SECRET_ENV}"
    if not secret_file.exists():
        secret_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        secret_file.parent.chmod(0o700)
        descriptor = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.fchmod(descriptor, 0o644)  # whatever the umask
        with os.fdopen(descriptor, "w") as out:
            out.write(secrets.token_hex(32))
    settings["spark.authenticate.secret"] = secret_file.read_text().strip()
    return settings, str(secret_file)


# ---------------------------------------------------------------- wiring

DURATION = re.compile(r"^(\d+) (second|minute|hour)s?$")


def duration(text: str) -> str:
    """argparse type for a Spark interval such as "30 seconds"; returns it unchanged."""
    match = DURATION.match(text.strip())
    if not match or int(match[1]) == 0:
        raise argparse.ArgumentTypeError(
            f'{text!r} is not a duration like "30 seconds" or "1 minute"')
    return text.strip()


def seconds(text: str) -> int:
    amount, unit = DURATION.match(text).groups()
    return int(amount) * {"second": 1, "minute": 60, "hour": 3600}[unit]


def positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer >= 1")
    return int(text)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--host", default="localhost", help="host of the log generator")
    parser.add_argument("--port", type=int, default=9999, help="port of the log generator")
    parser.add_argument("--window", type=duration, default="30 seconds",
                        help="length of the windows")
    parser.add_argument("--slide", type=duration, default="10 seconds",
                        help="a window starts every SLIDE; also the trigger interval of the "
                             "queries")
    parser.add_argument("--watermark", type=duration, default="10 seconds",
                        help="how late a line may arrive (in event time) and still be counted")
    parser.add_argument("--top", type=positive_int, default=3, help="how many IPs and URLs to rank")
    parser.add_argument("--checkpoint", type=Path,
                        default=ROOT / ".state" / "complet" / "checkpoints",
                        help="checkpoint folder (one subfolder per query), started afresh at "
                             "each run")
    parser.add_argument("--secure", action="store_true",
                        help=f"apply {SECURITY_CONF.relative_to(ROOT)}; secret from ${SECRET_ENV} "
                             f"or {SECRET_FILE.relative_to(ROOT)}")
    parser.add_argument("--master", default="local[2]", help="Spark master URL")
    args = parser.parse_args(argv)
    if not 1 <= args.port <= 65535:
        parser.error(f"--port must be in 1..65535, got {args.port}")
    if seconds(args.slide) > seconds(args.window):
        parser.error(f"--slide ({args.slide}) must not be longer than --window ({args.window})")
    return args


class Console:
    """Prints whole blocks under a lock (the two queries report from their own threads); once closed
    (Ctrl-C, kill, stdout gone) it prints nothing more and the analyzer stops."""

    def __init__(self):
        self.lock = threading.Lock()
        self.closed = threading.Event()

    def print(self, text: str):
        with self.lock:
            if self.closed.is_set():
                return
            try:
                sys.stdout.write(text)
                sys.stdout.flush()
            except BrokenPipeError:  # e.g. piped into head: stop quietly, as json.tool does
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                self.closed.set()


@contextlib.contextmanager
def submitted_with(settings: dict[str, str]):
    """Inside the block, the JVM that pyspark launches reads `settings` from a properties file.

    builder.config() values reach spark-submit as `--conf key=value` on its command line, which
    `ps` shows to every user: the secret goes in a 0600 file instead (in /dev/shm when writable,
    so not on disk), passed by path and removed once the JVM has read it.
    """
    shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    handle, path = tempfile.mkstemp(prefix="spark-security-", suffix=".properties", dir=shm)
    previous = os.environ.get("PYSPARK_SUBMIT_ARGS")
    try:
        with os.fdopen(handle, "w") as out:
            out.writelines(f"{key}={value}\n" for key, value in settings.items())
        os.environ["PYSPARK_SUBMIT_ARGS"] = f"--properties-file {shlex.quote(path)} " + (
            previous or "pyspark-shell")
        yield
    finally:
        os.unlink(path)
        if previous is None:
            os.environ.pop("PYSPARK_SUBMIT_ARGS", None)
        else:
            os.environ["PYSPARK_SUBMIT_ARGS"] = previous


def build_session(args) -> tuple[SparkSession, str]:
    builder = (SparkSession.builder.master(args.master).appName("chaussettes-complet")
               .config("spark.sql.shuffle.partitions", "2")
               .config("spark.sql.session.timeZone", "UTC")
               .config("spark.ui.showConsoleProgress", "false"))
    if LOCAL_MASTER.match(args.master):
        # In-process Spark: its UI and driver ports listen on 127.0.0.1 only (the UI binds to
        # SPARK_LOCAL_IP, all interfaces without it). A SPARK_LOCAL_IP of the user's wins.
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        builder = (builder.config("spark.driver.host", os.environ["SPARK_LOCAL_IP"])
                   .config("spark.driver.bindAddress", os.environ["SPARK_LOCAL_IP"]))
    settings, secret_source = {}, ""
    if args.secure:
        settings, secret_source = security_settings(SECURITY_CONF, SECRET_FILE)
    with submitted_with(settings) if settings else contextlib.nullcontext():
        spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark, secret_source


def security_banner(spark: SparkSession, secret_source: str) -> str:
    """What the running Spark really has (read back from its conf), for the operator and the
    tests."""
    conf = spark.sparkContext.getConf()
    state = " ".join(f"{key}={conf.get(key, 'false')}" for key in SECURITY_KEYS)
    source = f" (secret from {secret_source})" if secret_source else ""
    return f"spark security: {state}{source}\n"


@contextlib.contextmanager
def stopping_quietly(console: Console):
    """Inside foreachBatch: a job cancelled because we are stopping is not an error. Raised back
    into the JVM, its long Py4J message makes Spark's own stop check overflow its stack."""
    try:
        yield
    except Exception:
        if not console.closed.is_set():
            raise


def catch_stop_signals(console: Console):
    """Ctrl-C and kill (demo.sh) only close the console, and the main loop then stops the queries:
    an exception raised in the middle of a py4j call would break the connection to the JVM."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: console.closed.set())


def main(argv=None) -> int:
    args = parse_args(argv)
    try:  # Spark would fail later with a long Java stack trace: check the port ourselves first.
        socket.create_connection((args.host, args.port), timeout=5).close()
    except OSError:
        print(f"no log generator is listening on {args.host}:{args.port}: "
              "start python complet/log_generator.py first", file=sys.stderr)
        return 1
    console = Console()
    catch_stop_signals(console)
    spark, queries = None, []
    try:
        try:
            spark, secret_source = build_session(args)
        except Exception as error:  # Spark has already logged the details
            print(f"Spark could not start: {str(error).strip().splitlines()[-1]}", file=sys.stderr)
            return 1
        catch_stop_signals(console)  # again: SparkContext installs its own SIGINT handler
        console.print(security_banner(spark, secret_source))
        # The socket source cannot replay old offsets, so a checkpoint of an earlier run cannot be
        # resumed: each query starts from a fresh folder of its own.
        for name in ("windows", "malformed"):
            shutil.rmtree(args.checkpoint / name, ignore_errors=True)
        lines = (spark.readStream.format("socket")
                 .option("host", args.host).option("port", args.port).load())
        logs = parse_access_log(lines)
        totals = {"lines": 0, "malformed": 0}

        # Spark cannot rank (row_number) inside a streaming aggregation, so the stream only counts
        # per window and (ip, url, status); the finalized windows of each batch are ranked here,
        # statically.
        def report_windows(counts: DataFrame, batch_id: int):
            with stopping_quietly(console):
                counts.persist()
                try:
                    reports = window_reports(counts, args.top)
                finally:
                    counts.unpersist()
                for report in reports:
                    console.print(report)

        def report_malformed(batch: DataFrame, batch_id: int):
            with stopping_quietly(console):
                row = malformed_count(batch).first()
                if row.lines:
                    totals["lines"] += row.lines
                    totals["malformed"] += row.malformed
                    console.print(f"malformed lines: {row.malformed} of {row.lines} in this batch, "
                                  f"{totals['malformed']} of {totals['lines']} since start\n")

        queries.append(window_counts(logs, args.window, args.slide, args.watermark)
                       .writeStream.outputMode("append").foreachBatch(report_windows)
                       .option("checkpointLocation", str(args.checkpoint / "windows"))
                       .trigger(processingTime=args.slide).queryName("windows").start())
        queries.append(logs
                       .writeStream.foreachBatch(report_malformed)
                       .option("checkpointLocation", str(args.checkpoint / "malformed"))
                       .trigger(processingTime=args.slide).queryName("malformed").start())
        while all(query.isActive for query in queries) and not console.closed.wait(0.5):
            pass
        failed = [query for query in queries if query.exception()]
        if failed:
            print(f"query {failed[0].name} failed: {str(failed[0].exception()).splitlines()[0]}",
                  file=sys.stderr)
            return 1
    finally:
        console.closed.set()
        for query in queries:
            query.stop()
        if spark is not None:
            spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
