"""The θ writer: θ = θ* + Σ_i c_i d_i written in place into the model's own tensors.

Every evaluator moves the model through this one class. A point is written by copying θ*
back and adding c_i · d_i with fused multi-tensor ops, so nothing is allocated per point and
no error accumulates from point to point; perturbed BN running variances are clamped at 0.
Only the tensors of a parameter selection (core.selection) are written; the others are never
touched.

Low-precision weights (bf16/fp16 tensors): θ* is kept in the tensor's own dtype (α = 0 writes
exactly θ*) and the directions in float32; each tensor is computed in float32, θ*₃₂ + Σ c_i d_i,
in one scratch buffer (the size of the largest such tensor) and rounded once into the tensor:
|θ(c) − (θ* + Σ c_i d_i)| is one rounding of the tensor's dtype per element. Memory: θ* (2 bytes
a weight) plus 4 bytes a weight per direction, beside the model's own 2.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .directions import Direction, target_tensors
from .selection import Selection

LOW_PRECISION = (torch.bfloat16, torch.float16)


@dataclass(frozen=True)
class Part:
    """θ* and the directions of some targets, gathered once for `ThetaWriter.write_into`."""

    origin: list  # θ* of each target
    directions: list  # per direction, its tensor of each target
    variances: list  # positions of running variances (a perturbed one must stay >= 0)
    low: list  # positions of low-precision targets (computed in float32, rounded once)
    scratch: torch.Tensor | None  # float32, the size of the largest low-precision target


class ThetaWriter:
    """The tensors a direction spans (by `dir_type` and `select`), θ* and the directions, on the
    model's device."""

    def __init__(self, model: nn.Module, directions: list[Direction], dir_type: str = "weights",
                 select: Selection | None = None):
        named = target_tensors(model, dir_type, select)
        self.names = list(named)
        self.targets = [t.data if isinstance(t, nn.Parameter) else t for t in named.values()]
        self.origin = [t.detach().clone() for t in self.targets]  # clone keeps each tensor's memory format
        self.directions = [[torch.empty_like(t, dtype=torch.float32 if t.dtype in LOW_PRECISION else t.dtype)
                            .copy_(d[n]) for n, t in zip(self.names, self.targets)] for d in directions]
        self.whole = self.part(range(len(self.targets)))

    def part(self, index) -> Part:
        """θ*, the directions, the running variances and the low-precision targets among the
        targets numbered `index`, gathered once for `write_into`."""
        index = list(index)
        low = [p for p, i in enumerate(index) if self.targets[i].dtype in LOW_PRECISION]
        size = max((self.targets[index[p]].numel() for p in low), default=0)
        scratch = torch.empty(size, dtype=torch.float32, device=self.targets[index[low[0]]].device) if low else None
        return Part([self.origin[i] for i in index], [[d[i] for i in index] for d in self.directions],
                    [p for p, i in enumerate(index) if self.names[i].endswith("running_var")], low, scratch)

    def varying(self) -> list[int]:
        """Targets that some direction moves (with --xignore biasbn, not the biases and BN)."""
        return [i for i in range(len(self.targets)) if any(bool(d[i].any()) for d in self.directions)] or [0]

    @staticmethod
    @torch.no_grad()
    def write_into(tensors: list[torch.Tensor], coord, part: Part) -> None:
        """tensors <- θ* + Σ_i coord_i · d_i (running variances clamped at 0), in place; `part`
        from `part()` for the same targets."""
        coord = [float(a) for a in coord]
        if part.low:
            low = set(part.low)
            high = [p for p in range(len(tensors)) if p not in low]
            pick = lambda items: [items[p] for p in high]  # noqa: E731
            fast = (pick(tensors), pick(part.origin), [pick(d) for d in part.directions])
        else:
            fast = (tensors, part.origin, part.directions)
        if fast[0]:
            torch._foreach_copy_(fast[0], fast[1])
            for d, a in zip(fast[2], coord):
                if a != 0.0:
                    torch._foreach_add_(fast[0], d, alpha=a)
        for p in part.low:  # float32 per tensor, rounded once into the tensor's dtype
            acc = part.scratch[: tensors[p].numel()].view(tensors[p].shape).copy_(part.origin[p])
            for d, a in zip(part.directions, coord):
                if a != 0.0:
                    acc.add_(d[p], alpha=a)
            tensors[p].copy_(acc)
        for p in part.variances:
            tensors[p].clamp_(min=0.0)

    def write(self, coord) -> None:
        """The model's own tensors <- θ* + Σ_i coord_i · d_i."""
        self.write_into(self.targets, coord, self.whole)

    def restore(self) -> None:
        """The model's tensors back at θ*."""
        self.write(())
