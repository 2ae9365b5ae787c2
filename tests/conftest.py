"""Shared helpers: run the real CLI as a subprocess, with or without mpirun."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MPI_ENV = {
    "OMPI_ALLOW_RUN_AS_ROOT": "1",
    "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
    "OMPI_MCA_rmaps_base_oversubscribe": "1",
    "OMPI_MCA_btl_vader_single_copy_mechanism": "none",
}


# one evaluation configuration, pinned, for files compared bit for bit: left automatic, each run measures its own
# (core.tuning), and two configurations differ by float rounding
FIXED = ["--channels_last", "--points_per_pass", "1", "--no-compile", "--batch_size", "512"]


def cli_env() -> dict:
    env = dict(os.environ, **MPI_ENV)
    # the repo root and tests/ (test helper modules such as custom_factory.py)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "tests"), env.get("PYTHONPATH", "")])
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def command(args: list[str], ranks: int = 0) -> list[str]:
    """`python plot_surface.py args`, under `mpirun -n ranks` when ranks > 0."""
    cmd = [sys.executable, str(ROOT / "plot_surface.py"), *args]
    return (["mpirun", "-n", str(ranks)] + cmd) if ranks else cmd


def run_surface(args: list[str], ranks: int = 0, timeout: float = 300, check: bool = True, cwd=None):
    """Run a surface job to the end; returns the CompletedProcess (stdout/stderr as text)."""
    proc = subprocess.run(command(args, ranks), env=cli_env(), capture_output=True, text=True, timeout=timeout,
                          cwd=cwd or ROOT)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def points_done(path, mask: str = "mask") -> int:
    """Points a (possibly running) job has marked done in its file; 0 while there is no readable file."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return int(f[mask][...].sum())
    except (OSError, KeyError):
        return 0


def kill_after(job: subprocess.Popen, path, points: int, mask: str = "mask", timeout: float = 300) -> None:
    """SIGKILL the job's whole process group (started with start_new_session) once its file marks
    `points` points done; fails when the job ended before."""
    try:
        end = time.monotonic() + timeout
        while points_done(path, mask) < points and job.poll() is None and time.monotonic() < end:
            time.sleep(0.05)
        assert job.poll() is None, job.stdout.read() if job.stdout else "the job ended before the kill"
    finally:
        os.killpg(job.pid, signal.SIGKILL)
        job.wait()


@pytest.fixture(scope="session")
def demo_checkpoint(tmp_path_factory) -> Path:
    """A digits_cnn trained for 3 epochs (real checkpoint files, one per epoch)."""
    from landscape.core.train import train

    out = tmp_path_factory.mktemp("ckpt")
    return train(model="digits_cnn", out_dir=str(out), epochs=3, seed=0)
