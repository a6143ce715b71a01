"""Incidents: the generator's truth file (written, read) and how alerts are matched and scored
against it.

The generator injects incidents (--incident KIND[=ENTITY]@START+DURATION) and writes their truth,
one JSON line each: {"kind": "ip"|"url"|"global"|"surge", "entity" ("*" for global, the IP for
surge), "start", "end"} (ISO 8601 UTC log time). The demo (live), the evaluation (batch) and
their tests read it back with read_truth and judge alerts with the pure functions below; the viewer
and the demo keep the alerts of the compacted `alerts` topic with AlertBook (latest version per
alert_id).
"""
from __future__ import annotations

import argparse
import json
import math
import random
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from finale.common import alert as alert_record
from finale.common.alert import GLOBAL_ENTITY

INCIDENT_KINDS = ("ip", "url", "global", "surge")
# The alerts that detect each kind of incident: (rule, entity_type).
INCIDENT_TARGETS = {"ip": ("error_rate", "ip"), "url": ("error_rate", "url"),
                    "global": ("error_rate", "global"), "surge": ("surge", "ip")}
# A surge incident's IP sends this many times its normal share of the lines.
SURGE_MULTIPLIER = 10


@dataclass(frozen=True)
class Incident:
    """KIND on ENTITY fails from START for DURATION seconds of log time after line 0."""
    kind: str
    entity: str
    start: float
    duration: float

    def truth(self, run_start: float) -> dict:
        return {"kind": self.kind, "entity": self.entity,
                "start": iso_utc(run_start + self.start),
                "end": iso_utc(run_start + self.start + self.duration)}


@dataclass
class Truth:
    """One line of a truth file, numbered from 1; `alerts` collects the alerts it explains."""
    number: int
    kind: str
    entity: str
    start: datetime
    end: datetime
    alerts: list = field(default_factory=list)


