"""Figures of the curvature suite: the spectral density at a point, the trace map and the top-k map.

Reads only the surface file (io.surface_file; never torch).

- `<stem>_spectrum_<label>.<fmt>`: the SLQ density φ(t) (integrates to 1; n·φ is the
  eigenvalue count per unit t) on a symmetric-log eigenvalue axis (linear within ±linthresh,
  logarithmic beyond, so the bulk near 0 and the outliers show at once; the linear range is the
  Gaussians' width σ, the density's resolution) and a log density axis;
  the top-k Ritz values marked, the trace and its interval in the title.
- `<stem>_hessian_trace.<fmt>`: tr H over (α, β) (curve with its 95% interval for a 1D map).
- `<stem>_hessian_topk.<fmt>`: λ_1 .. λ_k over (α, β), one panel each (curves for a 1D map).
Points not computed yet, and NaN points, are masked (light grey).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..io.surface_file import TOPK_MAP, TRACE_MAP, read_map, read_spectra
from ..options import PlotJob
from .common import edges, folder, masked, plt, save_figure

DEFAULT = PlotJob()


def linthresh(values: np.ndarray, sigma: float | None = None) -> float:
    """The symmetric-log axis's linear range: the density's smoothing width σ (it resolves nothing
    finer), else 1e-3 of the largest |eigenvalue|; at least 1e-12."""
    top = float(np.nanmax(np.abs(values))) if np.isfinite(values).any() else 1.0
    return max(float(sigma) if sigma else 1e-3 * top, 1e-12)


def decade_ticks(grid: np.ndarray, lin: float) -> list[float]:
    """0 and ±10^k for the decades at or above the linear range that the grid reaches."""
    lo, hi = float(np.nanmin(grid)), float(np.nanmax(grid))
    decades = [10.0**k for k in range(math.ceil(math.log10(lin)), math.ceil(math.log10(max(abs(lo), abs(hi), lin))) + 1)]
    return sorted([-d for d in decades if -d >= lo] + [0.0] + [d for d in decades if d <= hi])


def plot_spectrum(path, out_dir=None, formats=("png",), *, dpi: int = DEFAULT.dpi, labels=None) -> list[Path]:
    """One density figure per stored spectrum (or those in `labels`); returns the written paths."""
    path = Path(path)
    spectra = read_spectra(path)
    formats = formats.split(",") if isinstance(formats, str) else list(formats)
    out_dir = folder(path.parent if out_dir is None else out_dir)
    written = []
    for label, s in spectra.items():
        if labels is not None and label not in labels:
            continue
        v, a = s.values, s.settings
        grid, dens = v["density/grid"], v["density/values"]
        fig, ax = plt.subplots(figsize=(6, 3.8), constrained_layout=True)
        floor = 1e-6 * float(dens.max()) if dens.size else 1e-12
        ax.plot(grid, np.maximum(dens, floor), lw=1.3, color="C0", label="SLQ density")
        lin = linthresh(grid, a.get("sigma_abs"))
        ax.set_xscale("symlog", linthresh=lin)
        ax.set_xticks(decade_ticks(grid, lin))
        ax.set_yscale("log")
        ax.set_ylim(floor, None)
        for i, lam in enumerate(v["eigenvalues"]):
            if np.isfinite(lam):
                ax.axvline(lam, color="C3", lw=0.8, ls="--", label="top-k eigenvalues" if i == 0 else None)
        ax.axvline(0.0, color="0.6", lw=0.6)
        ax.set_xlabel("eigenvalue (symmetric log)")
        ax.set_ylabel(r"density $\phi(t)$")
        ci = v["trace_ci"]
        ax.set_title(f"{a.get('curvature', 'hessian')} spectrum at {label}: tr = {float(v['trace']):.4g} "
                     f"[{ci[0]:.4g}, {ci[1]:.4g}]\n{a.get('n_params', '?'):,} parameters, "
                     f"{a.get('slq_runs')}×{a.get('slq_steps')} SLQ steps, σ = {a.get('sigma')} of the range",
                     fontsize="medium")
        ax.legend(fontsize="small", loc="upper left")
        save_figure(fig, out_dir, f"{path.stem}_spectrum_{label}", formats, dpi, written)
    return written


def _panel(fig, ax, m, z, label, cmap="magma"):
    if m.y is None:
        ax.plot(m.x, z.filled(np.nan), ".-", lw=1.5)
        ax.set_ylabel(label)
        if m.x_range:
            ax.set_xlim(*m.x_range)
    else:
        im = ax.imshow(z, origin="lower", extent=(*edges(m.x), *edges(m.y)), interpolation="nearest",
                       cmap=plt.get_cmap(cmap).with_extremes(bad="0.85"),
                       aspect="equal" if math.isclose(np.ptp(m.x), np.ptp(m.y), rel_tol=1e-6) else "auto")
        fig.colorbar(im, ax=ax, label=label)
        ax.set_ylabel(r"$\beta$")
    ax.set_xlabel(r"$\alpha$")


def plot_map(path, kind: str = "trace", out_dir=None, formats=("png",), *, dpi: int = DEFAULT.dpi) -> list[Path]:
    """The trace map (`kind='trace'`) or the top-k map (`'topk'`) of `path`; returns the written paths."""
    if kind not in ("trace", "topk"):
        raise UserError(f"unknown map {kind!r}: choose trace or topk")
    path = Path(path)
    m = read_map(path, TRACE_MAP if kind == "trace" else TOPK_MAP)
    formats = formats.split(",") if isinstance(formats, str) else list(formats)
    out_dir = folder(path.parent if out_dir is None else out_dir)
    done = float(m.mask.mean())
    note = "" if done >= 1 else f" ({math.floor(100 * done) or '<1'}% of map)"
    curvature = m.settings.get("curvature", "hessian")
    written = []
    if kind == "trace":
        fig, ax = plt.subplots(figsize=(5.2, 4.2) if m.y is not None else (5, 3.6), constrained_layout=True)
        z = masked(m.values["trace"], m.mask)
        _panel(fig, ax, m, z, "trace")
        if m.y is None:
            lo, hi = masked(m.values["ci_low"], m.mask), masked(m.values["ci_high"], m.mask)
            ax.fill_between(m.x, lo.filled(np.nan), hi.filled(np.nan), alpha=0.3, label="95% interval")
            ax.legend(fontsize="small")
        ax.set_title(f"tr {'G' if curvature == 'ggn' else 'H'} ({m.settings.get('estimator')}, "
                     f"{m.settings.get('samples')} products){note}", fontsize="medium")
        save_figure(fig, out_dir, f"{path.stem}_{TRACE_MAP}", formats, dpi, written)
        return written
    k = int(m.settings["k"])
    fig, axes = plt.subplots(1, k, figsize=((4.4 if m.y is not None else 3.8) * k, 3.8), constrained_layout=True,
                             squeeze=False)
    for i, ax in enumerate(axes[0], start=1):
        _panel(fig, ax, m, masked(m.values[f"lambda_{i}"], m.mask), rf"$\lambda_{i}$")
        ax.set_title(rf"$\lambda_{i}${note}", fontsize="medium")
    save_figure(fig, out_dir, f"{path.stem}_{TOPK_MAP}", formats, dpi, written)
    return written
