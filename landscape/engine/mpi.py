"""MPI helpers every job uses: the world, steps done on rank 0 or on all ranks with their
UserErrors shared (so no rank waits alone in a collective), and a run under the file's lock."""
from __future__ import annotations

from ..errors import SharedUserError, UserError
from ..io.lock import FileLock


def world():
    """COMM_WORLD (a world of size 1 without mpirun)."""
    from mpi4py import MPI

    return MPI.COMM_WORLD


def raise_shared(error: str | None) -> None:
    if error:
        raise SharedUserError(error)


def on_root(comm, fn):
    """Run fn on rank 0 only; every rank gets its result, or raises its UserError."""
    result = error = None
    if comm.rank == 0:
        try:
            result = fn()
        except UserError as exc:
            error = str(exc)
    result, error = comm.bcast((result, error), root=0)
    raise_shared(error)
    return result


def on_all(comm, fn):
    """Run fn on every rank; if any rank raises a UserError, every rank raises the first one
    (so no rank goes on alone into the run and waits there for the others forever)."""
    result = error = None
    try:
        result = fn()
    except UserError as exc:
        error = str(exc)
    errors = comm.allgather(error) if comm.size > 1 else [error]
    raise_shared(next((e for e in errors if e), None))
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
