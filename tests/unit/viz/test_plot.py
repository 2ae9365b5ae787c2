"""Tests of landscape.viz.figures on small surface files written here with h5py."""
import json
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from landscape.errors import UserError
from landscape.viz import figures as plot

KINDS_2D = ["contour", "contourf", "heat", "3d"]


def write_surface(path, x, y=None, *, splits=("train", "test"), fn=None, mask=None, acc=True, attrs=None):
    """A surface file in the landscape schema; loss = fn(X, Y) (default x^2 + 10 y^2), NaN where mask 0."""
    x = np.asarray(x, float)
    if y is None:
        X, Y = x, np.zeros_like(x)
    else:
        y = np.asarray(y, float)
        X, Y = np.meshgrid(x, y)  # (ny, nx): value[iy, ix] at (x[ix], y[iy])
    loss = (fn or (lambda a, b: a ** 2 + 10 * b ** 2))(X, Y).astype(float)
    mask = np.ones(loss.shape, np.uint8) if mask is None else np.asarray(mask, np.uint8)
    with h5py.File(path, "w") as f:
        f.attrs["format"] = "landscape-surface"
        f.attrs["format_version"] = 1
        f.attrs["job"] = json.dumps({"x": "spec"})
        for k, v in (attrs or {}).items():
            f.attrs[k] = v
        f["x"] = x
        if y is not None:
            f["y"] = y
        for i, split in enumerate(splits):
            f[f"{split}/loss"] = np.where(mask == 1, loss + i, np.nan)
            if acc:
                f[f"{split}/acc"] = np.where(mask == 1, 100 * np.exp(-loss), np.nan)
        f["mask"] = mask
        f["directions/x/w"] = np.ones(3)  # ignored by plot
    return path


def check_files(paths):
    for p in paths:
        assert p.is_file(), p
        head = p.read_bytes()[:8]
        if p.suffix == ".png":
            assert head == b"\x89PNG\r\n\x1a\n", p
        elif p.suffix == ".pdf":
            assert head.startswith(b"%PDF"), p


def names(paths):
    return sorted(p.name for p in paths)


def expected_2d(stem, splits=("train", "test"), metrics=("loss", "acc"), formats=("png", "pdf")):
    return sorted(f"{stem}_{s}_{m}_{k}.{fmt}" for s in splits for m in metrics for k in KINDS_2D for fmt in formats)


def test_2d_square(tmp_path):
    f = write_surface(tmp_path / "surf.h5", np.linspace(-1, 1, 11), np.linspace(-1, 1, 11))
    paths = plot.plot_file(f, dpi=50)
    check_files(paths)
    assert names(paths) == expected_2d("surf")
    assert all(p.parent == tmp_path for p in paths)


def test_2d_non_square_orientation(tmp_path):
    x, y = np.linspace(-3, 3, 7), np.linspace(0, 1.5, 4)
    f = write_surface(tmp_path / "ns.h5", x, y, splits=("train",))
    surf = plot.load(f)
    z, extent = plot.heat_data(surf.x, surf.y, surf.values["train"]["loss"], surf.mask)
    assert z.shape == (4, 7)
    for iy in range(4):
        for ix in range(7):
            assert z[iy, ix] == pytest.approx(x[ix] ** 2 + 10 * y[iy] ** 2)
    assert extent == pytest.approx((-3.5, 3.5, -0.25, 1.75))  # (left, right, bottom, top), cell-centred
    paths = plot.plot_file(f, tmp_path / "figs", formats=("png",), dpi=50)
    check_files(paths)
    assert names(paths) == expected_2d("ns", ("train",), formats=("png",))


