"""The thresholds file: its schema, reading, writing. Written by threshold_job.py, read by the analyzer.

{"version": hash of the content, "generated_at", "parameters", "input",
 "thresholds": [{"rule", "scope", "entity" (null = the population of the scope), "value",
                 "windows", "requests"}, ...]}

An item without "rule" (files written before rules had names) belongs to LEGACY_RULE. Without a
file, DEFAULT_THRESHOLDS apply. Validation is what read_thresholds checks, no more: a stricter
check goes in read_thresholds, which every reader calls.
"""
from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import DoubleType, StringType, StructField, StructType

from metrics import SCOPE_NAMES
from settings import DEFAULT_THRESHOLDS as DEFAULT_THRESHOLDS_PATH, ThresholdParams

LEGACY_RULE = "error_rate"
# Used when no thresholds file exists yet (before the first threshold_job.py run). Sized for the
# generator's default error model (20 % error users, 30 % error URLs, 50 % failures on error pairs):
# the background is about 3 % errors overall, at most ~15 % for an error user and ~10 % for an
# error URL, so these leave a wide margin, and an incident (most requests of an entity failing)
# is far above them.
DEFAULT_THRESHOLDS = {
    "version": "defaults",
    "generated_at": None,
    "thresholds": [
        {"rule": LEGACY_RULE, "scope": "global", "entity": None, "value": 0.10},
        {"rule": LEGACY_RULE, "scope": "ip", "entity": None, "value": 0.30},
        {"rule": LEGACY_RULE, "scope": "url", "entity": None, "value": 0.30},
    ],
}
# The thresholds of one rule, as its alert function joins them.
THRESHOLDS_SCHEMA = StructType([
    StructField("scope", StringType(), False),
    StructField("entity", StringType(), True),
    StructField("value", DoubleType(), False),
])
# Every rule's thresholds in one frame (the analyzer keeps one cached frame per file version).
RULE_THRESHOLDS_SCHEMA = StructType([StructField("rule", StringType(), False),
                                     *THRESHOLDS_SCHEMA.fields])


def read_thresholds(path: str | Path = DEFAULT_THRESHOLDS_PATH) -> dict:
    """The thresholds JSON written by threshold_job.py; DEFAULT_THRESHOLDS when the file is absent.

    A file that exists but is not valid JSON raises ValueError (a half-written file must not silently
    switch the analyzer back to the defaults). Items without a rule get LEGACY_RULE.
    """
    path = Path(path)
    if not path.exists():
        return copy.deepcopy(DEFAULT_THRESHOLDS)
    try:
        thresholds = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from error
    if not isinstance(thresholds, dict) or not isinstance(thresholds.get("thresholds"), list):
        raise ValueError(f"{path}: no 'thresholds' list")
    for item in thresholds["thresholds"]:
        if isinstance(item, dict):
            item.setdefault("rule", LEGACY_RULE)
    return thresholds


def _rows(thresholds: dict) -> list[tuple]:
    return [(str(item.get("rule", LEGACY_RULE)), str(item["scope"]),
             None if item.get("entity") is None else str(item["entity"]), float(item["value"]))
            for item in thresholds.get("thresholds", [])]


def thresholds_frame(spark: SparkSession, thresholds: dict, rule: str = LEGACY_RULE) -> DataFrame:
    """The thresholds of `rule` as a DataFrame: scope, entity (null = the population of that
    scope), value."""
    return spark.createDataFrame([row[1:] for row in _rows(thresholds) if row[0] == rule],
                                 THRESHOLDS_SCHEMA)


def rule_thresholds_frame(spark: SparkSession, thresholds: dict) -> DataFrame:
    """Every rule's thresholds: rule, scope, entity, value (rules.fire_all splits them by rule)."""
    return spark.createDataFrame(_rows(thresholds), RULE_THRESHOLDS_SCHEMA)


def thresholds_document(params: ThresholdParams, statistics: dict,
                        learned: dict[str, DataFrame]) -> dict:
    """The JSON document of the thresholds `learned` per rule (frames with scope, entity, value,
    windows, requests); `version` hashes everything but generated_at, so the same input and
    parameters give the same version and any change gives a new one."""
    order = {scope: rank for rank, scope in enumerate(SCOPE_NAMES)}
    items = []
    for rule, frame in learned.items():
        # The thresholds table is small (scopes + entities with history): the only collect of the job.
        rows = frame.select("scope", "entity", "value", "windows", "requests").collect()
        items += sorted(
            ({"rule": rule, "scope": row["scope"], "entity": row["entity"],
              "value": round(float(row["value"]), 6), "windows": int(row["windows"]),
              "requests": int(row["requests"])} for row in rows),
            key=lambda item: (order.get(item["scope"], len(order)), item["entity"] is not None,
                              item["entity"] or ""),
        )
    content = {"parameters": asdict(params), "input": statistics, "thresholds": items}
    digest = hashlib.sha256(
        json.dumps(content, sort_keys=True, separators=(",", ":")).encode("utf-8")).hexdigest()
    return {
        "version": digest[:16],
        "generated_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        **content,
    }


class ThresholdsFile:
    """The thresholds file as a cached frame of every rule's rows (rule_thresholds_frame), re-read
    when its mtime changes: a cheap hot reload between micro-batches."""

    def __init__(self, path: Path, log=print):
        self.path, self.log = Path(path), log
        self.mtime: float | None = -1.0
        self.frame: DataFrame | None = None
        self.version: str | None = None

    def _mtime(self) -> float | None:
        try:
            return self.path.stat().st_mtime
        except FileNotFoundError:
            return None

    def current(self, spark: SparkSession) -> tuple[DataFrame, str | None]:
        mtime = self._mtime()
        if mtime != self.mtime or self.frame is None:
            try:
                data = read_thresholds(self.path)
            except (OSError, ValueError, KeyError, TypeError) as error:
                if self.frame is None:
                    raise
                # A half-written or broken file must not stop the analyzer: keep the last good one.
                self.log(f"warning: thresholds not reloaded, keeping version {self.version}: {error}")
                self.mtime = mtime
                return self.frame, self.version
            frame = rule_thresholds_frame(spark, data).cache()
            if self.frame is not None:
                self.frame.unpersist()
                self.log(f"thresholds reloaded from {self.path}: version {data.get('version')}")
            self.frame, self.version, self.mtime = frame, data.get("version"), mtime
        return self.frame, self.version
