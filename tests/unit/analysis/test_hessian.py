"""Hessian maps: products and eigenvalues against dense Hessians and a closed form; the map
through the engine on 1 and 2 ranks; resume, settings and bad input.

Dense reference: torch.autograd.functional.hessian of the mean loss as a function of the flat
parameter vector (torch.func.functional_call), then torch.linalg.eigvalsh. Tolerances, with
s = max |eigenvalue|: products 1e-10 relative (float64); eigenvalues in float64 at tol 1e-9:
within 1e-9·s; a float32 model at the default tol 1e-3: within 1e-3·|λ| + 2e-5·s (the solver's
floor atol = 1e-5 plus float32 round-off); least squares (closed form H = 2/n AᵀA): 1e-12·s.
"""
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

from landscape.analysis.hessian import (
    HessianEvaluator,
    HessianVectorProduct,
    extreme_eigenvalues,
    lanczos,
    start_vector,
    sub_grid,
)
from landscape.api import hessian_map
from landscape.cli import main
from landscape.core.data import Split, load_dataset
from landscape.core.data import subset as take_subset
from landscape.core.tasks import summed_loss
from landscape.errors import UserError
from landscape.io.surface_file import HESSIAN_METRICS as METRICS

from conftest import ROOT, cli_env

torch.set_num_threads(1)


def ce(z, y):
    return summed_loss("crossentropy", z, y)


