"""Figures and exports: `landscape plot` kinds and Hessian maps, --compare, `landscape vtk`, `landscape info`,
on small surface files written here with h5py."""
import json
import subprocess
import sys

import h5py
import numpy as np
import pytest
from test_plot import check_files, names, write_surface

from landscape import cli
from landscape.errors import UserError
from landscape.viz import figures as plot
from landscape.viz import info
from landscape.viz.vtk import write_vtk

X5 = np.linspace(-1, 1, 5)
X11 = np.linspace(-1, 1, 11)


def check_svg(paths):
    for p in paths:
        if p.suffix == ".svg":
            assert b"<svg" in p.read_bytes()[:2000], p


def add_hessian(path, stride=2, done=None):
    """A Hessian map on every `stride`-th point of the surface's grid; `done`: its mask (default all)."""
    with h5py.File(path, "r+") as f:
        x = f["x"][::stride]
        y = f["y"][::stride] if "y" in f else None
        shape = (len(x),) if y is None else (len(y), len(x))
        g = f.create_group("hessian")
        g.attrs["stride"] = stride
        g["x"] = x
        if y is not None:
            g["y"] = y
        mask = np.ones(shape, np.uint8) if done is None else np.asarray(done, np.uint8)
        g["lambda_max"] = np.where(mask == 1, 10.0, np.nan)
        g["lambda_min"] = np.where(mask == 1, -0.5, np.nan)
        g["mask"] = mask
    return path


def with_provenance(path):
    job = {"model_fingerprint": "abc123", "directions_fingerprint": "def456", "loss_name": "crossentropy",
           "dir_type": "weights", "data_fingerprint": {"train": "t1"},
           "directions": {"seed": 3, "norm": ["filter", "filter"], "ignore": ["biasbn", "biasbn"]}}
    with h5py.File(path, "r+") as f:
        f.attrs["job"] = json.dumps(job)
        f.attrs["config"] = "model: digits_cnn\nmodel_file: ckpt/epoch_010.pt\ndataset: digits\n"
        f.attrs["seed"] = 3
        f.attrs["versions"] = "landscape 0.1.0, torch 2.13.0+cpu, numpy 2.0"
    return path


# ---- landscape plot: kinds, splits, metrics, Hessian maps -------------------------------------------

def test_kinds_splits_metrics_and_formats(tmp_path):
    f = write_surface(tmp_path / "s.h5", X5, X5)
    paths = plot.plot_file(f, formats="png,pdf,svg", kinds="contour,heat", splits="test", metrics="loss", dpi=40)
    check_files(paths)
    check_svg(paths)
    assert names(paths) == sorted(f"s_test_loss_{k}.{e}" for k in ("contour", "heat") for e in ("png", "pdf", "svg"))


def test_plot_draws_the_hessian_group(tmp_path):
    f = add_hessian(write_surface(tmp_path / "h.h5", X5, X5, splits=("train",), acc=False))
    assert "hessian" in plot.supported_kinds(plot.load(f))
    paths = plot.plot_file(f, formats="png", dpi=40)
    check_files(paths)
    assert {f"h_hessian_{m}.png" for m in ("ratio", "lambda_max", "lambda_min")} <= set(names(paths))
    only = plot.plot_file(f, tmp_path / "only", formats="svg", kinds="hessian", dpi=40)
    check_svg(only)
    assert names(only) == sorted(f"h_hessian_{m}.svg" for m in ("ratio", "lambda_max", "lambda_min"))
    # a 1D surface with a partial Hessian map: curves
    line = add_hessian(write_surface(tmp_path / "l.h5", X11, splits=("train",)), done=[1, 1, 0, 0, 0, 0])
    assert "l_hessian_ratio.png" in names(plot.plot_file(line, formats="png", dpi=40))


def test_plot_several_files_and_cli(tmp_path, capsys):
    a = write_surface(tmp_path / "a.h5", X5, X5, splits=("train",), acc=False)
    b = write_surface(tmp_path / "b.h5", X11, splits=("train",), acc=False)
    rc = cli.main(["plot", str(a), str(b), "--format", "png", "--dpi", "40", "--out_dir", str(tmp_path / "o")])
    assert rc == 0 and "5 figures" in capsys.readouterr().out  # a: the 4 kinds of its loss; b: its curve
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == sorted(
        [f"a_train_loss_{k}.png" for k in ("contour", "contourf", "heat", "3d")] + ["b_train_1d.png"])


