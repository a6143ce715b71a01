"""Command-line pieces every finale script shares: one-line errors, the Kafka default, durations.

- OneLineErrorParser: bad input is one line on stderr and exit status 2 (no usage block).
- HelpFormatter: shows defaults, except None ones and on-off flags.
- DEFAULT_BOOTSTRAP: env KAFKA_BOOTSTRAP_SERVERS, else localhost:9092 (flags first, env as
  fallback).
- duration_seconds / is_interval: the one duration grammar, Spark's "N unit" intervals.
- run_main: the exception ladder of a script's main() (Ctrl-C, closed pipe, runtime errors).
- write_json_atomically: a JSON file that readers poll (thresholds, status, stats).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

DEFAULT_BOOTSTRAP = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "localhost:9092")
BOOTSTRAP_HELP = "Kafka bootstrap servers, comma-separated (env KAFKA_BOOTSTRAP_SERVERS)"
# The interval grammar Spark's window(), withWatermark() and triggers accept, for the units we use.
INTERVAL = re.compile(r"^\s*(\d+)\s*(millisecond|second|minute|hour|day)s?\s*$", re.IGNORECASE)
UNIT_SECONDS = {"millisecond": 0.001, "second": 1, "minute": 60, "hour": 3600, "day": 86400}


class OneLineErrorParser(argparse.ArgumentParser):
    """Bad input: one line on stderr and exit status 2 (no usage block)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except a None default (its help says what unset means) and on-off flags
    (a "(default: True)" after --no-inhibit would read backwards; their help says the default)."""

    def _get_help_string(self, action):
        if action.default is None or action.nargs == 0:
            return action.help
        return super()._get_help_string(action)


def is_interval(text: str) -> bool:
    """True for a Spark interval such as '30 seconds', '1 minute', '500 milliseconds'."""
    return INTERVAL.match(text) is not None


def duration_seconds(text: str) -> float:
    """'30 seconds' -> 30, '1 minute' -> 60; ValueError(text) if it is not an interval."""
    match = INTERVAL.match(text)
    if match is None:
        raise ValueError(text)
    seconds = int(match.group(1)) * UNIT_SECONDS[match.group(2).lower()]
    return int(seconds) if seconds == int(seconds) else seconds


def silence_stdout() -> None:
    """The reader of stdout went away (`| head`): point stdout at devnull so that later prints and
    the interpreter's final flush do not fail."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def run_main(prog: str, body: Callable[[], int], cleanup: Callable[[], None] = lambda: None) -> int:
    """The exit status of body(), with one line instead of a traceback for whatever goes wrong:
    Ctrl-C 130, a closed stdout 0 (not an error of the job), any other failure 1."""
    try:
        return body()
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        silence_stdout()
        return 0
    except Exception as error:  # runtime failures (Spark, Kafka, disk): one line, no traceback
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        print(f"{prog}: error: {first_line}", file=sys.stderr)
        return 1
    finally:
        cleanup()


def write_json_atomically(path, document: dict, indent: int | None = 2) -> None:
    """Write to a temporary file in the same folder then rename: a reader (the analyzer, the demo,
    a healthcheck) sees the old or the new file, never a partial one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(document, out, indent=indent)
            out.write("\n")
        # mkstemp creates the file 0600: give it the usual permissions (0666 minus the umask).
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
