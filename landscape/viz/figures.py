"""Figures of a surface file: 1D curves; 2D contours, filled contours, heat maps and 3D surfaces;
the trajectory's honesty figure and the Hessian maps (viz.hessian_figures); several files side by side
on one colour scale (compare_files).

Every metric of the file is drawn: loss and accuracy (on one 1D axes, the accuracy on a twin axis),
and each of the user's own (`--task package.module:fn`) in figures of its own. A causal LM's loss
(the task stored in the file) also shows its perplexity exp(loss): a second y axis of the 1D
curves, and `loss (perplexity)` on contour labels, colour bars and 3D z ticks.

Reads the surface file through io.surface_file (never torch). Points not computed yet (mask 0) and
non-finite values are masked, never drawn as zeros; titles say how complete the grid is.
A partial file is written coarse-to-fine, so contours and 3D surfaces use the finest
stride-2^k sub-grid that is (nearly) complete, which shows the basin early in a run.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.ticker import FuncFormatter, MaxNLocator

from ..errors import UserError
from ..io.surface_file import METRICS, Surface, read_surface
from .arrays import stride
from .common import COLORMAPS, FigureCanvasAgg, edges, folder, masked, plt, save_figure
from .hessian_figures import DEFAULT, plot_hessian

LABELS = {"loss": "loss", "acc": "accuracy (%)"}
WHAT = {"loss": "loss", "acc": "accuracy"}


def label(metric: str) -> str:
    return LABELS.get(metric, metric)


def is_language_model(surf: Surface) -> bool:
    """The file holds a causal LM's next-token loss (the task stored with the job)."""
    prov = surf.provenance
    return (prov.job.get("task") or prov.config.get("task")) == "causal_lm"


def perplexity(loss):
    """exp(loss): the perplexity of a mean next-token cross-entropy (in nats)."""
    with np.errstate(over="ignore"):
        return np.exp(np.asarray(loss, dtype=float))


def ppl_text(v: float, log: bool = False) -> str:
    """A loss level as 'loss (perplexity)'; with log the level is log10 of the loss."""
    loss = 10.0 ** v if log else v
    return f"{v:.3g} ({float(perplexity(loss)):.3g})"


def load(path) -> Surface:
    """Read a surface file for drawing (io.surface_file.read_surface)."""
    return read_surface(path)


def axis_labels(surf: Surface) -> tuple[str, str]:
    """α/β, or the principal components with their explained variance, or the models of a line/plane."""
    if surf.trajectory is not None:
        ev = surf.trajectory.explained_variance
        return f"PC1 ({100 * ev[0]:.1f}% of variance)", f"PC2 ({100 * ev[1]:.1f}% of variance)"
    source = surf.provenance.job.get("directions", {})
    if "models" in source:
        return (r"$\alpha$ (0: model 1, 1: model 2)",
                r"$\beta$ (0: model 1, 1: model 3)" if len(source["models"]) > 1 else r"$\beta$")
    return r"$\alpha$", r"$\beta$"


def heat_data(x, y, values, mask):
    """(masked (ny, nx) array, imshow extent (left, right, bottom, top)) for origin='lower'."""
    return masked(values, mask), (*edges(x), *edges(y))


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


def _done(surf, s=1) -> str:
    """'' for a complete grid, else ' (N% of grid[, shown at 1/s resolution])'."""
    note = "" if s == 1 else f", shown at 1/{s} resolution"
    return "" if surf.done >= 1 else f" ({math.floor(100 * surf.done) or '<1'}% of grid{note})"


def _title(split, label, surf, s=1):
    return f"{split} {label}{_done(surf, s)}"


def _names(value) -> list[str] | None:
    """A comma-separated string or a list of names as a list; None stays None."""
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else list(value)
    return [v.strip() for v in items if v.strip()]


# ---- choosing what to draw ------------------------------------------------------------------------

KINDS = ("1d", "contour", "contourf", "heat", "3d", "trajectory", "hessian")


