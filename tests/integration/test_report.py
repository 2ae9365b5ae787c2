"""`landscape report` in a real browser: Debian's headless Chromium (Playwright) opens reports of
real surface files (made by the CLI) with the network blocked, and the test checks there are no
console errors (at opening, and after every selector change and hover), that every plot drew
(coloured pixels in its box of a screenshot), and that the hover label and the split / metric /
scale selectors show the file's own values; the trace map, the top-k map and the spectrum
(`landscape hessian --map trace|topk`, `landscape spectrum` on the digits MLP, small settings) too."""
from __future__ import annotations

import math
import shutil
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
import report_browser as rb

from landscape.viz.hessian_figures import negative_curvature_ratio

from conftest import ROOT, cli_env, run_surface

pytestmark = pytest.mark.skipif(rb.missing() is not None, reason=str(rb.missing()))
LOAD_BOUND_S = 15.0  # a 201×201 report with two splits, in this headless Chromium (README, bench/README.md)


def landscape(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "landscape", *map(str, args)], env=cli_env(), cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def shown(v: float) -> str:
    """A value as the page shows it (6 significant digits, as report.js's fmt)."""
    return "NaN" if not np.isfinite(v) else np.format_float_positional(float(f"{v:.6g}"), trim="-")


def read(path, *names):
    with h5py.File(path) as f:
        return [f[n][...] for n in names]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Real surface files: a non-square 7×5 plane (train, test), the same with another seed, a
    partial copy, a 1D line and a copy with a Hessian map."""
    d = tmp_path_factory.mktemp("report")
    common = ["--model", "digits_mlp", "--splits", "train,test", "--threads", "1", "--no-plot"]
    run_surface(common + ["--x=-1:1:7", "--y=-1:1:5", "--surf_file", str(d / "plane.h5")])
    run_surface(common + ["--x=-1:1:7", "--y=-1:1:5", "--seed", "1", "--surf_file", str(d / "other.h5")])
    run_surface(common + ["--x=-1:1:9", "--surf_file", str(d / "line.h5")])
    shutil.copy(d / "plane.h5", d / "partial.h5")
    with h5py.File(d / "partial.h5", "r+") as f:  # as a run stopped early: values NaN, mask 0
        lost = np.zeros(f["mask"].shape, bool)
        lost[:, 1::2] = True
        f["mask"][...] = np.where(lost, 0, 1).astype(np.uint8)
        for m in ("train/loss", "train/acc", "test/loss", "test/acc"):
            f[m][...] = np.where(lost, np.nan, f[m][...])
    shutil.copy(d / "plane.h5", d / "hessian.h5")
    proc = landscape("hessian", d / "hessian.h5", "--subset", 64, "--max_iter", 10, "--threads", 1, "--no-plot",
                     "--no-progress")
    assert proc.returncode == 0, proc.stderr
    return d


@pytest.fixture(scope="module")
def browser():
    with rb.chromium() as context:
        yield context


def make_report(tmp_path, *paths, name="report.html"):
    out = tmp_path / name
    proc = landscape("report", *paths, "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"[landscape] report: {out}"
    return out


def opened_clean(browser, path):
    page = rb.open_report(browser, path)
    assert page.errors == [], page.errors
    assert page.blocked == [], page.blocked  # nothing but the file itself was asked for
    return page


def closed_clean(opened):
    """No console error and no request since opening (selector changes, redraws, hovers), then close."""
    assert opened.errors == [], opened.errors
    assert opened.blocked == [], opened.blocked
    opened.page.close()


def assert_drew(image, page, ids, at_least=0.01):
    for element in ids:
        frac = rb.colourful(image, rb.box(page, element))
        assert frac >= at_least, f"{element}: {frac:.4f} of its box coloured"


def test_complete_surface_draws_and_hover_and_selectors_show_the_files_values(files, browser, tmp_path):
    path = files / "plane.h5"
    out = make_report(tmp_path, path)
    opened = opened_clean(browser, out)
    page = opened.page
    assert page.evaluate("() => document.querySelectorAll('script[src], link[href]').length") == 0  # all inside
    image = rb.screenshot(page, tmp_path / "complete.png")
    assert_drew(image, page, ["f0-surface", "f0-contour", "f0-heat"])
    x, y, loss, acc, tloss, tacc = read(path, "x", "y", "train/loss", "train/acc", "test/loss", "test/acc")
    assert loss.shape == (5, 7)
    i, j = 1, 5  # β index, α index: a non-square grid's axis order shows here
    for element in ("f0-heat", "f0-contour"):
        h = rb.hover(page, element, float(x[j]), float(y[i]))
        assert h["x"] == pytest.approx(x[j]) and h["y"] == pytest.approx(y[i])
        assert h["z"] == loss[i, j]  # exact: the values travel as float64
        assert f"train loss {shown(loss[i, j])}" in h["text"], h["text"]
        assert f"train accuracy (%) {shown(acc[i, j])}" in h["text"] and "computed" in h["text"]
    rb.select(page, "split", "test")
    h = rb.hover(page, "f0-heat", float(x[j]), float(y[i]))
    assert h["z"] == tloss[i, j] and f"test loss {shown(tloss[i, j])}" in h["text"], h["text"]
    rb.select(page, "metric", "acc")
    h = rb.hover(page, "f0-heat", float(x[j]), float(y[i]))
    assert h["z"] == tacc[i, j] and f"test accuracy (%) {shown(tacc[i, j])}" in h["text"]
    rb.select(page, "metric", "loss")
    rb.select(page, "scale", "log")
    h = rb.hover(page, "f0-heat", float(x[j]), float(y[i]))
    assert h["z"] == pytest.approx(math.log10(tloss[i, j]), rel=1e-12)  # colours log10, the label the value
    assert f"test loss {shown(tloss[i, j])}" in h["text"]
    surface = page.evaluate("() => { const t = document.getElementById('f0-surface').data[0]; "
                            "return {z: t.z, cmin: t.cmin, cmax: t.cmax}; }")
    np.testing.assert_allclose(np.array(surface["z"], float), np.log10(tloss), rtol=1e-12)
    assert surface["cmin"] == pytest.approx(np.log10(tloss).min())
    assert page.locator("#f0-summary .completion").inner_text() == "completion 35/35 points"
    assert page.evaluate("() => document.getElementById('f0-heat').layout.yaxis.title.text") == "β"
    closed_clean(opened)


def test_partial_file_shows_missing_points_as_missing(files, browser, tmp_path):
    path = files / "partial.h5"
    out = make_report(tmp_path, path)
    opened = opened_clean(browser, out)
    page = opened.page
    image = rb.screenshot(page, tmp_path / "partial.png")
    assert_drew(image, page, ["f0-surface", "f0-contour", "f0-heat"])
    x, y, loss, mask = read(path, "x", "y", "train/loss", "mask")
    done = int(mask.sum())
    assert page.locator("#f0-summary .completion").inner_text() == f"completion {done}/35 points"
    assert f"partial: {done}/35 points" in page.locator("#f0-summary").inner_text()
    assert rb.grey(image, rb.box(page, "f0-heat")) > 0.1  # the missing columns: grey cells, not zeros
    assert rb.grey(image, rb.box(page, "f0-heat")) < 0.6
    h = rb.hover(page, "f0-heat", float(x[1]), float(y[2]))  # α index 1: not computed
    assert h["z"] is None and "not computed" in h["text"] and "train loss –" in h["text"], h
    h = rb.hover(page, "f0-heat", float(x[2]), float(y[2]))
    assert h["z"] == loss[2, 2] and f"train loss {shown(loss[2, 2])}" in h["text"]
    z = page.evaluate("() => document.getElementById('f0-heat').data[0].z")
    assert [[v is None for v in row] for row in z] == (~mask.astype(bool)).tolist()
    surface = page.evaluate("() => { const t = document.getElementById('f0-surface').data[0]; return [t.x, t.y, t.z]; }")
    assert surface[0] == x[::2].tolist() and surface[1] == y[::2].tolist()  # the coarse, complete sub-grid
    np.testing.assert_array_equal(np.array(surface[2], float), loss[::2, ::2])
    assert "at 1/2 resolution" in page.locator("section").first.inner_text()
    closed_clean(opened)


def test_1d_file(files, browser, tmp_path):
    path = files / "line.h5"
    out = make_report(tmp_path, path)
    opened = opened_clean(browser, out)
    page = opened.page
    image = rb.screenshot(page, tmp_path / "line.png")
    assert_drew(image, page, ["f0-curve"], at_least=0.002)
    assert page.locator("#f0-surface").count() == 0
    x, loss, tacc = read(path, "x", "train/loss", "test/acc")
    h = rb.hover(page, "f0-curve", point=6)
    assert h["x"] == pytest.approx(x[6]) and h["y"] == loss[6] and f"train loss {shown(loss[6])}" in h["text"]
    rb.select(page, "split", "test")
    rb.select(page, "metric", "acc")
    h = rb.hover(page, "f0-curve", point=2)
    assert h["y"] == tacc[2] and f"test accuracy (%) {shown(tacc[2])}" in h["text"]
    closed_clean(opened)


def test_files_side_by_side_share_colour_and_z_scales(files, browser, tmp_path):
    paths = [files / "plane.h5", files / "other.h5", files / "line.h5"]
    out = make_report(tmp_path, *paths)
    opened = opened_clean(browser, out)
    page = opened.page
    image = rb.screenshot(page, tmp_path / "three.png")
    assert_drew(image, page, ["f0-heat", "f1-heat", "f0-surface", "f1-surface", "f0-contour", "f1-contour"])
    assert_drew(image, page, ["f2-curve"], at_least=0.002)
    losses = np.concatenate([read(p, "train/loss")[0].ravel() for p in paths])
    ranges = page.evaluate("""() => [0, 1].map(i => {
        const h = document.getElementById(`f${i}-heat`).data[0], s = document.getElementById(`f${i}-surface`);
        return [h.zmin, h.zmax, s.data[0].cmin, s.data[0].cmax, s._fullLayout.scene.zaxis.range]; })""")
    assert ranges[0] == ranges[1]  # one colour scale and one z range for both planes
    zmin, zmax, cmin, cmax, zrange = ranges[0]
    assert zmin == cmin == losses.min() and zmax == cmax == pytest.approx(np.percentile(losses, 75))
    assert zrange == pytest.approx([losses.min(), losses.max()])
    line = page.evaluate("() => document.getElementById('f2-curve').layout.yaxis.range")
    assert line[0] < losses.min() and line[1] > losses.max()
    assert [page.locator(f"#f{i}-summary h3").inner_text() for i in range(3)] == ["plane", "other", "line"]
    closed_clean(opened)


def test_trajectory_and_hessian_maps(files, browser, tmp_path, demo_checkpoint):
    traj = tmp_path / "trajectory.h5"
    run_surface(["--model_file", str(demo_checkpoint), "--trajectory", str(demo_checkpoint.parent / "epoch_*.pt"),
                 "--x=-1:1:5", "--splits", "train", "--threads", "1", "--no-plot", "--surf_file", str(traj)])
    out = make_report(tmp_path, traj, files / "hessian.h5")
    opened = opened_clean(browser, out)
    page = opened.page
    image = rb.screenshot(page, tmp_path / "trajectory.png")
    assert_drew(image, page, ["f0-contour", "f0-heat"] + [f"f1-hessian-{v}" for v in ("ratio", "lambda_max", "lambda_min")])
    assert_drew(image, page, ["f0-honesty"], at_least=0.002)
    coords, off, true, projected = read(traj, "trajectory/coords", "trajectory/off_plane", "trajectory/train/loss",
                                        "trajectory/train/loss_projected")
    k = 1
    h = rb.hover(page, "f0-contour", point=k, curve=1)  # the trajectory's trace over the contours
    assert h["curve"] == 1 and h["x"] == pytest.approx(coords[k, 0]) and h["y"] == pytest.approx(coords[k, 1])
    assert "checkpoint epoch_001.pt" in h["text"], h["text"]
    assert f"train loss (true) {shown(true[k])}" in h["text"]
    assert f"loss at the projection {shown(projected[k])}" in h["text"]
    assert f"off-plane distance {shown(off[k])}" in h["text"]
    hx, hy, lmax, lmin = read(files / "hessian.h5", "hessian/x", "hessian/y", "hessian/lambda_max", "hessian/lambda_min")
    ratio = negative_curvature_ratio(lmax, lmin)
    i, j = 2, 3
    h = rb.hover(page, "f1-hessian-ratio", float(hx[j]), float(hy[i]))
    assert h["z"] == ratio[i, j] and f"λmax {shown(lmax[i, j])}" in h["text"] and f"λmin {shown(lmin[i, j])}" in h["text"]
    h = rb.hover(page, "f1-hessian-lambda_min", float(hx[j]), float(hy[i]))
    assert h["z"] == lmin[i, j]
    assert "hessian map: 35/35 points" in page.locator("#f1-summary pre.info").inner_text()
    rb.select(page, "split", "test")  # the trajectory file has no test split: its plots say so, and draw nothing
    image = rb.screenshot(page)
    assert rb.colourful(image, rb.box(page, "f0-heat")) < 1e-4
    assert "no test/loss in trajectory" in page.locator("#f0-heat").inner_text()
    assert_drew(image, page, ["f1-heat"])
    closed_clean(opened)


def test_cli_mistakes_are_one_line(files, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not hdf5")
    cases = [([tmp_path / "missing.h5"], "does not exist"),
             ([text], "not a readable HDF5 file"),
             ([files / "plane.h5", "--out", tmp_path / "no" / "r.html"], "does not exist: create it or choose another --out"),
             ([files / "plane.h5", "--out", tmp_path], "is a folder"),
             ([files / "plane.h5", files / "line.h5", "--titles", "a"], "1 titles for 2 files")]
    for args, words in cases:
        proc = landscape("report", *args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert words in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    proc = landscape("report", files / "line.h5")  # default: <stem>_report.html next to the file
    assert proc.returncode == 0 and (files / "line_report.html").is_file()


def test_plot_jobs_write_the_report_next_to_the_file(tmp_path, browser):
    surf = tmp_path / "job.h5"
    run_surface(["--model", "digits_mlp", "--x=-1:1:3", "--y=-1:1:3", "--splits", "train", "--threads", "1",
                 "--surf_file", str(surf)])
    report = tmp_path / "job_report.html"
    assert report.is_file() and 'id="f0-hessian-ratio"' not in report.read_text()
    assert (tmp_path / "job_train_loss_contour.png").is_file()  # the static figures too
    proc = landscape("hessian", surf, "--subset", 32, "--max_iter", 5, "--threads", 1, "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert f"report: {report}" in proc.stdout and 'id="f0-hessian-ratio"' in report.read_text()
    opened = opened_clean(browser, report)
    assert_drew(rb.screenshot(opened.page), opened.page, ["f0-heat", "f0-hessian-ratio"])
    closed_clean(opened)


def test_a_201_by_201_report_loads_and_switches_within_the_time_bound(browser, tmp_path):
    path = rb.synthetic_surface(tmp_path / "big.h5", 201)
    out = make_report(tmp_path, path)
    opened = opened_clean(browser, out)
    page = opened.page
    assert opened.load_s < LOAD_BOUND_S, opened.load_s
    assert_drew(rb.screenshot(page), page, ["f0-surface", "f0-contour", "f0-heat"])
    start = time.perf_counter()
    rb.select(page, "split", "test")
    assert time.perf_counter() - start < LOAD_BOUND_S
    x, y, loss = read(path, "x", "y", "test/loss")
    h = rb.hover(page, "f0-heat", float(x[150]), float(y[37]))
    assert h["z"] == loss[37, 150] and f"test loss {shown(loss[37, 150])}" in h["text"]
    closed_clean(opened)


CURVATURE = {"trace": ["--map", "trace", "--samples", 9], "topk": ["--map", "topk", "--k", 2, "--max_iter", 10]}
SPECTRUM = ["--subset", 64, "--k", 3, "--max_iter", 20, "--samples", 9, "--slq_runs", 2, "--slq_steps", 20]


@pytest.fixture(scope="module")
def curvature(files):
    """The 7×5 plane with a trace map, a top-k map (k 2) and a spectrum at θ* with a per-block table, made by
    the CLI with small settings (64 examples: seconds on one thread); and a copy whose maps stopped early."""
    path = shutil.copy(files / "plane.h5", files / "curvature.h5")
    for args in CURVATURE.values():
        proc = landscape("hessian", path, *args, "--subset", 64, "--threads", 1, "--no-plot", "--no-progress")
        assert proc.returncode == 0, proc.stderr
    proc = landscape("spectrum", path, *SPECTRUM, "--blocks", "auto", "--threads", 1, "--no-plot")
    assert proc.returncode == 0, proc.stderr
    partial = shutil.copy(path, files / "curvature_partial.h5")
    with h5py.File(partial, "r+") as f:  # as map runs stopped early: values NaN, mask 0
        for group in ("hessian_trace", "hessian_topk"):
            lost = np.zeros(f[f"{group}/mask"].shape, bool)
            lost[:, 1::2] = True
            f[f"{group}/mask"][...] = np.where(lost, 0, 1).astype(np.uint8)
            for name in f[group]:
                if name not in ("x", "y", "mask"):
                    f[f"{group}/{name}"][...] = np.where(lost, np.nan, f[f"{group}/{name}"][...])
    return path, partial


def table(page, element_id):
    """The cells' text of a table, row by row."""
    return page.evaluate("id => Array.from(document.getElementById(id).rows).map(r => Array.from(r.cells)"
                         ".map(c => c.textContent))", element_id)


