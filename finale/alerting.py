"""Alerting analysis of the final stage: windowed error counts per entity, thresholds, alerts.

Every function is `DataFrame -> DataFrame` built from Spark built-ins only, so the same code runs on a
static frame (tests, the threshold job, the evaluation) and on a streaming one (the analyzer).

- `entity_window_counts(logs, window, slide)`: requests and errors (status >= 400) per sliding window
  for three scopes at once, `global` (entity "*"), `ip` and `url`, in one aggregation.
- `read_thresholds(path)` / `thresholds_frame(spark, thresholds)`: the thresholds JSON written by
  threshold_job.py, or DEFAULT_THRESHOLDS when the file does not exist.
- `alerts(counts, thresholds, min_requests, min_errors, z)`: the windows whose error rate is above the
  threshold of their entity (else of its population, else the global one) with confidence z.

Firing rule: requests >= min_requests and errors >= min_errors and
wilson_lower_bound(errors, requests, z) > threshold. The Wilson lower bound is the low end of the
score confidence interval of the error proportion: a handful of errors out of a handful of requests
does not fire, the same proportion over hundreds of requests does.

Inhibition (by default): in a window where the global scope alerts, the ip and url alerts of that
same window are left out, like an Alertmanager inhibit rule: one global alert instead of an alert
storm (one per IP and per URL) when all traffic fails.

Severity: "critical" when error_rate >= 2 x threshold or error_rate >= 0.5, else "warning".
"""
from __future__ import annotations

import json
from pathlib import Path

from pyspark.sql import Column, DataFrame, SparkSession, functions as F
from pyspark.sql.types import DoubleType, StringType, StructField, StructType

RULE = "error_rate"
DEFAULT_THRESHOLDS_PATH = Path(".state/finale/thresholds.json")
# Used when no thresholds file exists yet (before the first threshold_job.py run). Sized for the
# generator's default error model (20 % error users, 30 % error URLs, 50 % failures on error pairs):
# the background is about 3 % errors overall, at most ~15 % for an error user and ~10 % for an
# error URL, so these leave a wide margin, and an incident (most requests of an entity failing)
# is far above them.
DEFAULT_THRESHOLDS = {
    "version": "defaults",
    "generated_at": None,
    "thresholds": [
        {"scope": "global", "entity": None, "value": 0.10},
        {"scope": "ip", "entity": None, "value": 0.30},
        {"scope": "url", "entity": None, "value": 0.30},
    ],
}
# The severity escalates to "critical" at twice the threshold, or when half the requests fail.
CRITICAL_FACTOR = 2.0
CRITICAL_RATE = 0.5

COUNTS_COLUMNS = ("window_start", "window_end", "entity_type", "entity",
                  "requests", "errors", "error_rate")
ALERT_COLUMNS = ("alert_id", "rule", "entity_type", "entity", "window_start", "window_end",
                 "requests", "errors", "error_rate", "threshold", "thresholds_version", "severity")
THRESHOLDS_SCHEMA = StructType([
    StructField("scope", StringType(), False),
    StructField("entity", StringType(), True),
    StructField("value", DoubleType(), False),
])


def entity_window_counts(logs: DataFrame, window: str, slide: str) -> DataFrame:
    """Requests, errors and error rate per (sliding window, entity) for the global, ip and url scopes.

    `logs` is the parser's output (needs event_time, ip, url, status, malformed); malformed rows are
    excluded. Each line is exploded into three (entity_type, entity) pairs so that a single stateful
    aggregation (one state store, one watermark) serves the three scopes. A line without a URL
    (request "-") counts for global and ip only.
    """
    scopes = F.array(
        F.struct(F.lit("global").alias("entity_type"), F.lit("*").alias("entity")),
        F.struct(F.lit("ip").alias("entity_type"), F.col("ip").alias("entity")),
        F.struct(F.lit("url").alias("entity_type"), F.col("url").alias("entity")),
    )
    return (
        logs
        .where(~F.coalesce(F.col("malformed"), F.lit(False)) & F.col("event_time").isNotNull())
        .select("event_time", "status", F.explode(scopes).alias("scope"))
        .where(F.col("scope.entity").isNotNull())
        .groupBy(
            F.window("event_time", window, slide).alias("window"),
            F.col("scope.entity_type").alias("entity_type"),
            F.col("scope.entity").alias("entity"),
        )
        .agg(
            F.count(F.lit(1)).alias("requests"),
            F.sum(F.when(F.col("status") >= 400, 1).otherwise(0)).cast("long").alias("errors"),
        )
        .select(
            F.col("window.start").alias("window_start"),
            F.col("window.end").alias("window_end"),
            "entity_type",
            "entity",
            "requests",
            "errors",
            (F.col("errors") / F.col("requests")).cast("double").alias("error_rate"),
        )
    )


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


def read_thresholds(path: str | Path = DEFAULT_THRESHOLDS_PATH) -> dict:
    """The thresholds JSON written by threshold_job.py; DEFAULT_THRESHOLDS when the file is absent.

    A file that exists but is not valid JSON raises ValueError (a half-written file must not silently
    switch the analyzer back to the defaults).
    """
    path = Path(path)
    if not path.exists():
        return json.loads(json.dumps(DEFAULT_THRESHOLDS))
    try:
        thresholds = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from error
    if not isinstance(thresholds, dict) or not isinstance(thresholds.get("thresholds"), list):
        raise ValueError(f"{path}: no 'thresholds' list")
    return thresholds


def thresholds_frame(spark: SparkSession, thresholds: dict) -> DataFrame:
    """The `thresholds` list as a DataFrame: scope, entity (null = the population of that scope), value."""
    rows = [(str(item["scope"]), None if item.get("entity") is None else str(item["entity"]),
             float(item["value"]))
            for item in thresholds.get("thresholds", [])]
    return spark.createDataFrame(rows, THRESHOLDS_SCHEMA)


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
        firing = firing.join(
            F.broadcast(global_windows),
            (F.col("window_start") == F.col("_g_start")) & (F.col("window_end") == F.col("_g_end"))
            & (F.col("entity_type") != "global"),
            "left_anti")
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
