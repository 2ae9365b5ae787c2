"""Top-k eigenpairs, trace, SLQ density, GGN products and per-block curvature against dense linear
algebra on a tiny MLP (64-4-10 tanh, 310 parameters, float64; trained 300 Adam steps) on 200 digits: the dense Hessian is
torch.autograd.functional.hessian of the mean loss over the flat parameter vector, the dense GGN
(1/n) Σ J_iᵀ (diag p_i − p_i p_iᵀ) J_i with J from torch.func.jacrev."""
import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call, jacrev

from landscape.analysis.hessian import HessianVectorProduct
from landscape.analysis.spectrum import (
    GGNVectorProduct,
    block_summary,
    default_blocks,
    eigen_directions,
    eigenpairs,
    parse_direction,
    rademacher,
    slq,
    spectrum,
    trace,
)
from landscape.core.data import load_dataset
from landscape.core.selection import Selection
from landscape.core.tasks import summed_loss
from landscape.errors import UserError

torch.set_num_threads(1)


def ce(z, y):
    return summed_loss("crossentropy", z, y)


def tiny_mlp(seed=0, hidden=4):
    torch.manual_seed(seed)
    if hidden == 0:  # softmax regression: linear in θ, so its GGN is its Hessian
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).double()
    return nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.Tanh(), nn.Linear(hidden, 10)).double()


@pytest.fixture(scope="module")
def digits():
    train = load_dataset("digits")["train"]
    return train.inputs[:200].double(), train.labels[:200]


def flat_fn(model, fn):
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]

    def f(theta):
        params, i = {}, 0
        for n, s in zip(names, shapes):
            params[n] = theta[i : i + s.numel()].view(s)
            i += s.numel()
        return fn(params)

    return f, torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def dense_hessian(model, X, Y):
    f, flat = flat_fn(model, lambda p: ce(functional_call(model, p, (X,)), Y) / len(Y))
    return torch.autograd.functional.hessian(f, flat)


def dense_ggn(model, X, Y):
    f, flat = flat_fn(model, lambda p: functional_call(model, p, (X,)))
    J = jacrev(f)(flat)  # (n, C, P)
    p = f(flat).softmax(-1)
    Hl = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    return torch.einsum("ncp,ncd,ndq->pq", J, Hl, J) / len(Y)


def trained(model, X, Y, steps=300):
    """Adam (lr 0.01) on the mean loss: a trained net's Hessian has a few outliers above a bulk near 0."""
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(steps):
        opt.zero_grad()
        (ce(model(X), Y) / len(Y)).backward()
        opt.step()
    return model


@pytest.fixture(scope="module")
def hessian(digits):
    X, Y = digits
    model = trained(tiny_mlp(), X, Y)
    H = dense_hessian(model, X, Y)
    hvp = HessianVectorProduct(model, X, Y, ce, batch_size=64)
    hvp.prepare()
    return model, H, hvp


def test_topk_eigenvalues_within_residual_bound(hessian):
    """The 5 largest and 2 smallest Ritz values each lie within their residual of the dense eigenvalue of the same
    rank, the stated residual is ‖H y − θ y‖ of the returned unit vector, and the vectors are orthonormal."""
    _, H, hvp = hessian
    lam = torch.linalg.eigvalsh(H).numpy()
    e = eigenpairs(hvp, hvp.n, top=5, bottom=2, tol=1e-6, max_iter=300, vectors=True)
    assert e.converged
    exact = np.concatenate([lam[::-1][:5], lam[:2]])
    assert np.all(np.abs(e.values - exact) <= e.residuals + 1e-12), (e.values - exact, e.residuals)
    for value, r, y in zip(e.values, e.residuals, e.vectors):
        assert float((H @ y - value * y).norm()) == pytest.approx(r, rel=1e-6, abs=1e-12)
    np.testing.assert_allclose((e.vectors @ e.vectors.T).numpy(), np.eye(7), atol=1e-10)
    loose = eigenpairs(hvp, hvp.n, top=3, tol=1e-3)  # the default tolerance: fewer products, the same bound
    assert loose.n_hvp < e.n_hvp and np.all(np.abs(loose.values - lam[::-1][:3]) <= loose.residuals + 1e-12)


def test_trace_interval_covers_exact_trace(hessian):
    """With real Hessian-vector products (seeded): both estimators' 95% intervals contain tr H; Hutch++'s is the
    narrower; a block no larger than the samples gets the exact trace."""
    _, H, hvp = hessian
    exact = float(torch.trace(H))
    a = trace(hvp, hvp.n, samples=30, method="hutchinson")
    b = trace(hvp, hvp.n, samples=30, method="hutchpp")
    for t in (a, b):
        assert t.ci_low <= exact <= t.ci_high, (t, exact)
        assert t.n_hvp == 30
    assert b.ci_high - b.ci_low < a.ci_high - a.ci_low
    small = torch.diag(torch.arange(1.0, 11.0, dtype=torch.float64))
    t = trace(lambda v: small @ v, 10, samples=30)
    assert t.method == "exact" and t.estimate == 55.0 and t.ci_low == t.ci_high == 55.0