# ---- --compare ---------------------------------------------------------------------------------------

def test_compare_2d_one_colour_scale(tmp_path, monkeypatch):
    a = write_surface(tmp_path / "a.h5", X5, X5)
    b = write_surface(tmp_path / "b.h5", X5, X5, fn=lambda u, v: 5 * (u ** 2 + v ** 2) + 20)  # a: 0..11, b: 20..30
    seen = {"levels": [], "colorbars": 0, "clim": []}
    contourf, colorbar, imshow = plot.plt.Axes.contourf, plot.plt.Figure.colorbar, plot.plt.Axes.imshow

    def spy_contourf(self, *args, **kw):
        seen["levels"].append(list(kw["levels"]))
        return contourf(self, *args, **kw)

    def spy_colorbar(self, *args, **kw):
        seen["colorbars"] += 1
        return colorbar(self, *args, **kw)

    def spy_imshow(self, *args, **kw):
        seen["clim"].append((kw["vmin"], kw["vmax"]))
        return imshow(self, *args, **kw)

    monkeypatch.setattr(plot.plt.Axes, "contourf", spy_contourf)
    monkeypatch.setattr(plot.plt.Figure, "colorbar", spy_colorbar)
    monkeypatch.setattr(plot.plt.Axes, "imshow", spy_imshow)
    paths = plot.compare_files([a, b], tmp_path / "cmp", titles="ResNet-56,ResNet-56 no short", splits="train",
                               metrics="loss", formats=("png", "pdf"), dpi=40)
    check_files(paths)
    assert names(paths) == sorted(f"a_vs_b_train_loss_{k}.{e}" for k in ("contourf", "heat") for e in ("png", "pdf"))
    assert len(seen["levels"]) == 2 and seen["levels"][0] == seen["levels"][1]  # two panels, same levels
    assert seen["levels"][0][0] <= 0 and seen["levels"][0][-1] > 11  # one scale over both files' losses
    assert len(seen["clim"]) == 2 and seen["clim"][0] == seen["clim"][1]
    assert seen["colorbars"] == 2  # one per figure (contourf, heat), not one per panel


def test_compare_1d_overlay_and_partial(tmp_path, capsys):
    a = write_surface(tmp_path / "a.h5", X11)
    b = write_surface(tmp_path / "b.h5", X11, fn=lambda u, v: 3 * u ** 2, mask=np.r_[np.ones(6), np.zeros(5)])
    rc = cli.main(["plot", str(a), str(b), "--compare", "--format", "svg", "--dpi", "40", "--log",
                   "--out_dir", str(tmp_path / "o")])
    assert rc == 0, capsys.readouterr().err
    paths = sorted((tmp_path / "o").iterdir())
    assert [p.name for p in paths] == ["a_vs_b_test_1d.svg", "a_vs_b_train_1d.svg"]
    check_svg(paths)


