"""Perplexity exp(loss) of causal-LM surfaces (issue 16) in `landscape info` and the figures, on
surface files written through io.surface_file (the task is the one stored with the job)."""
import re

import h5py
import matplotlib
import numpy as np
import pytest

from landscape.core.grid import Grid
from landscape.io import surface_file
from landscape.viz import figures
from landscape.viz.common import plt
from landscape.viz.info import info


def lm_surface(path, x, y=None, task="causal_lm", fn=lambda a, b: 2 + (a - 0.5) ** 2 + b ** 2):
    """A complete surface file of `task` with train/loss = fn(α, β) and train/acc, made by surface_file.prepare."""
    grid = Grid(np.asarray(x, float), None if y is None else np.asarray(y, float))
    surface_file.prepare(path, grid, ["train/loss", "train/acc"], {"task": task, "loss_name": "crossentropy"},
                         directions=[{"w": np.ones(3)}] * grid.ndim, attrs={"seed": 0, "versions": "test"})
    A, B = (grid.x, np.zeros_like(grid.x)) if y is None else np.meshgrid(grid.x, grid.y)
    with surface_file.open_for_writing(path) as f:
        f["train/loss"][...] = fn(A, B)
        f["train/acc"][...] = 50.0
        f["mask"][...] = 1
    return path


def test_info_shows_the_perplexity_at_the_minimum_and_the_centre(tmp_path):
    x = np.linspace(-1, 1, 5)  # loss 2 + (α − 0.5)²: min 2 at α = 0.5, 2.25 at the centre α = 0
    text = info(lm_surface(tmp_path / "lm.h5", x))
    assert f"min loss 2 (perplexity {np.exp(2):.4g}) at (α = 0.5)" in text, text
    assert f"loss at centre 2.25 (perplexity {np.exp(2.25):.4g})" in text, text
    assert "task causal_lm" in text
    text2d = info(lm_surface(tmp_path / "lm2.h5", x, np.linspace(-1, 1, 3), fn=lambda a, b: 3 + a + b))
    assert f"min loss 1 (perplexity {np.exp(1):.4g}) at (α = -1, β = -1)" in text2d, text2d
    assert f"loss at centre 3 (perplexity {np.exp(3):.4g})" in text2d, text2d
    assert "(perplexity" not in info(lm_surface(tmp_path / "cls.h5", x, task="classification"))


def svg_texts(path) -> list[str]:
    return [t.strip() for t in re.findall(r"<text[^>]*>([^<]*)</text>", path.read_text())]


PAIR = re.compile(r"^(-?[\d.]+(?:e[-+]?\d+)?) \(([\d.]+(?:e[-+]?\d+)?)\)$")


@pytest.mark.parametrize("log", [False, True])
def test_2d_figures_label_loss_levels_with_their_perplexity(tmp_path, log):
    path = lm_surface(tmp_path / "lm.h5", np.linspace(-1, 1, 9), np.linspace(-1, 1, 9))
    with matplotlib.rc_context({"svg.fonttype": "none"}):  # text as text, to read it back
        written = figures.plot_file(path, formats="svg", kinds="contour,contourf,heat", metrics="loss", log=log)
    for kind in ("contour", "contourf", "heat"):
        svg = tmp_path / f"lm_train_loss_{kind}.svg"
        assert svg in written
        texts = svg_texts(svg)
        assert any(("log10 loss" if log else "loss") + " (perplexity)" in t for t in texts), (kind, texts)
        pairs = [PAIR.match(t) for t in texts if PAIR.match(t)]
        assert len(pairs) >= 3, (kind, texts)
        for m in pairs:  # every level: its value (loss or log10 loss) and exp(loss), to the 3 digits shown
            level, ppl = float(m[1]), float(m[2])
            assert ppl == pytest.approx(float(f"{np.exp(10 ** level if log else level):.3g}"), rel=1e-9), m[0]
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        figures.plot_file(path, formats="svg", kinds="heat", metrics="acc")
    assert not any(PAIR.match(t) for t in svg_texts(tmp_path / "lm_train_acc_heat.svg"))  # accuracy: no perplexity
    other = lm_surface(tmp_path / "cls.h5", np.linspace(-1, 1, 9), np.linspace(-1, 1, 9), task="classification")
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        figures.plot_file(other, formats="svg", kinds="heat", metrics="loss")
    assert not any("perplexity" in t or PAIR.match(t) for t in svg_texts(tmp_path / "cls_train_loss_heat.svg"))


def test_1d_curves_have_a_perplexity_axis(tmp_path):
    path = lm_surface(tmp_path / "lm.h5", np.linspace(-1, 1, 11))
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        figures.plot_file(path, formats="svg")
    texts = svg_texts(tmp_path / "lm_train_1d.svg")
    assert "perplexity exp(loss)" in texts and "accuracy (%)" in texts and "loss" in texts
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        figures.plot_file(lm_surface(tmp_path / "cls.h5", np.linspace(-1, 1, 11), task="classification"), formats="svg")
    assert "perplexity exp(loss)" not in svg_texts(tmp_path / "cls_train_1d.svg")


@pytest.mark.parametrize("log", [False, True])
def test_the_perplexity_axis_puts_each_tick_at_its_loss(log):
    """A perplexity tick P sits at the height of loss log(P) on the loss axis."""
    fig, ax = plt.subplots()
    loss = 2 + np.linspace(-1, 1, 11) ** 2
    ax.plot(np.linspace(-1, 1, 11), loss)
    if log:
        ax.set_yscale("log")
    sec = figures._perplexity_axis(ax)
    fig.canvas.draw()
    lo, hi = np.exp(ax.get_ylim())
    ticks = [t for t in sec.get_yticks() if lo <= t <= hi]
    assert len(ticks) >= 2
    for t in ticks:
        want = ax.transData.transform((0, np.log(t)))[1]
        assert sec.transData.transform((0, t))[1] == pytest.approx(want, abs=1e-6)
    plt.close(fig)


def test_the_stored_task_decides(tmp_path):
    path = lm_surface(tmp_path / "lm.h5", np.linspace(-1, 1, 3))
    assert figures.is_language_model(figures.load(path))
    with h5py.File(path, "r+") as f:  # a file of the CLI: the task also in its config
        f.attrs["job"] = "{}"
        f.attrs["config"] = "task: causal_lm\nmodel: hf:m\n"
    assert figures.is_language_model(figures.load(path))
