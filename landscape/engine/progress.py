"""Rank 0's progress line and the summary of a run (points, rate, load balance)."""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import numpy as np


class Progress:
    """Rank 0's progress line: points done / total, points per second, ETA."""

    def __init__(self, total: int, done_before: int, enabled: bool, label: str):
        self.total, self.before, self.enabled, self.label = total, done_before, enabled, label
        self.start = self.last = time.monotonic()
        self.tty = sys.stderr.isatty()

    def update(self, done_now: int, final: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not final and now - self.last < (1.0 if self.tty else 10.0)):
            return
        self.last = now
        rate = done_now / max(now - self.start, 1e-9)
        left = self.total - self.before - done_now
        eta = left / rate if rate > 0 else float("inf")
        line = (f"{self.label}: {self.before + done_now}/{self.total} points "
                f"({100.0 * (self.before + done_now) / max(self.total, 1):.1f}%), {rate:.2f} points/s, ETA {fmt_seconds(eta)}")
        print(("\r" + line) if self.tty else line, end="" if self.tty and not final else "\n", file=sys.stderr, flush=True)


def fmt_seconds(s: float) -> str:
    if not np.isfinite(s):
        return "?"
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


@dataclass(frozen=True)
class RunSummary:
    """What one run of the engine did, the same on every rank."""

    total: int  # points in the grid
    done_before: int  # already in the file when the run started
    computed: int  # points computed by this run, all ranks
    seconds: float
    per_rank_points: tuple[int, ...] = ()
    per_rank_busy: tuple[float, ...] = ()
    stopped: bool = False  # a rank received a stop signal (the grid may still be complete)
    nonfinite: int = 0  # points of this run with a NaN or infinite value (stored as such, masked in figures)

    @property
    def interrupted(self) -> bool:
        """Stopped by a signal before the grid was complete: rerun to resume."""
        return self.stopped and not self.complete

    @property
    def complete(self) -> bool:
        return self.done_before + self.computed == self.total

    def text(self) -> str:
        busy = np.array(self.per_rank_busy) if self.per_rank_busy else np.zeros(1)
        balance = busy.mean() / busy.max() if busy.max() > 0 else 1.0
        rate = self.computed / self.seconds if self.seconds > 0 else 0.0
        ranks = len(self.per_rank_points) or 1
        state = "interrupted; rerun the same command to resume" if self.interrupted else (
            "complete" if self.complete else "incomplete")
        bad = f", {self.nonfinite} with non-finite values" if self.nonfinite else ""
        return (f"{self.done_before + self.computed}/{self.total} points ({state}{bad}); this run: {self.computed} points in "
                f"{self.seconds:.1f} s on {ranks} rank(s), {rate:.2f} points/s ({rate / ranks:.2f} per rank), "
                f"load balance {balance:.2f} (mean/max busy time), points per rank {list(self.per_rank_points)}")