def iso_utc(epoch: float) -> str:
    return (datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"))


def parse_time(text: str) -> datetime:
    """ISO 8601 (with 'Z' or an offset) -> aware UTC datetime."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc)


def write_truth(path: str, incidents: tuple[Incident, ...], start: float) -> str | None:
    """Write the truth file; None, or the one-line error if it cannot be written."""
    try:
        with open(path, "w") as truth:
            for incident in incidents:
                truth.write(json.dumps(incident.truth(start)) + "\n")
    except OSError as error:
        return f"error: cannot write {path}: {error.strerror}"
    return None


def read_truth(path: Path) -> list[Truth]:
    """The incidents of a truth file, in its order ([] if there is no file)."""
    path = Path(path)
    if not path.exists():
        return []
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [Truth(number, item["kind"], item["entity"], parse_time(item["start"]),
                  parse_time(item["end"]))
            for number, item in enumerate(map(json.loads, lines), 1)]


def overlaps(window_start: datetime, window_end: datetime, incident: Truth) -> bool:
    return window_start < incident.end and incident.start < window_end


def on_target(entity_type: str, entity: str, window_start: datetime, window_end: datetime,
              incident: Truth, rule: str | None = None) -> bool:
    """An alert on the incident's own scope and entity ("*" for a global one), in its time, and
    (when `rule` is given) of the rule that detects that kind (INCIDENT_TARGETS)."""
    target_rule, target_type = INCIDENT_TARGETS[incident.kind]
    target = GLOBAL_ENTITY if incident.kind == "global" else incident.entity
    return (entity_type == target_type and entity == target
            and (rule is None or rule == target_rule)
            and overlaps(window_start, window_end, incident))


def score(alerts: list[tuple], incidents: list[Truth], quiet_start: datetime) -> dict[str, int]:
    """Counts of the alerts (entity_type, entity, window_start, window_end[, rule]): on_target (on
    an incident's entity, by the rule that detects it when the rule is given), collateral (in an
    incident's time, otherwise), false (in no incident's time), quiet (windows starting at or after
    quiet_start, whatever they matched)."""
    counts = {"on_target": 0, "collateral": 0, "false": 0, "quiet": 0}
    for entity_type, entity, start, end, *rule in alerts:
        if any(on_target(entity_type, entity, start, end, incident, *rule)
               for incident in incidents):
            counts["on_target"] += 1
        elif any(overlaps(start, end, incident) for incident in incidents):
            counts["collateral"] += 1
        else:
            counts["false"] += 1
        if start >= quiet_start:
            counts["quiet"] += 1
    return counts


def is_own_alert(alert: dict, incident: Truth) -> bool:
    """on_target for an alert as the topic carries it (an alert without `rule` is error_rate's)."""
    try:
        window_start = parse_time(alert["window_start"])
        window_end = parse_time(alert["window_end"])
    except (KeyError, TypeError, ValueError):
        return False
    return on_target(alert.get("entity_type"), alert.get("entity"), window_start, window_end,
                     incident, alert.get("rule", "error_rate"))


def match_incident(alert: dict, raised: datetime, incidents: list[Truth]) -> Truth | None:
    """The incident that explains `alert`, first raised at `raised`: an incident that had begun
    by then, whose time overlaps the alert's window, and that is on the same entity (best), or
    global (everything fails), or any incident if the alert is on the global scope (one failing
    IP or URL raises the global error rate). None: a false positive."""
    try:
        window_start = parse_time(alert["window_start"])
        window_end = parse_time(alert["window_end"])
    except (KeyError, TypeError, ValueError):
        return None
    best, best_rank = None, 0
    for incident in incidents:
        if not (overlaps(window_start, window_end, incident) and incident.start <= raised):
            continue
        if is_own_alert(alert, incident):
            rank = 3
        elif incident.kind == "global":
            rank = 2
        elif alert.get("entity_type") == "global":
            rank = 1
        else:
            continue
        if rank > best_rank:
            best, best_rank = incident, rank
    return best


def summary(incidents: list[Truth], alerts: dict[str, dict], firsts: dict[str, dict],
            arrivals: dict[str, datetime], messages: int, listed: int = 25) -> tuple[str, str]:
    """(the summary to print, the full per-alert listing for a file). `alerts`: the latest version
    of each alert_id, `firsts`: its first version (whose emitted_at is when it was first raised),
    `arrivals`: when that first version arrived here."""
    def raised(alert: dict) -> datetime:
        return _emitted(firsts.get(alert["alert_id"], alert), arrivals)

    ordered = sorted(alerts.values(), key=lambda a: (raised(a), a["alert_id"]))
    matched: dict[str, Truth | None] = {}
    for alert in ordered:
        incident = match_incident(alert, raised(alert), incidents)
        matched[alert["alert_id"]] = incident
        if incident is not None:
            incident.alerts.append(alert)
    lines = [f"Incidents injected: {len(incidents)}"]
    for incident in incidents:
        head = (f"  #{incident.number} {incident.kind:<6} {incident.entity:<22} "
                f"{incident.start:%H:%M:%S}-{incident.end:%H:%M:%S}")
        scopes = ", ".join(f"{sum(a.get('entity_type') == scope for a in incident.alerts)} {scope}"
                           for scope in ("ip", "url", "global"))
        exact = [a for a in incident.alerts if is_own_alert(a, incident)]
        if not exact:
            lines.append(f"{head}  NOT DETECTED  (alerts: {scopes})")
            continue
        first = min(exact, key=raised)
        latency = (raised(first) - incident.start).total_seconds()
        arrival = (arrivals[first["alert_id"]] - incident.start).total_seconds()
        lines.append(f"{head}  detected after {latency:5.1f} s (arrived {arrival:5.1f} s)  "
                     f"alerts: {scopes}")
    unexplained = [a for a in ordered if matched[a["alert_id"]] is None]
    lines.append(f"Alerts raised: {len(alerts)} distinct alert_ids ({messages} messages): "
                 f"{len(alerts) - len(unexplained)} matched an incident, "
                 f"{len(unexplained)} matched none")
    # Listed: each incident's alerts on its own entity (by incident, then window), then the
    # false positives, then the alerts on other scopes that an incident explains.
    def rank(alert: dict) -> tuple:
        incident = matched[alert["alert_id"]]
        if incident is None:
            group = 1
        elif is_own_alert(alert, incident):
            group = 0
        else:
            group = 2
        return (group, incident.number if incident else 0, str(alert.get("entity_type")),
                str(alert.get("window_start")), str(alert.get("entity")))

    listing = [_alert_line(alert, matched[alert["alert_id"]], raised(alert))
               for alert in sorted(ordered, key=rank)]
    lines += listing[:listed]
    if len(listing) > listed:
        lines.append(f"  ... {len(listing) - listed} more in the full listing")
    return "\n".join(lines), "\n".join(listing) + "\n"


def _alert_line(alert: dict, incident: Truth | None, raised: datetime) -> str:
    return (f"  {raised:%H:%M:%S} {alert_record.summary(alert)} -> "
            + (f"incident #{incident.number} ({incident.kind})" if incident else "no incident")
            + (f"; cause: {alert_record.cause(alert)}" if alert_record.cause(alert) else ""))


def _emitted(alert: dict, arrivals: dict[str, datetime]) -> datetime:
    try:
        return parse_time(alert["emitted_at"])
    except (KeyError, TypeError, ValueError):
        return arrivals[alert["alert_id"]]


class AlertBook:
    """The latest version of every alert, by alert_id, with its first version and when that
    arrived."""

    def __init__(self) -> None:
        self.alerts: dict[str, dict] = {}
        self.firsts: dict[str, dict] = {}
        self.arrivals: dict[str, datetime] = {}

    def add(self, alert: dict) -> bool:
        """Keep `alert` as the latest version of its id; True when it is new or its content
        changed."""
        alert_id = alert["alert_id"]
        previous = self.alerts.get(alert_id)
        self.alerts[alert_id] = alert
        if previous is None:
            self.firsts[alert_id] = alert
            self.arrivals[alert_id] = datetime.now(timezone.utc)
        return previous is None or alert_record.content(previous) != alert_record.content(alert)

    def newest_first(self) -> list[dict]:
        return sorted(self.alerts.values(),
                      key=lambda a: (str(a.get("emitted_at") or ""),
                                     str(a.get("window_start") or ""), a["alert_id"]),
                      reverse=True)

    def __len__(self) -> int:
        return len(self.alerts)


def incident_spec(text: str) -> tuple[str, str | None, float, float]:
    """'url=/cart@60+15' -> ('url', '/cart', 60.0, 15.0); the entity is checked against the model
    later. Split at the last '@' and the first '+' after it (URLs may hold '@' and '+')."""
    head, at, times = text.rpartition("@")
    start_text, plus, duration_text = times.partition("+")
    if not at or not plus:
        raise argparse.ArgumentTypeError(
            f"must be KIND[=ENTITY]@START+DURATION (e.g. ip@30+20, url=/cart@60+15), got {text!r}")
    kind, equals, entity = head.partition("=")
    if kind not in INCIDENT_KINDS:
        raise argparse.ArgumentTypeError(
            f"unknown incident kind {kind!r} in {text!r}: one of {', '.join(INCIDENT_KINDS)}")
    if equals and not entity:
        raise argparse.ArgumentTypeError(f"empty entity after '=' in {text!r}")
    try:
        start, duration = float(start_text), float(duration_text)
    except ValueError:
        start = duration = math.nan
    if not (0 <= start < math.inf and 0 < duration < math.inf):
        raise argparse.ArgumentTypeError(
            f"START must be seconds >= 0 and DURATION seconds > 0, got {text!r}")
    return kind, entity if equals else None, start, duration


def resolve_incidents(parser: argparse.ArgumentParser, specs, model,
                      seed: int) -> tuple[Incident, ...]:
    """Check each entity against the model (a finale.generator.traffic.TrafficModel); pick the
    missing ones (seeded, distinct per kind while there are unused ones)."""
    rng = random.Random(f"chaussettes-incidents:{seed}")
    candidates = {"ip": model.ips, "url": model.urls}
    # A surge picks among the IPs too, away from the ip incidents' (one fact per entity).
    pool = {"ip": "ip", "url": "url", "surge": "ip"}
    used: dict[str, set[str]] = {"ip": set(), "url": set()}
    for kind, entity, *_ in specs:
        if entity is not None and kind in pool:
            used[pool[kind]].add(entity)
    incidents = []
    for kind, entity, start, duration in specs:
        if kind == "global":
            if entity not in (None, GLOBAL_ENTITY):
                parser.error("argument --incident: a global incident takes no entity, "
                             f"got {entity!r}")
            entity = GLOBAL_ENTITY
        elif entity is None:
            fresh = [e for e in candidates[pool[kind]] if e not in used[pool[kind]]]
            entity = rng.choice(fresh or candidates[pool[kind]])
            used[pool[kind]].add(entity)
        elif entity not in candidates[pool[kind]]:
            known = ("the shop's URLs are " + " ".join(model.urls) if kind == "url" else
                     f"not one of the {len(model.ips)} users' IPs of this --seed and --users")
            label = "URL" if kind == "url" else "IP"
            parser.error(f"argument --incident: unknown {label} {entity!r} ({known})")
        incidents.append(Incident(kind, entity, start, duration))
    return tuple(incidents)
