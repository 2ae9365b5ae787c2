"""A surface file written by landscape 0.1 (tests/fixtures/v1_surface.h5: digits_mlp at its
seed-0 initialization, a 5×3 grid, train and test, 300 examples each) opens, plots, resumes
and takes a Hessian map with this version, through the real CLI."""
from __future__ import annotations

import shutil
import subprocess
import sys

import h5py
import numpy as np
import yaml

from conftest import ROOT, cli_env, run_surface

V1 = ROOT / "tests" / "fixtures" / "v1_surface.h5"
METRICS = ("train/loss", "train/acc", "test/loss", "test/acc")


def landscape(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "landscape", *map(str, args)], env=cli_env(), cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def test_version_1_file_resumes_plots_and_takes_a_hessian_map(tmp_path):
    path = shutil.copy(V1, tmp_path / "v1.h5")
    with h5py.File(path, "r+") as f:  # as a run killed after its coarse points left it: values NaN, mask 0
        original = {m: f[m][...] for m in METRICS}
        config = yaml.safe_load(f.attrs["config"])
        lost = np.zeros(f["mask"].shape, bool)
        lost[:, 1::2] = True
        f["mask"][...] = np.where(lost, 0, 1).astype(np.uint8)
        for m in METRICS:
            f[m][...] = np.where(lost, np.nan, original[m])
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({**config, "surf_file": str(path), "plot": False}))
    proc = run_surface(["--config", str(job)])
    assert f"{lost.sum()} points" in proc.stderr  # only the missing points were computed
    with h5py.File(path) as f:
        assert f["mask"][...].all()
        for m in METRICS:  # this version gives the values version 1 wrote
            np.testing.assert_allclose(f[m][...], original[m], rtol=1e-12, atol=0, err_msg=m)

    proc = landscape("hessian", path, "--subset", 64, "--stride", 2, "--threads", 1, "--no-plot", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    with h5py.File(path) as f:
        assert f["hessian/mask"][...].all() and f["hessian/lambda_max"].shape == (2, 3)

    out = tmp_path / "figures"
    proc = landscape("plot", path, "--format", "png", "--dpi", 40, "--out_dir", out)
    assert proc.returncode == 0, proc.stderr
    names = {p.name for p in out.iterdir()}
    assert {"v1_train_loss_contour.png", "v1_test_acc_heat.png", "v1_hessian_ratio.png"} <= names

    proc = landscape("info", path)
    assert proc.returncode == 0 and "15/15 points" in proc.stdout and "hessian map: 6/6" in proc.stdout
