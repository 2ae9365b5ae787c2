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


# ---------------------------------------------------------------- curvature: trace map, top-k map, spectra


def curvature(path, stride_mask=None, blocks=True, k=3):
    """Add to surface file `path` a trace map, a top-k map (k eigenvalues) on the surface's grid (points of
    `stride_mask` only computed, the others NaN as a stopped run leaves them) and a spectrum at θ* and at
    α = 0.5 (with a per-block table when `blocks`), written through io.surface_file as the library does."""
    s = surface_file.read_surface(path)
    grid = Grid(s.x, s.y)
    a, b = (s.x, np.zeros_like(s.x)) if s.y is None else np.meshgrid(s.x, s.y)
    done = np.ones(a.shape, bool) if stride_mask is None else stride_mask
    trace = {"trace": 1 / 7 + 3 * a ** 2 - b, "n_hvp": np.full(a.shape, 30.0)}
    trace.update(ci_low=trace["trace"] - 0.25 - a ** 2, ci_high=trace["trace"] + 1 / 3)
    topk = {f"lambda_{i}": (4 - i) * (1 + a ** 2 + b ** 2) / 3 for i in range(1, k + 1)}
    topk.update({f"residual_{i}": 1e-4 * i * (1 + a ** 2) for i in range(1, k + 1)}, n_hvp=np.full(a.shape, 12.0))
    settings = {"stride": 1, "subset": 64, "curvature": "hessian"}
    for group, values, extra in ((surface_file.TRACE_MAP, trace, {"estimator": "hutchpp", "samples": 30}),
                                 (surface_file.TOPK_MAP, topk, {"k": k, "tol": 1e-3})):
        surface_file.prepare_group(path, group, grid, [f"{group}/{m}" for m in values], {**settings, **extra},
                                   mask=f"{group}/mask")
        with surface_file.open_for_writing(path) as f:
            for m, v in values.items():
                f[f"{group}/{m}"][...] = np.where(done, v, np.nan)
            f[f"{group}/mask"][...] = done.astype(np.uint8)
    grid_t = np.linspace(-0.3, 5.0, 401)
    for label, point in (("theta_star", [0.0] * grid.ndim), ("a0.5_b0" if s.y is not None else "a0.5", [0.5, 0.0][:grid.ndim])):
        arrays = {"eigenvalues": np.array([4.5, 2 / 3, 0.125]), "residuals": np.array([1e-5, 2e-4, 3e-3]),
                  "trace": np.float64(7.25 + point[0]), "trace_ci": np.array([6.5, 8 + 1 / 3]),
                  "density/grid": grid_t, "density/values": np.exp(-((grid_t - 0.01) / 0.05) ** 2) + 1e-3,
                  "slq/nodes": np.zeros((2, 3)), "slq/weights": np.full((2, 3), 1 / 3)}
        if blocks:
            arrays.update({"blocks/names": np.array(["net.1", "net.<3>"], dtype=object), "blocks/numel": np.array([4160, 650]),
                           "blocks/lambda_max": np.array([3.5, 1 / 3]), "blocks/residual": np.array([1e-6, 2e-6]),
                           "blocks/trace": np.array([5.0, 2.25]), "blocks/trace_ci": np.array([[4.5, 5.5], [2.0, 2.5]])})
        surface_file.write_spectrum(path, label, arrays, {"point": point, "sigma_abs": 0.053, "n_params": 4810,
                                                          "curvature": "hessian", "slq_runs": 2, "slq_steps": 3})
    return trace, topk


def text_of(html_text: str) -> str:
    """The page's text as shown (tags dropped, entities decoded)."""
    import html as html_module

    return html_module.unescape(re.sub(r"<[^>]+>", " ", html_text.split('id="landscape-data"')[0]))


def test_trace_and_topk_maps_travel_exactly_and_missing_points_stay_missing(tmp_path):
    x, y = np.linspace(-1, 1, 5), np.linspace(-0.5, 0.5, 3)  # non-square
    path = surface(tmp_path / "s.h5", x, y, lambda a, b: 1 + a ** 2 + b ** 2)
    done = np.ones((3, 5), bool)
    done[:, 1::2] = False  # a map stopped early
    trace, topk = curvature(path, done)
    page = rep.page([path])
    f = embedded(page)["files"][0]
    for kind, values in (("trace", trace), ("topk", topk)):
        m = f[kind]
        assert m["x"] == x.tolist() and m["y"] == y.tolist() and m["n_done"] == 9 and m["n_total"] == 15
        np.testing.assert_array_equal(decode(m["mask"], "u1").reshape(3, 5), done)
        assert set(m["values"]) == set(values)
        for name, v in values.items():
            np.testing.assert_array_equal(decode(m["values"][name]).reshape(3, 5), np.where(done, v, np.nan))
    ranges = embedded(page)["map_ranges"]
    computed = trace["trace"][done]
    assert ranges["trace"]["trace"] == pytest.approx([computed.min(), computed.max(), computed.max()])
    assert ranges["topk"]["lambda_2"][:2] == pytest.approx([topk["lambda_2"][done].min(), topk["lambda_2"][done].max()])
    assert ranges["hessian"] == {"ratio": None, "lambda_max": None, "lambda_min": None}  # no Hessian map in the file
    for element in ("f0-trace", "f0-topk-lambda_1", "f0-topk-lambda_2", "f0-topk-lambda_3"):
        assert f'id="{element}"' in page
    assert 'id="f0-topk-lambda_4"' not in page
    text = text_of(page)
    assert "partial: 9/15 points computed (grey: not computed)" in text
    assert "Settings: estimator hutchpp, samples 30, curvature hessian, stride 1, subset 64" in text


