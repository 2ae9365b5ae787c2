"""The distributed grid engine: any per-point evaluator over the points still to do.

Rank 0 orders the missing points coarse-to-fine and cuts them into chunks;
every rank (rank 0 too) takes the next chunk from an MPI-3 RMA atomic counter
that lives on rank 0 (`Fetch_and_op`, passive target), so no rank ever waits
for another between points. Communication per chunk: one 8-byte fetch, one
8-byte progress add, and with a serial h5py the chunk's values sent to rank 0.

A stop request (SIGTERM, SIGUSR1, SIGINT) makes the rank finish the point in
hand, write it, and add a large number to the counter, so every other rank
stops after its current point as well; the run then reports `interrupted`.

Under mpirun (OpenMPI 4.1, measured; tests/test_resume.py): SIGUSR1 sent to
mpirun is forwarded to every rank at once, and mpirun exits 75. SIGTERM or
SIGINT sent to mpirun: it waits `odls_base_sigkill_timeout`
(T, default 1 s), sends SIGTERM to the ranks, waits T again, then SIGKILL; the
ranks stop cleanly if the point in hand ends within T, but mpirun itself exits
1 (raise T with OMPI_MCA_odls_base_sigkill_timeout when a point takes longer).
SIGTERM sent to every rank (srun, a scheduler signalling the job step) gives 75.
The CLI turns these signals into the flag first thing (`install_stop_handlers`), so a
signal during start-up also ends in a clean stop; only one before Python reaches
landscape's main kills the process.

Debugging knob: LANDSCAPE_SLOW_RANKS="1:3[,2:1.5]" makes rank 1 take 3x as long
per evaluator call, by sleeping 2x the measured evaluation time after each call
(for the load-balance benchmark, bench/load_balance.py).
"""
from __future__ import annotations

import os
import signal
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from . import store
from .grid import Grid, chunk_bounds

STOP = 1 << 40  # added to the chunk counter to stop every rank


def slow_factor(rank: int) -> float:
    """This rank's slow-down from LANDSCAPE_SLOW_RANKS ("rank:factor,..."), 1.0 when not listed."""
    for item in filter(None, os.environ.get("LANDSCAPE_SLOW_RANKS", "").split(",")):
        r, _, f = item.partition(":")
        if int(r) == rank:
            return max(1.0, float(f))
    return 1.0


def world():
    """COMM_WORLD (a world of size 1 without mpirun)."""
    from mpi4py import MPI

    return MPI.COMM_WORLD


class SharedCounters:
    """Two int64 counters on rank 0 [next chunk, points done], updated atomically by any rank."""

    def __init__(self, comm):
        from mpi4py import MPI

        self.MPI = MPI
        self.comm = comm
        self.win = MPI.Win.Allocate(2 * 8 if comm.rank == 0 else 0, 8, comm=comm)
        if comm.rank == 0:
            self.win.Lock(0, MPI.LOCK_EXCLUSIVE)
            self.win.Put(np.zeros(2, dtype=np.int64), 0)
            self.win.Unlock(0)
        comm.Barrier()

    def fetch_add(self, slot: int, value: int) -> int:
        MPI = self.MPI
        add, old = np.array([value], dtype=np.int64), np.empty(1, dtype=np.int64)
        self.win.Lock(0, MPI.LOCK_SHARED)
        self.win.Fetch_and_op(add, old, 0, slot, MPI.SUM)
        self.win.Unlock(0)
        return int(old[0])

    def free(self) -> None:
        self.win.Free()


SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)
_received: int | None = None  # the stop signal received by this process, if any


def _note_signal(signum, frame):
    global _received
    _received = signum


def install_stop_handlers() -> None:
    """Turn stop signals into a flag from now on (the CLI calls this first, so a signal during
    start-up also ends in a clean stop with exit code 75 instead of a kill)."""
    for s in SIGNALS:
        signal.signal(s, _note_signal)


class StopRequest:
    """Stop signals set a flag while the engine runs; the previous handlers come back after."""

    def __enter__(self):
        self.saved = {}
        for s in SIGNALS:
            try:
                self.saved[s] = signal.signal(s, _note_signal)
            except ValueError:  # not the main thread
                pass
        return self

    def __exit__(self, *exc):
        global _received
        for s, h in self.saved.items():
            signal.signal(s, h if h is not _note_signal else signal.SIG_DFL)
        _received = None

    @property
    def requested(self) -> bool:
        return _received is not None


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


@dataclass
class RunSummary:
    total: int  # points in the grid
    done_before: int  # already in the file when the run started
    computed: int  # points computed by this run, all ranks
    seconds: float
    per_rank_points: list[int] = field(default_factory=list)
    per_rank_busy: list[float] = field(default_factory=list)
    interrupted: bool = False
    nonfinite: int = 0  # points of this run with a NaN or infinite value (stored as such, masked in figures)

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
                f"load balance {balance:.2f} (mean/max busy time), points per rank {self.per_rank_points}")


def run(evaluator, grid: Grid, path, done: np.ndarray, *, comm=None, mask: str = "mask", chunk: int = 0,
        parallel_write: bool | None = None, progress: bool = True, label: str = "surface") -> RunSummary:
    """Evaluate every point of `grid` not yet `done` (flat bool mask) and write it to the prepared file.

    evaluator(coords (k, ndim)) -> values (k, len(evaluator.metrics)); evaluator.points_per_call."""
    comm = comm or world()
    start = time.monotonic()
    order = grid.coarse_to_fine()
    todo = order[~done[order]]
    bounds = chunk_bounds(len(todo), comm.size, chunk)
    n_chunks = len(bounds) - 1
    counters = SharedCounters(comm)
    writer = store.writer_for(path, comm, evaluator.metrics, mask, parallel_write)
    bar = Progress(grid.size, int(done.sum()), progress and comm.rank == 0, label)
    mine, busy, interrupted, nonfinite = 0, 0.0, False, 0
    step = max(1, int(getattr(evaluator, "points_per_call", 1)))
    slow = slow_factor(comm.rank)
    with StopRequest() as stop:
        while True:
            if stop.requested:
                counters.fetch_add(0, STOP)
                interrupted = True
                break
            c = counters.fetch_add(0, 1)
            if c >= n_chunks:
                interrupted = c >= STOP
                break
            points = todo[bounds[c] : bounds[c + 1]]
            for i in range(0, len(points), step):
                sub = points[i : i + step]
                t0 = time.monotonic()
                values = evaluator(grid.coords(sub))
                if slow > 1.0:
                    time.sleep((slow - 1.0) * (time.monotonic() - t0))
                busy += time.monotonic() - t0
                writer.write(sub, values)
                mine += len(sub)
                nonfinite += int((~np.isfinite(values)).any(axis=1).sum())
                total_done = counters.fetch_add(1, len(sub)) + len(sub)
                if comm.rank == 0:
                    bar.update(total_done)
                if stop.requested:
                    break
        writer.close()
    counters.free()
    stats = comm.gather((mine, busy, interrupted, nonfinite), root=0)
    result = None
    if comm.rank == 0:
        result = RunSummary(
            total=grid.size, done_before=int(done.sum()), computed=sum(s[0] for s in stats),
            seconds=time.monotonic() - start, per_rank_points=[s[0] for s in stats],
            per_rank_busy=[s[1] for s in stats], nonfinite=sum(s[3] for s in stats))
        result.interrupted = any(s[2] for s in stats) and not result.complete
        bar.update(result.computed, final=True)
    return comm.bcast(result, root=0)
