"""`landscape report FILE [FILE ...] --out report.html`: one self-contained interactive page.

Built from the surface files only (io.surface_file readers; never torch, never matplotlib), drawn
by Plotly: plotly.js (from the plotly wheel) is embedded, so the page opens offline. It holds

  - per 2D file a 3D surface (rotate, zoom), contour lines (with the trajectory's checkpoints on
    them) and a heat map; per 1D file the curve; hover gives α, β, every metric of the split and
    whether the point is computed; one split / metric / linear-log selector drives every plot;
  - the trajectory's checkpoints: true loss, loss at the projection, off-plane distance;
  - the Hessian maps (negative-curvature ratio, λmax, λmin) on the surface's axes, with residuals
    and Hessian-vector products per point;
  - the trace map (`landscape hessian --map trace`: tr H with its 95% interval per point) and the
    top-k map (`--map topk`: λ1 .. λk with their residuals) as heat maps with contour lines on the
    surface's axes (curves for a 1D surface);
  - each spectrum (`landscape spectrum`): the SLQ density on a symmetric-log eigenvalue axis with
    the top-k eigenvalues marked, a table of the eigenvalues, residuals and trace, and the
    per-block table when there is one;
  - the `landscape info` summary and the provenance (job, config, seed, versions) as a table;
  - per direction ensemble (`--ensemble N`; statistics stored in the file once complete, from the
    points done so far before): in 1D the mean curve with the mean ± σ and 5–95% quantile bands
    and a thin line per member (the first MEMBER_LINES), hover: α, mean, σ, quantiles, min, max,
    members there; in 2D heat maps of the mean and σ surfaces and of one member (a selector);
    histograms of the basin widths (per ε) and the centre curvature, and a table of their
    distributions (mean [95% CI], σ, median, n);
  - several files side by side (a column each) on shared colour and z scales (ensembles: shared
    value ranges and histogram bins).

Points not computed are missing (gaps; grey in heat maps), never zeros, and each file states
its completion. The values travel once, as base64 float64 (exact), in a JSON block that
report.js (glue: decode, build traces, react to the selectors) hands to Plotly.
"""
from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import numpy as np

from ..analysis import ensemble as ensemble_stats
from ..errors import UserError
from ..io.surface_file import (
    HESSIAN_RATIO,
    METRICS,
    TOPK_MAP,
    TRACE_MAP,
    Ensemble,
    HessianMap,
    StoredSpectrum,
    Surface,
    is_ensemble,
    read_ensemble,
    read_hessian,
    read_map,
    read_spectra,
    read_surface,
)
from .arrays import negative_curvature_ratio, stride
from .ensemble_info import ensemble_info, ensemble_results, stored
from .info import info

SCRIPT = Path(__file__).with_name("report.js")
HESSIAN_VIEWS = ("ratio", "lambda_max", "lambda_min")
MEMBER_LINES = 64  # an ensemble's members whose own values the page carries, at most (the first ones)
MEMBER_VALUES = 250_000  # ... and at most this many of their values over every split and metric (the page's size)
ENSEMBLE_STATS = ("mean", "std", "min", "max", *(ensemble_stats.quantile_name(q) for q in ensemble_stats.QUANTILES),
                  "count")


def _b64(a: np.ndarray, dtype: str = "<f8") -> str:
    return base64.b64encode(np.ascontiguousarray(a, dtype=dtype).tobytes()).decode()


def _list(a) -> list:
    """A float array as a JSON list, None where not finite (JSON has no NaN)."""
    return [float(v) if np.isfinite(v) else None for v in np.asarray(a, dtype=float).ravel()]


def axis_labels(surf: Surface) -> list[str]:
    """α/β, the principal components with their explained variance, or the models of a line/plane."""
    if surf.trajectory is not None:
        ev = surf.trajectory.explained_variance
        return [f"PC1 ({100 * ev[0]:.1f}% of variance)", f"PC2 ({100 * ev[1]:.1f}% of variance)"]
    models = surf.provenance.job.get("directions", {}).get("models")
    if models:
        return ["α (0: model 1, 1: model 2)", "β (0: model 1, 1: model 3)" if len(models) > 1 else "β"]
    return ["α", "β"]


def provenance_rows(surf: Surface) -> list[tuple[str, str]]:
    """(key, value) rows: the job (what identifies it), the config's keys, the seed and versions."""
    prov = surf.provenance
    rows = [(f"job: {k}", v if isinstance(v, str) else json.dumps(v)) for k, v in sorted(prov.job.items())]
    rows += [(f"config: {k}", v if isinstance(v, str) else json.dumps(v, default=str))
             for k, v in prov.config.items() if v is not None]  # the keys the job file set
    return rows + [("seed", prov.seed), ("versions", prov.versions)]


def _settings(settings: dict) -> dict:
    return {k: (v if isinstance(v, (str, int, float, bool)) else str(v)) for k, v in settings.items()}


