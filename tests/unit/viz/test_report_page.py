"""The report page (viz.report) without a browser, on surface files written through io.surface_file:
the embedded values equal the file's bit for bit, the shared scales are those of the files' values,
mistakes are one-line UserErrors, nothing imports torch or matplotlib, and the 201×201 size bound."""
import base64
import json
import re
import subprocess
import sys

import numpy as np
import pytest

from landscape.core.grid import Grid
from landscape.errors import UserError
from landscape.io import surface_file
from landscape.viz import report as rep

from conftest import ROOT, cli_env

SIZE_BOUND_MB = 8.0  # the report of a 201×201 surface with two splits (README, bench/README.md)


def surface(path, x, y, fn, mask=None, splits=("train", "test")):
    """A surface file with <split>/loss = fn(α, β) + k (k: the split's index) and acc = 100 − loss."""
    grid = Grid(np.asarray(x, float), None if y is None else np.asarray(y, float))
    metrics = [f"{sp}/{m}" for sp in splits for m in ("loss", "acc")]
    surface_file.prepare(path, grid, metrics, {"task": "classification"}, directions=[{"w": np.ones(3)}] * grid.ndim,
                         attrs={"seed": 0, "versions": "test"})
    a, b = (grid.x, np.zeros_like(grid.x)) if y is None else np.meshgrid(grid.x, grid.y)
    done = np.ones(a.shape, bool) if mask is None else mask
    with surface_file.open_for_writing(path) as f:
        for k, sp in enumerate(splits):
            loss = fn(a, b) + k
            f[f"{sp}/loss"][...] = np.where(done, loss, np.nan)
            f[f"{sp}/acc"][...] = np.where(done, 100 - loss, np.nan)
        f["mask"][...] = done.astype(np.uint8)
    return path


def embedded(html: str) -> dict:
    return json.loads(re.search(r'<script type="application/json" id="landscape-data">(.*?)</script>', html, re.S)[1])


def decode(b64, dtype="<f8"):
    return np.frombuffer(base64.b64decode(b64), dtype)


def test_the_page_holds_the_files_values_exactly(tmp_path):
    x, y = np.linspace(-1, 1, 7), np.linspace(-0.5, 0.5, 4)  # non-square
    mask = np.ones((4, 7), bool)
    mask[1, 2] = False
    path = surface(tmp_path / "s.h5", x, y, lambda a, b: 1 / 3 + a ** 2 + np.pi * b ** 2, mask)
    data = embedded(rep.page([path]))
    f = data["files"][0]
    s = surface_file.read_surface(path)
    assert f["x"] == x.tolist() and f["y"] == y.tolist() and f["n_done"] == 27 and f["n_total"] == 28
    np.testing.assert_array_equal(decode(f["mask"], "u1").reshape(4, 7), s.mask)
    for sp in ("train", "test"):
        for m in ("loss", "acc"):
            np.testing.assert_array_equal(decode(f["splits"][sp][m]).reshape(4, 7), s.values[sp][m])  # NaN too
    assert data["splits"] == ["train", "test"] and data["metrics"] == ["loss", "acc"]
    assert f["trajectory"] is None and f["hessian"] is None and f["stride"] == 1
    assert f["labels"] == ["α", "β"]


def test_colour_and_z_scales_are_shared_by_the_files(tmp_path):
    x = np.linspace(-1, 1, 5)
    a = surface(tmp_path / "a.h5", x, x, lambda a, b: 1 + a ** 2 + b ** 2)
    b = surface(tmp_path / "b.h5", x, x, lambda a, b: 0.5 + 4 * a ** 2, splits=("train",))
    r = embedded(rep.page([a, b]))["ranges"]
    both = np.concatenate([surface_file.read_surface(p).values["train"]["loss"].ravel() for p in (a, b)])
    assert r["train"]["loss"]["linear"] == pytest.approx([both.min(), np.percentile(both, 75), both.max()])
    assert r["train"]["loss"]["log"] == pytest.approx([np.log10(both.min()), np.log10(both.max()), np.log10(both.max())])
    acc = 100 - both
    assert r["train"]["acc"]["linear"] == pytest.approx([acc.min(), acc.max(), acc.max()])  # full range: not a loss
    test = surface_file.read_surface(a).values["test"]["loss"]  # only a has test: its own range
    assert r["test"]["loss"]["linear"][0] == test.min()


