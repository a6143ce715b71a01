"""Evaluate detection on a real access log: learn on its first hours, replay the rest with
incidents.

evaluate.py measures detection on generated traffic; this is the same measure on real background
traffic, with evaluate.py's own pieces (evaluate_window: learning, every registered rule, scoring,
latencies) and --replay's own incident injection (replay.inject):
1. the log's first --learn-hours of log time teach the thresholds (threshold_job's parameters,
   with a --quantile for quiet sites, see docs/evaluation.md);
2. the rest is scored twice, in batch with the analyzer's functions and defaults (min_requests,
   min_errors, z, inhibition with its cause exception):
   - as it is: every alert is a false alert of real traffic (no incident was injected), listed
     with its reason, and counted per hour of that traffic;
   - with the --incident lines added by replay.inject (times from the log's first timestamp, the
     real lines unchanged): recall (an alert on each incident's own scope and entity, window
     overlapping it) and detection latency (`earliest`: the first log second at which a running
     window of the entity fires, as the analyzer in update mode; `window`: the end of the first
     alerting window), as evaluate.py reports them.

Run:
    .venv/bin/python -m finale.tools.evaluate_real finale/data/secrepo-2021-10-22-to-26.log.gz
Files: .state/finale/evaluate-real/ (the log with incidents, its truth, the learned thresholds).
"""
from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession

from finale.analyzer.access_log import parse_access_log
from finale.analyzer.metrics import analysed_columns, entity_window_counts, input_statistics
from finale.analyzer.rules import fire_all
from finale.analyzer.rules.error_rate import ERROR_RATE
from finale.analyzer.rules.surge import SURGE
from finale.analyzer.settings import Settings as AnalyzerSettings
from finale.analyzer.settings import ThresholdParams
from finale.analyzer.threshold_job import (
    add_threshold_options,
    bounded,
    build_session,
    threshold_params,
)
from finale.analyzer.thresholds import rule_thresholds_frame
from finale.common import alert as alert_record
from finale.common.cli import OneLineErrorParser, run_main
from finale.common.paths import FINALE_STATE
from finale.generator.incidents import incident_spec, parse_time, read_truth
from finale.generator.replay import inject, open_log, replay_incidents
from finale.tools.evaluate import Result, epoch, evaluate_window, from_epoch, in_range

DEFAULT_DIR = FINALE_STATE / "evaluate-real"
DEFAULT_LEARN_HOURS = 48.0
# A quiet site's learning quantile (docs/evaluation.md): its upper windows are one scanner alone.
QUIET_SITE_QUANTILE = 0.95
HOUR = 3600
# Incidents after 48 h of learning, one every 8 h (KIND[=ENTITY]@START+DURATION, START in seconds
# from the log's first timestamp): each kind three times; new IPs (203.0.113.N) and entities of the
# log (173.231.60.198, its busiest client, which learns its own threshold; / and /robots.txt).
DEFAULT_INCIDENTS = tuple(
    f"{spec}@{(48 + 4 + 8 * n) * HOUR}+60" for n, spec in enumerate(
        ("ip", "url=/", "global", "ip=173.231.60.198", "url=/robots.txt", "global", "ip", "url=/",
         "global")))


@dataclass(frozen=True)
class RealScenario:
    """evaluate_window's scenario for a real log: learn before `incidents_start`, score up to
    `end` (the log's last timestamp + 1 s); no incident-free quiet phase after the incidents."""
    seed: str
    start_time: datetime
    incidents_start: datetime
    end: datetime

    @property
    def quiet_start(self) -> datetime:
        return self.end


