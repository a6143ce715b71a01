"""Alert rules: each one a function over the windowed counts and its thresholds, registered by name.

The contract (this docstring is the spec; tests/test_finale_alerting.py holds the rules to it):
- A rule is a `Rule(name, fire, learn, value_range)` in RULES, added by
  `register(name, fire, learn[, value_range])` at import (a second registration of a name is a
  ValueError). `name` is the `rule` field of its alerts and of its rows in the thresholds file;
  `value_range` bounds its threshold values for thresholds.validate_thresholds ([0, 1], a rate,
  by default; (0, inf) for surge's request counts; None: any finite number).
- fire(counts, thresholds, settings, thresholds_version) -> alerts with exactly ALERT_COLUMNS:
  the windows of `counts` (metrics.entity_window_counts' output, COUNTS_COLUMNS; in the analyzer
  the windows updated by one micro-batch) that break the rule. `thresholds` are the rule's own
  rows of the thresholds file (scope, entity (null = the scope's population), value: the rule's
  own unit); `settings` the analyzer's Settings; `thresholds_version` goes into every alert.
  Spark built-ins on static frames (the analyzer calls it inside foreachBatch), deterministic
  `alert_id` (alert_id_column with the rule's name), no collect of `counts` (the thresholds are a
  small table, read on the driver by with_thresholds), and as few Spark jobs as can be: the
  analyzer runs it at every micro-batch, where each job costs a fixed 10-100 ms.
- learn(counts, params) -> thresholds with columns scope, entity, value, windows, requests (more
  are ignored): what threshold_job.py writes for the rule, from the window counts of past logs.
- Rules are independent: one rule's alerts never inhibit another's; inhibition, if any, is the
  rule's own business (both rules below use inhibited_by_global within themselves).
The analyzer, the threshold job and the evaluation go through RULES (fire_all, learn_all), the demo
and the viewer read the `rule` field: adding a rule is one `register(...)` call with its two
functions (see "Extending" in finale/README.md).

`error_rate`: requests >= min_requests and errors >= min_errors and
wilson_lower_bound(errors, requests, z) > threshold. The Wilson lower bound is the low end of the
score confidence interval of the error proportion: a handful of errors out of a handful of requests
does not fire, the same proportion over hundreds of requests does. Its threshold is learned as

    T = min(1, max(P_q(rates), median(rates) + z * 1.4826 * MAD(rates), median(rates) + delta))

over the window error rates of each scope population and each entity with enough history.
Severity: "critical" when error_rate >= 2 x threshold or error_rate >= 0.5, else "warning".

`surge`: a traffic surge of an entity (a scraper, a bot flood: no errors at all, invisible to
error_rate): requests >= min_requests and requests > T + z * sqrt(T), T the learned request count
per window of the entity (else of its scope's population; no global fallback, no defaults: without
learned thresholds the rule is silent):

    T = max(P_q(requests), median(requests) + z * 1.4826 * MAD(requests), 2 * median(requests))

Severity: "critical" when requests >= 2 x T, else "warning".

Inhibition (by default, each rule within itself): in a window where the global scope alerts, the
ip and url alerts of that same window and rule are left out, like an Alertmanager inhibit rule:
one global alert instead of an alert storm (one per IP and per URL) when all traffic fails, or
when all traffic doubles. An error_rate alert never inhibits a surge alert, nor the reverse: a
flood during an outage is a second fact, not a consequence. Except the cause: an error_rate ip/url
alert whose entity holds at least `cause_share` (default 0.5) of its window's errors is kept, since
that entity is why the global rate is up (a scanner on a quiet site) and its alert says what to
block.

Cause fields (CAUSE_COLUMNS, null where they do not apply, and for rules that do not set them): an
error_rate ip/url alert carries `error_share` (its errors / the global errors of its window); a
global one carries `top_entities`, the TOP_ENTITIES ip and url entries with the most errors in its
window (entity_type, entity, requests, errors; ip first, then by errors, most first).
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from finale.analyzer.settings import Settings, ThresholdParams

RULE = "error_rate"
# The severity escalates to "critical" at twice the threshold, or when half the requests fail.
CRITICAL_FACTOR = 2.0
CRITICAL_RATE = 0.5
# 1.4826 * MAD estimates the standard deviation of a normal distribution, so z reads as "sigmas".
MAD_TO_SIGMA = 1.4826
# Why an alert fired (rules.alerts): new fields after the original ones, so readers of the
# earlier alerts keep working; null where they do not apply (and for rules that do not set them).
CAUSE_COLUMNS = ("error_share", "top_entities")
ALERT_COLUMNS = ("alert_id", "rule", "entity_type", "entity", "window_start", "window_end",
                 "requests", "errors", "error_rate", "threshold", "thresholds_version", "severity",
                 *CAUSE_COLUMNS)
# Entries per scope (ip, url) in a global alert's top_entities.
TOP_ENTITIES = 3
TOP_ENTITIES_TYPE = "array<struct<entity_type:string,entity:string,requests:bigint,errors:bigint>>"
CAUSE_TYPES = {"error_share": "double", "top_entities": TOP_ENTITIES_TYPE}

# Columns built once per Spark context and key (memo): building a Column costs a py4j round trip
# per function call (~0.2 ms), the rules below take a few hundred calls, and the analyzer applies
# the same rules with the same parameters to a new micro-batch every second or so. A Column is an
# unresolved expression, valid in any frame of its context.
_COLUMNS: dict = {}


def memo(key, build: Callable[[], object]):
    """build(), or what it returned the last time for `key` in this Spark context."""
    from pyspark import SparkContext

    full_key = (SparkContext._active_spark_context, key)
    if full_key not in _COLUMNS:
        if len(_COLUMNS) > 512:  # e.g. one entry per thresholds version, over months of reloads
            _COLUMNS.clear()
        _COLUMNS[full_key] = build()
    return _COLUMNS[full_key]


@dataclass(frozen=True)
class Rule:
    name: str
    fire: Callable[[DataFrame, DataFrame, Settings, str | None], DataFrame]
    learn: Callable[[DataFrame, ThresholdParams], DataFrame]
    # The values a threshold of the rule may take (thresholds.validate_thresholds): [0, 1] for a
    # rate; None: any finite number.
    value_range: tuple[float, float] | None = (0.0, 1.0)


RULES: dict[str, Rule] = {}


def register(name: str, fire, learn, value_range: tuple[float, float] | None = (0.0, 1.0)) -> Rule:
    """Add a rule to RULES (its name is the `rule` field of its thresholds and of its alerts)."""
    if name in RULES:
        raise ValueError(f"rule {name!r} is already registered")
    RULES[name] = rule = Rule(name, fire, learn, value_range)
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


def baseline_stats(counts: DataFrame, params: ThresholdParams, metric: str) -> DataFrame:
    """The distribution of `metric` over the eligible windows of each scope population and of each
    entity with enough history: scope, entity (null = the population of the scope), windows,
    requests (support: the eligible windows and the sum of their requests; with sliding windows a
    request is counted in every window that holds it), median, mad, upper_quantile (P_q).

    `counts` has entity_type, entity, requests and `metric` (entity_window_counts' output); a
    window is eligible with requests >= params.min_window_requests.
    """
    eligible = counts.where(F.col("requests") >= F.lit(int(params.min_window_requests)))
    # Each eligible window is a sample of its population (entity null) and, for ip/url, of its
    # own entity: a union, then one grouping computes every scope at once.
    samples = (
        eligible.select(F.col("entity_type").alias("scope"),
                        F.lit(None).cast("string").alias("entity"), "requests",
                        F.col(metric).cast("double").alias("_x"))
        .unionByName(
            eligible.where(F.col("entity_type") != "global")
            .select(F.col("entity_type").alias("scope"), "entity", "requests",
                    F.col(metric).cast("double").alias("_x")))
    )
    group = Window.partitionBy("scope", "entity")
    # MAD needs the group's median before the second median: a window aggregate keeps it per row
    # (no self-join on a nullable key).
    with_median = samples.withColumn("median", F.median("_x").over(group))
    return (
        with_median
        .groupBy("scope", "entity")
        .agg(
            F.count(F.lit(1)).alias("windows"),
            F.sum("requests").cast("long").alias("requests"),
            F.first("median").alias("median"),
            F.median(F.abs(F.col("_x") - F.col("median"))).alias("mad"),
            F.percentile("_x", F.lit(float(params.quantile))).alias("upper_quantile"),
        )
        .where(F.col("entity").isNull() | (F.col("windows") >= F.lit(int(params.min_entity_windows))))
    )


def robust_thresholds(rates: DataFrame, params: ThresholdParams) -> DataFrame:
    """One error-rate threshold per scope population and per entity with enough history.

    `rates` has entity_type, entity, requests, error_rate (window_error_rates' output). Output:
    scope, entity (null = the population of the scope), value, windows, requests, and the three
    terms' ingredients median, mad, upper_quantile (baseline_stats).
    """
    value = F.least(
        F.lit(1.0),
        F.greatest(
            F.col("upper_quantile"),
            F.col("median") + F.lit(float(params.z) * MAD_TO_SIGMA) * F.col("mad"),
            F.col("median") + F.lit(float(params.delta)),
        ),
    )
    return baseline_stats(rates, params, "error_rate").select(
        "scope", "entity", value.alias("value"), "windows", "requests", "median", "mad",
        "upper_quantile")


def alerts(counts: DataFrame, thresholds: DataFrame, min_requests: int, min_errors: int,
           z: float, thresholds_version: str | None = None, *,
           inhibit_by_global: bool = True, cause_share: float = Settings.cause_share) -> DataFrame:
    """The windows of `counts` (entity_window_counts' output) that fire, with ALERT_COLUMNS.

    Threshold of a row: the one of its exact entity (scope = entity_type, entity = entity), else the
    population one of its scope (entity null), else the global population one. Rows without any
    threshold never fire. `thresholds_version` is copied into every alert (the file's "version").
    With `inhibit_by_global` (the default), the ip and url alerts of a window (same window_start
    and window_end) in which the global scope alerts in this same call are left out, except those
    with error_share >= `cause_share`. The cause fields (CAUSE_COLUMNS) are computed from `counts`.
    Meant for static frames (the analyzer calls it inside foreachBatch).
    """
    fires, critical = memo(("error_rate", int(min_requests), int(min_errors), float(z)), lambda: (
        F.coalesce((F.col("requests") >= F.lit(int(min_requests)))
                   & (F.col("errors") >= F.lit(int(min_errors)))
                   & (wilson_lower_bound(F.col("errors"), F.col("requests"), z) > F.col("threshold")),
                   F.lit(False)),
        (F.col("error_rate") >= F.col("threshold") * CRITICAL_FACTOR)
        | (F.col("error_rate") >= CRITICAL_RATE)))
    # The cause fields need every row of a window (its global errors, its top entities), so they
    # are computed on all of `counts` before the firing rows are kept: one shuffle by window.
    firing = with_cause(with_thresholds(counts, thresholds, global_fallback=True)).where(fires)
    if inhibit_by_global:
        firing = inhibited_by_global(firing, cause_share)
    return alert_columns(firing, RULE, thresholds_version, critical)


def with_thresholds(candidates: DataFrame, thresholds: DataFrame, *,
                    global_fallback: bool) -> DataFrame:
    """`candidates` (counts rows) with the column `threshold`: the value of the row's exact entity
    (scope = entity_type, entity = entity), else the population one of its scope (entity null),
    else (with `global_fallback`) the global population one; null when none applies.

    `thresholds` (scope, entity, value) is small, a file's worth: it is read on the driver and
    applied as literals (a map per scope for the entities), so the lookup is no join and runs no
    Spark job of its own in each micro-batch (the analyzer's thresholds are a local table, whose
    read runs no job either). A repeated (scope, entity) counts once, with its highest value."""
    rows = tuple(tuple(row) for row in thresholds.select("scope", "entity", "value").collect())
    return candidates.withColumn("threshold", memo(("threshold", rows, global_fallback),
                                                   lambda: threshold_column(rows, global_fallback)))


def threshold_column(rows, global_fallback: bool) -> Column:
    """with_thresholds' `threshold` expression for the (scope, entity, value) rows."""
    per_scope: dict[str, float] = {}
    per_entity: dict[str, dict[str, float]] = {}
    for scope, entity, value in rows:
        if value is None:
            continue
        if entity is None:
            per_scope[scope] = max(float(value), per_scope.get(scope, -math.inf))
        else:
            values = per_entity.setdefault(scope, {})
            values[entity] = max(float(value), values.get(entity, -math.inf))

    def by_scope(values: dict) -> Column:
        """CASE entity_type WHEN scope THEN values[scope] ... END (null for another scope)."""
        case = None
        for scope, value in sorted(values.items()):
            matches = F.col("entity_type") == F.lit(scope)
            case = F.when(matches, value) if case is None else case.when(matches, value)
        return case

    choices = []
    if per_entity:
        # Per scope, a JSON literal parsed once at planning (constant folding): one literal map,
        # however many entities, instead of two literal columns per entity.
        choices.append(by_scope({
            scope: F.try_element_at(F.from_json(F.lit(json.dumps(values, sort_keys=True)),
                                                "map<string,double>"), F.col("entity"))
            for scope, values in per_entity.items()}))
    if per_scope:
        choices.append(by_scope({scope: F.lit(value) for scope, value in per_scope.items()}))
    if global_fallback and "global" in per_scope:
        choices.append(F.lit(per_scope["global"]))
    return (F.coalesce(*choices) if choices else F.lit(None)).cast("double")


def alert_columns(firing: DataFrame, rule: str, thresholds_version: str | None,
                  critical: Column) -> DataFrame:
    """The firing rows of `rule` (counts columns + threshold, + the cause fields if it has them)
    as alerts (ALERT_COLUMNS)."""
    with_cause_fields = tuple(column in firing.columns for column in CAUSE_COLUMNS)

    def columns():
        return [
            alert_id_column(F.lit(rule), F.col("entity_type"), F.col("entity"),
                            F.col("window_start"), F.col("window_end")).alias("alert_id"),
            F.lit(rule).alias("rule"),
            "entity_type",
            "entity",
            "window_start",
            "window_end",
            "requests",
            "errors",
            F.col("error_rate").cast("double").alias("error_rate"),
            F.col("threshold").cast("double").alias("threshold"),
            F.lit(thresholds_version).cast("string").alias("thresholds_version"),
            # The cause fields, typed nulls for a rule that does not compute them (with_cause):
            # every rule's alerts have the same columns.
            *[F.col(column) if present else F.lit(None).cast(CAUSE_TYPES[column]).alias(column)
              for column, present in zip(CAUSE_COLUMNS, with_cause_fields)],
        ]

    *head, error_share, top_entities = memo(("alert_columns", rule, thresholds_version,
                                             with_cause_fields), columns)
    severity = F.when(critical, F.lit("critical")).otherwise(F.lit("warning")).alias("severity")
    return firing.select(*head, severity, error_share, top_entities)


def with_cause(counts: DataFrame) -> DataFrame:
    """`counts` + error_share (ip/url rows: errors / the global errors of the window) +
    top_entities (global rows: the TOP_ENTITIES ip and url rows of `counts` with the most errors
    in the window), for every row; the caller keeps the firing ones. Built-ins only: window
    functions over the rows of each window, one shuffle by window, no join.

    In the analyzer `counts` is a micro-batch's updated rows: the global row of a window is in
    every batch that updates one of its entities (every line counts in the global scope), so
    error_share is exact; top_entities ranks the entities updated in that batch, which holds the
    lines that changed the global count (a scanner's own lines are in the batch where it fires).
    """
    def columns():
        same_window = Window.partitionBy("window_start", "window_end")
        rank = Window.partitionBy("window_start", "window_end", "entity_type").orderBy(
            F.col("errors").desc(), F.col("entity"))
        is_global = F.col("entity_type") == "global"
        # Errors first: the rows without errors rank after every row with some.
        ranked = F.when(F.col("entity_type").isin("ip", "url") & (F.col("errors") > 0),
                        F.row_number().over(rank))
        global_errors = F.max(F.when(is_global, F.col("errors"))).over(same_window)
        # sort_array on (entity_type, rank, ...) orders ip before url, then by rank; transform
        # drops the rank from the published struct. collect_list skips the nulls (out of the top).
        top = F.sort_array(F.collect_list(F.when(F.col("_rank") <= F.lit(TOP_ENTITIES), F.struct(
            "entity_type", "_rank", "entity", "requests", "errors"))).over(same_window))
        error_share = F.when(~is_global & (F.col("_global_errors") > 0),
                             (F.col("errors") / F.col("_global_errors")).cast("double"))
        top_entities = F.when(is_global & (F.size("_top") > 0), F.transform("_top", lambda e: F.struct(
            e["entity_type"].alias("entity_type"), e["entity"].alias("entity"),
            e["requests"].cast("long").alias("requests"), e["errors"].cast("long").alias("errors")))
        ).cast(TOP_ENTITIES_TYPE)
        return ({"_rank": ranked, "_global_errors": global_errors},
                {"_top": top, "error_share": error_share}, top_entities.alias("top_entities"))

    first, second, top_entities = memo("with_cause", columns)
    return (
        # Partitioned by window once: both window specifications are satisfied by it (one
        # exchange instead of one per specification). Window functions get columns of their
        # own: an expression using one twice would compute it twice.
        counts.repartition("window_start", "window_end")
        .withColumns(first)
        .withColumns(second)
        .select(*counts.columns, "error_share", top_entities)
    )


def inhibited_by_global(firing: DataFrame, cause_share: float = Settings.cause_share) -> DataFrame:
    """`firing` without the ip/url alerts of the windows in which the global scope fires, except
    those whose error_share (with_cause, when the rule computes it) is at least `cause_share`."""
    # Inhibition, like an Alertmanager inhibit rule: when all traffic fails, every IP and URL
    # fails too and would raise one alert each on top of the global one (a real demo run gave
    # 3 global + 69 ip + 103 url alerts for one global incident). The global alert says it
    # all, so the ip/url alerts of its window are dropped (a window function over the firing
    # rows of each window: whether the window's global row is among them).
    # Streaming: the analyzer calls this per micro-batch on the window counts updated in that
    # batch (update mode). Every line counts in the global scope, so the global row of a
    # window is updated in every batch that updates any entity of that window: within a
    # batch, the global alert of a window is always seen together with its entities. Entity
    # alerts emitted in an earlier batch, before the global crossed its threshold, stay
    # (alerts are never retracted).
    # The exception: when one IP or URL holds most of the window's errors, it is the cause of the
    # global alert, not a victim of it (a scanner alone in a quiet window): its alert is kept.
    has_share = "error_share" in firing.columns

    def columns():
        is_global = F.col("entity_type") == "global"
        not_the_cause = (F.coalesce(F.col("error_share"), F.lit(0.0)) < F.lit(float(cause_share))
                         if has_share else F.lit(True))
        global_fires = F.max(is_global.cast("int")).over(
            Window.partitionBy("window_start", "window_end"))
        return global_fires == 1, is_global | ~F.col("_global_fires") | ~not_the_cause

    global_fires, keep = memo(("inhibited_by_global", float(cause_share), has_share), columns)
    return firing.withColumn("_global_fires", global_fires).where(keep).drop("_global_fires")


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
                  thresholds_version, inhibit_by_global=settings.inhibit_by_global,
                  cause_share=settings.cause_share)


register(RULE, fire=fire_error_rate, learn=robust_thresholds)


# --- surge: a traffic surge of an entity against its learned baseline --------------------------
SURGE = "surge"
# The learned request threshold is at least this many times the entity's median window.
SURGE_FACTOR = 2.0


def surge_alerts(counts: DataFrame, thresholds: DataFrame, min_requests: int, z: float,
                 thresholds_version: str | None = None, *,
                 inhibit_by_global: bool = True) -> DataFrame:
    """The windows of `counts` whose requests surge above their learned baseline (ALERT_COLUMNS).

    Threshold T of a row: the one of its exact entity, else the population one of its scope (no
    global fallback: the global request count is no baseline for one IP). A row fires when
    requests >= min_requests and requests > T + z * sqrt(T): a Poisson count of mean T has
    standard deviation sqrt(T), so ordinary noise above the baseline does not fire. No threshold,
    no alert: without a thresholds file (the defaults) this rule is silent. `threshold` in the
    alert is T, in requests per window. Severity: "critical" when requests >= 2 x T.
    With `inhibit_by_global`, a global surge of a window inhibits that window's ip/url surges
    (inhibited_by_global, within this rule only).
    """
    fires, critical = memo(("surge", int(min_requests), float(z)), lambda: (
        (F.col("requests") >= F.lit(int(min_requests)))
        & (F.col("requests") > F.col("threshold") + F.lit(float(z)) * F.sqrt(F.col("threshold"))),
        F.col("requests") >= F.col("threshold") * CRITICAL_FACTOR))
    firing = with_thresholds(counts, thresholds, global_fallback=False).where(fires)
    if inhibit_by_global:
        firing = inhibited_by_global(firing)
    return alert_columns(firing, SURGE, thresholds_version, critical)


def surge_thresholds(counts: DataFrame, params: ThresholdParams) -> DataFrame:
    """One request-count threshold per scope population and per entity with enough history:

        T = max(P_q(requests), median + z * 1.4826 * MAD, SURGE_FACTOR * median)

    over the requests of the eligible windows (baseline_stats). Same output columns as
    robust_thresholds."""
    value = F.greatest(
        F.col("upper_quantile"),
        F.col("median") + F.lit(float(params.z) * MAD_TO_SIGMA) * F.col("mad"),
        F.col("median") * F.lit(SURGE_FACTOR),
    )
    return baseline_stats(counts, params, "requests").select(
        "scope", "entity", value.alias("value"), "windows", "requests", "median", "mad",
        "upper_quantile")


def fire_surge(counts: DataFrame, thresholds: DataFrame, settings: Settings,
               thresholds_version: str | None = None) -> DataFrame:
    return surge_alerts(counts, thresholds, settings.min_requests, settings.z, thresholds_version,
                        inhibit_by_global=settings.inhibit_by_global)


# Its thresholds are request counts: any value >= 0 (thresholds.validate_thresholds).
register(SURGE, fire=fire_surge, learn=surge_thresholds, value_range=(0.0, math.inf))