def test_ranges_leave_out_points_not_computed_and_non_finite_values(tmp_path):
    x = np.linspace(-1, 1, 5)
    mask = np.ones((5, 5), bool)
    mask[0, 0] = False
    path = surface(tmp_path / "s.h5", x, x, lambda a, b: 1 + a + b, mask)  # the missing corner is the minimum
    with surface_file.open_for_writing(path) as f:
        loss = f["train/loss"][...]
        loss[4, 4] = np.inf  # a computed point that diverged
        loss[0, 0] = -100.0  # written, but its mask entry not yet: not computed
        f["train/loss"][...] = loss
    lo, hi, top = embedded(rep.page([path]))["ranges"]["train"]["loss"]["linear"]
    finite = loss[mask & np.isfinite(loss)]
    assert lo == finite.min() > -1 and top == finite.max() < 3


def test_coarse_sub_grid_of_a_partial_file(tmp_path):
    mask = np.zeros((9, 9), bool)
    mask[::4, ::4] = True  # the first pass of a coarse-to-fine run
    assert rep.stride(mask) == 4
    mask[::2, ::2] = True
    assert rep.stride(mask) == 2
    assert rep.stride(np.ones((9, 9), bool)) == 1
    x = np.linspace(-1, 1, 9)
    path = surface(tmp_path / "s.h5", x, x, lambda a, b: a + b, mask)
    assert embedded(rep.page([path]))["files"][0]["stride"] == 2


def test_titles_and_provenance(tmp_path):
    x = np.linspace(-1, 1, 3)
    a, b = surface(tmp_path / "a.h5", x, None, lambda a, b: a ** 2), surface(tmp_path / "b.h5", x, None, lambda a, b: a)
    html = rep.page([a, b], titles=["with skip", "no <skip>"])
    assert [f["title"] for f in embedded(html)["files"]] == ["with skip", "no <skip>"]
    assert "no &lt;skip&gt;" in html and "no <skip>" not in html.split('id="landscape-data"')[0]  # escaped
    assert 'id="f0-curve"' in html and 'id="f1-curve"' in html and 'id="f0-surface"' not in html
    rows = dict(rep.provenance_rows(surface_file.read_surface(a)))
    assert rows["job: task"] == "classification" and rows["seed"] == "0" and rows["versions"] == "test"


def test_mistakes_are_one_line_user_errors(tmp_path):
    x = np.linspace(-1, 1, 3)
    path = surface(tmp_path / "s.h5", x, x, lambda a, b: a + b)
    text = tmp_path / "t.txt"
    text.write_text("x")
    cases = [(lambda: rep.report([path], tmp_path / "nope" / "r.html"), "does not exist: create it"),
             (lambda: rep.report([path], tmp_path), "is a folder"),
             (lambda: rep.report([tmp_path / "missing.h5"], tmp_path / "r.html"), "does not exist"),
             (lambda: rep.report([text], tmp_path / "r.html"), "not a readable HDF5 file"),
             (lambda: rep.page([path, path], titles=["one"]), "1 titles for 2 files"),
             (lambda: rep.page([]), "no surface file given")]
    for call, words in cases:
        with pytest.raises(UserError, match=re.escape(words)) as info:
            call()
        assert "\n" not in str(info.value)
    assert not (tmp_path / "r.html").exists()


def test_report_imports_neither_torch_nor_matplotlib(tmp_path):
    x = np.linspace(-1, 1, 3)
    path = surface(tmp_path / "s.h5", x, x, lambda a, b: a + b)
    code = ("import sys; from landscape.viz.report import report; report([sys.argv[1]], sys.argv[2]); "
            "bad = [m for m in ('torch', 'matplotlib') if m in sys.modules]; assert not bad, bad")
    proc = subprocess.run([sys.executable, "-c", code, str(path), str(tmp_path / "r.html")], env=cli_env(), cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "r.html").stat().st_size > 1e6  # plotly.js is inside


def test_a_201_by_201_report_with_two_splits_stays_under_the_size_bound(tmp_path):
    import plotly
    from plotly.offline import get_plotlyjs

    sys.path.insert(0, str(ROOT / "tests"))
    from report_browser import synthetic_surface

    path = synthetic_surface(tmp_path / "big.h5")
    out = rep.report([path], tmp_path / "big.html")
    size = out.stat().st_size
    assert size < SIZE_BOUND_MB * 1e6, size
    assert get_plotlyjs()[:2000] in out.read_text()  # the wheel's plotly.js, whole
    values = 4 * 201 * 201 * 8 * 4 / 3  # four float64 arrays in base64
    assert size > len(get_plotlyjs()) + values, (size, plotly.__version__)