def test_heat_image_is_not_transposed(tmp_path, monkeypatch):
    """The array handed to imshow has y along rows, with origin lower."""
    x, y = np.linspace(-3, 3, 7), np.linspace(0, 1.5, 4)
    f = write_surface(tmp_path / "ns.h5", x, y, splits=("train",), acc=False)
    seen = {}
    orig = plot.plt.Axes.imshow

    def spy(self, data, **kw):
        seen.update(data=np.ma.asarray(data), **kw)
        return orig(self, data, **kw)

    monkeypatch.setattr(plot.plt.Axes, "imshow", spy)
    plot.plot_file(f, formats=("png",), dpi=50)
    assert seen["data"].shape == (4, 7) and seen["origin"] == "lower"
    assert seen["data"][3, 0] == pytest.approx(9 + 10 * 1.5 ** 2)  # top-left: x=-3, y=1.5
    assert seen["extent"][:2] == pytest.approx((-3.5, 3.5))


def test_2d_partial_is_masked_and_titled(tmp_path):
    x = y = np.linspace(-1, 1, 10)
    mask = np.zeros((10, 10), np.uint8)
    mask[:, :5] = 1  # half done
    f = write_surface(tmp_path / "part.h5", x, y, mask=mask)
    surf = plot.load(f)
    z = plot.masked(surf.values["train"]["loss"], surf.mask)
    assert z.mask[:, 5:].all() and not z.mask[:, :5].any()
    assert "(50% of grid)" in plot._title("train", "loss", surf)
    paths = plot.plot_file(f, formats=("png",), dpi=50)
    check_files(paths)
    assert names(paths) == expected_2d("part", formats=("png",))


def test_coarse_to_fine_partial_uses_subgrid(tmp_path):
    x = y = np.linspace(-1, 1, 17)
    mask = np.zeros((17, 17), np.uint8)
    mask[::4, ::4] = 1
    mask[0, 1] = 1
    assert plot.stride(mask.astype(bool)) == 4
    assert plot.stride(np.ones((17, 17), bool)) == 1
    f = write_surface(tmp_path / "c2f.h5", x, y, mask=mask)
    surf = plot.load(f)
    assert "1/4 resolution" in plot._title("train", "loss", surf, 4)
    check_files(plot.plot_file(f, formats=("png",), dpi=50))


def test_1d(tmp_path):
    f = write_surface(tmp_path / "line.h5", np.linspace(-1, 1, 21))
    paths = plot.plot_file(f, log=True)
    check_files(paths)
    assert names(paths) == sorted(f"line_{s}.{fmt}" for s in ("train_1d", "test_1d", "1d_all") for fmt in ("png", "pdf"))


def test_1d_single_split_and_partial(tmp_path):
    mask = np.r_[np.ones(5), np.zeros(6)]
    f = write_surface(tmp_path / "l.h5", np.linspace(-1, 1, 11), splits=("train",), mask=mask)
    paths = plot.plot_file(f, formats=("png",), dpi=50, vmin=0.01, vmax=5)
    check_files(paths)
    assert names(paths) == ["l_train_1d.png"]


def test_inf_and_nan_at_computed_points(tmp_path):
    x = y = np.linspace(-2, 2, 9)

    def fn(a, b):
        v = a ** 2 + b ** 2
        v[0, 0], v[-1, -1], v[0, -1] = np.inf, np.nan, -np.inf
        return v

    f = write_surface(tmp_path / "inf.h5", x, y, fn=fn)
    for log in (False, True):
        paths = plot.plot_file(f, formats=("png",), dpi=50, log=log)
        check_files(paths)
        assert len(paths) == 16
    z = plot.masked(plot.load(f).values["train"]["loss"], np.ones((9, 9), bool))
    assert z.mask[0, 0] and z.mask[-1, -1] and z.mask[0, -1] and z.count() == 78


def test_options(tmp_path):
    f = write_surface(tmp_path / "o.h5", np.linspace(-1, 1, 8), np.linspace(-1, 1, 8))
    paths = plot.plot_file(f, tmp_path / "new" / "dir", formats="svg", vmin=0.1, vmax=10, vlevel=0.5,
                           cmap="coolwarm", splits="test")
    assert names(paths) == expected_2d("o", ("test",), formats=("svg",))
    check_files(paths)


