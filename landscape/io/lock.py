"""One job per surface file: an fcntl lock on `<file>.lock`, released by the OS when the holder dies."""
from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

from ..errors import UserError


class FileLock:
    """An fcntl lock on `<file>.lock` held by rank 0 for the whole run; released by the OS
    when the process dies, so a killed job never leaves a stale lock."""

    def __init__(self, path: str | Path):
        self.path = Path(str(path) + ".lock")
        self.fd = None

    def acquire(self) -> None:
        if not self.path.parent.is_dir():  # the lock comes before prepare(): name the real problem here
            raise UserError(f"output folder {str(self.path.parent)!r} does not exist: create it or choose another --surf_file")
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise UserError(f"cannot create lock file {str(self.path)!r} ({exc.strerror}): choose a writable --surf_file") from None
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise UserError(
                f"{str(self.path)[:-5]!r} is being written by another job ({holder}): wait for it to end or choose another --surf_file"
            ) from None
        try:  # the lock file we locked may have been removed by its previous holder after we opened it
            same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
        except OSError:
            same = False
        if not same:
            os.close(fd)
            return self.acquire()
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"host {socket.gethostname()} pid {os.getpid()}".encode(), 0)
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            try:  # remove it while still holding the lock, so no other job can lock a removed file
                self.path.unlink()
            except OSError:
                pass
            os.close(self.fd)
            self.fd = None
