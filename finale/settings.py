"""The analysis parameters and their defaults, in one place for every finale script.

The analyzer (Settings), the threshold job and the evaluation (ThresholdParams) read their defaults
here, so no script imports another script for a default. Paths are under the repository's .state/,
whatever the current directory.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STATE = ROOT / ".state" / "finale"
DEFAULT_THRESHOLDS = STATE / "thresholds.json"
DEFAULT_CHECKPOINT = STATE / "checkpoints"
DEFAULT_STATUS = STATE / "analyzer-status.json"
DEFAULT_TOPIC = "http-logs"
DEFAULT_ALERTS_TOPIC = "alerts"
DEFAULT_DLQ_TOPIC = "http-logs-dlq"
GLOBAL_ENTITY = "*"  # the entity of the global scope, in alerts and in the generator's truth file


@dataclass(frozen=True)
class Settings:
    """The analyzer's parameters (not the wiring)."""
    window: str = "30 seconds"
    slide: str = "10 seconds"
    watermark: str = "10 seconds"
    min_requests: int = 5
    min_errors: int = 3
    z: float = 3.0
    thresholds_path: Path = DEFAULT_THRESHOLDS
    # A firing global alert inhibits the ip/url alerts of its window (rules.alerts).
    inhibit_by_global: bool = True


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
