"""Evaluate the learned thresholds: do injected incidents alert, and does normal traffic stay quiet?

For each seed, one continuous stream of the generator (its default error model, so the history is
normal operation with its background errors) is written to a file in log time, in three phases:

    [history: --history-minutes]
    [incidents: ip, url, global, surge, labelled with --truth]
    [quiet: --quiet-minutes]

One stream rather than separate runs because the generator's lines depend on (seed, line index)
only: a second run with the same seed would replay the history (in-sample), another seed would
have other users and URLs. The incidents only change lines inside their own time ranges.

Then, for each window size, in batch mode on one Spark session (fast and exact; the streaming
wiring is tested with the analyzer):
1. rules.learn_all: every registered rule's thresholds, from the history phase only;
2. metrics.entity_window_counts + rules.fire_all (the analyzer's own functions and default
   --min-requests, --min-errors, --confidence-z, and its default inhibition: a firing global alert
   drops the ip/url alerts of its window) over the incident and quiet phases;
3. metrics, printed as a table (and written with --json):
   - recall: incidents with at least one alert on their own entity (the rule and scope that
     detect the kind, incidents.INCIDENT_TARGETS: error_rate for ip/url/global, surge on the IP for
     a surge; same entity, window overlapping the incident) / incidents. Inhibition cannot hide an
     ip/url incident behind the global one: the schedule leaves SCHEDULE_GAP seconds between
     incidents, and a window longer than that (which could overlap an ip/url incident and the
     global incident) is refused. An ip/url incident that raises the global rate itself above its
     threshold in every one of its windows would be inhibited, as in the analyzer, and count as
     missed: recall measures that;
   - alerts are `on` target (same kind and entity as an incident, window overlapping it),
     `coll`ateral (another entity, window overlapping an incident: during a global incident every
     IP and URL really fails, a URL incident raises the global rate) or `false` (no incident);
     precision = (on + coll) / alerts; false/h = false alerts per hour of evaluated traffic
     (incident and quiet phases);
   - quiet: alerts in the incident-free quiet phase (expected: 0);
   - latency, log time from the incident start to
       * `earliest`: the earliest possible firing: the first log second at which the running
         counts of a window of that entity make its rule fire (rules.fire_all; the analyzer
         emits partial windows in update mode, so it can fire there, plus its trigger interval and
         ingestion delay), and, for an ip/url incident, the running global counts of that window
         at that second do not inhibit it;
       * `window`: the end of the first alerting window (when that window's counts are complete).

Run:
    .venv/bin/python -m finale.tools.evaluate          # seeds 1 2 3, windows 30 s and 1 min
    .venv/bin/python -m finale.tools.evaluate --seeds 4 --windows '30 seconds' \
        --json .state/finale/evaluation.json
Files: .state/finale/evaluate/seed-S.log (+ .truth.jsonl), thresholds-S-WINDOW.json.
"""
from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from finale.analyzer.access_log import parse_access_log
from finale.analyzer.metrics import analysed_columns, entity_window_counts, input_statistics
from finale.analyzer.rules import fire_all, learn_all
from finale.analyzer.settings import Settings as AnalyzerSettings
from finale.analyzer.settings import ThresholdParams
from finale.analyzer.threshold_job import add_threshold_options, bounded, build_session
from finale.analyzer.thresholds import rule_thresholds_frame, thresholds_document
from finale.common.alert import GLOBAL_ENTITY
from finale.common.cli import OneLineErrorParser, duration_seconds, run_main, write_json_atomically
from finale.common.paths import FINALE_STATE, SCRIPTS
from finale.generator.incidents import (
    INCIDENT_TARGETS,
    Truth,
    on_target,
    parse_time,
    read_truth,
    score,
)
from finale.generator.shop import SHOP

DEFAULT_DIR = FINALE_STATE / "evaluate"
DEFAULT_START = "2026-11-28T00:00:00Z"
# Incidents, in seconds from the start of the incident phase: (kind, offset, duration). Apart from
# each other so that every alert is explained by at most one incident, and so that no window
# overlaps both an ip/url incident and the global one: the analyzer's inhibition (a global alert
# drops the ip/url alerts of its window) would otherwise hide the ip/url incident and lower recall
# for a reason that is not the thresholds'. A window of length L can overlap two incidents only if L
# is longer than the gap between them: main() refuses windows longer than SCHEDULE_GAP.
# The surge (an IP sending 10x its requests, all successful) comes last: a global error alert
# never inhibits a surge alert (rules are independent), the gap keeps each alert explained by one
# incident.
SCHEDULE = (("ip", 60, 120), ("url", 360, 120), ("global", 660, 120), ("surge", 960, 120))
SCHEDULE_GAP = min(later[1] - (earlier[1] + earlier[2])
                   for earlier, later in zip(SCHEDULE, SCHEDULE[1:], strict=False))  # 180 s
