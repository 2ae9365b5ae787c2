"""The user's own metric function (issue 16): `--task package.module:fn`, fn(outputs, (inputs,
targets)) -> {name: (sum, count)}; each metric Σ sum / Σ count, a dataset <split>/<name>, end to end
through the CLI (2 ranks) and the API, against a brute-force loop; figures and info of each metric;
the Hessian takes the metric `loss`; a bad return value is one line and exit 2."""
from __future__ import annotations

import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch

from landscape.api import compute_surface
from landscape.cli import main
from landscape.core.tasks import UserMetrics
from landscape.errors import UserError
from landscape.viz.figures import plot_file

from conftest import cli_env, run_surface
from custom_factory import regression_data, regressor

TASK = "user_metrics:mse_and_mae"
COMMON = ["--model", "custom_factory:regressor", "--dataset", "custom_factory:regression_data", "--xignore", "none",
          "--threads", "1", "--no-plot", "--no-progress"]


def brute_force(model, directions, coords, x, y) -> tuple[float, float]:
    """(mean (f(x) − y)², mean |f(x) − y|) at θ* + Σ c_i d_i, the whole split in one pass."""
    with torch.no_grad():
        moved = {n: p + sum(c * d[n] for c, d in zip(coords, directions)) for n, p in model.named_parameters()}
        err = torch.func.functional_call(model, moved, (x,)).squeeze(-1).double() - y.double()
        return err.pow(2).mean().item(), err.abs().mean().item()


def stored_directions(f, names=("x", "y")):
    return [{k: torch.from_numpy(v[...]) for k, v in f[f"directions/{a}"].items()} for a in names if f"directions/{a}" in f]


def test_user_metrics_through_the_cli_on_two_ranks(tmp_path):
    path = tmp_path / "u.h5"
    run_surface(["--task", TASK, *COMMON, "--splits", "train,test", "--x=-1:1:3", "--y=-1:1:3", "--yignore", "none",
                 "--surf_file", str(path)], ranks=2)
    splits = dict(zip(("train", "test"), regression_data()))
    model = regressor()
    with h5py.File(path) as f:
        assert set(f["train"]) == set(f["test"]) == {"loss", "mae", "x", "y"}  # x, y: dimension scales
        assert f["train/mae"].dtype == np.float64 and f["mask"][...].all()
        directions = stored_directions(f)
        for split, (x, y) in splits.items():
            for i, b in enumerate(np.linspace(-1, 1, 3)):
                for j, a in enumerate(np.linspace(-1, 1, 3)):
                    mse, mae = brute_force(model, directions, (a, b), x, y)
                    np.testing.assert_allclose(f[f"{split}/loss"][i, j], mse, rtol=1e-5)
                    np.testing.assert_allclose(f[f"{split}/mae"][i, j], mae, rtol=1e-5)
        centre = f["train/mae"][1, 1]
    assert main(["plot", str(path), "--format", "png", "--dpi", "40", "--kinds", "contour,heat"]) == 0
    for name in ("u_train_loss_contour", "u_train_mae_contour", "u_test_mae_heat"):
        assert (tmp_path / f"{name}.png").is_file(), name
    assert main(["plot", str(path), "--format", "png", "--dpi", "40", "--metrics", "mae", "--kinds", "heat",
                 "--out_dir", str(tmp_path / "only")]) == 0
    assert sorted(p.name for p in (tmp_path / "only").iterdir()) == ["u_test_mae_heat.png", "u_train_mae_heat.png"]
    assert main(["plot", str(path), "--metrics", "acc"]) == 2  # not in the file: one line naming what is
    from landscape.viz.info import info

    assert f"mae at centre {centre:.4g}" in info(path)