def supported_kinds(surf: Surface) -> list[str]:
    """The figure kinds a file can give: 1d or the four 2D kinds, the trajectory honesty figure
    when the file has a trajectory, the Hessian maps when it has a (partly) computed one."""
    kinds = ["1d"] if surf.y is None else ["contour", "contourf", "heat", "3d"]
    if surf.trajectory is not None and surf.trajectory.losses:
        kinds.append("trajectory")
    if surf.hessian_mask is not None and surf.hessian_mask.any():
        kinds.append("hessian")
    return kinds


def _why_not(kind: str) -> str:
    return {"1d": "it is a 2D surface",
            "trajectory": "it has no training trajectory: compute the surface with --trajectory",
            "hessian": "it has no computed Hessian map: compute one with `landscape hessian FILE`"}.get(
                kind, "it is a 1D surface")


def choose_kinds(surf: Surface, name: str, kinds) -> list[str]:
    """The requested kinds (default: all the file supports); one the file cannot give is a UserError."""
    have = supported_kinds(surf)
    kinds = _names(kinds)
    if kinds is None:
        return have
    for k in kinds:
        if k not in KINDS:
            raise UserError(f"figure kind {k!r} is unknown: use some of {', '.join(KINDS)}")
        if k not in have:
            raise UserError(f"{name!r} cannot give a {k!r} figure ({_why_not(k)}): choose from {', '.join(have)}")
    return kinds


def _select(surf: Surface, name: str, splits, metrics) -> tuple[list[str], list[str]]:
    """(splits, metrics) to draw, all of the file's by default; a missing one is a UserError."""
    splits = list(surf.values) if splits is None else splits
    for sp in splits:
        if sp not in surf.values:
            raise UserError(f"split {sp!r} is not in {name!r} (it has {', '.join(surf.values)}): choose one of those")
    known = file_metrics(surf, splits)
    for m in metrics or ():
        if m not in known and m not in METRICS:
            raise UserError(f"metric {m!r} is unknown: use some of {', '.join(known)} (the metrics of {name!r})")
        for sp in splits:
            if m not in surf.values[sp]:
                raise UserError(f"{name!r} has no {m!r} for split {sp!r} (it has {', '.join(surf.values[sp])}): "
                                "choose another metric with --metrics")
    return splits, list(metrics or known)


def file_metrics(surf: Surface, splits=None) -> list[str]:
    """The metrics of the file's splits, loss and acc first (as the file lists them)."""
    return list(dict.fromkeys(m for sp in (splits or surf.values) if sp in surf.values for m in surf.values[sp]))


def metric_groups(metrics) -> list[list[str]]:
    """The metrics drawn together on one 1D axes: loss with acc, then each of the user's own alone."""
    both = [m for m in metrics if m in METRICS]
    return ([both] if both else []) + [[m] for m in metrics if m not in METRICS]


def _options(formats, vmin, vmax, vlevel, log, cmap, dpi) -> dict:
    """The drawing options, checked."""
    formats = _names(formats) or ["png"]
    supported = FigureCanvasAgg.get_supported_filetypes()
    for fmt in formats:
        if fmt not in supported:
            raise UserError(f"figure format {fmt!r} is not supported: use one of {', '.join(sorted(supported))}")
    if vlevel is not None and not vlevel > 0:
        raise UserError(f"vlevel={vlevel} must be positive: give the spacing of contour levels, e.g. 0.5")
    if vmin is not None and vmax is not None and not vmin < vmax:
        raise UserError(f"vmin={vmin} must be smaller than vmax={vmax}: swap or change them")
    if cmap not in COLORMAPS:
        raise UserError(f"colormap {cmap!r} is unknown: use a matplotlib colormap such as viridis")
    if not dpi > 0:
        raise UserError(f"dpi={dpi} must be positive: e.g. 150")
    return dict(vmin=vmin, vmax=vmax, vlevel=vlevel, log=log, cmap=cmap, save=(formats, dpi))


# ---- 1D curves ----------------------------------------------------------------------------------

