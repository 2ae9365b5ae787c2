"""What is computed later from a surface file is evaluated as the surface was (issue 15, item 4):
the trajectory's projected values and the Hessian map follow the file's dir_type, precision and
BN re-estimation."""
from __future__ import annotations

import copy

import h5py
import numpy as np
import pytest
import torch

from landscape.analysis.hessian import HessianEvaluator
from landscape.core.data import Split, load_dataset
from landscape.core.directions import random_directions
from landscape.core.evaluate import Evaluation
from landscape.core.models import build_model

from conftest import run_surface

torch.set_num_threads(1)


def test_in_plane_checkpoints_are_projected_onto_their_own_loss(demo_checkpoint, tmp_path):
    """Three checkpoints span the PCA plane exactly; with --dir_type states --xignore none the BN
    statistics move too, so each checkpoint's projection is the checkpoint: its value on the
    plane must be its true loss (the projection used to be evaluated with dir_type weights)."""
    folder = demo_checkpoint.parent
    files = [str(folder / f"epoch_00{i}.pt") for i in (1, 2, 3)]
    path = tmp_path / "t.h5"
    run_surface(["--model", "digits_cnn", "--model_file", files[-1],
                 "--dir_type", "states", "--xignore", "none", "--x=-1:1:5", "--subset", "200", "--splits", "train",
                 "--threads", "1", "--no-plot", "--no-progress", "--surf_file", str(path), "--config",
                 str(job_file(tmp_path, files))])
    with h5py.File(path) as f:
        true, projected = f["trajectory/train/loss"][...], f["trajectory/train/loss_projected"][...]
        assert f["trajectory/off_plane"][...].max() < 1e-5
    np.testing.assert_allclose(projected, true, rtol=1e-4)


def job_file(tmp_path, files):
    path = tmp_path / "job.yaml"
    path.write_text("trajectory:\n" + "".join(f"  - {f}\n" for f in files))
    return path


def recalibrated(model, split, batch):
    """By hand: the BN statistics as the average over the split's batches (momentum None)."""
    m = copy.deepcopy(model)
    with torch.no_grad():
        for bn in [x for x in m.modules() if isinstance(x, torch.nn.BatchNorm2d)]:
            bn.reset_running_stats()
            bn.momentum = None
        m.train()
        for i in range(0, len(split), batch):
            m(split.inputs[i : i + batch])
    return m.eval()


def test_hessian_map_re_estimates_bn_as_the_surface_did(demo_checkpoint):
    model = build_model("digits_cnn")
    model.load_state_dict(torch.load(demo_checkpoint)["state_dict"])
    train = load_dataset("digits")["train"]
    data, calibration = Split(train.inputs[:128], train.labels[:128]), Split(train.inputs[:256], train.labels[:256])
    d = random_directions(model, seed=0, ndim=1)[0]
    alpha = 0.6
    ev = HessianEvaluator(model, data, [d], evaluation=Evaluation(batch_size=64, bn_calibration=calibration),
                          batch_size=64, tol=1e-6, max_iter=200)
    got = ev.solve(np.array([alpha]))
    ev.restore()
    moved = copy.deepcopy(model)
    with torch.no_grad():
        for name, p in moved.named_parameters():
            p += alpha * d[name]
    want = HessianEvaluator(recalibrated(moved, calibration, 64), data, [d], batch_size=64, tol=1e-6,
                            max_iter=200).solve(np.array([0.0]))
    assert got.lambda_max == pytest.approx(want.lambda_max, rel=1e-4)
    assert got.lambda_min == pytest.approx(want.lambda_min, rel=1e-3, abs=1e-4 * abs(want.lambda_max))
    stale = HessianEvaluator(model, data, [d], batch_size=64, tol=1e-6, max_iter=200).solve(np.array([alpha]))
    assert abs(stale.lambda_max - want.lambda_max) > 1e-3 * abs(want.lambda_max)  # the test can tell them apart


def test_hessian_map_settings_follow_the_surface(demo_checkpoint, tmp_path):
    path = tmp_path / "s.h5"
    run_surface(["--model", "digits_cnn", "--model_file", str(demo_checkpoint), "--x=-1:1:3", "--subset", "100",
                 "--bn_recompute", "200", "--threads", "1", "--no-plot", "--no-progress", "--surf_file", str(path)])
    from landscape.cli import main

    assert main(["hessian", str(path), "--subset", "64", "--threads", "1", "--no-plot", "--no-progress",
                 "--max_iter", "20"]) == 0
    with h5py.File(path) as f:
        g = f["hessian"]
        assert g.attrs["bn_recompute"] == 200 and g.attrs["precision"] == "fp32" and g["mask"][...].all()
