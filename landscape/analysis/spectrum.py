"""Curvature beyond two eigenvalues: top-k eigenpairs, the trace, the spectral density, per-block
summaries, GGN products, and the trace / top-k maps.

Every estimator takes an operator `op` (a callable v ↦ A v on float64 flat vectors of length n:
`HessianVectorProduct`, `GGNVectorProduct`, or a dense matrix's `lambda v: A @ v`) and draws its
random vectors on the CPU from a seed (the same on every device and rank), so a run whose
products are summed over MPI ranks (`group=` of the product) takes the same steps on every rank.

- `eigenpairs`: block thick-restart Lanczos (Wu & Simon 2000), float64. The basis V (m rows,
  m = max(2k + b, 20) by default) grows by blocks of b: X orthonormal to V, W = A X kept, the
  projection T = Vᵀ A V updated (full reorthogonalization: the next block is A X − V Vᵀ A X);
  Rayleigh–Ritz T = S diag(θ) Sᵀ gives the Ritz pairs (θ_i, y_i = Vᵀ s_i). Stop when the k
  wanted pairs (largest and/or smallest) each have ‖A y_i − θ_i y_i‖ ≤ tol·|θ_i| + atol·max|θ|
  (the explicit residual Wᵀ s_i − θ_i Vᵀ s_i: no extra products), or after max_iter products.
  When the next block does not fit, restart: keep the wanted Ritz vectors and about half the
  room nearest them (V ← Sᵀ V, W ← Sᵀ W, T ← diag θ), then continue with the block that was
  next. Memory: (2m + 3b)·n float64, whatever max_iter. For symmetric A an eigenvalue of A lies
  within r_i of θ_i (Kahan) and the Ritz values interlace (θ_i ≤ λ_i, the i-th largest), so
  λ_i ∈ [θ_i − r_i, θ_i + r_i] unless the Krylov space missed an eigenvector above θ_i. A
  Krylov space of b start vectors holds at most b vectors of any one eigenspace: with b = 1 a
  repeated eigenvalue is found once and the next distinct one takes the missed copy's rank
  (with a small residual: the bound is for *an* eigenvalue); a block of
  b ≥ 2 finds up to b copies (1.2–1.6× the products of b = 1 on the demo CNN: bench/spectrum.py).
- `trace`: Hutchinson, tr A ≈ (1/m) Σ_j z_jᵀ A z_j with Rademacher z_j (unbiased; variance
  2(‖A‖_F² − Σ_i A_ii²)/m), and Hutch++ (Meyer, Musco, Musco, Woodruff 2021): with m products,
  S, G ∈ {±1}^{n×m/3}, Q = orth(A S), tr A ≈ tr(Qᵀ A Q) + (1/|G|) Σ_j g_jᵀ (I−QQᵀ) A (I−QQᵀ) g_j;
  the first term is exact given Q, the second a Hutchinson estimate of the deflated rest,
  whose variance is that of A with its top directions removed. Interval: estimate ± t_{0.975,
  s−1} · sd/√s over the s Hutchinson samples (Student t; for Hutch++ conditional on Q): a
  nominal 95% interval, whose measured miss rate on the digits MLP is stated in the tests
  (tests/unit/analysis/test_spectrum.py::test_trace_interval_miss_rate). A block of at most m
  parameters gets the exact trace Σ_i e_iᵀ A e_i (interval of width 0).
- `slq`: stochastic Lanczos quadrature (Golub–Meurant; Ubaru, Chen, Saad 2017; PyHessian,
  Yao et al. 2020). For each of R runs: z Rademacher, q_1 = z/√n, m Lanczos steps (full
  reorthogonalization), T_m = S diag(θ) Sᵀ; nodes θ_j and weights τ_j = S_1j² (Σ_j τ_j = 1).
  Gauss quadrature is exact for polynomials of degree ≤ 2m − 1, so Σ_j τ_j θ_j^k = q_1ᵀ A^k q_1
  = z ᵀA^k z / n, and the density's moments (1/R) Σ_runs Σ_j τ_j θ_j^k are Hutchinson
  estimates of tr(A^k)/n. The density φ(t) = (1/R) Σ_runs Σ_j τ_j N(t; θ_j, σ²), σ = sigma ·
  (θ_max − θ_min), integrates to 1; n·φ is the eigenvalue count per unit t. The raw nodes and
  weights are kept, so the density can be redrawn with another σ.
- `GGNVectorProduct`: the generalized Gauss–Newton G = (1/n) Σ_i J_iᵀ H_i J_i, J_i = ∂z_i/∂θ the
  Jacobian of example i's logits, H_i = ∇²_z ℓ(z_i, y_i) = diag(p_i) − p_i p_iᵀ for softmax cross-
  entropy (p_i = softmax z_i). G is positive semi-definite, equals the Hessian of a model linear in
  θ, and needs no second derivative of the network (it works where double backward does not).
  For softmax cross-entropy (an exponential family in its natural parameter z) G is also the
  Fisher information F = (1/n) Σ_i E_{y∼p_i}[∇ℓ ∇ℓᵀ] (Martens 2020, Sec. 9.2); the *empirical*
  Fisher (1/n) Σ_i ∇ℓ(z_i, y_i)∇ℓ(z_i, y_i)ᵀ (observed labels) is a different matrix and is not
  offered. Product: per batch, J v by forward-mode (torch.func.jvp), then Jᵀ(H J v) by reverse mode.
"""
from __future__ import annotations

import copy
import math
import re
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..core.device import group_sum
from ..core.selection import Selection
from ..errors import SharedUserError, UserError
from .hessian import ATOL, HessianEvaluator, hessian_parameters