def _curve_axes(ax, metrics, colored=False) -> dict:
    """{metric: axes}: the first metric (the loss) on ax, a second (the accuracy) on a twin axis."""
    axes = {}
    for m in metrics[:2]:
        axes[m] = ax.twinx() if axes else ax
    for m, a in axes.items():
        a.set_ylabel(label(m), **({"color": COLORS.get(m, "tab:blue")} if colored else {}))
    return axes


def _perplexity_axis(ax):
    """A second y axis of the loss axes in perplexity exp(loss), left of it (the right one holds the
    accuracy); its ticks are where exp(loss) is round, so they are unevenly spaced."""
    def forward(loss):
        return perplexity(loss)

    def inverse(ppl):
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.log(np.asarray(ppl, dtype=float))

    sec = ax.secondary_yaxis(-0.2, functions=(forward, inverse))
    sec.yaxis.set_major_locator(MaxNLocator(6))  # round perplexities, also when the loss axis is log
    sec.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
    sec.set_ylabel("perplexity exp(loss)")
    return sec


def _finish_curves(axes, opts, min_lines=2):
    """Log scale and vmin/vmax on the loss axis (after plotting: set_ylim stops autoscaling), legend."""
    if "loss" in axes:
        ax = axes["loss"]
        if opts["log"]:
            ax.set_yscale("log")
        ax.set_ylim(*(v if v is not None and (v > 0 or not opts["log"]) else None for v in (opts["vmin"], opts["vmax"])))
    first = next(iter(axes.values()))
    lines = [ln for a in dict.fromkeys(axes.values()) for ln in a.get_lines()]
    if len(lines) > min_lines:
        first.legend(lines, [ln.get_label() for ln in lines], loc="best", fontsize="small")


def _curve(surf, split, metric, opts):
    """(x, values) on the finest nearly complete sub-grid; NaN where not drawn."""
    s = stride(surf.mask)
    z = masked(surf.values[split][metric][::s], surf.mask[::s])
    if metric == "loss" and opts["log"]:
        z = np.ma.masked_where(z <= 0, z)
    return surf.x[::s], z.filled(np.nan)


COLORS = {"loss": "tab:blue", "acc": "tab:red"}


def _plot_1d(surf, stem, splits, opts, out_dir, written):
    """Per split (and train with test): loss and accuracy as <stem>_<split>_1d / <stem>_1d_all; each
    of the user's own metrics m as <stem>_<split>_m_1d / <stem>_m_1d_all."""
    s = stride(surf.mask)
    for metrics in metric_groups(opts["metrics"]):
        own = "" if metrics[0] in METRICS else f"_{metrics[0]}"
        for group in [[sp] for sp in splits] + ([splits] if {"train", "test"} <= set(splits) else []):
            present = [m for m in metrics if any(m in surf.values[sp] for sp in group)]
            if not present:
                continue
            fig, ax = plt.subplots(figsize=(5.6 if "loss" in present and is_language_model(surf) else 5, 3.6),
                                   constrained_layout=True)
            axes = _curve_axes(ax, present, colored=True)
            for sp, style in zip(group, ["-", "--", ":", "-."]):
                for metric, axis in axes.items():
                    if metric in surf.values[sp]:
                        axis.plot(*_curve(surf, sp, metric, opts), style, color=COLORS.get(metric, "tab:blue"), lw=1.5,
                                  label=f"{sp} {metric}")
            ax.set_xlabel(axis_labels(surf)[0])
            _finish_curves(axes, opts)
            if "loss" in axes and is_language_model(surf):
                _perplexity_axis(axes["loss"])
            what = " and ".join(WHAT.get(m, m) for m in axes)
            ax.set_title(_title(" and ".join(group), what, surf, s))
            name = f"{stem}_{group[0]}{own}_1d" if len(group) == 1 else f"{stem}{own}_1d_all"
            save_figure(fig, out_dir, name, *opts["save"], written)


# ---- 2D figures ---------------------------------------------------------------------------------

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
    ppl: bool = False  # a causal LM's loss: levels shown as 'loss (perplexity)'
    log: bool = False  # z is log10 of the loss


