"""Hessian eigenvalue maps: λmax, λmin (and |λmin/λmax|) of the loss at θ* + αδ + βη.

- `HessianVectorProduct`: v ↦ H v, H = ∇²_θ L(θ), L(θ) = (1/n) Σ_i ℓ(f(x_i; θ), y_i) over a data
  subset, n = the task's count over the subset (examples; predicted tokens for causal_lm, so
  L is the mean per-token loss), θ = every trainable parameter of the model as it is now (a tied one once),
  or those of a --params/--exclude selection (the others held fixed: H is that sub-block);
  floating-point inputs are cast to θ's dtype, integer ones (token ids) are left as they are.
  Double backward: per batch b, g_b = ∇_θ Σ_{i∈b} ℓ_i is built with create_graph=True, then
  H v = (1/n) Σ_b ∂(g_b·v)/∂θ (one more backward with grad_outputs=v), summed over batches in
  float64. The graphs g_b are kept between products for as many batches as fit the memory budget
  (bench/README.md, digits_cnn on the CPU: 5.0 forward passes per product kept, 7.1–8.5 rebuilt,
  6.4–10 with torch.func jvp(grad)).
- `lanczos`: λmax and λmin in ONE Lanczos run, full reorthogonalization, float64.
- `HessianEvaluator`: the per-point evaluator that engine.run maps over the surface's grid
  (the job itself, model, data and directions rebuilt from the file, is `landscape.api.hessian_map`).
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..core.bn import BNRecalibration
from ..core.data import Split
from ..core.device import free_memory, group_sum
from ..core.directions import alias_groups
from ..core.evaluate import AUTOCAST_DTYPES, Evaluation
from ..core.grid import Grid
from ..core.models import Snapshot, weights_dtype
from ..core.selection import Selection
from ..core.tasks import UserMetrics, make_task
from ..core.theta import ThetaWriter
from ..errors import UserError
from ..io.surface_file import HESSIAN_METRICS

START_SEED = 0  # the Lanczos start vector: N(0, I) drawn with this seed, the same at every point
ATOL = 1e-5  # residual floor in units of max(|λmax|, |λmin|): λ ≈ 0 and float32 round-off (~1e-6) still converge


# ---------------------------------------------------------------- Hessian-vector products


def saved_bytes(fn):
    """(fn(), bytes of the distinct storages autograd saves while fn runs): the memory a kept graph holds."""
    seen = {}

    def pack(t):
        s = t.untyped_storage()
        seen[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, sum(seen.values())


def memory_budget(device: torch.device, sharing: int = 1) -> int:
    """Bytes this rank may plan with: half the free GPU memory, a quarter of the free host
    memory, divided among the `sharing` processes that use the same device."""
    return free_memory(device) // (2 if device.type == "cuda" else 4) // max(1, sharing)


def lanczos_bytes(n: int, max_iter: int) -> int:
    """The Lanczos run keeps its vectors and their products: 2 · min(max_iter, n) · n float64."""
    return 2 * min(int(max_iter), n) * n * 8


def plan_memory(n: int, max_iter: int, budget: int) -> int:
    """The bytes left for kept gradient graphs once the Lanczos basis is held; a UserError, before
    any work, when the basis alone does not fit `budget` (this rank's share of the device)."""
    basis = lanczos_bytes(n, max_iter)
    if basis > budget:
        gib = 1 << 30
        fits = max(1, budget // (16 * n))
        raise UserError(f"the Lanczos basis of {n:,} parameters and --max_iter {max_iter} needs {basis / gib:.1f} GiB "
                        f"(2 × max_iter × parameters float64) but this rank may use {budget / gib:.1f} GiB: lower "
                        f"--max_iter (at most {fits} fits) or run fewer ranks per device")
    return budget - basis


def plan_vectors(need: int, budget: int, what: str, fix: str) -> int:
    """The bytes left for kept gradient graphs once `what` (`need` bytes of vectors) is held; a
    UserError before any work when it alone does not fit `budget` (this rank's share of the device)."""
    if need > budget:
        gib = 1 << 30
        raise UserError(f"{what} needs {need / gib:.2f} GiB but this rank may use {budget / gib:.2f} GiB: {fix}, or run "
                        "fewer ranks per device")
    return budget - need


def hessian_parameters(model: nn.Module, select: Selection | None = None) -> list[nn.Parameter]:
    """The trainable parameters a Hessian is taken over (a tied one once), those of `select` only."""
    named = dict(model.named_parameters(remove_duplicate=False))
    params = [named[first] for first, aliases in alias_groups(named).items()
              if named[first].requires_grad and (select is None or select.keep(aliases))]
    if not params:
        raise UserError("the model has no trainable parameters" + ("" if select is None or select.everything else
                        " in the --params/--exclude selection") + ": there is no Hessian to compute")
    return params


class HessianVectorProduct:
    """v ↦ H v (float64 flat vectors on the model's device) at the model's current parameters.

    Call `prepare()` after the parameters change: it returns L(θ) and keeps the per-batch gradient
    graphs g_b that fit `memory` bytes (default `memory_budget`); products rebuild the others."""

    def __init__(self, model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, loss_fn, *,
                 batch_size: int = 512, memory: int | None = None, autocast=contextlib.nullcontext, count=len,
                 select: Selection | None = None, group=None):
        """loss_fn(outputs, labels): the loss summed over the batch; autocast(): the context of
        each forward pass (the surface's precision); count(labels): n, what the sums are averaged
        by (the task's count: examples, or predicted tokens); select: the parameters θ spans
        (--params / --exclude; the others are held fixed: H is the sub-block of the selection);
        group: the ranks that hold the other shares of the data (--ranks_per_point): L, n and every
        product are summed over them."""
        self.model, self.inputs, self.labels, self.loss_fn = model, inputs, labels, loss_fn
        self.group = group
        self.count = count(labels) if group is None or group.size == 1 else group.allreduce(count(labels))
        self.autocast = autocast
        self.params = hessian_parameters(model, select)
        self.n = sum(p.numel() for p in self.params)
        self.batch_size = int(batch_size)
        self.batches = [(i, min(i + self.batch_size, len(labels))) for i in range(0, len(labels), self.batch_size)]
        self.device = self.params[0].device
        self.memory = memory_budget(self.device) if memory is None else int(memory)
        self.kept: list[tuple[torch.Tensor, ...]] = []

    def _inputs(self, lo: int, hi: int) -> torch.Tensor:
        """Inputs lo:hi, floating-point ones in θ's dtype (integer ones, such as token ids, as they are)."""
        x = self.inputs[lo:hi]
        return x.to(self.params[0].dtype) if x.is_floating_point() else x

    def _grad_graph(self, lo: int, hi: int) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """(Σ_{i in lo:hi} ℓ_i, its gradient g_b with create_graph=True)."""
        with self.autocast():
            out = self.model(self._inputs(lo, hi))
        loss = self.loss_fn(out, self.labels[lo:hi])
        return loss, torch.autograd.grad(loss, self.params, create_graph=True, allow_unused=True, materialize_grads=True)

    def prepare(self) -> float:
        """L(θ) in float64; keeps g_b for the first batches while their saved tensors fit the budget."""
        self.kept = []
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        keep, per_batch = True, 0
        for lo, hi in self.batches:
            if keep:  # the first batch's graph measures the size of all
                (loss, g), size = saved_bytes(lambda: self._grad_graph(lo, hi))
                per_batch = per_batch or size
                keep = (len(self.kept) + 1) * per_batch <= self.memory
                if keep:
                    self.kept.append(g)
            else:
                with torch.no_grad(), self.autocast():
                    loss = self.loss_fn(self.model(self._inputs(lo, hi)), self.labels[lo:hi])
            total += loss.detach().double()
        return float(group_sum(self.group, total)) / self.count

    def release(self) -> None:
        self.kept = []

    def _unflatten(self, v: torch.Tensor) -> list[torch.Tensor]:
        out, i = [], 0
        for p in self.params:
            out.append(v[i : i + p.numel()].view(p.shape).to(p.dtype))
            i += p.numel()
        return out

    def _product(self, g, vs) -> torch.Tensor:
        pairs = [(gi, vi) for gi, vi in zip(g, vs) if gi.requires_grad]
        if not pairs:  # the gradient does not depend on θ: this batch adds nothing
            return torch.zeros(self.n, dtype=torch.float64, device=self.device)
        hv = torch.autograd.grad([a for a, _ in pairs], self.params, grad_outputs=[b for _, b in pairs],
                                 retain_graph=True, allow_unused=True, materialize_grads=True)
        return torch.cat([h.reshape(-1) for h in hv]).double()

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        vs = self._unflatten(v)
        acc = torch.zeros(self.n, dtype=torch.float64, device=self.device)
        for b, (lo, hi) in enumerate(self.batches):
            if b < len(self.kept):
                acc += self._product(self.kept[b], vs)
            else:
                acc += self._product(self._grad_graph(lo, hi)[1], vs)
        return group_sum(self.group, acc) / self.count


# ---------------------------------------------------------------- the eigen-solver


@dataclass(frozen=True)
class EigResult:
    """λmax, λmin of one Hessian; residual_* = ‖H y − θ y‖ of the unit Ritz vector y of each (an
    eigenvalue of H lies within it of θ); n_hvp Hessian-vector products used; converged: every
    residual ≤ tol · |θ| + atol · max(|λmax|, |λmin|) (see `lanczos`)."""

    lambda_max: float
    lambda_min: float
    residual_max: float
    residual_min: float
    n_hvp: int
    converged: bool

    @classmethod
    def nan(cls, n_hvp: int = 0) -> EigResult:
        return cls(math.nan, math.nan, math.nan, math.nan, n_hvp, False)


def start_vector(n: int, device, seed: int = START_SEED) -> torch.Tensor:
    """N(0, I) in float64, drawn on the CPU (the same on every device and rank)."""
    return torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(device)


@dataclass(frozen=True)
class LanczosStep:
    """Step j of `lanczos_steps`: the basis Q_j and products W_j so far (rows), the Ritz values θ
    (ascending) and vectors S of T_j, β_j; θ None when the product was not finite."""

    j: int
    Q: torch.Tensor
    W: torch.Tensor
    theta: torch.Tensor | None = None
    S: torch.Tensor | None = None
    beta: float = 0.0

    def residuals(self, s: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """‖W_j s − θ Q_j s‖ of the Ritz pairs (θ, columns of s): an eigenvalue lies within each."""
        s = s.to(self.Q)
        return (self.W.T @ s - (self.Q.T @ s) * theta.to(self.Q)).norm(dim=0)


def lanczos_steps(op, v0: torch.Tensor, m: int):
    """Lanczos with full reorthogonalization (see `lanczos`) from v0, at most m products: yields a
    LanczosStep after each product; the caller stops iterating when it has what it wants."""
    n = v0.numel()
    Q, W = v0.new_zeros(m, n), v0.new_zeros(m, n)
    alpha, beta = np.zeros(m), np.zeros(m)
    q = v0 / v0.norm()
    for j in range(m):
        Q[j] = q
        w = op(q)
        if not bool(torch.isfinite(w).all()):
            yield LanczosStep(j, Q[: j + 1], W[: j + 1])
            return
        W[j] = w
        Qj = Q[: j + 1]
        r = w - Qj.T @ (Qj @ w)
        r -= Qj.T @ (Qj @ r)
        alpha[j], beta[j] = float(q @ w), float(r.norm())
        a, b = torch.from_numpy(alpha[: j + 1]), torch.from_numpy(beta[:j])
        theta, S = torch.linalg.eigh(torch.diag(a) + torch.diag(b, 1) + torch.diag(b, -1))  # on the CPU, tiny
        yield LanczosStep(j, Qj, W[: j + 1], theta, S, float(beta[j]))
        q = r / beta[j]


def lanczos(hvp, v0: torch.Tensor, *, tol: float = 1e-3, max_iter: int = 100, atol: float = ATOL) -> EigResult:
    """Largest and smallest eigenvalue of the symmetric operator `hvp` in one Lanczos run.

    q_1 = v0/‖v0‖; step j: w_j = H q_j, α_j = q_jᵀ w_j, r = w_j − Q_j Q_jᵀ w_j (twice: full
    reorthogonalization), β_j = ‖r‖, q_{j+1} = r/β_j. The Ritz pairs (θ, y = Q_j s) of the
    tridiagonal T_j = tridiag(β, α, β) at both ends get the explicit residual ‖W_j s − θ y‖
    (W_j = [w_1..w_j], kept, so no extra products): an eigenvalue of H lies within it of θ.
    Stops when each end has residual ≤ tol · |θ| + atol · max(|θ_max|, |θ_min|) (tol: relative,
    as ARPACK's; atol: a floor for θ ≈ 0 and round-off in the products), on an invariant
    subspace, or after min(max_iter, n) products. A residual relative to ‖H‖ alone would stop
    early on λmin ≈ the bulk of eigenvalues near 0 (bench/README.md). Float64 throughout; a
    non-finite product gives NaN."""
    if not tol > 0:
        raise UserError(f"tol={tol} must be positive, e.g. 1e-3")
    if max_iter < 1:
        raise UserError(f"max_iter={max_iter} must be at least 1")
    theta = res = [math.nan, math.nan]
    converged, j = False, 0
    for step in lanczos_steps(hvp, v0.to(torch.float64), min(int(max_iter), v0.numel())):
        j = step.j
        if step.theta is None:
            return EigResult.nan(j + 1)
        theta, ends = step.theta[[-1, 0]], step.S[:, [-1, 0]]  # θ_max, θ_min
        res = step.residuals(ends, theta).tolist()
        theta = theta.tolist()
        scale = max(abs(theta[0]), abs(theta[1]))
        converged = all(e <= tol * abs(t) + atol * scale for e, t in zip(res, theta))
        if converged or step.beta <= 1e-14 * max(scale, 1e-300):
            break
    return EigResult(theta[0], theta[1], res[0], res[1], j + 1, bool(converged))


def extreme_eigenvalues(hvp: HessianVectorProduct, *, tol: float = 1e-3, max_iter: int = 100, atol: float = ATOL,
                        seed: int = START_SEED) -> EigResult:
    """λmax, λmin of the Hessian at the model's current parameters (NaN where L(θ) is not finite)."""
    loss = hvp.prepare()
    try:
        if not math.isfinite(loss):
            return EigResult.nan()
        return lanczos(hvp, start_vector(hvp.n, hvp.device, seed), tol=tol, max_iter=max_iter, atol=atol)
    finally:
        hvp.release()


# ---------------------------------------------------------------- the map


class HessianEvaluator:
    """Per grid point (α, β): set θ = θ* + αδ + βη in place, then λmax, λmin, their residuals and
    the number of products, in the order of `metrics` (an engine.Evaluator). Non-finite loss: NaN
    (n_hvp 0)."""

    points_per_call = 1
    metrics = list(HESSIAN_METRICS)

    def __init__(self, model: nn.Module, split: Split, directions, *, evaluation: Evaluation | None = None,
                 batch_size: int = 512, device="cpu", tol: float = 1e-3, max_iter: int = 100, memory: int | None = None,
                 group=None, curvature_select: Selection | None = None):
        """`evaluation`: how the surface evaluated its points (dir_type, loss, precision, BN
        re-estimation at every point), applied here too; `batch_size`: examples per product batch;
        `group`: the ranks evaluating each point together, `split` this rank's share of the data;
        `curvature_select`: the parameters H is taken over (default: those the directions move)."""
        evaluation = evaluation or Evaluation()
        device = torch.device(device)
        self.snapshot = Snapshot(model)
        self.model = model.to(device).eval()
        # a transformers model's fused attention (SDPA) has no second derivative: eager attention here
        attention = getattr(getattr(model, "config", None), "_attn_implementation", None)
        self.attention = attention if attention not in (None, "eager") and hasattr(model, "set_attn_implementation") \
            else None  # the implementation to put back, when switched
        if self.attention:
            model.set_attn_implementation("eager")
        self.theta = ThetaWriter(self.model, directions, evaluation.dir_type, evaluation.select)
        self.bn = None
        if evaluation.bn_calibration is not None:
            calibration = evaluation.bn_calibration.to(device).cast(weights_dtype(model))
            self.bn = BNRecalibration(self.model, calibration, dir_type=evaluation.dir_type,
                                      batch_size=evaluation.batch_size)
        amp = AUTOCAST_DTYPES[evaluation.precision]
        self.autocast = lambda: torch.autocast(device.type, dtype=amp, enabled=amp is not None)
        task = make_task(evaluation.task, evaluation.loss_name)
        data = split.to(device)
        labels, count = data.labels, task.count
        loss_fn = lambda out, y: task.loss(task.output(out), y)  # noqa: E731
        if isinstance(task, UserMetrics):  # its fn sees the whole batch: the HVP's labels are example indices
            dtype = next(p.dtype for p in self.model.parameters())
            with self.autocast():
                n = task.loss_count(lambda x: self.model(x.to(dtype) if x.is_floating_point() else x), data.inputs,
                                    data.labels, batch_size)
            labels, count = torch.arange(len(data.labels), device=device), (lambda _: n)
            loss_fn = lambda out, i: task.loss(task.output(out), data.labels[i], data.inputs[i])  # noqa: E731
        self.hvp = HessianVectorProduct(self.model, data.inputs, labels, loss_fn, batch_size=batch_size,
                                        memory=memory, autocast=self.autocast, count=count,
                                        select=evaluation.select if curvature_select is None else curvature_select,
                                        group=group)
        self.tol, self.max_iter = float(tol), int(max_iter)

    def solve(self, coord) -> EigResult:
        self.theta.write(coord)
        if self.bn is not None:
            self.bn.run(self.model, self.hvp.device, self.autocast)
        return extreme_eigenvalues(self.hvp, tol=self.tol, max_iter=self.max_iter)

    def __call__(self, coords: np.ndarray) -> np.ndarray:
        out = np.empty((len(coords), len(self.metrics)))
        for k, coord in enumerate(coords):
            r = self.solve(coord)
            out[k] = [r.lambda_max, r.lambda_min, r.residual_max, r.residual_min, r.n_hvp]
        return out

    def restore(self) -> None:
        self.theta.restore()
        if self.bn is not None:
            self.bn.restore()
        self.snapshot.restore()
        if self.attention:
            self.model.set_attn_implementation(self.attention)


def sub_grid(x: np.ndarray, y: np.ndarray | None, stride: int) -> Grid:
    """Every `stride`-th point of each axis, both ends included: (num − 1) % stride == 0 on each axis."""
    if stride < 1:
        raise UserError(f"--stride {stride} must be at least 1 (1: every point of the surface's grid)")
    axes = [("x", x)] + ([("y", y)] if y is not None else [])
    for name, c in axes:
        if (len(c) - 1) % stride:
            common = math.gcd(*[len(a) - 1 for _, a in axes])
            fits = [k for k in range(1, common + 1) if common % k == 0] or [1]
            raise UserError(f"--stride {stride} does not fit the surface's {len(c)}-point {name} axis ((num - 1) must be a "
                            f"multiple of the stride, so that both ends are included): use one of {', '.join(map(str, fits[:12]))}")
    return Grid(np.asarray(x[::stride]), None if y is None else np.asarray(y[::stride]))


def unconverged(values: dict, tol: float) -> int:
    """Eigenvalues of a map whose residual is above the stopping rule of `lanczos` (NaN points aside)."""
    scale = np.fmax(np.abs(values["lambda_max"]), np.abs(values["lambda_min"]))
    return int(sum((values[f"residual_{e}"] > tol * np.abs(values[f"lambda_{e}"]) + ATOL * scale).sum()
                    for e in ("max", "min")))
