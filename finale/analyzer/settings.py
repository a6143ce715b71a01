"""The analysis parameters and their defaults, in one place for every finale script.

The analyzer (Settings), the threshold job and the evaluation (ThresholdParams) read their defaults
here, so no script imports another script for a default. Paths are under the repository's .state/,
whatever the current directory.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from finale.common.paths import FINALE_STATE
from finale.common.topics import ALERTS, DEAD_LETTERS, LOGS, METRICS

STATE = FINALE_STATE
DEFAULT_THRESHOLDS = STATE / "thresholds.json"
DEFAULT_CHECKPOINT = STATE / "checkpoints"
DEFAULT_STATUS = STATE / "analyzer-status.json"
DEFAULT_TOPIC = LOGS.name
DEFAULT_ALERTS_TOPIC = ALERTS.name
DEFAULT_DLQ_TOPIC = DEAD_LETTERS.name
DEFAULT_METRICS_TOPIC = METRICS.name
# Most Kafka records one micro-batch reads: after an outage or a burst the backlog is drained in
# batches of this size instead of one batch holding all of it (memory, latency of the first alert).
# Chosen by measurement (bench/bench_finale_catchup.py, bench/RESULTS.md "catch-up"): large
# enough that a batch's fixed cost is a small share of it, so a backlog drains near the uncapped
# rate, and small enough that one batch stays a few seconds of work on the default 2 cores, so
# the first alerts after an outage still come early.
DEFAULT_MAX_OFFSETS_PER_TRIGGER = 200_000


@dataclass(frozen=True)
class Settings:
    """The analyzer's parameters (not the wiring)."""
    window: str = "30 seconds"
    slide: str = "10 seconds"
    watermark: str = "10 seconds"
    # A line dated later than now + max_future is a dead letter (future_timestamp), never counted:
    # a wrong clock or one bad line would otherwise push the watermark past all real traffic.
    # 5 minutes leaves room for a producer's clock running ahead, far below any useful window.
    max_future: str = "5 minutes"
    min_requests: int = 5
    min_errors: int = 3
    z: float = 3.0
    thresholds_path: Path = DEFAULT_THRESHOLDS
    # True when the user named the file: then it must exist (no silent fall-back to the defaults).
    thresholds_required: bool = False
    # A firing global alert inhibits the ip/url alerts of its window, within each rule
    # (rules.common.inhibited_by_global).
    inhibit_by_global: bool = True
    # ... except the alert of an ip/url holding at least this share of the window's errors: the
    # cause of the global alert (a majority by default).
    cause_share: float = 0.5


@dataclass(frozen=True)
class ThresholdParams:
    """The knobs of the threshold learning, written as is into the thresholds JSON's `parameters`.

    The window and slide default to the analyzer's, so that a learned rate is a rate of the windows
    the analyzer compares; a window too small to alert (the analyzer's min_requests) is too small
    to teach a threshold; 30 windows = 5 minutes of history at the default 10-second slide.
    """
    window: str = Settings.window
    slide: str = Settings.slide
    min_window_requests: int = Settings.min_requests
    min_entity_windows: int = 30
    quantile: float = 0.995
    z: float = 3.0
    delta: float = 0.05
