"""The distributed grid engine: any per-point evaluator over the points still to do.

Rank 0 orders the missing points coarse-to-fine and cuts them into chunks;
every rank (rank 0 too) takes the next chunk from an MPI-3 RMA atomic counter
that lives on rank 0 (`Fetch_and_op`, passive target), so no rank ever waits
for another between points. Communication per chunk: one 8-byte fetch, one
8-byte progress add, and with a serial h5py the chunk's values sent to rank 0.

A stop request (SIGTERM, SIGUSR1, SIGINT) makes the rank finish the point in
hand, write it, and add a large number to both counters, so every other rank
stops after its current point as well (it sees the number when it reports the
point done); the run then reports `interrupted`.

A rank whose evaluator or writer raises (an error in the user's code, a file it cannot read,
memory) ends the run on every rank, never a hang: its group's other ranks, waiting in the sum of
the point (core.device.group_sum), are told (core.device.group_failed) and stop too; its leader
adds the large number to both counters as for a stop, so the other groups stop after their point
in hand; every rank closes the file (the points written are kept), and then every rank raises:
the failing rank its own exception, the others engine.mpi.RankFailed naming it (a UserError is
every rank's, as engine.mpi.on_all shares it).

Several ranks per point (`group`, engine.groups): the world is cut into groups of G ranks that
evaluate each point together (the evaluator sums over its group). Only a group's leader (its
rank 0) takes chunks, writes and counts; it hands each chunk number to its group (one broadcast),
and after every point the group agrees on stopping (one allgather of two flags), so no member
runs ahead of or behind its leader.

Under mpirun (OpenMPI 4.1, measured; tests/integration/test_resume.py): SIGUSR1 sent to
mpirun is forwarded to every rank at once, and mpirun exits 75. SIGTERM or
SIGINT sent to mpirun: it waits `odls_base_sigkill_timeout`
(T, default 1 s), sends SIGTERM to the ranks, waits T again, then SIGKILL; the
ranks stop cleanly if the point in hand ends within T, but mpirun itself exits
1 (raise T with OMPI_MCA_odls_base_sigkill_timeout when a point takes longer).
SIGTERM sent to every rank (srun, a scheduler signalling the job step) gives 75.
The CLI turns these signals into the flag first thing (see engine.signals).

Debugging knob: LANDSCAPE_SLOW_RANKS="1:3[,2:1.5]" makes rank 1 take 3x as long
per evaluator call, by sleeping 2x the measured evaluation time after each call
(for the load-balance benchmark, bench/load_balance.py).
"""
from __future__ import annotations

import os
import time

import numpy as np

from ..core.device import GroupFailed, group_failed
from ..core.grid import Grid, chunk_bounds
from ..errors import SharedUserError, UserError
from .contract import Evaluator
from .mpi import RankFailed, world
from .progress import Progress, RunSummary
from .signals import StopRequest
from .writers import writer_for

STOP = 1 << 40  # added to the chunk counter to stop every rank


def slow_factor(rank: int) -> float:
    """This rank's slow-down from LANDSCAPE_SLOW_RANKS ("rank:factor,..."), 1.0 when not listed."""
    for item in filter(None, os.environ.get("LANDSCAPE_SLOW_RANKS", "").split(",")):
        r, _, f = item.partition(":")
        if int(r) == rank:
            return max(1.0, float(f))
    return 1.0


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


def agreed(group, *flags: bool) -> tuple[bool, ...]:
    """Each flag true on some rank of `group` (None: this rank alone)."""
    if group is None or group.size == 1:
        return flags
    seen = group.allgather(flags)
    return tuple(any(f[i] for f in seen) for i in range(len(flags)))


def failure(exc: BaseException) -> tuple[str, str]:
    """(kind, message) of a rank's failure, as engine.mpi shares them: 'user' for a UserError."""
    return ("user", str(exc)) if isinstance(exc, UserError) else ("other", f"{type(exc).__name__}: {exc}")


