"""The alerts query's checkpoint, named after the schema of the state it holds.

The alerts query keeps the open windows' counts in a state store whose schema follows the window
counts (metrics.state_description: the window, the scopes, each metric's aggregate). Spark cannot
restart a query on a checkpoint whose state has another schema: it fails at its first batch with
STATE_STORE_VALUE_SCHEMA_NOT_COMPATIBLE, or worse, counts wrongly. So the checkpoint folder is
`alerts-<fingerprint>`, a hash of that description, with the description beside it in
`state-schema.txt`:

- same schema: the query resumes on its folder, as any restart;
- a new schema (a metric, a scope or the window changed): the query starts a new folder, and
  app.py reads the topic again from the Kafka timestamp of the last record the previous folder
  counted, minus the window, the slide and the watermark, so the windows that were still open are
  counted again in the new state and no alert is lost (alert ids are deterministic: a re-emitted
  alert replaces its copy). Record time, not the time the batch ran: a query that took minutes
  to start must not skip the lines it counted late. The previous folder is left in place;
  STATE_CHANGED_MESSAGE is what the analyzer logs.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from finale.analyzer.metrics import state_description
from finale.analyzer.settings import Settings
from finale.common.cli import duration_seconds

PREFIX = "alerts"
DESCRIPTION_FILE = "state-schema.txt"
STATE_CHANGED_MESSAGE = (
    "checkpoint: the window counts' state changed since {previous} ({changes}): the alerts query "
    "starts a new checkpoint {path}, reading the topic again from {since} (the last record the "
    "previous checkpoint counted, minus the window, the slide and the watermark), so the open "
    "windows are counted again; {previous} is kept, delete it once the new one runs")


@dataclass(frozen=True)
class CheckpointPlan:
    path: Path                    # the alerts query's checkpoint folder
    description: str              # the state's schema, as metrics.state_description writes it
    previous: Path | None = None  # the folder of another schema it replaces (None: resume/first)
    since: float | None = None    # with `previous`: epoch seconds to read the topic from
    changes: str = ""             # with `previous`: what changed, for the log line


def fingerprint(description: str) -> str:
    return hashlib.sha256(description.encode("utf-8")).hexdigest()[:12]


def _last_batch_time(folder: Path) -> float | None:
    """When the query of `folder` last committed a batch (its newest commit file), if ever."""
    commits = [path.stat().st_mtime for path in (folder / "commits").glob("[0-9]*")]
    return max(commits) if commits else None


def committed_offsets(folder: Path) -> dict[str, dict[str, int]] | None:
    """{topic: {partition: offset}} up to which the query of `folder` counted: the source offsets
    (the offset log's last line) of its newest committed batch; None without one."""
    committed = [int(path.name) for path in (folder / "commits").glob("[0-9]*")
                 if path.name.isdigit()]
    if not committed:
        return None
    try:
        return json.loads((folder / "offsets" / str(max(committed))).read_text().splitlines()[-1])
    except (OSError, ValueError, IndexError):
        return None


def _changes(old: str | None, new: str) -> str:
    if old is None:
        return "a checkpoint without a recorded schema"
    old_lines, new_lines = old.splitlines(), new.splitlines()
    diff = ([f"-{line}" for line in old_lines if line not in new_lines]
            + [f"+{line}" for line in new_lines if line not in old_lines])
    return "; ".join(diff) or "reordered"


def alerts_checkpoint_plan(root: Path, settings: Settings,
                          record_time: Callable[[dict], float | None] = lambda offsets: None,
                          ) -> CheckpointPlan:
    """Where the alerts query checkpoints under `root`, and what to do when the schema changed.

    `record_time(offsets)`: the latest Kafka timestamp (epoch seconds) of the records just before
    those offsets (committed_offsets), None if unknown; then the previous folder's last commit
    time stands in for it. Needs an active Spark session (state_description renders the metrics'
    expressions)."""
    description = state_description(settings.window, settings.slide)
    path = Path(root) / f"{PREFIX}-{fingerprint(description)}"
    if _last_batch_time(path) is not None:
        return CheckpointPlan(path, description)
    others = [folder for folder in Path(root).glob(f"{PREFIX}*")
              if folder.is_dir() and folder != path and _last_batch_time(folder) is not None]
    if not others:
        return CheckpointPlan(path, description)
    previous = max(others, key=_last_batch_time)
    rewind = (duration_seconds(settings.window) + duration_seconds(settings.watermark)
              + duration_seconds(settings.slide))
    offsets = committed_offsets(previous)
    last = record_time(offsets) if offsets else None
    old = previous / DESCRIPTION_FILE
    return CheckpointPlan(path, description, previous,
                          (last if last is not None else _last_batch_time(previous)) - rewind,
                          _changes(old.read_text(encoding="utf-8") if old.exists() else None,
                                   description))


def record_description(plan: CheckpointPlan) -> None:
    """Write the state's schema beside the checkpoint it names (read by the next change's plan)."""
    plan.path.mkdir(parents=True, exist_ok=True)
    (plan.path / DESCRIPTION_FILE).write_text(plan.description + "\n", encoding="utf-8")
