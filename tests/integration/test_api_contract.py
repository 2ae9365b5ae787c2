"""What the Python API promises, each checked against a by-hand reference: BN re-estimation at
every point also when points per pass are measured, resumes refused when a value-changing
setting differs, the model left exactly as it was, any output type, labels checked as the loss
needs them, and a fall-back when vmap cannot run the model (issue 15, items 1, 2, 8, 11-13)."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from landscape.api import compute_surface
from landscape.core.data import Split
from landscape.core.directions import random_directions
from landscape.errors import UserError

torch.set_num_threads(1)


def toy_data(n=96, seed=0, classes=3):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    return x, (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long() * (classes - 2)


class BNMLP(nn.Module):
    def __init__(self, classes=3):
        super().__init__()
        self.fc1, self.bn, self.fc2 = nn.Linear(6, 16), nn.BatchNorm1d(16), nn.Linear(16, classes)

    def forward(self, x):
        return self.fc2(F.relu(self.bn(self.fc1(x))))


def trained_bn_mlp():
    torch.manual_seed(0)
    model = BNMLP()
    x, y = toy_data()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(20):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval()


def recalibrated_loss(model, direction, alpha, calibration, x, y, batch):
    """By hand: θ* + αd, BN statistics averaged over the calibration batches, mean CE on (x, y)."""
    m = copy.deepcopy(model)
    with torch.no_grad():
        for name, p in m.named_parameters():
            p += alpha * direction[name]
        m.bn.reset_running_stats()
        m.bn.momentum = None
        m.train()
        for i in range(0, len(calibration), batch):
            m(calibration[i : i + batch])
        m.eval()
        return F.cross_entropy(m(x), y).item()


def test_bn_recompute_with_measured_points_per_pass_recalibrates_every_point():
    model = trained_bn_mlp()
    x, y = toy_data()
    calibration = toy_data(64, seed=1)
    before = copy.deepcopy(model.state_dict())
    s = compute_surface(model, {"train": (x, y)}, x="-1:1:5", seed=2, batch_size=32, points_per_pass=0,
                        bn_calibration=Split(*calibration))
    assert s.notes and "re-estimated" in s.notes[0]
    d = s.directions[0]
    want = [recalibrated_loss(model, d, a, calibration[0], x, y, 32) for a in np.linspace(-1, 1, 5)]
    np.testing.assert_allclose(s.values["train/loss"], want, rtol=1e-5)
    for k, v in model.state_dict().items():  # num_batches_tracked included
        assert torch.equal(v, before[k]), k


def test_resume_refuses_another_precision(tmp_path):
    model, data = trained_bn_mlp(), {"train": toy_data()}
    path = tmp_path / "s.h5"
    compute_surface(model, data, x="-1:1:3", surf_file=path)
    with pytest.raises(UserError, match="precision: file has 'fp32', job has 'bf16'"):
        compute_surface(model, data, x="-1:1:3", surf_file=path, precision="bf16")


def test_resume_refuses_another_batch_size_only_where_it_changes_values(tmp_path):
    model, data, calibration = trained_bn_mlp(), {"train": toy_data()}, Split(*toy_data(64, seed=1))
    plain, bn = tmp_path / "plain.h5", tmp_path / "bn.h5"
    compute_surface(model, data, x="-1:1:3", surf_file=plain, batch_size=32)
    assert compute_surface(model, data, x="-1:1:3", surf_file=plain, batch_size=64).summary.computed == 0
    compute_surface(model, data, x="-1:1:3", surf_file=bn, batch_size=32, bn_calibration=calibration)
    with pytest.raises(UserError, match="batch_size: file has 32, job has 64"):
        compute_surface(model, data, x="-1:1:3", surf_file=bn, batch_size=64, bn_calibration=calibration)


class TanhMLP(BNMLP):
    """The same tensors as BNMLP (the same state_dict), another function."""

    def forward(self, x):
        return self.fc2(torch.tanh(self.bn(self.fc1(x))))


def test_resume_refuses_a_model_whose_code_changed(tmp_path):
    model, data = trained_bn_mlp(), {"train": toy_data()}
    other = TanhMLP()
    other.load_state_dict(model.state_dict())
    path = tmp_path / "s.h5"
    compute_surface(model, data, x="-1:1:3", surf_file=path)
    with pytest.raises(UserError, match="model_code"):
        compute_surface(other.eval(), data, x="-1:1:3", surf_file=path)


class ConvBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.fc = nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Linear(4 * 16, 3)

    def forward(self, x):
        return self.fc(F.relu(self.bn(self.conv(x))).flatten(1))


def test_the_model_comes_back_exactly_as_it_was():
    torch.manual_seed(0)
    model = ConvBN().train()  # training mode, as a user may hand it over
    model.fc.bias.requires_grad_(False)
    x, y = torch.randn(40, 1, 4, 4), torch.randint(0, 3, (40,))
    state = copy.deepcopy(model.state_dict())
    layout = {n: (t.device, t.is_contiguous(), t.requires_grad) for n, t in model.named_parameters()}
    compute_surface(model, {"train": (x, y)}, x="-1:1:3", y="-1:1:3", channels_last=True, points_per_pass=0,
                    bn_calibration=Split(x[:16], y[:16]), batch_size=16)
    assert all(m.training for m in model.modules())
    assert {n: (t.device, t.is_contiguous(), t.requires_grad) for n, t in model.named_parameters()} == layout
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k


class Wrapped(nn.Module):
    """The same network returning its logits inside a tuple, a dict, or an object with .logits."""

    class Output:
        def __init__(self, logits):
            self.logits = logits

    def __init__(self, inner, kind):
        super().__init__()
        self.inner, self.kind = inner, kind

    def forward(self, x):
        z = self.inner(x)
        return {"tuple": (z, z.detach()), "list": [z], "dict": {"logits": z, "hidden": x},
                "object": self.Output(z)}[self.kind]


@pytest.mark.parametrize("kind", ["tuple", "list", "dict", "object"])
@pytest.mark.parametrize("k", [1, 4])
def test_models_returning_tuples_dicts_or_model_outputs(kind, k):
    plain = trained_bn_mlp()
    data = {"train": toy_data()}
    want = compute_surface(plain, data, x="-1:1:4", seed=1)
    got = compute_surface(Wrapped(copy.deepcopy(plain), kind).eval(), data, x="-1:1:4", seed=1, points_per_pass=k,
                          directions=[{f"inner.{n}": v for n, v in want.directions[0].items()}])
    np.testing.assert_allclose(got.values["train/loss"], want.values["train/loss"], rtol=1e-6)
    np.testing.assert_array_equal(got.values["train/acc"], want.values["train/acc"])


def test_a_model_returning_something_else_is_one_clear_error():
    class Strange(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(6, 3)

        def forward(self, x):
            return "logits"

    with pytest.raises(UserError, match="returned a str"):
        compute_surface(Strange(), {"train": toy_data()}, x="-1:1:2")


def test_labels_are_checked_as_the_loss_needs_them():
    model, (x, y) = trained_bn_mlp(), toy_data()
    with pytest.raises(UserError, match=r"labels in \[0, 7\] but the model has 3 outputs"):
        compute_surface(model, {"train": (x, torch.where(y == 2, 7, y))}, x="-1:1:2")
    with pytest.raises(UserError, match="fractional labels"):
        compute_surface(model, {"train": (x, y.float() + 0.5)}, x="-1:1:2")
    as_float = compute_surface(model, {"train": (x, y.float())}, x="-1:1:3")  # whole numbers: class indices
    as_int = compute_surface(model, {"train": (x, y)}, x="-1:1:3")
    np.testing.assert_array_equal(as_float.values["train/loss"], as_int.values["train/loss"])


def test_regression_with_the_users_own_loss():
    torch.manual_seed(0)
    model = nn.Linear(6, 1)
    x = torch.randn(50, 6)
    t = x @ torch.arange(6.0) / 10  # float targets, one output
    s = compute_surface(model, {"train": (x, t)}, x="-1:1:3", xnorm="layer", xignore="none",
                        loss_name="custom_factory:summed_squared_error")
    d = s.directions[0]
    for a, value in zip(np.linspace(-1, 1, 3), s.values["train/loss"]):
        with torch.no_grad():
            w, b = model.weight + a * d["weight"], model.bias + a * d["bias"]
            assert value == pytest.approx(((x @ w.T + b).squeeze(-1) - t).pow(2).mean().item(), rel=1e-6)
    assert np.isnan(s.values["train/acc"]).all()  # no class indices: no accuracy


def state_of(model):
    return ({n: (t.device, t.is_contiguous(), t.requires_grad) for n, t in model.named_parameters()},
            {k: v.clone() for k, v in model.state_dict().items()}, [m.training for m in model.modules()])


def assert_same_state(model, before):
    layout, state, training = before
    assert {n: (t.device, t.is_contiguous(), t.requires_grad) for n, t in model.named_parameters()} == layout
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert [m.training for m in model.modules()] == training


def test_the_model_comes_back_after_hessian_and_trajectory_evaluations(tmp_path):
    from landscape.analysis.hessian import HessianEvaluator
    from landscape.analysis.trajectory import Trajectory, record_checkpoint_losses
    from landscape.core.evaluate import Evaluation
    from landscape.core.grid import Grid
    from landscape.io import surface_file

    torch.manual_seed(0)
    model = ConvBN().train()
    x, y = torch.randn(40, 1, 4, 4), torch.randint(0, 3, (40,))
    before = state_of(model)
    d = random_directions(model, seed=0, ndim=1, norms=("filter",), ignores=("none",))
    evaluation = Evaluation(bn_calibration=Split(x[:16], y[:16]), batch_size=16)
    ev = HessianEvaluator(model, Split(x, y), d, evaluation=evaluation, batch_size=20, max_iter=10)
    ev(np.array([[0.5]]))
    ev.restore()
    assert_same_state(model, before)

    checkpoint = tmp_path / "c.pt"
    torch.save(model.state_dict(), checkpoint)
    path = tmp_path / "s.h5"
    surface_file.prepare(path, Grid(np.linspace(-1, 1, 3)), ["train/loss"], {})
    traj = Trajectory(d * 2, np.ones(2), np.array([[0.3, 0.0]]), np.zeros(1), [str(checkpoint)])
    record_checkpoint_losses(path, model, {"train": Split(x, y)}, traj, d * 2, evaluation, torch.device("cpu"))
    assert_same_state(model, before)


def test_float_targets_of_a_dataset_are_not_truncated():
    from torch.utils.data import TensorDataset

    from landscape.core.data import as_split

    x = torch.randn(8, 6)
    t = torch.linspace(-1.5, 1.5, 8)
    assert torch.equal(as_split(TensorDataset(x, t), "data").labels, t)  # used to be int(y): -1, -1, 0, ...
    assert as_split(TensorDataset(x, t.round().long()), "data").labels.dtype == torch.int64
