"""The surface file module: the one reader/writer, its format check, xarray access, and
files written by landscape 0.1 (tests/fixtures/v1_surface.h5, committed as that version wrote it)."""
from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest
import xarray as xr

from landscape.core.grid import Grid
from landscape.errors import UserError
from landscape.io import surface_file

from conftest import ROOT

V1 = ROOT / "tests" / "fixtures" / "v1_surface.h5"


def filled(tmp_path, grid, metrics=("train/loss", "train/acc")):
    """A new file whose every point is written through write_points, value = 10·iy + ix."""
    path = tmp_path / "s.h5"
    surface_file.prepare(path, grid, list(metrics), {"job": 1})
    points = np.arange(grid.size)
    flat = np.arange(grid.size, dtype=float)
    iy, ix = np.divmod(flat, len(grid.x)) if grid.y is not None else (0 * flat, flat)
    values = np.stack([10 * iy + ix] * len(metrics), axis=1)
    with surface_file.open_for_writing(path) as f:
        surface_file.write_points([f[m] for m in metrics], f[surface_file.MASK], points, values)
    return path


def test_xarray_reads_each_split_with_named_dims_and_coordinates(tmp_path):
    grid = Grid(np.linspace(-1, 1, 5), np.linspace(0, 2, 3))  # non-square: (y, x) = (3, 5)
    path = filled(tmp_path, grid)
    with xr.open_dataset(path, group="train", engine="h5netcdf") as ds:
        assert ds["loss"].dims == ("y", "x")
        np.testing.assert_array_equal(ds["x"].values, grid.x)
        np.testing.assert_array_equal(ds["y"].values, grid.y)
        # the value at (α = 0.5, β = 2) is row iy = 2, column ix = 3
        assert float(ds["loss"].sel(x=0.5, y=2.0)) == 23.0
    with xr.open_dataset(path, engine="h5netcdf") as root:
        assert root["mask"].dims == ("y", "x") and root["mask"].values.all()


def test_xarray_reads_a_hessian_group_on_its_own_grid(tmp_path):
    grid = Grid(np.linspace(-1, 1, 5), np.linspace(-1, 1, 5))
    path = filled(tmp_path, grid)
    sub = Grid(grid.x[::2], grid.y[::2])
    surface_file.prepare_group(path, surface_file.HESSIAN, sub, list(surface_file.HESSIAN_METRICS), {"stride": 2},
                               mask=surface_file.HESSIAN_MASK)
    with xr.open_dataset(path, group="hessian", engine="h5netcdf") as ds:
        assert ds["lambda_max"].dims == ("y", "x") and ds["x"].values.tolist() == [-1, 0, 1]


def test_read_surface_returns_frozen_values(tmp_path):
    path = filled(tmp_path, Grid(np.linspace(-1, 1, 4)))
    s = surface_file.read_surface(path)
    assert s.y is None and s.mask.all() and s.values["train"]["loss"].tolist() == [0, 1, 2, 3]
    with pytest.raises(AttributeError):
        s.x = None  # frozen


def test_a_newer_format_version_is_refused_in_one_line(tmp_path):
    path = filled(tmp_path, Grid(np.linspace(-1, 1, 3)))
    with h5py.File(path, "r+") as f:
        f.attrs["format_version"] = 2
    with pytest.raises(UserError, match="format_version 2: upgrade landscape"):
        surface_file.read_surface(path)


def test_version_1_file_reads_as_written(tmp_path):
    copy = shutil.copy(V1, tmp_path / "v1.h5")
    s = surface_file.read_surface(copy)
    assert list(s.values) == ["train", "test"] and s.values["train"]["loss"].shape == (3, 5) and s.mask.all()
    assert s.provenance.config["model"] == "digits_mlp" and s.provenance.job["loss_name"] == "crossentropy"
    with h5py.File(copy) as f:  # the numbers are the file's, untouched
        np.testing.assert_array_equal(s.values["test"]["acc"], f["test/acc"][...])
    d = surface_file.read_directions(copy)
    assert len(d) == 2 and set(d[0]) == {"net.1.weight", "net.1.bias", "net.3.weight", "net.3.bias"}