def test_trace_topk_and_spectrum_draw_and_hover_the_files_values(curvature, browser, tmp_path):
    path = curvature[0]
    out = make_report(tmp_path, path)
    opened = opened_clean(browser, out)
    page = opened.page
    image = rb.screenshot(page, tmp_path / "curvature.png")
    assert_drew(image, page, ["f0-heat", "f0-trace", "f0-topk-lambda_1", "f0-topk-lambda_2"])
    assert_drew(image, page, ["f0-spectrum-0"], at_least=0.005)  # a curve and its markers
    assert page.locator("#f0-topk-lambda_3").count() == 0
    hx, hy, trace, lo, hi, n_hvp = read(path, "hessian_trace/x", "hessian_trace/y", "hessian_trace/trace",
                                        "hessian_trace/ci_low", "hessian_trace/ci_high", "hessian_trace/n_hvp")
    i, j = 1, 5  # β index, α index
    h = rb.hover(page, "f0-trace", float(hx[j]), float(hy[i]))
    assert h["x"] == pytest.approx(hx[j]) and h["y"] == pytest.approx(hy[i])
    assert h["z"] == trace[i, j]  # exact: float64
    assert f"trace {shown(trace[i, j])}" in h["text"] and f"95% interval [{shown(lo[i, j])}, {shown(hi[i, j])}]" in h["text"]
    assert f"Hessian-vector products {shown(n_hvp[i, j])}" in h["text"] and "computed" in h["text"]
    l1, l2, r1, r2 = read(path, "hessian_topk/lambda_1", "hessian_topk/lambda_2", "hessian_topk/residual_1",
                          "hessian_topk/residual_2")
    for view, want in (("lambda_1", l1), ("lambda_2", l2)):
        h = rb.hover(page, f"f0-topk-{view}", float(hx[2]), float(hy[3]))
        assert h["z"] == want[3, 2]
        assert f"λ1 {shown(l1[3, 2])} ± {shown(r1[3, 2])}" in h["text"], h["text"]
        assert f"λ2 {shown(l2[3, 2])} ± {shown(r2[3, 2])}" in h["text"]
    eig, res, tr, ci, grid, density, names, numel, bmax, btrace = read(
        path, *(f"spectrum/theta_star/{n}" for n in ("eigenvalues", "residuals", "trace", "trace_ci", "density/grid",
                                                     "density/values", "blocks/names", "blocks/numel",
                                                     "blocks/lambda_max", "blocks/trace")))
    for k in range(3):  # the top-k markers over the density
        h = rb.hover(page, "f0-spectrum-0", point=k, curve=1)
        assert f"λ{k + 1} {shown(eig[k])} ± {shown(res[k])}" in h["text"], h["text"]
    n = 1234
    h = rb.hover(page, "f0-spectrum-0", point=n, curve=0)
    assert h["y"] == density[n] and f"t {shown(grid[n])}" in h["text"] and f"φ(t) {shown(density[n])}" in h["text"]
    assert f"tr H = {shown(float(tr))} [{shown(ci[0])}, {shown(ci[1])}]" in page.locator("#f0-spectrum-0").inner_text()
    rows = table(page, "f0-spectrum-0-values")
    assert rows[1:] == [[f"λ{k + 1}", f"{eig[k]:.6g}", f"± {res[k]:.6g}"] for k in range(3)] + [
        ["trace", f"{float(tr):.6g}", f"[{ci[0]:.6g}, {ci[1]:.6g}]"]]
    rows = table(page, "f0-spectrum-0-blocks")
    assert [r[:3] for r in rows[1:]] == [[nm.decode(), f"{c:,}", f"{m:.6g}"] for nm, c, m in zip(names, numel, bmax)]
    assert [r[4] for r in rows[1:]] == [f"{t:.6g}" for t in btrace] and numel.sum() == 4810
    summary = page.locator("#f0-summary pre.info").inner_text()
    assert "trace map: 35/35 points" in summary and "top-k map: 35/35 points" in summary
    assert "spectrum theta_star (θ*): 4,810 parameters" in summary
    rb.select(page, "split", "test")  # the maps and the spectrum do not follow the selectors: still drawn, no error
    rb.select(page, "scale", "log")
    assert_drew(rb.screenshot(page), page, ["f0-trace", "f0-topk-lambda_1"])
    assert rb.hover(page, "f0-trace", float(hx[j]), float(hy[i]))["z"] == trace[i, j]
    closed_clean(opened)


