"""BN folded into the convolution before it (core.fold): equal to the unfolded model within float
rounding, following θ written in place, left out where it does not apply; through compute_surface
equal to --no-fold_bn, recorded as a run option and kept on resume."""
from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch
from torch import nn

from landscape.api import compute_surface
from landscape.core.fold import fold_batch_norm
from landscape.core.models import DigitsCNN, build_model


def randomize_bn(model):
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g))
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.randn(m.num_features, generator=g))
            m.bias.data.copy_(torch.randn(m.num_features, generator=g))
    return model.eval()


@pytest.mark.parametrize("name,shape,pairs", [("resnet20", (8, 3, 32, 32), 21), ("digits_cnn", (8, 1, 8, 8), 2)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_folded_equals_unfolded_and_follows_theta_written_in_place(name, shape, pairs, channels_last):
    torch.manual_seed(0)
    model = randomize_bn(build_model(name))
    x = torch.randn(shape)
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.to(memory_format=torch.channels_last)
    folded, n = fold_batch_norm(model)
    assert n == pairs
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-5, atol=1e-5)
        conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
        bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
        conv.weight.mul_(1.5)  # θ written in place, as core.theta does between points
        bn.running_var.mul_(2.0)
        torch.testing.assert_close(folded(x), model(x), rtol=1e-5, atol=1e-5)
    assert {id(p) for p in folded.parameters()} <= {id(p) for p in model.parameters()}  # the model's own tensors


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4)

    def forward(self, x):
        y = self.bn(self.conv(x))
        return y if y.sum() > -1e9 else -y  # data-dependent: fx cannot trace it


def test_left_as_it_is_where_it_does_not_apply():
    branchy = Branchy().eval()
    assert fold_batch_norm(branchy) == (branchy, 0)
    batch_stats = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4, track_running_stats=False)).eval()
    assert fold_batch_norm(batch_stats)[1] == 0
    training = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4)).train()
    assert fold_batch_norm(training)[1] == 0
    shared = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4)).eval()
    assert fold_batch_norm(shared)[1] == 1


def test_a_surface_folds_by_default_equals_no_fold_and_keeps_its_choice(tmp_path):
    torch.manual_seed(0)
    model = randomize_bn(DigitsCNN())
    x, y = torch.randn(96, 1, 8, 8), torch.randint(0, 10, (96,))
    common = dict(x="-1:1:5", y="-1:1:3", dir_type="states", xignore="none", points_per_pass=1, compile=False)
    folded = compute_surface(model, {"train": (x, y)}, surf_file=tmp_path / "f.h5", **common)
    plain = compute_surface(model, {"train": (x, y)}, surf_file=tmp_path / "p.h5", fold_bn=False, **common)
    assert any("batch norm folded" in n for n in folded.notes) and not any("folded" in n for n in plain.notes)
    np.testing.assert_allclose(folded.values["train/loss"], plain.values["train/loss"], rtol=1e-5)
    for path, want in (("f.h5", True), ("p.h5", False)):
        with h5py.File(tmp_path / path) as f:
            assert json.loads(f.attrs["run_options"])["evaluation"]["fold_bn"] is want
    # a file begun before folding existed (no fold_bn in its run options) resumes unfolded
    with h5py.File(tmp_path / "p.h5", "r+") as f:
        options = json.loads(f.attrs["run_options"])
        del options["evaluation"]["fold_bn"]
        f.attrs["run_options"] = json.dumps(options)
        f["mask"][0, :] = 0
    resumed = compute_surface(model, {"train": (x, y)}, surf_file=tmp_path / "p.h5", **common)
    assert not any("folded" in n for n in resumed.notes)
    np.testing.assert_array_equal(resumed.values["train/loss"], plain.values["train/loss"])


class UserNet(nn.Module):
    """A user's own conv net with BN (not one of landscape's models)."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                                  nn.Linear(256, 10))

    def forward(self, x):
        return self.body(x)


def test_a_users_model_is_folded_only_when_asked():
    torch.manual_seed(0)
    model = randomize_bn(UserNet())
    data = {"train": (torch.randn(64, 1, 8, 8), torch.randint(0, 10, (64,)))}
    default = compute_surface(model, data, x="-1:1:3", xignore="none")
    asked = compute_surface(model, data, x="-1:1:3", xignore="none", fold_bn=True)
    assert not any("folded" in n for n in default.notes)
    assert any("batch norm folded into the convolution before it: 1 pair(s)" in n for n in asked.notes)
    np.testing.assert_allclose(asked.values["train/loss"], default.values["train/loss"], rtol=1e-5)
