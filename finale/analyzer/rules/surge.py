"""`surge`: a traffic surge of an entity (a scraper, a bot flood: no errors at all, invisible to
error_rate) against its learned baseline.

Fires when requests >= min_requests and requests > T + z * sqrt(T), T the learned request count
per window of the entity (else of its scope's population; no global fallback, no defaults:
without learned thresholds the rule is silent):

    T = max(P_q(requests), median(requests) + z * 1.4826 * MAD(requests), 2 * median(requests))

Severity: "critical" when requests >= 2 x T, else "warning". A global surge of a window inhibits
that window's ip/url surges (within this rule only: an error_rate alert never inhibits a surge,
nor the reverse; a flood during an outage is a second fact, not a consequence).
"""
from __future__ import annotations

import math

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from finale.analyzer.rules import register
from finale.analyzer.rules.common import (
    CRITICAL_FACTOR,
    MAD_TO_SIGMA,
    alert_columns,
    baseline_stats,
    inhibited_by_global,
    memo,
    with_thresholds,
)
from finale.analyzer.settings import Settings, ThresholdParams

SURGE = "surge"
# The learned request threshold is at least this many times the entity's median window.
SURGE_FACTOR = 2.0


def surge_alerts(counts: DataFrame, thresholds: DataFrame, min_requests: int, z: float,
                 thresholds_version: str | None = None, *,
                 inhibit_by_global: bool = True) -> DataFrame:
    """The windows of `counts` whose requests surge above their learned baseline
    (alert.RULE_COLUMNS).

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
    error_rate.error_rate_thresholds."""
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


# Its thresholds are request counts per window: any value >= 0.
register(SURGE, fire=fire_surge, learn=surge_thresholds, metric="requests", unit="count",
         value_range=(0.0, math.inf))