INCIDENT_PHASE = 1200
ISO = "%Y-%m-%dT%H:%M:%SZ"


@dataclass(frozen=True)
class Scenario:
    """What the generator writes for one seed: rate and phase lengths in seconds of log time."""
    seed: int
    rate: float = 50.0
    users: int = 50
    history: int = 3600
    quiet: int = 3600
    start: str = DEFAULT_START
    # The shortest evaluated window: the URL incident goes to a URL that can alert in it.
    window_seconds: int = 30

    @property
    def start_time(self) -> datetime:
        return parse_time(self.start)

    @property
    def incidents_start(self) -> datetime:
        return self.start_time + timedelta(seconds=self.history)

    @property
    def quiet_start(self) -> datetime:
        return self.incidents_start + timedelta(seconds=INCIDENT_PHASE)

    @property
    def end(self) -> datetime:
        return self.quiet_start + timedelta(seconds=self.quiet)


@dataclass
class Result:
    seed: int
    window: str
    slide: str
    thresholds_version: str
    incidents: int
    detected: int
    alerts: int
    on_target: int
    collateral: int
    false: int
    quiet_alerts: int
    evaluated_hours: float
    latency_earliest: dict = field(default_factory=dict)  # kind -> seconds (None: not detected)
    latency_window: dict = field(default_factory=dict)

    @property
    def recall(self) -> float:
        return self.detected / self.incidents if self.incidents else 1.0

    @property
    def precision(self) -> float:
        """Alerts explained by an incident (on its entity or collateral) / alerts."""
        return (self.on_target + self.collateral) / self.alerts if self.alerts else 1.0

    @property
    def false_per_hour(self) -> float:
        return self.false / self.evaluated_hours


def generate(scenario: Scenario, directory: Path) -> tuple[Path, Path]:
    """Write the scenario's log file and truth file with finale/log_generator.py (cached: same
    scenario, same bytes, so an existing complete file is reused)."""
    directory.mkdir(parents=True, exist_ok=True)
    stem = (f"seed-{scenario.seed}-rate-{scenario.rate:g}-users-{scenario.users}-"
            f"h{scenario.history}-q{scenario.quiet}-w{scenario.window_seconds}-"
            f"{scenario.start_time:%Y%m%dT%H%M%S}")
    log_path, truth_path, done = (directory / f"{stem}.log", directory / f"{stem}.truth.jsonl",
                                  directory / f"{stem}.done")
    if done.exists() and log_path.exists() and truth_path.exists():
        return log_path, truth_path
    total = scenario.history + INCIDENT_PHASE + scenario.quiet
    url = alertable_url(scenario)
    incidents = [f"{kind}{'=' + url if kind == 'url' else ''}"
                 f"@{scenario.history + offset}+{duration}"
                 for kind, offset, duration in SCHEDULE]
    argv = [sys.executable, str(SCRIPTS / "log_generator.py"), "--seed", str(scenario.seed),
            "--rate", f"{scenario.rate:g}", "--users", str(scenario.users),
            "--start-time", scenario.start, "--history", f"{total / 3600:.10g}",
            "--output", str(log_path), "--truth", str(truth_path)]
    for incident in incidents:
        argv += ["--incident", incident]
    done.unlink(missing_ok=True)
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"log_generator.py failed ({result.returncode}): "
                           f"{(result.stderr.strip().splitlines() or [''])[-1]}")
    done.touch()
    return log_path, truth_path


def alertable_url(scenario: Scenario) -> str:
    """A seeded pick among the URLs whose normal traffic reaches 2 x the analyzer's --min-requests
    per window: a quieter URL cannot alert by design (min_requests), so an incident on it would
    measure the traffic, not the thresholds. (Every IP gets rate * window / users requests.)"""
    total = sum(weight for *_, weight in SHOP)
    needed = 2 * AnalyzerSettings.min_requests
    candidates = [url for url, *_, weight in SHOP
                  if scenario.rate * scenario.window_seconds * weight / total >= needed]
    if not candidates:
        raise ValueError(f"no URL gets {needed} requests per {scenario.window_seconds} s window at "
                         f"{scenario.rate:g} lines/s: raise --rate")
    return random.Random(f"chaussettes-evaluate:{scenario.seed}").choice(candidates)


