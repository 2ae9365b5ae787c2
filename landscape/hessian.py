"""Hessian eigenvalue maps: λmax, λmin (and |λmin/λmax|) of the loss at θ* + αδ + βη.

- `HessianVectorProduct`: v ↦ H v, H = ∇²_θ L(θ), L(θ) = (1/n) Σ_i ℓ(f(x_i; θ), y_i) over a data
  subset, θ = every trainable parameter of the model as it is now. Double backward: per batch b,
  g_b = ∇_θ Σ_{i∈b} ℓ_i is built with create_graph=True, then H v = (1/n) Σ_b ∂(g_b·v)/∂θ (one
  more backward with grad_outputs=v), summed over batches in float64. The graphs g_b are kept
  between products for as many batches as fit the memory budget (bench/README.md, digits_cnn on
  the CPU: 5.0 forward passes per product kept, 7.1–8.5 rebuilt, 6.4–10 with torch.func jvp(grad)).
- `lanczos`: λmax and λmin in ONE Lanczos run, full reorthogonalization, float64.
- `HessianEvaluator`: the per-point evaluator that engine.run maps over the surface's grid.
- `hessian_map`: the `landscape hessian SURFACE.h5` job (model, data, directions from the file).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import __version__, engine, store
from .data import Split
from .directions import check_directions, fingerprint
from .errors import EXIT_INTERRUPTED, EXIT_OK, UserError
from .evaluate import SurfaceEvaluator, summed_loss
from .grid import Grid

GROUP = "hessian"
METRICS = [f"{GROUP}/{m}" for m in ("lambda_max", "lambda_min", "residual_max", "residual_min", "n_hvp")]
MASK = f"{GROUP}/mask"
SUBSET_SEED = 0  # the data subset: `subset` examples of the train split drawn with this seed
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
    """Bytes of kept gradient graphs allowed: half the free GPU memory, a quarter of the free host
    memory, divided among the `sharing` processes that use the same device."""
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0] // 2
    else:
        try:
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 4
        except (ValueError, OSError, AttributeError):
            free = 1 << 30
    return free // max(1, sharing)


def ranks_per_device(comm, device: torch.device) -> int:
    """How many ranks of this node share `device` (all of them for the CPU)."""
    from mpi4py import MPI

    local = comm.Split_type(MPI.COMM_TYPE_SHARED)
    n = local.size
    local.Free()
    return -(-n // torch.cuda.device_count()) if device.type == "cuda" else n


class HessianVectorProduct:
    """v ↦ H v (float64 flat vectors on the model's device) at the model's current parameters.

    Call `prepare()` after the parameters change: it returns L(θ) and keeps the per-batch gradient
    graphs g_b that fit `memory` bytes (default `memory_budget`); products rebuild the others."""

    def __init__(self, model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, loss_fn, *,
                 batch_size: int = 512, memory: int | None = None):
        self.model, self.inputs, self.labels, self.loss_fn = model, inputs, labels, loss_fn
        self.params = [p for p in model.parameters() if p.requires_grad]
        if not self.params:
            raise UserError("the model has no trainable parameters: there is no Hessian to compute")
        self.n = sum(p.numel() for p in self.params)
        self.batch_size = int(batch_size)
        self.batches = [(i, min(i + self.batch_size, len(labels))) for i in range(0, len(labels), self.batch_size)]
        self.device = self.params[0].device
        self.memory = memory_budget(self.device) if memory is None else int(memory)
        self.kept: list[tuple[torch.Tensor, ...]] = []

    def _grad_graph(self, lo: int, hi: int) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """(Σ_{i in lo:hi} ℓ_i, its gradient g_b with create_graph=True)."""
        x = self.inputs[lo:hi].to(self.params[0].dtype)
        loss = self.loss_fn(self.model(x), self.labels[lo:hi])
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
                with torch.no_grad():
                    loss = self.loss_fn(self.model(self.inputs[lo:hi].to(self.params[0].dtype)), self.labels[lo:hi])
            total += loss.detach().double()
        return float(total) / len(self.labels)

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
        return acc / len(self.labels)


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
    def nan(cls, n_hvp: int = 0) -> "EigResult":
        return cls(math.nan, math.nan, math.nan, math.nan, n_hvp, False)


def start_vector(n: int, device, seed: int = START_SEED) -> torch.Tensor:
    """N(0, I) in float64, drawn on the CPU (the same on every device and rank)."""
    return torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(device)


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
    v0 = v0.to(torch.float64)
    n = v0.numel()
    m = min(int(max_iter), n)
    Q = v0.new_zeros(m, n)
    W = v0.new_zeros(m, n)
    alpha, beta = np.zeros(m), np.zeros(m)
    q = v0 / v0.norm()
    for j in range(m):
        Q[j] = q
        w = hvp(q)
        if not bool(torch.isfinite(w).all()):
            return EigResult.nan(j + 1)
        W[j] = w
        Qj, Wj = Q[: j + 1], W[: j + 1]
        r = w - Qj.T @ (Qj @ w)
        r -= Qj.T @ (Qj @ r)
        alpha[j], beta[j] = float(q @ w), float(r.norm())
        a, b = torch.from_numpy(alpha[: j + 1]), torch.from_numpy(beta[:j])
        theta, S = torch.linalg.eigh(torch.diag(a) + torch.diag(b, 1) + torch.diag(b, -1))  # on the CPU, tiny
        theta = theta[[-1, 0]]  # θ_max, θ_min
        ends = S[:, [-1, 0]].to(Q)
        res = (Wj.T @ ends - (Qj.T @ ends) * theta.to(Q)).norm(dim=0).tolist()
        theta = theta.tolist()
        scale = max(abs(theta[0]), abs(theta[1]))
        converged = all(e <= tol * abs(t) + atol * scale for e, t in zip(res, theta))
        if converged or beta[j] <= 1e-14 * max(scale, 1e-300):
            break
        q = r / beta[j]
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
    the number of products, in the order of `metrics`. Non-finite loss: NaN (n_hvp 0)."""

    points_per_call = 1
    metrics = METRICS

    def __init__(self, model: nn.Module, split: Split, directions, *, dir_type: str = "weights",
                 loss_name: str = "crossentropy", batch_size: int = 512, device="cpu", tol: float = 1e-3,
                 max_iter: int = 100, memory: int | None = None):
        self.point = SurfaceEvaluator(model, {"train": split}, directions, dir_type=dir_type, loss_name=loss_name,
                                      batch_size=batch_size, device=device, resident=True)
        data = self.point.splits["train"]
        self.hvp = HessianVectorProduct(self.point.model, data.inputs, data.labels,
                                        lambda z, y: summed_loss(loss_name, z, y), batch_size=batch_size, memory=memory)
        self.tol, self.max_iter = float(tol), int(max_iter)

    def solve(self, coord) -> EigResult:
        self.point.set_point(coord)
        return extreme_eigenvalues(self.hvp, tol=self.tol, max_iter=self.max_iter)

    def __call__(self, coords: np.ndarray) -> np.ndarray:
        out = np.empty((len(coords), len(self.metrics)))
        for k, coord in enumerate(coords):
            r = self.solve(coord)
            out[k] = [r.lambda_max, r.lambda_min, r.residual_max, r.residual_min, r.n_hvp]
        return out

    def restore(self) -> None:
        self.point.restore()


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


def take_subset(split: Split, n: int, name: str = "train") -> Split:
    """`n` examples of `split` drawn without replacement with seed SUBSET_SEED (in index order); 0: all."""
    if n < 0:
        raise UserError(f"--subset {n} must be >= 0 (0: the whole {name} split)")
    if n > len(split):
        raise UserError(f"--subset {n} is larger than the {name} split ({len(split)} examples): "
                        f"use at most {len(split)}, or 0 for the whole split")
    if n == 0 or n == len(split):
        return split
    idx = torch.randperm(len(split), generator=torch.Generator().manual_seed(SUBSET_SEED))[:n].sort().values
    return Split(split.inputs[idx], split.labels[idx])


@dataclass
class SurfaceInfo:
    """What `landscape hessian` needs from a surface file."""

    config: str
    job: dict
    x: np.ndarray
    y: np.ndarray | None
    directions: list[dict]


def read_surface(path: Path) -> SurfaceInfo:
    """Coordinates, job and directions of a surface file, with a one-line error when it is not one."""
    with store.open_surface(path) as f:
        if "config" not in f.attrs or "directions" not in f:
            raise UserError(f"{str(path)!r} has no job config or no directions: compute it with `landscape surface`, "
                            "which stores both")
        text = lambda v: v.decode() if isinstance(v, bytes) else str(v)  # noqa: E731
        directions = [{k: v[...] for k, v in f[f"directions/{a}"].items()} for a in "xy" if a in f["directions"]]
        return SurfaceInfo(text(f.attrs["config"]), json.loads(text(f.attrs.get("job", "{}"))), f["x"][...],
                           f["y"][...] if "y" in f else None, directions)


def hessian_map(surf_file, *, stride: int = 1, subset: int = 512, tol: float = 1e-3, max_iter: int = 100,
                batch_size: int = 512, force: bool = False, threads: int = 0, device: str = "auto",
                progress: bool = True, plot: bool = True, chunk: int = 0, comm=None) -> engine.RunSummary:
    """Compute (or resume) the Hessian map of a surface file on every rank of `comm`.

    Model, θ*, data and directions are rebuilt from the file (its `config` attr and /directions);
    the map covers every `stride`-th point of each axis and is stored in the file's `hessian`
    group with its settings as attrs (see README.md, "Hessian maps")."""
    import yaml

    from .config import build_job
    from .surface import load_inputs, locked_run, on_root

    comm = comm or engine.world()
    path = Path(surf_file)

    def setup():  # the same on every rank
        if not tol > 0 or not math.isfinite(tol):
            raise UserError(f"--tol {tol} must be a positive number, e.g. 1e-3")
        if max_iter < 1:
            raise UserError(f"--max_iter {max_iter} must be at least 1")
        if batch_size < 1:
            raise UserError(f"--batch_size {batch_size} must be at least 1")
        info = on_root(comm, lambda: read_surface(path))
        grid = sub_grid(info.x, info.y, int(stride))
        try:
            job = build_job(yaml.safe_load(info.config) or {}, f"the config stored in {str(path)!r}")
        except yaml.YAMLError:
            raise UserError(f"{str(path)!r} has a damaged config attribute: recompute the surface") from None
        if job.model_file and not Path(job.model_file).is_file():
            raise UserError(f"the surface's checkpoint {job.model_file!r} (from its stored config) is not found from "
                            f"{os.getcwd()!r}: run landscape hessian in the folder the surface job ran in")
        job = dataclasses.replace(job, splits=["train"], threads=int(threads), device=device)
        model, splits, dev = load_inputs(job, comm)
        data = take_subset(splits["train"], int(subset))
        directions = [{k: torch.from_numpy(v) for k, v in d.items()} for d in info.directions[: grid.ndim]]
        if len(directions) < grid.ndim:
            raise UserError(f"{str(path)!r} has {len(directions)} direction(s) for a {grid.ndim}D grid: recompute the surface")
        check_directions(directions, model, job.dir_type, str(path))
        return info, grid, job, model, splits, dev, data, directions

    try:
        info, grid, job, model, splits, dev, data, directions = setup()
    except UserError as exc:
        exc.shared = True  # every rank meets the same error: rank 0 prints it
        raise

    def check_same_inputs():
        want, have = info.job.get("model_fingerprint"), fingerprint(model.state_dict())
        if want and want != have:
            raise UserError(f"θ* from {job.model_file or 'seed ' + str(job.seed)!r} is not the model of the surface in "
                            f"{str(path)!r} (fingerprint {have} != {want}): restore the checkpoint the surface was computed with")
        want = info.job.get("data_fingerprint", {}).get("train")
        if want and want != splits["train"].fingerprint():
            raise UserError(f"the train split of dataset {job.dataset!r} differs from the one in {str(path)!r}: "
                            "use the same data as the surface job")

    on_root(comm, check_same_inputs)
    settings = {
        "stride": int(stride), "subset": int(subset), "subset_size": len(data), "subset_seed": SUBSET_SEED,
        "split": "train", "loss_name": job.loss_name, "tol": float(tol), "max_iter": int(max_iter),
        "batch_size": int(batch_size), "start_seed": START_SEED, "atol": ATOL, "params": "all trainable parameters",
        "hvp": "double backward, float64 sum over batches", "solver": "lanczos, full reorthogonalization",
    }
    evaluator = HessianEvaluator(model, data, directions, dir_type=job.dir_type, loss_name=job.loss_name,
                                 batch_size=batch_size, device=dev, tol=tol, max_iter=max_iter,
                                 memory=memory_budget(dev, ranks_per_device(comm, dev)))
    def prepare():
        return store.prepare_group(path, GROUP, grid, METRICS, settings, mask=MASK, force=force,
                                   attrs={"versions": f"landscape {__version__}, torch {torch.__version__}"})

    def run(done):
        return engine.run(evaluator, grid, path, done, comm=comm, mask=MASK, chunk=chunk, progress=progress,
                          label="hessian")

    try:
        summary = locked_run(comm, path, prepare, run)
    finally:
        evaluator.restore()
    if comm.rank == 0:
        print(f"[landscape] hessian: {summary.text()}", file=sys.stderr)
        if summary.complete:
            import h5py

            with h5py.File(path, "r") as f:
                v = {k: f[f"{GROUP}/{k}"][...] for k in ("lambda_max", "lambda_min", "residual_max", "residual_min")}
            scale = np.fmax(np.abs(v["lambda_max"]), np.abs(v["lambda_min"]))
            slow = int(sum(((v[f"residual_{e}"] > tol * np.abs(v[f"lambda_{e}"]) + ATOL * scale).sum()
                            for e in ("max", "min"))))
            nan = int(np.isnan(v["lambda_max"]).sum())
            if slow or nan:
                print(f"[landscape] hessian: {slow} eigenvalue(s) not converged within --max_iter {max_iter} (see "
                      f"hessian/residual_*), {nan} point(s) with a non-finite loss (NaN)", file=sys.stderr)
            if plot:
                from .plot_hessian import plot_hessian

                figures = plot_hessian(path)
                print(f"[landscape] hessian figures: {path.parent}/ ({len(figures)} files)")
    return summary


def run_hessian_job(args) -> int:
    """`landscape hessian` (argparse namespace from cli.py): exit code 0, or 75 when interrupted."""
    summary = hessian_map(args.surf_file, stride=args.stride, subset=args.subset, tol=args.tol,
                          max_iter=args.max_iter, batch_size=args.batch_size, force=args.force,
                          threads=args.threads, device=args.device, progress=args.progress, plot=args.plot)
    return EXIT_INTERRUPTED if summary.interrupted else EXIT_OK
