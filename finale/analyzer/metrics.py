"""Windowed counts per entity: the numbers every alert rule reads.

`entity_window_counts(logs, window, slide)` counts, per sliding window and for every scope of
SCOPES at once (global = entity "*", ip, url), each metric of METRICS, then the DERIVED columns:
the columns of counts_columns(). The analyzer, the threshold job and the evaluations all count
through this function, so a metric added to METRICS reaches all of them (finale/README.md,
"Extending").

The streaming aggregation keeps these counts in its state: a change of the metrics, the scopes or
the window changes the state's schema, which state_description() names for the analyzer's
checkpoint (finale/analyzer/checkpoint.py).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from finale.common.alert import GLOBAL_ENTITY


@dataclass(frozen=True)
class Metric:
    """A column of the window counts: `compute()` is an aggregate over the parsed lines of one
    (window, entity) in METRICS, or an expression over the metrics of the same row in DERIVED.
    `reads`: the parsed columns it needs beyond BASE_INPUT_COLUMNS."""
    name: str
    compute: Callable[[], Column]
    reads: tuple[str, ...] = ()


GLOBAL_SCOPE = "global"
# (scope, the column that names its entity): the one list of scopes of the stage.
SCOPES: tuple[tuple[str, Callable[[], Column]], ...] = (
    (GLOBAL_SCOPE, lambda: F.lit(GLOBAL_ENTITY)),
    ("ip", lambda: F.col("ip")),
    ("url", lambda: F.col("url")),
)
SCOPE_NAMES = tuple(name for name, _ in SCOPES)
# The scopes whose entities are named by the lines (every scope but the global one).
ENTITY_SCOPES = tuple(name for name in SCOPE_NAMES if name != GLOBAL_SCOPE)

# Windowed metrics, aggregated per (window, entity). Lists: a metric is one more entry.
METRICS: list[Metric] = [
    Metric("requests", lambda: F.count(F.lit(1))),
    Metric("errors", lambda: F.sum(F.when(F.col("status") >= 400, 1).otherwise(0)).cast("long"),
           reads=("status",)),
]
# Columns computed from the metrics of the same row (not kept in the state).
DERIVED: list[Metric] = [
    Metric("error_rate", lambda: (F.col("errors") / F.col("requests")).cast("double")),
]
# The parsed columns every count needs: the event time, the scopes' entities, the parse verdict.
BASE_INPUT_COLUMNS = ("event_time", "ip", "url", "malformed")
KEY_COLUMNS = ("window_start", "window_end", "entity_type", "entity")


def input_columns() -> tuple[str, ...]:
    """The parsed columns the window counts read: the base ones and every metric's `reads`."""
    columns = list(BASE_INPUT_COLUMNS)
    for metric in (*METRICS, *DERIVED):
        columns += [name for name in metric.reads if name not in columns]
    return tuple(columns)


def counts_columns() -> tuple[str, ...]:
    """The columns of entity_window_counts' output, in order."""
    return (*KEY_COLUMNS, *(m.name for m in METRICS), *(m.name for m in DERIVED))


def state_description(window: str, slide: str) -> str:
    """What the streaming aggregation keeps in its state, as text: the window, the scopes and each
    metric's aggregate (Spark's own rendering of the expression). Equal texts, compatible states.
    Needs an active Spark session (a Column is built to render it)."""
    return "\n".join([f"window {window} slide {slide}", f"scopes {','.join(SCOPE_NAMES)}",
                      *(f"metric {m.name} = {m.compute()}" for m in METRICS)])


def entity_window_counts(logs: DataFrame, window: str, slide: str) -> DataFrame:
    """METRICS and DERIVED per (sliding window, entity) for every scope (counts_columns()).

    `logs` is the parser's output (needs input_columns()); malformed rows are excluded. Each line
    is exploded into one (entity_type, entity) pair per scope so that a single stateful
    aggregation (one state store, one watermark) serves every scope. A line without a URL
    (request "-") counts for global and ip only.
    """
    scopes = F.array(*(F.struct(F.lit(name).alias("entity_type"), entity().alias("entity"))
                       for name, entity in SCOPES))
    return (
        logs
        .where(~F.coalesce(F.col("malformed"), F.lit(False)) & F.col("event_time").isNotNull())
        .select(*input_columns(), F.explode(scopes).alias("scope"))
        .where(F.col("scope.entity").isNotNull())
        .groupBy(
            F.window("event_time", window, slide).alias("window"),
            F.col("scope.entity_type").alias("entity_type"),
            F.col("scope.entity").alias("entity"),
        )
        .agg(*(metric.compute().alias(metric.name) for metric in METRICS))
        .select(
            F.col("window.start").alias("window_start"),
            F.col("window.end").alias("window_end"),
            "entity_type",
            "entity",
            *(metric.name for metric in METRICS),
            *(metric.compute().alias(metric.name) for metric in DERIVED),
        )
    )


def analysed_columns(logs: DataFrame) -> DataFrame:
    """The parsed columns the statistics and the window counts read: caching only these skips the
    referer/user-agent unescaping and keeps the cache small."""
    return logs.select(*input_columns())


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
