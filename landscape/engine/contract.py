"""The one contract between the engine and the work done at a grid point.

The engine hands an evaluator the coordinates of up to `points_per_call` points and writes
the returned rows, one value per name in `metrics`, into the datasets of the same names.
It knows nothing of models, losses or curvature: the loss surface (core.evaluate), the
Hessian map (analysis.hessian) and any later map are evaluators of this one engine.
"""
from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

import numpy as np


@runtime_checkable
class Evaluator(Protocol):
    metrics: Sequence[str]  # dataset names of the returned columns, e.g. ['train/loss', 'train/acc']
    points_per_call: int  # coordinates the engine passes per call (>= 1)

    def __call__(self, coords: np.ndarray) -> np.ndarray:
        """(k, ndim) coordinates (α[, β]) -> (k, len(metrics)) float values; NaN/inf are stored as such."""

    def restore(self) -> None:
        """Put the model back at θ* as it was before the evaluator touched it."""
