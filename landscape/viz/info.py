"""`landscape info SURFACE.h5`: a short textual summary of a surface file (never imports torch).

Grid, completion (of the surface and of its Hessian map), the curvature results (the trace map
with the interval at the centre, the top-k map, each spectrum with its eigenvalues, trace and
per-block table), per split the minimum loss and where,
the loss at the centre and the sharpness along each axis, the other metrics at the centre (the
accuracy, the user's own metrics), non-finite values, the trajectory and the provenance
(fingerprints, directions, seed, versions, the config's model and data). For a causal LM (the task
stored with the job) each loss is followed by its perplexity exp(loss).

Sharpness, per split and axis, around the centre c: the grid point nearest (0, 0), i.e. θ* (on
an axis that does not contain 0, its middle point). Two numbers, the other coordinate at c:
  - rise (− / + side): L(p) − L(c) at the grid point p nearest halfway from c to each end of the
    axis (α = ±0.5 on a −1:1 grid), taken among the points on that side of c;
  - curvature: the central second difference (L(c − h) − 2 L(c) + L(c + h)) / h², h the grid step.
A value whose points are not computed (or not finite) is shown as n/a.
"""
from __future__ import annotations

import numpy as np

from ..errors import UserError
from ..io.surface_file import METRICS, TOPK_MAP, TRACE_MAP, read_map, read_sharpness, read_spectra, read_surface


def _fmt(v) -> str:
    return "n/a" if v is None or not np.isfinite(v) else f"{v:.4g}"


def _has_zero(c: np.ndarray) -> bool:
    return min(c[0], c[-1]) <= 0 <= max(c[0], c[-1])


def _centre(c: np.ndarray) -> int:
    """Index of the coordinate nearest 0 (θ*), or the middle one when 0 is outside the axis."""
    return int(np.argmin(np.abs(c))) if _has_zero(c) else len(c) // 2


def _at(loss, idx):
    v = loss[idx]
    return float(v) if np.isfinite(v) else None


def sharpness(coords: np.ndarray, line: np.ndarray, i: int) -> dict:
    """Rise (−, +) at the points halfway to each end and the curvature at index i of one axis's
    loss line (NaN where not computed)."""
    c, lc = coords[i], _at(line, i)
    out = {"rise": [None, None], "curvature": None}
    if lc is None:
        return out
    for k, side in enumerate((np.arange(i), np.arange(i + 1, len(coords)))):  # the points on each side
        if len(side):
            end = coords[side[0] if k == 0 else side[-1]]
            j = side[np.argmin(np.abs(coords[side] - (c + (end - c) / 2)))]
            v = _at(line, j)
            out["rise"][k] = None if v is None else v - lc
    if 0 < i < len(coords) - 1:
        lo, hi = _at(line, i - 1), _at(line, i + 1)
        h = (coords[i + 1] - coords[i - 1]) / 2
        if lo is not None and hi is not None and h:
            out["curvature"] = (lo - 2 * lc + hi) / h ** 2
    return out


def _range(c: np.ndarray) -> str:
    step = f", step {_fmt((c[-1] - c[0]) / (len(c) - 1))}" if len(c) > 1 else ""
    return f"{_fmt(c[0])} .. {_fmt(c[-1])}, {len(c)} points{step}"


def _directions(source: dict) -> str:
    if "trajectory" in source:
        return f"PCA of {len(source['trajectory'])} checkpoints"
    if "models" in source:
        text = "from models: " + ", ".join(str(m) for m in source["models"])
        if "random_y" in source:
            text += f"; y random (seed {source['random_y'].get('seed')})"
        return text
    if "seed" in source:
        return (f"random Gaussian (seed {source['seed']}, norm {'/'.join(source.get('norm', []))}, "
                f"ignore {'/'.join(source.get('ignore', []))})")
    return "given (a --dir_file or the API)" if source else "–"


def _ppl(loss) -> str:
    """' (perplexity exp(loss))' of a causal LM's mean next-token loss."""
    if loss is None or not np.isfinite(loss):
        return " (perplexity n/a)"
    with np.errstate(over="ignore"):
        return f" (perplexity {_fmt(float(np.exp(loss)))})"


def _selection(params) -> str:
    """The --params / --exclude selection of a job and its size."""
    if not params:
        return "every tensor"
    text = f"--params {','.join(params['params']) or '(all)'}"
    text += f" --exclude {','.join(params['exclude'])}" if params.get("exclude") else ""
    if "tensors" in params:
        text += f" ({params['tensors']} tensors, {params['numel']:,} parameters)"
    return text


def _optional(read, *args):
    try:
        return read(*args)
    except UserError:  # the file has no such group
        return None


def _map_head(name: str, m) -> tuple[str, tuple, str]:
    """'<name>: n/N points (p%), stride s', the map's centre index and where it is."""
    done, total = int(m.mask.sum()), m.mask.size
    stride = m.settings.get("stride")
    ix = _centre(m.x)
    centre = (ix,) if m.y is None else (_centre(m.y), ix)
    where = f"α = {_fmt(m.x[ix])}" + ("" if m.y is None else f", β = {_fmt(m.y[centre[0]])}")
    return (f"  {name}: {done}/{total} points ({100 * done / total:.1f}%)" + (f", stride {stride}" if stride else ""),
            centre, where)