@pytest.mark.parametrize("second, args, match", [
    (lambda p: write_surface(p, X11), [], "cannot compare 1D and 2D surfaces"),
    (lambda p: write_surface(p, X5, X5), ["--titles", "one"], "1 titles for 2 files"),
    (lambda p: write_surface(p, X5, X5, splits=("val",)), [], "share no split"),
    (lambda p: write_surface(p, X5, X5), ["--kinds", "3d"], "draws contour, contourf, heat, not '3d'"),
    (lambda p: write_surface(p, X5, X5, acc=False), ["--metrics", "acc"], "has no 'acc' for split"),
])
def test_compare_refuses_incompatible_files(tmp_path, capsys, second, args, match):
    a = write_surface(tmp_path / "a.h5", X5, X5)
    b = second(tmp_path / "b.h5")
    assert cli.main(["plot", str(a), str(b), "--compare", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("landscape: error:") and match in err and err.count("\n") == 1, err


# ---- landscape vtk -----------------------------------------------------------------------------------

def test_vtk_round_trip(tmp_path):
    import meshio

    x, y = np.linspace(-1, 1, 5), np.linspace(0, 2, 4)
    mask = np.ones((4, 5), np.uint8)
    mask[3, 4] = 0  # one corner not computed
    f = write_surface(tmp_path / "s.h5", x, y, mask=mask)
    out = write_vtk(f)
    assert out == tmp_path / "s.vtu"
    m = meshio.read(out)
    X, Y = np.meshgrid(x, y)
    loss = X ** 2 + 10 * Y ** 2
    assert m.points.shape == (20, 3)
    assert np.allclose(m.points[:, 0], X.ravel()) and np.allclose(m.points[:, 1], Y.ravel())
    assert np.allclose(m.points[:-1, 2], loss.ravel()[:-1])  # z = train loss (index iy * nx + ix)
    assert np.allclose(m.point_data["train_loss"][:-1], loss.ravel()[:-1])
    assert np.allclose(m.point_data["test_loss"][:-1], loss.ravel()[:-1] + 1)
    assert np.allclose(m.point_data["test_acc"][:-1], 100 * np.exp(-loss.ravel()[:-1]))
    for key in ("train_loss", "train_acc", "test_loss", "test_acc"):
        assert np.isnan(m.point_data[key][-1])  # not computed: NaN
    assert list(m.point_data["computed"]) == list(mask.ravel())
    assert m.cells_dict["quad"].shape == (4 * 3 - 1, 4)  # the quad touching the missing point is left out
    # log10, scaled, from the test split, legacy .vtk
    out2 = write_vtk(f, tmp_path / "sub" / "s.vtk", log=True, zscale=0.5, split="test")
    m2 = meshio.read(out2)
    assert np.allclose(m2.points[:-1, 2], 0.5 * np.log10(loss.ravel()[:-1] + 1))


def test_vtk_errors(tmp_path, capsys):
    line = write_surface(tmp_path / "l.h5", X11)
    with pytest.raises(UserError, match="1D surface"):
        write_vtk(line)
    f = write_surface(tmp_path / "s.h5", X5, X5, splits=("train",))
    with pytest.raises(UserError, match="meshio has no .vts writer"):
        write_vtk(f, tmp_path / "s.vts")
    with pytest.raises(UserError, match="no loss for split 'test'"):
        write_vtk(f, split="test")
    assert cli.main(["vtk", str(line)]) == 2
    assert "landscape: error:" in capsys.readouterr().err
    assert cli.main(["vtk", str(f), "--out", str(tmp_path / "cli.vtu"), "--zscale", "2"]) == 0
    assert (tmp_path / "cli.vtu").read_bytes().startswith(b"<?xml")


# ---- landscape info ----------------------------------------------------------------------------------

def test_info_complete_2d(tmp_path):
    x = np.linspace(-1, 1, 21)
    f = with_provenance(write_surface(tmp_path / "s.h5", x, x, fn=lambda a, b: (a - 0.2) ** 2 + 10 * b ** 2))
    text = info.info(f)
    assert "2D surface" in text
    assert "x: -1 .. 1, 21 points, step 0.1" in text and "y: -1 .. 1, 21 points" in text
    assert "completion: 441/441 points (100.0%)" in text
    assert "at (α = 0.2, β = 0); loss at centre 0.04" in text and "test: min loss 1 at (α = 0.2, β = 0)" in text
    assert "loss at centre 0.04" in text and "non-finite 0" in text
    # along α at the centre: L(±0.5) - L(0) = 0.49 - 0.04, 0.09 - 0.04; curvature 2; along β: 2.5, 20
    assert "sharpness along α: rise 0.45 / 0.05 (− / + side), curvature 2" in text
    assert "sharpness along β: rise 2.5 / 2.5 (− / + side), curvature 20" in text
    assert "model digits_cnn, model_file ckpt/epoch_010.pt, dataset digits" in text
    assert "model abc123, directions def456, train data t1" in text
    assert "random Gaussian (seed 3, norm filter/filter" in text
    assert "versions: landscape 0.1.0, torch 2.13.0+cpu" in text


def test_info_partial_with_hessian_and_nonfinite(tmp_path, capsys):
    mask = np.zeros((5, 5), np.uint8)
    mask[::2, ::2] = 1
    mask[2, 1] = 1

    def fn(a, b):
        v = a ** 2 + b ** 2
        v[0, 0] = np.inf
        return v

    f = add_hessian(write_surface(tmp_path / "p.h5", X5, X5, fn=fn, mask=mask), done=[[1, 1, 0]] * 3)
    assert cli.main(["info", str(f)]) == 0
    text = capsys.readouterr().out
    assert "completion: 10/25 points (40.0%)" in text
    assert "hessian map: 6/9 points (66.7%), stride 2" in text
    assert "train: min loss 0 at (α = 0, β = 0)" in text
    assert text.count("non-finite 1") == 2  # the loss at (-1, -1) of each split
    # along α (row β = 0) α = -0.5 is computed, α = 0.5 is not; along β neither β = ±0.5
    assert "sharpness along α: rise 0.25 / n/a (− / + side), curvature n/a" in text
    assert "sharpness along β: rise n/a / n/a (− / + side), curvature n/a" in text


def test_info_1d(tmp_path):
    f = write_surface(tmp_path / "l.h5", np.linspace(-0.4, 1.6, 21), splits=("train",))
    text = info.info(f)
    assert "1D surface" in text and "x: -0.4 .. 1.6, 21 points, step 0.1" in text
    assert "centre: α = 0" in text and "β" not in text
    assert "sharpness along α: rise 0.04 / 0.64 (− / + side), curvature 2" in text  # L(-0.2), L(0.8); L = α²
    assert "job: –" in text


# ---- bad input ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("make, args, match", [
    (lambda p: (p.write_text("no hdf5"), p)[1], [], "not a readable HDF5 file"),
    (lambda p: (h5py.File(p, "w").close(), p)[1], [], "not a landscape surface file"),
    (lambda p: write_surface(p, X5, X5, splits=("train",)), ["--splits", "test"], "split 'test' is not in"),
    (lambda p: write_surface(p, X5, X5, acc=False), ["--metrics", "acc"], "has no 'acc' for split 'train'"),
    (lambda p: write_surface(p, X11), ["--kinds", "3d"], "cannot give a '3d' figure (it is a 1D surface)"),
    (lambda p: write_surface(p, X5, X5), ["--kinds", "1d"], "cannot give a '1d' figure (it is a 2D surface)"),
    (lambda p: write_surface(p, X5, X5), ["--kinds", "hessian"], "no computed Hessian map"),
    (lambda p: write_surface(p, X5, X5), ["--kinds", "trajectory"], "no training trajectory"),
    (lambda p: write_surface(p, X5, X5), ["--kinds", "pie"], "figure kind 'pie' is unknown"),
    (lambda p: write_surface(p, X5, X5), ["--titles", "a"], "--titles goes with --compare"),
    (lambda p: write_surface(p, X5, X5), ["--dpi", "0"], "dpi=0 must be positive"),
    (lambda p: write_surface(p, X5, X5), ["--compare"], "needs two or more surface files"),
])
def test_plot_bad_input_is_one_line_exit_2(tmp_path, capsys, make, args, match):
    f = make(tmp_path / "bad.h5")
    assert cli.main(["plot", str(f), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("landscape: error:") and match in err and err.count("\n") == 1, err


def test_info_and_vtk_refuse_non_surface_files(tmp_path, capsys):
    f = tmp_path / "x.h5"
    h5py.File(f, "w").close()
    for command in ("info", "vtk"):
        assert cli.main([command, str(f)]) == 2
        assert "not a landscape surface file" in capsys.readouterr().err


def test_figures_and_exports_never_import_torch(tmp_path):
    a = write_surface(tmp_path / "a.h5", X5, X5, splits=("train",), acc=False)
    b = add_hessian(write_surface(tmp_path / "b.h5", X5, X5, splits=("train",), acc=False))
    code = (
        "import sys; from landscape import cli\n"
        f"a, b, out = {str(a)!r}, {str(b)!r}, {str(tmp_path / 'o')!r}\n"
        "png = ['--format', 'png', '--dpi', '30', '--out_dir', out]\n"
        "assert cli.main(['plot', a, b, '--kinds', 'heat,hessian', *png]) == 2\n"
        "assert cli.main(['plot', b, *png]) == 0\n"
        "assert cli.main(['plot', a, b, '--compare', *png]) == 0\n"
        "assert cli.main(['info', b]) == 0\n"
        "assert cli.main(['vtk', b, '--out', out + '/b.vtu']) == 0\n"
        "sys.exit(3 if 'torch' in sys.modules else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "no computed Hessian map" in proc.stderr  # a has none: --kinds hessian refused for it
