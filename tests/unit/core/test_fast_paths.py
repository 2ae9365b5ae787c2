"""The speed options give the plain path's values (within float tolerance)."""
import h5py
import numpy as np
import pytest
import torch

from landscape.core.data import load_dataset
from landscape.core.directions import random_directions
from landscape.core.evaluate import SurfaceEvaluator
from landscape.core.models import build_model

from conftest import run_surface

COORDS = np.array([[0.0, 0.0], [0.3, -0.2], [-1.0, 0.7], [0.5, 0.5], [1.2, -1.1]])


def evaluate(model_name="digits_cnn", dir_type="weights", **options):
    torch.manual_seed(0)
    model = build_model(model_name)
    directions = random_directions(model, seed=3, dir_type=dir_type, ignores=("none", "none"))
    data = load_dataset("digits")
    return SurfaceEvaluator(model, data, directions, dir_type=dir_type, batch_size=256, **options)(COORDS)


@pytest.mark.parametrize("options, rtol", [
    ({"points_per_pass": 2}, 1e-5),
    ({"points_per_pass": 16}, 1e-5),
    ({"channels_last": True}, 1e-5),
    ({"resident": False}, 1e-12),  # data kept on the host, copied per batch
    ({"compile": True}, 1e-5),
    ({"compile": True, "points_per_pass": 4}, 1e-5),
    ({"precision": "bf16"}, 5e-2),  # bf16 keeps 8 bits of mantissa in the forward pass
])
@pytest.mark.parametrize("dir_type", ["weights", "states"])
def test_option_matches_plain_path(options, rtol, dir_type):
    plain = evaluate(dir_type=dir_type)
    fast = evaluate(dir_type=dir_type, **options)
    loss = slice(0, None, 2)
    np.testing.assert_allclose(fast[:, loss], plain[:, loss], rtol=rtol)
    assert np.abs(fast[:, 1::2] - plain[:, 1::2]).max() <= (100 / 359 * 3 if "precision" in options else 1e-9)


@pytest.mark.parametrize("dir_type", ["weights", "states"])
def test_points_per_pass_with_biases_and_bn_left_out(dir_type):
    """With --xignore biasbn the 1-D tensors do not vary: passed unstacked. The evaluator switches
    from one point per pass to 4, as the start-up measurement (core.tuning) does, points in another order."""
    torch.manual_seed(0)
    model = build_model("digits_cnn")
    directions = random_directions(model, seed=3, dir_type=dir_type, ignores=("biasbn", "biasbn"))
    ev = SurfaceEvaluator(model, load_dataset("digits"), directions, dir_type=dir_type, batch_size=256)
    plain = ev(COORDS)
    ev.set_points_per_pass(4)
    np.testing.assert_allclose(ev(COORDS[::-1])[::-1], plain, rtol=1e-5)
    assert len(ev.stack) < len(ev.theta.targets)  # biases and BN tensors left out of the stack


@pytest.mark.parametrize("loss_name", ["mse", "custom_factory:summed_hinge"])
def test_points_per_pass_with_other_losses(loss_name):
    plain = evaluate(model_name="digits_mlp", loss_name=loss_name)
    np.testing.assert_allclose(evaluate(model_name="digits_mlp", loss_name=loss_name, points_per_pass=4), plain,
                               rtol=1e-5)


def test_in_place_updates_do_not_drift():
    """Going back and forth over many points leaves the centre value bit-identical."""
    model = build_model("digits_mlp")
    directions = random_directions(model, seed=1)
    ev = SurfaceEvaluator(model, load_dataset("digits"), directions)
    centre = ev(COORDS[:1])
    ev(np.tile(COORDS, (20, 1)))
    np.testing.assert_array_equal(ev(COORDS[:1]), centre)


@pytest.mark.parametrize("mode", ["first", "random"])
def test_subset_equals_the_same_examples_evaluated_directly(tmp_path, mode):
    out = tmp_path / "s.h5"
    run_surface(["--model", "digits_mlp", "--x=-1:1:3", "--subset", "100", "--subset_mode", mode,
                 "--splits", "train,test", "--no-plot", "--threads", "1", "--surf_file", str(out)])
    data = load_dataset("digits")
    index = np.arange(100) if mode == "first" else np.sort(np.random.RandomState(0).permutation(len(data["train"]))[:100])
    model = build_model("digits_mlp")
    with h5py.File(out) as f:
        directions = [{k: torch.from_numpy(v[...]) for k, v in f["directions/x"].items()}]
        got = f["train/loss"][...]
        assert "subset: 100" in f.attrs["config"]
    train = {"train": (data["train"].inputs[index], data["train"].labels[index])}
    from landscape.core.data import Split

    want = SurfaceEvaluator(model, {"train": Split(*train["train"])}, directions)(np.array([[-1.0], [0.0], [1.0]]))
    np.testing.assert_allclose(got, want[:, 0], rtol=1e-6)
    proc = run_surface(["--model", "digits_mlp", "--subset", "5000", "--surf_file", str(tmp_path / "t.h5")], check=False)
    assert proc.returncode == 2 and "larger than split" in proc.stderr
