"""Direction ensembles (`--ensemble N`): every member equals a single job with the same seed and
member index bit for bit; the stored statistics equal numpy over the members; basin widths and
curvatures equal the closed form of a quadratic loss; 2 ranks and a resumed run equal one
uninterrupted process; the figures and `info` read the file; bad input is one line."""
from __future__ import annotations

import subprocess

import h5py
import numpy as np
import pytest
import torch
from torch import nn

from landscape.analysis import ensemble as stats
from landscape.api import compute_surface
from landscape.io import surface_file

from conftest import FIXED, ROOT, cli_env, command, kill_after, points_done, run_surface

MASK = surface_file.ENSEMBLE_MASK


def toy(n=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    return x, (x[:, 0] + x[:, 1] > 0).long()


def mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))


@pytest.mark.parametrize("y", [None, "-1:1:3"])
def test_each_member_equals_a_single_job_with_its_seed_and_index(tmp_path, y):
    model, data = mlp(), {"train": toy(), "test": toy(40, seed=1)}
    grid = {"x": "-1:1:5", **({"y": y} if y else {})}
    e = compute_surface(model, data, ensemble=5, seed=7, store_directions=True, surf_file=tmp_path / "e.h5", **grid)
    assert e.mask.shape == (5, *(() if y is None else (3,)), 5) and e.mask.all()
    rows = []
    for m in (0, 3, 4):
        one = compute_surface(model, data, seed=7, member=m, surf_file=tmp_path / f"m{m}.h5", **grid)
        for key in ("train/loss", "train/acc", "test/loss"):
            np.testing.assert_array_equal(e.values[f"ensemble/{key}"][m], one.values[key], err_msg=(m, key))
        with h5py.File(tmp_path / "e.h5") as f:
            for axis, d in zip("xy", one.directions):
                for name, t in d.items():
                    np.testing.assert_array_equal(f[f"ensemble/directions/{m}/{axis}/{name}"][...], t.numpy())
        rows.append(one.values["train/loss"])
    assert not np.array_equal(rows[0], rows[1])  # members are different directions
    # member 0 is the plain job with that seed
    plain = compute_surface(model, data, seed=7, surf_file=tmp_path / "plain.h5", **grid)
    np.testing.assert_array_equal(plain.values["train/loss"], e.values["ensemble/train/loss"][0])


def test_stored_statistics_equal_numpy_over_the_members(tmp_path):
    model, data = mlp(), {"train": toy()}
    compute_surface(model, data, x="-1:1:9", y="-1:1:5", ensemble=6, epsilons="0.01,0.05",
                    surf_file=tmp_path / "e.h5")
    e = surface_file.read_ensemble(tmp_path / "e.h5")
    v = e.values["train"]["loss"]
    want = {"mean": v.mean(0), "std": v.std(0, ddof=1), "min": v.min(0), "max": v.max(0),
            **{stats.quantile_name(q): np.quantile(v, q, axis=0) for q in stats.QUANTILES}}
    for name, a in want.items():
        np.testing.assert_allclose(e.stats[f"stats/train/loss/{name}"], a, rtol=1e-12, err_msg=name)
    assert e.attrs["epsilons"] == [0.01, 0.05] and e.attrs["members"] == 6
    # the rise L(±r) − L(0) along x (β = 0 row), mean over members and sides, and its max
    row = v[:, 2, :]
    for i, r in enumerate((1, 2, 3, 4)):
        both = np.concatenate([row[:, 4 + r], row[:, 4 - r]]) - np.concatenate([row[:, 4], row[:, 4]])
        assert e.stats["rise/train/x/radius"][i] == pytest.approx(e.x[4 + r])
        assert e.stats["rise/train/x/mean"][i] == pytest.approx(both.mean(), rel=1e-12)
        assert e.stats["rise/train/x/max"][i] == both.max()
    # widths along x (the β = 0 row) and y (the α = 0 column), by a by-hand walk over the stored values
    for axis, curves, coords in (("x", v[:, 2, :], e.x), ("y", v[:, :, 4], e.y)):
        w = e.stats[f"widths/train/{axis}"]
        assert w.shape == (6, 2, 2)
        for m in range(6):
            for i, eps in enumerate((0.01, 0.05)):
                np.testing.assert_allclose(w[m, i], by_hand_widths(coords, curves[m], eps), rtol=1e-12)


