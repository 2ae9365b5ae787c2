"""Stop signals (SIGTERM, SIGUSR1, SIGINT) turned into a flag the engine polls between points.

The CLI installs the handlers first thing (`install_stop_handlers`), so a signal during
start-up also ends in a clean stop with exit code 75; only one that arrives before Python
reaches landscape's main kills the process.
"""
from __future__ import annotations

import signal

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
