"""Figures of a surface file: 1D curves; 2D contours, filled contours, heat maps and 3D surfaces.

Reads only the HDF5 surface file (never torch). Points not computed yet (mask 0) and
non-finite values are masked, never drawn as zeros; titles say how complete the grid is.
A partial file is written coarse-to-fine, so contours and 3D surfaces use the finest
stride-2^k sub-grid that is (nearly) complete, which shows the basin early in a run.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HDF5_USE_FILE_LOCKING", "FALSE")  # read while a job writes (see store.py)

import h5py  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from .errors import UserError  # noqa: E402

FORMAT = "landscape-surface"
METRICS = ("loss", "acc")
LABELS = {"loss": "loss", "acc": "accuracy (%)"}


@dataclass
class Surface:
    """The plottable content of a surface file; values[split][metric] has the mask's shape."""

    x: np.ndarray
    y: np.ndarray | None
    mask: np.ndarray  # bool: point computed
    values: dict
    job: dict
    trajectory: dict | None = None  # coords (n, 2), off_plane (n,), explained_variance (2,), true/projected losses

    def axis_labels(self) -> tuple[str, str]:
        """α/β, or the principal components with their explained variance, or the models of a line/plane."""
        if self.trajectory is not None:
            ev = self.trajectory["explained_variance"]
            return f"PC1 ({100 * ev[0]:.1f}% of variance)", f"PC2 ({100 * ev[1]:.1f}% of variance)"
        source = self.job.get("directions", {})
        if "models" in source:
            return (r"$\alpha$ (0: model 1, 1: model 2)",
                    r"$\beta$ (0: model 1, 1: model 3)" if len(source["models"]) > 1 else r"$\beta$")
        return r"$\alpha$", r"$\beta$"

    @property
    def done(self) -> float:
        return float(self.mask.mean())


