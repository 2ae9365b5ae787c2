"""`landscape report` in a real browser: Debian's headless Chromium (Playwright) opens reports of
real surface files (made by the CLI) with the network blocked, and the test checks there are no
console errors, that every plot drew (coloured pixels in its box of a screenshot), and that the
hover label and the split / metric / scale selectors show the file's own values."""
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
    page.close()


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
    page.close()


def test_1d_file(files, browser, tmp_path):
    path = files / "line.h5"
    out = make_report(tmp_path, path)
    page = opened_clean(browser, out).page
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
    page.close()


def test_files_side_by_side_share_colour_and_z_scales(files, browser, tmp_path):
    paths = [files / "plane.h5", files / "other.h5", files / "line.h5"]
    out = make_report(tmp_path, *paths)
    page = opened_clean(browser, out).page
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
    page.close()


def test_trajectory_and_hessian_maps(files, browser, tmp_path, demo_checkpoint):
    traj = tmp_path / "trajectory.h5"
    run_surface(["--model_file", str(demo_checkpoint), "--trajectory", str(demo_checkpoint.parent / "epoch_*.pt"),
                 "--x=-1:1:5", "--splits", "train", "--threads", "1", "--no-plot", "--surf_file", str(traj)])
    out = make_report(tmp_path, traj, files / "hessian.h5")
    page = opened_clean(browser, out).page
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
    page.close()


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
    page = opened_clean(browser, report).page
    assert_drew(rb.screenshot(page), page, ["f0-heat", "f0-hessian-ratio"])
    page.close()


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
    page.close()
