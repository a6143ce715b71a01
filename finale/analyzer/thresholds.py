"""The thresholds file: its schema, reading, writing. Written by threshold_job.py, read by the
analyzer.

{"version": hash of the content, "generated_at", "parameters", "input",
 "thresholds": [{"rule", "scope", "entity" (null = the population of the scope), "value",
                 "windows", "requests"}, ...]}

Without a file at the default path, DEFAULT_THRESHOLDS apply; a path given explicitly must exist.

The file is validated as a whole by validate_thresholds (read_thresholds, which every reader calls,
and threshold_job.py before it writes): a non-empty `thresholds` list; each item a known rule
(rules.RULES), a known scope (metrics.SCOPE_NAMES), an entity null or a non-empty string, a finite
number `value` in the rule's range ([0, 1] for error_rate's rates, >= 0 for surge's requests per
window), no two items for the same (rule, scope,
entity); and `parameters.window` / `parameters.slide`, when present, equal to the analyzer's
(a rate learned over other windows is not the rate the analyzer compares). The first fault found
is the error, naming its entry: `thresholds[3] (rule error_rate, scope ip, entity '10.0.0.1'):
value 'abc' is not a number`.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import DoubleType, StringType, StructField, StructType

from finale.analyzer.metrics import GLOBAL_SCOPE, SCOPE_NAMES
from finale.analyzer.rules import RULES
from finale.analyzer.rules.error_rate import ERROR_RATE
from finale.analyzer.settings import DEFAULT_THRESHOLDS as DEFAULT_THRESHOLDS_PATH
from finale.analyzer.settings import ThresholdParams
from finale.common.cli import duration_seconds

# Used when no thresholds file exists yet (before the first threshold_job.py run). Sized for the
# generator's default error model (20 % error users, 30 % error URLs, 50 % failures on error pairs):
# the background is about 3 % errors overall, at most ~15 % for an error user and ~10 % for an
# error URL, so these leave a wide margin, and an incident (most requests of an entity failing)
# is far above them.
DEFAULT_THRESHOLDS = {
    "version": "defaults",
    "generated_at": None,
    "thresholds": [
        {"rule": ERROR_RATE, "scope": GLOBAL_SCOPE, "entity": None, "value": 0.10},
        {"rule": ERROR_RATE, "scope": "ip", "entity": None, "value": 0.30},
        {"rule": ERROR_RATE, "scope": "url", "entity": None, "value": 0.30},
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


class ThresholdsError(ValueError):
    """A thresholds file that must not be used: one line naming the file and the faulty entry."""


def _entry(index: int, item: dict) -> str:
    return (f"thresholds[{index}] (rule {item.get('rule')}, scope "
            f"{item.get('scope')}, entity {item.get('entity')!r})")


def validate_thresholds(thresholds, window: str | None = None, slide: str | None = None) -> None:
    """Raise ThresholdsError (without the file name) at the first fault of the document; window /
    slide: the analyzer's, checked against the `parameters` the file was learned with."""
    if not isinstance(thresholds, dict) or not isinstance(thresholds.get("thresholds"), list):
        raise ThresholdsError("no 'thresholds' list")
    if not thresholds["thresholds"]:
        raise ThresholdsError("the 'thresholds' list is empty: no alert could ever fire")
    seen = set()
    for index, item in enumerate(thresholds["thresholds"]):
        if not isinstance(item, dict):
            raise ThresholdsError(f"thresholds[{index}]: not an object ({item!r})")
        where = _entry(index, item)
        rule = RULES.get(item.get("rule")) if isinstance(item.get("rule"), str) else None
        if rule is None:
            raise ThresholdsError(f"{where}: unknown rule (known: {', '.join(RULES)}; "
                                  "deploy a new rule's code before thresholds that name it)")
        if item.get("scope") not in SCOPE_NAMES:
            raise ThresholdsError(f"{where}: unknown scope (known: {', '.join(SCOPE_NAMES)})")
        entity = item.get("entity")
        if entity is not None and not (isinstance(entity, str) and entity):
            raise ThresholdsError(f"{where}: entity must be null or a non-empty string")
        if "value" not in item:
            raise ThresholdsError(f"{where}: no value")
        value = item["value"]
        # bool is an int in Python, but `true` is no threshold.
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ThresholdsError(f"{where}: value {value!r} is not a number")
        if not math.isfinite(value):
            raise ThresholdsError(f"{where}: value {value!r} is not finite")
        if rule.value_range is not None and not rule.value_range[0] <= value <= rule.value_range[1]:
            low, high = rule.value_range
            raise ThresholdsError(f"{where}: value {value!r} is outside [{low:g}, {high:g}]")
        key = (rule.name, item["scope"], entity)
        if key in seen:
            raise ThresholdsError(
                f"{where}: a second threshold for the same rule, scope and entity")
        seen.add(key)
    parameters = thresholds.get("parameters")
    if parameters is None:
        return
    if not isinstance(parameters, dict):
        raise ThresholdsError("'parameters' is not an object")
    for name, expected in (("window", window), ("slide", slide)):
        learned = parameters.get(name)
        if expected is None or learned is None:
            continue
        try:
            same = duration_seconds(str(learned)) == duration_seconds(expected)
        except ValueError:
            raise ThresholdsError(f"parameters.{name} {learned!r} is not an interval") from None
        if not same:
            raise ThresholdsError(
                f"learned with {name} {learned!r}, the analyzer uses --{name} {expected!r}: "
                f"re-run threshold_job.py with --{name} {expected!r}")