def test_trace_interval_miss_rate(hessian):
    """The stated miss rate: over 400 seeds (the dense H as the operator, so the loop is cheap), the nominal-95%
    interval misses tr H in 6.5% of seeds with Hutchinson and 4.25% with Hutch++ at 30 products (measured;
    Hutch++'s interval is 6× narrower); asserted ≤ 10% (0.05 + 4.6 binomial standard deviations at 400 draws)."""
    _, H, _ = hessian
    exact = float(torch.trace(H))
    for method in ("hutchinson", "hutchpp"):
        misses = sum(not (t.ci_low <= exact <= t.ci_high) for t in
                     (trace(lambda v: H @ v, H.shape[0], samples=30, method=method, seed=s) for s in range(400)))
        assert misses / 400 <= 0.10, (method, misses)


def test_slq_moments_equal_trace_powers(hessian):
    """Gauss quadrature is exact to degree 2m − 1: each SLQ moment k = 0..3 equals (1/R) Σ zᵀ H^k z / n of the
    same Rademacher vectors to 1e-9 relative; and it estimates tr(H^k)/n within 4 standard errors of Hutchinson
    (the variance 2(‖H^k‖_F² − Σ (H^k)_ii²) / (R n²) from the dense H^k)."""
    _, H, hvp = hessian
    n, runs = hvp.n, 6
    d = slq(hvp, n, runs=runs, steps=20)
    z = rademacher(n, runs, 2)
    for k in range(4):
        Hk = torch.linalg.matrix_power(H, k)
        quad = float(torch.einsum("ri,ij,rj->r", z, Hk, z).mean()) / n
        assert d.moment(k) == pytest.approx(quad, rel=1e-9, abs=1e-12 * float(torch.linalg.norm(Hk, 2))), k
        var = 2 * (float((Hk**2).sum()) - float((torch.diagonal(Hk) ** 2).sum())) / (runs * n * n)
        assert abs(d.moment(k) - float(torch.trace(Hk)) / n) <= 4 * math.sqrt(var) + 1e-12, k
    assert d.moment(0) == pytest.approx(1.0, rel=1e-12)
    assert d.n_hvp == runs * 20


def test_density_integrates_to_one_and_spectrum_holds_all(hessian):
    _, H, hvp = hessian
    s = spectrum(hvp, k=3, samples=30, runs=2, steps=30, sigma=0.01)
    lam = torch.linalg.eigvalsh(H).numpy()
    assert np.trapezoid(s.density, s.grid) == pytest.approx(1.0, rel=1e-3)
    assert np.all(np.abs(s.eig.values - lam[::-1][:3]) <= s.eig.residuals + 1e-12)
    assert s.trace.ci_low <= lam.sum() <= s.trace.ci_high
    assert s.grid[0] < lam.min() and s.grid[-1] > lam.max()


