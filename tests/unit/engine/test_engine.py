"""The engine on one rank with a fake evaluator: no model, no loss, just the contract."""
from __future__ import annotations

import numpy as np
import pytest

from landscape import engine
from landscape.core.grid import Grid, chunk_bounds
from landscape.io import surface_file


class Paraboloid:
    """values = (α² + β², α·β) at each point; counts the calls and the points it saw."""

    metrics = ["f/sum", "f/prod"]

    def __init__(self, points_per_call=1, nan_at=None):
        self.points_per_call = points_per_call
        self.calls, self.seen, self.restored, self.nan_at = 0, [], False, nan_at

    def __call__(self, coords):
        assert 1 <= len(coords) <= self.points_per_call
        self.calls += 1
        self.seen += [tuple(c) for c in coords]
        out = np.stack([(coords ** 2).sum(1), coords.prod(1)], axis=1)
        if self.nan_at is not None:
            out[np.all(coords == self.nan_at, axis=1)] = np.nan
        return out

    def restore(self):
        self.restored = True


def prepared(tmp_path, grid, metrics):
    path = tmp_path / "s.h5"
    done = surface_file.prepare(path, grid, metrics, {"test": 1})
    return path, done


@pytest.mark.parametrize("k", [1, 3])
def test_every_point_once_with_its_values(tmp_path, k):
    grid = Grid(np.linspace(-1, 1, 5), np.linspace(0, 2, 4))
    fake = Paraboloid(points_per_call=k)
    assert isinstance(fake, engine.Evaluator)
    path, done = prepared(tmp_path, grid, fake.metrics)
    summary = engine.run(fake, grid, path, done, progress=False)
    assert summary.complete and summary.computed == grid.size and not summary.interrupted
    assert sorted(fake.seen) == sorted(map(tuple, grid.coords(np.arange(grid.size))))
    values, mask = surface_file.read_values(path, fake.metrics)
    X, Y = np.meshgrid(grid.x, grid.y)  # axis order (y, x)
    np.testing.assert_allclose(values["f/sum"], X ** 2 + Y ** 2)
    np.testing.assert_allclose(values["f/prod"], X * Y)
    assert mask.all()


def test_resume_computes_only_what_is_missing(tmp_path):
    grid = Grid(np.linspace(-1, 1, 9))
    path, done = prepared(tmp_path, grid, Paraboloid.metrics)
    done[::2] = True  # as if a killed run had written the even points (values left NaN here)
    fake = Paraboloid()
    summary = engine.run(fake, grid, path, done, progress=False)
    assert summary.done_before == 5 and summary.computed == 4 and summary.complete
    assert sorted(c[0] for c in fake.seen) == sorted(grid.x[1::2])


def test_coarse_to_fine_order_and_non_finite_points(tmp_path):
    grid = Grid(np.linspace(-1, 1, 9), np.linspace(-1, 1, 9))
    fake = Paraboloid(nan_at=(0.0, 0.0))
    path, done = prepared(tmp_path, grid, fake.metrics)
    summary = engine.run(fake, grid, path, done, progress=False)
    assert summary.nonfinite == 1
    first = {c for c in fake.seen[:9]}  # the stride-4 sub-grid comes first
    assert first == {(a, b) for a in (-1.0, 0.0, 1.0) for b in (-1.0, 0.0, 1.0)}
    values, _ = surface_file.read_values(path, fake.metrics)
    assert np.isnan(values["f/sum"][4, 4]) and np.isfinite(np.delete(values["f/sum"].ravel(), 40)).all()


def test_chunks_cover_the_points_once():
    for todo, ranks, requested in [(0, 1, 0), (1, 4, 0), (2601, 8, 0), (100, 3, 7)]:
        b = chunk_bounds(todo, ranks, requested)
        assert b[0] == 0 and b[-1] == todo and (np.diff(b) > 0).all()
        if requested:
            assert (np.diff(b)[:-1] == requested).all()
        else:
            assert np.diff(b).max(initial=0) <= 16