def test_spectrum_tables_show_the_files_values(tmp_path):
    x = np.linspace(-1, 1, 5)
    path = surface(tmp_path / "s.h5", x, x, lambda a, b: 1 + a ** 2 + b ** 2)
    curvature(path)
    page = rep.page([path])
    spectra = embedded(page)["files"][0]["spectra"]
    stored = surface_file.read_spectra(path)
    assert [s["label"] for s in spectra] == list(stored) == ["a0.5_b0", "theta_star"]
    for s in spectra:
        v = stored[s["label"]].values
        np.testing.assert_array_equal(decode(s["grid"]), v["density/grid"])
        np.testing.assert_array_equal(decode(s["density"]), v["density/values"])
        assert s["eigenvalues"] == v["eigenvalues"].tolist() and s["residuals"] == v["residuals"].tolist()
        assert s["trace"] == float(v["trace"]) and s["trace_ci"] == v["trace_ci"].tolist() and s["lin"] == 0.053
    n = [s["label"] for s in spectra].index("theta_star")
    values = re.search(rf'<table class="values" id="f0-spectrum-{n}-values">(.*?)</table>', page)[1]
    cells = [re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<t[hd]>(.*?)</t[hd]>", values)]
    assert cells[3:] == ["λ1", "4.5", "± 1e-05", "λ2", "0.666667", "± 0.0002", "λ3", "0.125", "± 0.003",
                         "trace", "7.25", "[6.5, 8.33333]"]
    blocks = re.search(rf'<table class="values blocks" id="f0-spectrum-{n}-blocks">(.*?)</table>', page)[1]
    cells = [re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<t[hd]>(.*?)</t[hd]>", blocks)]
    assert cells[6:] == ["net.1", "4,160", "3.5", "± 1e-06", "5", "[4.5, 5.5]",
                         "net.&lt;3&gt;", "650", "0.333333", "± 2e-06", "2.25", "[2, 2.5]"]  # names escaped
    text = text_of(page)
    assert "Spectrum at θ* (theta_star)" in text and "Spectrum at α = 0.5, β = 0 (a0.5_b0)" in text
    assert "linear within ±0.053" in text


def test_a_file_without_curvature_results_has_no_such_section_and_no_blocks_table_without_blocks(tmp_path):
    x = np.linspace(-1, 1, 3)
    plain = surface(tmp_path / "plain.h5", x, x, lambda a, b: a + b)
    f = embedded(rep.page([plain]))["files"][0]
    assert f["trace"] is None and f["topk"] is None and f["spectra"] == []
    line = surface(tmp_path / "line.h5", x, None, lambda a, b: a ** 2)
    curvature(line, blocks=False, k=2)
    page = rep.page([plain, line])
    assert 'id="f1-trace"' in page and 'id="f1-topk-lambda_2"' in page and 'id="f1-spectrum-1"' in page
    assert 'id="f0-trace"' not in page and "-blocks" not in page
    assert "Spectrum at α = 0.5 (a0.5)" in text_of(page)


def test_info_summarises_the_curvature_results(tmp_path):
    from landscape.viz.info import curvature_lines, info

    x, y = np.linspace(-1, 1, 5), np.linspace(-0.5, 0.5, 3)
    path = surface(tmp_path / "s.h5", x, y, lambda a, b: 1 + a ** 2 + b ** 2)
    assert curvature_lines(path) == []
    done = np.ones((3, 5), bool)
    done[0, 0] = False
    trace, topk = curvature(path, done)
    lines = curvature_lines(path)
    assert lines[0] == "  trace map: 14/15 points (93.3%), stride 1; tr H, hutchpp with 30 products; non-finite 0"
    t = trace["trace"]
    assert lines[1] == (f"    at the centre (α = 0, β = 0): {t[1, 2]:.4g}, 95% interval [{trace['ci_low'][1, 2]:.4g}, "
                        f"{trace['ci_high'][1, 2]:.4g}]; lowest {t[2, 2]:.4g} at (α = 0, β = 0.5), highest "
                        f"{t[0, 4]:.4g} at (α = 1, β = -0.5)")  # t[0, 0] (the highest too) is not computed
    assert lines[2] == "  top-k map: 14/15 points (93.3%), stride 1; k 3; non-finite 0"
    assert lines[3].startswith(f"    at the centre (α = 0, β = 0): λ1 {topk['lambda_1'][1, 2]:.4g} ± "
                               f"{topk['residual_1'][1, 2]:.4g}, λ2 {topk['lambda_2'][1, 2]:.4g} ± ")
    assert lines[4] == "  spectrum a0.5_b0 (α = 0.5, β = 0): 4,810 parameters, density 2 × 3 SLQ steps"
    assert lines[5] == "    top eigenvalues 4.5 ± 1e-05, 0.6667 ± 0.0002, 0.125 ± 0.003; tr H 7.75, 95% interval [6.5, 8.333]"
    assert lines[6] == "    block net.1: 4,160 parameters, λmax 3.5, trace 5 [4.5, 5.5]"
    assert lines[8] == "  spectrum theta_star (θ*): 4,810 parameters, density 2 × 3 SLQ steps"
    text = info(path)
    assert "\n".join(lines) in text
    assert "\n".join(lines) in rep.page([path]).replace("&lt;", "<").replace("&gt;", ">")  # the report's summary


# ---------------------------------------------------------------- direction ensembles


def ensemble_file(path, x, y, members, done=None, epsilons=(0.05, 0.2), splits=("train", "test")):
    """A direction-ensemble file as the library writes one (io.surface_file, numpy only): member m's
    <split>/loss = 1 + (1 + m/3)·α² + β²/2 + k/7 + m·α/10 (k: the split's index), acc = 100 − 10·loss;
    points of `done` only computed (the others NaN, mask 0), the statistics stored once complete."""
    from landscape.analysis import ensemble as stats
    from landscape.core.grid import EnsembleGrid

    grid = EnsembleGrid(members, Grid(np.asarray(x, float), None if y is None else np.asarray(y, float)))
    metrics = [f"ensemble/{sp}/{m}" for sp in splits for m in ("loss", "acc")]
    surface_file.prepare(path, grid, metrics, {"task": "classification", "ensemble": {"members": members}},
                         mask=surface_file.ENSEMBLE_MASK, directions=[{"w": np.ones(3)}] * grid.ndim,
                         attrs={"seed": 3, "versions": "test"})
    a, b = (grid.x, np.zeros_like(grid.x)) if y is None else np.meshgrid(grid.x, grid.y)
    m = np.arange(members).reshape(-1, *([1] * a.ndim))
    done = np.ones(grid.shape, bool) if done is None else done
    values = {}
    with surface_file.open_for_writing(path) as f:
        for k, sp in enumerate(splits):
            loss = 1 + (1 + m / 3) * a ** 2 + b ** 2 / 2 + k / 7 + m * a / 10
            values[sp] = {"loss": np.where(done, loss, np.nan), "acc": np.where(done, 100 - 10 * loss, np.nan)}
            for name, v in values[sp].items():
                f[f"ensemble/{sp}/{name}"][...] = v
        f[surface_file.ENSEMBLE_MASK][...] = done.astype(np.uint8)
    if done.all():
        surface_file.write_ensemble_results(path, stats.results(grid.x, grid.y, values, list(epsilons)),
                                            {"members": members, "seed": 3, "epsilons": list(epsilons)})
    return path


def test_an_ensembles_embedded_statistics_and_members_equal_the_files(tmp_path):
    from landscape.analysis import ensemble as stats
    from landscape.viz.ensemble_info import ensemble_info

    x = np.linspace(-1, 1, 9)
    path = ensemble_file(tmp_path / "e.h5", x, None, 5)
    page = rep.page([path])
    data = embedded(page)
    f = data["files"][0]
    e = surface_file.read_ensemble(path)
    assert e.stats and f["x"] == x.tolist() and f["y"] is None and f["splits"] == {}
    g = f["ensemble"]
    assert (g["members"], g["shown"], g["members_done"], g["n_done"], g["n_total"], g["stored"]) == (5, 5, 5, 45, 45, True)
    assert g["epsilons"] == [0.05, 0.2] and data["splits"] == ["train", "test"] and data["metrics"] == ["loss", "acc"]
    for sp in ("train", "test"):
        for m in ("loss", "acc"):
            np.testing.assert_array_equal(decode(g["values"][sp][m]).reshape(5, 9), e.values[sp][m])
            for st in rep.ENSEMBLE_STATS:
                np.testing.assert_array_equal(decode(g["stats"][sp][m][st]), e.stats[f"stats/{sp}/{m}/{st}"], err_msg=st)
        rows = g["distributions"][sp]
        assert [r["what"] for r in rows] == ["basin width along α, ε = 0.05", "basin width along α, ε = 0.2",
                                             "curvature d²L/dα² at the centre"]
        w, c = e.stats[f"widths/{sp}/x"], e.stats[f"curvature/{sp}/x"]
        np.testing.assert_allclose(c, 2 * (1 + np.arange(5) / 3), rtol=1e-9)  # the quadratic's curvature
        for r, sample in zip(rows, [w[:, 0, :].ravel(), w[:, 1, :].ravel(), c]):
            want = stats.distribution(sample)
            assert r["samples"] == sample.tolist() and r["missing"] == 0
            assert {k: r[k] for k in want} == pytest.approx(want, rel=0, abs=0)
    # the table shows the same distributions; the summary is `landscape info`'s
    table = re.search(r'<table class="values ensemble" id="f0-ensemble-table">(.*?)</table>', page)[1]
    cells = [re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<t[hd]>(.*?)</t[hd]>", table)]
    d = g["distributions"]["train"][2]
    assert cells[8 + 2 * 8:8 + 3 * 8] == ["train", "curvature d²L/dα² at the centre", f"{d['mean']:.6g}",
                                          f"[{d['ci_low']:.6g}, {d['ci_high']:.6g}]", f"{d['std']:.6g}",
                                          f"{d['q50']:.6g}", "5", "0"]
    assert ensemble_info(path) in text_of(page)
    assert "completion 45/45 points (5/5 members complete)" in text_of(page)
    for element in ("f0-band", "f0-ens-widths", "f0-ens-curvature", "f0-ensemble-table"):
        assert f'id="{element}"' in page
    assert 'id="f0-curve"' not in page and 'id="f0-ens-mean"' not in page
    ranges = data["ensemble_ranges"]["train"]["loss"]
    assert ranges["values"]["linear"][0] == e.values["train"]["loss"].min()
    bins = data["histogram_bins"]["train"]["curvature"]
    assert bins["start"] < c.min() and bins["end"] > c.max()


def test_a_partial_ensemble_has_statistics_of_the_points_done(tmp_path):
    x, y = np.linspace(-1, 1, 5), np.linspace(-1, 1, 3)
    done = np.ones((4, 3, 5), bool)
    done[2:, :, 3:] = False  # members 2 and 3 half done
    path = ensemble_file(tmp_path / "p.h5", x, y, 4, done)
    e = surface_file.read_ensemble(path)
    assert e.stats == {}
    page = rep.page([path])
    g = embedded(page)["files"][0]["ensemble"]
    assert (g["members_done"], g["n_done"], g["n_total"], g["stored"]) == (2, 48, 60, False)
    loss = np.where(done, e.values["train"]["loss"], np.nan)
    np.testing.assert_allclose(decode(g["stats"]["train"]["loss"]["mean"]).reshape(3, 5), np.nanmean(loss, axis=0),
                               rtol=1e-15)
    np.testing.assert_array_equal(decode(g["stats"]["train"]["loss"]["count"]).reshape(3, 5), done.sum(axis=0))
    np.testing.assert_array_equal(decode(g["values"]["train"]["loss"]).reshape(4, 3, 5), loss)  # NaN: not computed
    text = text_of(page)
    assert "partial: 48/60 points (80.0%) computed, 2/4 members complete; statistics from the points done so far" in text
    for element in ("f0-ens-mean", "f0-ens-std", "f0-ens-member", "f0-member", "f0-ens-widths"):
        assert f'id="{element}"' in page
    assert 'id="f0-band"' not in page


def test_ensembles_and_surfaces_side_by_side(tmp_path):
    x = np.linspace(-1, 1, 5)
    a = ensemble_file(tmp_path / "a.h5", x, None, 3)
    b = ensemble_file(tmp_path / "b.h5", x, None, 70, splits=("train",))  # more members than lines drawn
    s = surface(tmp_path / "s.h5", x, x, lambda a, b: a + b)
    page = rep.page([a, b, s])
    files = embedded(page)["files"]
    assert [f["ensemble"] is not None for f in files] == [True, True, False]
    assert files[1]["ensemble"]["shown"] == rep.MEMBER_LINES == 64
    assert decode(files[1]["ensemble"]["values"]["train"]["loss"]).size == 64 * 5
    assert "thin lines: the first 64 of the 70 members" in text_of(page)
    assert 'id="f2-heat"' in page and 'id="f0-heat"' not in page and 'id="f0-band"' in page and 'id="f1-band"' in page
    ranges = embedded(page)["ensemble_ranges"]["train"]["loss"]["band"]["linear"]
    both = np.concatenate([surface_file.read_ensemble(p).values["train"]["loss"].ravel() for p in (a, b)])
    assert ranges[0] <= both.min() and ranges[2] >= both.max()