def test_user_metrics_through_the_api_with_points_per_pass(tmp_path):
    (x, y), _ = regression_data()
    model = regressor()
    one = compute_surface(model, {"train": (x, y)}, x="-1:1:5", task=TASK, xignore="none",
                          surf_file=str(tmp_path / "one.h5"))
    four = compute_surface(model, {"train": (x, y)}, x="-1:1:5", task=TASK, xignore="none", points_per_pass=4)
    assert list(one.values) == ["train/loss", "train/mae"]
    for name in one.values:
        np.testing.assert_allclose(four.values[name], one.values[name], rtol=1e-6)
    want = np.array([brute_force(model, one.directions, (a,), x, y) for a in np.linspace(-1, 1, 5)])
    np.testing.assert_allclose(one.values["train/loss"], want[:, 0], rtol=1e-5)
    np.testing.assert_allclose(one.values["train/mae"], want[:, 1], rtol=1e-5)
    # with batches: every metric is Σ sum / Σ count over the batches, equal to the one-pass values
    batched = compute_surface(model, {"train": (x, y)}, x="-1:1:5", task=TASK, xignore="none", batch_size=7)
    np.testing.assert_allclose(batched.values["train/mae"], want[:, 1], rtol=1e-5)
    written = {p.name for p in plot_file(tmp_path / "one.h5", formats="png", dpi=40)}
    assert {"one_train_1d.png", "one_train_mae_1d.png"} <= written


class TwoHeads(torch.nn.Module):
    """A model whose output is a dict of two tensors, no 'logits'."""

    def __init__(self):
        super().__init__()
        self.body = regressor()
        self.head = torch.nn.Linear(6, 2)

    def forward(self, x):
        return {"pred": self.body(x), "scale": self.head(x).exp()}


def test_raw_dict_outputs_one_and_four_points_per_pass():
    (x, y), _ = regression_data()
    torch.manual_seed(1)
    model = TwoHeads()
    runs = [compute_surface(model, {"train": (x, y)}, x="-1:1:5", task="user_metrics:from_a_dict", xignore="none",
                            points_per_pass=k, batch_size=100) for k in (1, 4)]
    assert list(runs[0].values) == ["train/loss", "train/scale"]
    for a, i in zip(np.linspace(-1, 1, 5), range(5)):
        with torch.no_grad():
            moved = {n: p + a * runs[0].directions[0][n] for n, p in model.named_parameters()}
            out = torch.func.functional_call(model, moved, (x,))
        assert runs[0].values["train/loss"][i] == pytest.approx(float((out["pred"].squeeze(-1) - y).pow(2).mean()), rel=1e-5)
        assert runs[0].values["train/scale"][i] == pytest.approx(float(out["scale"].double().mean()), rel=1e-5)
    for name in runs[0].values:
        np.testing.assert_allclose(runs[1].values[name], runs[0].values[name], rtol=1e-6)


def test_counts_as_tensors_and_a_metric_without_loss():
    (x, y), _ = regression_data()
    model = regressor()
    s = compute_surface(model, {"train": (x, y)}, x="-1:1:3", task="user_metrics:within_half", xignore="none",
                        batch_size=50)
    assert list(s.values) == ["train/within"]
    for a, v in zip(np.linspace(-1, 1, 3), s.values["train/within"]):
        with torch.no_grad():
            moved = {n: p + a * s.directions[0][n] for n, p in model.named_parameters()}
            err = (torch.func.functional_call(model, moved, (x,)).squeeze(-1) - y).abs()
        assert v == pytest.approx(float((err < 0.5).double().mean()), rel=1e-12)


@pytest.mark.parametrize("fn, words", [
    ("a_tensor", ["returned tensor: ", "return a dict {name: (sum, count)}"]),
    ("float_count", ["returned {'loss': (tensor, 2.5)}", "counts ints"]),
])
def test_a_bad_return_value_is_one_line_and_exit_2(tmp_path, fn, words):
    proc = run_surface(["--task", f"user_metrics:{fn}", *COMMON, "--x=-1:1:3", "--surf_file", str(tmp_path / "s.h5")],
                       check=False)
    report = f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, report
    assert lines[0].startswith("landscape: error: --task user_metrics:") and all(w in lines[0] for w in words), report
    assert not (tmp_path / "s.h5").exists()