def epoch(name: str) -> Column:
    """Timestamp column `name` as epoch seconds (double), keeping its name."""
    return (F.unix_micros(F.col(name)) / 1e6).alias(name)


def in_range(logs: DataFrame, since: datetime, until: datetime) -> DataFrame:
    return logs.where((F.col("event_time") >= F.lit(since)) & (F.col("event_time") < F.lit(until)))


def running_window_counts(logs: DataFrame, window: str, slide: str, entity_type: str,
                          entity: str) -> DataFrame:
    """The partial counts the analyzer sees in update mode: for every window of one entity and every
    log second s in it, the requests/errors of [window_start, s + 1 s), as entity_window_counts rows
    whose window_end is the end of that prefix (log time has a resolution of one second)."""
    def of_entity(counts: DataFrame) -> DataFrame:
        return counts.where((F.col("entity_type") == entity_type) & (F.col("entity") == entity))

    windows = of_entity(entity_window_counts(logs, window, slide)).select(
        F.col("window_start").alias("w_start"), F.col("window_end").alias("w_end"))
    seconds = of_entity(entity_window_counts(logs, "1 second", "1 second"))
    prefix = Window.partitionBy("w_start").orderBy("window_start").rowsBetween(
        Window.unboundedPreceding, Window.currentRow)
    return (
        windows
        .join(seconds, (F.col("window_start") >= F.col("w_start"))
              & (F.col("window_end") <= F.col("w_end")))
        .select(
            F.col("w_start").alias("window_start"),
            F.col("window_end"),
            "entity_type",
            "entity",
            F.sum("requests").over(prefix).alias("requests"),
            F.sum("errors").over(prefix).cast("long").alias("errors"),
        )
        .withColumn("error_rate", (F.col("errors") / F.col("requests")).cast("double"))
    )


def learn(spark: SparkSession, history: DataFrame, scenario: Scenario, params: ThresholdParams,
          directory: Path) -> tuple[dict, DataFrame]:
    """The thresholds document learned on the history phase (as threshold_job.py would write it,
    kept in `directory`) and every rule's thresholds as a cached frame."""
    document = thresholds_document(
        params, input_statistics(history),
        learn_all(entity_window_counts(history, params.window, params.slide), params))
    window_tag = params.window.replace(" ", "")
    write_json_atomically(directory / f"thresholds-{scenario.seed}-{window_tag}.json", document)
    return document, rule_thresholds_frame(spark, document)


def from_epoch(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, timezone.utc)


def earliest_latencies(fire, evaluated: DataFrame, incidents: list[Truth], params: ThresholdParams,
                       inhibit_by_global: bool) -> dict:
    """Per detected incident ("N:kind"), seconds from its start to the end of the earliest running
    window prefix that fires on its entity: the analyzer's update-mode latency."""
    margin = timedelta(seconds=duration_seconds(params.window))
    running = []
    for number, incident in incidents:
        key = f"{number}:{incident.kind}"
        rule, scope = INCIDENT_TARGETS[incident.kind]
        entity = GLOBAL_ENTITY if incident.kind == "global" else incident.entity
        around = in_range(evaluated, incident.start - margin, incident.end + margin)
        prefixes = running_window_counts(around, params.window, params.slide, scope, entity)
        if inhibit_by_global and scope != "global":
            # The global prefixes of the same (window, second): every line of the entity is also a
            # global line, so each entity prefix has its global twin, which may inhibit it.
            prefixes = prefixes.unionByName(
                running_window_counts(around, params.window, params.slide, "global", GLOBAL_ENTITY))
        running.append(
            fire(prefixes)
            .where((F.col("rule") == rule) & (F.col("entity_type") == scope)
                   & (F.col("window_end") > F.lit(incident.start)))
            .select(F.lit(key).alias("incident"), "window_end"))
    if not running:
        return {}
    # All incidents in one job: the earliest prefix end that fires, per incident.
    union = running[0]
    for frame in running[1:]:
        union = union.unionByName(frame)
    starts = {f"{number}:{incident.kind}": incident.start.timestamp()
              for number, incident in incidents}
    return {row["incident"]: max(0.0, row["window_end"] - starts[row["incident"]])
            for row in (union.groupBy("incident").agg(F.min("window_end").alias("window_end"))
                        .select("incident", epoch("window_end")).collect())}


