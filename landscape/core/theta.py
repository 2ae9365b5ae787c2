"""The θ writer: θ = θ* + Σ_i c_i d_i written in place into the model's own tensors.

Every evaluator moves the model through this one class. A point is written by copying θ*
back and adding c_i · d_i with fused multi-tensor ops, so nothing is allocated per point and
no error accumulates from point to point; perturbed BN running variances are clamped at 0.
"""
from __future__ import annotations

import torch
from torch import nn

from .directions import Direction, target_tensors


class ThetaWriter:
    """The tensors a direction spans (by `dir_type`), θ* and the directions, on the model's device."""

    def __init__(self, model: nn.Module, directions: list[Direction], dir_type: str = "weights"):
        named = target_tensors(model, dir_type)
        self.names = list(named)
        self.targets = [t.data if isinstance(t, nn.Parameter) else t for t in named.values()]
        self.origin = [t.detach().clone() for t in self.targets]  # clone keeps each tensor's memory format
        self.directions = [[torch.empty_like(t).copy_(d[n]) for n, t in zip(self.names, self.targets)]
                           for d in directions]
        self.whole = self.part(range(len(self.targets)))

    def part(self, index) -> tuple[list, list, list]:
        """θ*, the directions and the positions of running variances (a perturbed one must stay
        >= 0) of the targets numbered `index`, gathered once for `write_into`."""
        index = list(index)
        return ([self.origin[i] for i in index], [[d[i] for i in index] for d in self.directions],
                [p for p, i in enumerate(index) if self.names[i].endswith("running_var")])

    def varying(self) -> list[int]:
        """Targets that some direction moves (with --xignore biasbn, not the biases and BN)."""
        return [i for i in range(len(self.targets)) if any(bool(d[i].any()) for d in self.directions)] or [0]

    @staticmethod
    @torch.no_grad()
    def write_into(tensors: list[torch.Tensor], coord, part) -> None:
        """tensors <- θ* + Σ_i coord_i · d_i (running variances clamped at 0), in place; `part`
        from `part()` for the same targets."""
        origin, directions, variances = part
        torch._foreach_copy_(tensors, origin)
        for d, a in zip(directions, coord):
            if a != 0.0:
                torch._foreach_add_(tensors, d, alpha=float(a))
        for p in variances:
            tensors[p].clamp_(min=0.0)

    def write(self, coord) -> None:
        """The model's own tensors <- θ* + Σ_i coord_i · d_i."""
        self.write_into(self.targets, coord, self.whole)

    def restore(self) -> None:
        """The model's tensors back at θ*."""
        self.write(())
