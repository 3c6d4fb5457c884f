"""What every stage's command shares: ending on one line (run_main), the one-line summary, a stopwatch, peak memory."""
from __future__ import annotations

import argparse
import resource
import sys
import time

import polars as pl

from fde.errors import UserError, environment_problem


def peak_rss_mb() -> float:
    """Peak resident memory of this process (and waited-for children) in MB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) / 1024


class Stopwatch:
    """Wall seconds since creation."""

    def __init__(self):
        self.start = self.last = time.perf_counter()
        self.laps: dict[str, float] = {}

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start

    def lap(self, name: str) -> float:
        """Seconds since the last lap (or the start), kept in `laps` under `name`."""
        now = time.perf_counter()
        self.laps[name], self.last = now - self.last, now
        return self.laps[name]


def add_progress_flag(parser: argparse.ArgumentParser) -> None:
    """--no-progress: the one name, in every stage that shows progress bars, for hiding them.

    --quiet, its old name in visual_features.py and visual_reccs.py, still works and is not listed.
    """
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument("--quiet", dest="no_progress", action="store_true", help=argparse.SUPPRESS)


def summary(stage: str, **fields) -> str:
    """Print and return the one-line summary a stage ends with."""
    parts = []
    for key, value in fields.items():
        if isinstance(value, float):
            value = f"{value:,.2f}"
        elif isinstance(value, int):
            value = f"{value:,}"
        parts.append(f"{key}={value}")
    line = f"[{stage}] " + " ".join(parts)
    print(line, flush=True)
    return line


def run_main(main) -> None:
    """Run a stage's main(); a UserError, a full disk or an unwritable folder ends as one line
    on stderr and exit code 2."""
    try:
        main()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except (OSError, pl.exceptions.PolarsError) as exc:
        problem = environment_problem(exc)
        if problem is None:
            raise
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: finished outputs are kept, nothing half-written was left", file=sys.stderr)
        sys.exit(130)