def _zdata(surf, split, metric, opts):
    """(full-resolution masked values, colorbar label, level options): log10 of the loss with log."""
    z = masked(surf.values[split][metric], surf.mask)
    text, lv = label(metric), {}
    if metric == "loss":
        lv = {k: opts[k] for k in ("vmin", "vmax", "vlevel")}
        if opts["log"]:
            with np.errstate(divide="ignore", invalid="ignore"):
                z = masked(np.log10(z.filled(np.nan)), surf.mask)
            lv.update({k: np.log10(opts[k]) for k in ("vmin", "vmax") if opts[k] and opts[k] > 0})
            text = "log10 loss"
    return z, text, lv


def _extend(data: np.ndarray, lev: np.ndarray) -> str:
    """The colorbar's extend: which ends of the data lie outside the levels."""
    below, above = data.size and data.min() < lev[0], data.size and data.max() > lev[-1]
    return ["neither", "min", "max", "both"][bool(below) + 2 * bool(above)]


def _panel(surf, z, text, lev, extend, cmap, ppl=False, log=False) -> _Panel:
    """ppl: z is a causal LM's loss (log10 of it with log), shown with its perplexity."""
    s = stride(surf.mask)
    X, Y = np.meshgrid(surf.x[::s], surf.y[::s])
    square = math.isclose(np.ptp(surf.x), np.ptp(surf.y), rel_tol=1e-6)  # equal aspect when spans match
    extent = heat_data(surf.x, surf.y, z.filled(np.nan), surf.mask)[1]
    if ppl:
        text += " (perplexity)"
    return _Panel(z, extent, X, Y, z[::s, ::s], lev, extend, text, cmap, "equal" if square else "auto", ppl, log)


def _level_format(p):
    """Contour labels and colour-bar ticks: the value, and its perplexity for a causal LM's loss."""
    return (lambda v, *_: ppl_text(v, p.log)) if p.ppl else (lambda v, *_: f"{v:.3g}")


def _contour(fig, ax, p):
    cs = ax.contour(p.X, p.Y, p.zs, levels=p.lev, cmap=p.cmap)
    ax.clabel(cs, inline=True, fontsize=7, fmt=_level_format(p))
    ax.set_aspect(p.aspect)
    return cs


def _contourf(fig, ax, p):
    cf = ax.contourf(p.X, p.Y, p.zs, levels=p.lev, cmap=p.cmap, extend=p.extend)
    ax.set_aspect(p.aspect)
    return cf


def _heat(fig, ax, p):
    cmap = plt.get_cmap(p.cmap).with_extremes(bad="0.85")  # not computed: light grey
    return ax.imshow(p.z, origin="lower", extent=p.extent, aspect=p.aspect, cmap=cmap,
                     interpolation="nearest", vmin=p.lev[0], vmax=p.lev[-1])


def _surface3d(fig, ax, p):
    zc = np.clip(p.zs.filled(np.nan), p.lev[0], p.lev[-1])  # clip far blow-ups so the basin shows
    ax.plot_surface(p.X, p.Y, zc, cmap=p.cmap, vmin=p.lev[0], vmax=p.lev[-1], linewidth=0, antialiased=True,
                    rcount=min(zc.shape[0], 101), ccount=min(zc.shape[1], 101))  # every point up to 101 a side
    ax.set_zlim(p.lev[0], p.lev[-1])
    ax.set_zlabel(p.label)
    if p.ppl:
        ax.zaxis.set_major_formatter(FuncFormatter(_level_format(p)))


KINDS_2D = {"contour": _contour, "contourf": _contourf, "heat": _heat, "3d": _surface3d}


def _colorbar(fig, mappable, ax, kind, p):
    """contourf knows its own extend; an image needs it given."""
    bar = fig.colorbar(mappable, ax=ax, label=p.label, **({"extend": p.extend} if kind == "heat" else {}))
    if p.ppl:
        bar.ax.yaxis.set_major_formatter(FuncFormatter(_level_format(p)))
    return bar