TRACE_SEED = 1  # Rademacher vectors of the trace estimators
SLQ_SEED = 2  # Rademacher start vectors of the SLQ runs
EIG_SEED = 0  # the start vector of eigenpairs (= hessian.START_SEED)
CURVATURES = ("hessian", "ggn")
ESTIMATORS = ("hutchpp", "hutchinson")


# ---------------------------------------------------------------- random vectors


def rademacher_signs(n: int, count: int, seed: int) -> torch.Tensor:
    """(count, n) int8 entries ±1, drawn on the CPU (the same on every device and rank): 1 byte each."""
    g = torch.Generator().manual_seed(int(seed))
    return torch.randint(0, 2, (count, n), generator=g, dtype=torch.int8) * 2 - 1


def rademacher(n: int, count: int, seed: int, device="cpu") -> torch.Tensor:
    """(count, n) float64 entries ±1 (rademacher_signs as float64 on `device`)."""
    return rademacher_signs(n, count, seed).to(torch.float64).to(device)


def t_quantile(dof: int, p: float = 0.975) -> float:
    from scipy.stats import t

    return float(t.ppf(p, dof))


# ---------------------------------------------------------------- top-k eigenpairs


@dataclass(frozen=True)
class Eigenpairs:
    """Ritz pairs of A: values (largest first, then the smallest, most negative first), residuals
    ‖A y − θ y‖ (an eigenvalue of A lies within each), vectors (unit, rows; None unless asked),
    n_hvp products, converged (every wanted pair within tol·|θ| + atol·max|θ|), restarts of the basis."""

    values: np.ndarray
    residuals: np.ndarray
    vectors: torch.Tensor | None
    n_hvp: int
    converged: bool
    restarts: int = 0

    @classmethod
    def nan(cls, count: int, n_hvp: int = 0) -> Eigenpairs:
        return cls(np.full(count, np.nan), np.full(count, np.nan), None, n_hvp, False)


def basis_size(want: int, block: int = 1, basis: int = 0) -> int:
    """m, the Ritz basis `eigenpairs` keeps: `basis`, or 0 for max(2·want + block, 20)."""
    return int(basis) or max(2 * int(want) + int(block), 20)


def eigenpairs_bytes(n: int, want: int, *, block: int = 1, basis: int = 0) -> int:
    """The memory of `eigenpairs`: the basis V and its products W = A V (m rows each, m ≤ n) and
    three blocks of b vectors while the next block is formed, float64: (2·m + 3·b) · n · 8 (the
    Ritz vectors of a restart are formed in place, slice by slice)."""
    m = min(basis_size(want, block, basis), n)
    return (2 * m + 3 * int(block)) * n * 8


CHUNK = 1 << 18  # columns per slice when Ritz vectors are formed (bounds the temporaries)