@pytest.mark.parametrize("out, words", [
    ({}, ["returned {}"]),
    ({"loss": 1.0}, ["returned {'loss': 1.0}"]),
    ({"two words": (1.0, 3)}, ["returned {'two words': (1.0, 3)}", "names identifiers"]),
    ({"loss": (torch.ones(3), 3)}, ["returned {'loss': (tensor(3,), 3)}"]),
    ({"loss": (1.0, True)}, ["returned {'loss': (1.0, True)}"]),
])
def test_discover_names_what_came_back(out, words):
    task = UserMetrics("user_metrics:mse_and_mae")
    task.fn = lambda outputs, batch: out
    with pytest.raises(UserError) as e:
        task.discover(torch.zeros(3, 1), torch.zeros(3), torch.zeros(3, 6))
    assert all(w in str(e.value) for w in words), str(e.value)
    assert "\n" not in str(e.value)


def test_loss_name_is_refused_with_a_metric_function():
    with pytest.raises(UserError, match="computes its own metrics: leave out --loss_name mse"):
        UserMetrics(TASK, "mse")


METRIC_V1 = '''
def metric(outputs, batch):
    err = outputs.squeeze(-1) - batch[1]
    return {"loss": (err.pow(2).sum(), len(err))}
'''


def test_resume_with_other_metric_code_is_refused(tmp_path):
    (tmp_path / "my_metric.py").write_text(METRIC_V1)
    args = ["--task", "my_metric:metric", *COMMON, "--x=-1:1:3", "--surf_file", str(tmp_path / "s.h5")]
    run_surface(args, cwd=tmp_path)
    assert run_surface(args, cwd=tmp_path).returncode == 0  # the same code resumes (nothing left to do)
    (tmp_path / "my_metric.py").write_text(METRIC_V1.replace("pow(2)", "abs()"))
    proc = run_surface(args, cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "task_code" in proc.stderr and "holds another job" in proc.stderr, proc.stderr
    hessian = subprocess.run([sys.executable, "-m", "landscape", "hessian", str(tmp_path / "s.h5"), "--subset", "32",
                              "--threads", "1", "--no-plot", "--no-progress"], cwd=tmp_path, env=cli_env(),
                             capture_output=True, text=True, timeout=300)
    assert hessian.returncode == 2 and "the source of --task my_metric:metric changed" in hessian.stderr, hessian.stderr


def test_the_hessian_takes_the_metric_loss(tmp_path, capsys):
    """The Hessian map of a user task equals that of --task regression --loss_name mse (the same
    MSE, model, data and directions); a metric function without 'loss' is refused with the fix."""
    maps = {}
    for name, task in (("user", ["--task", TASK]), ("builtin", ["--task", "regression", "--loss_name", "mse"])):
        path = tmp_path / f"{name}.h5"
        run_surface([*task, *COMMON, "--x=-0.5:0.5:3", "--surf_file", str(path)])
        assert main(["hessian", str(path), "--subset", "64", "--batch_size", "16", "--threads", "1", "--no-plot",
                     "--no-progress"]) == 0
        with h5py.File(path) as f:
            maps[name] = (f["hessian/lambda_max"][...], f["hessian/lambda_min"][...])
    for user, builtin in zip(maps["user"], maps["builtin"]):
        np.testing.assert_allclose(user, builtin, rtol=1e-6, atol=1e-8)
    assert np.all(maps["user"][0] > 0)
    for fn, words in (("within_half", "has no 'loss' metric (it returns within): a Hessian map needs one: add 'loss'"),
                      ("not_differentiable", "the 'loss' sum is a float, not differentiable")):
        path = tmp_path / f"{fn}.h5"
        run_surface(["--task", f"user_metrics:{fn}", *COMMON, "--x=-1:1:3", "--surf_file", str(path)])
        capsys.readouterr()
        assert main(["hessian", str(path), "--subset", "32", "--threads", "1", "--no-plot", "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert words in err and len(err.strip().splitlines()) == 1, err
