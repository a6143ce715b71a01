"""What the dashboard shows, in memory: the last minutes of window metrics and the alerts of the
same minutes, fed by the Kafka thread (feed.py), read by the web handlers (app.py) as one JSON
snapshot.

Time is log time (the windows' own), so a replayed day shows as it happened: the span ends at
the newest window seen on the metrics topic (or, before any, the newest alert's window) and
reaches `span_s` back. Every string in a snapshot comes from log lines: the page renders it as
text (static/dashboard.js), never as markup.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime

from finale.common import alert as alert_record
from finale.common.window_metrics import DEFAULT_TOP

DEFAULT_SPAN_S = 15 * 60
# Entries of the top-offender lists the page shows, per scope.
OFFENDERS_SHOWN = 10


def epoch_s(text) -> float | None:
    """'2026-11-28T09:00:30.000Z' -> seconds since the epoch; None if it is not such a time."""
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def merge_top(older: list | None, newer: list | None, size: int) -> list:
    """Two top lists of the same window, from two micro-batches: each names only the entities its
    batch updated, and an entity's counts only grow within a window, so the union keeping each
    entity's larger counts is the window's top so far."""
    best: dict[str, dict] = {}
    for entry in (older or []) + (newer or []):
        if not isinstance(entry, dict) or not isinstance(entry.get("entity"), str):
            continue
        kept = best.get(entry["entity"])
        if kept is None or (entry.get("errors") or 0, entry.get("requests") or 0) > (
                kept.get("errors") or 0, kept.get("requests") or 0):
            best[entry["entity"]] = entry
    ranked = sorted(best.values(),
                    key=lambda e: (-(e.get("errors") or 0), -(e.get("requests") or 0), e["entity"]))
    return ranked[:size]


class DashboardState:
    """The latest version of each window's metrics and of each alert, within the span.

    Thread-safe: the feed thread adds, the web handlers take snapshots. `on_change` is called
    (from the adding thread) after every change."""

    def __init__(self, span_s: float = DEFAULT_SPAN_S,
                 on_change: Callable[[], None] = lambda: None):
        self.span_s = span_s
        self.on_change = on_change
        self.lock = threading.Lock()
        self.windows: dict[tuple[float, float], dict] = {}
        self.alerts: dict[str, dict] = {}
        self.latest_batch: dict | None = None
        self.feed = {"connected": False, "error": None}
        self.version = 0

    def _changed(self) -> None:
        self.version += 1

    def add_metrics(self, record: dict) -> None:
        start, end = epoch_s(record.get("window_start")), epoch_s(record.get("window_end"))
        if start is None or end is None or end <= start:
            return
        with self.lock:
            previous = self.windows.get((start, end))
            merged = dict(record)
            if previous is not None:
                if (previous.get("requests") or 0) > (record.get("requests") or 0):
                    merged = dict(previous)  # an older version delivered late: counts only grow
                size = max(DEFAULT_TOP, len(record.get("top_ips") or []))
                for field in ("top_ips", "top_urls"):
                    merged[field] = merge_top(previous.get(field), record.get(field), size)
            self.windows[(start, end)] = merged
            if self.latest_batch is None or str(record.get("emitted_at") or "") >= str(
                    self.latest_batch.get("emitted_at") or ""):
                self.latest_batch = record
            self._prune()
            self._changed()
        self.on_change()

    def add_alert(self, alert: dict) -> None:
        if epoch_s(alert.get("window_end")) is None or not alert.get("alert_id"):
            return
        with self.lock:
            previous = self.alerts.get(alert["alert_id"])
            if previous is not None and alert_record.content(previous) == alert_record.content(
                    alert):
                return
            self.alerts[alert["alert_id"]] = alert
            self._prune()
            self._changed()
        self.on_change()

    def set_feed(self, connected: bool, error: str | None = None) -> None:
        with self.lock:
            if self.feed == {"connected": connected, "error": error}:
                return
            self.feed = {"connected": connected, "error": error}
            self._changed()
        self.on_change()

    def _end(self) -> float | None:
        """The newest window end: of the metrics, else of the alerts."""
        if self.windows:
            return max(end for _, end in self.windows)
        ends = [epoch_s(a.get("window_end")) for a in self.alerts.values()]
        return max(ends) if ends else None

    def _prune(self) -> None:
        end = self._end()
        if end is None:
            return
        horizon = end - self.span_s
        self.windows = {key: value for key, value in self.windows.items() if key[1] >= horizon}
        self.alerts = {key: value for key, value in self.alerts.items()
                       if epoch_s(value.get("window_end")) >= horizon}

    def snapshot(self) -> dict:
        """The page's data: the chart's series, the alerts newest first, the top offenders, the
        pipeline's health. JSON-ready."""
        with self.lock:
            windows = [self.windows[key] | {"_start": key[0], "_end": key[1]}
                       for key in sorted(self.windows, key=lambda k: (k[1], k[0]))]
            alerts = sorted(self.alerts.values(),
                            key=lambda a: (str(a.get("emitted_at") or ""),
                                           str(a.get("window_start") or ""), a["alert_id"]),
                            reverse=True)
            latest, feed, version, end = (self.latest_batch, dict(self.feed), self.version,
                                          self._end())
        chart = {"x": [], "requests_per_s": [], "errors_per_s": []}
        for window in windows:
            seconds = window["_end"] - window["_start"]
            chart["x"].append(window["_end"])
            chart["requests_per_s"].append(round((window.get("requests") or 0) / seconds, 3))
            chart["errors_per_s"].append(round((window.get("errors") or 0) / seconds, 3))
        shown_alerts = [{
            "alert_id": a["alert_id"], "rule": a.get("rule"), "severity": a.get("severity"),
            "entity_type": a.get("entity_type"), "entity": a.get("entity"),
            "cause": alert_record.cause(a), "measure": alert_record.measure(a),
            "window_start": a.get("window_start"), "window_end": a.get("window_end"),
            "emitted_at": a.get("emitted_at"),
            "window": [epoch_s(a.get("window_start")), epoch_s(a.get("window_end"))],
        } for a in alerts]
        health = None
        if latest is not None:
            health = {name: latest.get(name) for name in (
                "batch_id", "emitted_at", "backlog", "dead_letters_total", "window_end")}
        return {
            "version": version, "span_s": self.span_s, "end": end,
            "chart": chart, "alerts": shown_alerts,
            "offenders": {"ips": self._offenders(windows, "top_ips"),
                          "urls": self._offenders(windows, "top_urls")},
            "health": health, "feed": feed,
        }

    @staticmethod
    def _offenders(windows: list[dict], field: str) -> list[dict]:
        """Each entity's worst window of the span (most errors), the worst entities first."""
        worst: dict[str, dict] = {}
        for window in windows:
            for entry in window.get(field) or []:
                if not isinstance(entry, dict) or not isinstance(entry.get("entity"), str):
                    continue
                kept = worst.get(entry["entity"])
                if kept is None or (entry.get("errors") or 0) > kept["errors"]:
                    worst[entry["entity"]] = {"entity": entry["entity"],
                                              "errors": entry.get("errors") or 0,
                                              "requests": entry.get("requests") or 0,
                                              "window_end": window.get("window_end")}
        return sorted(worst.values(),
                      key=lambda e: (-e["errors"], -e["requests"], e["entity"]))[:OFFENDERS_SHOWN]
