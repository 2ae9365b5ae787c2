"""Tests of landscape.directions against independent recomputations (no stored numbers)."""
import copy

import pytest
import torch
from torch import nn

from landscape.core.directions import fingerprint, random_directions, target_tensors
from landscape.core.models import build_model
from landscape.errors import UserError


class ConvBNLinear(nn.Module):
    """A conv with bias, a BN, a linear with bias: every kind of tensor a direction meets."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, bias=True)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 6 * 6, 10)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))


def make_model(name):
    if name == "conv_bn_linear":
        torch.manual_seed(1)
        m = ConvBNLinear()
        # non-trivial BN statistics and affine parameters
        with torch.no_grad():
            m.bn.running_mean.uniform_(-1, 1)
            m.bn.running_var.uniform_(0.5, 2)
            m.bn.weight.uniform_(0.5, 1.5)
            m.bn.bias.uniform_(-0.5, 0.5)
        m.bn.num_batches_tracked += 7
        return m
    return build_model(name, seed=3)


MODELS = ["digits_cnn", "digits_mlp", "conv_bn_linear"]


def theta(model, dir_type="weights"):
    """θ* by name, computed here without landscape: parameters, or float state_dict entries."""
    if dir_type == "weights":
        return {k: v.detach().clone() for k, v in model.named_parameters()}
    return {k: v.detach().clone() for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}


def draw(model, **kw):
    kw.setdefault("seed", 0)
    kw.setdefault("ndim", 2)
    return random_directions(model, **kw)


def rows(t):
    """Filters of a tensor: slices along dim 0, flattened."""
    return t.reshape(t.shape[0], -1)


@pytest.mark.parametrize("name", MODELS)
def test_filter_norm_matches_each_filter_of_theta(name):
    model = make_model(name)
    th = theta(model)
    for d in draw(model, norms=("filter", "filter")):
        assert set(d) == set(th)
        multi = [k for k in th if th[k].dim() > 1]
        assert multi
        for k in multi:
            assert d[k].shape == th[k].shape
            torch.testing.assert_close(rows(d[k]).norm(dim=1), rows(th[k]).norm(dim=1), rtol=1e-5, atol=1e-7)
            # a random direction, not θ* itself
            assert not torch.allclose(d[k], th[k])


@pytest.mark.parametrize("name", MODELS)
def test_filter_normalization_only_rescales_each_filter(name):
    """filter-normalized = raw Gaussian (norm none, same seed) rescaled filter by filter."""
    model = make_model(name)
    th = theta(model)
    raw = draw(model, norms=("none", "none"))
    fil = draw(model, norms=("filter", "filter"))
    for r, f in zip(raw, fil):
        for k in th:
            if th[k].dim() > 1:
                scale = rows(th[k]).norm(dim=1) / (rows(r[k]).norm(dim=1) + 1e-10)
                torch.testing.assert_close(rows(f[k]), rows(r[k]) * scale[:, None], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", MODELS)
def test_layer_norm_matches_tensor_norm(name):
    model = make_model(name)
    th = theta(model)
    raw = draw(model, norms=("none", "none"))
    for r, d in zip(raw, draw(model, norms=("layer", "layer"))):
        for k in th:
            if th[k].dim() > 1:
                torch.testing.assert_close(d[k].norm(), th[k].norm(), rtol=1e-5, atol=1e-7)
                torch.testing.assert_close(d[k], r[k] * th[k].norm() / r[k].norm(), rtol=1e-5, atol=1e-7)
                # filters are not equalized to θ*'s filters (that is `filter`)
                assert not torch.allclose(rows(d[k]).norm(dim=1), rows(th[k]).norm(dim=1), rtol=1e-3)


@pytest.mark.parametrize("name", MODELS)
def test_weight_dfilter_dlayer(name):
    model = make_model(name)
    th = theta(model)
    raw = draw(model, norms=("none", "none"))
    weight = draw(model, norms=("weight", "weight"))
    dfilter = draw(model, norms=("dfilter", "dfilter"))
    dlayer = draw(model, norms=("dlayer", "dlayer"))
    for i in range(2):
        for k in th:
            if th[k].dim() > 1:
                torch.testing.assert_close(weight[i][k], raw[i][k] * th[k], rtol=1e-6, atol=0)
                n = rows(dfilter[i][k]).norm(dim=1)
                torch.testing.assert_close(n, torch.ones_like(n), rtol=1e-5, atol=1e-6)
                torch.testing.assert_close(dlayer[i][k].norm(), torch.tensor(1.0), rtol=1e-5, atol=1e-6)


def test_raw_direction_is_standard_gaussian():
    model = make_model("digits_cnn")
    th = theta(model)
    d = draw(model, norms=("none", "none"), ndim=1)[0]
    flat = torch.cat([d[k].flatten() for k in th if th[k].dim() > 1])
    assert flat.numel() > 5000
    assert abs(flat.mean().item()) < 0.05
    assert abs(flat.std().item() - 1.0) < 0.05


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("norm", ["filter", "layer", "weight", "none"])
def test_biasbn_zeroes_1d_and_none_keeps_the_tensor(name, norm):
    model = make_model(name)
    th = theta(model)
    one_d = [k for k in th if th[k].dim() <= 1]
    assert one_d
    for d in draw(model, norms=(norm, norm), ignores=("biasbn", "biasbn")):
        for k in one_d:
            assert d[k].shape == th[k].shape
            assert torch.count_nonzero(d[k]) == 0, k
    for d in draw(model, norms=(norm, norm), ignores=("none", "none")):
        for k in one_d:
            assert torch.equal(d[k], th[k].float()), k


def test_x_and_y_ignore_independently():
    model = make_model("digits_cnn")
    th = theta(model)
    dx, dy = draw(model, ignores=("biasbn", "none"))
    for k in th:
        if th[k].dim() <= 1:
            assert torch.count_nonzero(dx[k]) == 0
            assert torch.equal(dy[k], th[k])


@pytest.mark.parametrize("dir_type", ["weights", "states"])
def test_same_seed_same_directions_other_seed_other(dir_type):
    model = make_model("conv_bn_linear")
    torch.manual_seed(123)
    a = draw(model, seed=7, dir_type=dir_type)
    torch.manual_seed(456)  # the global RNG must not matter
    torch.rand(10)
    b = draw(copy.deepcopy(model), seed=7, dir_type=dir_type)
    c = draw(model, seed=8, dir_type=dir_type)
    for da, db in zip(a, b):
        assert da.keys() == db.keys()
        for k in da:
            assert torch.equal(da[k], db[k]), k
    multi = [k for k in a[0] if a[0][k].dim() > 1]
    for da, dc in zip(a, c):
        for k in multi:
            assert not torch.allclose(da[k], dc[k]), k
    # x and y are different directions
    for k in multi:
        assert not torch.allclose(a[0][k], a[1][k]), k


def test_directions_do_not_touch_the_model():
    model = make_model("conv_bn_linear")
    before = copy.deepcopy(model.state_dict())
    draw(model, dir_type="states", norms=("weight", "filter"), ignores=("none", "biasbn"))
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize("name", ["digits_cnn", "conv_bn_linear"])
def test_states_cover_bn_statistics_not_num_batches_tracked(name):
    model = make_model(name)
    state = model.state_dict()
    expected = {k for k in state if not k.endswith("num_batches_tracked")}
    assert any(k.endswith("running_mean") for k in expected)
    assert any(k.endswith("running_var") for k in expected)
    assert any(k.endswith("num_batches_tracked") for k in state)

    assert set(target_tensors(model, "states")) == expected
    assert set(target_tensors(model, "weights")) == {k for k, _ in model.named_parameters()}

    d_states = draw(model, dir_type="states", ignores=("none", "none"))
    d_weights = draw(model, dir_type="weights", ignores=("none", "none"))
    for d in d_states:
        assert set(d) == expected
        for k in expected:
            if k.endswith(("running_mean", "running_var")):
                assert torch.equal(d[k], state[k]), k  # 1-D: the tensor itself with ignore none
    for d in d_weights:
        assert not any("running" in k or "num_batches" in k for k in d)
    for d in draw(model, dir_type="states", ignores=("biasbn", "biasbn")):
        for k in expected:
            if "running" in k:
                assert torch.count_nonzero(d[k]) == 0, k


def test_fingerprint_identifies_values():
    model = make_model("conv_bn_linear")
    th = theta(model)
    same = {k: v.clone() for k, v in th.items()}
    assert fingerprint(th) == fingerprint(same)
    for k in th:
        changed = {n: v.clone() for n, v in th.items()}
        flat = changed[k].view(-1)
        flat[-1] = torch.nextafter(flat[-1], flat[-1] + 1)  # the smallest possible change
        assert fingerprint(changed) != fingerprint(th), k
    renamed = {("x." + k if i == 0 else k): v for i, (k, v) in enumerate(th.items())}
    assert fingerprint(renamed) != fingerprint(th)
    dirs = draw(model)
    assert fingerprint(dirs) == fingerprint([{k: v.clone() for k, v in d.items()} for d in dirs])
    assert fingerprint(dirs) != fingerprint(dirs[::-1])


def test_unknown_normalization_is_a_user_error():
    model = make_model("digits_mlp")
    with pytest.raises(UserError, match="normalization"):
        draw(model, norms=("foo", "foo"))
    with pytest.raises(UserError):
        draw(model, ignores=("all", "all"))
    with pytest.raises(UserError):
        draw(model, dir_type="buffers")