def test_partial_curvature_maps_show_missing_points_as_missing(curvature, browser, tmp_path):
    path = curvature[1]
    out = make_report(tmp_path, path)
    opened = opened_clean(browser, out)
    page = opened.page
    image = rb.screenshot(page, tmp_path / "curvature_partial.png")
    assert_drew(image, page, ["f0-trace", "f0-topk-lambda_1", "f0-topk-lambda_2"])
    hx, hy, trace, mask, l1, tmask = read(path, "hessian_trace/x", "hessian_trace/y", "hessian_trace/trace",
                                          "hessian_trace/mask", "hessian_topk/lambda_1", "hessian_topk/mask")
    done = int(mask.sum())
    for element in ("f0-trace", "f0-topk-lambda_1"):
        assert 0.1 < rb.grey(image, rb.box(page, element)) < 0.6  # the missing columns: grey cells, not zeros
    assert f"partial: {done}/35 points computed" in page.locator("section", has=page.locator("#f0-trace")).inner_text()
    h = rb.hover(page, "f0-trace", float(hx[1]), float(hy[2]))  # α index 1: not computed
    assert h["z"] is None and "not computed" in h["text"] and "trace –" in h["text"], h
    h = rb.hover(page, "f0-topk-lambda_1", float(hx[1]), float(hy[2]))
    assert h["z"] is None and "not computed" in h["text"] and "λ1 –" in h["text"], h
    h = rb.hover(page, "f0-topk-lambda_1", float(hx[2]), float(hy[2]))
    assert h["z"] == l1[2, 2] and f"λ1 {shown(l1[2, 2])}" in h["text"]
    for element, m in (("f0-trace", mask), ("f0-topk-lambda_1", tmask)):
        z = page.evaluate(f"() => document.getElementById('{element}').data[0].z")
        assert [[v is None for v in row] for row in z] == (~m.astype(bool)).tolist()
    assert f"trace map: {done}/35 points" in page.locator("#f0-summary pre.info").inner_text()
    closed_clean(opened)