def write_with_incidents(source: Path, target: Path, incidents, rate: float, error_pct: float,
                         seed: int) -> None:
    """`source` replayed into the file `target` with the incidents' lines (replay.inject)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with open_log(str(source)) as lines, open(target, "wb") as out:
        out.writelines(inject(lines, incidents, rate, error_pct, seed))


def alert_rows(alerts: DataFrame) -> list[dict]:
    """The alerts (a few per hour at most) as dicts, window bounds as ISO strings, by window."""
    rows = alerts.select(*(epoch(c) if c in ("window_start", "window_end") else c
                           for c in alerts.columns)).collect()
    out = []
    for row in rows:
        alert = row.asDict(recursive=True)
        for bound in ("window_start", "window_end"):
            alert[bound] = from_epoch(alert[bound]).strftime("%Y-%m-%dT%H:%M:%SZ")
        out.append(alert)
    return sorted(out, key=lambda a: (a["window_start"], a["entity_type"], a["entity"]))


def reason(alert: dict, document: dict, z: float = AnalyzerSettings.z) -> str:
    """Why an alert fired: its rule, what it compared against which threshold (the entity's own
    or its scope's population, of that rule), and its cause fields."""
    rule = alert.get("rule")
    own = any(item.get("rule") == rule and item["scope"] == alert["entity_type"]
              and item["entity"] == alert["entity"] for item in document["thresholds"])
    source = "its own" if own else f"{alert['entity_type']} population"
    threshold = alert["threshold"]
    if rule == SURGE:  # requests above the learned count with a Poisson margin
        text = (f"surge: {alert['requests']} requests > {threshold:g} + {z:g} x sqrt({threshold:g})"
                f" = {threshold + z * threshold ** 0.5:.1f} ({source})")
    elif rule == ERROR_RATE:  # the Wilson bound of the error rate above the threshold
        text = (f"{alert['errors']}/{alert['requests']} errors ({alert['error_rate']:.0%}) > "
                f"{threshold:g} ({source})")
    else:  # another rule: what its alert says it compared
        text = f"{rule}: {alert_record.measure(alert)} ({source})"
    cause = alert_record.cause(alert)
    return text + (f"; cause: {cause}" if cause else "")


def false_alert_lines(alerts: list[dict], document: dict) -> list[str]:
    return [f"  {a['window_start'][5:16].replace('T', ' ')}Z  {a['entity_type']:<6} "
            f"{a['entity']:<28} {reason(a, document)}" for a in alerts]


@dataclass
class RealEvaluation:
    statistics: dict
    document: dict
    scenario: RealScenario
    background: list[dict]  # alerts of the real rest without incidents
    result: Result  # with incidents
    truth: list


def evaluate_real(spark: SparkSession, log: Path, learn_hours: float, specs, rate: float,
                  error_pct: float, params: ThresholdParams, directory: Path,
                  settings: AnalyzerSettings = AnalyzerSettings()) -> RealEvaluation:
    """Learn on the first `learn_hours`, score the rest as it is and with the incidents `specs`
    (incident_spec tuples). ValueError: an incident before the end of the learning part."""
    directory.mkdir(parents=True, exist_ok=True)
    truth_path, injected = directory / "incidents.truth.jsonl", directory / "with-incidents.log"
    incidents, problem = replay_incidents(specs, str(log), str(truth_path))
    if problem is not None:
        raise ValueError(problem)
    logs = analysed_columns(parse_access_log(spark.read.text(str(log)))).cache()
    try:
        stats = input_statistics(logs)
        start = parse_time(stats["first_time"])
        scenario = RealScenario("real", start, start + timedelta(hours=learn_hours),
                                parse_time(stats["last_time"]) + timedelta(seconds=1))
        early = [i for i in incidents if i.start < learn_hours * HOUR]
        if early:
            raise ValueError(f"incident {early[0].kind}@{early[0].start:g} starts in the "
                             f"{learn_hours:g} learning hours: its lines would be learned as "
                             "normal")
        write_with_incidents(log, injected, incidents, rate, error_pct, seed=0)
        truth = read_truth(truth_path)
        with_incidents = analysed_columns(parse_access_log(spark.read.text(str(injected)))).cache()
        try:
            result, document = evaluate_window(spark, with_incidents, scenario, truth, params,
                                               directory)
        finally:
            with_incidents.unpersist()
        thresholds = rule_thresholds_frame(spark, document)
        rest = in_range(logs, scenario.incidents_start, scenario.end)
        background = alert_rows(fire_all(entity_window_counts(rest, params.window, params.slide),
                                         thresholds, settings, document["version"]))
        return RealEvaluation(stats, document, scenario, background, result, truth)
    finally:
        logs.unpersist()


def report(evaluation: RealEvaluation, log: Path, params: ThresholdParams) -> list[str]:
    e, r, s = evaluation, evaluation.result, evaluation.scenario
    hours = (s.end - s.incidents_start).total_seconds() / HOUR
    learned = ", ".join(f"{item['scope']} {item['entity'] or '(population)'} {item['value']:g}"
                        for item in e.document["thresholds"])
    lines = [
        f"log {log.name}: {e.statistics['parsed']} parsed lines ({e.statistics['malformed']} "
        f"malformed), {e.statistics['first_time']} .. {e.statistics['last_time']}",
        f"learned on the first {(s.incidents_start - s.start_time).total_seconds() / HOUR:g} h "
        f"(quantile {params.quantile:g}, window {params.window}, slide {params.slide}): "
        f"thresholds {e.document['version']}: {learned}",
        f"scored: the remaining {hours:.1f} h of real traffic; analyzer min_requests "
        f"{AnalyzerSettings.min_requests}, min_errors {AnalyzerSettings.min_errors}, z "
        f"{AnalyzerSettings.z}, inhibition with cause share {AnalyzerSettings.cause_share:g}",
        "",
        f"real traffic, no incident: {len(e.background)} alerts in {hours:.1f} h = "
        f"{len(e.background) / hours:.2f} per hour",
        *false_alert_lines(e.background, e.document),
        "",
        f"with {r.incidents} incidents: recall {r.detected}/{r.incidents}; alerts {r.alerts}: "
        f"{r.on_target} on target, {r.collateral} collateral, {r.false} in no incident's time "
        f"({r.false_per_hour:.2f} per hour)",
    ]
    for number, incident in enumerate(e.truth):
        key = f"{number}:{incident.kind}"
        earliest, window = r.latency_earliest.get(key), r.latency_window.get(key)
        detected = ("NOT DETECTED" if window is None else
                    f"detected: latency earliest {earliest:.0f} s, window end {window:.0f} s")
        lines.append(f"  #{incident.number} {incident.kind:<6} {incident.entity:<18} "
                     f"{incident.start:%Y-%m-%dT%H:%M:%SZ} +"
                     f"{(incident.end - incident.start).total_seconds():g} s  {detected}")
    medians = []
    for kind in ("ip", "url", "global"):
        found = [(r.latency_earliest[k], r.latency_window[k]) for k in r.latency_window
                 if k.split(":")[1] == kind and r.latency_window[k] is not None]
        if found:
            medians.append(f"{kind} {statistics.median(a for a, _ in found):.0f} | "
                           f"{statistics.median(b for _, b in found):.0f}")
    lines.append("median latency s (earliest | window end): " + ", ".join(medians))
    return lines


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="evaluate_real.py",
        description="Learn thresholds on a real access log's first hours, then measure false "
                    "alerts per hour on the rest and recall and latency of injected incidents.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("log", type=Path, help="a real access log (combined or common, .gz ok)")
    parser.add_argument("--learn-hours", type=bounded(float, 0, None, low_open=True,
                                                      name="--learn-hours"),
                        default=DEFAULT_LEARN_HOURS,
                        help="log time learned from, from the first line")
    parser.add_argument("--incident", type=incident_spec, action="append", default=None,
                        metavar="KIND[=ENTITY]@START+DURATION",
                        help="an incident injected as log_generator.py --replay does (START from "
                             "the log's first timestamp; repeatable); default: "
                             + " ".join(DEFAULT_INCIDENTS))
    parser.add_argument("--incident-rate", type=bounded(float, 0, None, low_open=True,
                                                        name="--incident-rate"),
                        default=2.0, help="lines per second each incident adds")
    parser.add_argument("--incident-error-rate", type=bounded(float, 0, 100,
                                                              name="--incident-error-rate"),
                        default=90.0, help="%% of an incident's lines that are errors")
    add_threshold_options(parser)  # the threshold job's parameters ...
    parser.set_defaults(quantile=QUIET_SITE_QUANTILE)  # ... at a quiet site's quantile
    parser.add_argument("--window", default=ThresholdParams.window, help="the analyzer's --window")
    parser.add_argument("--slide", default=ThresholdParams.slide, help="the analyzer's --slide")
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR,
                        help="where the log with incidents, its truth and the thresholds go")
    parser.add_argument("--master", default="local[2]", help="Spark master")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.log.is_file():
        parser.error(f"cannot read {str(args.log)!r}")
    specs = args.incident or [incident_spec(text) for text in DEFAULT_INCIDENTS]
    params = threshold_params(args)
    session: list[SparkSession] = []

    def run() -> int:
        spark, _ = build_session(args.master, app_name="chaussettes-evaluate-real")
        session.append(spark)
        try:
            evaluation = evaluate_real(spark, args.log, args.learn_hours, specs,
                                       args.incident_rate, args.incident_error_rate, params,
                                       args.dir)
        except ValueError as error:
            print(f"evaluate_real.py: error: {error}", file=sys.stderr)
            return 2
        print("\n".join(report(evaluation, args.log, params)), flush=True)
        return 0

    return run_main("evaluate_real.py", run, cleanup=lambda: [spark.stop() for spark in session])


if __name__ == "__main__":
    sys.exit(main())
