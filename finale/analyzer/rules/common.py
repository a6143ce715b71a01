"""What alert rules share: thresholds lookup, baseline statistics, the alert columns, causes and
inhibition. A rule module (finale/analyzer/rules/NAME.py) builds its fire and learn functions from
these; the registry is finale/analyzer/rules/__init__.py.
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from finale.analyzer.metrics import ENTITY_SCOPES, GLOBAL_SCOPE
from finale.analyzer.settings import Settings, ThresholdParams
from finale.common import alert

# The severity escalates to "critical" at twice the threshold, or when half the requests fail.
CRITICAL_FACTOR = 2.0
CRITICAL_RATE = 0.5
# 1.4826 * MAD estimates the standard deviation of a normal distribution, so z reads as "sigmas".
MAD_TO_SIGMA = 1.4826
# Why an alert fired: null where they do not apply, and for rules that do not set them.
CAUSE_COLUMNS = ("error_share", "top_entities")
# Entries per entity scope (ip, url) in a global alert's top_entities.
TOP_ENTITIES = 3

# Columns built once per Spark context and key (memo): building a Column costs a py4j round trip
# per function call, the rules below take a few hundred calls, and the analyzer applies the same
# rules with the same parameters to a new micro-batch at every trigger (measured:
# bench/RESULTS.md). A Column is an unresolved expression, valid in any frame of its context.
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
            eligible.where(F.col("entity_type") != GLOBAL_SCOPE)
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
        .where(F.col("entity").isNull()
               | (F.col("windows") >= F.lit(int(params.min_entity_windows))))
    )


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
    if global_fallback and GLOBAL_SCOPE in per_scope:
        choices.append(F.lit(per_scope[GLOBAL_SCOPE]))
    return (F.coalesce(*choices) if choices else F.lit(None)).cast("double")


def alert_columns(firing: DataFrame, rule: str, thresholds_version: str | None,
                  critical: Column) -> DataFrame:
    """The firing rows of the registered rule `rule` (counts columns + threshold, + the cause fields
    if it computes them) as alerts: alert.RULE_COLUMNS, with the rule's declared metric and unit
    (`metric`, `value`, `unit`) and `severity` critical where `critical` holds."""
    from finale.analyzer.rules import RULES  # the registry imports this module

    declared = RULES[rule]
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
            *[F.col(column) if present else F.lit(None).cast(alert.TYPES[column]).alias(column)
              for column, present in zip(CAUSE_COLUMNS, with_cause_fields, strict=True)],
            F.lit(declared.metric).alias("metric"),
            F.col(declared.metric).cast("double").alias("value"),
            F.lit(declared.unit).alias("unit"),
        ]

    built = memo(("alert_columns", rule, declared.metric, declared.unit, thresholds_version,
                  with_cause_fields), columns)
    head, tail = built[:11], built[11:]  # severity, per batch, goes between the two
    severity = F.when(critical, F.lit("critical")).otherwise(F.lit("warning")).alias("severity")
    return firing.select(*head, severity, *tail)


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
        is_global = F.col("entity_type") == GLOBAL_SCOPE
        # Errors first: the rows without errors rank after every row with some.
        ranked = F.when(F.col("entity_type").isin(*ENTITY_SCOPES) & (F.col("errors") > 0),
                        F.row_number().over(rank))
        global_errors = F.max(F.when(is_global, F.col("errors"))).over(same_window)
        # sort_array on (entity_type, rank, ...) orders ip before url, then by rank; transform
        # drops the rank from the published struct. collect_list skips the nulls (out of the top).
        top = F.sort_array(F.collect_list(F.when(F.col("_rank") <= F.lit(TOP_ENTITIES), F.struct(
            "entity_type", "_rank", "entity", "requests", "errors"))).over(same_window))
        error_share = F.when(~is_global & (F.col("_global_errors") > 0),
                             (F.col("errors") / F.col("_global_errors")).cast("double"))
        top_entities = F.when(is_global & (F.size("_top") > 0), F.transform(
            "_top", lambda e: F.struct(
                e["entity_type"].alias("entity_type"), e["entity"].alias("entity"),
                e["requests"].cast("long").alias("requests"),
                e["errors"].cast("long").alias("errors")))
        ).cast(alert.TOP_ENTITIES_TYPE)
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
    # fails too and would raise one alert each on top of the global one, an alert storm that
    # hides the one fact that matters (measured: bench/RESULTS.md, `make evaluate`). The global
    # alert says it all, so the ip/url alerts of its window are dropped (a window function over
    # the firing rows of each window: whether the window's global row is among them).
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
        is_global = F.col("entity_type") == GLOBAL_SCOPE
        not_the_cause = (F.coalesce(F.col("error_share"), F.lit(0.0)) < F.lit(float(cause_share))
                         if has_share else F.lit(True))
        global_fires = F.max(is_global.cast("int")).over(
            Window.partitionBy("window_start", "window_end"))
        return global_fires == 1, is_global | ~F.col("_global_fires") | ~not_the_cause

    global_fires, keep = memo(("inhibited_by_global", float(cause_share), has_share), columns)
    return firing.withColumn("_global_fires", global_fires).where(keep).drop("_global_fires")


def alert_id_column(rule: Column, entity_type: Column, entity: Column,
                    window_start: Column, window_end: Column) -> Column:
    """sha256 hex of "rule|entity_type|entity|start|end", the bounds in microseconds since the
    epoch.

    Deterministic (no time zone, no run-dependent input): a replayed or restarted run gives the same
    id to the same alert, so the compacted alerts topic and the viewer keep one copy.
    """
    return F.sha2(
        F.concat_ws("|", rule, entity_type, entity,
                    F.unix_micros(window_start).cast("string"),
                    F.unix_micros(window_end).cast("string")),
        256,
    )