def test_curvature_jobs_with_plot_write_the_report(files, browser, tmp_path):
    """`landscape hessian --map trace|topk` and `landscape spectrum` with --plot (the default) rewrite
    <stem>_report.html with their results, as surfaces and the λmax/λmin map do."""
    surf = shutil.copy(files / "line.h5", tmp_path / "line.h5")  # a 1D surface: the maps are curves
    report = tmp_path / "line_report.html"
    for args in CURVATURE.values():
        proc = landscape("hessian", surf, *args, "--subset", 64, "--threads", 1, "--no-progress")
        assert proc.returncode == 0, proc.stderr
        assert f"[landscape] report: {report}" in proc.stdout
    assert 'id="f0-trace"' in report.read_text() and 'id="f0-topk-lambda_2"' in report.read_text()
    proc = landscape("spectrum", surf, *SPECTRUM, "--point", "0.25", "--threads", 1)
    assert proc.returncode == 0, proc.stderr
    assert f"[landscape] report: {report}" in proc.stdout and 'id="f0-spectrum-0"' in report.read_text()
    opened = opened_clean(browser, report)
    page = opened.page
    image = rb.screenshot(page, tmp_path / "line_curvature.png")
    assert_drew(image, page, ["f0-trace", "f0-topk-lambda_1", "f0-topk-lambda_2", "f0-spectrum-0"], at_least=0.002)
    hx, trace, lo, hi = read(surf, "hessian_trace/x", "hessian_trace/trace", "hessian_trace/ci_low", "hessian_trace/ci_high")
    h = rb.hover(page, "f0-trace", point=3, curve=2)  # the curve (over the interval's band)
    assert h["x"] == hx[3] and h["y"] == trace[3]
    assert f"95% interval [{shown(lo[3])}, {shown(hi[3])}]" in h["text"], h["text"]
    assert "Spectrum at α = 0.25 (a0.25)" in page.locator("main").inner_text()
    closed_clean(opened)