def _axes_2d(ax, surf, kind):
    ax.set_xlabel(axis_labels(surf)[0])
    ax.set_ylabel(axis_labels(surf)[1])
    if kind != "3d":
        ax.xaxis.set_major_locator(MaxNLocator(6))
        ax.yaxis.set_major_locator(MaxNLocator(6))


def _path(ax, coords):
    """The projected training path: checkpoints as markers, the first and the final model marked."""
    ax.plot(coords[:, 0], coords[:, 1], "-o", color="crimson", ms=3, lw=1.2, label="checkpoints")
    ax.plot(*coords[0], "s", color="crimson", ms=6, label="first")
    ax.plot(*coords[-1], "*", color="gold", mec="k", ms=11, label="final")
    ax.legend(loc="best", fontsize="x-small")


def _plot_honesty(surf, stem, splits, opts, out_dir, written):
    """Per checkpoint: its true loss against the surface's loss at its projected point, and
    its off-plane distance: how far the drawn path can be trusted."""
    t = surf.trajectory
    n = len(t.off_plane)
    fig, ax = plt.subplots(figsize=(5.5, 3.8), constrained_layout=True)
    for sp, style in zip([sp for sp in t.losses if sp in splits], ["-", "--", ":", "-."]):
        if "loss" in t.losses[sp]:
            ax.plot(range(n), t.losses[sp]["loss"], style + "o", ms=3, color="tab:blue", label=f"{sp} loss (true)")
            ax.plot(range(n), t.losses[sp]["loss_projected"], style + "s", ms=3, color="tab:green",
                    label=f"{sp} loss (on the plane)")
    ax.set_yscale("log")
    ax.set_xlabel("checkpoint")
    ax.set_ylabel("loss")
    ax2 = ax.twinx()
    bars = ax2.bar(range(n), t.off_plane, color="0.6", alpha=0.35, label="off-plane distance (relative)")
    ax2.set_ylim(0, 1)
    ax2.set_ylabel("off-plane distance / distance to final")
    handles = ax.get_lines() + [bars]
    ax.legend(handles, [h.get_label() for h in handles], fontsize="x-small", loc="upper right")
    ev = t.explained_variance
    ax.set_title(f"trajectory: PC1 {100 * ev[0]:.1f}%, PC2 {100 * ev[1]:.1f}% of variance")
    save_figure(fig, out_dir, f"{stem}_trajectory", *opts["save"], written)


def _plot_2d(surf, stem, splits, kinds, opts, out_dir, written):
    s = stride(surf.mask)
    for sp in splits:
        for metric in opts["metrics"]:
            if metric not in surf.values[sp]:
                continue
            z, text, lv = _zdata(surf, sp, metric, opts)
            lev = levels(z, **lv, robust=metric == "loss")
            p = _panel(surf, z, text, lev, _extend(z.compressed(), lev), opts["cmap"],
                       ppl=metric == "loss" and is_language_model(surf), log=opts["log"])
            for kind in [k for k in kinds if k in KINDS_2D]:
                if kind != "heat" and min(p.zs.shape) < 2:  # a single row or column: heat map only
                    continue
                fig = plt.figure(figsize=(6, 4.8) if kind == "3d" else (5.2, 4.2), constrained_layout=True)
                ax = fig.add_subplot(projection="3d" if kind == "3d" else None)
                _axes_2d(ax, surf, kind)
                ax.set_title(_title(sp, p.label.replace(" (%)", ""), surf, 1 if kind == "heat" else s))
                mappable = KINDS_2D[kind](fig, ax, p)
                if kind in ("contourf", "heat"):
                    _colorbar(fig, mappable, ax, kind, p)
                if surf.trajectory is not None and kind != "3d":
                    _path(ax, surf.trajectory.coords)
                save_figure(fig, out_dir, f"{stem}_{sp}_{metric}_{kind}", *opts["save"], written)


