"""`landscape info` of a direction ensemble, and its statistics for the figures and the report:
stored in the file once the ensemble is complete, computed from the points done so far before
(analysis.ensemble, numpy only; no pyplot, no torch)."""
from __future__ import annotations

import numpy as np

from ..analysis import ensemble as stats
from ..io import surface_file
from .info import sharpness_lines


def stored(e: surface_file.Ensemble) -> bool:
    """The file holds the statistics of its complete ensemble (written when its run completed, and
    whole: a run stopped while writing them leaves them to be computed here until it is rerun)."""
    return bool(e.mask.all()) and all(f"stats/{s}/{m}/mean" in e.stats for s, d in e.values.items() for m in d)


def ensemble_results(e: surface_file.Ensemble) -> tuple[dict, list[float]]:
    """(statistics by name, ε): the file's when complete, else from the points done so far."""
    given = e.attrs.get("epsilons", e.provenance.config.get("epsilons", "0.1,0.5,1"))  # the job's, until complete
    epsilons = [float(v) for v in (given.split(",") if isinstance(given, str) else np.atleast_1d(given))]
    if stored(e):
        return e.stats, epsilons
    values = {s: {m: np.where(e.mask, v, np.nan) for m, v in d.items()} for s, d in e.values.items()}
    return stats.results(e.x, e.y, values, epsilons), epsilons


def summary_lines(e: surface_file.Ensemble) -> list[str]:
    """`landscape info` lines of an ensemble: members, completion, and per split the loss at the
    centre and the distributions of basin widths and curvature (mean [95% CI], σ, median)."""
    results, epsilons = ensemble_results(e)
    members_done = int(e.mask.all(axis=tuple(range(1, e.mask.ndim))).sum())
    lines = [f"direction ensemble: {e.members} members (seed {e.provenance.seed}), {members_done} complete, "
             f"{e.done:.1%} of {e.mask.size} points; statistics {'stored' if stored(e) else 'from the points done'}"]

    def text(d):
        if d["count"] == 0:
            return "none within the grid"
        return (f"mean {d['mean']:.4g} [95% CI {d['ci_low']:.4g}, {d['ci_high']:.4g}], σ {d['std']:.4g}, "
                f"median {d['q50']:.4g}, n {int(d['count'])}")

    for split in e.values:
        for axis in ("x", "y"):
            w = results.get(f"widths/{split}/{axis}")
            if w is not None:
                for i, eps in enumerate(epsilons):
                    d = stats.distribution(w[:, i, :].ravel())
                    beyond = int(np.isnan(w[:, i, :]).sum())
                    lines.append(f"  {split} basin width along {axis}, ε = {eps:g}: {text(d)}"
                                 + (f" ({beyond} sides beyond the grid or missing)" if beyond else ""))
            radius, rise = results.get(f"rise/{split}/{axis}/radius"), results.get(f"rise/{split}/{axis}/mean")
            if radius is not None and len(radius):
                worst = results[f"rise/{split}/{axis}/max"]
                picks = sorted({len(radius) // 2, len(radius) - 1} - {-1})
                lines.append(f"  {split} rise L(±r) − L(θ*) along {axis}, mean [max] over directions: " + ", ".join(
                    f"r = {radius[i]:g}: {rise[i]:.4g} [{worst[i]:.4g}]" for i in picks))
            c = results.get(f"curvature/{split}/{axis}")
            if c is not None:
                lines.append(f"  {split} curvature d²L/d{'α' if axis == 'x' else 'β'}² at the centre: "
                             f"{text(stats.distribution(c))}")
    return lines


def ensemble_info(path) -> str:
    """`landscape info` of an ensemble file: its grid, members, completion and statistics."""
    e = surface_file.read_ensemble(path)
    lines = [f"{path}: {'2D' if e.y is not None else '1D'} direction ensemble",
             f"  x: {e.x[0]:g} .. {e.x[-1]:g} ({len(e.x)} points)"]
    if e.y is not None:
        lines.append(f"  y: {e.y[0]:g} .. {e.y[-1]:g} ({len(e.y)} points)")
    lines += ["  " + line if not line.startswith("  ") else line for line in summary_lines(e)]
    lines += [f"  {line}" for line in sharpness_lines(path)]
    return "\n".join(lines)