def evaluate_window(spark: SparkSession, logs: DataFrame, scenario: Scenario,
                    incidents: list[Truth], params: ThresholdParams,
                    directory: Path) -> tuple[Result, dict]:
    """Learn on the history phase, alert on the rest (every registered rule), score against the
    truth."""
    settings = AnalyzerSettings()
    document, thresholds = learn(spark,
                                 in_range(logs, scenario.start_time, scenario.incidents_start),
                                 scenario, params, directory)

    def fire(counts: DataFrame) -> DataFrame:
        return fire_all(counts, thresholds, settings, document["version"])

    evaluated = in_range(logs, scenario.incidents_start, scenario.end)
    # The alerts are the job's output (a few per incident): small enough to score in Python.
    # Window bounds as epoch seconds: no dependence on the Python process's time zone.
    fired = [(row["entity_type"], row["entity"], from_epoch(row["window_start"]),
              from_epoch(row["window_end"]), row["rule"])
             for row in fire(entity_window_counts(evaluated, params.window, params.slide))
             .select("entity_type", "entity", epoch("window_start"), epoch("window_end"), "rule")
             .collect()]
    counts = score(fired, incidents, scenario.quiet_start)

    latency_window, detected = {}, []
    for number, incident in enumerate(incidents):
        key = f"{number}:{incident.kind}"
        hits = [alert for alert in fired if on_target(*alert[:4], incident, alert[4])]
        latency_window[key] = None
        if hits:
            detected.append((number, incident))
            latency_window[key] = max(
                0.0, (min(end for *_, end, _ in hits) - incident.start).total_seconds())
    latency_earliest = dict.fromkeys(latency_window)
    latency_earliest.update(earliest_latencies(fire, evaluated, detected, params,
                                               settings.inhibit_by_global))
    thresholds.unpersist()
    result = Result(
        seed=scenario.seed, window=params.window, slide=params.slide,
        thresholds_version=document["version"], incidents=len(incidents), detected=len(detected),
        alerts=len(fired), on_target=counts["on_target"], collateral=counts["collateral"],
        false=counts["false"], quiet_alerts=counts["quiet"],
        evaluated_hours=(scenario.end - scenario.incidents_start).total_seconds() / 3600,
        latency_earliest=latency_earliest, latency_window=latency_window)
    return result, document


def evaluate_seed(spark: SparkSession, scenario: Scenario, windows: list[tuple[str, str]],
                  base: ThresholdParams, directory: Path) -> list[Result]:
    log_path, truth_path = generate(scenario, directory)
    incidents = read_truth(truth_path)
    logs = analysed_columns(parse_access_log(spark.read.text(str(log_path)))).cache()
    try:
        results = []
        for window, slide in windows:
            params = ThresholdParams(window=window, slide=slide,
                                     min_window_requests=base.min_window_requests,
                                     min_entity_windows=base.min_entity_windows,
                                     quantile=base.quantile, z=base.z, delta=base.delta)
            results.append(evaluate_window(spark, logs, scenario, incidents, params, directory)[0])
        return results
    finally:
        logs.unpersist()


def latency_text(results: list[Result], attribute: str) -> str:
    """Median latency (s) per incident kind, as ip/url/global/surge; '-' when a kind was never
    detected."""
    parts = []
    for kind, *_ in SCHEDULE:
        found = [value for r in results for key, value in getattr(r, attribute).items()
                 if key.split(":")[1] == kind and value is not None]
        parts.append(f"{statistics.median(found):.0f}" if found else "-")
    return "/".join(parts)


HEADER = (f"{'seed':>4} {'window':>10} {'recall':>7} {'alerts':>6} {'on':>4} {'coll':>4} "
          f"{'false':>5} {'false/h':>7} {'quiet':>5} {'precision':>9}  latency s "
          f"{'/'.join(kind for kind, *_ in SCHEDULE)}: earliest | window end")


def report_row(seed, window: str, group: list[Result]) -> str:
    """One line of the table for the results in `group` (one run, or every seed of a window)."""
    incidents = sum(r.incidents for r in group)
    detected = sum(r.detected for r in group)
    fired = sum(r.alerts for r in group)
    on = sum(r.on_target for r in group)
    coll = sum(r.collateral for r in group)
    false = sum(r.false for r in group)
    hours = sum(r.evaluated_hours for r in group)
    return (f"{seed:>4} {window:>10} {detected:>3}/{incidents:<3} {fired:>6} {on:>4} "
            f"{coll:>4} {false:>5} {false / hours:>7.2f} "
            f"{sum(r.quiet_alerts for r in group):>5} "
            f"{((on + coll) / fired if fired else 1.0):>9.3f}  "
            f"{latency_text(group, 'latency_earliest'):>9} | "
            f"{latency_text(group, 'latency_window')}")