# ---------------------------------------------------------------- direction ensembles

ENSEMBLE = ["--model", "digits_mlp", "--x=-1:1:7", "--ensemble", 6, "--subset", 300, "--threads", 1, "--splits",
            "train,test", "--epsilons", "0.005,0.02", "--no-progress"]  # ε small enough for widths within the grid


@pytest.fixture(scope="module")
def ensembles(tmp_path_factory):
    """Direction ensembles made by the CLI: a 1D one with plotting on (it writes its report), one with
    another seed, a 2D one (4 planes) and a partial copy of the first (members 3–5 stopped early)."""
    d = tmp_path_factory.mktemp("ensembles")
    proc = run_surface([*map(str, ENSEMBLE), "--surf_file", str(d / "ens.h5")])
    assert f"[landscape] report: {d / 'ens_report.html'}" in proc.stdout, proc.stdout + proc.stderr
    run_surface([*map(str, ENSEMBLE), "--seed", "1", "--no-plot", "--surf_file", str(d / "seed1.h5")])
    run_surface(["--model", "digits_mlp", "--x=-1:1:5", "--y=-1:1:3", "--ensemble", "4", "--subset", "300", "--threads",
                 "1", "--splits", "train", "--no-progress", "--no-plot", "--surf_file", str(d / "plane.h5")])
    shutil.copy(d / "ens.h5", d / "partial.h5")
    with h5py.File(d / "partial.h5", "r+") as f:  # as a run stopped early: values NaN, mask 0, no statistics
        mask = f["ensemble/mask"][...]
        mask[3:, 4:] = 0
        mask[5, :] = 0
        f["ensemble/mask"][...] = mask
        for key in ("train/loss", "train/acc", "test/loss", "test/acc"):
            f[f"ensemble/{key}"][...] = np.where(mask == 1, f[f"ensemble/{key}"][...], np.nan)
        for group in ("stats", "widths", "curvature", "rise"):
            del f[f"ensemble/{group}"]
    return d


