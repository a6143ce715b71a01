"""Spark batch job: learn the alert thresholds of the analyzer from past access logs.

It reads Apache access logs (combined or common format, real or generated; plain or .gz files,
globs allowed) or a time range of the Kafka topic `http-logs`, counts requests and errors per
sliding window and entity with the analyzer's own `alerting.entity_window_counts` (so a "window
error rate" means exactly what the analyzer compares), and derives for each scope

    T = min(1, max(P_q(rates), median(rates) + z * 1.4826 * MAD(rates), median(rates) + delta))

over the window error rates of: all windows (global), the population of all IPs, the population of
all URLs, and every IP and URL with at least --min-entity-windows eligible windows (the others use
their population's threshold). Only windows with at least --min-window-requests requests count.

Run:
    .venv/bin/python finale/threshold_job.py --input .state/finale/history.log
    .venv/bin/python finale/threshold_job.py --input 'logs/access.log*' --window '5 minutes' --slide '1 minute'
    .venv/bin/python finale/threshold_job.py --kafka --since 2026-11-28T08:00:00Z --until 2026-11-28T09:00:00Z

Output: a JSON file (default .state/finale/thresholds.json, written atomically so that the analyzer
never reads half a file) with `version` (hash of the content), `generated_at`, `parameters`,
`input` statistics and the `thresholds` list; one summary line on stdout. `--plot FILE.png` also
draws the window error-rate distribution of each scope with its thresholds.
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import importlib.util
import json
import os
import re
import sys
import tempfile
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession, Window, functions as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from access_log import parse_access_log  # noqa: E402
from alerting import entity_window_counts  # noqa: E402
from spark_streaming_analyzer import Settings as AnalyzerSettings  # noqa: E402
import spark_security  # noqa: E402

# Where the analyzer reads its thresholds by default (the repo's .state/, whatever the cwd).
DEFAULT_OUTPUT = AnalyzerSettings.thresholds_path
# The analyzer's windows, so that a learned rate is a rate of the windows the analyzer compares.
DEFAULT_WINDOW = AnalyzerSettings.window
DEFAULT_SLIDE = AnalyzerSettings.slide
# A window too small to alert (the analyzer's --min-requests) is too small to teach a threshold.
DEFAULT_MIN_WINDOW_REQUESTS = AnalyzerSettings.min_requests
# 30 windows = 5 minutes of history at the default 10-second slide.
DEFAULT_MIN_ENTITY_WINDOWS = 30
DEFAULT_QUANTILE = 0.995
DEFAULT_Z = 3.0
DEFAULT_DELTA = 0.05
DEFAULT_TOPIC = "http-logs"
DEFAULT_BOOTSTRAP = "localhost:9092"
# 1.4826 * MAD estimates the standard deviation of a normal distribution, so z reads as "sigmas".
MAD_TO_SIGMA = 1.4826
SCOPES = ("global", "ip", "url")
DURATION_PATTERN = re.compile(r"^\s*(\d+)\s*(second|minute|hour|day)s?\s*$", re.IGNORECASE)
UNIT_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}


@dataclass(frozen=True)
class ThresholdParams:
    """The knobs of robust_thresholds, written as is into the JSON's `parameters`."""
    window: str = DEFAULT_WINDOW
    slide: str = DEFAULT_SLIDE
    min_window_requests: int = DEFAULT_MIN_WINDOW_REQUESTS
    min_entity_windows: int = DEFAULT_MIN_ENTITY_WINDOWS
    quantile: float = DEFAULT_QUANTILE
    z: float = DEFAULT_Z
    delta: float = DEFAULT_DELTA


def window_error_rates(logs: DataFrame, window: str, slide: str) -> DataFrame:
    """The analyzer's per-window counts (window_start, window_end, entity_type, entity, requests,
    errors, error_rate) of parsed logs; malformed rows are left out by entity_window_counts."""
    return entity_window_counts(logs, window, slide)


