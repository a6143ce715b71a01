"""Alert rules: each one a function over the windowed counts and its thresholds, registered by name.

A rule is a `Rule(name, fire, learn)` in RULES:
- fire(counts, thresholds, settings, thresholds_version) -> alerts (ALERT_COLUMNS): the windows of
  `counts` (metrics.entity_window_counts' output) that break the rule; `thresholds` are the rule's
  own rows of the thresholds file (scope, entity, value).
- learn(counts, params) -> thresholds (scope, entity, value, windows, requests): what threshold_job.py
  writes for the rule, from the window counts of past logs.
The analyzer, the threshold job, the evaluation and the demo go through RULES (fire_all, learn_all):
adding a rule is one `register(...)` call with its two functions.

`error_rate` (the only rule so far): requests >= min_requests and errors >= min_errors and
wilson_lower_bound(errors, requests, z) > threshold. The Wilson lower bound is the low end of the
score confidence interval of the error proportion: a handful of errors out of a handful of requests
does not fire, the same proportion over hundreds of requests does. Its threshold is learned as

    T = min(1, max(P_q(rates), median(rates) + z * 1.4826 * MAD(rates), median(rates) + delta))

over the window error rates of each scope population and each entity with enough history.

Inhibition (by default): in a window where the global scope alerts, the ip and url alerts of that
same window are left out, like an Alertmanager inhibit rule: one global alert instead of an alert
storm (one per IP and per URL) when all traffic fails.

Severity: "critical" when error_rate >= 2 x threshold or error_rate >= 0.5, else "warning".
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from pyspark.sql import Column, DataFrame, Window, functions as F

from settings import Settings, ThresholdParams

RULE = "error_rate"
# The severity escalates to "critical" at twice the threshold, or when half the requests fail.
CRITICAL_FACTOR = 2.0
CRITICAL_RATE = 0.5
# 1.4826 * MAD estimates the standard deviation of a normal distribution, so z reads as "sigmas".
MAD_TO_SIGMA = 1.4826
ALERT_COLUMNS = ("alert_id", "rule", "entity_type", "entity", "window_start", "window_end",
                 "requests", "errors", "error_rate", "threshold", "thresholds_version", "severity")


@dataclass(frozen=True)
class Rule:
    name: str
    fire: Callable[[DataFrame, DataFrame, Settings, "str | None"], DataFrame]
    learn: Callable[[DataFrame, ThresholdParams], DataFrame]


RULES: dict[str, Rule] = {}


def register(name: str, fire, learn) -> Rule:
    """Add a rule to RULES (its name is the `rule` field of its thresholds and of its alerts)."""
    if name in RULES:
        raise ValueError(f"rule {name!r} is already registered")
    RULES[name] = rule = Rule(name, fire, learn)
    return rule


def fire_all(counts: DataFrame, thresholds: DataFrame, settings: Settings,
             thresholds_version: str | None = None) -> DataFrame:
    """The alerts of every registered rule. `thresholds`: every rule's rows (rule, scope, entity,
    value, thresholds.rule_thresholds_frame); each rule sees only its own."""
    fired = [rule.fire(counts, thresholds.where(F.col("rule") == rule.name).drop("rule"),
                       settings, thresholds_version)
             for rule in RULES.values()]
    union = fired[0]
    for frame in fired[1:]:
        union = union.unionByName(frame)
    return union


def learn_all(counts: DataFrame, params: ThresholdParams) -> dict[str, DataFrame]:
    """Every registered rule's learned thresholds, by rule name (thresholds.thresholds_document)."""
    return {rule.name: rule.learn(counts, params) for rule in RULES.values()}


def wilson_lower_bound(errors: Column, requests: Column, z: float) -> Column:
    """Lower bound of the Wilson score interval of errors/requests at confidence z (null if n = 0).

    (p + z²/2n - z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n), with p = errors/n.
    """
    n = requests.cast("double")
    p = errors.cast("double") / n
    z2 = float(z) * float(z)
    centre = p + F.lit(z2) / (F.lit(2.0) * n)
    margin = F.lit(float(z)) * F.sqrt(p * (F.lit(1.0) - p) / n + F.lit(z2) / (F.lit(4.0) * n * n))
    return F.when(n > 0, (centre - margin) / (F.lit(1.0) + F.lit(z2) / n))


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