def test_ggn_products_equal_dense_ggn(digits):
    """G v against the dense GGN (1e-10 relative); G is PSD; for softmax regression (linear in θ) G = H."""
    X, Y = digits
    model = tiny_mlp()
    G = dense_ggn(model, X, Y)
    ggn = GGNVectorProduct(model, X, Y, batch_size=64)
    assert ggn.prepare() == pytest.approx(float(ce(model(X), Y).detach()) / len(Y), rel=1e-12)
    for seed in range(3):
        v = torch.randn(ggn.n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        np.testing.assert_allclose(ggn(v).numpy(), (G @ v).numpy(), rtol=1e-10, atol=1e-12 * float(G.abs().max()))
    assert torch.linalg.eigvalsh(G).min() > -1e-12
    linear = tiny_mlp(hidden=0)
    H = dense_hessian(linear, X, Y)
    ggn = GGNVectorProduct(linear, X, Y, batch_size=200)
    v = torch.randn(ggn.n, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    np.testing.assert_allclose(ggn(v).numpy(), (H @ v).numpy(), rtol=1e-10, atol=1e-12 * float(H.abs().max()))


def test_per_block_results_equal_the_dense_sub_block(hessian, digits):
    """Blocks `1` (first Linear, 260 parameters: Hutch++) and `3` (second Linear, 50: the exact trace): each
    block's top eigenvalue within its residual of the dense sub-block's, its trace interval around the sub-block's
    trace; a selection's top-k equals the sub-block's top-k."""
    X, Y = digits
    model, H, _ = hessian
    assert default_blocks(model) == ["1", "3"]

    def make_op(select):
        return HessianVectorProduct(model, X, Y, ce, batch_size=64, select=select)

    b = block_summary(make_op, ["1", "3"], samples=60, tol=1e-6, max_iter=200)
    for i, (lo, hi) in enumerate([(0, 260), (260, 310)]):
        sub = H[lo:hi, lo:hi]
        top = float(torch.linalg.eigvalsh(sub)[-1])
        assert b.numel[i] == hi - lo
        assert abs(b.lambda_max[i] - top) <= b.residual[i] + 1e-12
        slack = 1e-12 * abs(float(torch.trace(sub)))  # the exact trace's interval has width 0: float summation order
        assert b.trace_ci[i][0] - slack <= float(torch.trace(sub)) <= b.trace_ci[i][1] + slack
    assert b.trace[1] == pytest.approx(float(torch.trace(H[260:, 260:])), rel=1e-12)
    op = make_op(Selection.of("3"))
    op.prepare()
    e = eigenpairs(op, op.n, top=3, tol=1e-8, max_iter=50)
    np.testing.assert_array_less(np.abs(e.values - torch.linalg.eigvalsh(H[260:, 260:]).numpy()[::-1][:3]),
                                 e.residuals + 1e-12)


def test_eigen_directions_are_orthonormal_eigenvectors(hessian):
    """hessian:1, hessian:2, hessian:-1: unit, orthogonal, keyed by tensor name, H d = λ d within the residual."""
    model, H, hvp = hessian
    names = [n for n, _ in model.named_parameters()]
    tensors = dict(model.named_parameters())
    dirs, e = eigen_directions(hvp, [1, 2, -1], names, tensors, tol=1e-8, max_iter=310)
    flat = torch.stack([torch.cat([d[n].reshape(-1) for n in names]).double() for d in dirs])
    assert all(set(d) == set(names) for d in dirs)
    np.testing.assert_allclose((flat @ flat.T).numpy(), np.eye(3), atol=1e-6)  # float32 storage
    lam = torch.linalg.eigvalsh(H).numpy()
    assert np.all(np.abs(e.values - [lam[-1], lam[-2], lam[0]]) <= e.residuals + 1e-12)
    for v, value, r in zip(flat, e.values, e.residuals):
        assert float((H @ v - value * v).norm()) <= r + 1e-6 * abs(lam).max()  # float32 storage


@pytest.mark.parametrize("spec", ["hessian:0", "hessian", "random:1", "hessian:1.5"])
def test_bad_direction_spec(spec):
    with pytest.raises(UserError, match="not a direction source: use hessian:K"):
        parse_direction(spec)
    assert parse_direction("hessian:2") == 2 and parse_direction(" hessian:-1") == -1


def test_bad_requests(hessian):
    _, _, hvp = hessian
    with pytest.raises(UserError, match="choose k <= 310"):
        eigenpairs(hvp, hvp.n, top=400)
    with pytest.raises(UserError, match="too few for hutchpp"):
        trace(hvp, hvp.n, samples=3)
    with pytest.raises(UserError, match="raise --max_iter"):
        eigenpairs(hvp, hvp.n, top=5, max_iter=3)


def test_restarted_topk_with_a_tiny_basis_is_within_the_residual_bound(hessian):
    """Thick restart with a basis of 8 vectors (several restarts) for the top 5 of the 310-parameter Hessian: each
    value within its residual of the dense eigenvalue of the same rank, the residual is ‖H y − θ y‖ of the returned
    unit vector, the vectors orthonormal; the products are counted (one per call of the operator)."""
    _, H, hvp = hessian
    lam = torch.linalg.eigvalsh(H).numpy()[::-1]
    calls = []

    def op(v):
        calls.append(1)
        return hvp(v)

    e = eigenpairs(op, hvp.n, top=5, tol=1e-6, max_iter=300, basis=8, vectors=True)
    assert e.converged and e.restarts >= 2 and e.n_hvp == len(calls), (e.restarts, e.n_hvp)
    assert np.all(np.abs(e.values - lam[:5]) <= e.residuals + 1e-12), (e.values - lam[:5], e.residuals)
    assert np.all(e.residuals <= 1e-6 * np.abs(e.values) + 1e-5 * lam[0])
    for value, r, y in zip(e.values, e.residuals, e.vectors):
        assert float((H @ y - value * y).norm()) == pytest.approx(r, rel=1e-6, abs=1e-12)
    np.testing.assert_allclose((e.vectors @ e.vectors.T).numpy(), np.eye(5), atol=1e-10)
    whole = eigenpairs(hvp, hvp.n, top=5, tol=1e-6, max_iter=300)  # default basis max(2k + 1, 20): no restart needed
    assert whole.restarts == 0 and whole.n_hvp <= e.n_hvp
    np.testing.assert_allclose(e.values, whole.values, atol=float(e.residuals.max() + whole.residuals.max()))


def test_largest_and_smallest_with_restarts(hessian):
    """Both ends with a basis of 12 (restarts keep the wanted pairs of each end): within the residual bound."""
    _, H, hvp = hessian
    lam = torch.linalg.eigvalsh(H).numpy()
    e = eigenpairs(hvp, hvp.n, top=2, bottom=2, tol=1e-6, max_iter=600, basis=12)
    assert e.converged and e.restarts >= 1
    exact = np.array([lam[-1], lam[-2], lam[0], lam[1]])
    assert np.all(np.abs(e.values - exact) <= e.residuals + 1e-12), (e.values - exact, e.residuals)
    # the smallest only (hessian:-1): a restart keeps no large Ritz value, the residual floor keeps the largest seen
    low = eigenpairs(hvp, hvp.n, top=0, bottom=2, tol=1e-6, max_iter=600, basis=12)
    assert low.converged and low.restarts >= 1
    assert np.all(np.abs(low.values - lam[:2]) <= low.residuals + 1e-12), (low.values - lam[:2], low.residuals)


def test_a_basis_as_large_as_the_operator_is_exact():
    """n = 5 ≤ the basis: blocks of 2, 2, 1 span the whole space, Rayleigh–Ritz is exact (all 5, residuals ~0)."""
    A = torch.diag(torch.tensor([3.0, -1.0, 2.0, 2.0, 0.5], dtype=torch.float64))
    e = eigenpairs(lambda v: A @ v, 5, top=5, block=2, tol=1e-12)
    np.testing.assert_allclose(e.values, [3.0, 2.0, 2.0, 0.5, -1.0], atol=1e-12)
    assert e.n_hvp == 5 and e.restarts == 0 and e.residuals.max() < 1e-12


class Quadratic(nn.Module):
    """L(θ) = ½ θᵀ A θ for every example: its Hessian is A (closed form), through real double-backward products."""

    def __init__(self, A):
        super().__init__()
        self.register_buffer("A", A)
        self.theta = nn.Parameter(torch.randn(len(A), generator=torch.Generator().manual_seed(3), dtype=torch.float64))

    def forward(self, x):
        return (0.5 * self.theta @ self.A @ self.theta).expand(len(x))


def repeated_top(n=120, seed=0):
    """A = Q diag(λ) Qᵀ with λ1 = λ2 = 5 (a double eigenvalue), λ3 = 3, λ4 = 2.5, the rest in [−1, 1]."""
    g = torch.Generator().manual_seed(seed)
    lam = torch.cat([torch.tensor([5.0, 5.0, 3.0, 2.5], dtype=torch.float64),
                     torch.rand(n - 4, generator=g, dtype=torch.float64) * 2 - 1])
    Q = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64)).Q
    return (Q * lam) @ Q.T, lam.sort(descending=True).values.numpy()


