"""Surfaces along lines and planes between models and along PCA directions, end to end (CLI)."""
import h5py
import numpy as np
import pytest
import torch

from landscape.core.data import load_dataset
from landscape.core.evaluate import SurfaceEvaluator
from landscape.core.models import build_model, load_checkpoint

from conftest import run_surface


def true_metrics(checkpoint, splits=("train", "test")):
    """Loss and accuracy of a checkpoint, evaluated directly (no directions)."""
    model = build_model("digits_cnn")
    load_checkpoint(model, checkpoint)
    data = load_dataset("digits")
    ev = SurfaceEvaluator(model, {s: data[s] for s in splits}, [], batch_size=4096)
    return ev.evaluate_point().numpy()


def values(path, metrics=("train/loss", "train/acc", "test/loss", "test/acc")):
    with h5py.File(path) as f:
        return {m: f[m][...] for m in metrics}


def test_interpolation_hits_both_models(tmp_path, demo_checkpoint):
    first, second = demo_checkpoint.parent / "epoch_001.pt", demo_checkpoint
    out = tmp_path / "line.h5"
    run_surface(["--model_file", str(first), "--model_file2", str(second), "--x=-0.5:1.5:5", "--splits", "train,test",
                 "--dir_type", "states",
                 "--threads", "1", "--no-plot", "--surf_file", str(out)])
    v = values(out)
    got = np.array([[v[m][i] for m in v] for i in (1, 3)])  # α = 0 and α = 1
    np.testing.assert_allclose(got[0], true_metrics(first), rtol=1e-5)
    np.testing.assert_allclose(got[1], true_metrics(second), rtol=1e-5)
    with h5py.File(out) as f:
        torch.testing.assert_close(
            torch.from_numpy(f["directions/x/features.1.running_var"][...]),
            torch.load(second)["state_dict"]["features.1.running_var"] - torch.load(first)["state_dict"]["features.1.running_var"])


def test_plane_through_three_models(tmp_path, demo_checkpoint):
    ckpt = [demo_checkpoint.parent / f"epoch_00{i}.pt" for i in (1, 2, 3)]
    out = tmp_path / "plane.h5"
    run_surface(["--model_file", str(ckpt[0]), "--model_file2", str(ckpt[1]), "--model_file3", str(ckpt[2]),
                 "--x=0:1:3", "--y=0:1:2", "--splits", "train", "--dir_type", "states", "--threads", "1",
                 "--no-plot", "--surf_file", str(out)], ranks=2)
    v = values(out, ("train/loss", "train/acc"))
    for (iy, ix), c in zip([(0, 0), (0, 2), (1, 0)], ckpt):  # (α, β) = (0, 0), (1, 0), (0, 1)
        np.testing.assert_allclose([v["train/loss"][iy, ix], v["train/acc"][iy, ix]],
                                   true_metrics(c, ("train",)), rtol=1e-5)


def test_trajectory_surface_one_and_two_ranks(tmp_path, demo_checkpoint):
    args = ["--model_file", str(demo_checkpoint), "--trajectory", str(demo_checkpoint.parent / "epoch_*.pt"),
            "--x=-1:1:5", "--splits", "train", "--threads", "1", "--no-plot"]
    run_surface(args + ["--surf_file", str(tmp_path / "a.h5")])
    run_surface(args + ["--surf_file", str(tmp_path / "b.h5")], ranks=2)
    with h5py.File(tmp_path / "a.h5") as a, h5py.File(tmp_path / "b.h5") as b:
        for key in ("train/loss", "mask", "trajectory/coords", "trajectory/off_plane", "trajectory/train/loss"):
            np.testing.assert_array_equal(a[key][...], b[key][...])
        coords = a["trajectory/coords"][...]
        assert coords.shape == (4, 2) and a["train/loss"].shape == (5, 5)
        assert a["x"][0] <= coords[:, 0].min() and a["x"][-1] >= coords[:, 0].max()  # the grid covers the path
        np.testing.assert_allclose(coords[-1], 0, atol=1e-6)  # the final model is the origin
        true = a["trajectory/train/loss"][...]
        np.testing.assert_allclose(true[-1], a["trajectory/train/loss_projected"][-1], rtol=1e-6)
        np.testing.assert_allclose(true[0], true_metrics(demo_checkpoint.parent / "epoch_000.pt", ("train",))[0],
                                   rtol=1e-5)


@pytest.mark.parametrize("args, message", [
    (["--model_file3", "x.pt"], "needs --model_file2"),
    (["--trajectory", "nothing_here_*.pt"], "matches no file"),
])
def test_bad_direction_sources(tmp_path, args, message):
    proc = run_surface(args + ["--surf_file", str(tmp_path / "s.h5")], check=False)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
