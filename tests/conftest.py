"""Shared helpers: run the real CLI as a subprocess, with or without mpirun."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MPI_ENV = {
    "OMPI_ALLOW_RUN_AS_ROOT": "1",
    "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
    "OMPI_MCA_rmaps_base_oversubscribe": "1",
    "OMPI_MCA_btl_vader_single_copy_mechanism": "none",
}


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


@pytest.fixture(scope="session")
def demo_checkpoint(tmp_path_factory) -> Path:
    """A digits_cnn trained for 3 epochs (real checkpoint files, one per epoch)."""
    from landscape.core.train import train

    out = tmp_path_factory.mktemp("ckpt")
    return train(model="digits_cnn", out_dir=str(out), epochs=3, seed=0)
