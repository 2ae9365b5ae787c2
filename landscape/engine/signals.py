"""Stop signals (SIGTERM, SIGUSR1, SIGINT) turned into a flag the engine polls between points.

The CLI installs the handlers first thing (`install_stop_handlers`), so a signal during
start-up also ends in a clean stop with exit code 75, and keeps them to the end, so a signal
after the run (rank 0 still writing the trajectory's values) cannot cut an HDF5 write short.
Only one that arrives before Python reaches landscape's main kills the process.

Start-up can wait in a collective for a rank that never comes (a factory stuck on one node):
Python's handler cannot run while MPI blocks, so a watchdog thread reads the signals from
`signal.set_wakeup_fd` and ends the process (exit 75) at the second stop signal received before
the engine started. Once the engine runs, signals only ever set the flag.
"""
from __future__ import annotations

import os
import signal
import sys
import threading

from ..errors import EXIT_INTERRUPTED

SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)
_received: int | None = None  # the stop signal received by this process, if any
_started = threading.Event()  # the engine has started: the watchdog never ends the process after


def _note_signal(signum, frame):
    global _received
    _received = signum


def install_stop_handlers() -> None:
    """Turn stop signals into a flag from now on, and end the process at a second one during
    start-up (the CLI calls this first thing)."""
    for s in SIGNALS:
        signal.signal(s, _note_signal)
    read, write = os.pipe()
    os.set_blocking(write, False)
    signal.set_wakeup_fd(write)
    threading.Thread(target=_watch, args=(read,), daemon=True, name="landscape-stop-watchdog").start()


def _watch(fd: int) -> None:
    seen = 0
    while True:
        seen += sum(1 for number in os.read(fd, 64) if number in {int(s) for s in SIGNALS})
        if seen >= 2 and not _started.is_set():
            sys.stderr.write("landscape: stopped during start-up by a second signal; rerun to resume\n")
            sys.stderr.flush()
            os._exit(EXIT_INTERRUPTED)


class StopRequest:
    """Stop signals set a flag while the engine runs; the previous handlers come back after
    (the CLI's own, which keep setting the flag)."""

    def __enter__(self):
        _started.set()
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
            signal.signal(s, signal.SIG_DFL if h is None else h)
        _received = None

    @property
    def requested(self) -> bool:
        return _received is not None
