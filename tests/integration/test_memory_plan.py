"""What cannot fit is refused before any work (issue 15, item 9): the Hessian map's Lanczos basis
(2 · max_iter · parameters float64) is planned with the memory of this rank's share of the device."""
from __future__ import annotations

import subprocess
import sys

import h5py

from landscape.analysis.hessian import lanczos_bytes, plan_memory
from landscape.core.device import free_memory

from conftest import ROOT, cli_env, run_surface


def test_lanczos_basis_size():
    assert lanczos_bytes(1000, 100) == 2 * 100 * 1000 * 8
    assert lanczos_bytes(50, 100) == 2 * 50 * 50 * 8  # at most n vectors


def test_a_basis_that_cannot_fit_is_refused_before_any_work(tmp_path):
    path = tmp_path / "wide.h5"
    run_surface(["--model", "custom_factory:wide_net", "--x=-1:1:2", "--subset", "64", "--threads", "1", "--no-plot",
                 "--no-progress", "--surf_file", str(path)])
    cmd = [sys.executable, "-m", "landscape", "hessian", str(path), "--max_iter", "100000", "--subset", "64",
           "--threads", "1", "--no-plot", "--no-progress"]
    proc = subprocess.run(cmd, env=cli_env(), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "Lanczos basis" in proc.stderr and "lower --max_iter" in proc.stderr
    with h5py.File(path) as f:
        assert "hessian" not in f  # refused before the map was even prepared


def test_what_fits_leaves_the_rest_for_kept_graphs():
    import torch

    budget = free_memory(torch.device("cpu")) // 4
    assert plan_memory(1000, 100, budget) == budget - lanczos_bytes(1000, 100)
