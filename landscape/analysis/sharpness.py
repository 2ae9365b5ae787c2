"""Worst-case sharpness at θ*, batch by batch: the gradient-using evaluator of the engine.

The examples (the train subset, in its fixed order) are cut into batches of m (m = 0: one batch of
all); a grid "point" is one batch B, so the engine spreads batches over ranks, resumes and stops
as for any map. For each batch, with L_B the mean loss over B and S the set of perturbations:

    rise_B = max_{δ ∈ S} L_B(θ* + δ) − L_B(θ*)

found by `steps` steps of projected gradient ascent from a random start in S (seeded by the batch
index; a start at θ* would not move from a minimum, where ∇L = 0), keeping the largest loss met.
The measure is the mean of rise_B over batches: with m < n this is m-sharpness (Foret et al.
2021, SAM; Andriushchenko & Flammarion 2022), with m = 0 the sharpness of the whole subset.

- `sam`:      S = {‖δ‖₂ ≤ ρ}; step δ ← ρ·(δ + ρ ĝ)/‖δ + ρ ĝ‖ with ĝ = g/‖g‖ (g = ∇L_B(θ* + δ)).
- `adaptive`: S = {‖δ ⊘ |θ*|‖₂ ≤ ρ} (Kwon et al. 2021, ASAM; Andriushchenko et al. 2023): the `sam`
              step in the coordinates z = δ ⊘ |θ*| (a zero weight stays unperturbed).
- `keskar`:   S = {|δ_i| ≤ ρ (|θ*_i| + 1)} (Keskar et al. 2017); step δ ← clip(δ + ¼ box ⊙ sign g);
              reported as Keskar's 100 · rise / (1 + L_B(θ*)).

On a quadratic L_B(θ) = (θ − θ*)ᵀ A_B (θ − θ*), `sam` converges to ρ² λmax(A_B) (the ascent is
a power iteration on A_B). Perturbations span the trainable parameters of the surface's selection
(--params / --exclude); BN statistics and other buffers stay at θ*. The average case over random
directions is the ensemble's (`--ensemble N`): its mean rise at radius r (analysis.ensemble).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..core.models import Snapshot
from ..core.selection import Selection
from ..core.tasks import UserMetrics, make_task
from ..errors import UserError
from .hessian import hessian_parameters

MEASURES = ("sam", "adaptive", "keskar")
VALUES = ("rise", "loss", "loss_max", "radius")  # per batch; radius: ‖δ‖₂ of the worst δ found
START_SEED = 0


class SharpnessEvaluator:
    """Per batch index b (the points of a 1D grid 0..B−1): rise_b, L_b(θ*), the largest L_b found and
    the norm of its δ, in the order of `metrics` (an engine.Evaluator)."""

    points_per_call = 1

    def __init__(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, *, measure: str, rho: float,
                 m: int, steps: int, task: str = "classification", loss_name: str = "crossentropy",
                 select: Selection | None = None, device="cpu", group: str = "sharpness"):
        if measure not in MEASURES:
            raise UserError(f"unknown sharpness measure {measure!r}: choose one of {', '.join(MEASURES)}")
        self.task = make_task(task, loss_name)
        if isinstance(self.task, UserMetrics):
            raise UserError(f"sharpness needs a loss to climb: --task {task} gives metrics only; compute it on a "
                            "surface of a built-in task (classification, regression, causal_lm)")
        self.snapshot = Snapshot(model)
        self.model = model.to(device).eval()
        self.inputs, self.targets = inputs.to(device), targets.to(device)
        self.params = hessian_parameters(self.model, select)
        self.origin = [p.detach().clone() for p in self.params]
        self.measure, self.rho, self.m, self.steps = measure, float(rho), int(m), int(steps)
        self.metrics = [f"{group}/{v}" for v in VALUES]

    def batches(self) -> int:
        n = len(self.targets)
        return 1 if self.m <= 0 else -(-n // self.m)

    def batch_loss(self, b: int, grad: bool) -> tuple[float, list[torch.Tensor] | None]:
        """L_b at the parameters as they are (mean over the batch's count), and its gradient."""
        lo, hi = (0, len(self.targets)) if self.m <= 0 else (b * self.m, min((b + 1) * self.m, len(self.targets)))
        x, y = self.inputs[lo:hi], self.targets[lo:hi]
        if x.is_floating_point():
            x = x.to(self.params[0].dtype)
        with torch.set_grad_enabled(grad):
            loss = self.task.loss(self.task.output(self.model(x)), y) / self.task.count(y)
            g = list(torch.autograd.grad(loss, self.params, allow_unused=True, materialize_grads=True)) if grad else None
        return float(loss.detach().double()), g

    @torch.no_grad()
    def write(self, delta: list[torch.Tensor]) -> None:
        for p, o, d in zip(self.params, self.origin, delta):
            p.copy_(o + d)

    def scale(self) -> list[torch.Tensor]:
        """Per tensor, the scale of the set S: 1 (sam), |θ*| (adaptive), ρ (|θ*| + 1) (keskar)."""
        if self.measure == "sam":
            return [torch.ones_like(o) for o in self.origin]
        if self.measure == "adaptive":
            return [o.abs() for o in self.origin]
        return [self.rho * (o.abs() + 1) for o in self.origin]

    def climb(self, b: int) -> tuple[float, float, float, float]:
        """(rise, L_b(θ*), max L_b found, ‖δ‖ of that δ) for batch b."""
        base, _ = self.batch_loss(b, grad=False)
        w = self.scale()
        gen = torch.Generator().manual_seed(START_SEED + b)
        u = [torch.randn(o.shape, generator=gen, dtype=torch.float64).to(o.device) for o in self.origin]
        if self.measure == "keskar":  # uniform in the box
            z = [(torch.rand(o.shape, generator=gen, dtype=torch.float64).to(o.device) * 2 - 1) for o in self.origin]
        else:  # on the sphere of radius ρ (in the scaled coordinates)
            norm = torch.sqrt(sum((a * a).sum() for a in u))
            z = [self.rho * a / norm for a in u]
        best, best_norm = -np.inf, 0.0
        for step in range(self.steps + 1):
            delta = [(zi * wi).to(o.dtype) for zi, wi, o in zip(z, w, self.origin)]
            self.write(delta)
            loss, g = self.batch_loss(b, grad=step < self.steps)
            if loss > best:
                best, best_norm = loss, float(torch.sqrt(sum((d.double() ** 2).sum() for d in delta)))
            if g is None:
                break
            gz = [gi.double() * wi for gi, wi in zip(g, w)]  # the gradient in the scaled coordinates
            if self.measure == "keskar":
                z = [torch.clamp(zi + 0.25 * torch.sign(gi), -1, 1) for zi, gi in zip(z, gz)]
            else:
                gnorm = torch.sqrt(sum((a * a).sum() for a in gz))
                if not gnorm > 0:
                    break
                z = [zi + self.rho * gi / gnorm for zi, gi in zip(z, gz)]
                znorm = torch.sqrt(sum((a * a).sum() for a in z))
                z = [self.rho * zi / znorm for zi in z]
        self.write([torch.zeros_like(o) for o in self.origin])
        rise = best - base
        if self.measure == "keskar":
            rise = 100 * rise / (1 + base)
        return rise, base, best, best_norm

    def __call__(self, coords: np.ndarray) -> np.ndarray:
        return np.array([self.climb(int(round(c[0]))) for c in coords], dtype=float).reshape(len(coords), len(VALUES))

    def restore(self) -> None:
        self.write([torch.zeros_like(o) for o in self.origin])
        self.snapshot.restore()