def robust_thresholds(rates: DataFrame, params: ThresholdParams) -> DataFrame:
    """One threshold per scope population and per entity with enough history.

    `rates` has entity_type, entity, requests, error_rate (window_error_rates' output). Output:
    scope, entity (null = the population of the scope), value, windows, requests (support: the
    eligible windows and the sum of their requests; with sliding windows a request is counted in
    every window that holds it), and the three terms' ingredients median, mad, upper_quantile.
    """
    eligible = rates.where(F.col("requests") >= F.lit(int(params.min_window_requests)))
    # Each eligible window is a sample of its population (entity null) and, for ip/url, of its
    # own entity: a union, then one grouping computes every scope at once.
    samples = (
        eligible.select(F.col("entity_type").alias("scope"),
                        F.lit(None).cast("string").alias("entity"), "requests", "error_rate")
        .unionByName(
            eligible.where(F.col("entity_type") != "global")
            .select(F.col("entity_type").alias("scope"), "entity", "requests", "error_rate"))
    )
    group = Window.partitionBy("scope", "entity")
    # MAD needs the group's median before the second median: a window aggregate keeps it per row
    # (no self-join on a nullable key).
    with_median = samples.withColumn("median", F.median("error_rate").over(group))
    stats = (
        with_median
        .groupBy("scope", "entity")
        .agg(
            F.count(F.lit(1)).alias("windows"),
            F.sum("requests").cast("long").alias("requests"),
            F.first("median").alias("median"),
            F.median(F.abs(F.col("error_rate") - F.col("median"))).alias("mad"),
            F.percentile("error_rate", F.lit(float(params.quantile))).alias("upper_quantile"),
        )
        .where(F.col("entity").isNull() | (F.col("windows") >= F.lit(int(params.min_entity_windows))))
    )
    value = F.least(
        F.lit(1.0),
        F.greatest(
            F.col("upper_quantile"),
            F.col("median") + F.lit(float(params.z) * MAD_TO_SIGMA) * F.col("mad"),
            F.col("median") + F.lit(float(params.delta)),
        ),
    )
    return stats.select("scope", "entity", value.alias("value"), "windows", "requests",
                        "median", "mad", "upper_quantile")


def input_statistics(logs: DataFrame) -> dict:
    """lines, parsed, malformed, first_time, last_time (ISO 8601 UTC) of parsed logs, one pass."""
    iso = "yyyy-MM-dd'T'HH:mm:ss'Z'"
    row = logs.agg(
        F.count(F.lit(1)).alias("lines"),
        F.count(F.when(~F.col("malformed"), 1)).alias("parsed"),
        F.count(F.when(F.col("malformed"), 1)).alias("malformed"),
        F.date_format(F.min("event_time"), iso).alias("first_time"),
        F.date_format(F.max("event_time"), iso).alias("last_time"),
    ).first()
    return row.asDict()


def thresholds_document(params: ThresholdParams, statistics: dict, thresholds: DataFrame) -> dict:
    """The JSON document; `version` hashes everything but generated_at, so the same input and
    parameters give the same version and any change gives a new one."""
    order = {scope: rank for rank, scope in enumerate(SCOPES)}
    # The thresholds table is small (scopes + entities with history): the only collect of the job.
    rows = thresholds.select("scope", "entity", "value", "windows", "requests").collect()
    items = sorted(
        ({"scope": row["scope"], "entity": row["entity"], "value": round(float(row["value"]), 6),
          "windows": int(row["windows"]), "requests": int(row["requests"])} for row in rows),
        key=lambda item: (order.get(item["scope"], len(order)), item["entity"] is not None,
                          item["entity"] or ""),
    )
    content = {"parameters": asdict(params), "input": statistics, "thresholds": items}
    digest = hashlib.sha256(
        json.dumps(content, sort_keys=True, separators=(",", ":")).encode("utf-8")).hexdigest()
    return {
        "version": digest[:16],
        "generated_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        **content,
    }