def by_hand_widths(coords, curve, eps):
    """[left, right] |α| where curve first exceeds curve(0) + eps, linear between grid points."""
    c = int(np.flatnonzero(coords == 0)[0])
    out = []
    for side in (range(c - 1, -1, -1), range(c + 1, len(coords))):
        prev, width = c, np.nan
        for j in side:
            if curve[j] > curve[c] + eps:
                a0, a1, l0, l1 = coords[prev], coords[j], curve[prev], curve[j]
                width = abs(a0 + (curve[c] + eps - l0) / (l1 - l0) * (a1 - a0))
                break
            prev = j
        out.append(width)
    return out


def test_widths_and_curvature_of_a_quadratic_loss_equal_the_closed_form(tmp_path):
    """L(w) = mean_i (x_i·w − y_i)² with y = X w*: along d, L(θ* + αd) = α² dᵀAd (A = XᵀX / n), so the
    basin width is √(ε / dᵀAd) on both sides and the curvature 2 dᵀAd."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(200, 4, generator=g)
    model = nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.5, -1.0, 2.0, 0.3]]))
        y = model(x)
    eps = (1.0, 4.0)  # widths ≫ the spacing 0.025: linear interpolation errs by < (spacing/width)² / 8
    r = compute_surface(model, {"train": (x, y)}, task="regression", x="-2:2:161", ensemble=8, store_directions=True,
                        epsilons=",".join(map(str, eps)), surf_file=tmp_path / "q.h5")
    e = surface_file.read_ensemble(r.path)
    a = (x.double().T @ x.double() / len(x)).numpy()
    with h5py.File(r.path) as f:
        ds = [f[f"ensemble/directions/{m}/x/weight"][...].astype(float).ravel() for m in range(8)]
    c = np.array([d @ a @ d for d in ds])
    np.testing.assert_allclose(e.stats["curvature/train/x"], 2 * c, rtol=1e-3)
    for i, ep in enumerate(eps):
        exact = np.sqrt(ep / c)
        assert (exact < 2).all()  # inside the grid
        np.testing.assert_allclose(e.stats["widths/train/x"][:, i, 0], exact, rtol=2e-3)
        np.testing.assert_allclose(e.stats["widths/train/x"][:, i, 1], exact, rtol=2e-3)


def test_two_ranks_and_a_resumed_run_equal_one_process(tmp_path, capsys):
    args = ["--model", "digits_mlp", "--x=-1:1:7", "--ensemble", "5", "--splits", "train,test", "--subset", "300",
            "--epsilons", "0.005,0.02", "--threads", "1", "--no-progress", *FIXED]  # the MLP at initialization: flat
    run_surface([*args, "--no-plot", "--surf_file", str(tmp_path / "one.h5")])
    run_surface([*args, "--no-plot", "--surf_file", str(tmp_path / "two.h5")], ranks=2)
    with h5py.File(tmp_path / "two.h5", "r+") as f:  # a run stopped part-way: points lost, mask cleared
        mask = f["ensemble/mask"][...]
        mask[1:4, ::2] = 0
        f["ensemble/mask"][...] = mask
        for key in ("train/loss", "test/acc"):
            v = f[f"ensemble/{key}"][...]
            v[mask == 0] = np.nan
            f[f"ensemble/{key}"][...] = v
        del f["ensemble/stats"]
    proc = run_surface([*args, "--surf_file", str(tmp_path / "two.h5")], ranks=2)
    assert "this run: 12 points" in proc.stderr and "direction ensemble: 5 members" in proc.stdout
    a, b = surface_file.read_ensemble(tmp_path / "one.h5"), surface_file.read_ensemble(tmp_path / "two.h5")
    assert b.mask.all()
    for split in ("train", "test"):
        for metric in ("loss", "acc"):
            np.testing.assert_array_equal(a.values[split][metric], b.values[split][metric])
    for name, v in a.stats.items():
        np.testing.assert_array_equal(v, b.stats[name], err_msg=name)
    figures = sorted(p.name for p in tmp_path.glob("two_*.png"))
    assert figures == ["two_test_acc_band.png", "two_test_curvature.png", "two_test_loss_band.png",
                       "two_test_widths.png", "two_train_acc_band.png", "two_train_curvature.png",
                       "two_train_loss_band.png", "two_train_widths.png"]
    from landscape.cli import main

    assert main(["info", str(tmp_path / "one.h5")]) == 0
    assert main(["hessian", str(tmp_path / "one.h5"), "--subset", "0", "--no-plot"]) == 2  # one plane only
    assert "holds a direction ensemble" in capsys.readouterr().err
    assert main(["export-reference", str(tmp_path / "one.h5"), str(tmp_path / "ref.h5")]) == 2
    assert "holds a direction ensemble" in capsys.readouterr().err and not (tmp_path / "ref.h5").exists()
    compare = ["plot", str(tmp_path / "one.h5"), str(tmp_path / "two.h5"), "--compare", "--format", "png",
               "--out_dir", str(tmp_path / "cmp")]
    assert main([*compare, "--titles", "a,b"]) == 0
    assert sorted(p.name for p in (tmp_path / "cmp").iterdir()) == [
        f"compare_{s}_{k}.png" for s in ("test", "train") for k in ("curvature", "loss_band", "widths")]
    assert main([*compare, "--titles", "a"]) == 2


def test_a_killed_ensemble_resumes_to_the_uninterrupted_file(tmp_path):
    """SIGKILL of a 2-rank ensemble job after some points; the same command completes the file, which
    equals one uninterrupted process."""
    args = ["--model", "digits_mlp", "--x=-1:1:21", "--ensemble", "20", "--subset", "300", "--threads", "1",
            "--no-progress", "--no-plot", "--chunk", "2", *FIXED]
    run_surface([*args, "--surf_file", str(tmp_path / "ref.h5")])
    path = tmp_path / "killed.h5"
    job = subprocess.Popen(command([*args, "--surf_file", str(path)], 2), env=dict(cli_env(), LANDSCAPE_SLOW_RANKS="0:3,1:3"),
                           cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    kill_after(job, path, 40, MASK)
    assert 40 <= points_done(path, MASK) < 420
    run_surface([*args, "--surf_file", str(path)], ranks=2)
    a, b = surface_file.read_ensemble(tmp_path / "ref.h5"), surface_file.read_ensemble(path)
    assert b.mask.all()
    np.testing.assert_array_equal(a.values["train"]["loss"], b.values["train"]["loss"])
    for name, v in a.stats.items():
        np.testing.assert_array_equal(v, b.stats[name], err_msg=name)



@pytest.mark.parametrize("extra,words", [
    (["--ensemble", "0"], "--ensemble needs a whole number of directions of at least 1"),
    (["--ensemble", "2.5"], "--ensemble needs a whole number"),
    (["--ensemble", "4", "--epsilons", "0,0.1"], "--epsilons takes loss rises > 0"),
    (["--ensemble", "4", "--epsilons", "-1"], "--epsilons takes loss rises > 0"),
    (["--ensemble", "4", "--member", "2"], "--member evaluates one member"),
    (["--epsilons", "0.1"], "add --ensemble N"),
    (["--store_directions"], "add --ensemble N"),
    (["--ensemble", "4", "--dir_file", "x.h5"], "--ensemble draws random directions"),
    (["--ensemble", "4", "--model_file2", "x.pt"], "--ensemble draws random directions"),
])
def test_bad_input_is_one_line(tmp_path, extra, words):
    proc = run_surface(["--model", "digits_mlp", "--x=-1:1:3", "--no-plot", "--surf_file", str(tmp_path / "s.h5"),
                        *extra], check=False)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and words in lines[0], proc.stderr
    assert not (tmp_path / "s.h5").exists()