def _hessian(m: HessianMap) -> dict:
    return _map(m, {"ratio": negative_curvature_ratio(m.values["lambda_max"], m.values["lambda_min"]), **m.values})


def _map(m: HessianMap, values: dict | None = None) -> dict:
    """A per-point map (Hessian, trace, top-k) on its own grid: values NaN where not computed."""
    values = m.values if values is None else values
    mask = np.asarray(m.mask, bool)
    return {"x": _list(m.x), "y": None if m.y is None else _list(m.y), "mask": _b64(mask, "u1"),
            "n_done": int(mask.sum()), "n_total": int(mask.size), "x_range": list(m.x_range),
            "y_range": None if m.y_range is None else list(m.y_range),
            "values": {k: _b64(np.where(mask, v, np.nan)) for k, v in values.items()},
            "settings": _settings(m.settings)}


def _optional(read, *args):
    """read(*args), or None where the file has no such group (the readers' UserError)."""
    try:
        return read(*args)
    except UserError:
        return None


def _spectrum(s: StoredSpectrum) -> dict:
    """A spectrum: eigenvalues, residuals, trace and interval (exact floats), the density on its grid
    (base64 float64), the symmetric-log axis's linear range (the density's width σ) and the blocks."""
    v, a = s.values, s.settings
    grid, density = np.asarray(v["density/grid"], float), np.asarray(v["density/values"], float)
    top = np.abs(grid[np.isfinite(grid)]).max() if np.isfinite(grid).any() else 1.0
    lin = a.get("sigma_abs")
    lin = float(lin) if isinstance(lin, (int, float)) and np.isfinite(lin) and lin > 0 else 1e-3 * float(top or 1.0)
    blocks = None
    if "blocks/names" in v:
        blocks = {"names": [str(n) for n in v["blocks/names"]], "numel": [int(n) for n in v["blocks/numel"]],
                  "lambda_max": _list(v["blocks/lambda_max"]), "residual": _list(v["blocks/residual"]),
                  "trace": _list(v["blocks/trace"]), "trace_ci": [_list(c) for c in v["blocks/trace_ci"]]}
    return {"label": s.label, "point": _list(a.get("point", [])), "eigenvalues": _list(v["eigenvalues"]),
            "residuals": _list(v["residuals"]), "trace": _list(v["trace"])[0], "trace_ci": _list(v["trace_ci"]),
            "grid": _b64(grid), "density": _b64(density), "lin": max(lin, 1e-12), "blocks": blocks,
            "settings": _settings(a)}


def file_data(surf: Surface, title: str) -> dict:
    """What the page needs of one file (values exact, base64 float64, axis order (y, x))."""
    t = surf.trajectory
    trajectory = None
    if t is not None:
        trajectory = {"coords": [_list(c) for c in t.coords], "off_plane": _list(t.off_plane),
                      "files": [Path(f).name for f in t.files] or [str(i) for i in range(len(t.off_plane))],
                      "losses": {sp: {k: _list(v) for k, v in d.items()} for sp, d in t.losses.items()}}
    hessian = read_hessian(surf.path) if surf.hessian_mask is not None else None
    trace, topk = _optional(read_map, surf.path, TRACE_MAP), _optional(read_map, surf.path, TOPK_MAP)
    spectra = _optional(read_spectra, surf.path) or {}
    return {"title": title, "path": surf.path, "x": _list(surf.x), "y": None if surf.y is None else _list(surf.y),
            "labels": axis_labels(surf), "mask": _b64(surf.mask, "u1"), "n_done": int(surf.mask.sum()),
            "stride": stride(surf.mask) if surf.y is not None else 1,
            "n_total": int(surf.mask.size),
            "splits": {sp: {m: _b64(v) for m, v in d.items()} for sp, d in surf.values.items()},
            "trajectory": trajectory, "hessian": None if hessian is None else _hessian(hessian),
            "trace": None if trace is None else _map(trace), "topk": None if topk is None else _map(topk),
            "spectra": [_spectrum(s) for s in spectra.values()], "ensemble": None}