def test_levels():
    z = np.ma.masked_invalid([0.5, 1.0, 2.0, 1e6, np.inf])
    lev = plot.levels(z, vmin=0.1, vmax=10, vlevel=0.5)
    assert lev[0] == pytest.approx(0.1) and lev[-1] == pytest.approx(9.6) and len(lev) == 20
    lev = plot.levels(z)
    assert lev[0] <= 0.5 and lev[-1] < 1e6 and np.all(np.diff(lev) > 0)
    assert len(plot.levels(np.ma.masked_array([3.0, 3.0]))) >= 2  # constant surface


@pytest.mark.parametrize("make, match", [
    (lambda p: p, "does not exist"),
    (lambda p: p.parent, "is a folder"),
    (lambda p: (p.write_text("hello"), p)[1], "not a readable HDF5 file"),
    (lambda p: (h5py.File(p, "w").close(), p)[1], "not a landscape surface file"),
    (lambda p: write_surface(p, [0.0, 1.0], splits=()), "no metric datasets"),
    (lambda p: write_surface(p, [0.0, 1.0], [0.0, 1.0], mask=np.zeros((2, 2))), "no point computed yet"),
])
def test_user_errors(tmp_path, make, match):
    """Each bad input gives a UserError naming the problem."""
    f = make(tmp_path / "bad.h5")
    with pytest.raises(UserError, match=match):
        plot.plot_file(f)


def test_unknown_split_and_bad_options(tmp_path):
    f = write_surface(tmp_path / "s.h5", [0.0, 1.0], [0.0, 1.0], splits=("train",))
    with pytest.raises(UserError, match="split 'test' is not in"):
        plot.plot_file(f, splits=["test"])
    with pytest.raises(UserError, match="vlevel"):
        plot.plot_file(f, vlevel=0)
    with pytest.raises(UserError, match="format 'xyz'"):
        plot.plot_file(f, formats=("xyz",))


def test_degenerate_surfaces(tmp_path):
    """No finite acc, a single row, a constant surface: figures without errors or warnings."""
    x = np.linspace(-1, 1, 5)
    f = write_surface(tmp_path / "a.h5", x, x, splits=("train",))
    with h5py.File(f, "r+") as h:
        h["train/acc"][...] = np.nan
    assert len(plot.plot_file(f, formats=("png",), dpi=50)) == 8
    row = plot.plot_file(write_surface(tmp_path / "row.h5", x, [0.0], splits=("train",)), formats=("png",), dpi=50)
    assert names(row) == ["row_train_acc_heat.png", "row_train_loss_heat.png"]
    const = write_surface(tmp_path / "c.h5", x, x, fn=lambda a, b: 0 * a + 3.0, splits=("train",), acc=False)
    check_files(plot.plot_file(const, formats=("png",), dpi=50, log=True))
    with pytest.raises(UserError, match="over 1000 contour lines"):
        plot.plot_file(write_surface(tmp_path / "b.h5", x, x, fn=lambda a, b: 1e6 * (a * a + b * b)), vlevel=0.5)


def test_transposed_dataset_is_refused(tmp_path):
    f = write_surface(tmp_path / "t.h5", np.linspace(0, 1, 3), np.linspace(0, 1, 2), splits=("train",))
    with h5py.File(f, "r+") as h:
        del h["train/loss"]
        h["train/loss"] = np.zeros((3, 2))
    with pytest.raises(UserError, match="expected"):
        plot.plot_file(f)


def test_201x201_is_fast(tmp_path):
    x = np.linspace(-1, 1, 201)
    f = write_surface(tmp_path / "big.h5", x, x, fn=lambda a, b: np.exp(3 * (a ** 2 + b ** 2)))
    t = time.process_time()
    paths = plot.plot_file(f)
    check_files(paths)
    assert len(paths) == 32
    assert time.process_time() - t < 60  # CPU seconds: robust to a loaded machine


def test_no_torch_import():
    code = "import sys, landscape.viz.figures; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
