"""Spark batch job: learn the alert thresholds of the analyzer from past access logs.

It reads Apache access logs (combined or common format, real or generated; plain or .gz files,
globs allowed) or a time range of the Kafka topic `http-logs`, counts requests and errors per
sliding window and entity with the analyzer's own `metrics.entity_window_counts` (so a "window
error rate" means exactly what the analyzer compares), and learns the thresholds of every
registered rule (rules.RULES; `surge` learns request counts the same way, see
finale/analyzer/rules/surge.py; `error_rate` derives for each scope

    T = min(1, max(P_q(rates), median(rates) + z * 1.4826 * MAD(rates), median(rates) + delta))

over the window error rates of: all windows (global), the population of all IPs, the population of
all URLs, and every IP and URL with at least --min-entity-windows eligible windows (the others use
their population's threshold). Only windows with at least --min-window-requests requests count).

Run:
    .venv/bin/python finale/threshold_job.py --input .state/finale/history.log
    .venv/bin/python finale/threshold_job.py --input 'logs/access.log*' \
        --window '5 minutes' --slide '1 minute'
    .venv/bin/python finale/threshold_job.py --kafka \
        --since 2026-11-28T08:00:00Z --until 2026-11-28T09:00:00Z

Output: a JSON file (default .state/finale/thresholds.json, written atomically so that the analyzer
never reads half a file) with `version` (hash of the content), `generated_at`, `parameters`,
`input` statistics and the `thresholds` list; one summary line on stdout. `--plot FILE.png` also
draws the window error-rate distribution of each scope with its thresholds.
"""
from __future__ import annotations

import argparse
import glob
import importlib.util
import sys
from datetime import datetime, timezone
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from finale.analyzer.access_log import parse_access_log
from finale.analyzer.metrics import (
    SCOPE_NAMES,
    analysed_columns,
    entity_window_counts,
    input_statistics,
)
from finale.analyzer.rules import learn_all
from finale.analyzer.settings import DEFAULT_THRESHOLDS, DEFAULT_TOPIC, ThresholdParams
from finale.analyzer.thresholds import ThresholdsError, thresholds_document, validate_thresholds
from finale.common import spark_security
from finale.common.cli import (
    BOOTSTRAP_HELP,
    DEFAULT_BOOTSTRAP,
    OneLineErrorParser,
    duration_seconds,
    run_main,
    write_json_atomically,
)
from finale.common.spark import spark_session


def learn_thresholds(lines: DataFrame, params: ThresholdParams) -> tuple[dict, DataFrame]:
    """Raw lines (column `value`) -> (thresholds document, eligible window rates for the plot)."""
    logs = analysed_columns(parse_access_log(lines)).cache()
    try:
        statistics = input_statistics(logs)
        rates = entity_window_counts(logs, params.window, params.slide)
        document = thresholds_document(params, statistics, learn_all(rates, params))
    finally:
        logs.unpersist()
    return document, rates


def plot_distributions(rates: DataFrame, document: dict, params: ThresholdParams,
                       path: Path) -> None:
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
    figure, axes = plt.subplots(1, len(SCOPE_NAMES), figsize=(5 * len(SCOPE_NAMES), 4),
                                squeeze=False)
    for axis, scope in zip(axes[0], SCOPE_NAMES, strict=True):
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
                f"{name} must be in {left}{low}, {'inf' if high is None else high}{right}, "
                f"got {text}")
        return number
    return convert


def add_threshold_options(parser: argparse.ArgumentParser) -> None:
    """The parameters of the thresholds (shared with evaluate.py, which learns them the same
    way)."""
    parser.add_argument("--min-window-requests",
                        type=bounded(int, 1, None, name="--min-window-requests"),
                        default=ThresholdParams.min_window_requests,
                        help="a window counts only with at least N requests of its entity")
    parser.add_argument("--min-entity-windows",
                        type=bounded(int, 1, None, name="--min-entity-windows"),
                        default=ThresholdParams.min_entity_windows,
                        help="an IP/URL gets its own threshold only with at least W eligible "
                             "windows, else its population's applies")
    parser.add_argument("--quantile", type=bounded(float, 0, 1, low_open=True, name="--quantile"),
                        default=ThresholdParams.quantile,
                        help="upper quantile term P_q of the window error rates")
    parser.add_argument("--z", type=bounded(float, 0, None, name="--z"), default=ThresholdParams.z,
                        help="robust term median + z * 1.4826 * MAD (z in standard deviations)")
    parser.add_argument("--delta", type=bounded(float, 0, 1, name="--delta"),
                        default=ThresholdParams.delta,
                        help="minimum margin above the median: median + delta")