def shown_members(e: Ensemble) -> int:
    """How many members' own values the page carries (the first ones): MEMBER_LINES at most, and
    MEMBER_VALUES values at most over every split and metric."""
    per_member = int(np.prod(e.mask.shape[1:])) * max(1, sum(len(d) for d in e.values.values()))
    return max(1, min(e.members, MEMBER_LINES, MEMBER_VALUES // per_member))


def _axis_name(axis: str) -> str:
    return "α" if axis == "x" else "β"


def ensemble_distributions(results: dict, epsilons: list[float], split: str) -> list[dict]:
    """The rows of a split's table: per axis the basin widths per ε (both sides pooled) and the
    curvature at the centre, each with its distribution (analysis.ensemble.distribution) and
    how many of its samples are missing (sides beyond the grid, members not computed there)."""
    rows = []
    for axis in ("x", "y"):
        w, c = results.get(f"widths/{split}/{axis}"), results.get(f"curvature/{split}/{axis}")
        if w is not None:
            for k, eps in enumerate(epsilons):
                sample = np.asarray(w[:, k, :], float).ravel()
                rows.append({"what": f"basin width along {_axis_name(axis)}, ε = {eps:g}", "kind": "widths",
                             "axis": axis, "epsilon": eps, "samples": _list(sample),
                             "missing": int((~np.isfinite(sample)).sum()), **_distribution(sample)})
        if c is not None:
            sample = np.asarray(c, float).ravel()
            rows.append({"what": f"curvature d²L/d{_axis_name(axis)}² at the centre", "kind": "curvature",
                         "axis": axis, "epsilon": None, "samples": _list(sample),
                         "missing": int((~np.isfinite(sample)).sum()), **_distribution(sample)})
    return rows


def _distribution(sample: np.ndarray) -> dict:
    """analysis.ensemble.distribution, None where it is NaN (JSON has no NaN)."""
    return {k: (float(v) if np.isfinite(v) else None) for k, v in ensemble_stats.distribution(sample).items()}


def ensemble_data(e: Ensemble, title: str) -> dict:
    """What the page needs of one direction-ensemble file: the statistics per split and metric
    (ensemble_info.ensemble_results: the file's once complete, else from the points done so far;
    base64 float64, axis order ([y,] x)), the values of the first shown_members members (NaN where
    not computed; (member, [y,] x)), and per split the basin widths and curvatures with their
    distributions. Keys shared with file_data, so that the page treats both alike."""
    results, epsilons = ensemble_results(e)
    k = shown_members(e)
    complete = e.mask.reshape(e.members, -1).all(axis=1)
    started = e.mask.reshape(e.members, -1).any(axis=1)
    ens = {"members": e.members, "shown": k, "members_done": int(complete.sum()), "members_started": int(started.sum()),
           "n_done": int(e.mask.sum()), "n_total": int(e.mask.size), "stored": stored(e), "epsilons": epsilons,
           "values": {sp: {m: _b64(np.where(e.mask, v, np.nan)[:k]) for m, v in d.items()} for sp, d in e.values.items()},
           "stats": {sp: {m: {st: _b64(results[f"stats/{sp}/{m}/{st}"]) for st in ENSEMBLE_STATS
                              if f"stats/{sp}/{m}/{st}" in results} for m in d} for sp, d in e.values.items()},
           "distributions": {sp: ensemble_distributions(results, epsilons, sp) for sp in e.values}}
    return {"title": title, "path": e.path, "x": _list(e.x), "y": None if e.y is None else _list(e.y),
            "labels": ["α", "β"], "mask": _b64(e.mask.any(axis=0), "u1"), "n_done": ens["n_done"],
            "n_total": ens["n_total"], "stride": 1, "splits": {}, "trajectory": None, "hessian": None, "trace": None,
            "topk": None, "spectra": [], "ensemble": ens}


def ensemble_ranges(ensembles: list[Ensemble]) -> dict:
    """{split: {metric: {values|band|std: {linear|log: [lo, hi, top]}}}} shared by the ensemble
    files: values: their members' computed values and means (the colours of the mean and member
    maps; the loss's colours end at its 75th percentile); band: those and mean ± σ and the 5–95%
    quantiles (the 1D plots' y range); std: the σ surfaces."""
    results = [ensemble_results(e)[0] for e in ensembles]
    out = {}
    for sp in dict.fromkeys(sp for e in ensembles for sp in e.values):
        for m in dict.fromkeys(m for e in ensembles for m in e.values.get(sp, {})):
            values, band, std = [], [], []
            for e, r in zip(ensembles, results):
                if m in e.values.get(sp, {}):
                    st = {k: np.asarray(r[f"stats/{sp}/{m}/{k}"], float).ravel() for k in ("mean", "std", "q05", "q95")}
                    values += [e.values[sp][m][e.mask].ravel(), st["mean"]]
                    band += [st["mean"] - st["std"], st["mean"] + st["std"], st["q05"], st["q95"]]
                    std.append(st["std"])
            spans = {}
            for name, parts, robust in (("values", values, m == "loss"), ("band", values + band, False), ("std", std, False)):
                v = np.concatenate(parts) if parts else np.array([])
                v = v[np.isfinite(v)]
                spans[name] = {"linear": _span(v, robust), "log": _span(np.log10(v[v > 0]), False)}
            out.setdefault(sp, {})[m] = spans
    return out


def histogram_bins(files: list[dict]) -> dict:
    """{split: {widths|curvature: {start, end, size}}}: bins shared by the ensemble files' histograms
    (as the static figures: min(30, max(5, n / 2)) bins over the finite samples of every file)."""
    out = {}
    for f in files:
        for sp, rows in (f.get("ensemble") or {}).get("distributions", {}).items():
            for row in rows:
                out.setdefault(sp, {}).setdefault(row["kind"], []).extend(v for v in row["samples"] if v is not None)
    bins = {}
    for sp, kinds in out.items():
        for kind, sample in kinds.items():
            if not sample:
                bins.setdefault(sp, {})[kind] = None
                continue
            lo, hi = min(sample), max(sample)
            n = min(30, max(5, len(sample) // 2))
            size = (hi - lo) / n if hi > lo else (abs(lo) or 1.0) / 10
            bins.setdefault(sp, {})[kind] = {"start": lo - size / 2, "end": hi + size / 2, "size": size}
    return bins


def _span(data: np.ndarray, robust: bool) -> list | None:
    """[lo, hi, top]: the colour range (hi: 75th percentile when robust, as the static contours) and the z range."""
    if data.size == 0:
        return None
    lo, top = float(data.min()), float(data.max())
    hi = float(np.percentile(data, 75)) if robust else top
    if not hi > lo:
        hi = top = lo + (abs(lo) or 1.0)
    return [lo, hi, max(hi, top)]


def shared_ranges(surfs: list[Surface]) -> dict:
    """{split: {metric: {linear|log: [lo, hi, top]}}} over the computed, finite values of every file
    (log: log10 of the positive ones); the loss's colour range ends at its 75th percentile."""
    out = {}
    for sp in dict.fromkeys(sp for s in surfs for sp in s.values):
        for m in dict.fromkeys(m for s in surfs if sp in s.values for m in s.values[sp]):
            v = np.concatenate([s.values[sp][m][s.mask].ravel() for s in surfs if m in s.values.get(sp, {})])
            v = v[np.isfinite(v)]
            out.setdefault(sp, {})[m] = {"linear": _span(v, m == "loss"), "log": _span(np.log10(v[v > 0]), False)}
    return out


def topk_views(m: dict) -> list[str]:
    """lambda_1 .. lambda_k of a top-k map (as embedded), in order."""
    return sorted((k for k in m["values"] if k.startswith("lambda_")), key=lambda k: int(k.split("_")[1]))


def map_ranges(files: list[dict]) -> dict:
    """{kind: {view: [lo, hi, top]}}: the colour range of each drawn value of the Hessian, trace and
    top-k maps, shared by every file's map of that kind (its computed, finite values)."""
    out = {}
    for kind in ("hessian", "trace", "topk"):
        maps = [f[kind] for f in files if f.get(kind)]
        views = {"hessian": HESSIAN_VIEWS, "trace": ("trace",)}.get(kind) or list(
            dict.fromkeys(v for m in maps for v in topk_views(m)))
        out[kind] = {}
        for view in views:
            v = [np.frombuffer(base64.b64decode(m["values"][view]), "<f8") for m in maps if view in m["values"]]
            v = np.concatenate(v) if v else np.array([])
            out[kind][view] = _span(v[np.isfinite(v)], False)
    return out


def _select(name: str, label: str, options: list[str]) -> str:
    opts = "".join(f'<option value="{html.escape(o)}">{html.escape(o)}</option>' for o in options)
    return f'<label>{label} <select id="{name}">{opts}</select></label>'


def _row(title: str, cells: list[str], note: str = "") -> str:
    note = f'<p class="note">{note}</p>' if note else ""
    return f'<section><h2>{title}</h2>{note}<div class="row" style="--n: {len(cells)}">{"".join(cells)}</div></section>'


def _cell(i: int, f: dict, view: str, when: bool, why: str, head: str | None = None) -> str:
    coarse = f" (at 1/{f['stride']} resolution: the finest nearly complete sub-grid)" if view in ("surface", "contour") \
        and f["stride"] > 1 else ""
    head = f'<h3>{html.escape(f["title"] if head is None else head)}{coarse}</h3>'
    if not when:
        return f'<div class="cell">{head}<p class="missing">{why}</p></div>'
    return f'<div class="cell">{head}<div class="plot {view}" id="f{i}-{view}" data-file="{i}" data-view="{view}"></div></div>'


def _summary(i: int, f: dict, surf: Surface | Ensemble) -> str:
    done = f["n_done"] / f["n_total"]
    grid = f"{len(f['x'])} points" if f["y"] is None else f"{len(f['y'])} × {len(f['x'])} (β × α)"
    e = f.get("ensemble")
    if e:
        what = f"direction ensemble, {e['members']} members × {grid}"
        members = f" ({e['members_done']}/{e['members']} members complete)"
        state = ("complete; statistics stored in the file" if done >= 1 else
                 f'<b class="partial">partial: {f["n_done"]}/{f["n_total"]} points ({100 * done:.1f}%) computed, '
                 f'{e["members_done"]}/{e["members"]} members complete; statistics from the points done so far</b>')
        text = ensemble_info(surf.path)
    else:
        what, members = f"surface, {grid}", ""
        state = ("complete" if done >= 1 else
                 f'<b class="partial">partial: {f["n_done"]}/{f["n_total"]} points ({100 * done:.1f}%) computed;'
                 " the others are missing (gaps, grey in heat maps)</b>")
        text = info(surf.path)
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in provenance_rows(surf))
    return (f'<div class="cell" id="f{i}-summary"><h3>{html.escape(f["title"])}</h3>'
            f'<p>{html.escape(f["path"])}: {"1D" if f["y"] is None else "2D"} {what}; '
            f'<span class="completion">completion {f["n_done"]}/{f["n_total"]} points{members}</span> — {state}</p>'
            f'<pre class="info">{html.escape(text)}</pre>'
            f'<details><summary>provenance</summary><table class="provenance">{rows}</table></details></div>')


STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 0 1.5em 2em; color: #222; }
header { position: sticky; top: 0; background: #fff; padding: .6em 0; border-bottom: 1px solid #ddd; z-index: 10; }
h1 { font-size: 1.3em; margin: .2em 0; } h2 { font-size: 1.1em; margin: 1.2em 0 .3em; } h3 { font-size: 1em; margin: .3em 0; }
#controls label { margin-right: 1.5em; }
.row { display: grid; grid-template-columns: repeat(var(--n), minmax(0, 1fr)); gap: 1em; }
.plot { height: 420px; } .plot.surface { height: 480px; } .plot.curve { height: 380px; }
.plot.ens-widths, .plot.ens-curvature { height: 320px; }
.row.hessian, .row.maps { grid-template-columns: repeat(3, minmax(0, 1fr)); }
.row.spectrum { grid-template-columns: minmax(0, 3fr) minmax(0, 2fr); }
table.values { border-collapse: collapse; font-size: 13px; margin-bottom: 1em; }
table.values th, table.values td { border: 1px solid #ddd; padding: 2px 8px; text-align: right; }
table.values th:first-child, table.values td:first-child { text-align: left; }
table.values.ensemble td:nth-child(n+3) { white-space: nowrap; }
.note, .missing { color: #666; } .partial { color: #a40; }
pre.info { background: #f6f6f6; padding: .6em; overflow-x: auto; font-size: 12px; }
table.provenance { border-collapse: collapse; font-size: 12px; }
details summary { cursor: pointer; font-weight: bold; margin: .3em 0; }
table.provenance th, table.provenance td { border: 1px solid #ddd; padding: 2px 6px; text-align: left; vertical-align: top; }
table.provenance td { white-space: pre-wrap; word-break: break-all; }
"""


def page(paths, titles=None) -> str:
    """The report of surface files `paths` as HTML text (one-line UserErrors for files that are not ones)."""
    paths = [str(p) for p in paths]
    if not paths:
        raise UserError("no surface file given: pass one or more surface files")
    titles = [Path(p).stem for p in paths] if titles is None else list(titles)
    if len(titles) != len(paths):
        raise UserError(f"{len(titles)} titles for {len(paths)} files: give one title per file")
    surfs = [read_ensemble(p) if is_ensemble(p) else read_surface(p) for p in paths]
    files = [(ensemble_data if isinstance(s, Ensemble) else file_data)(s, t) for s, t in zip(surfs, titles)]
    ensembles = [s for s in surfs if isinstance(s, Ensemble)]
    data = {"files": files, "splits": list(dict.fromkeys(sp for s in surfs for sp in s.values)),
            "ranges": shared_ranges([s for s in surfs if isinstance(s, Surface)]), "map_ranges": map_ranges(files),
            "ensemble_ranges": ensemble_ranges(ensembles), "histogram_bins": histogram_bins(files)}
    metrics = list(dict.fromkeys(m for s in surfs for d in s.values.values() for m in d))
    data["metrics"] = sorted(metrics, key=lambda m: METRICS.index(m) if m in METRICS else len(METRICS))  # loss, acc first
    try:
        from plotly.offline import get_plotlyjs
    except ImportError:
        raise UserError("the report needs plotly: `pip install plotly` (scripts/setup.sh installs it)") from None
    controls = (_select("split", "split", data["splits"]) + _select("metric", "metric", data["metrics"])
                + _select("scale", "scale", ["linear", "log"]))
    blob = json.dumps(data, allow_nan=False, separators=(",", ":")).replace("</", "<\\/")
    names = ", ".join(titles)
    plotly_js = get_plotlyjs().replace("</script", "<\\/script")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>landscape report: {html.escape(names)}</title>'
            f"<style>{STYLE}</style>\n<script>{plotly_js}</script></head>\n"
            f'<body><header><h1>Loss landscape: {html.escape(names)}</h1><div id="controls">{controls}</div></header>'
            f'<main>{"".join(_sections(files, surfs))}</main>\n<script type="application/json" id="landscape-data">{blob}</script>\n'
            f"<script>{SCRIPT.read_text()}</script></body></html>\n")


def _sections(files: list[dict], surfs: list[Surface | Ensemble]) -> list[str]:
    """The page's sections: the surfaces' views, the 1D curves, the ensembles' views, the
    trajectories, the Hessian maps, the summaries."""
    n = len(files)
    ensemble = [bool(f["ensemble"]) for f in files]
    two_d = [f["y"] is not None and not e for f, e in zip(files, ensemble)]
    one_d = [f["y"] is None and not e for f, e in zip(files, ensemble)]
    sections = []
    if n == 1 and two_d[0]:  # one file: its three views side by side
        f = files[0]
        views = [("surface", "3D surface (drag to rotate, scroll to zoom)"),
                 ("contour", "contours" + (" and the training trajectory" if f["trajectory"] else "")),
                 ("heat", "heat map (grey: not computed or not finite)")]
        sections.append(_row(f"surface: {html.escape(f['title'])}", [_cell(0, f, v, True, "", head) for v, head in views]))
    elif any(two_d):
        def cells(view):
            return [_cell(i, f, view, d, "a direction ensemble: see its views below" if e else "a 1D surface: see its curve")
                    for i, (f, d, e) in enumerate(zip(files, two_d, ensemble))]

        sections.append(_row("3D surface (drag to rotate, scroll to zoom)", cells("surface")))
        sections.append(_row("contours" + (" and the training trajectory" if any(f["trajectory"] for f in files) else ""),
                             cells("contour")))
        sections.append(_row("heat map", cells("heat"), "grey: a point not computed (or not finite)"))
    if any(one_d):
        sections.append(_row("1D curve", [_cell(i, f, "curve", d, "a direction ensemble: see its views below" if e
                                                else "a 2D surface: see its plots above")
                                          for i, (f, d, e) in enumerate(zip(files, one_d, ensemble))]))
    if any(ensemble):
        sections += _ensemble_sections(files)
    if any(f["trajectory"] and f["trajectory"]["losses"] for f in files):
        sections.append(_row("trajectory: each checkpoint's true value against the surface's value at its projection",
                             [_cell(i, f, "honesty", bool(f["trajectory"] and f["trajectory"]["losses"]), "no trajectory")
                              for i, f in enumerate(files)],
                             "bars: the checkpoint's distance from the plane over its distance to the final model"))
    for i, f in enumerate(files):
        if f["hessian"]:
            h = f["hessian"]
            done = "" if h["n_done"] == h["n_total"] else f"; partial: {h['n_done']}/{h['n_total']} points computed"
            settings = ", ".join(f"{k} {v}" for k, v in h["settings"].items() if k != "ratio")
            plots = [f'<div class="plot hessian-{v}" id="f{i}-hessian-{v}" data-file="{i}" data-view="hessian-{v}"></div>'
                     for v in HESSIAN_VIEWS]
            sections.append(f'<section><h2>Hessian maps: {html.escape(f["title"])}</h2><p class="note">ratio = '
                            f'{html.escape(HESSIAN_RATIO)}; {h["n_done"]}/{h["n_total"]} points{done}. Settings: '
                            f'{html.escape(settings)}</p><div class="row hessian">{"".join(plots)}</div></section>')
        sections += _curvature_sections(i, f)
    sections.append(_row("summary and provenance", [_summary(i, f, s) for i, (f, s) in enumerate(zip(files, surfs))]))
    return sections


def _ensemble_note(f: dict) -> str:
    e = f["ensemble"]
    shown = (f"thin lines: the {e['members']} members" if e["shown"] == e["members"] else
             f"thin lines: the first {e['shown']} of the {e['members']} members (the page carries no more)")
    done = ("statistics stored in the file" if e["stored"] else
            f'<b class="partial">partial: {e["members_done"]}/{e["members"]} members complete, {e["n_done"]}/'
            f'{e["n_total"]} points; statistics from the points done so far</b>')
    return shown, done


def _ensemble_sections(files: list[dict]) -> list[str]:
    """The ensembles' rows (a column per file, others marked): the 1D bands, the 2D mean, σ and
    member maps, the histograms of basin widths and curvatures, and their distributions' table."""
    one = [bool(f["ensemble"]) and f["y"] is None for f in files]
    two = [bool(f["ensemble"]) and f["y"] is not None for f in files]

    def cells(view, when, why, head=None):
        out = []
        for i, (f, w) in enumerate(zip(files, when)):
            note = ""
            if w:
                shown, done = _ensemble_note(f)
                note = f'<p class="note ensemble-note">{done}' + ("; " + shown if view == "band" else "") + "</p>"
            cell = _cell(i, f, view, w, "not a direction ensemble" if not f["ensemble"] else why,
                         None if head is None else f"{f['title']}: {head}")
            out.append(cell.replace("</h3>", "</h3>" + note, 1) if note else cell)
        return out

    sections = []
    if any(one):
        sections.append(_row("direction ensemble: mean curve, mean ± σ and 5–95% quantile bands, the members", cells(
            "band", one, "a 2D ensemble: see its mean and σ maps"),
            "per α over the members computed there: mean, σ (ddof 1) and quantiles; hover: α, mean, σ, quantiles, "
            "min, max and the members there"))
    if any(two):
        mean = cells("ens-mean", two, "a 1D ensemble: see its band", "mean over the members" if len(files) == 1 else None)
        std = cells("ens-std", two, "a 1D ensemble: see its band", "σ over the members (ddof 1)" if len(files) == 1 else None)
        member = []
        for i, (f, w) in enumerate(zip(files, two)):
            if not w:
                member.append(_cell(i, f, "ens-member", False, "not a direction ensemble" if not f["ensemble"]
                                    else "a 1D ensemble: its members are the thin lines of its band"))
                continue
            e = f["ensemble"]
            opts = "".join(f'<option value="{m}">{m}</option>' for m in range(e["shown"]))
            more = "" if e["shown"] == e["members"] else f" (the first {e['shown']} of {e['members']})"
            member.append(f'<div class="cell"><h3>{html.escape(f["title"])}: member <select class="member" '
                          f'id="f{i}-member" data-file="{i}">{opts}</select>{more}</h3>'
                          f'<div class="plot ens-member" id="f{i}-ens-member" data-file="{i}" data-view="ens-member">'
                          "</div></div>")
        if len(files) == 1:  # one file: its three maps side by side
            sections.append(_row(f"direction ensemble: {html.escape(files[0]['title'])}", mean + std + member,
                                 "mean and σ (ddof 1) over the members computed at each point, and one member; grey: "
                                 "a point not computed"))
        else:
            sections.append(_row("direction ensemble: mean over the members", mean))
            sections.append(_row("direction ensemble: σ over the members (ddof 1)", std))
            sections.append(_row("direction ensemble: one member", member, "grey: a point not computed"))
    ens = [bool(f["ensemble"]) for f in files]
    sections.append(_row("direction ensemble: basin widths", cells("ens-widths", ens, ""),
                         "|α| where the loss first exceeds L(θ*) + ε walking out from α = 0 (linearly interpolated), "
                         "both sides pooled, one histogram per ε (and axis); sides beyond the grid are left out"))
    sections.append(_row("direction ensemble: curvature at the centre", cells("ens-curvature", ens, ""),
                         "(L(h) − 2 L(0) + L(−h)) / h² at α = 0 (β = 0) per member"))
    sections.append(_row("direction ensemble: distributions over the members",
                         [_ensemble_table(i, f) for i, f in enumerate(files)],
                         "mean with its 95% confidence interval (Student's t), σ (ddof 1), median, n: the samples "
                         "within the grid; missing: sides beyond the grid or members not computed there"))
    return sections


def _ensemble_table(i: int, f: dict) -> str:
    head = f"<h3>{html.escape(f['title'])}</h3>"
    if not f["ensemble"]:
        return f'<div class="cell">{head}<p class="missing">not a direction ensemble</p></div>'
    rows = ""
    for sp, dists in f["ensemble"]["distributions"].items():
        for d in dists:
            ci = f"[{_num(d['ci_low'])}, {_num(d['ci_high'])}]"
            rows += (f"<tr><td>{html.escape(sp)}</td><td>{html.escape(d['what'])}</td><td>{_num(d['mean'])}</td>"
                     f"<td>{ci}</td><td>{_num(d['std'])}</td><td>{_num(d['q50'])}</td><td>{int(d['count'])}</td>"
                     f"<td>{d['missing']}</td></tr>")
    return (f'<div class="cell">{head}<table class="values ensemble" id="f{i}-ensemble-table"><tr><th>split</th>'
            "<th>quantity</th><th>mean</th><th>95% CI</th><th>σ</th><th>median</th><th>n</th><th>missing</th></tr>"
            f"{rows}</table></div>")


def _num(v) -> str:
    """A table's number: 6 significant digits; NaN as such, – for none."""
    return "–" if v is None else f"{v:.6g}"


def _point(s: dict) -> str:
    if s["label"] == "theta_star":
        return "θ*"
    return ", ".join(f"{n} = {_num(c)}" for n, c in zip("αβ", s["point"])) or s["label"]


def _setting(v) -> str:
    return _num(v) if isinstance(v, float) else str(v)


def _map_note(m: dict, what: str, keys: tuple[str, ...]) -> str:
    done = (f"{m['n_done']}/{m['n_total']} points" if m["n_done"] == m["n_total"] else
            f'<b class="partial">partial: {m["n_done"]}/{m["n_total"]} points computed (grey: not computed)</b>')
    settings = ", ".join(f"{k} {_setting(m['settings'][k])}" for k in keys if k in m["settings"])
    return f'<p class="note">{what}; {done}. Settings: {html.escape(settings)}</p>'


def _plot(i: int, view: str, extra: str = "") -> str:
    return f'<div class="plot map {view}" id="f{i}-{view}" data-file="{i}" data-view="{view}"{extra}></div>'


def _curvature_sections(i: int, f: dict) -> list[str]:
    """The trace map, the top-k map and each spectrum of file i (those it has)."""
    out, title = [], html.escape(f["title"])
    common = ("curvature", "stride", "subset", "split", "params", "precision")
    if f["trace"]:
        m = f["trace"]
        what = (f"tr {'G' if m['settings'].get('curvature') == 'ggn' else 'H'} per point, hover: its 95% interval "
                "(intervals that do not overlap differ for sure)")
        out.append(f'<section><h2>Trace map: {title}</h2>{_map_note(m, what, ("estimator", "samples", *common))}'
                   f'<div class="row maps">{_plot(i, "trace")}</div></section>')
    if f["topk"]:
        m = f["topk"]
        plots = "".join(_plot(i, f"topk-{v}") for v in topk_views(m))
        what = "the k largest eigenvalues λ1 ≥ … ≥ λk per point, hover: each with its residual ‖Hy − λy‖"
        out.append(f'<section><h2>Top-k map: {title}</h2>{_map_note(m, what, ("k", "tol", "max_iter", *common))}'
                   f'<div class="row maps">{plots}</div></section>')
    for n, s in enumerate(f["spectra"]):
        a = s["settings"]
        name = f"f{i}-spectrum-{n}"
        rows = "".join(f"<tr><th>λ{k}</th><td>{_num(v)}</td><td>± {_num(r)}</td></tr>"
                       for k, (v, r) in enumerate(zip(s["eigenvalues"], s["residuals"]), start=1))
        lo, hi = s["trace_ci"]
        rows += f"<tr><th>trace</th><td>{_num(s['trace'])}</td><td>[{_num(lo)}, {_num(hi)}]</td></tr>"
        tables = (f'<table class="values" id="{name}-values"><tr><th></th><th>value</th>'
                  f"<th>residual / 95% interval</th></tr>{rows}</table>")
        b = s["blocks"]
        if b:
            rows = "".join(f"<tr><td>{html.escape(nm)}</td><td>{b['numel'][k]:,}</td><td>{_num(b['lambda_max'][k])}</td>"
                           f"<td>± {_num(b['residual'][k])}</td><td>{_num(b['trace'][k])}</td>"
                           f"<td>[{_num(b['trace_ci'][k][0])}, {_num(b['trace_ci'][k][1])}]</td></tr>"
                           for k, nm in enumerate(b["names"]))
            tables += (f'<table class="values blocks" id="{name}-blocks"><tr><th>block</th><th>parameters</th>'
                       f"<th>λmax</th><th>residual</th><th>trace</th><th>95% interval</th></tr>{rows}</table>"
                       '<p class="note">per block: the diagonal sub-block of the curvature (the other parameters '
                       "fixed); block traces add up to the trace, block λmax are not eigenvalues of the whole</p>")
        keys = ("n_params", "loss", "curvature", "subset", "converged", "estimator", "samples", "slq_runs", "slq_steps",
                "sigma", "n_hvp", "seconds", "ranks")
        settings = ", ".join(f"{k} {_setting(a[k])}" for k in keys if k in a)
        out.append(f'<section><h2>Spectrum at {html.escape(_point(s))} ({html.escape(s["label"])}): {title}</h2>'
                   '<p class="note">SLQ density φ(t) (integrates to 1) on a symmetric-log eigenvalue axis (linear '
                   f'within ±{_num(s["lin"])}, the width σ of its Gaussians), the top-k eigenvalues marked. Settings: '
                   f'{html.escape(settings)}</p><div class="row spectrum">'
                   f'<div class="plot spectrum" id="{name}" data-file="{i}" data-view="spectrum" data-index="{n}"></div>'
                   f'<div class="cell">{tables}</div></div></section>')
    return out


def report(paths, out, *, titles=None) -> Path:
    """Write the report of surface files `paths` to `out` (an .html file); returns its path."""
    out = Path(out)
    if out.is_dir():
        raise UserError(f"{str(out)!r} is a folder: give the report's file name, e.g. {str(out / 'report.html')!r}")
    if not out.parent.is_dir():
        raise UserError(f"output folder {str(out.parent)!r} does not exist: create it or choose another --out")
    text = page(paths, titles)
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot write {str(out)!r} ({exc.strerror}): choose another --out") from None
    return out


def default_out(path) -> Path:
    """<stem>_report.html next to surface file `path`."""
    path = Path(path)
    return path.with_name(f"{path.stem}_report.html")