def plot_file(path, out_dir=None, *, formats=DEFAULT.format, vmin=None, vmax=None, vlevel=None, log=DEFAULT.log,
              cmap=DEFAULT.cmap, dpi=DEFAULT.dpi, splits=None, metrics=None, kinds=None) -> list[Path]:
    """Write the figures of surface file `path` into out_dir (default: its folder).

    kinds: some of KINDS (default: every kind the file supports, see supported_kinds); splits,
    metrics: which to draw (default: all). Names are <stem>_<split>_<metric>_<kind>.<fmt>,
    <stem>_<split>_1d, <stem>_1d_all, <stem>_trajectory, <stem>_hessian_<map>. vmin/vmax/vlevel
    set the loss levels (vmin/vmax in loss units also with log=True, which plots log10 loss;
    vlevel is then in decades). Returns the written paths."""
    path = Path(path)
    surf = load(path)
    splits, metrics = _select(surf, str(path), _names(splits), _names(metrics))
    kinds = choose_kinds(surf, str(path), kinds)
    opts = _options(formats, vmin, vmax, vlevel, log, cmap, dpi)
    opts["metrics"] = metrics
    out_dir = folder(path.parent if out_dir is None else out_dir)
    written: list[Path] = []
    if surf.y is None:
        if "1d" in kinds:
            _plot_1d(surf, path.stem, splits, opts, out_dir, written)
    else:
        _plot_2d(surf, path.stem, splits, kinds, opts, out_dir, written)
    if "trajectory" in kinds:
        _plot_honesty(surf, path.stem, splits, opts, out_dir, written)
    if "hessian" in kinds:
        written += plot_hessian(path, out_dir, opts["save"][0], dpi=opts["save"][1])
    return written


# ---- several files side by side -----------------------------------------------------------------

COMPARE_KINDS = {1: ["1d"], 2: ["contour", "contourf", "heat"]}


def _common(names: list[str], found: list[list[str]], what: str, paths) -> list[str]:
    common = [n for n in names if all(n in f for f in found)]
    if not common:
        listing = "; ".join(f"{p.name}: {', '.join(f)}" for p, f in zip(paths, found))
        raise UserError(f"the files share no {what} ({listing}): compare files with a common {what}")
    return common


def compare_files(paths, out_dir=None, *, titles=None, kinds=None, splits=None, metrics=None,
                  formats=DEFAULT.format, vmin=None, vmax=None, vlevel=None, log=DEFAULT.log, cmap=DEFAULT.cmap,
                  dpi=DEFAULT.dpi) -> list[Path]:
    """Several surface files side by side on one colour scale.

    2D files: per split, metric and kind (contour, contourf, heat; default contourf, heat) one
    figure with a panel per file, shared levels and one colorbar. 1D files: per split one axes
    overlaying every file's curves. Files must all be 1D or all 2D. Default splits and metrics:
    those every file has. titles: one per file (default: the file names). Names are
    <stem1>_vs_<stem2>..._<split>_<metric>_<kind>.<fmt> and ..._<split>_1d.<fmt>."""
    paths = [Path(p) for p in paths]
    if len(paths) < 2:
        raise UserError("--compare needs two or more surface files: list them all after `landscape plot`")
    surfs = [load(p) for p in paths]
    dims = [1 if s.y is None else 2 for s in surfs]
    if len(set(dims)) > 1:
        listing = ", ".join(f"{p.name} is {d}D" for p, d in zip(paths, dims))
        raise UserError(f"cannot compare 1D and 2D surfaces ({listing}): compare files of one dimensionality")
    dim = dims[0]
    titles = _names(titles) if titles is not None else [p.stem for p in paths]
    if len(titles) != len(paths):
        raise UserError(f"--titles has {len(titles)} titles for {len(paths)} files: give one per file, comma-separated")
    splits = _names(splits) or _common(list(surfs[0].values), [list(s.values) for s in surfs], "split", paths)
    for s, p in zip(surfs, paths):
        _select(s, str(p), splits, None)
    found = [[m for m in file_metrics(s) if all(m in s.values[sp] for sp in splits)] for s in surfs]
    metrics = _names(metrics) or _common(file_metrics(surfs[0]), found, "metric", paths)
    for s, p in zip(surfs, paths):
        _select(s, str(p), splits, metrics)
    kinds = _names(kinds) or (["1d"] if dim == 1 else ["contourf", "heat"])
    for k in kinds:
        if k not in COMPARE_KINDS[dim]:
            raise UserError(f"--compare of {dim}D surfaces draws {', '.join(COMPARE_KINDS[dim])}, not {k!r}: "
                            "choose from those")
    opts = _options(formats, vmin, vmax, vlevel, log, cmap, dpi)
    opts["metrics"] = metrics
    out_dir = folder(paths[0].parent if out_dir is None else out_dir)
    stem = "_vs_".join(p.stem for p in paths)
    written: list[Path] = []
    for sp in splits:
        if dim == 1:
            for group in metric_groups(metrics):
                own = "" if group[0] in METRICS else f"_{group[0]}"
                _compare_1d(surfs, titles, f"{stem}_{sp}{own}_1d", sp, dict(opts, metrics=group), out_dir, written)
        else:
            for metric in metrics:
                _compare_2d(surfs, titles, stem, sp, metric, kinds, opts, out_dir, written)
    return written