def _text(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def load(path) -> Surface:
    """Read a surface file, with a UserError naming the problem and the fix."""
    path = Path(path)
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "does not exist"
        raise UserError(f"{str(path)!r} {what}: give the path of a surface file")
    try:
        f = h5py.File(path, "r")
    except OSError:
        raise UserError(f"{str(path)!r} is not an HDF5 file: give the path of a surface file written by landscape") from None
    with f:
        if _text(f.attrs.get("format", "")) != FORMAT:
            raise UserError(f"{str(path)!r} is not a landscape surface file (no format={FORMAT!r}): pick a file written by landscape")
        if int(f.attrs.get("format_version", 1)) != 1:
            raise UserError(f"{str(path)!r} has format_version {f.attrs['format_version']}: upgrade landscape to plot it")
        if "x" not in f:
            raise UserError(f"{str(path)!r} has no /x coordinates: the file is damaged, recompute it")
        x = np.asarray(f["x"][...], dtype=float)
        y = np.asarray(f["y"][...], dtype=float) if "y" in f else None
        shape = (len(x),) if y is None else (len(y), len(x))
        values = {}
        for split in sorted(f, key=lambda s: (s not in ("train", "test"), s != "train", s)):
            if isinstance(f[split], h5py.Group) and split not in ("directions", "hessian", "trajectory"):
                found = {m: np.asarray(f[split][m][...], dtype=float) for m in METRICS if m in f[split]}
                if found:
                    values[split] = found
        if not values:
            raise UserError(f"{str(path)!r} has no metric datasets (/<split>/loss or /acc): the job wrote nothing, rerun it")
        if "mask" in f:
            mask = np.asarray(f["mask"][...]).astype(bool)
        else:  # computed = any metric written
            mask = np.any([np.isfinite(v) for s in values.values() for v in s.values()], axis=0)
        job = json.loads(_text(f.attrs.get("job", "{}")) or "{}")
        trajectory = None
        if "trajectory/coords" in f:
            t = f["trajectory"]
            trajectory = {k: t[k][...] for k in ("coords", "off_plane", "explained_variance")}
            trajectory["losses"] = {sp: {k: t[sp][k][...] for k in t[sp]} for sp in t if isinstance(t[sp], h5py.Group)}
    for name, arr in [("mask", mask)] + [(f"{s}/{m}", v) for s, d in values.items() for m, v in d.items()]:
        if arr.shape != shape:
            raise UserError(f"{str(path)!r}: /{name} has shape {arr.shape}, expected {shape} (len y, len x): the file is damaged, recompute it")
    if not mask.any():
        raise UserError(f"{str(path)!r}: no point computed yet: wait for the job or check its log")
    return Surface(x, y, mask, values, job, trajectory)


def masked(values: np.ndarray, mask: np.ndarray) -> np.ma.MaskedArray:
    """Values with points not computed or not finite masked."""
    values = np.asarray(values, dtype=float)
    return np.ma.masked_array(values, mask=~(np.asarray(mask, bool) & np.isfinite(values)))


def heat_data(x, y, values, mask):
    """(masked (ny, nx) array, imshow extent (left, right, bottom, top)) for origin='lower'."""
    def edges(c):
        half = (c[-1] - c[0]) / (len(c) - 1) / 2 if len(c) > 1 else 0.5
        return c[0] - half, c[-1] + half
    return masked(values, mask), (*edges(np.asarray(x)), *edges(np.asarray(y)))


def stride(mask: np.ndarray, min_done: float = 0.9) -> int:
    """Smallest power-of-2 step whose sub-grid is at least `min_done` computed (1 if none)."""
    s = 1
    while all(n > 2 * s for n in mask.shape):
        if mask[(slice(None, None, s),) * mask.ndim].mean() >= min_done:
            return s
        s *= 2
    return s if mask[(slice(None, None, s),) * mask.ndim].mean() >= min_done else 1


def levels(z: np.ma.MaskedArray, vmin=None, vmax=None, vlevel=None, robust=True) -> np.ndarray:
    """Contour levels vmin..vmax every vlevel. Defaults from the finite data: min, and the
    75th percentile (robust=True: far blow-ups do not flatten the basin) or the max."""
    data = z.compressed()
    if data.size == 0:
        data = np.array([0.0, 1.0])
    lo = float(data.min()) if vmin is None else float(vmin)
    hi = float(np.percentile(data, 75) if robust else data.max()) if vmax is None else float(vmax)
    if not hi > lo:
        hi = lo + (abs(lo) or 1.0)
    if vlevel:
        if (hi - lo) / vlevel > 1000:
            raise UserError(f"levels {lo:g}..{hi:g} every vlevel={vlevel:g} are over 1000 contour lines: raise vlevel or set vmin/vmax")
        return np.arange(lo, hi + 1e-9 * vlevel, vlevel)  # vmax included when on a level
    lev = MaxNLocator(nbins=15).tick_values(lo, hi).round(12)
    lev = lev[(lev >= (lo if vmin is not None else -np.inf)) & (lev <= (hi if vmax is not None else np.inf))]
    return lev if len(lev) >= 2 else np.array([lo, hi])


def _title(split, label, surf, s=1):
    note = "" if s == 1 else f", shown at 1/{s} resolution"
    done = "" if surf.done >= 1 else f" ({math.floor(100 * surf.done) or '<1'}% of grid{note})"
    return f"{split} {label}{done}"


def _save(fig, out_dir, name, formats, dpi, written):
    for fmt in formats:
        p = out_dir / f"{name}.{fmt}"
        try:
            fig.savefig(p, dpi=dpi)
        except (OSError, ValueError) as exc:
            plt.close(fig)
            raise UserError(f"cannot write {str(p)!r} ({exc}): choose another output folder or format") from None
        written.append(p)
    plt.close(fig)


def _plot_1d(surf, stem, splits, opts, out_dir, written):
    s = stride(surf.mask)
    x = surf.x[::s]
    for group in [[sp] for sp in splits] + ([splits] if {"train", "test"} <= set(splits) else []):
        fig, ax = plt.subplots(figsize=(5, 3.6), constrained_layout=True)
        ax2 = ax.twinx() if any("acc" in surf.values[sp] for sp in group) else None
        for sp, style in zip(group, ["-", "--", ":", "-."]):
            for metric, axis, color in (("loss", ax, "tab:blue"), ("acc", ax2, "tab:red")):
                if metric in surf.values[sp]:
                    z = masked(surf.values[sp][metric][::s], surf.mask[::s])
                    if metric == "loss" and opts["log"]:
                        z = np.ma.masked_where(z <= 0, z)
                    axis.plot(x, z.filled(np.nan), style, color=color, lw=1.5, label=f"{sp} {metric}")
        ax.set_xlabel(surf.axis_labels()[0])
        ax.set_ylabel("loss", color="tab:blue")
        if opts["log"]:
            ax.set_yscale("log")
        ax.set_ylim(*(v if v is not None and (v > 0 or not opts["log"]) else None for v in (opts["vmin"], opts["vmax"])))
        lines = ax.get_lines()
        if ax2 is not None:
            ax2.set_ylabel(LABELS["acc"], color="tab:red")
            lines += ax2.get_lines()
        if len(lines) > 2:
            ax.legend(lines, [ln.get_label() for ln in lines], loc="best", fontsize="small")
        ax.set_title(_title(" and ".join(group), "loss" + (" and accuracy" if ax2 else ""), surf, s))
        _save(fig, out_dir, f"{stem}_{group[0]}_1d" if len(group) == 1 else f"{stem}_1d_all", *opts["save"], written)


@dataclass
class _Panel:
    """One 2D metric ready to draw: full-resolution z, sub-grid zs on X, Y, and its levels."""

    z: np.ma.MaskedArray
    extent: tuple
    X: np.ndarray
    Y: np.ndarray
    zs: np.ma.MaskedArray
    lev: np.ndarray
    extend: str
    label: str
    cmap: str
    aspect: str


def _contour(fig, ax, p):
    cs = ax.contour(p.X, p.Y, p.zs, levels=p.lev, cmap=p.cmap)
    ax.clabel(cs, inline=True, fontsize=7, fmt="%.3g")
    ax.set_aspect(p.aspect)


def _contourf(fig, ax, p):
    cf = ax.contourf(p.X, p.Y, p.zs, levels=p.lev, cmap=p.cmap, extend=p.extend)
    fig.colorbar(cf, ax=ax, label=p.label)
    ax.set_aspect(p.aspect)


def _heat(fig, ax, p):
    cmap = plt.get_cmap(p.cmap).with_extremes(bad="0.85")  # not computed: light grey
    im = ax.imshow(p.z, origin="lower", extent=p.extent, aspect=p.aspect, cmap=cmap,
                   interpolation="nearest", vmin=p.lev[0], vmax=p.lev[-1])
    fig.colorbar(im, ax=ax, label=p.label, extend=p.extend)


def _surface3d(fig, ax, p):
    zc = np.clip(p.zs.filled(np.nan), p.lev[0], p.lev[-1])  # clip far blow-ups so the basin shows
    ax.plot_surface(p.X, p.Y, zc, cmap=p.cmap, vmin=p.lev[0], vmax=p.lev[-1], linewidth=0, antialiased=True)
    ax.set_zlim(p.lev[0], p.lev[-1])
    ax.set_zlabel(p.label)


def _path(ax, coords):
    """The projected training path: checkpoints as markers, the first and the final model marked."""
    ax.plot(coords[:, 0], coords[:, 1], "-o", color="crimson", ms=3, lw=1.2, label="checkpoints")
    ax.plot(*coords[0], "s", color="crimson", ms=6, label="first")
    ax.plot(*coords[-1], "*", color="gold", mec="k", ms=11, label="final")
    ax.legend(loc="best", fontsize="x-small")


def _plot_honesty(surf, stem, opts, out_dir, written):
    """Per checkpoint: its true loss against the surface's loss at its projected point, and
    its off-plane distance: how far the drawn path can be trusted."""
    t = surf.trajectory
    n = len(t["off_plane"])
    fig, ax = plt.subplots(figsize=(5.5, 3.8), constrained_layout=True)
    for sp, style in zip(t["losses"], ["-", "--"]):
        if "loss" in t["losses"][sp]:
            ax.plot(range(n), t["losses"][sp]["loss"], style + "o", ms=3, color="tab:blue", label=f"{sp} loss (true)")
            ax.plot(range(n), t["losses"][sp]["loss_projected"], style + "s", ms=3, color="tab:green",
                    label=f"{sp} loss (on the plane)")
    ax.set_yscale("log")
    ax.set_xlabel("checkpoint")
    ax.set_ylabel("loss")
    ax2 = ax.twinx()
    bars = ax2.bar(range(n), t["off_plane"], color="0.6", alpha=0.35, label="off-plane distance (relative)")
    ax2.set_ylim(0, 1)
    ax2.set_ylabel("off-plane distance / distance to final")
    handles = ax.get_lines() + [bars]
    ax.legend(handles, [h.get_label() for h in handles], fontsize="x-small", loc="upper right")
    ev = t["explained_variance"]
    ax.set_title(f"trajectory: PC1 {100 * ev[0]:.1f}%, PC2 {100 * ev[1]:.1f}% of variance")
    _save(fig, out_dir, f"{stem}_trajectory", *opts["save"], written)


KINDS_2D = {"contour": _contour, "contourf": _contourf, "heat": _heat, "3d": _surface3d}


def _plot_2d(surf, stem, splits, opts, out_dir, written):
    s = stride(surf.mask)
    X, Y = np.meshgrid(surf.x[::s], surf.y[::s])
    square = math.isclose(np.ptp(surf.x), np.ptp(surf.y), rel_tol=1e-6)  # equal aspect when spans match
    for sp in splits:
        for metric, raw in surf.values[sp].items():
            z, extent = heat_data(surf.x, surf.y, raw, surf.mask)
            label, lv = LABELS[metric], {}
            if metric == "loss":
                lv = {k: opts[k] for k in ("vmin", "vmax", "vlevel")}
                if opts["log"]:
                    with np.errstate(divide="ignore", invalid="ignore"):
                        z = masked(np.log10(z.filled(np.nan)), surf.mask)
                    lv.update({k: np.log10(opts[k]) for k in ("vmin", "vmax") if opts[k] and opts[k] > 0})
                    label = "log10 loss"
            lev = levels(z, **lv, robust=metric == "loss")
            data = z.compressed()
            below, above = data.size and data.min() < lev[0], data.size and data.max() > lev[-1]
            extend = ["neither", "min", "max", "both"][bool(below) + 2 * bool(above)]
            p = _Panel(z, extent, X, Y, z[::s, ::s], lev, extend, label, opts["cmap"], "equal" if square else "auto")
            for kind, draw in KINDS_2D.items():
                if kind != "heat" and min(p.zs.shape) < 2:  # a single row or column: heat map only
                    continue
                fig = plt.figure(figsize=(6, 4.8) if kind == "3d" else (5.2, 4.2), constrained_layout=True)
                ax = fig.add_subplot(projection="3d" if kind == "3d" else None)
                ax.set_xlabel(surf.axis_labels()[0])
                ax.set_ylabel(surf.axis_labels()[1])
                ax.set_title(_title(sp, label.replace(" (%)", ""), surf, 1 if kind == "heat" else s))
                if kind != "3d":
                    ax.xaxis.set_major_locator(MaxNLocator(6))
                    ax.yaxis.set_major_locator(MaxNLocator(6))
                draw(fig, ax, p)
                if surf.trajectory is not None and kind != "3d":
                    _path(ax, surf.trajectory["coords"])
                _save(fig, out_dir, f"{stem}_{sp}_{metric}_{kind}", *opts["save"], written)


def plot_file(path, out_dir=None, *, formats=("png", "pdf"), vmin=None, vmax=None, vlevel=None,
              log=False, cmap="viridis", dpi=150, splits=None) -> list[Path]:
    """Write every figure of surface file `path` into out_dir (default: its folder).

    Names are <stem>_<split>_<kind>.<fmt>. vmin/vmax/vlevel set the loss levels (vmin/vmax
    in loss units also with log=True, which plots log10 loss; vlevel is then in decades).
    Returns the written paths."""
    path = Path(path)
    surf = load(path)
    if splits is None:
        splits = list(surf.values)
    else:
        splits = [splits] if isinstance(splits, str) else list(splits)
        for sp in splits:
            if sp not in surf.values:
                raise UserError(f"split {sp!r} is not in {str(path)!r} (it has {', '.join(surf.values)}): choose one of those")
    formats = [formats] if isinstance(formats, str) else list(formats)
    supported = FigureCanvasAgg.get_supported_filetypes()
    for fmt in formats:
        if fmt not in supported:
            raise UserError(f"figure format {fmt!r} is not supported: use one of {', '.join(sorted(supported))}")
    if vlevel is not None and not vlevel > 0:
        raise UserError(f"vlevel={vlevel} must be positive: give the spacing of contour levels, e.g. 0.5")
    if vmin is not None and vmax is not None and not vmin < vmax:
        raise UserError(f"vmin={vmin} must be smaller than vmax={vmax}: swap or change them")
    if cmap not in matplotlib.colormaps:
        raise UserError(f"colormap {cmap!r} is unknown: use a matplotlib colormap such as viridis")
    out_dir = path.parent if out_dir is None else Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create output folder {str(out_dir)!r} ({exc.strerror}): choose another one") from None
    opts = dict(vmin=vmin, vmax=vmax, vlevel=vlevel, log=log, cmap=cmap, save=(formats, dpi))
    written: list[Path] = []
    (_plot_1d if surf.y is None else _plot_2d)(surf, path.stem, splits, opts, out_dir, written)
    if surf.trajectory is not None and surf.trajectory["losses"]:
        _plot_honesty(surf, path.stem, opts, out_dir, written)
    return written