def run(evaluator: Evaluator, grid: Grid, path, done: np.ndarray, *, comm=None, mask: str = "mask", chunk: int = 0,
        parallel_write: bool | None = None, progress: bool = True, label: str = "surface", group=None) -> RunSummary:
    """Evaluate every point of `grid` not yet `done` (flat bool mask) and write it to the prepared
    file `path`: the datasets named by `evaluator.metrics`, then `mask`. `group`: this rank's
    group of ranks that evaluate each point together (engine.groups; None: every rank alone)."""
    comm = comm or world()
    start = time.monotonic()
    order = grid.coarse_to_fine()
    todo = order[~done[order]]
    leader = group is None or group.rank == 0
    shared = group is not None and group.size > 1
    bounds = chunk_bounds(len(todo), comm.size // (group.size if group is not None else 1), chunk)
    n_chunks = len(bounds) - 1
    counters = SharedCounters(comm)
    writer = writer_for(path, comm, evaluator.metrics, mask, parallel_write)
    bar = Progress(grid.size, int(done.sum()), progress and comm.rank == 0, label)
    mine, busy, interrupted, nonfinite = 0, 0.0, False, 0
    failed, error, own = False, None, None  # a failure in this rank's group; this rank's own (kind, message), exception
    step = max(1, int(evaluator.points_per_call))
    slow = slow_factor(comm.rank)
    with StopRequest() as stop:
        while True:
            (requested,) = agreed(group, stop.requested)
            if requested:  # both counters: the others see it at their next chunk or point
                if leader:
                    counters.fetch_add(0, STOP)
                    counters.fetch_add(1, STOP)
                interrupted = True
                break
            c = counters.fetch_add(0, 1) if leader else None
            if shared:
                c = group.bcast(c, root=0)
            if c >= n_chunks:
                interrupted = interrupted or c >= STOP
                break
            points = todo[bounds[c] : bounds[c + 1]]
            for i in range(0, len(points), step):
                sub = points[i : i + step]
                t0 = time.monotonic()
                try:
                    values = evaluator(grid.coords(sub))
                except GroupFailed:  # another rank of the group failed: it reports
                    failed = True
                    break
                except Exception as exc:
                    group_failed(group)  # the group's other ranks wait in its sum: they raise GroupFailed
                    failed, error, own = True, failure(exc), exc
                    break
                if slow > 1.0:
                    time.sleep((slow - 1.0) * (time.monotonic() - t0))
                busy += time.monotonic() - t0
                halt = False
                if leader:
                    try:
                        writer.write(sub, values)
                    except Exception as exc:  # the group's other ranks learn it below
                        failed, error, own = True, failure(exc), exc
                    else:
                        mine += len(sub)
                        nonfinite += int((~np.isfinite(values)).any(axis=1).sum())
                        total_done = counters.fetch_add(1, len(sub)) + len(sub)
                        halt = total_done >= STOP  # another rank was asked to stop: end after this point too
                        if comm.rank == 0 and not halt:
                            bar.update(total_done)
                halt, requested, failed = agreed(group, halt, stop.requested, failed)
                if halt or failed:
                    interrupted = True
                    break
                if requested:
                    break
            if failed:
                break
        if failed and leader:  # the other groups stop after their point in hand, as for a stop request
            counters.fetch_add(0, STOP)
            counters.fetch_add(1, STOP)
        writer.close()
    counters.free()
    stats = comm.gather((mine, busy, interrupted, nonfinite, error), root=0)
    result, source = None, None
    if comm.rank == 0:
        errors = [r for r, s in enumerate(stats) if s[4]]  # an unexpected error wins over a user mistake
        source = next((r for r in errors if stats[r][4][0] == "other"), errors[0] if errors else None)
        error = None if source is None else stats[source][4]
        result = RunSummary(
            total=grid.size, done_before=int(done.sum()), computed=sum(s[0] for s in stats),
            seconds=time.monotonic() - start, per_rank_points=tuple(s[0] for s in stats),
            per_rank_busy=tuple(s[1] for s in stats), stopped=any(s[2] for s in stats),
            nonfinite=sum(s[3] for s in stats))
        if error is None:
            bar.update(result.computed, final=True)
    result, source, error = comm.bcast((result, source, error), root=0)
    if error is not None:  # every rank raises: the failing rank its own exception, the others say which rank
        kind, message = error
        if kind == "user":
            raise SharedUserError(message)
        if comm.rank == source:
            raise own
        raise RankFailed(f"rank {source} failed ({message}); this rank stops too")
    return result
