"""Figures of a Hessian map: |λmin/λmax|, λmax and λmin on the surface's (α, β) axes.

Reads only the surface file's `hessian` group (never torch). Points not computed yet (mask 0)
and NaN points (non-finite loss) are masked (light grey), never drawn as zeros. A 2D map gives
heat maps, a 1D map curves over α. Files: <stem>_hessian_{ratio,lambda_max,lambda_min}.<fmt>.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

os.environ.setdefault("HDF5_USE_FILE_LOCKING", "FALSE")  # read while a job writes (see store.py)

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import Normalize, TwoSlopeNorm  # noqa: E402

from .errors import UserError  # noqa: E402
from .plot import open_surface, save_figure  # noqa: E402

GROUP = "hessian"


def read_map(path: Path) -> dict:
    """x, y (None in 1D), lambda_max, lambda_min, mask (bool) of the file's Hessian map, and the
    surface's axis ranges (x_range, y_range)."""
    with open_surface(path) as f:
        if GROUP not in f or "mask" not in f[GROUP]:
            raise UserError(f"{str(path)!r} has no Hessian map: compute it with `landscape hessian {path}`")
        g = f[GROUP]
        m = {k: g[k][...] for k in ("x", "lambda_max", "lambda_min")}
        m["y"] = g["y"][...] if "y" in g else None
        m["mask"] = g["mask"][...].astype(bool)
        m["x_range"] = (float(f["x"][0]), float(f["x"][-1])) if "x" in f else None
        m["y_range"] = (float(f["y"][0]), float(f["y"][-1])) if "y" in f else None
    return m


def masked(values: np.ndarray, mask: np.ndarray) -> np.ma.MaskedArray:
    values = np.asarray(values, dtype=float)
    return np.ma.masked_array(values, mask=~(mask & np.isfinite(values)))


def _edges(c: np.ndarray) -> tuple[float, float]:
    half = (c[-1] - c[0]) / (len(c) - 1) / 2 if len(c) > 1 else 0.5
    return c[0] - half, c[-1] + half


def plot_hessian(path, out_dir=None, formats=("png", "pdf"), *, dpi: int = 150) -> list[Path]:
    """Write the |λmin/λmax|, λmax and λmin figures of `path`'s Hessian map into out_dir
    (default: the file's folder); returns the written paths."""
    path = Path(path)
    m = read_map(path)
    formats = [formats] if isinstance(formats, str) else list(formats)
    out_dir = path.parent if out_dir is None else Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create output folder {str(out_dir)!r} ({exc.strerror}): choose another one") from None
    mask = m["mask"]
    done = float(mask.mean())
    note = "" if done >= 1 else f" ({math.floor(100 * done) or '<1'}% of map)"
    lmax, lmin = masked(m["lambda_max"], mask), masked(m["lambda_min"], mask)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.ma.masked_invalid(np.abs(lmin / lmax))
    panels = [("ratio", ratio, r"$|\lambda_{min}/\lambda_{max}|$", "viridis"),
              ("lambda_max", lmax, r"$\lambda_{max}$", "magma"),
              ("lambda_min", lmin, r"$\lambda_{min}$", "RdBu_r")]
    written = []
    for name, z, label, cmap in panels:
        fig, ax = plt.subplots(figsize=(5.2, 4.2) if m["y"] is not None else (5, 3.6), constrained_layout=True)
        if m["y"] is None:
            ax.plot(m["x"], z.filled(np.nan), ".-", lw=1.5)
            if name == "lambda_min":
                ax.axhline(0.0, color="0.5", lw=0.8)
            ax.set_ylabel(label)
            if m["x_range"]:
                ax.set_xlim(*m["x_range"])
        else:
            data = z.compressed()
            norm = None
            if name == "lambda_min" and data.size:  # white at λ = 0, blue below, red above
                lo, hi = float(data.min()), float(data.max())
                if lo < 0 < hi:
                    norm = TwoSlopeNorm(0.0, lo, hi)
                else:
                    cmap, norm = ("Blues_r", Normalize(lo, 0.0)) if hi <= 0 else ("Reds", Normalize(0.0, hi))
            im = ax.imshow(z, origin="lower", extent=(*_edges(m["x"]), *_edges(m["y"])), interpolation="nearest",
                           cmap=plt.get_cmap(cmap).with_extremes(bad="0.85"), norm=norm,
                           aspect="equal" if math.isclose(np.ptp(m["x"]), np.ptp(m["y"]), rel_tol=1e-6) else "auto")
            fig.colorbar(im, ax=ax, label=label)
            ax.set_ylabel(r"$\beta$")
        ax.set_xlabel(r"$\alpha$")
        ax.set_title(f"Hessian {label}{note}")
        save_figure(fig, out_dir, f"{path.stem}_hessian_{name}", formats, dpi, written)
    return written