def alerts(counts: DataFrame, thresholds: DataFrame, min_requests: int, min_errors: int,
           z: float, thresholds_version: str | None = None, *,
           inhibit_by_global: bool = True) -> DataFrame:
    """The windows of `counts` (entity_window_counts' output) that fire, with ALERT_COLUMNS.

    Threshold of a row: the one of its exact entity (scope = entity_type, entity = entity), else the
    population one of its scope (entity null), else the global population one. Rows without any
    threshold never fire. `thresholds_version` is copied into every alert (the file's "version").
    With `inhibit_by_global` (the default), the ip and url alerts of a window (same window_start
    and window_end) in which the global scope alerts in this same call are left out.
    Meant for static frames (the analyzer calls it inside foreachBatch).
    """
    # Deduplicated so that a repeated line in a thresholds file can never duplicate alerts.
    per_entity = (
        thresholds.where(F.col("entity").isNotNull())
        .groupBy(F.col("scope").alias("_scope"), F.col("entity").alias("_entity"))
        .agg(F.max("value").alias("_entity_value"))
    )
    per_scope = (
        thresholds.where(F.col("entity").isNull())
        .groupBy(F.col("scope").alias("_pop_scope"))
        .agg(F.max("value").alias("_scope_value"))
    )
    global_value = per_scope.where(F.col("_pop_scope") == "global").select(
        F.col("_scope_value").alias("_global_value"))

    candidates = counts.where(
        (F.col("requests") >= F.lit(int(min_requests))) & (F.col("errors") >= F.lit(int(min_errors)))
    )
    with_threshold = (
        candidates
        .join(F.broadcast(per_entity),
              (F.col("entity_type") == F.col("_scope")) & (F.col("entity") == F.col("_entity")),
              "left")
        .join(F.broadcast(per_scope), F.col("entity_type") == F.col("_pop_scope"), "left")
        .join(F.broadcast(global_value), F.lit(True), "left")
        .withColumn("threshold",
                    F.coalesce("_entity_value", "_scope_value", "_global_value").cast("double"))
    )
    firing = with_threshold.where(
        wilson_lower_bound(F.col("errors"), F.col("requests"), z) > F.col("threshold"))
    if inhibit_by_global:
        firing = inhibited_by_global(firing)
    return firing.select(
        alert_id_column(F.lit(RULE), F.col("entity_type"), F.col("entity"),
                        F.col("window_start"), F.col("window_end")).alias("alert_id"),
        F.lit(RULE).alias("rule"),
        "entity_type",
        "entity",
        "window_start",
        "window_end",
        "requests",
        "errors",
        F.col("error_rate").cast("double").alias("error_rate"),
        "threshold",
        F.lit(thresholds_version).cast("string").alias("thresholds_version"),
        F.when((F.col("error_rate") >= F.col("threshold") * CRITICAL_FACTOR)
               | (F.col("error_rate") >= CRITICAL_RATE), F.lit("critical"))
        .otherwise(F.lit("warning")).alias("severity"),
    )


def inhibited_by_global(firing: DataFrame) -> DataFrame:
    """`firing` without the ip/url alerts of the windows in which the global scope fires."""
    # Inhibition, like an Alertmanager inhibit rule: when all traffic fails, every IP and URL
    # fails too and would raise one alert each on top of the global one (a real demo run gave
    # 3 global + 69 ip + 103 url alerts for one global incident). The global alert says it
    # all, so the ip/url alerts of its window are dropped: a left anti join on the window of
    # the global alerts of this call (the condition never matches a global row, which stays).
    # Streaming: the analyzer calls this per micro-batch on the window counts updated in that
    # batch (update mode). Every line counts in the global scope, so the global row of a
    # window is updated in every batch that updates any entity of that window: within a
    # batch, the global alert of a window is always seen together with its entities. Entity
    # alerts emitted in an earlier batch, before the global crossed its threshold, stay
    # (alerts are never retracted).
    global_windows = (
        firing.where(F.col("entity_type") == "global")
        .select(F.col("window_start").alias("_g_start"), F.col("window_end").alias("_g_end"))
        .distinct()
    )
    return firing.join(
        F.broadcast(global_windows),
        (F.col("window_start") == F.col("_g_start")) & (F.col("window_end") == F.col("_g_end"))
        & (F.col("entity_type") != "global"),
        "left_anti")


def alert_id_column(rule: Column, entity_type: Column, entity: Column,
                    window_start: Column, window_end: Column) -> Column:
    """sha256 hex of "rule|entity_type|entity|start|end", the bounds in microseconds since the epoch.

    Deterministic (no time zone, no run-dependent input): a replayed or restarted run gives the same
    id to the same alert, so the compacted alerts topic and the viewer keep one copy.
    """
    return F.sha2(
        F.concat_ws("|", rule, entity_type, entity,
                    F.unix_micros(window_start).cast("string"),
                    F.unix_micros(window_end).cast("string")),
        256,
    )


def fire_error_rate(counts: DataFrame, thresholds: DataFrame, settings: Settings,
                    thresholds_version: str | None = None) -> DataFrame:
    return alerts(counts, thresholds, settings.min_requests, settings.min_errors, settings.z,
                  thresholds_version, inhibit_by_global=settings.inhibit_by_global)


register(RULE, fire=fire_error_rate, learn=robust_thresholds)
