"""Statistics of a direction ensemble (numpy only: the figures and `info` use them too).

values: (N, [ny,] nx) per metric, one row per member, NaN where not computed.

- per coordinate, over the members computed there: mean, standard deviation (ddof 1), the
  QUANTILES, min, max and the count;
- basin width of member m along an axis, each side of the centre α = 0: the distance |α| at which
  the loss first exceeds L(θ*) + ε, walking out from the centre, linearly interpolated between
  the two grid points around the crossing; NaN when the loss stays below over the whole side (the
  basin is wider than the grid) or a point on the way is missing. Along a direction d of a
  quadratic loss ½ θᵀHθ (minimum at θ* = 0) the width is √(2ε / dᵀHd) on both sides;
- curvature at the centre: the second difference (L(h) − 2 L(0) + L(−h)) / h² along the axis,
  which is dᵀ∇²L d up to O(h²) (exact for a quadratic);
- the rise L(θ* ± r d) − L(θ*) at each radius r on the grid, its mean over members and both sides
  (the average-case filter-normalized sharpness of the paper's figures) and its maximum;
- distributions of widths and curvatures over members: mean with its 95% confidence interval
  (Student's t, n − 1 degrees of freedom), standard deviation and quantiles.
In 2D the widths and curvatures are taken along both axes through the centre (the β = 0 row and
the α = 0 column of each member's plane).
"""
from __future__ import annotations

import contextlib
import math
import warnings

import numpy as np

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
DEFINITIONS = ("per coordinate over members: mean, std (ddof 1), min, max, quantiles q05..q95, count; widths: |alpha| "
               "where the loss first exceeds L(theta*) + epsilon walking out from alpha = 0, linearly interpolated, "
               "[left, right], NaN beyond the grid; curvature: (L(h) - 2 L(0) + L(-h)) / h^2 at alpha = 0; rise: "
               "L(+-r) - L(0) at each radius r, mean over members and sides, and max")
CONFIDENCE = 0.95


def per_coordinate(values: np.ndarray) -> dict[str, np.ndarray]:
    """Statistics over axis 0 (members) of the computed (finite) values at each coordinate."""
    v = np.where(np.isfinite(values), values, np.nan)
    count = np.isfinite(v).sum(axis=0)
    out = {"count": count.astype(np.int64)}
    with _quiet():
        out["mean"] = np.nanmean(v, axis=0)
        out["std"] = np.nanstd(v, axis=0, ddof=1)  # NaN where fewer than 2 members are computed
        out["min"], out["max"] = np.nanmin(v, axis=0), np.nanmax(v, axis=0)
        for q in QUANTILES:
            out[quantile_name(q)] = np.nanquantile(v, q, axis=0)
    return out


def quantile_name(q: float) -> str:
    return f"q{round(q * 100):02d}"


def centre_index(coords: np.ndarray) -> int | None:
    """Index of α = 0 on the axis (within 1e-9 of the spacing), None when 0 is not a grid point."""
    if len(coords) < 3:
        return None
    i = int(np.argmin(np.abs(coords)))
    return i if abs(coords[i]) <= 1e-9 * (coords[-1] - coords[0]) and 0 < i < len(coords) - 1 else None


def side_width(coords: np.ndarray, curve: np.ndarray, centre: int, level: float, step: int) -> float:
    """|α| where `curve` first exceeds `level` walking from `centre` by `step` (±1), interpolated."""
    i = centre
    while 0 <= i + step < len(coords):
        j = i + step
        if not np.isfinite(curve[j]):
            return math.nan
        if curve[j] > level:
            t = (level - curve[i]) / (curve[j] - curve[i])
            return float(abs(coords[i] + t * (coords[j] - coords[i])))
        i = j
    return math.nan


def widths(coords: np.ndarray, curves: np.ndarray, epsilons) -> np.ndarray:
    """(N, len(epsilons), 2) basin widths [left, right] of each member's curve (N, len(coords))."""
    out = np.full((len(curves), len(epsilons), 2), np.nan)
    c = centre_index(coords)
    if c is None:
        return out
    for m, curve in enumerate(curves):
        if not np.isfinite(curve[c]):
            continue
        for e, eps in enumerate(epsilons):
            out[m, e] = [side_width(coords, curve, c, curve[c] + eps, -1), side_width(coords, curve, c, curve[c] + eps, 1)]
    return out