def _extreme(m, values: np.ndarray, largest: bool) -> str:
    """'v at (α = a, β = b)' of the largest (or smallest) computed, finite value, or n/a."""
    v = np.where(m.mask & np.isfinite(values), values, np.nan)
    if not np.isfinite(v).any():
        return "n/a"
    k = np.unravel_index(int(np.nanargmax(v) if largest else np.nanargmin(v)), v.shape)
    return f"{_fmt(v[k])} at (α = {_fmt(m.x[k[-1]])}" + ("" if m.y is None else f", β = {_fmt(m.y[k[0]])}") + ")"


def curvature_lines(path) -> list[str]:
    """The trace map, the top-k map and each spectrum of surface file `path`, as info's lines
    ([] for a file without them)."""
    lines = []
    trace, topk, spectra = (_optional(read_map, path, TRACE_MAP), _optional(read_map, path, TOPK_MAP),
                            _optional(read_spectra, path) or {})
    if trace is not None:
        head, c, where = _map_head("trace map", trace)
        a, v = trace.settings, trace.values
        at = lambda name: _at(np.where(trace.mask, v[name], np.nan), c)  # noqa: E731
        bad = int((trace.mask & ~np.isfinite(v["trace"])).sum())
        h = "G" if a.get("curvature") == "ggn" else "H"
        lines.append(f"{head}; tr {h}, {a.get('estimator')} with {a.get('samples')} products; non-finite {bad}")
        lines.append(f"    at the centre ({where}): {_fmt(at('trace'))}, 95% interval [{_fmt(at('ci_low'))}, "
                     f"{_fmt(at('ci_high'))}]; lowest {_extreme(trace, v['trace'], False)}, highest "
                     f"{_extreme(trace, v['trace'], True)}")
    if topk is not None:
        head, c, where = _map_head("top-k map", topk)
        v = topk.values
        k = len([n for n in v if n.startswith("lambda_")])
        at = lambda name: _at(np.where(topk.mask, v[name], np.nan), c) if name in v else None  # noqa: E731
        values = ", ".join(f"λ{i} {_fmt(at(f'lambda_{i}'))} ± {_fmt(at(f'residual_{i}'))}" for i in range(1, k + 1))
        bad = int((topk.mask & ~np.isfinite(v["lambda_1"])).sum()) if "lambda_1" in v else 0
        lines.append(f"{head}; k {k}; non-finite {bad}")
        lines.append(f"    at the centre ({where}): {values}; highest λ1 "
                     f"{_extreme(topk, v['lambda_1'], True) if 'lambda_1' in v else 'n/a'}")
    for label, s in spectra.items():
        v, a = s.values, s.settings
        point = a.get("point", [])
        where = "θ*" if label == "theta_star" else ", ".join(f"{n} = {_fmt(c)}" for n, c in zip("αβ", point))
        eig = ", ".join(f"{_fmt(e)} ± {_fmt(r)}" for e, r in zip(v.get("eigenvalues", []), v.get("residuals", [])))
        ci = v.get("trace_ci", [np.nan, np.nan])
        h = "G" if a.get("curvature") == "ggn" else "H"
        n = a.get("n_params")
        lines.append(f"  spectrum {label} ({where}): {f'{n:,} parameters, ' if isinstance(n, int) else ''}"
                     f"density {a.get('slq_runs')} × {a.get('slq_steps')} SLQ steps")
        lines.append(f"    top eigenvalues {eig or 'n/a'}{'' if a.get('converged', True) else ' (not all converged)'}; "
                     f"tr {h} {_fmt(float(v['trace'])) if 'trace' in v else 'n/a'}, 95% interval [{_fmt(ci[0])}, "
                     f"{_fmt(ci[1])}]")
        if "blocks/names" in v:
            for i, name in enumerate(v["blocks/names"]):
                bci = v["blocks/trace_ci"][i]
                lines.append(f"    block {name}: {int(v['blocks/numel'][i]):,} parameters, λmax "
                             f"{_fmt(v['blocks/lambda_max'][i])}, trace {_fmt(v['blocks/trace'][i])} "
                             f"[{_fmt(bci[0])}, {_fmt(bci[1])}]")
    return lines


def sharpness_lines(path) -> list[str]:
    """Each `landscape sharpness` measure of the file: its mean over the batches done and its settings."""
    lines = []
    for measure, m in read_sharpness(path).items():
        rise, a = m.values["rise"][m.mask], m.settings
        unit = "%" if measure == "keskar" else ""
        spread = f", σ over batches {np.std(rise, ddof=1):.4g}{unit}" if len(rise) > 1 else ""
        lines.append(f"sharpness {measure} (ρ {a.get('rho')}, m {a.get('m')}, {a.get('steps')} steps): "
                     + (f"{np.mean(rise):.6g}{unit} over {len(rise)}/{m.mask.size} batches{spread}" if len(rise)
                        else f"0/{m.mask.size} batches done"))
    return lines