def test_repeated_eigenvalue_needs_a_block_of_two():
    """A double top eigenvalue of a closed-form quadratic (H = A, products by double backward), basis 10 (restarts):
    one start vector cannot see the second copy — its top 3 are 5, 3, 2.5, each with a small residual (the bound
    holds for *an* eigenvalue, not for the one of that rank); blocks of 2 find 5, 5, 3 within the residual bound."""
    A, lam = repeated_top()
    model = Quadratic(A)
    hvp = HessianVectorProduct(model, torch.zeros(4, 1, dtype=torch.float64), torch.zeros(4), lambda out, y: out.sum())
    hvp.prepare()
    v = torch.randn(120, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    np.testing.assert_allclose(hvp(v).numpy(), (A @ v).numpy(), rtol=1e-12)
    single = eigenpairs(hvp, hvp.n, top=3, tol=1e-8, max_iter=400, basis=10)
    assert single.converged and single.restarts >= 1
    np.testing.assert_allclose(single.values, [5.0, 3.0, 2.5], atol=1e-6)  # the second 5 is missed
    block = eigenpairs(hvp, hvp.n, top=3, tol=1e-8, max_iter=400, basis=10, block=2, vectors=True)
    assert block.converged and block.restarts >= 1
    assert np.all(np.abs(block.values - lam[:3]) <= block.residuals + 1e-12), (block.values, block.residuals)
    np.testing.assert_allclose((block.vectors @ block.vectors.T).numpy(), np.eye(3), atol=1e-10)
    top2 = block.vectors[:2]  # they span the eigenspace of 5: A restricted to it is 5·I
    np.testing.assert_allclose((top2 @ A @ top2.T).numpy(), 5 * np.eye(2), atol=1e-6)
    with pytest.raises(UserError, match="use --basis 5 or more"):
        eigenpairs(hvp, hvp.n, top=3, basis=4, block=2)