def tiny_mlp(seed=0, dtype=torch.float64):
    """64-4-10 tanh perceptron: 310 parameters."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 4), nn.Tanh(), nn.Linear(4, 10)).to(dtype)


@pytest.fixture(scope="module")
def digits():
    train = load_dataset("digits")["train"]
    return train.inputs[:200].double(), train.labels[:200]


def dense_hessian(model, X, Y, loss_fn):
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).double()

    def f(theta):
        params, i = {}, 0
        for n, s in zip(names, shapes):
            params[n] = theta[i : i + s.numel()].view(s)
            i += s.numel()
        return loss_fn(functional_call(model.double(), params, (X.double(),)), Y) / len(Y)

    return torch.autograd.functional.hessian(f, flat)


@pytest.mark.parametrize("batch_size,memory", [(200, None), (64, None), (64, 0), (64, 4_000_000)])
def test_hvp_equals_dense(digits, batch_size, memory):
    """Kept graphs (memory=None: all), rebuilt graphs (memory=0) and a mix give H v."""
    X, Y = digits
    model = tiny_mlp()
    H = dense_hessian(model, X, Y, ce)
    hvp = HessianVectorProduct(model, X, Y, ce, batch_size=batch_size, memory=memory)
    hvp.prepare()
    for seed in range(2):
        v = start_vector(hvp.n, "cpu", seed)
        torch.testing.assert_close(hvp(v), H @ v, rtol=1e-10, atol=1e-10 * H.abs().max().item())


def test_lanczos_matches_dense_indefinite(digits):
    X, Y = digits
    model = tiny_mlp(seed=1)
    eig = torch.linalg.eigvalsh(dense_hessian(model, X, Y, ce))
    s = eig.abs().max().item()
    assert eig[0] < -1e-3 * s  # indefinite: a saddle, not a minimum
    hvp = HessianVectorProduct(model, X, Y, ce)
    r = extreme_eigenvalues(hvp, tol=1e-9, max_iter=310, atol=0)
    assert r.converged and r.n_hvp < 310
    assert abs(r.lambda_max - eig[-1].item()) <= 1e-9 * s
    assert abs(r.lambda_min - eig[0].item()) <= 1e-9 * s
    assert r.residual_max <= 1e-9 * r.lambda_max and r.residual_min <= 1e-9 * abs(r.lambda_min)


def test_float32_model_at_default_tolerance(digits):
    """The production setting: float32 products, float64 sums and solver, tol 1e-3."""
    X, Y = digits
    model = tiny_mlp(seed=2, dtype=torch.float32)
    eig = torch.linalg.eigvalsh(dense_hessian(model, X, Y, ce))
    s = eig.abs().max().item()
    model.float()
    r = extreme_eigenvalues(HessianVectorProduct(model, X.float(), Y, ce, batch_size=64), tol=1e-3)
    assert r.converged
    for got, want in ((r.lambda_max, eig[-1].item()), (r.lambda_min, eig[0].item())):
        assert abs(got - want) <= 1e-3 * abs(want) + 2e-5 * s  # tol·|λ| + atol·s, float32 round-off


def test_least_squares_closed_form():
    """L(w, b) = (1/n) Σ (xᵢ·w + b − yᵢ)²: H = 2/n AᵀA, A = [X 1], exact."""
    g = torch.Generator().manual_seed(0)
    X = torch.randn(50, 8, generator=g, dtype=torch.float64) * torch.linspace(0.1, 3, 8, dtype=torch.float64)
    y = torch.randn(50, generator=g, dtype=torch.float64)
    model = nn.Linear(8, 1).double()
    A = torch.cat([X, torch.ones(50, 1, dtype=torch.float64)], 1)
    H = 2 * A.T @ A / 50  # parameter order: weight (8), bias (1)
    eig = torch.linalg.eigvalsh(H)
    hvp = HessianVectorProduct(model, X, y, lambda z, t: (z.squeeze(1) - t).pow(2).sum(), batch_size=16)
    hvp.prepare()
    v = start_vector(9, "cpu")
    torch.testing.assert_close(hvp(v), H @ v, rtol=1e-12, atol=1e-12)
    r = lanczos(hvp, v, tol=1e-12, max_iter=50, atol=0)
    assert r.n_hvp <= 9
    assert abs(r.lambda_max - eig[-1].item()) <= 1e-12 * eig[-1].item()
    assert abs(r.lambda_min - eig[0].item()) <= 1e-12 * eig[-1].item()


def test_lanczos_diagonal_and_iteration_cap():
    d = torch.linspace(-1, 10, 1000, dtype=torch.float64)
    r = lanczos(lambda v: d * v, start_vector(1000, "cpu"), tol=1e-6, max_iter=5)
    assert r.n_hvp == 5 and not r.converged and r.lambda_max < 10 and r.lambda_min > -1
    r = lanczos(lambda v: d * v, start_vector(1000, "cpu"), tol=1e-6, max_iter=300)
    assert r.converged and abs(r.lambda_max - 10) <= 1e-5 and abs(r.lambda_min + 1) <= 1e-5


def test_small_lambda_min_below_a_bulk_near_zero():
    """A trained net's spectrum: λmax = 1, 500 eigenvalues in [-1e-4, 1e-4], λmin = -0.02. Early
    Ritz vectors in the bulk have residuals ≤ 1e-2·λmax; tol is relative to each |λ|, so the run
    goes on to the true λmin."""
    d = torch.cat([torch.tensor([1.0, 0.5, -0.02], dtype=torch.float64),
                   torch.linspace(-1e-4, 1e-4, 500, dtype=torch.float64)])
    r = lanczos(lambda v: d * v, start_vector(len(d), "cpu"), tol=1e-2, max_iter=200)
    assert r.converged
    assert abs(r.lambda_max - 1) <= 1e-2 and abs(r.lambda_min + 0.02) <= 1e-2 * 0.02 + 1e-5


def test_non_finite_loss_gives_nan(digits):
    X, Y = digits
    model = tiny_mlp(dtype=torch.float32)
    blowup = {n: torch.full_like(p, 1e38) for n, p in model.named_parameters()}
    ev = HessianEvaluator(model, Split(X.float(), Y), [blowup], batch_size=64)
    out = ev(np.array([[0.0], [10.0]]))
    assert np.isfinite(out[0]).all() and out[0, 4] > 0
    assert np.isnan(out[1, :4]).all() and out[1, 4] == 0
    ev.restore()
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_stride_and_subset_checks():
    x = np.linspace(-1, 1, 31)
    assert sub_grid(x, x, 3).shape == (11, 11)
    assert sub_grid(x, None, 30).shape == (2,)
    with pytest.raises(UserError, match="does not fit"):
        sub_grid(x, np.linspace(-1, 1, 21), 3)
    split = Split(torch.zeros(10, 1), torch.zeros(10, dtype=torch.long))
    assert len(take_subset(split, 4)) == 4 and len(take_subset(split, 0)) == 10
    with pytest.raises(UserError, match="larger than split 'train'"):
        take_subset(split, 11)


# ---------------------------------------------------------------- the map through the CLI


def make_surface(path, **keys):
    """A digits_mlp surface (at initialization) written by the surface job runner."""
    from landscape.api import surface_job
    from landscape.options import build_job

    job = build_job({"model": "digits_mlp", "threads": 1, "plot": False, "progress": False, "surf_file": str(path),
                     **keys})
    assert surface_job(job).summary.complete
    return path


@pytest.fixture(scope="module")
def surface(tmp_path_factory):
    return make_surface(tmp_path_factory.mktemp("hessian") / "s.h5", x="-1:1:3", y="-1:1:3")


def copy(surface, tmp_path, name):
    return shutil.copy(surface, tmp_path / name)


def hessian_group(path):
    with h5py.File(path) as f:
        return {k: f["hessian"][k][...] for k in f["hessian"]}, dict(f["hessian"].attrs)


OPTS = dict(subset=64, threads=1, progress=False)


def test_two_ranks_equal_one_rank(surface, tmp_path):
    one, two = copy(surface, tmp_path, "one.h5"), copy(surface, tmp_path, "two.h5")
    hessian_map(one, **OPTS)
    cmd = ["mpirun", "-n", "2", sys.executable, "-m", "landscape", "hessian", str(two), "--subset", "64",
           "--threads", "1", "--no-plot", "--no-progress"]
    proc = subprocess.run(cmd, env=cli_env(), capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    a, attrs = hessian_group(one)
    b, _ = hessian_group(two)
    assert set(a) == {"x", "y", "mask"} | {m.split("/")[1] for m in METRICS}
    assert a["mask"].all() and a["lambda_max"].shape == (3, 3)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert (a["lambda_min"] < 0).all() and (a["lambda_max"] > 0).all()
    assert attrs["stride"] == 1 and attrs["subset_size"] == 64 and attrs["tol"] == 1e-3


def test_resume_settings_and_force(surface, tmp_path):
    path = copy(surface, tmp_path, "r.h5")
    with h5py.File(path) as f:
        loss = f["train/loss"][...]
    s = hessian_map(path, stride=2, **OPTS)
    assert s.summary.computed == 4 and s.summary.complete
    first, _ = hessian_group(path)
    assert first["x"].tolist() == [-1, 1] and first["mask"].shape == (2, 2)
    assert hessian_map(path, stride=2, **OPTS).summary.computed == 0  # resumed: nothing left
    with pytest.raises(UserError, match="other settings.*tol"):
        hessian_map(path, stride=2, tol=1e-2, **OPTS)
    s = hessian_map(path, stride=2, tol=1e-2, force=True, **OPTS)
    assert s.summary.computed == 4
    again, attrs = hessian_group(path)
    assert attrs["tol"] == 1e-2
    with h5py.File(path) as f:  # --force cleared only the hessian group
        np.testing.assert_array_equal(f["train/loss"][...], loss)
        assert f["mask"][...].all()


def test_1d_map(tmp_path):
    path = make_surface(tmp_path / "line.h5", x="-1:1:5")
    s = hessian_map(path, stride=2, **OPTS)
    assert s.summary.complete and s.summary.computed == 3
    g, _ = hessian_group(path)
    assert g["x"].tolist() == [-1, 0, 1] and "y" not in g and g["mask"].all()
    from landscape.viz.hessian_figures import plot_hessian

    assert len(plot_hessian(path, formats=("png",))) == 3


def test_plot_hessian(surface, tmp_path):
    """Three figures from a map, drawn in a process that never imports torch."""
    path = copy(surface, tmp_path, "p.h5")
    hessian_map(path, stride=2, **OPTS)
    code = ("import sys; from landscape.viz.hessian_figures import plot_hessian; "
            f"files = plot_hessian({str(path)!r}, {str(tmp_path / 'fig')!r}, formats=('png',)); "
            "assert 'torch' not in sys.modules; print(*sorted(p.name for p in files))")
    proc = subprocess.run([sys.executable, "-c", code], env=cli_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["p_hessian_lambda_max.png", "p_hessian_lambda_min.png", "p_hessian_ratio.png"]
    assert all(p.stat().st_size > 1000 for p in (tmp_path / "fig").iterdir())
    from landscape.viz.hessian_figures import plot_hessian

    with pytest.raises(UserError, match="no Hessian map"):
        plot_hessian(surface)


@pytest.mark.parametrize("args,message", [
    (["--stride", "3"], "--stride 3 does not fit the surface's 3-point x axis"),
    (["--subset", "5000"], "--subset 5000 is larger than split 'train'"),
    (["--tol", "0"], "--tol 0.0 must be a positive number"),
])
def test_bad_input_one_line_exit_2(surface, capsys, args, message):
    assert main(["hessian", str(surface), "--threads", "1", "--no-progress", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def test_not_a_surface_file(tmp_path, capsys):
    bad = tmp_path / "x.h5"
    with h5py.File(bad, "w") as f:
        f["a"] = 1
    assert main(["hessian", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not a landscape surface file" in err, err