def info(path) -> str:
    """The summary of surface file `path` as text (raises UserError for a file that is not one)."""
    surf = read_surface(path)
    prov = surf.provenance
    job, config = prov.job, prov.config
    task = job.get("task") or config.get("task") or "classification"
    ppl = _ppl if task == "causal_lm" else (lambda loss: "")
    two_d = surf.y is not None
    lines = [f"{path}: {'2D' if two_d else '1D'} surface"]
    lines.append(f"  x: {_range(surf.x)}")
    if two_d:
        lines.append(f"  y: {_range(surf.y)}")
    n, total = int(surf.mask.sum()), surf.mask.size
    lines.append(f"  completion: {n}/{total} points ({100 * n / total:.1f}%)")
    if surf.hessian_mask is not None:
        h, ht = int(surf.hessian_mask.sum()), surf.hessian_mask.size
        stride = surf.hessian_stride
        lines.append(f"  hessian map: {h}/{ht} points ({100 * h / ht:.1f}%)" + (f", stride {stride}" if stride else ""))
    lines += curvature_lines(path)
    lines += [f"  {line}" for line in sharpness_lines(path)]
    ix = _centre(surf.x)
    iy = _centre(surf.y) if two_d else None
    centre = (ix,) if not two_d else (iy, ix)
    where = f"α = {_fmt(surf.x[ix])}" + (f", β = {_fmt(surf.y[iy])}" if two_d else "")
    at_zero = _has_zero(surf.x) and (not two_d or _has_zero(surf.y))
    lines.append(f"  centre: {where} ({'θ*' if at_zero else 'middle of the grid'}); sharpness: the rise "
                 "halfway to each end of an axis and the curvature, at the centre")
    for sp, metrics in surf.values.items():
        bad = sum(int((surf.mask & ~np.isfinite(v)).sum()) for v in metrics.values())
        text = f"  {sp}:"
        if "loss" in metrics:
            loss = np.where(surf.mask, metrics["loss"], np.nan)
            finite = np.isfinite(loss)
            if finite.any():
                k = np.unravel_index(int(np.nanargmin(np.where(finite, loss, np.inf))), loss.shape)
                at = f"α = {_fmt(surf.x[k[-1]])}" + (f", β = {_fmt(surf.y[k[0]])}" if two_d else "")
                text += f" min loss {_fmt(loss[k])}{ppl(float(loss[k]))} at ({at});"
            text += f" loss at centre {_fmt(_at(loss, centre))}{ppl(_at(loss, centre))};"
            if "acc" in metrics:
                text += f" acc at centre {_fmt(_at(np.where(surf.mask, metrics['acc'], np.nan), centre))}%;"
            text += "".join(f" {m} at centre {_fmt(_at(np.where(surf.mask, v, np.nan), centre))};"
                            for m, v in metrics.items() if m not in METRICS)
            text += f" non-finite {bad}"
            lines.append(text)
            axes = [("α", surf.x, loss if not two_d else loss[iy, :], ix)]
            if two_d:
                axes.append(("β", surf.y, loss[:, ix], iy))
            for name, coords, line, i in axes:
                s = sharpness(coords, line, i)
                lines.append(f"    sharpness along {name}: rise {_fmt(s['rise'][0])} / {_fmt(s['rise'][1])} "
                             f"(− / + side), curvature {_fmt(s['curvature'])}")
        else:
            lines.append(text + " no loss;" + "".join(f" {m} at centre {_fmt(_at(np.where(surf.mask, v, np.nan), centre))};"
                                                      for m, v in metrics.items() if m != "loss") + f" non-finite {bad}")
    if surf.trajectory is not None:
        t = surf.trajectory
        ev = t.explained_variance
        lines.append(f"  trajectory: {len(t.off_plane)} checkpoints, PC1 {100 * ev[0]:.1f}%, PC2 {100 * ev[1]:.1f}% "
                     f"of variance, largest off-plane distance {_fmt(float(np.max(t.off_plane)))}")
    lines.append("  provenance:")
    keys = ("model", "model_file", "model_file2", "model_file3", "dir_file", "dataset")
    given = [f"{k} {config[k]}" for k in keys if config.get(k)]
    given += [f"{k} {job[k]}" for k in ("task", "loss_name", "dir_type") if k in job]
    lines.append(f"    job: {', '.join(given) or '–'}")
    data = job.get("data_fingerprint", {})
    lines.append(f"    fingerprints: model {job.get('model_fingerprint', '–')}, directions "
                 f"{job.get('directions_fingerprint', '–')}"
                 + "".join(f", {k} data {v}" for k, v in (data.items() if isinstance(data, dict) else [])))
    lines.append(f"    directions: {_directions(job.get('directions', {}))}")
    lines.append(f"    tensors moved: {_selection(job.get('params'))}"
                 + (f"; weights in {job['weights_dtype']}" if job.get("weights_dtype", "float32") != "float32" else ""))
    lines.append(f"    seed {prov.seed}; versions: {prov.versions}")
    return "\n".join(lines)
