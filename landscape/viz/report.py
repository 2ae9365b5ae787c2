"""`landscape report FILE [FILE ...] --out report.html`: one self-contained interactive page.

Built from the surface files only (io.surface_file readers; never torch, never matplotlib), drawn
by Plotly: plotly.js (from the plotly wheel) is embedded, so the page opens offline. It holds

  - per 2D file a 3D surface (rotate, zoom), contour lines (with the trajectory's checkpoints on
    them) and a heat map; per 1D file the curve; hover gives α, β, every metric of the split and
    whether the point is computed; one split / metric / linear-log selector drives every plot;
  - the trajectory's checkpoints: true loss, loss at the projection, off-plane distance;
  - the Hessian maps (negative-curvature ratio, λmax, λmin) on the surface's axes, with residuals
    and Hessian-vector products per point;
  - the `landscape info` summary and the provenance (job, config, seed, versions) as a table;
  - several files side by side (a column each) on shared colour and z scales.

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

from ..errors import UserError
from ..io.surface_file import HESSIAN_RATIO, HessianMap, Surface, read_hessian, read_surface
from .arrays import negative_curvature_ratio, stride
from .info import info

SCRIPT = Path(__file__).with_name("report.js")
HESSIAN_VIEWS = ("ratio", "lambda_max", "lambda_min")


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


def _hessian(m: HessianMap) -> dict:
    values = {"ratio": negative_curvature_ratio(m.values["lambda_max"], m.values["lambda_min"]), **m.values}
    mask = np.asarray(m.mask, bool)
    return {"x": _list(m.x), "y": None if m.y is None else _list(m.y), "mask": _b64(mask, "u1"),
            "n_done": int(mask.sum()), "n_total": int(mask.size), "x_range": list(m.x_range),
            "y_range": None if m.y_range is None else list(m.y_range),
            "values": {k: _b64(np.where(mask, v, np.nan)) for k, v in values.items()},
            "settings": {k: (v if isinstance(v, (str, int, float, bool)) else str(v)) for k, v in m.settings.items()}}


def file_data(surf: Surface, title: str) -> dict:
    """What the page needs of one file (values exact, base64 float64, axis order (y, x))."""
    t = surf.trajectory
    trajectory = None
    if t is not None:
        trajectory = {"coords": [_list(c) for c in t.coords], "off_plane": _list(t.off_plane),
                      "files": [Path(f).name for f in t.files] or [str(i) for i in range(len(t.off_plane))],
                      "losses": {sp: {k: _list(v) for k, v in d.items()} for sp, d in t.losses.items()}}
    hessian = read_hessian(surf.path) if surf.hessian_mask is not None else None
    return {"title": title, "path": surf.path, "x": _list(surf.x), "y": None if surf.y is None else _list(surf.y),
            "labels": axis_labels(surf), "mask": _b64(surf.mask, "u1"), "n_done": int(surf.mask.sum()),
            "stride": stride(surf.mask) if surf.y is not None else 1,
            "n_total": int(surf.mask.size),
            "splits": {sp: {m: _b64(v) for m, v in d.items()} for sp, d in surf.values.items()},
            "trajectory": trajectory, "hessian": None if hessian is None else _hessian(hessian)}


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


def hessian_ranges(maps: list[dict]) -> dict:
    """{view: [lo, hi]} shared by every file's Hessian map."""
    out = {}
    for view in HESSIAN_VIEWS:
        v = [np.frombuffer(base64.b64decode(h["values"][view]), "<f8") for h in maps]
        v = np.concatenate(v) if v else np.array([])
        out[view] = _span(v[np.isfinite(v)], False)
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


def _summary(i: int, f: dict, surf: Surface) -> str:
    done = f["n_done"] / f["n_total"]
    grid = f"{len(f['x'])} points" if f["y"] is None else f"{len(f['y'])} × {len(f['x'])} (β × α)"
    state = ("complete" if done >= 1 else
             f'<b class="partial">partial: {f["n_done"]}/{f["n_total"]} points ({100 * done:.1f}%) computed;'
             " the others are missing (gaps, grey in heat maps)</b>")
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in provenance_rows(surf))
    return (f'<div class="cell" id="f{i}-summary"><h3>{html.escape(f["title"])}</h3>'
            f'<p>{html.escape(f["path"])}: {"1D" if f["y"] is None else "2D"} surface, {grid}; '
            f'<span class="completion">completion {f["n_done"]}/{f["n_total"]} points</span> — {state}</p>'
            f'<pre class="info">{html.escape(info(surf.path))}</pre>'
            f'<details><summary>provenance</summary><table class="provenance">{rows}</table></details></div>')


STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 0 1.5em 2em; color: #222; }
header { position: sticky; top: 0; background: #fff; padding: .6em 0; border-bottom: 1px solid #ddd; z-index: 10; }
h1 { font-size: 1.3em; margin: .2em 0; } h2 { font-size: 1.1em; margin: 1.2em 0 .3em; } h3 { font-size: 1em; margin: .3em 0; }
#controls label { margin-right: 1.5em; }
.row { display: grid; grid-template-columns: repeat(var(--n), minmax(0, 1fr)); gap: 1em; }
.plot { height: 420px; } .plot.surface { height: 480px; } .plot.curve { height: 380px; }
.row.hessian { grid-template-columns: repeat(3, minmax(0, 1fr)); }
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
    surfs = [read_surface(p) for p in paths]
    files = [file_data(s, t) for s, t in zip(surfs, titles)]
    data = {"files": files, "splits": list(dict.fromkeys(sp for s in surfs for sp in s.values)),
            "ranges": shared_ranges(surfs), "hessian_ranges": hessian_ranges([f["hessian"] for f in files if f["hessian"]])}
    data["metrics"] = list(dict.fromkeys(m for s in surfs for d in s.values.values() for m in d))
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


def _sections(files: list[dict], surfs: list[Surface]) -> list[str]:
    """The page's sections: the surfaces' views, the 1D curves, the trajectories, the Hessian maps, the summaries."""
    n = len(files)
    two_d = [f["y"] is not None for f in files]
    sections = []
    if n == 1 and two_d[0]:  # one file: its three views side by side
        f = files[0]
        views = [("surface", "3D surface (drag to rotate, scroll to zoom)"),
                 ("contour", "contours" + (" and the training trajectory" if f["trajectory"] else "")),
                 ("heat", "heat map (grey: not computed or not finite)")]
        sections.append(_row(f"surface: {html.escape(f['title'])}", [_cell(0, f, v, True, "", head) for v, head in views]))
    elif any(two_d):
        def cells(view):
            return [_cell(i, f, view, d, "a 1D surface: see its curve") for i, (f, d) in enumerate(zip(files, two_d))]

        sections.append(_row("3D surface (drag to rotate, scroll to zoom)", cells("surface")))
        sections.append(_row("contours" + (" and the training trajectory" if any(f["trajectory"] for f in files) else ""),
                             cells("contour")))
        sections.append(_row("heat map", cells("heat"), "grey: a point not computed (or not finite)"))
    if not all(two_d):
        sections.append(_row("1D curve", [_cell(i, f, "curve", not d, "a 2D surface: see its plots above")
                                          for i, (f, d) in enumerate(zip(files, two_d))]))
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
    sections.append(_row("summary and provenance", [_summary(i, f, s) for i, (f, s) in enumerate(zip(files, surfs))]))
    return sections


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
