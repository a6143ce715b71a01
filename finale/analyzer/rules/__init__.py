"""Alert rules: each one a module of this package that registers a rule by name.

The contract (tests/test_analyzer_rules.py holds the rules to it):
- A rule is `register(name, fire, learn, metric=..., unit=..., value_range=...)`, called at the
  import of its module. Every module of this package is imported when the package is (the built-in
  error_rate and surge first, then the others by name), so adding a rule is adding one file here.
  A second registration of a name is a ValueError.
- `name` is the `rule` field of its alerts and of its rows in the thresholds file. `metric` is the
  windowed metric it compares (a column of metrics.counts_columns()), written into its alerts with
  its value; `unit` ("rate" or "count") says how that value and the threshold read; `value_range`
  bounds its threshold values for the file's validation (None: any finite number).
- fire(counts, thresholds, settings, thresholds_version) -> alerts with exactly
  alert.RULE_COLUMNS (common.alert_columns builds them): the windows of `counts` (the window
  counts; in the analyzer the windows updated by one micro-batch) that break the rule.
  `thresholds` are the rule's own rows of the thresholds file (scope, entity (null = the scope's
  population), value in the rule's unit). Spark built-ins on static frames, a deterministic
  alert_id, no collect of `counts`, and as few Spark jobs as can be: the analyzer calls it at
  every micro-batch.
- A rule without any threshold row never fires, and fire_all does not call it: a rule is
  switched on by learning (or writing) its thresholds.
- learn(counts, params) -> thresholds with columns scope, entity, value, windows, requests: what
  threshold_job.py writes for the rule, from the window counts of past logs.
- Rules are independent: one rule's alerts never inhibit another's.
"""
from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from finale.analyzer.settings import Settings, ThresholdParams
from finale.common.alert import RULE_DDL, UNITS

BUILT_IN = ("error_rate", "surge")


@dataclass(frozen=True)
class Rule:
    name: str
    fire: Callable[[DataFrame, DataFrame, Settings, str | None], DataFrame]
    learn: Callable[[DataFrame, ThresholdParams], DataFrame]
    metric: str
    unit: str
    # The values a threshold of the rule may take: [0, 1] for a rate; None: any finite number.
    value_range: tuple[float, float] | None


RULES: dict[str, Rule] = {}


def register(name: str, fire, learn, *, metric: str, unit: str,
             value_range: tuple[float, float] | None = None) -> Rule:
    """Add a rule to RULES (its name is the `rule` field of its thresholds and of its alerts)."""
    if name in RULES:
        raise ValueError(f"rule {name!r} is already registered")
    if unit not in UNITS:
        raise ValueError(f"rule {name!r}: unit must be one of {', '.join(UNITS)}, got {unit!r}")
    RULES[name] = rule = Rule(name, fire, learn, metric, unit, value_range)
    return rule


def fire_all(counts: DataFrame, thresholds: DataFrame, settings: Settings,
             thresholds_version: str | None = None) -> DataFrame:
    """The alerts of every registered rule that has thresholds. `thresholds`: every rule's rows
    (rule, scope, entity, value: thresholds.rule_thresholds_frame, a small local table read on
    the driver); each rule sees only its own."""
    # A projection of the analyzer's local table is a local table: collected without a Spark job.
    with_rows = {row["rule"] for row in thresholds.select("rule").collect()}
    fired = [rule.fire(counts, thresholds.where(F.col("rule") == rule.name).drop("rule"),
                       settings, thresholds_version)
             for rule in RULES.values() if rule.name in with_rows]
    if not fired:
        return counts.sparkSession.createDataFrame([], RULE_DDL)
    union = fired[0]
    for frame in fired[1:]:
        union = union.unionByName(frame)
    return union


def learn_all(counts: DataFrame, params: ThresholdParams) -> dict[str, DataFrame]:
    """Every registered rule's learned thresholds, by rule name (thresholds.thresholds_document)."""
    return {rule.name: rule.learn(counts, params) for rule in RULES.values()}


def _load_rule_modules() -> None:
    """Import the built-in rules, then every other module of this package, by name."""
    others = sorted(info.name for info in pkgutil.iter_modules(__path__)
                    if info.name not in BUILT_IN and info.name != "common")
    for name in (*BUILT_IN, *others):
        importlib.import_module(f"{__name__}.{name}")


_load_rule_modules()