def trace_names(page, element_id):
    return page.evaluate(f"() => document.getElementById('{element_id}').data.map(t => t.name)")


def test_ensemble_band_histograms_and_hover_show_the_files_statistics(ensembles, browser, tmp_path):
    from landscape.viz.ensemble_info import ensemble_info

    path, out = ensembles / "ens.h5", ensembles / "ens_report.html"  # written by `landscape surface --ensemble 6`
    opened = opened_clean(browser, out)
    page = opened.page
    image = rb.screenshot(page, tmp_path / "ensemble.png")
    assert_drew(image, page, ["f0-band", "f0-ens-widths", "f0-ens-curvature"])
    x, mean, std, q05, q95, count, values = read(path, "x", *(f"ensemble/stats/train/loss/{s}" for s in (
        "mean", "std", "q05", "q95", "count")), "ensemble/train/loss")
    names = trace_names(page, "f0-band")
    assert names.count("mean") == 1 and "mean ± σ" in names and "5–95% quantiles" in names
    mean_trace = names.index("mean")
    for k in (1, 5):
        h = rb.hover(page, "f0-band", point=k, curve=mean_trace)
        assert h["x"] == x[k] and h["y"] == mean[k]  # exact: float64 from the file's stats
        assert f"train loss mean {shown(mean[k])}" in h["text"] and f"σ {shown(std[k])}" in h["text"], h["text"]
        assert f"5% {shown(q05[k])}" in h["text"] and f"95% {shown(q95[k])}" in h["text"]
        assert f"members computed here {int(count[k])}/6" in h["text"]
    h = rb.hover(page, "f0-band", point=2, curve=3)  # member 3's thin line
    assert h["y"] == values[3, 2] and "member 3" in h["text"]
    rb.select(page, "split", "test")
    tmean, tacc = read(path, "ensemble/stats/test/loss/mean", "ensemble/stats/test/acc/mean")
    h = rb.hover(page, "f0-band", point=4, curve=mean_trace)
    assert h["y"] == tmean[4] and f"test loss mean {shown(tmean[4])}" in h["text"]
    rb.select(page, "metric", "acc")
    h = rb.hover(page, "f0-band", point=4, curve=mean_trace)
    assert h["y"] == tacc[4] and f"test accuracy (%) mean {shown(tacc[4])}" in h["text"]
    rb.select(page, "metric", "loss")
    rb.select(page, "scale", "log")
    assert page.evaluate("() => document.getElementById('f0-band').layout.yaxis.type") == "log"
    image = rb.screenshot(page)
    assert_drew(image, page, ["f0-band", "f0-ens-widths", "f0-ens-curvature"])
    widths, curvature = read(path, "ensemble/widths/test/x", "ensemble/curvature/test/x")
    hist = page.evaluate("() => document.getElementById('f0-ens-widths').data.map(t => t.x)")
    assert sorted(v for t in hist for v in t) == sorted(widths[np.isfinite(widths)].ravel().tolist())
    assert page.evaluate("() => document.getElementById('f0-ens-curvature').data[0].x") == curvature.tolist()
    rows = table(page, "f0-ensemble-table")
    assert rows[0] == ["split", "quantity", "mean", "95% CI", "σ", "median", "n", "missing"]
    from landscape.analysis.ensemble import distribution

    d = distribution(curvature)
    assert ["test", "curvature d²L/dα² at the centre", f"{d['mean']:.6g}", f"[{d['ci_low']:.6g}, {d['ci_high']:.6g}]",
            f"{d['std']:.6g}", f"{d['q50']:.6g}", "6", "0"] in rows
    assert page.locator("#f0-summary pre.info").inner_text() == ensemble_info(str(path))
    assert page.locator("#f0-summary .completion").inner_text() == "completion 42/42 points (6/6 members complete)"
    closed_clean(opened)


