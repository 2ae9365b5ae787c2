"""Grid coordinates, point order and chunking.

A 2D grid has shape (ny, nx) and axis order (y, x); point p of the flat index
is (iy, ix) = divmod(p, nx). A 1D grid has shape (nx,).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import UserError


@dataclass(frozen=True)
class Axis:
    """Inclusive range min..max with num points (the reference tool's `min:max:num`)."""

    min: float
    max: float
    num: int

    @classmethod
    def parse(cls, spec: str, name: str = "x") -> Axis:
        parts = str(spec).split(":")
        if len(parts) != 3:
            raise UserError(f"--{name}={spec!r} is not a grid spec: write min:max:num, e.g. --{name}=-1:1:51")
        try:
            lo, hi = float(parts[0]), float(parts[1])
        except ValueError:
            raise UserError(f"--{name}={spec!r}: min and max must be numbers, e.g. --{name}=-1:1:51") from None
        try:
            num = int(parts[2])
        except ValueError:
            raise UserError(f"--{name}={spec!r}: num must be a whole number, e.g. --{name}=-1:1:51") from None
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise UserError(f"--{name}={spec!r}: min and max must be finite numbers")
        if num < 1:
            raise UserError(f"--{name}={spec!r}: num must be at least 1, e.g. --{name}=-1:1:51")
        if num > 1 and not lo < hi:
            raise UserError(f"--{name}={spec!r}: min must be smaller than max, e.g. --{name}=-1:1:51")
        return cls(lo, hi, num)

    def coordinates(self) -> np.ndarray:
        return np.linspace(self.min, self.max, self.num)


@dataclass(frozen=True)
class Grid:
    x: np.ndarray
    y: np.ndarray | None = None  # None: a 1D grid

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.x),) if self.y is None else (len(self.y), len(self.x))

    @property
    def ndim(self) -> int:
        return 1 if self.y is None else 2

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def coords(self, points: np.ndarray) -> np.ndarray:
        """(k, ndim) array of (alpha[, beta]) for flat point indices."""
        points = np.asarray(points, dtype=np.int64)
        if self.y is None:
            return self.x[points][:, None]
        iy, ix = np.divmod(points, len(self.x))
        return np.stack([self.x[ix], self.y[iy]], axis=1)

    def coarse_to_fine(self) -> np.ndarray:
        """Every flat index once: the points on a stride-2^k sub-grid first (largest k first),
        so any prefix of the order covers the grid uniformly at a lower resolution."""
        return np.argsort(-self.levels(), kind="stable").astype(np.int64)

    def levels(self) -> np.ndarray:
        """Per flat index, the largest k such that the point lies on the stride-2^k sub-grid (0: on none)."""
        idx = [np.arange(n) for n in self.shape]
        level = np.full(self.shape, 0, dtype=np.int64)
        longest = max(self.shape)
        k = 0
        while (1 << (k + 1)) < longest:
            k += 1
        for s in range(k, 0, -1):
            stride = 1 << s
            on = np.ones(self.shape, dtype=bool)
            for axis, i in enumerate(idx):
                shape = [1] * len(self.shape)
                shape[axis] = -1
                on &= (i % stride == 0).reshape(shape)
            level[on & (level == 0)] = s
        return level.ravel()


@dataclass(frozen=True)
class EnsembleGrid:
    """`members` copies of one grid, one per member of a direction ensemble: shape (members,
    *base.shape); flat point p is member p // base.size at the base grid's point p % base.size,
    and its coordinates are (member, α[, β])."""

    members: int
    base: Grid

    @property
    def x(self) -> np.ndarray:
        return self.base.x

    @property
    def y(self) -> np.ndarray | None:
        return self.base.y

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.members, *self.base.shape)

    @property
    def ndim(self) -> int:
        return self.base.ndim

    @property
    def size(self) -> int:
        return self.members * self.base.size

    def coords(self, points: np.ndarray) -> np.ndarray:
        """(k, 1 + ndim) array of (member, alpha[, beta]) for flat point indices."""
        member, p = np.divmod(np.asarray(points, dtype=np.int64), self.base.size)
        return np.concatenate([member[:, None].astype(float), self.base.coords(p)], axis=1)

    def coarse_to_fine(self) -> np.ndarray:
        """The base grid's coarse-to-fine levels, each over every member in turn: a partial file
        holds every member at a lower resolution, and consecutive points share a member (its
        directions are drawn once per run of points, see core.ensemble)."""
        return np.argsort(-np.tile(self.base.levels(), self.members), kind="stable").astype(np.int64)


def chunk_bounds(todo: int, ranks: int, requested: int = 0) -> np.ndarray:
    """Start offsets of the chunks (plus the end) over `todo` points.

    `requested` > 0: fixed-size chunks. Otherwise guided self-scheduling: each chunk takes
    1/(4·ranks) of the points still left, at most 16 and at least 1, so chunks are large
    while there is much to do and single points at the end, where a slow rank's last
    chunk would otherwise keep the others waiting."""
    if requested > 0:
        return np.append(np.arange(0, todo, requested), todo)
    bounds, start = [0], 0
    while start < todo:
        start += min(16, max(1, -(-(todo - start) // (4 * max(1, ranks)))))
        bounds.append(min(start, todo))
    return np.array(bounds, dtype=np.int64)