def _ritz(S: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
    """Sᵀ M (rows of M combined), computed in column slices into a new tensor."""
    out = M.new_empty(S.shape[1], M.shape[1])
    S = S.to(M)
    for c in range(0, M.shape[1], CHUNK):
        out[:, c : c + CHUNK] = S.T @ M[:, c : c + CHUNK]
    return out


def _rotate(S: torch.Tensor, M: torch.Tensor) -> None:
    """M[:l] ← Sᵀ M[:len(S)] in place (l = S's columns ≤ its rows), column slice by column slice,
    so a restart needs no second basis."""
    S, rows = S.to(M), S.shape[0]
    for c in range(0, M.shape[1], CHUNK):
        M[: S.shape[1], c : c + CHUNK] = S.T @ M[:rows, c : c + CHUNK]


def _residual_norms(S: torch.Tensor, theta: torch.Tensor, V: torch.Tensor, W: torch.Tensor) -> np.ndarray:
    """‖W s − θ V s‖ for the columns s of S: the explicit residuals of the Ritz pairs (θ, V s)."""
    S, theta = S.to(V), theta.to(V)
    sq = torch.zeros(S.shape[1], dtype=torch.float64, device=V.device)
    for c in range(0, V.shape[1], CHUNK):
        r = S.T @ W[:, c : c + CHUNK] - theta[:, None] * (S.T @ V[:, c : c + CHUNK])
        sq += (r * r).sum(1)
    return sq.sqrt().cpu().numpy()


def _orthonormal_block(P: torch.Tensor, V: torch.Tensor, gen: torch.Generator, tiny: float) -> torch.Tensor:
    """Rows spanning P orthogonalized against the rows of V and each other (Gram–Schmidt, twice);
    a row whose remainder is ≤ `tiny` (an invariant subspace reached, or a copy lost) is replaced by
    a random vector orthogonalized the same way, so the block always has len(P) rows."""
    rows: list[torch.Tensor] = []
    for p in P:
        floor = tiny
        for _ in range(4):
            for _ in range(2):
                p = p - V.T @ (V @ p)
                for q in rows:
                    p = p - (q @ p) * q
            if float(p.norm()) > floor:
                break
            p = torch.randn(p.numel(), generator=gen, dtype=torch.float64).to(p.device)
            floor = 1e-10 * float(p.norm())
        rows.append(p / p.norm())
    return torch.stack(rows)


def _wanted(size: int, top: int, bottom: int) -> list[int]:
    """Indices into ascending Ritz values: the `top` largest (largest first), then the `bottom` smallest."""
    idx = list(range(size - 1, max(size - 1 - top, -1), -1))
    return idx + [i for i in range(min(bottom, size)) if i not in idx]


def eigenpairs(op, n: int, *, top: int = 1, bottom: int = 0, tol: float = 1e-3, max_iter: int = 100,
               atol: float = ATOL, seed: int = EIG_SEED, device="cpu", vectors: bool = False, basis: int = 0,
               block: int = 1) -> Eigenpairs:
    """The `top` largest and `bottom` smallest eigenpairs of the symmetric operator `op`: block
    thick-restart Lanczos (see the module docstring) with a basis of at most m = basis_size
    vectors, blocks of `block` products, at most `max_iter` products in all."""
    want, b = int(top) + int(bottom), int(block)
    if want < 1:
        raise UserError("ask for at least one eigenvalue (k >= 1)")
    if want > n:
        raise UserError(f"k={want} eigenvalues asked of an operator of size {n}: choose k <= {n}")
    if not tol > 0:
        raise UserError(f"tol={tol} must be positive, e.g. 1e-3")
    if b < 1:
        raise UserError(f"--start_vectors {block} must be at least 1 (2 or more find repeated eigenvalues)")
    if int(max_iter) < want:
        raise UserError(f"--max_iter {max_iter} is below the {want} eigenvalues asked: raise --max_iter to at least {want}")
    m = min(basis_size(want, b, basis), n)
    if m < n and m < want + b:
        raise UserError(f"--basis {basis} holds fewer than the {want} eigenvectors asked plus a block of {b} "
                        f"(--start_vectors): use --basis {want + b} or more (0: automatic, {basis_size(want, b)})")
    gen = torch.Generator().manual_seed(int(seed))
    V = torch.zeros(m, n, dtype=torch.float64, device=device)
    W = torch.zeros_like(V)
    T = torch.zeros(m, m, dtype=torch.float64)  # Vᵀ A V on the basis (Rayleigh–Ritz), on the CPU: small
    X = _orthonormal_block(torch.randn(min(b, n), n, generator=gen, dtype=torch.float64).to(device), V[:0], gen, 0.0)
    size = used = restarts = 0
    scale = 0.0  # max |θ| seen so far (≤ ‖A‖: a restart that drops one end keeps the floor of the residuals)
    values = res = idx = S = None
    converged = False
    while True:
        bx = min(len(X), int(max_iter) - used, m - size)
        X = X[:bx]
        for i, x in enumerate(X):
            w = op(x)
            used += 1
            if not bool(torch.isfinite(w).all()):
                return Eigenpairs.nan(want, used)
            V[size + i], W[size + i] = x, w
        X = None  # held in V now
        new = size + bx
        C = V[:new] @ W[size:new].T  # (new, bx): Vᵀ A X
        Cc = C.cpu()
        T[:new, size:new] = Cc
        T[size:new, :new] = Cc.T
        T[size:new, size:new] = (Cc[size:new] + Cc[size:new].T) / 2
        size = new
        theta, S = torch.linalg.eigh(T[:size, :size])
        idx = _wanted(size, top, bottom)
        values = theta[idx].numpy()
        res = _residual_norms(S[:, idx], theta[idx], V[:size], W[:size])
        scale = max(scale, float(theta.abs().max()))
        converged = len(idx) == want and bool(np.all(res <= tol * np.abs(values) + atol * scale))
        if converged or used >= int(max_iter) or size >= n:
            break
        P = W[size - bx : size] - C.T @ V[:size]  # the next block: A X orthogonalized against the basis
        X = _orthonormal_block(P, V[:size], gen, 1e-12 * max(scale, 1e-300))
        if size + len(X) > m and m == n:  # the basis may span the whole space: the last block fills it
            X = X[: m - size]
        elif size + len(X) > m:  # thick restart (Wu & Simon): keep the wanted Ritz pairs and their neighbours
            keep = _kept(size, top, bottom, m - len(X))
            _rotate(S[:, keep], V)
            _rotate(S[:, keep], W)
            T.zero_()
            T[torch.arange(len(keep)), torch.arange(len(keep))] = theta[keep]
            size, restarts = len(keep), restarts + 1
    vecs = _ritz(S[:, idx], V[:size]) if vectors else None
    values, res = np.asarray(values, float), np.asarray(res, float)
    if len(values) < want:  # fewer Ritz values than asked (a tiny operator)
        values, res = np.pad(values, (0, want - len(values)), constant_values=np.nan), \
            np.pad(res, (0, want - len(res)), constant_values=np.nan)
    return Eigenpairs(values, res, vecs, used, bool(converged), restarts)


def _kept(size: int, top: int, bottom: int, room: int) -> list[int]:
    """The Ritz pairs a restart keeps (ascending indices into `size` values): the wanted ones and
    about half the rest of the room, nearest the wanted end(s) (`room` ≥ top + bottom)."""
    extra = max(0, room - top - bottom) // 2
    if top and bottom:
        up, down = top + extra // 2, bottom + extra - extra // 2
    else:
        up, down = top + (extra if top else 0), bottom + (extra if bottom else 0)
    return sorted(set(range(size - up, size)) | set(range(down)))


# ---------------------------------------------------------------- the trace


@dataclass(frozen=True)
class TraceEstimate:
    """tr A ≈ estimate, 95% interval [ci_low, ci_high] (see the module docstring); n_hvp products."""

    estimate: float
    ci_low: float
    ci_high: float
    stderr: float
    n_hvp: int
    method: str

    @classmethod
    def nan(cls, method: str, n_hvp: int = 0) -> TraceEstimate:
        return cls(math.nan, math.nan, math.nan, math.nan, n_hvp, method)


def _interval(base: float, samples: np.ndarray, n_hvp: int, method: str) -> TraceEstimate:
    s = len(samples)
    mean = float(samples.mean())
    sd = float(samples.std(ddof=1)) if s > 1 else math.inf
    err = sd / math.sqrt(s)
    half = t_quantile(s - 1) * err if s > 1 else math.inf
    est = base + mean
    return TraceEstimate(est, est - half, est + half, err, n_hvp, method)


def trace(op, n: int, *, samples: int = 30, method: str = "hutchpp", seed: int = TRACE_SEED,
          device="cpu") -> TraceEstimate:
    """tr A from `samples` products (Hutchinson or Hutch++, see the module docstring); exact when
    n ≤ samples (n products of unit vectors)."""
    if method not in ESTIMATORS:
        raise UserError(f"unknown trace estimator {method!r}: choose one of {', '.join(ESTIMATORS)}")
    if samples < (6 if method == "hutchpp" else 2):
        raise UserError(f"--samples {samples} is too few for {method}: use at least "
                        f"{6 if method == 'hutchpp' else 2} (30 is a good start)")
    if n <= samples:
        total, eye = 0.0, torch.zeros(n, dtype=torch.float64, device=device)
        for i in range(n):
            eye.zero_()
            eye[i] = 1.0
            total += float(op(eye)[i])
        if not math.isfinite(total):
            return TraceEstimate.nan("exact", n)
        return TraceEstimate(total, total, total, 0.0, n, "exact")
    z = rademacher_signs(n, samples, seed).to(device)  # int8: each row becomes float64 when used (trace_bytes)
    if method == "hutchinson":
        quad = np.array([float(v @ op(v)) for v in (row.to(torch.float64) for row in z)])
        return TraceEstimate.nan(method, samples) if not np.isfinite(quad).all() else _interval(0.0, quad, samples, method)
    k = samples // 3
    AS = torch.stack([op(v.to(torch.float64)) for v in z[:k]])
    Qm = torch.linalg.qr(AS.T).Q.T  # (k, n) orthonormal rows
    del AS
    base = float(sum(float(q @ op(q)) for q in Qm))
    quad = []
    for g in z[2 * k:]:  # the rest are Hutchinson samples of the deflated operator
        g = g.to(torch.float64)
        p = g - (Qm @ g) @ Qm
        quad.append(float(p @ op(p)))
    quad = np.array(quad)
    if not (np.isfinite(quad).all() and math.isfinite(base)):
        return TraceEstimate.nan(method, samples)
    return _interval(base, quad, samples, method)


def trace_bytes(n: int, samples: int, method: str = "hutchpp") -> int:
    """The memory of `trace`: the signs (int8, samples·n bytes) and a few vectors; Hutch++ also
    holds A S, its copy in the QR and Q (3·⌊samples/3⌋·n float64). The exact trace (n ≤ samples):
    a few vectors."""
    few = 4 * n * 8
    if n <= samples:
        return few
    return samples * n + few + (3 * (samples // 3) * n * 8 if method == "hutchpp" else 0)


def slq_bytes(n: int, steps: int, runs: int = 4) -> int:
    """The memory of `slq`: the start signs (int8, runs·n bytes), one run's basis (min(steps, n)
    vectors) and a few more, float64."""
    return runs * n + (min(int(steps), n) + 4) * n * 8


# ---------------------------------------------------------------- the spectral density


@dataclass(frozen=True)
class SpectralDensity:
    """SLQ: nodes, weights (R runs × m steps; NaN past an early stop), the n_hvp products."""

    nodes: np.ndarray
    weights: np.ndarray
    n_hvp: int

    def moment(self, k: int) -> float:
        """(1/R) Σ_runs Σ_j τ_j θ_j^k: an estimate of tr(A^k)/n (exact quadrature, see slq)."""
        ok = np.isfinite(self.nodes)
        return float(np.where(ok, np.nan_to_num(self.weights) * np.nan_to_num(self.nodes) ** k, 0).sum(1).mean())

    def density(self, grid: np.ndarray, sigma: float) -> np.ndarray:
        """φ(t) on `grid` with Gaussians of width `sigma` (absolute)."""
        ok = np.isfinite(self.nodes)
        nodes, weights = self.nodes[ok], self.weights[ok]
        d = (grid[:, None] - nodes[None, :]) / sigma
        return (np.exp(-0.5 * d**2) * weights).sum(1) / (sigma * math.sqrt(2 * math.pi) * len(self.nodes))


def slq(op, n: int, *, runs: int = 4, steps: int = 60, seed: int = SLQ_SEED, device="cpu") -> SpectralDensity:
    """Stochastic Lanczos quadrature (see the module docstring): `runs` × `steps` products."""
    if runs < 1 or steps < 1:
        raise UserError(f"SLQ needs at least 1 run and 1 step (got --slq_runs {runs}, --slq_steps {steps})")
    m = min(int(steps), n)
    nodes, weights = np.full((runs, m), np.nan), np.full((runs, m), np.nan)
    used = 0
    Q = torch.zeros(m, n, dtype=torch.float64, device=device)  # one basis, reused by every run (slq_bytes)
    for r, z in enumerate(rademacher_signs(n, runs, seed).to(device)):
        z = z.to(torch.float64)
        Q.zero_()
        alpha, beta = np.zeros(m), np.zeros(m)
        q = z / math.sqrt(n)
        for j in range(m):
            Q[j] = q
            w = op(q)
            used += 1
            if not bool(torch.isfinite(w).all()):
                return SpectralDensity(np.full((runs, m), np.nan), weights, used)
            alpha[j] = float(q @ w)
            w = w - alpha[j] * q - (beta[j - 1] * Q[j - 1] if j else 0)
            Qj = Q[: j + 1]
            w -= Qj.T @ (Qj @ w)
            w -= Qj.T @ (Qj @ w)
            beta[j] = float(w.norm())
            if j + 1 == m or beta[j] <= 1e-12 * max(abs(alpha[: j + 1]).max(), 1e-300):
                break
            q = w / beta[j]
        size = j + 1
        a, b = torch.from_numpy(alpha[:size]), torch.from_numpy(beta[: size - 1])
        theta, S = torch.linalg.eigh(torch.diag(a) + torch.diag(b, 1) + torch.diag(b, -1))
        nodes[r, :size], weights[r, :size] = theta.numpy(), (S[0] ** 2).numpy()
    return SpectralDensity(nodes, weights, used)


def density_grid(nodes: np.ndarray, sigma: float, points: int = 2001) -> tuple[np.ndarray, float]:
    """A grid over [min θ − 5σ, max θ + 5σ] and the absolute width σ·(max θ − min θ) (1 if 0)."""
    lo, hi = float(np.nanmin(nodes)), float(np.nanmax(nodes))
    width = sigma * ((hi - lo) or 1.0)
    return np.linspace(lo - 5 * width, hi + 5 * width, points), width


# ---------------------------------------------------------------- GGN / Fisher products


class GGNVectorProduct:
    """v ↦ G v, the generalized Gauss–Newton (= Fisher) of softmax cross-entropy (module docstring),
    with the interface of HessianVectorProduct (prepare, release, n, device, params, group)."""

    def __init__(self, model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, *, output=lambda z: z,
                 batch_size: int = 512, autocast=None, select: Selection | None = None, group=None):
        import contextlib

        self.model, self.inputs, self.labels, self.output = model, inputs, labels, output
        self.group = group
        self.count = len(labels) if group is None or group.size == 1 else group.allreduce(len(labels))
        self.autocast = autocast or contextlib.nullcontext
        self.params = hessian_parameters(model, select)
        ids = {id(p) for p in self.params}
        self.names = [n for n, p in model.named_parameters() if id(p) in ids]
        self.n = sum(p.numel() for p in self.params)
        self.batch_size = int(batch_size)
        self.device = self.params[0].device

    def _logits(self, ps, x):
        from torch.func import functional_call

        with self.autocast():
            return self.output(functional_call(self.model, dict(zip(self.names, ps)), (x,)))

    def prepare(self) -> float:
        """L(θ) (mean cross-entropy) in float64."""
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        with torch.no_grad():
            for i in range(0, len(self.labels), self.batch_size):
                x, y = self._x(i), self.labels[i : i + self.batch_size]
                z = self._logits([p.detach() for p in self.params], x)
                total += torch.nn.functional.cross_entropy(z.double(), y, reduction="sum")
        return float(group_sum(self.group, total)) / self.count

    def release(self) -> None:
        pass

    def _x(self, i):
        x = self.inputs[i : i + self.batch_size]
        return x.to(self.params[0].dtype) if x.is_floating_point() else x

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        from torch.func import jvp, vjp

        vs, i0 = [], 0
        for p in self.params:
            vs.append(v[i0 : i0 + p.numel()].view(p.shape).to(p.dtype))
            i0 += p.numel()
        primals = tuple(p.detach() for p in self.params)
        acc = torch.zeros(self.n, dtype=torch.float64, device=self.device)
        for i in range(0, len(self.labels), self.batch_size):
            x = self._x(i)
            z, vjp_fn = vjp(lambda *ps: self._logits(ps, x), *primals)
            _, jv = jvp(lambda *ps: self._logits(ps, x), primals, tuple(vs))
            p = z.detach().double().softmax(-1)
            jv = jv.double()
            u = p * jv - p * (p * jv).sum(-1, keepdim=True)  # (diag p − p pᵀ) J v, per example
            acc += torch.cat([g.reshape(-1).double() for g in vjp_fn(u.to(z.dtype))])
        return group_sum(self.group, acc) / self.count


def restricted(op, select: Selection):
    """A copy of the product `op` (HessianVectorProduct or GGNVectorProduct) over the same data whose θ is
    the parameters of `select` only (the others held fixed: the sub-block of the curvature)."""
    out = copy.copy(op)
    out.params = hessian_parameters(op.model, select)
    out.n = sum(p.numel() for p in out.params)
    if isinstance(op, GGNVectorProduct):
        ids = {id(p) for p in out.params}
        out.names = [n for n, p in op.model.named_parameters() if id(p) in ids]
    else:
        out.kept = []
    return out


def curvature_selection(model: nn.Module, surface: Selection, params=None, exclude=None) -> Selection:
    """The parameters a curvature is taken over: the command's --params/--exclude (globs over tensor
    names, independent of the surface's), else the surface's own selection. A glob that matches no
    tensor is a SharedUserError (every rank meets it)."""
    from ..core.directions import alias_groups

    if not params and not exclude:
        return surface
    chosen = Selection.of(params, exclude)
    try:
        chosen.names(alias_groups(dict(model.named_parameters(remove_duplicate=False))))
        hessian_parameters(model, chosen)
    except UserError as exc:
        raise SharedUserError(str(exc)) from None
    return chosen


def check_ggn(task: str, loss_name: str) -> None:
    """GGN products are built for softmax cross-entropy only (a SharedUserError: every rank meets it)."""
    if task != "classification" or loss_name != "crossentropy":
        raise SharedUserError(f"--curvature ggn is defined here for softmax cross-entropy (--task classification --loss_name "
                        f"crossentropy), not --task {task} --loss_name {loss_name}: use --curvature hessian")


# ---------------------------------------------------------------- blocks


def default_blocks(model: nn.Module, select: Selection | None = None) -> list[str]:
    """One block per module that owns trainable parameters (its name: a glob matching its tensors)."""
    params = {id(p) for p in hessian_parameters(model, select)}
    out = []
    for name, p in model.named_parameters():
        module = name.rpartition(".")[0] or name
        if id(p) in params and module not in out:
            out.append(module)
    return out


@dataclass(frozen=True)
class BlockSummary:
    """Per block (a glob over tensor names): its parameters, top eigenvalue (and residual), trace."""

    names: list[str]
    numel: np.ndarray
    lambda_max: np.ndarray
    residual: np.ndarray
    trace: np.ndarray
    trace_ci: np.ndarray  # (B, 2)
    n_hvp: int


def block_summary(make_op, blocks: list[str], *, samples: int = 30, method: str = "hutchpp", tol: float = 1e-3,
                  max_iter: int = 100, device="cpu", basis: int = 0, block: int = 1) -> BlockSummary:
    """Top eigenvalue and trace of each block's sub-block of the curvature (`make_op(selection)`
    gives the operator restricted to a Selection: θ outside it held fixed)."""
    numel, lmax, res, tr, ci, used = [], [], [], [], [], 0
    for b in blocks:
        op = make_op(Selection.of(b))
        op.prepare()
        try:
            e = eigenpairs(op, op.n, top=1, tol=tol, max_iter=max_iter, device=device, basis=basis, block=block)
            t = trace(op, op.n, samples=samples, method=method, device=device)
        finally:
            op.release()
        numel.append(op.n)
        lmax.append(e.values[0])
        res.append(e.residuals[0])
        tr.append(t.estimate)
        ci.append((t.ci_low, t.ci_high))
        used += e.n_hvp + t.n_hvp
    return BlockSummary(list(blocks), np.array(numel), np.array(lmax), np.array(res), np.array(tr), np.array(ci), used)


# ---------------------------------------------------------------- one spectrum


@dataclass(frozen=True)
class Spectrum:
    """Everything `spectrum` computes at one θ (see the module docstring for each estimator)."""

    loss: float
    n: int
    eig: Eigenpairs
    trace: TraceEstimate
    slq: SpectralDensity
    grid: np.ndarray
    density: np.ndarray
    sigma: float  # the absolute width of the Gaussians
    blocks: BlockSummary | None
    seconds: float
    timings: dict = field(default_factory=dict)


def spectrum(op, *, k: int = 5, tol: float = 1e-3, max_iter: int = 100, samples: int = 30, method: str = "hutchpp",
             runs: int = 4, steps: int = 60, sigma: float = 0.01, make_op=None, blocks: list[str] | None = None,
             basis: int = 0, block: int = 1) -> Spectrum:
    """Top-k eigenpairs, trace and SLQ density of `op` at the model's current θ (op.prepare() is
    called here), and per-block summaries when `blocks` (with `make_op`) are given. NaN where the
    loss is not finite."""
    start = time.perf_counter()
    timings = {}
    loss = op.prepare()
    try:
        if not math.isfinite(loss):
            nanslq = SpectralDensity(np.full((runs, steps), np.nan), np.full((runs, steps), np.nan), 0)
            return Spectrum(loss, op.n, Eigenpairs.nan(k), TraceEstimate.nan(method), nanslq, np.zeros(0),
                            np.zeros(0), math.nan, None, time.perf_counter() - start)
        t0 = time.perf_counter()
        eig = eigenpairs(op, op.n, top=k, tol=tol, max_iter=max_iter, device=op.device, basis=basis, block=block)
        t1 = time.perf_counter()
        tr = trace(op, op.n, samples=samples, method=method, device=op.device)
        t2 = time.perf_counter()
        dens = slq(op, op.n, runs=runs, steps=steps, device=op.device)
        t3 = time.perf_counter()
        timings = {"eigenpairs": t1 - t0, "trace": t2 - t1, "slq": t3 - t2}
    finally:
        op.release()
    grid, width = density_grid(dens.nodes, sigma)
    summary = None
    if blocks:
        t4 = time.perf_counter()
        summary = block_summary(make_op, blocks, samples=samples, method=method, tol=tol, max_iter=max_iter,
                                device=op.device, basis=basis, block=block)
        timings["blocks"] = time.perf_counter() - t4
    return Spectrum(loss, op.n, eig, tr, dens, grid, dens.density(grid, width), width, summary,
                    time.perf_counter() - start, timings)


# ---------------------------------------------------------------- the maps


class CurvatureEvaluator(HessianEvaluator):
    """A HessianEvaluator whose per-point work is another estimator; `curvature='ggn'` swaps the
    Hessian's products for GGN products over the same data."""

    def __init__(self, *args, curvature: str = "hessian", **kw):
        super().__init__(*args, **kw)
        if curvature == "ggn":
            h = self.hvp
            select = kw.get("curvature_select") or (kw["evaluation"].select if kw.get("evaluation") else None)
            self.hvp = GGNVectorProduct(self.model, h.inputs, h.labels, batch_size=h.batch_size, autocast=h.autocast,
                                        select=select, group=h.group, output=self.output)
        elif curvature != "hessian":
            raise UserError(f"unknown --curvature {curvature!r}: choose one of {', '.join(CURVATURES)}")

    @staticmethod
    def output(z):
        from ..core.tasks import float_logits

        return float_logits(z)

    def at(self, coord, work):
        """θ written at `coord` (BN re-estimated if asked), then work(op) between prepare and release."""
        self.theta.write(coord)
        if self.bn is not None:
            self.bn.run(self.model, self.hvp.device, self.autocast)
        loss = self.hvp.prepare()
        try:
            return work(self.hvp) if math.isfinite(loss) else None
        finally:
            self.hvp.release()


class TraceEvaluator(CurvatureEvaluator):
    """Per grid point: tr H estimate, its 95% interval and the products (`trace`), in the order of
    `metrics` (prefix: the file group)."""

    def __init__(self, *args, samples: int = 30, method: str = "hutchpp", prefix: str = "hessian_trace", **kw):
        super().__init__(*args, **kw)
        self.samples, self.method = int(samples), method
        self.metrics = [f"{prefix}/{m}" for m in TRACE_VALUES]

    def __call__(self, coords: np.ndarray) -> np.ndarray:
        out = np.empty((len(coords), len(self.metrics)))
        for i, coord in enumerate(coords):
            t = self.at(coord, lambda op: trace(op, op.n, samples=self.samples, method=self.method, device=op.device))
            t = t or TraceEstimate.nan(self.method)
            out[i] = [t.estimate, t.ci_low, t.ci_high, t.n_hvp]
        return out


TRACE_VALUES = ("trace", "ci_low", "ci_high", "n_hvp")


def topk_values(k: int) -> list[str]:
    return [f"lambda_{i}" for i in range(1, k + 1)] + [f"residual_{i}" for i in range(1, k + 1)] + ["n_hvp"]


class TopKEvaluator(CurvatureEvaluator):
    """Per grid point: λ_1 ≥ .. ≥ λ_k (the largest), their residuals, the products (`eigenpairs`)."""

    def __init__(self, *args, k: int = 3, prefix: str = "hessian_topk", basis: int = 0, block: int = 1, **kw):
        super().__init__(*args, **kw)
        self.k, self.basis, self.block = int(k), int(basis), int(block)
        self.metrics = [f"{prefix}/{m}" for m in topk_values(self.k)]

    def __call__(self, coords: np.ndarray) -> np.ndarray:
        out = np.empty((len(coords), len(self.metrics)))
        for i, coord in enumerate(coords):
            e = self.at(coord, lambda op: eigenpairs(op, op.n, top=self.k, tol=self.tol, max_iter=self.max_iter,
                                                     device=op.device, basis=self.basis, block=self.block)) \
                or Eigenpairs.nan(self.k)
            out[i] = [*e.values, *e.residuals, e.n_hvp]
        return out


# ---------------------------------------------------------------- eigenvector directions

DIRECTION_SPEC = re.compile(r"^hessian:(-?[1-9][0-9]*)$")


def parse_direction(spec: str, flag: str = "--xdir") -> int:
    """`hessian:K` → K (K ≥ 1: the K-th largest eigenvalue's vector; −K: the K-th most negative)."""
    found = DIRECTION_SPEC.match(str(spec).strip())
    if not found:
        raise UserError(f"{flag} {spec!r} is not a direction source: use hessian:K (K = 1, 2, ..: the eigenvector of "
                        "the K-th largest Hessian eigenvalue; -1: of the most negative one)")
    return int(found.group(1))


def eigen_directions(op, indices: list[int], names: list[str], tensors: dict[str, torch.Tensor], *,
                     tol: float = 1e-4, max_iter: int = 200) -> tuple[list[dict[str, torch.Tensor]], Eigenpairs]:
    """Unit eigenvectors of `op` for `indices` (parse_direction) as directions keyed by tensor name
    (float32, on the CPU): `names` are op's parameters in its order, `tensors` every tensor the
    direction spans (zero on those outside op: frozen ones). Each vector's largest-|entry|
    component is positive (a fixed sign). Also the Eigenpairs of those indices, in their order."""
    top = max([i for i in indices if i > 0], default=0)
    bottom = max([-i for i in indices if i < 0], default=0)
    op.prepare()
    try:
        e = eigenpairs(op, op.n, top=top, bottom=bottom, tol=tol, max_iter=max_iter, device=op.device, vectors=True)
    finally:
        op.release()
    if e.vectors is None or len(e.vectors) < top + bottom or not np.isfinite(e.values).all():
        raise UserError("the Hessian at θ* gave no eigenvectors (its loss is not finite): check the model and data")
    rows = [i - 1 if i > 0 else top + (-i) - 1 for i in indices]
    out = []
    for r in rows:
        v = e.vectors[r].cpu()
        v = v * torch.sign(v[v.abs().argmax()])
        chunks, at = {}, 0
        for name, p in zip(names, op.params):
            chunks[name] = v[at : at + p.numel()].view(p.shape)
            at += p.numel()
        out.append({name: (chunks[name] if name in chunks else torch.zeros(t.shape, dtype=torch.float64))
                    .to(torch.float32).clone() for name, t in tensors.items()})
    picked = Eigenpairs(e.values[rows], e.residuals[rows], None, e.n_hvp, e.converged)
    return out, picked


EIGEN_SUBSET = 512  # train examples of the Hessian whose eigenvectors are directions (as `landscape hessian`)
EIGEN_TOL, EIGEN_MAX_ITER = 1e-4, 200


def broadcast_directions(comm, directions: list[dict[str, torch.Tensor]], values, residuals):
    """Rank 0's directions (tensor by tensor, MPI Bcast: no pickle size limit), eigenvalues and
    residuals on every rank of `comm`, so that every rank uses the identical bits."""
    if comm is None or comm.size == 1:
        return directions, values, residuals
    out = []
    for d in directions:
        kept = {}
        for name, t in d.items():  # the same names in the same order on every rank (the same model)
            buf = np.ascontiguousarray(t.numpy())
            comm.Bcast(buf, root=0)
            kept[name] = torch.from_numpy(buf)
        out.append(kept)
    values, residuals = comm.bcast((np.asarray(values, float), np.asarray(residuals, float)), root=0)
    return out, values, residuals


def job_eigen_directions(job, model: nn.Module, train, stored: dict | None = None, comm=None):
    """The directions of a surface job with `--xdir hessian:K [--ydir hessian:J]`, or None without.

    The Hessian is that of the job's loss over EIGEN_SUBSET train examples (the fixed random draw
    of `landscape hessian`; the whole split when smaller) at θ*, over the --params selection,
    Lanczos to EIGEN_TOL. `--xnorm none` keeps the unit eigenvector; another norm is applied as to
    a random direction (tensors of dim ≤ 1 zero with --xignore biasbn). `stored`: the directions
    source of an existing surface file: the same request reuses its directions (a resume never
    recomputes them). `comm`: the job's ranks; each holds a share of the subset and the products
    are summed over them (the same Lanczos steps on every rank), and rank 0's vectors are then
    broadcast, so every rank moves along the identical directions (batch norm that uses each batch's
    statistics: rank 0 alone, on the whole subset). Returns trajectory.ModelDirections with the
    eigenvalues in `source` and as the datasets directions/eigenvalues and directions/residuals."""
    from ..core.data import SUBSET_SEED
    from ..core.data import subset as subset_of
    from ..core.directions import alias_groups, normalize, target_tensors
    from ..core.models import batch_statistics
    from ..core.tasks import make_task, resolve_task
    from ..options import DEFAULT_BATCH
    from .hessian import HessianVectorProduct
    from .trajectory import ModelDirections

    if not job.xdir and not job.ydir:
        return None
    if not job.xdir:
        raise UserError("--ydir hessian:K needs --xdir hessian:K too (e.g. --xdir hessian:1 --ydir hessian:2)")
    if job.model_file2 or job.trajectory or job.dir_file:
        raise UserError("--xdir hessian:K sets the directions itself: leave out --model_file2, --trajectory and --dir_file")
    if job.y and not job.ydir:
        raise UserError("a 2D surface with --xdir hessian:K needs --ydir too, e.g. --xdir hessian:1 --ydir hessian:2")
    if job.ydir and not job.y:
        raise UserError("--ydir is for the y direction of a 2D surface: add --y (e.g. --y=-1:1:51) or leave out --ydir")
    if job.dir_type != "weights":
        raise UserError("Hessian eigenvectors span the parameters: use --dir_type weights with --xdir hessian:K")
    specs = [job.xdir] + ([job.ydir] if job.ydir else [])
    indices = [parse_direction(s, f) for s, f in zip(specs, ("--xdir", "--ydir"))]
    if len(set(indices)) < len(indices):
        raise UserError(f"--xdir and --ydir are both {specs[0]}: choose two eigenvectors, e.g. hessian:1 and hessian:2")
    norms = [job.xnorm, job.ynorm or job.xnorm][: len(specs)]
    ignores = [job.xignore, job.yignore or job.xignore][: len(specs)]
    select = Selection.of(job.params, job.exclude)
    data = subset_of(train, EIGEN_SUBSET, "random", "train") if len(train) > EIGEN_SUBSET else train
    source = {"hessian": specs, "norm": norms, "ignore": ignores, "subset": len(data), "subset_seed": SUBSET_SEED,
              "tol": EIGEN_TOL, "max_iter": EIGEN_MAX_ITER, "loss": job.loss_name}
    tensors = {k: v.detach() for k, v in target_tensors(model, "weights", select).items()}
    old = (stored or {}).get("source") or {}
    if {k: v for k, v in old.items() if k not in ("eigenvalues", "residuals")} == source:
        values, residuals = old["eigenvalues"], old["residuals"]
        directions = [{k: torch.as_tensor(d[k]) for k in tensors} for d in stored["directions"]]  # the model's order
    else:
        task = make_task(resolve_task(model, job.task), job.loss_name)
        named = dict(model.named_parameters(remove_duplicate=False))
        names = [first for first, aliases in alias_groups(named).items()
                 if named[first].requires_grad and select.keep(aliases)]
        dtype = next(model.parameters()).dtype

        def compute(part, group):
            op = HessianVectorProduct(model, part.inputs.to(dtype) if part.inputs.is_floating_point() else part.inputs,
                                      part.labels, lambda out, y: task.loss(task.output(out), y),
                                      batch_size=job.batch_size or DEFAULT_BATCH, count=task.count, select=select,
                                      group=group)
            found, e = eigen_directions(op, indices, names, tensors, tol=EIGEN_TOL, max_iter=EIGEN_MAX_ITER)
            return found, e.values, e.residuals

        ranks = 1 if comm is None else comm.size
        if ranks == 1:
            directions, values, residuals = compute(data, None)
        elif ranks <= len(data) and not batch_statistics(model):  # the products summed over every rank's share
            directions, values, residuals = broadcast_directions(
                comm, *compute(data.shard(comm.rank, ranks, "train"), comm))
        else:  # rank 0 alone, on the whole subset (an error there reaches every rank)
            from ..engine.mpi import on_root

            directions, values, residuals = on_root(comm, lambda: compute(data, None))
        for d, norm, ignore in zip(directions, norms, ignores):
            if norm == "none":
                continue
            for name, t in d.items():
                w = tensors[name].to("cpu", torch.float32)
                if w.dim() <= 1:
                    d[name] = torch.zeros_like(w) if ignore == "biasbn" else w.clone()
                else:
                    normalize(t, w, norm)
    source = {**source, "eigenvalues": [float(v) for v in values], "residuals": [float(r) for r in residuals]}
    extra = {"directions/eigenvalues": np.asarray(values, float), "directions/residuals": np.asarray(residuals, float)}
    return ModelDirections(directions, job.x, job.y, extra, source)