def test_partial_ensemble_states_completion_and_statistics_of_the_points_done(ensembles, browser, tmp_path):
    path = ensembles / "partial.h5"
    out = make_report(tmp_path, path)
    opened = opened_clean(browser, out)
    page = opened.page
    assert_drew(rb.screenshot(page, tmp_path / "ensemble_partial.png"), page, ["f0-band", "f0-ens-curvature"])
    mask, loss = read(path, "ensemble/mask", "ensemble/train/loss")
    done = int(mask.sum())
    assert page.locator("#f0-summary .completion").inner_text() == f"completion {done}/42 points (3/6 members complete)"
    assert "statistics from the points done so far" in page.locator("main").inner_text()
    mean_trace = trace_names(page, "f0-band").index("mean")
    for k in (1, 5):  # members 0–4 computed at α index 1, members 0–2 at index 5
        h = rb.hover(page, "f0-band", point=k, curve=mean_trace)
        want = np.nanmean(np.where(mask[:, k] == 1, loss[:, k], np.nan))
        assert h["y"] == pytest.approx(want, rel=1e-15, abs=0)
        assert f"members computed here {int(mask[:, k].sum())}/6" in h["text"], h["text"]
    assert page.evaluate("() => document.getElementById('f0-band').data[5].y") == [None] * 7  # member 5: no point
    closed_clean(opened)


