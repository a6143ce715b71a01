"""The alert record: its one definition, for every program that writes or reads an alert.

The analyzer's rules build alerts with exactly RULE_COLUMNS (finale/analyzer/rules/), the analyzer
adds `emitted_at`, the sinks write COLUMNS (the Kafka value is one JSON object with these keys),
and the viewer, the demo, the compose check and the evaluations read them with the helpers below.
Field by field (docs/records.md has the same table for readers):

| field | type | what |
|---|---|---|
| alert_id | string | sha256 hex of rule, scope, entity, window bounds (deterministic); Kafka key |
| rule | string | the rule that fired (error_rate, surge, ...) |
| entity_type | string | the scope: global, ip or url |
| entity | string | the IP, the URL, or GLOBAL_ENTITY for the global scope |
| window_start, window_end | timestamp | the event-time window (UTC) |
| requests, errors | long | the window's counts for that entity |
| error_rate | double | errors / requests |
| threshold | double | the threshold the rule compared with, in the rule's unit |
| thresholds_version | string | the version of the thresholds file in use ("defaults" without one) |
| severity | string | warning or critical |
| error_share | double | error_rate ip/url alerts: the entity's share of its window's errors |
| top_entities | array | error_rate global alerts: the ip and url entries with the most errors |
| metric | string | the windowed metric the rule compared (error_rate, requests, ...) |
| value | double | that metric's value in the window |
| unit | string | how `value` and `threshold` read: "rate" (a fraction shown as %) or "count" |
| emitted_at | string | when the analyzer emitted this version (ISO 8601 UTC, milliseconds) |

A rule that computes no cause leaves error_share and top_entities null. Readers must accept a
field that is null or absent (an alert written by an older analyzer).
"""
from __future__ import annotations

import json

# The entity of the global scope, in alerts and in the generator's truth file.
GLOBAL_ENTITY = "*"
UNITS = ("rate", "count")
TOP_ENTITIES_TYPE = "array<struct<entity_type:string,entity:string,requests:bigint,errors:bigint>>"

# (name, Spark SQL type), in the order of the DataFrame columns and of the JSON keys.
FIELDS: tuple[tuple[str, str], ...] = (
    ("alert_id", "string"),
    ("rule", "string"),
    ("entity_type", "string"),
    ("entity", "string"),
    ("window_start", "timestamp"),
    ("window_end", "timestamp"),
    ("requests", "bigint"),
    ("errors", "bigint"),
    ("error_rate", "double"),
    ("threshold", "double"),
    ("thresholds_version", "string"),
    ("severity", "string"),
    ("error_share", "double"),
    ("top_entities", TOP_ENTITIES_TYPE),
    ("metric", "string"),
    ("value", "double"),
    ("unit", "string"),
    ("emitted_at", "string"),
)
COLUMNS = tuple(name for name, _ in FIELDS)
# What a rule returns: every field but emitted_at, which the analyzer adds when it writes.
RULE_COLUMNS = COLUMNS[:-1]
TYPES = dict(FIELDS)
# The record as a Spark DDL schema (from_json, tests' expected frames).
DDL = ", ".join(f"{name} {kind}" for name, kind in FIELDS)
RULE_DDL = ", ".join(f"{name} {TYPES[name]}" for name in RULE_COLUMNS)
# Fields that change at every re-emission of the same content: not part of "what changed".
VOLATILE_FIELDS = ("emitted_at",)


def decode(value: bytes | str | None, key: bytes | None = None) -> dict | None:
    """The alert in a Kafka record's value, or None when it is not a JSON object with an id.

    A record without `alert_id` in its value takes it from the record key."""
    try:
        alert = json.loads(value) if value is not None else None
    except (TypeError, ValueError):
        return None
    if not isinstance(alert, dict):
        return None
    if not alert.get("alert_id"):
        if key is None:
            return None
        alert["alert_id"] = key.decode("utf-8", "replace")
    return alert


def content(alert: dict) -> dict:
    """The alert without its volatile fields: two versions with equal content are one alert."""
    return {name: field for name, field in alert.items() if name not in VOLATILE_FIELDS}


def number(value, unit: str | None) -> str:
    """A metric value or a threshold as a person reads it: a rate as a percentage, a count as a
    number (one decimal when it has one: a learned count threshold is a mean), a number of an
    unknown unit as it is; '-' when absent."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "-"
    if unit == "rate":
        return f"{value:.1%}"
    if unit == "count":
        return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"
    return f"{value:g}"


def clock(value) -> str:
    """'2026-11-28T09:14:03.123Z' -> '09:14:03' (what a person scanning alerts needs)."""
    if not value:
        return "-"
    text = str(value)
    return text[11:19] if len(text) >= 19 and text[10] in "T " else text


def cause(alert: dict) -> str:
    """What an alert says of its cause, '' for an alert without one: a global alert's top ip and
    top url with their errors/requests, or an ip/url alert's share of its window's errors."""
    top = alert.get("top_entities")
    if top:
        firsts: dict = {}
        for entry in top:  # ip entries first, each scope most errors first
            firsts.setdefault(entry.get("entity_type"), entry)
        return ", ".join(f"{scope} {e.get('entity')} {e.get('errors')}/{e.get('requests')}"
                         for scope, e in firsts.items())
    share = alert.get("error_share")
    if isinstance(share, (int, float)) and not isinstance(share, bool):
        return f"{share:.0%} of the window's errors"
    return ""


def measure(alert: dict) -> str:
    """'error_rate 57.1% > 30.0%' or 'requests 120 > 25.3': what the rule compared."""
    unit = alert.get("unit")
    return (f"{alert.get('metric') or '-'} {number(alert.get('value'), unit)} > "
            f"{number(alert.get('threshold'), unit)}")


def summary(alert: dict) -> str:
    """One line per alert, the same in the demo, the compose check and the logs:
    'critical error_rate ip 10.0.0.1 window 09:00:00-09:00:30 error_rate 57.1% > 30.0% (12/21)'."""
    return (f"{str(alert.get('severity')):<8} {str(alert.get('rule')):<10} "
            f"{str(alert.get('entity_type')):<6} {str(alert.get('entity')):<22} "
            f"window {clock(alert.get('window_start'))}-{clock(alert.get('window_end'))} "
            f"{measure(alert)} ({alert.get('errors')}/{alert.get('requests')} errors)")
