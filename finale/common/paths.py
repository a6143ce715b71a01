"""Where the project keeps its local files: the checkout's root, its state and its cache.

Every path is under the repository, whatever the current directory: `.state/` (broker data,
checkpoints, thresholds, demo output) and `.cache/` (the jars), both git-ignored.
"""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STATE = ROOT / ".state"
FINALE_STATE = STATE / "finale"
CACHE = ROOT / ".cache"
# The stage's entry scripts (python finale/NAME.py), which tools start as subprocesses.
SCRIPTS = ROOT / "finale"
