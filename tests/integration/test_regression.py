"""--task regression (issue 16, first step): mean squared error of float targets, no accuracy,
end to end through the CLI (and the API), checked against a brute-force loss."""
from __future__ import annotations

import h5py
import numpy as np
import torch

from landscape.api import compute_surface
from landscape.cli import main

from conftest import run_surface
from custom_factory import regression_data, regressor


def brute_force_mse(model, direction, alpha, x, y):
    with torch.no_grad():
        moved = {n: p + alpha * direction[n] for n, p in model.named_parameters()}
        out = torch.func.functional_call(model, moved, (x,)).squeeze(-1)
        return ((out - y) ** 2).mean().item()


def test_regression_through_the_cli(tmp_path):
    path = tmp_path / "r.h5"
    run_surface(["--task", "regression", "--loss_name", "mse", "--model", "custom_factory:regressor", "--dataset",
                 "custom_factory:regression_data", "--splits", "train,test", "--x=-1:1:5", "--xignore", "none",
                 "--threads", "1", "--no-plot", "--no-progress", "--surf_file", str(path)], ranks=2)
    (xtr, ytr), (xte, yte) = regression_data()
    model = regressor()
    with h5py.File(path) as f:
        assert set(f["train"]) >= {"loss"} and "acc" not in f["train"]
        direction = {k: torch.from_numpy(v[...]) for k, v in f["directions/x"].items()}
        for split, (x, y) in (("train", (xtr, ytr)), ("test", (xte, yte))):
            want = [brute_force_mse(model, direction, a, x, y) for a in np.linspace(-1, 1, 5)]
            np.testing.assert_allclose(f[f"{split}/loss"][...], want, rtol=1e-5)
    assert main(["plot", str(path), "--format", "png", "--dpi", "40"]) == 0
    assert main(["info", str(path)]) == 0


def test_regression_through_the_api_with_points_per_pass():
    (x, y), _ = regression_data()
    model = regressor()
    one = compute_surface(model, {"train": (x, y)}, x="-1:1:5", task="regression", loss_name="mse", xignore="none")
    four = compute_surface(model, {"train": (x, y)}, x="-1:1:5", task="regression", loss_name="mse", xignore="none",
                           points_per_pass=4)
    assert list(one.values) == ["train/loss"]
    np.testing.assert_allclose(four.values["train/loss"], one.values["train/loss"], rtol=1e-5)
    want = [brute_force_mse(model, one.directions[0], a, x, y) for a in np.linspace(-1, 1, 5)]
    np.testing.assert_allclose(one.values["train/loss"], want, rtol=1e-5)
