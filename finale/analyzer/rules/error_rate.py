"""`error_rate`: an entity's error rate significantly above its learned threshold.

Fires when requests >= min_requests and errors >= min_errors and
wilson_lower_bound(errors, requests, z) > threshold. The Wilson lower bound is the low end of the
score confidence interval of the error proportion: a handful of errors out of a handful of requests
does not fire, the same proportion over hundreds of requests does. The threshold is learned as

    T = min(1, max(P_q(rates), median(rates) + z * 1.4826 * MAD(rates), median(rates) + delta))

over the window error rates of each scope population and each entity with enough history.
Severity: "critical" when error_rate >= 2 x threshold or error_rate >= 0.5, else "warning".

Inhibition (by default): in a window where the global scope alerts, the ip and url alerts of that
same window are left out, like an Alertmanager inhibit rule (one global alert instead of one per
IP and URL when all traffic fails), except the cause: an ip/url alert whose entity holds at least
`cause_share` (default 0.5) of its window's errors is kept, since that entity is why the global
rate is up, and its alert says what to block. Cause fields: an ip/url alert carries
`error_share`, a global one `top_entities` (common.with_cause).
"""
from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from finale.analyzer.rules import register
from finale.analyzer.rules.common import (
    CRITICAL_FACTOR,
    CRITICAL_RATE,
    MAD_TO_SIGMA,
    alert_columns,
    baseline_stats,
    inhibited_by_global,
    memo,
    wilson_lower_bound,
    with_cause,
    with_thresholds,
)
from finale.analyzer.settings import Settings, ThresholdParams

ERROR_RATE = "error_rate"


def error_rate_thresholds(rates: DataFrame, params: ThresholdParams) -> DataFrame:
    """One error-rate threshold per scope population and per entity with enough history.

    `rates` has entity_type, entity, requests, error_rate (entity_window_counts' output). Output:
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


def error_rate_alerts(counts: DataFrame, thresholds: DataFrame, min_requests: int, min_errors: int,
           z: float, thresholds_version: str | None = None, *,
           inhibit_by_global: bool = True, cause_share: float = Settings.cause_share) -> DataFrame:
    """The windows of `counts` (entity_window_counts' output) that fire, as alerts
    (alert.RULE_COLUMNS).

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
                   & (wilson_lower_bound(F.col("errors"), F.col("requests"), z)
                      > F.col("threshold")),
                   F.lit(False)),
        (F.col("error_rate") >= F.col("threshold") * CRITICAL_FACTOR)
        | (F.col("error_rate") >= CRITICAL_RATE)))
    # The cause fields need every row of a window (its global errors, its top entities), so they
    # are computed on all of `counts` before the firing rows are kept: one shuffle by window.
    firing = with_cause(with_thresholds(counts, thresholds, global_fallback=True)).where(fires)
    if inhibit_by_global:
        firing = inhibited_by_global(firing, cause_share)
    return alert_columns(firing, ERROR_RATE, thresholds_version, critical)


def fire_error_rate(counts: DataFrame, thresholds: DataFrame, settings: Settings,
                    thresholds_version: str | None = None) -> DataFrame:
    return error_rate_alerts(counts, thresholds, settings.min_requests, settings.min_errors,
                             settings.z, thresholds_version,
                             inhibit_by_global=settings.inhibit_by_global,
                             cause_share=settings.cause_share)


register(ERROR_RATE, fire=fire_error_rate, learn=error_rate_thresholds, metric="error_rate",
         unit="rate", value_range=(0.0, 1.0))