def write_json_atomically(path: Path, document: dict) -> None:
    """Write to a temporary file in the same folder then rename: a reader sees the old or the new
    file, never a partial one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(document, out, indent=2)
            out.write("\n")
        # mkstemp creates the file 0600: give it the usual permissions (0666 minus the umask).
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def analysed_columns(logs: DataFrame) -> DataFrame:
    """The parsed columns the statistics and the window counts read: caching only these skips the
    referer/user-agent unescaping and keeps the cache small."""
    return logs.select("event_time", "ip", "url", "status", "malformed")


def learn_thresholds(lines: DataFrame, params: ThresholdParams) -> tuple[dict, DataFrame]:
    """Raw lines (column `value`) -> (thresholds document, eligible window rates for the plot)."""
    logs = analysed_columns(parse_access_log(lines)).cache()
    try:
        statistics = input_statistics(logs)
        rates = window_error_rates(logs, params.window, params.slide)
        document = thresholds_document(params, statistics, robust_thresholds(rates, params))
    finally:
        logs.unpersist()
    return document, rates


def plot_distributions(rates: DataFrame, document: dict, params: ThresholdParams, path: Path) -> None:
    """Histogram of the eligible window error rates per scope, population threshold as a red line,
    per-entity thresholds as grey ticks. Bins are counted by Spark: only ~150 rows come back."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bins = 50
    histogram = (
        rates.where(F.col("requests") >= F.lit(int(params.min_window_requests)))
        .groupBy("entity_type",
                 F.least(F.floor(F.col("error_rate") * bins), F.lit(bins - 1)).alias("bin"))
        .count()
        .collect()
    )
    figure, axes = plt.subplots(1, len(SCOPES), figsize=(5 * len(SCOPES), 4), squeeze=False)
    for axis, scope in zip(axes[0], SCOPES):
        counts = [0] * bins
        for row in histogram:
            if row["entity_type"] == scope:
                counts[int(row["bin"])] = int(row["count"])
        axis.bar([(b + 0.5) / bins for b in range(bins)], counts, width=1 / bins,
                 color="tab:blue", alpha=0.7, label="windows")
        for item in document["thresholds"]:
            if item["scope"] != scope:
                continue
            if item["entity"] is None:
                axis.axvline(item["value"], color="tab:red", linewidth=2,
                             label=f"population T = {item['value']:.3f}")
            else:
                axis.axvline(item["value"], ymax=0.08, color="grey", alpha=0.6, linewidth=1)
        axis.set_yscale("symlog")
        axis.set_xlim(0, 1)
        axis.set_title(f"{scope}: window error rates")
        axis.set_xlabel(f"error rate per {params.window} window (slide {params.slide})")
        axis.set_ylabel("windows")
        axis.legend(loc="upper right", fontsize="small")
    figure.suptitle(f"thresholds {document['version']} (grey ticks: per-entity thresholds)")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=80)
    plt.close(figure)


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line (`prog: error: ...`) and exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def duration_seconds(text: str) -> int:
    match = DURATION_PATTERN.match(text)
    if not match or int(match.group(1)) == 0:
        raise ValueError(text)
    return int(match.group(1)) * UNIT_SECONDS[match.group(2).lower()]


def iso_time(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def bounded(kind, low, high, low_open=False, high_open=False, name="value"):
    def convert(text: str):
        try:
            number = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number, got {text!r}") from None
        too_low = number <= low if low_open else number < low
        too_high = high is not None and (number >= high if high_open else number > high)
        if too_low or too_high:
            left = "(" if low_open else "["
            right = ")" if high_open else "]"
            raise argparse.ArgumentTypeError(
                f"{name} must be in {left}{low}, {'inf' if high is None else high}{right}, got {text}")
        return number
    return convert


def add_threshold_options(parser: argparse.ArgumentParser) -> None:
    """The parameters of the thresholds (shared with evaluate.py, which learns them the same way)."""
    parser.add_argument("--min-window-requests", type=bounded(int, 1, None, name="--min-window-requests"),
                        default=DEFAULT_MIN_WINDOW_REQUESTS,
                        help="a window counts only with at least N requests of its entity")
    parser.add_argument("--min-entity-windows", type=bounded(int, 1, None, name="--min-entity-windows"),
                        default=DEFAULT_MIN_ENTITY_WINDOWS,
                        help="an IP/URL gets its own threshold only with at least W eligible windows, "
                             "else its population's applies")
    parser.add_argument("--quantile", type=bounded(float, 0, 1, low_open=True, name="--quantile"),
                        default=DEFAULT_QUANTILE, help="upper quantile term P_q of the window error rates")
    parser.add_argument("--z", type=bounded(float, 0, None, name="--z"), default=DEFAULT_Z,
                        help="robust term median + z * 1.4826 * MAD (z in standard deviations)")
    parser.add_argument("--delta", type=bounded(float, 0, 1, name="--delta"), default=DEFAULT_DELTA,
                        help="minimum margin above the median: median + delta")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="threshold_job.py",
        description="Learn the analyzer's alert thresholds from past access logs (Spark batch).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", nargs="+", metavar="PATH",
                        help="access-log files (combined or common format, .gz ok, globs ok)")
    source.add_argument("--kafka", action="store_true",
                        help="read the Kafka topic instead (time range: --since/--until)")
    parser.add_argument("--bootstrap-servers", default=DEFAULT_BOOTSTRAP,
                        help="Kafka bootstrap servers (with --kafka)")
    parser.add_argument("--topic", default=DEFAULT_TOPIC, help="Kafka topic of the logs (with --kafka)")
    parser.add_argument("--since", type=iso_time, default=None,
                        help="with --kafka: first record by Kafka timestamp, ISO 8601 (None = the earliest)")
    parser.add_argument("--until", type=iso_time, default=None,
                        help="with --kafka: records before this Kafka timestamp, ISO 8601 (None = the latest)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT,
                        help="thresholds JSON to write (the analyzer's default --thresholds)")
    parser.add_argument("--window", default=DEFAULT_WINDOW,
                        help="window length, as the analyzer's --window ('N seconds|minutes|hours')")
    parser.add_argument("--slide", default=DEFAULT_SLIDE,
                        help="window slide, as the analyzer's --slide (<= window)")
    add_threshold_options(parser)
    parser.add_argument("--plot", type=Path, default=None, metavar="FILE.png",
                        help="also draw the error-rate distributions per scope with the thresholds")
    parser.add_argument("--master", default="local[2]", help="Spark master")
    spark_security.add_security_options(parser)
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        window, slide = duration_seconds(args.window), duration_seconds(args.slide)
    except ValueError as error:
        parser.error(f"bad duration {error.args[0]!r} (expected e.g. '1 minute', '10 seconds')")
    if slide > window:
        parser.error(f"--slide {args.slide!r} is longer than --window {args.window!r}")
    if not args.kafka and (args.since or args.until):
        parser.error("--since/--until select a Kafka time range: use them with --kafka")
    if args.since and args.until and args.since >= args.until:
        parser.error("--since must be before --until")
    if args.input:
        for path in args.input:
            if "://" not in path and not glob.glob(path):
                parser.error(f"--input {path}: no such file")
    if args.plot is not None and args.plot.suffix.lower() != ".png":
        parser.error(f"--plot {args.plot}: the file name must end in .png")
    if args.plot is not None and importlib.util.find_spec("matplotlib") is None:
        # Not a runtime dependency (the Docker image has none): checked before a long Spark job.
        parser.error("--plot needs matplotlib: pip install -r requirements-dev.txt")
    return args


