"""MPI helpers every job uses: the world, steps done on rank 0 or on all ranks with their
UserErrors shared (so no rank waits alone in a collective), and a run under the file's lock."""
from __future__ import annotations

from ..errors import SharedUserError, UserError
from ..io.lock import FileLock


class RankFailed(RuntimeError):
    """Raised mid-run (engine.scheduler) by every rank but the one that failed, which raises its own
    exception: this one names that rank and its error."""


def world():
    """COMM_WORLD (a world of size 1 without mpirun)."""
    from mpi4py import MPI

    return MPI.COMM_WORLD


def _outcome(fn):
    """(result, None, None), or (None, (kind, message), exception) when fn raised: kind 'user' for
    a UserError, 'other' for anything else. Only (result, error) travel between ranks; the
    exception stays on the rank that met it, to be raised there."""
    try:
        return fn(), None, None
    except UserError as exc:
        return None, ("user", str(exc)), exc
    except Exception as exc:
        return None, ("other", f"{type(exc).__name__}: {exc}"), exc


def _raise(error, rank: int, source: int, own: BaseException | None) -> None:
    """Every rank raises what one rank met: the same UserError (printed once), the original
    exception (`own`) on the rank that met it, a RuntimeError naming that rank elsewhere."""
    if error is None:
        return
    kind, message = error
    if kind == "user":
        raise SharedUserError(message)
    if rank == source:
        raise own
    raise RuntimeError(f"rank {source} failed ({message}); this rank stops too")


def on_root(comm, fn):
    """Run fn on rank 0 only; every rank gets its result, or raises what rank 0 met (no rank is
    left waiting in the broadcast when rank 0 fails)."""
    result, error, own = _outcome(fn) if comm.rank == 0 else (None, None, None)
    result, error = comm.bcast((result, error), root=0)
    _raise(error, comm.rank, 0, own)
    return result


def on_all(comm, fn):
    """Run fn on every rank; if any rank raises, every rank raises (a UserError: the first one,
    printed once; anything else: the original on its rank, a RuntimeError naming it elsewhere),
    so no rank goes on alone into the run and waits there for the others forever."""
    result, error, own = _outcome(fn)
    errors = comm.allgather(error) if comm.size > 1 else [error]
    failed = [r for r, e in enumerate(errors) if e]
    if failed:  # an unexpected error wins over a user mistake: it is the one to see
        source = next((r for r in failed if errors[r][0] == "other"), failed[0])
        _raise(errors[source], comm.rank, source, own)
    return result


def locked_run(comm, path, prepare, run):
    """Rank 0 locks `path` (io.lock.FileLock) and returns `prepare()` (the lock released again if
    that raises); every rank then returns `run(prepare's result)`; the lock is released at the
    end whatever happens."""
    lock = FileLock(path)

    def lock_and_prepare():
        lock.acquire()
        try:
            return prepare()
        except UserError:
            lock.release()
            raise

    try:
        return run(on_root(comm, lock_and_prepare))
    finally:
        if comm.rank == 0:
            lock.release()