def test_ensembles_side_by_side_share_scales_and_a_2d_ensemble_draws_mean_and_sigma(ensembles, browser, tmp_path):
    paths = [ensembles / "ens.h5", ensembles / "seed1.h5", ensembles / "plane.h5"]
    out = make_report(tmp_path, *paths)
    opened = opened_clean(browser, out)
    page = opened.page
    image = rb.screenshot(page, tmp_path / "ensembles.png")
    assert_drew(image, page, ["f0-band", "f1-band", "f2-ens-mean", "f2-ens-std", "f2-ens-member", "f0-ens-curvature",
                              "f1-ens-curvature", "f2-ens-curvature"])
    ranges = page.evaluate("() => [0, 1].map(i => document.getElementById(`f${i}-band`).layout.yaxis.range)")
    assert ranges[0] == ranges[1]  # one y scale for both 1D ensembles
    bins = page.evaluate("() => [0, 1, 2].map(i => document.getElementById(`f${i}-ens-curvature`).data[0].xbins)")
    assert bins[0] == bins[1] == bins[2]  # shared bins
    x, y, mean, std, member2 = read(paths[2], "x", "y", "ensemble/stats/train/loss/mean", "ensemble/stats/train/loss/std",
                                    "ensemble/train/loss")
    i, j = 2, 1  # β index, α index
    h = rb.hover(page, "f2-ens-mean", float(x[j]), float(y[i]))
    assert h["z"] == mean[i, j] and f"train loss mean {shown(mean[i, j])}" in h["text"] and f"σ {shown(std[i, j])}" in h["text"]
    h = rb.hover(page, "f2-ens-std", float(x[j]), float(y[i]))
    assert h["z"] == std[i, j]
    page.select_option("#f2-member", "2")
    rb.wait_ready(page)
    h = rb.hover(page, "f2-ens-member", float(x[j]), float(y[i]))
    assert h["z"] == member2[2, i, j] and "member 2" in h["text"]
    rb.select(page, "split", "test")  # the plane has no test split: its plots say so
    assert "no test/loss in plane" in page.locator("#f2-ens-mean").inner_text()
    assert_drew(rb.screenshot(page), page, ["f0-band", "f1-band"])
    closed_clean(opened)