def read_thresholds(path: str | Path = DEFAULT_THRESHOLDS_PATH, required: bool = False,
                    window: str | None = None, slide: str | None = None) -> dict:
    """The thresholds JSON written by threshold_job.py, validated (validate_thresholds).

    A missing file gives DEFAULT_THRESHOLDS, unless `required` (a path the user named). Anything
    wrong raises ThresholdsError "PATH: what": a half-written or broken file must never silently
    switch the analyzer to other thresholds.
    """
    path = Path(path)
    if not path.exists():
        if required:
            raise ThresholdsError(f"{path}: no such file")
        return copy.deepcopy(DEFAULT_THRESHOLDS)
    try:
        thresholds = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ThresholdsError(f"{path}: not valid JSON ({error})") from error
    except (OSError, UnicodeDecodeError) as error:
        raise ThresholdsError(f"{path}: cannot be read ({error})") from error
    try:
        validate_thresholds(thresholds, window, slide)
    except ThresholdsError as error:
        raise ThresholdsError(f"{path}: {error}") from None
    return thresholds


def _rows(thresholds: dict) -> list[tuple]:
    return [(str(item["rule"]), str(item["scope"]),
             None if item.get("entity") is None else str(item["entity"]), float(item["value"]))
            for item in thresholds.get("thresholds", [])]


def local_frame(spark: SparkSession, rows: list[tuple], schema: StructType) -> DataFrame:
    """`rows` as a local table (a VALUES list, the values passed as query parameters, never
    spliced into the SQL text). The analyzer's rules read their thresholds on the driver at every
    micro-batch: from a local table that read runs no Spark job, where createDataFrame's
    parallelized list runs one (and starts Python workers) for every read."""
    if not rows:
        return spark.createDataFrame([], schema)
    args, tuples = {}, []
    for index, row in enumerate(rows):
        markers = []
        for field, value in zip(schema.fields, row, strict=True):
            args[f"{field.name}{index}"] = value
            markers.append(f"CAST(:{field.name}{index} AS {field.dataType.simpleString()})")
        tuples.append(f"({', '.join(markers)})")
    names = ", ".join(field.name for field in schema.fields)
    return spark.sql(f"SELECT * FROM VALUES {', '.join(tuples)} AS thresholds({names})", args=args)


def rule_thresholds_frame(spark: SparkSession, thresholds: dict) -> DataFrame:
    """Every rule's thresholds as a local table: rule, scope, entity, value (rules.fire_all splits
    them by rule)."""
    return local_frame(spark, _rows(thresholds), RULE_THRESHOLDS_SCHEMA)


def thresholds_document(params: ThresholdParams, statistics: dict,
                        learned: dict[str, DataFrame]) -> dict:
    """The JSON document of the thresholds `learned` per rule (frames with scope, entity, value,
    windows, requests); `version` hashes everything but generated_at, so the same input and
    parameters give the same version and any change gives a new one."""
    order = {scope: rank for rank, scope in enumerate(SCOPE_NAMES)}
    items = []
    for rule, frame in learned.items():
        # The thresholds table is small (scopes + entities with history): the only collect of the
        # job.
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
    """The thresholds file as a local table of every rule's rows (rule_thresholds_frame), re-read
    when its mtime changes: a cheap hot reload between micro-batches.

    `required`, `window`, `slide`: as read_thresholds. A file that becomes invalid (or missing, if
    required) keeps the last good thresholds in use; `error` says why until a valid file replaces
    it, and the log gets one line per distinct error."""

    def __init__(self, path: Path, log=print, required: bool = False, window: str | None = None,
                 slide: str | None = None):
        self.path, self.log = Path(path), log
        self.required, self.window, self.slide = required, window, slide
        self.mtime: float | None = -1.0
        self.frame: DataFrame | None = None
        self.version: str | None = None
        self.error: str | None = None
        # For the /metrics: the mtime of the file in use (None: the defaults), failed reloads.
        self.loaded_mtime: float | None = None
        self.reload_errors = 0

    def _mtime(self) -> float | None:
        try:
            return self.path.stat().st_mtime
        except FileNotFoundError:
            return None

    def current(self, spark: SparkSession) -> tuple[DataFrame, str | None]:
        mtime = self._mtime()
        if mtime != self.mtime or self.frame is None:
            try:
                data = read_thresholds(self.path, self.required, self.window, self.slide)
            except ThresholdsError as error:
                if self.frame is None:
                    raise
                # A half-written or broken file must not stop the analyzer: keep the last good one.
                if str(error) != self.error:
                    self.log(f"warning: thresholds not reloaded, keeping version {self.version}: "
                             f"{error}")
                self.error, self.mtime = str(error), mtime
                self.reload_errors += 1
                return self.frame, self.version
            frame = rule_thresholds_frame(spark, data)
            if self.frame is not None:
                self.log(f"thresholds reloaded from {self.path}: version {data.get('version')}")
            self.frame, self.version, self.mtime = frame, data.get("version"), mtime
            self.loaded_mtime = mtime
            self.error = None
        return self.frame, self.version