def threshold_params(args: argparse.Namespace) -> ThresholdParams:
    """The ThresholdParams of parsed --window/--slide and add_threshold_options' flags."""
    return ThresholdParams(window=args.window, slide=args.slide,
                           min_window_requests=args.min_window_requests,
                           min_entity_windows=args.min_entity_windows,
                           quantile=args.quantile, z=args.z, delta=args.delta)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="threshold_job.py",
        description="Learn the analyzer's alert thresholds from past access logs (Spark batch).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", nargs="+", metavar="PATH",
                        help="access-log files (combined, common or vhost_combined; .gz ok; "
                             "globs ok, e.g. '/var/log/apache2/access.log*' for the rotated ones)")
    source.add_argument("--kafka", action="store_true",
                        help="read the Kafka topic instead (time range: --since/--until)")
    parser.add_argument("--bootstrap-servers", default=DEFAULT_BOOTSTRAP,
                        help=BOOTSTRAP_HELP + " (with --kafka)")
    parser.add_argument("--topic", default=DEFAULT_TOPIC,
                        help="Kafka topic of the logs (with --kafka)")
    parser.add_argument("--since", type=iso_time, default=None,
                        help="with --kafka: first record by Kafka timestamp, ISO 8601 "
                             "(None = the earliest)")
    parser.add_argument("--until", type=iso_time, default=None,
                        help="with --kafka: records before this Kafka timestamp, ISO 8601 "
                             "(None = the latest)")
    parser.add_argument("--output", type=Path, default=DEFAULT_THRESHOLDS,
                        help="thresholds JSON to write (the analyzer's default --thresholds)")
    parser.add_argument("--window", default=ThresholdParams.window,
                        help="window length, as the analyzer's --window "
                             "('N seconds|minutes|hours')")
    parser.add_argument("--slide", default=ThresholdParams.slide,
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
        for text, seconds in ((args.window, window), (args.slide, slide)):
            if seconds <= 0:
                raise ValueError(text)
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
        parser.error("--plot needs matplotlib: pip install -e '.[dev]' (make setup does)")
    return args


def read_lines(spark: SparkSession, args: argparse.Namespace) -> DataFrame:
    """The raw lines as a DataFrame with one string column `value`."""
    if not args.kafka:
        # Local globs expanded here (sorted, each file once): Spark would look for a metadata
        # folder named like the pattern first and log a stack trace that it is absent.
        paths = sorted({match for pattern in args.input
                        for match in ([pattern] if "://" in pattern else glob.glob(pattern))})
        return spark.read.text(paths)
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
    jars = []
    if kafka:
        from finale.tools.kafka_jars import ensure_connector  # one line naming the fix if missing
        jars = ensure_connector()
    return spark_session(app_name, master, jars=jars, security=security), True


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    params = threshold_params(args)
    session: list[SparkSession] = []

    def job() -> int:
        spark, created = build_session(args.master, args.kafka,
                                       security=spark_security.properties_from_args(args))
        if created:
            session.append(spark)
        document, rates = learn_thresholds(read_lines(spark, args), params)
        stats = document["input"]
        if not document["thresholds"]:
            # Every window had fewer requests than --min-window-requests (or no line parsed): such
            # a file could never fire, and the analyzer refuses it. The old file stays in place.
            print(f"threshold_job.py: error: no thresholds learned, nothing written to "
                  f"{args.output}: {stats['parsed']} parsed lines and no {args.window} window "
                  f"with >= {args.min_window_requests} requests (--min-window-requests)",
                  file=sys.stderr)
            return 1
        try:
            validate_thresholds(document, args.window, args.slide)
        except ThresholdsError as error:
            # Never write a file the analyzer would refuse.
            print(f"threshold_job.py: error: nothing written to {args.output}: {error}",
                  file=sys.stderr)
            return 1
        write_json_atomically(args.output, document)
        if args.plot is not None:
            plot_distributions(rates, document, params, args.plot)
        print(f"thresholds {document['version']}: {len(document['thresholds'])} thresholds from "
              f"{stats['parsed']} parsed lines ({stats['malformed']} malformed, "
              f"{stats['first_time']} .. {stats['last_time']}) -> {args.output}", flush=True)
        return 0

    return run_main("threshold_job.py", job, cleanup=lambda: [spark.stop() for spark in session])


if __name__ == "__main__":
    sys.exit(main())
