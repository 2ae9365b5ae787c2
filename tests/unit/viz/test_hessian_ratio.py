"""The drawn Hessian ratio cannot be misread (issue 15, item 5): max(0, −λmin)/λmax."""
from __future__ import annotations

import numpy as np

from landscape.core.grid import Grid
from landscape.io import surface_file
from landscape.viz.hessian_figures import negative_curvature_ratio, plot_hessian, reference_ratio


def test_convex_points_read_zero_and_concave_points_are_blank():
    lmax = np.array([4.0, 4.0, -1.0, 2.0])
    lmin = np.array([1.0, -1.0, -3.0, -2.0])  # convex, saddle, concave, balanced saddle
    r = negative_curvature_ratio(lmax, lmin)
    assert r[0] == 0.0 and r[1] == 0.25 and np.isnan(r[2]) and r[3] == 1.0
    ref = reference_ratio(lmax, lmin)  # the reference tool's: a convex point reads 0.25, a concave one 3
    assert ref[0] == 0.25 and ref[2] == 3.0


def test_the_file_and_the_figure_state_the_ratio(tmp_path):
    grid = Grid(np.linspace(-1, 1, 3), np.linspace(-1, 1, 3))
    path = tmp_path / "s.h5"
    surface_file.prepare(path, grid, ["train/loss"], {"job": 1})
    surface_file.prepare_group(path, surface_file.HESSIAN, grid, list(surface_file.HESSIAN_METRICS), {"stride": 1},
                               mask=surface_file.HESSIAN_MASK, attrs={"ratio": surface_file.HESSIAN_RATIO})
    with surface_file.open_for_writing(path) as f:
        values = np.tile([2.0, 0.5, 0, 0, 3], (9, 1))  # λmin > 0 everywhere: convex
        surface_file.write_points([f[m] for m in surface_file.HESSIAN_METRICS], f[surface_file.HESSIAN_MASK],
                                  np.arange(9), values)
    m = surface_file.read_hessian(path)
    assert m.settings["ratio"].startswith("max(0, -lambda_min) / lambda_max")
    assert (negative_curvature_ratio(m.values["lambda_max"], m.values["lambda_min"]) == 0).all()
    written = plot_hessian(path, formats="svg")
    ratio = next(p for p in written if p.name.endswith("_hessian_ratio.svg")).read_text()
    assert "no negative curvature" in ratio