def curvatures(coords: np.ndarray, curves: np.ndarray) -> np.ndarray:
    """(N,) second differences at the centre (uniform spacing), NaN when 0 or a neighbour is missing."""
    c = centre_index(coords)
    if c is None:
        return np.full(len(curves), np.nan)
    h = coords[c + 1] - coords[c]
    return (curves[:, c + 1] - 2 * curves[:, c] + curves[:, c - 1]) / h**2


def rises(coords: np.ndarray, curves: np.ndarray) -> dict[str, np.ndarray]:
    """The filter-normalized sharpness of the paper's figures, averaged over the directions: at each
    radius r on both sides of the centre, the rise L(±r) − L(0) — its mean over members and both
    sides (the average case) and its maximum (the worst sampled direction). {} without a centre."""
    c = centre_index(coords)
    if c is None:
        return {}
    n = min(c, len(coords) - 1 - c)
    r = np.arange(1, n + 1)
    both = np.concatenate([curves[:, c + r], curves[:, c - r]]) - np.concatenate([curves[:, c], curves[:, c]])[:, None]
    with _quiet():
        return {"radius": np.abs(coords[c + r] - coords[c]), "mean": np.nanmean(both, axis=0),
                "max": np.nanmax(both, axis=0)}


def axis_curves(x: np.ndarray, y: np.ndarray | None, values: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{axis: (coordinates, (N, n) curves through the centre)}: x alone in 1D; x on the β = 0 row and
    y on the α = 0 column in 2D (an axis is left out when 0 is not on the other one)."""
    if y is None:
        return {"x": (x, values)}
    out = {}
    iy, ix = centre_index(y), centre_index(x)
    if iy is not None:
        out["x"] = (x, values[:, iy, :])
    if ix is not None:
        out["y"] = (y, values[:, :, ix])
    return out


def distribution(samples: np.ndarray) -> dict[str, float]:
    """Mean with its CONFIDENCE interval (Student's t), std, quantiles and count of the finite samples."""
    s = np.asarray(samples, dtype=float)
    s = s[np.isfinite(s)]
    n = len(s)
    out = {"count": float(n), "mean": math.nan, "ci_low": math.nan, "ci_high": math.nan, "std": math.nan,
           **{quantile_name(q): math.nan for q in QUANTILES}}
    if n == 0:
        return out
    out["mean"] = float(s.mean())
    out.update({quantile_name(q): float(np.quantile(s, q)) for q in QUANTILES})
    if n > 1:
        from scipy.stats import t

        out["std"] = float(s.std(ddof=1))
        half = float(t.ppf(0.5 + CONFIDENCE / 2, n - 1)) * out["std"] / math.sqrt(n)
        out["ci_low"], out["ci_high"] = out["mean"] - half, out["mean"] + half
    return out


@contextlib.contextmanager
def _quiet():
    """numpy's warnings for all-NaN slices off (a coordinate no member reached yet)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def results(x: np.ndarray, y: np.ndarray | None, values: dict, epsilons) -> dict[str, np.ndarray]:
    """Every statistic of an ensemble by its name under /ensemble: stats/<split>/<metric>/<stat>,
    widths/<split>/<axis> (N, len(epsilons), 2), curvature/<split>/<axis> (N,) and
    rise/<split>/<axis>/{radius,mean,max} of the loss."""
    out = {}
    for split, metrics in values.items():
        for metric, v in metrics.items():
            for stat, a in per_coordinate(v).items():
                out[f"stats/{split}/{metric}/{stat}"] = a
        if "loss" in metrics:
            for axis, (coords, curves) in axis_curves(x, y, metrics["loss"]).items():
                out[f"widths/{split}/{axis}"] = widths(coords, curves, epsilons)
                out[f"curvature/{split}/{axis}"] = curvatures(coords, curves)
                out.update({f"rise/{split}/{axis}/{k}": v for k, v in rises(coords, curves).items()})
    return out
