"""Windowed counts per entity: the numbers every alert rule reads.

`entity_window_counts(logs, window, slide)` counts, per sliding window, for the scopes declared in
SCOPES at once (global = entity "*", ip, url), each metric of METRICS, then the DERIVED columns.
Adding a windowed metric (e.g. bytes) is one entry in METRICS (and DERIVED for a ratio of them),
plus the parsed column it reads in INPUT_COLUMNS (see "Extending" in finale/README.md): the
analyzer, the threshold job and the evaluation all count through this function.
"""
from __future__ import annotations

from collections.abc import Callable

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from finale.analyzer.settings import GLOBAL_ENTITY

# (scope, the column that names its entity): the one list of scopes of the stage.
SCOPES: tuple[tuple[str, Callable[[], Column]], ...] = (
    ("global", lambda: F.lit(GLOBAL_ENTITY)),
    ("ip", lambda: F.col("ip")),
    ("url", lambda: F.col("url")),
)
SCOPE_NAMES = tuple(name for name, _ in SCOPES)
# Windowed metrics: name -> aggregate over the parsed lines of one (window, entity).
METRICS: tuple[tuple[str, Callable[[], Column]], ...] = (
    ("requests", lambda: F.count(F.lit(1))),
    ("errors", lambda: F.sum(F.when(F.col("status") >= 400, 1).otherwise(0)).cast("long")),
)
# Columns computed from the metrics of the same row.
DERIVED: tuple[tuple[str, Callable[[], Column]], ...] = (
    ("error_rate", lambda: (F.col("errors") / F.col("requests")).cast("double")),
)
# The parsed columns the metrics read (status) and the scopes name (ip, url).
INPUT_COLUMNS = ("event_time", "ip", "url", "status", "malformed")
COUNTS_COLUMNS = ("window_start", "window_end", "entity_type", "entity",
                  *(name for name, _ in METRICS), *(name for name, _ in DERIVED))


def entity_window_counts(logs: DataFrame, window: str, slide: str) -> DataFrame:
    """METRICS and DERIVED per (sliding window, entity) for every scope of SCOPES (COUNTS_COLUMNS).

    `logs` is the parser's output (needs INPUT_COLUMNS); malformed rows are excluded. Each line is
    exploded into one (entity_type, entity) pair per scope so that a single stateful aggregation
    (one state store, one watermark) serves every scope. A line without a URL (request "-") counts
    for global and ip only.
    """
    scopes = F.array(*(F.struct(F.lit(name).alias("entity_type"), entity().alias("entity"))
                       for name, entity in SCOPES))
    return (
        logs
        .where(~F.coalesce(F.col("malformed"), F.lit(False)) & F.col("event_time").isNotNull())
        # Every input column rides along (Spark prunes those no metric reads): a metric over a
        # new parsed column only adds that column to INPUT_COLUMNS.
        .select(*INPUT_COLUMNS, F.explode(scopes).alias("scope"))
        .where(F.col("scope.entity").isNotNull())
        .groupBy(
            F.window("event_time", window, slide).alias("window"),
            F.col("scope.entity_type").alias("entity_type"),
            F.col("scope.entity").alias("entity"),
        )
        .agg(*(aggregate().alias(name) for name, aggregate in METRICS))
        .select(
            F.col("window.start").alias("window_start"),
            F.col("window.end").alias("window_end"),
            "entity_type",
            "entity",
            *(name for name, _ in METRICS),
            *(derive().alias(name) for name, derive in DERIVED),
        )
    )


def analysed_columns(logs: DataFrame) -> DataFrame:
    """The parsed columns the statistics and the window counts read: caching only these skips the
    referer/user-agent unescaping and keeps the cache small."""
    return logs.select(*INPUT_COLUMNS)


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
