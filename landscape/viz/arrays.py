"""What the static figures and the report compute from a surface file's arrays (numpy only: no
pyplot, so the report can use it too)."""
from __future__ import annotations

import numpy as np


def stride(mask: np.ndarray, min_done: float = 0.9) -> int:
    """Smallest power-of-2 step whose sub-grid is at least `min_done` computed (1 if none)."""
    s = 1
    while all(n > 2 * s for n in mask.shape):
        if mask[(slice(None, None, s),) * mask.ndim].mean() >= min_done:
            return s
        s *= 2
    return s if mask[(slice(None, None, s),) * mask.ndim].mean() >= min_done else 1


def negative_curvature_ratio(lambda_max, lambda_min) -> np.ndarray:
    """max(0, −λmin)/λmax: 0 where the Hessian has no negative eigenvalue (convex), 1 where the
    most negative curvature is as strong as the most positive; NaN where λmax ≤ 0 (no positive
    curvature: the ratio says nothing). The reference tool's |λmin/λmax| reads a positive λmin as
    if it were negative curvature and exceeds 1 at concave points; it is `reference_ratio`."""
    lambda_max, lambda_min = np.asarray(lambda_max, float), np.asarray(lambda_min, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(lambda_max > 0, np.maximum(0.0, -lambda_min) / lambda_max, np.nan)
