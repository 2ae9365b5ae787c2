"""Direction ensembles: N random directions (1D) or planes (2D) from one seed, evaluated as one job.

Member m draws its directions exactly as a single job does (core.directions: x first, then y,
normalized against θ*), from a generator seeded with `member_seed(seed, m)`: member 0 uses `seed`
itself (it is the plain job with that seed), member m > 0 a 63-bit seed derived from (seed, m) by
numpy's SeedSequence. So every member is reproducible alone: `--seed S --member M` draws member M
of the ensemble `--seed S --ensemble N`.

The members' directions are not held at once: the evaluator keeps one member's directions (the θ
writer's usual ndim·|θ| floats on the device) and draws the next member's on the CPU (ndim·|θ|
float32 more, transient) whenever the points it is handed change member; the grid's point order
keeps a member's points together (core.grid.EnsembleGrid).
"""
from __future__ import annotations

import numpy as np
import torch

from .directions import Direction, random_direction


def member_seed(seed: int, member: int) -> int:
    """The seed member `member` of the ensemble with seed `seed` draws its directions from."""
    if member == 0:
        return int(seed)
    state = np.random.SeedSequence([int(seed) & (2**63 - 1), int(member)]).generate_state(1, np.uint64)[0]
    return int(state >> np.uint64(1))


def member_directions(tensors: dict[str, torch.Tensor], *, seed: int, member: int, ndim: int,
                      norms: tuple[str, ...], ignores: tuple[str, ...]) -> list[Direction]:
    """Member `member`'s `ndim` directions over `tensors` (θ*, by name): core.directions'
    `random_directions` with the generator seeded by `member_seed(seed, member)`."""
    generator = torch.Generator().manual_seed(member_seed(seed, member))
    return [random_direction(tensors, generator=generator, norm=norms[i], ignore=ignores[i]) for i in range(ndim)]


class EnsembleEvaluator:
    """An engine.Evaluator over (member, α[, β]) coordinates: runs `inner` (a surface evaluator
    built with member 0's directions) after writing each member's directions, in place, into the
    θ writer's direction tensors. Its metrics are the inner ones under `ensemble/`."""

    PREFIX = "ensemble/"

    def __init__(self, inner, *, seed: int, norms: tuple[str, ...], ignores: tuple[str, ...]):
        self.inner = inner
        self.seed, self.norms, self.ignores = int(seed), norms, ignores
        self.metrics = [self.PREFIX + m for m in inner.metrics]
        self.points_per_call = inner.points_per_call
        self.member = 0

    def load(self, member: int) -> None:
        """The θ writer's directions <- member `member`'s (drawn against θ*, the writer's origin)."""
        if member == self.member:
            return
        theta = self.inner.theta
        drawn = member_directions(dict(zip(theta.names, theta.origin)), seed=self.seed, member=member,
                                  ndim=len(theta.directions), norms=self.norms, ignores=self.ignores)
        for target, d in zip(theta.directions, drawn):
            for tensor, name in zip(target, theta.names):
                tensor.copy_(d[name])
        self.member = member

    def __call__(self, coords: np.ndarray) -> np.ndarray:
        members = coords[:, 0].astype(np.int64)
        out = np.empty((len(coords), len(self.metrics)))
        starts = np.flatnonzero(np.diff(members, prepend=-1))  # runs of one member
        for start, end in zip(starts, [*starts[1:], len(coords)]):
            self.load(int(members[start]))
            out[start:end] = self.inner(coords[start:end, 1:])
        return out

    def restore(self) -> None:
        self.inner.restore()