def read_lines(spark: SparkSession, args: argparse.Namespace) -> DataFrame:
    """The raw lines as a DataFrame with one string column `value`."""
    if not args.kafka:
        return spark.read.text(args.input)
    reader = (
        spark.read.format("kafka")
        .option("kafka.bootstrap.servers", args.bootstrap_servers)
        .option("subscribe", args.topic)
        # No record at or after --since in a partition: start that partition at its end.
        .option("startingOffsetsByTimestampStrategy", "latest")
    )
    if args.since:
        reader = reader.option("startingTimestamp", str(int(args.since.timestamp() * 1000)))
    if args.until:
        reader = reader.option("endingTimestamp", str(int(args.until.timestamp() * 1000)))
    return reader.load().select(F.col("value").cast("string").alias("value"))


def build_session(master: str, kafka: bool = False, app_name: str = "chaussettes-threshold-job",
                  security: dict[str, str] | None = None) -> tuple[SparkSession, bool]:
    """(session, created): an active session (tests, evaluate.py) is reused and left running.
    `security`: spark_security.properties_from_args, handed to the JVM in a file."""
    active = SparkSession.getActiveSession()
    if active is not None:
        return active, False
    builder = (
        SparkSession.builder.master(master)
        .appName(app_name)
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.driver.extraJavaOptions", "-Duser.timezone=UTC")
    )
    if kafka:
        from local_kafka import ensure_connector  # exits with one line naming the fix if missing
        builder = builder.config("spark.jars", ",".join(ensure_connector()))
    session = spark_security.get_or_create(builder, security)
    session.sparkContext.setLogLevel("WARN")
    return session, True


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    params = ThresholdParams(window=args.window, slide=args.slide,
                             min_window_requests=args.min_window_requests,
                             min_entity_windows=args.min_entity_windows,
                             quantile=args.quantile, z=args.z, delta=args.delta)
    spark = created = None
    try:
        spark, created = build_session(args.master, args.kafka,
                                       security=spark_security.properties_from_args(args))
        document, rates = learn_thresholds(read_lines(spark, args), params)
        write_json_atomically(args.output, document)
        if args.plot is not None:
            plot_distributions(rates, document, params, args.plot)
        stats = document["input"]
        print(f"thresholds {document['version']}: {len(document['thresholds'])} thresholds from "
              f"{stats['parsed']} parsed lines ({stats['malformed']} malformed, "
              f"{stats['first_time']} .. {stats['last_time']}) -> {args.output}", flush=True)
        return 0
    except KeyboardInterrupt:
        print("threshold_job.py: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # stdout closed early (e.g. `| head`): not an error of the job.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except Exception as error:  # one line for runtime failures (Spark, Kafka, disk), no traceback
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        print(f"threshold_job.py: error: {first_line}", file=sys.stderr)
        return 1
    finally:
        if created and spark is not None:
            spark.stop()


if __name__ == "__main__":
    sys.exit(main())
