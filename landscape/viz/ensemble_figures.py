"""Figures of a direction ensemble (a file of `--ensemble N`), from the file only.

1D: per split and metric, the mean curve over the members with two bands (mean ± σ, and the 5–95%
quantiles) and a thin line per member; histograms of the basin widths (one per ε, both sides
pooled) and of the curvature at the centre. 2D: the mean surface and the σ surface as filled
contours. Statistics come from the file once the ensemble is complete, and are computed here
from the values done so far for a partial file (analysis.ensemble, numpy only).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..analysis import ensemble as stats
from ..io import surface_file
from .common import folder, plt, save_figure
from .ensemble_info import ensemble_results


def format_list(formats) -> tuple[str, ...]:
    """`png,pdf` or a sequence of formats, each one matplotlib writes."""
    items = [f.strip() for f in formats.split(",")] if isinstance(formats, str) else list(formats)
    bad = [f for f in items if f not in ("png", "pdf", "svg")]
    if bad or not items:
        from ..errors import UserError

        raise UserError(f"unknown figure format {(bad or [formats])[0]!r}: choose png, pdf or svg (comma-separated)")
    return tuple(items)


def plot_ensemble(path, out_dir=None, *, formats=("png", "pdf"), dpi=150) -> list[Path]:
    """Write the ensemble's figures into out_dir (default: the file's folder): <stem>_<split>_<metric>_band,
    <stem>_<split>_widths, <stem>_<split>_curvature (1D); <stem>_<split>_<metric>_mean / _std (2D)."""
    path, formats = Path(path), format_list(formats)
    e = surface_file.read_ensemble(path)
    results, epsilons = ensemble_results(e)
    out_dir = folder(path.parent if out_dir is None else out_dir)
    written: list[Path] = []
    done = f"{int(e.mask.any(axis=tuple(range(1, e.mask.ndim))).sum())}/{e.members} members, {e.done:.0%} of points"
    for split, metrics in e.values.items():
        for metric, v in metrics.items():
            v = np.where(e.mask, v, np.nan)
            s = {k.rsplit("/", 1)[1]: a for k, a in results.items() if k.startswith(f"stats/{split}/{metric}/")}
            if e.y is None:
                fig, ax = plt.subplots(figsize=(6, 4))
                for row in v:
                    ax.plot(e.x, row, color="0.6", lw=0.5, alpha=0.6)
                ax.fill_between(e.x, s["q05"], s["q95"], color="C0", alpha=0.15, label="5–95% quantiles")
                ax.fill_between(e.x, s["mean"] - s["std"], s["mean"] + s["std"], color="C0", alpha=0.3, label="mean ± σ")
                ax.plot(e.x, s["mean"], color="C0", lw=2, label="mean")
                ax.set(xlabel="α", ylabel=f"{split} {metric}", title=f"{path.stem}: {split} {metric} ({done})")
                ax.legend(fontsize=8)
                save_figure(fig, out_dir, f"{path.stem}_{split}_{metric}_band", formats, dpi, written)
            else:
                for stat in ("mean", "std"):
                    fig, ax = plt.subplots(figsize=(5, 4))
                    z = np.ma.masked_invalid(s[stat])
                    if z.count() >= 4 and np.ptp(z.compressed()) > 0:
                        c = ax.contourf(e.x, e.y, z, levels=20, cmap="viridis")
                        fig.colorbar(c, ax=ax)
                    ax.set(xlabel="α", ylabel="β", title=f"{split} {metric}: {'mean' if stat == 'mean' else 'σ'} "
                           f"over members ({done})")
                    save_figure(fig, out_dir, f"{path.stem}_{split}_{metric}_{stat}", formats, dpi, written)
        for kind in ("widths", "curvature"):
            axes = sorted(k.rsplit("/", 1)[1] for k in results if k.startswith(f"{kind}/{split}/"))
            if not axes:
                continue
            fig, ax = plt.subplots(figsize=(6, 4))
            for axis in axes:
                a = results[f"{kind}/{split}/{axis}"]
                groups = ([(f"{axis}, ε = {eps:g}", a[:, i, :].ravel()) for i, eps in enumerate(epsilons)]
                          if kind == "widths" else [(axis, a)])
                for name, sample in groups:
                    sample = sample[np.isfinite(sample)]
                    if len(sample):
                        ax.hist(sample, bins=min(30, max(5, len(sample) // 2)), alpha=0.5, label=name)
            ax.set(xlabel="basin width |α| (both sides)" if kind == "widths" else "d²L/dα² at α = 0",
                   ylabel="member sides" if kind == "widths" else "members", title=f"{path.stem}: {split} {kind} ({done})")
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=8)
            save_figure(fig, out_dir, f"{path.stem}_{split}_{kind}", formats, dpi, written)
    return written


def compare_ensembles(paths, out_dir=None, *, titles=None, formats=("png", "pdf"), dpi=150) -> list[Path]:
    """Several ensembles on shared axes (the paper's small- vs large-batch comparison, with error bars):
    per split, the mean ± σ curves of the loss (1D files), and the distributions of basin widths and
    centre curvatures as histograms with each file's mean and its 95% confidence interval.
    Names: compare_<split>_loss_band, compare_<split>_widths, compare_<split>_curvature."""
    paths, formats = [Path(p) for p in paths], format_list(formats)
    titles = titles or [p.stem for p in paths]
    if len(titles) != len(paths):
        from ..errors import UserError

        raise UserError(f"--titles has {len(titles)} titles for {len(paths)} files: give one per file")
    files = [surface_file.read_ensemble(p) for p in paths]
    found = [(e, *ensemble_results(e)) for e in files]
    out_dir = folder(paths[0].parent if out_dir is None else out_dir)
    written: list[Path] = []
    splits = [s for s in files[0].values if all(s in e.values and "loss" in e.values[s] for e in files)]
    for split in splits:
        if all(e.y is None for e in files):
            fig, ax = plt.subplots(figsize=(6, 4))
            for i, ((e, results, _), title) in enumerate(zip(found, titles)):
                mean, std = results[f"stats/{split}/loss/mean"], results[f"stats/{split}/loss/std"]
                ax.fill_between(e.x, mean - std, mean + std, color=f"C{i}", alpha=0.25)
                ax.plot(e.x, mean, color=f"C{i}", lw=2, label=f"{title} (mean ± σ, {e.members} directions)")
            ax.set(xlabel="α", ylabel=f"{split} loss", title=f"{split} loss over random directions")
            ax.legend(fontsize=8)
            save_figure(fig, out_dir, f"compare_{split}_loss_band", formats, dpi, written)
        for kind in ("widths", "curvature"):
            fig, (hist, bars) = plt.subplots(1, 2, figsize=(10, 4), gridspec_kw={"width_ratios": [2, 1]})
            labels, drawn = [], False
            for i, ((e, results, epsilons), title) in enumerate(zip(found, titles)):
                for axis in ("x", "y"):
                    a = results.get(f"{kind}/{split}/{axis}")
                    if a is None:
                        continue
                    groups = ([(f"ε = {eps:g}", a[:, j, :].ravel()) for j, eps in enumerate(epsilons)]
                              if kind == "widths" else [("", a)])
                    for j, (name, sample) in enumerate(groups):
                        d = stats.distribution(sample)
                        label = " ".join(filter(None, [title, axis if e.y is not None else "", name]))
                        finite = sample[np.isfinite(sample)]
                        if len(finite) and j == 0:  # the histogram of the first ε; every ε in the error bars
                            hist.hist(finite, bins=min(30, max(5, len(finite) // 2)), alpha=0.45, color=f"C{i}",
                                      label=label)
                            drawn = True
                        bars.errorbar([len(labels)], [d["mean"]], yerr=[[d["mean"] - d["ci_low"]], [d["ci_high"] - d["mean"]]],
                                      fmt="o", color=f"C{i}", capsize=4)
                        labels.append(label)
            if not drawn:
                plt.close(fig)
                continue
            what = "basin width |α|" if kind == "widths" else "d²L/dα² at α = 0"
            hist.set(xlabel=what, ylabel="count", title=f"{split} {kind}" + (" (first ε)" if kind == "widths" else ""))
            hist.legend(fontsize=7)
            bars.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=7)
            bars.set(ylabel=f"mean {what}", title="mean, 95% CI")
            fig.tight_layout()
            save_figure(fig, out_dir, f"compare_{split}_{kind}", formats, dpi, written)
    return written
