"""Stop signals (issue 15, item 10), under real mpirun: a stop reaches every rank at its next
point, a second signal ends a start-up that hangs, and the handlers stay after the run."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import ROOT, cli_env, command, points_done


def test_a_stop_on_one_rank_reaches_the_others_at_their_next_point(tmp_path):
    """Chunks of 10 points, one per rank; rank 1 alone gets SIGUSR1 after a few points. The other
    ranks used to finish their whole chunk (about 30 points in all); now they stop after the
    point in hand."""
    path = tmp_path / "s.h5"
    args = ["--model", "custom_factory:slow_net", "--x=-1:1:30", "--chunk", "10", "--threads", "1", "--no-plot",
            "--no-progress", "--surf_file", str(path)]
    env = {**cli_env(), "PID_DIR": str(tmp_path), "PAUSE": "0.15"}
    job = subprocess.Popen(command(args, ranks=3), env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    deadline = time.monotonic() + 120
    while points_done(path) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(int((tmp_path / "rank1.pid").read_text()), signal.SIGUSR1)
    out, err = job.communicate(timeout=120)
    assert job.returncode == 75, err
    done = points_done(path)
    assert 3 <= done <= 12, f"{done} points: the other ranks went on with their chunks"  # 3 ranks × (1-2 in hand) + 3


def test_a_second_signal_ends_a_start_up_that_hangs(tmp_path):
    args = ["--model", "custom_factory:hangs_on_rank_one", "--x=-1:1:5", "--threads", "1", "--no-plot",
            "--no-progress", "--surf_file", str(tmp_path / "s.h5")]
    job = subprocess.Popen(command(args, ranks=3), env=cli_env(), cwd=ROOT, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    time.sleep(8)  # every rank is in start-up: two wait in a collective for rank 1, which sleeps
    for _ in range(2):
        job.send_signal(signal.SIGUSR1)  # mpirun forwards SIGUSR1 to every rank
        time.sleep(1)
    try:
        out, err = job.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        job.kill()
        raise AssertionError("the job still hangs after two signals") from None
    assert job.returncode == 75 and "stopped during start-up by a second signal" in err


def test_the_stop_handlers_stay_after_the_run(tmp_path):
    """After engine.run, a signal still only sets the flag (rank 0 may be writing the trajectory)."""
    code = f"""
import signal, numpy as np
from landscape import engine
from landscape.core.grid import Grid
from landscape.engine.signals import install_stop_handlers, _note_signal
from landscape.io import surface_file
install_stop_handlers()
class Zero:
    metrics, points_per_call = ["f/v"], 1
    def __call__(self, c): return np.zeros((len(c), 1))
    def restore(self): pass
grid = Grid(np.linspace(-1, 1, 3))
path = {str(tmp_path / 's.h5')!r}
engine.run(Zero(), grid, path, surface_file.prepare(path, grid, ["f/v"], {{}}), progress=False)
assert all(signal.getsignal(s) is _note_signal for s in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT))
signal.raise_signal(signal.SIGTERM)
print("still here")
"""
    proc = subprocess.run([sys.executable, "-c", code], env=cli_env(), cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and "still here" in proc.stdout, proc.stderr
    assert Path(tmp_path / "s.h5").exists()
