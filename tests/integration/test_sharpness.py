"""Worst-case sharpness (`landscape sharpness`): m-sharpness and adaptive sharpness of a quadratic loss
equal their closed forms; Keskar's stays within the box's exact maximum; 2 ranks and a resumed run
equal one process; bad input is one line."""
from __future__ import annotations

import itertools
import subprocess
import sys

import h5py
import numpy as np
import pytest
from quadratic_factory import W_STAR, data

from landscape.cli import main

from conftest import ROOT, cli_env, run_surface

QUADRATIC = ["--model", "quadratic_factory:linear", "--dataset", "quadratic_factory:data", "--task", "regression",
             "--x=-1:1:3", "--threads", "1", "--no-plot", "--no-progress"]


@pytest.fixture(scope="module")
def quadratic(tmp_path_factory):
    path = tmp_path_factory.mktemp("q") / "q.h5"
    run_surface([*QUADRATIC, "--surf_file", str(path)])
    return path


def run_cli(args, ranks=0, check=True):
    """`python -m landscape args`, under `mpirun -n ranks` when ranks > 0."""
    cmd = [sys.executable, "-m", "landscape", *args]
    proc = subprocess.run((["mpirun", "-n", str(ranks)] if ranks else []) + cmd, env=cli_env(), cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert not check or proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def batches(m):
    x = data()["train"][0].double().numpy()
    return [x[i : i + m] for i in range(0, len(x), m)]


def rises(path, measure):
    with h5py.File(path) as f:
        assert f[f"sharpness/{measure}/mask"][...].all()
        return f[f"sharpness/{measure}/rise"][...]


def test_m_sharpness_of_a_quadratic_equals_its_closed_form(quadratic):
    """rise_B = max_{‖δ‖ ≤ ρ} δᵀA_Bδ = ρ² λmax(A_B) per batch of m = 50; the measure is their mean."""
    rho = 0.1
    assert main(["sharpness", str(quadratic), "--m", "50", "--steps", "40", "--rho", str(rho), "--subset", "0",
                 "--no-progress", "--threads", "1"]) == 0
    want = [rho**2 * np.linalg.eigvalsh(b.T @ b / len(b))[-1] for b in batches(50)]
    np.testing.assert_allclose(rises(quadratic, "sam"), want, rtol=1e-4)


def test_adaptive_and_keskar_sharpness_of_a_quadratic(quadratic):
    rho = 0.05
    for measure in ("adaptive", "keskar"):
        assert main(["sharpness", str(quadratic), "--measure", measure, "--m", "0", "--steps", "40", "--rho", str(rho),
                     "--subset", "0", "--no-progress", "--threads", "1"]) == 0
    (x,) = batches(200)
    a = x.T @ x / len(x)
    w = np.abs(W_STAR.double().numpy().ravel())
    # adaptive: δ = |w| ⊙ z with ‖z‖ ≤ ρ: ρ² λmax(D A D), D = diag |w|
    np.testing.assert_allclose(rises(quadratic, "adaptive"), [rho**2 * np.linalg.eigvalsh(np.diag(w) @ a @ np.diag(w))[-1]],
                               rtol=1e-4)
    # Keskar: the maximum of a convex quadratic over the box |δ_i| ≤ ρ(|w_i| + 1) is at a vertex
    box = rho * (w + 1)
    best = max(float((s * box) @ a @ (s * box)) for s in itertools.product((-1, 1), repeat=4))
    found = rises(quadratic, "keskar")[0] / 100  # percent of 1 + L(θ*) = 1
    assert best * 0.95 <= found <= best * (1 + 1e-6)


def test_two_ranks_and_a_resumed_run_equal_one_process(tmp_path, capsys):
    args = ["--model", "digits_mlp", "--x=-1:1:3", "--threads", "1", "--no-plot", "--no-progress"]
    run_surface([*args, "--surf_file", str(tmp_path / "s.h5")])
    sharp = ["--m", "64", "--steps", "3", "--subset", "320", "--no-progress", "--threads", "1"]
    assert main(["sharpness", str(tmp_path / "s.h5"), *sharp]) == 0
    one = rises(tmp_path / "s.h5", "sam")
    assert len(one) == 5 and (one > 0).all()
    run_cli(["sharpness", str(tmp_path / "s.h5"), *sharp, "--force"], ranks=2)
    np.testing.assert_allclose(rises(tmp_path / "s.h5", "sam"), one, rtol=1e-6)
    with h5py.File(tmp_path / "s.h5", "r+") as f:  # a run stopped after 2 batches
        f["sharpness/sam/mask"][2:] = 0
        f["sharpness/sam/rise"][2:] = np.nan
    proc = run_cli(["sharpness", str(tmp_path / "s.h5"), *sharp], ranks=2)
    assert "this run: 3 points" in proc.stderr, proc.stderr
    np.testing.assert_allclose(rises(tmp_path / "s.h5", "sam"), one, rtol=1e-6)
    assert main(["sharpness", str(tmp_path / "s.h5"), *sharp[:-2], "--rho", "0.1"]) == 2  # other settings: refused
    capsys.readouterr()
    assert main(["info", str(tmp_path / "s.h5")]) == 0
    assert f"sharpness sam (ρ 0.05, m 64, 3 steps): {np.mean(one):.6g} over 5/5 batches" in capsys.readouterr().out


@pytest.mark.parametrize("extra,words", [
    (["--rho", "0"], "--rho 0.0 must be a positive number"),
    (["--m", "-1"], "must be >= 0"),
    (["--measure", "worst"], "invalid choice"),
])
def test_bad_input_is_one_line(tmp_path, extra, words):
    run_surface(["--model", "digits_mlp", "--x=-1:1:3", "--no-plot", "--surf_file", str(tmp_path / "s.h5")])
    proc = run_cli(["sharpness", str(tmp_path / "s.h5"), *extra], check=False)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and words in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert len([line for line in lines if "error" in line]) == 1