def summary_rows(results: list[Result]) -> list[str]:
    """One 'all' line per window size, over every seed."""
    rows = []
    for window in dict.fromkeys(r.window for r in results):
        group = [r for r in results if r.window == window]
        if len(group) > 1:
            rows.append(report_row("all", window, group))
    return rows


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="evaluate.py",
        description="Learn thresholds from generated history, inject labelled incidents, and "
                    "measure recall, precision, false alerts per hour and detection latency.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="generator seeds")
    parser.add_argument("--windows", nargs="+", default=["30 seconds", "1 minute"],
                        help="window lengths to compare (the analyzer's --window)")
    parser.add_argument("--slide", default=AnalyzerSettings.slide,
                        help="window slide (the analyzer's --slide)")
    parser.add_argument("--rate", type=bounded(float, 0, None, low_open=True, name="--rate"),
                        default=Scenario.rate, help="generated lines per second of log time")
    parser.add_argument("--users", type=bounded(int, 1, None, name="--users"),
                        default=Scenario.users, help="generator --users (one IP each)")
    parser.add_argument("--history-minutes", type=bounded(int, 1, None, name="--history-minutes"),
                        default=Scenario.history // 60, help="history to learn the thresholds from")
    parser.add_argument("--quiet-minutes", type=bounded(int, 1, None, name="--quiet-minutes"),
                        default=Scenario.quiet // 60,
                        help="incident-free traffic after the incidents")
    add_threshold_options(parser)  # the threshold job's own parameters, same defaults
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR,
                        help="generated logs and thresholds")
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON")
    parser.add_argument("--master", default="local[2]", help="Spark master")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    windows = []
    for window in args.windows:
        try:
            for text in (window, args.slide):
                if duration_seconds(text) <= 0:
                    raise ValueError(text)
            if duration_seconds(args.slide) > duration_seconds(window):
                parser.error(f"--slide {args.slide!r} is longer than the window {window!r}")
            if duration_seconds(window) > SCHEDULE_GAP:
                parser.error(f"window {window!r} is longer than the {SCHEDULE_GAP} s between the "
                             "incidents: it could overlap an ip/url incident and the global one, "
                             "whose alert inhibits theirs")
        except ValueError as error:
            parser.error(f"bad duration {error.args[0]!r} (expected e.g. '30 seconds', '1 minute')")
        windows.append((window, args.slide))
    base = ThresholdParams(min_window_requests=args.min_window_requests,
                           min_entity_windows=args.min_entity_windows,
                           quantile=args.quantile, z=args.z, delta=args.delta)
    session: list[SparkSession] = []

    def run() -> int:
        # The threshold job's own session settings: the learning runs in it.
        spark, _ = build_session(args.master, app_name="chaussettes-evaluate")
        session.append(spark)
        print(f"rate {args.rate:g} lines/s, {args.users} users, "
              f"history {args.history_minutes} min, "
              f"incidents {' '.join(f'{k}@+{o}s+{d}s' for k, o, d in SCHEDULE)}, quiet "
              f"{args.quiet_minutes} min; analyzer min_requests {AnalyzerSettings.min_requests}, "
              f"min_errors {AnalyzerSettings.min_errors}, z {AnalyzerSettings.z}")
        print(HEADER, flush=True)
        results = []
        for seed in args.seeds:
            scenario = Scenario(seed=seed, rate=args.rate, users=args.users,
                                window_seconds=min(duration_seconds(w) for w, _ in windows),
                                history=args.history_minutes * 60, quiet=args.quiet_minutes * 60)
            began = time.monotonic()
            seed_results = evaluate_seed(spark, scenario, windows, base, args.dir)
            for result in seed_results:
                print(report_row(result.seed, result.window, [result]), flush=True)
            print(f"seed {seed}: evaluated in {time.monotonic() - began:.0f} s", file=sys.stderr,
                  flush=True)
            results += seed_results
        for row in summary_rows(results):
            print(row, flush=True)
        if args.json is not None:
            write_json_atomically(args.json, {"results": [
                {**asdict(r), "recall": r.recall, "precision": r.precision,
                 "false_per_hour": r.false_per_hour} for r in results]})
        return 0

    return run_main("evaluate.py", run, cleanup=lambda: [spark.stop() for spark in session])


if __name__ == "__main__":
    sys.exit(main())
