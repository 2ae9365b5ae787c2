"""Figures of a Hessian map: |λmin/λmax|, λmax and λmin on the surface's (α, β) axes.

Reads only the surface file's `hessian` group, through io.surface_file (never torch). Points not computed yet (mask 0)
and NaN points (non-finite loss) are masked (light grey), never drawn as zeros. A 2D map gives
heat maps, a 1D map curves over α. Files: <stem>_hessian_{ratio,lambda_max,lambda_min}.<fmt>.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.colors import Normalize, TwoSlopeNorm

from ..io.surface_file import read_hessian
from ..options import PlotJob
from .arrays import negative_curvature_ratio
from .common import edges, folder, masked, plt, save_figure

DEFAULT = PlotJob()  # the defaults of `landscape plot`, also those of every figure function


RATIO_LABEL = r"$\max(0,-\lambda_{min})\,/\,\lambda_{max}$"


def reference_ratio(lambda_max, lambda_min) -> np.ndarray:
    """|λmin/λmax|, as the reference tool draws it (see negative_curvature_ratio)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.abs(np.asarray(lambda_min, float) / np.asarray(lambda_max, float))


def plot_hessian(path, out_dir=None, formats=DEFAULT.format, *, dpi: int = DEFAULT.dpi) -> list[Path]:
    """Write the negative-curvature ratio max(0, −λmin)/λmax, the λmax and the λmin figures of
    `path`'s Hessian map into out_dir (default: the file's folder); returns the written paths."""
    path = Path(path)
    m = read_hessian(path)
    formats = formats.split(",") if isinstance(formats, str) else list(formats)
    out_dir = folder(path.parent if out_dir is None else out_dir)
    mask = m.mask
    done = float(mask.mean())
    note = "" if done >= 1 else f" ({math.floor(100 * done) or '<1'}% of map)"
    lmax, lmin = masked(m.values["lambda_max"], mask), masked(m.values["lambda_min"], mask)
    ratio = np.ma.masked_invalid(negative_curvature_ratio(lmax.filled(np.nan), lmin.filled(np.nan)))
    panels = [("ratio", ratio, RATIO_LABEL, "viridis"),
              ("lambda_max", lmax, r"$\lambda_{max}$", "magma"),
              ("lambda_min", lmin, r"$\lambda_{min}$", "RdBu_r")]
    written = []
    for name, z, label, cmap in panels:
        fig, ax = plt.subplots(figsize=(5.2, 4.2) if m.y is not None else (5, 3.6), constrained_layout=True)
        if m.y is None:
            ax.plot(m.x, z.filled(np.nan), ".-", lw=1.5)
            if name == "lambda_min":
                ax.axhline(0.0, color="0.5", lw=0.8)
            ax.set_ylabel(label)
            if m.x_range:
                ax.set_xlim(*m.x_range)
        else:
            data = z.compressed()
            norm = None
            if name == "lambda_min" and data.size:  # white at λ = 0, blue below, red above
                lo, hi = float(data.min()), float(data.max())
                if lo < 0 < hi:
                    norm = TwoSlopeNorm(0.0, lo, hi)
                else:
                    cmap, norm = ("Blues_r", Normalize(lo, 0.0)) if hi <= 0 else ("Reds", Normalize(0.0, hi))
            im = ax.imshow(z, origin="lower", extent=(*edges(m.x), *edges(m.y)), interpolation="nearest",
                           cmap=plt.get_cmap(cmap).with_extremes(bad="0.85"), norm=norm,
                           aspect="equal" if math.isclose(np.ptp(m.x), np.ptp(m.y), rel_tol=1e-6) else "auto")
            fig.colorbar(im, ax=ax, label=label)
            ax.set_ylabel(r"$\beta$")
        ax.set_xlabel(r"$\alpha$")
        ax.set_title(f"Hessian {label}{note}" + ("\n0: no negative curvature; grey: λmax ≤ 0" if name == "ratio" else ""),
                     fontsize="medium")
        save_figure(fig, out_dir, f"{path.stem}_hessian_{name}", formats, dpi, written)
    return written
