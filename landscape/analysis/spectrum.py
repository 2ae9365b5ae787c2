"""Curvature beyond two eigenvalues: top-k eigenpairs, the trace, the spectral density, per-block
summaries, GGN products, and the trace / top-k maps.

Every estimator takes an operator `op` (a callable v ↦ A v on float64 flat vectors of length n:
`HessianVectorProduct`, `GGNVectorProduct`, or a dense matrix's `lambda v: A @ v`) and draws its
random vectors on the CPU from a seed (the same on every device and rank), so a run whose
products are summed over MPI ranks (`group=` of the product) takes the same steps on every rank.

- `eigenpairs`: Lanczos with full reorthogonalization (float64) until the k wanted Ritz pairs
  (θ_i, y_i), largest and/or smallest, each have ‖A y_i − θ_i y_i‖ ≤ tol·|θ_i| + atol·max|θ|
  (the explicit residual, from the kept products W = A Q: no extra products). For symmetric A
  an eigenvalue of A lies within the residual r_i of θ_i (Bauer–Fike / Kahan), and the Ritz
  values interlace, so with a converged run λ_i ∈ [θ_i − r_i, θ_i + r_i]. Not restarted: the
  basis grows to at most max_iter vectors (2 · max_iter · n float64 kept). A single start
  vector finds one copy of a repeated eigenvalue.
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


def rademacher(n: int, count: int, seed: int, device="cpu") -> torch.Tensor:
    """(count, n) float64 entries ±1, drawn on the CPU (the same on every device and rank)."""
    g = torch.Generator().manual_seed(int(seed))
    return (torch.randint(0, 2, (count, n), generator=g, dtype=torch.int8) * 2 - 1).to(torch.float64).to(device)


def t_quantile(dof: int, p: float = 0.975) -> float:
    from scipy.stats import t

    return float(t.ppf(p, dof))


# ---------------------------------------------------------------- top-k eigenpairs


@dataclass(frozen=True)
class Eigenpairs:
    """Ritz pairs of A: values (largest first, then the smallest, most negative first), residuals
    ‖A y − θ y‖ (an eigenvalue of A lies within each), vectors (unit, rows; None unless asked),
    n_hvp products, converged (every wanted pair within tol·|θ| + atol·max|θ|)."""

    values: np.ndarray
    residuals: np.ndarray
    vectors: torch.Tensor | None
    n_hvp: int
    converged: bool

    @classmethod
    def nan(cls, count: int, n_hvp: int = 0) -> Eigenpairs:
        return cls(np.full(count, np.nan), np.full(count, np.nan), None, n_hvp, False)


def eigenpairs(op, n: int, *, top: int = 1, bottom: int = 0, tol: float = 1e-3, max_iter: int = 100,
               atol: float = ATOL, seed: int = EIG_SEED, device="cpu", vectors: bool = False) -> Eigenpairs:
    """The `top` largest and `bottom` smallest eigenpairs of the symmetric operator `op` (see the
    module docstring: Lanczos with full reorthogonalization, explicit residuals)."""
    from .hessian import lanczos_steps, start_vector

    want = int(top) + int(bottom)
    if want < 1:
        raise UserError("ask for at least one eigenvalue (k >= 1)")
    if want > n:
        raise UserError(f"k={want} eigenvalues asked of an operator of size {n}: choose k <= {n}")
    if not tol > 0:
        raise UserError(f"tol={tol} must be positive, e.g. 1e-3")
    m = min(int(max_iter), n)
    if m < want:
        raise UserError(f"--max_iter {max_iter} is below the {want} eigenvalues asked: raise --max_iter to at least {want}")
    values = res = ends = None
    converged, step = False, None
    for step in lanczos_steps(op, start_vector(n, device, seed), m):
        if step.theta is None:
            return Eigenpairs.nan(want, step.j + 1)
        theta, size = step.theta, step.j + 1
        idx = list(range(size - 1, max(size - 1 - top, -1), -1))  # largest first
        idx += [i for i in range(min(bottom, size)) if i not in idx]  # then the smallest
        ends = step.S[:, idx].to(step.Q)
        values = theta[idx].numpy()
        res = step.residuals(ends, torch.from_numpy(values)).cpu().numpy()
        scale = float(np.abs(theta.numpy()).max())
        converged = len(idx) == want and bool(np.all(res <= tol * np.abs(values) + atol * scale))
        if converged or step.beta <= 1e-14 * max(scale, 1e-300):
            break
    j = step.j
    vecs = (step.Q.T @ ends).T.contiguous() if vectors else None
    values, res = np.asarray(values, float), np.asarray(res, float)
    if len(values) < want:  # an invariant subspace smaller than asked (a tiny operator)
        values, res = np.pad(values, (0, want - len(values)), constant_values=np.nan), \
            np.pad(res, (0, want - len(res)), constant_values=np.nan)
    return Eigenpairs(values, res, vecs, j + 1, bool(converged))


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
    z = rademacher(n, samples, seed, device)
    if method == "hutchinson":
        quad = np.array([float(v @ op(v)) for v in z])
        return TraceEstimate.nan(method, samples) if not np.isfinite(quad).all() else _interval(0.0, quad, samples, method)
    k = samples // 3
    g = z[2 * k:]  # the rest are Hutchinson samples of the deflated operator
    AS = torch.stack([op(v) for v in z[:k]])
    Qm = torch.linalg.qr(AS.T).Q.T  # (k, n) orthonormal rows
    AQ = torch.stack([op(v) for v in Qm])
    base = float((Qm * AQ).sum())
    proj = g - (g @ Qm.T) @ Qm
    quad = np.array([float(v @ op(v)) for v in proj])
    if not (np.isfinite(quad).all() and math.isfinite(base)):
        return TraceEstimate.nan(method, samples)
    return _interval(base, quad, samples, method)


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
    for r, z in enumerate(rademacher(n, runs, seed, device)):
        Q = z.new_zeros(m, n)
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
                  max_iter: int = 100, device="cpu") -> BlockSummary:
    """Top eigenvalue and trace of each block's sub-block of the curvature (`make_op(selection)`
    gives the operator restricted to a Selection: θ outside it held fixed)."""
    numel, lmax, res, tr, ci, used = [], [], [], [], [], 0
    for b in blocks:
        op = make_op(Selection.of(b))
        op.prepare()
        try:
            e = eigenpairs(op, op.n, top=1, tol=tol, max_iter=max_iter, device=device)
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
             runs: int = 4, steps: int = 60, sigma: float = 0.01, make_op=None, blocks: list[str] | None = None
             ) -> Spectrum:
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
        eig = eigenpairs(op, op.n, top=k, tol=tol, max_iter=max_iter, device=op.device)
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
                                device=op.device)
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
            self.hvp = GGNVectorProduct(self.model, h.inputs, h.labels, batch_size=h.batch_size, autocast=h.autocast,
                                        select=kw["evaluation"].select if kw.get("evaluation") else None,
                                        group=h.group, output=self.output)
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

    def __init__(self, *args, k: int = 3, prefix: str = "hessian_topk", **kw):
        super().__init__(*args, **kw)
        self.k = int(k)
        self.metrics = [f"{prefix}/{m}" for m in topk_values(self.k)]

    def __call__(self, coords: np.ndarray) -> np.ndarray:
        out = np.empty((len(coords), len(self.metrics)))
        for i, coord in enumerate(coords):
            e = self.at(coord, lambda op: eigenpairs(op, op.n, top=self.k, tol=self.tol, max_iter=self.max_iter,
                                                     device=op.device)) or Eigenpairs.nan(self.k)
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


def job_eigen_directions(job, model: nn.Module, train, stored: dict | None = None):
    """The directions of a surface job with `--xdir hessian:K [--ydir hessian:J]`, or None without.

    The Hessian is that of the job's loss over EIGEN_SUBSET train examples (the fixed random draw
    of `landscape hessian`; the whole split when smaller) at θ*, over the --params selection,
    Lanczos to EIGEN_TOL. `--xnorm none` keeps the unit eigenvector; another norm is applied as to
    a random direction (tensors of dim ≤ 1 zero with --xignore biasbn). `stored`: the directions
    source of an existing surface file: the same request reuses its directions (a resume never
    recomputes them). Returns trajectory.ModelDirections with the eigenvalues in `source` and as
    the datasets directions/eigenvalues and directions/residuals."""
    from ..core.data import SUBSET_SEED
    from ..core.data import subset as subset_of
    from ..core.directions import alias_groups, normalize, target_tensors
    from ..core.tasks import make_task, resolve_task
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
        op = HessianVectorProduct(model, data.inputs.to(dtype) if data.inputs.is_floating_point() else data.inputs,
                                  data.labels, lambda out, y: task.loss(task.output(out), y),
                                  batch_size=job.batch_size, count=task.count, select=select)
        directions, e = eigen_directions(op, indices, names, tensors, tol=EIGEN_TOL, max_iter=EIGEN_MAX_ITER)
        values, residuals = e.values, e.residuals
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