def _compare_1d(surfs, titles, name, split, opts, out_dir, written):
    fig, ax = plt.subplots(figsize=(5.8, 3.9), constrained_layout=True)
    axes = _curve_axes(ax, opts["metrics"])
    for i, (surf, title) in enumerate(zip(surfs, titles)):
        for metric, axis in axes.items():
            axis.plot(*_curve(surf, split, metric, opts), "--" if metric == "acc" else "-", color=f"C{i % 10}",
                      lw=1.5, label=f"{title} {metric}{_done(surf, stride(surf.mask))}")
    ax.set_xlabel(axis_labels(surfs[0])[0])
    _finish_curves(axes, opts, min_lines=1)
    if "loss" in axes and all(is_language_model(s) for s in surfs):
        _perplexity_axis(axes["loss"])
    what = " (solid) and accuracy (dashed)" if len(axes) == 2 else ""
    ax.set_title(f"{split} {' and '.join(axes) if not what else 'loss' + what}")
    save_figure(fig, out_dir, name, *opts["save"], written)


def _compare_2d(surfs, titles, stem, split, metric, kinds, opts, out_dir, written):
    zs = [_zdata(s, split, metric, opts) for s in surfs]
    text, lv = zs[0][1], zs[0][2]
    data = np.concatenate([z.compressed() for z, _, _ in zs])
    lev = levels(np.ma.masked_array(data), **lv, robust=metric == "loss")  # one scale for every panel
    ppl = metric == "loss" and all(is_language_model(s) for s in surfs)
    panels = [_panel(s, z, text, lev, _extend(data, lev), opts["cmap"], ppl=ppl, log=opts["log"])
              for s, (z, _, _) in zip(surfs, zs)]
    spans = [(s.x[0], s.x[-1], s.y[0], s.y[-1]) for s in surfs]
    same = all(np.allclose(span, spans[0]) for span in spans)  # share the axes when the grids span the same
    for kind in kinds:
        if kind != "heat" and any(min(p.zs.shape) < 2 for p in panels):  # a single row or column: heat map only
            continue
        n = len(surfs)
        fig, axes = plt.subplots(1, n, figsize=(3.5 * n + 1.3, 3.9), sharex=same, sharey=same, squeeze=False,
                                 constrained_layout=True)
        for i, (ax, surf, p, title) in enumerate(zip(axes[0], surfs, panels, titles)):
            _axes_2d(ax, surf, kind)
            if same and i > 0:  # shared axes: β labelled once, on the left
                ax.set_ylabel("")
                ax.tick_params(labelleft=False)
            mappable = KINDS_2D[kind](fig, ax, p)
            ax.set_title(title + _done(surf, 1 if kind == "heat" else stride(surf.mask)), fontsize="medium")
            if surf.trajectory is not None:
                _path(ax, surf.trajectory.coords)
        _colorbar(fig, mappable, list(axes[0]), kind, panels[0])
        fig.suptitle(f"{split} {panels[0].label.replace(' (%)', '')}")
        save_figure(fig, out_dir, f"{stem}_{split}_{metric}_{kind}", *opts["save"], written)
