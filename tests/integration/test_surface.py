"""Loss surfaces against brute-force recomputations written here, through the API and the CLI.

The reference evaluation (`brute_force`) builds θ = θ* + α·δ + β·η itself from the
directions that the surface reports, loads it into a deep copy of the model and runs
the whole split in one batch; it shares no code with landscape.evaluate.
"""
import copy
import hashlib
import json
import shutil
from concurrent.futures import ThreadPoolExecutor

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from landscape.api import compute_surface
from landscape.core.data import Split, load_dataset
from landscape.core.models import build_model

from conftest import run_surface

torch.set_num_threads(1)

RTOL = 1e-5


# ---------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def small(digits):
    """Small splits (sizes not multiples of the batch sizes used below)."""
    return {"train": Split(digits["train"].inputs[:300], digits["train"].labels[:300]),
            "test": Split(digits["test"].inputs[:130], digits["test"].labels[:130])}


def reference_loss(logits, labels, loss_name):
    logits = logits.double()
    if loss_name == "crossentropy":
        return F.cross_entropy(logits, labels).item()
    onehot = torch.zeros_like(logits)
    onehot[torch.arange(len(labels)), labels] = 1.0
    per_sample = ((torch.softmax(logits, dim=1) - onehot) ** 2).mean(dim=1)
    return per_sample.mean().item()


def reference_acc(logits, labels):
    return 100.0 * (logits.argmax(dim=1) == labels).double().mean().item()


def brute_force(model, directions, coord, split, loss_name="crossentropy"):
    """(loss, acc) of the model at θ* + Σ coord_i · directions_i, computed from scratch."""
    net = copy.deepcopy(model)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    for a, d in zip(coord, directions):
        for name, t in d.items():
            state[name] = state[name] + float(a) * torch.as_tensor(t).to(state[name].dtype)
    for name in state:
        if name.endswith("running_var"):
            state[name] = state[name].clamp(min=0.0)
    net.load_state_dict(state)
    net.eval()
    with torch.no_grad():
        logits = net(split.inputs)
    return reference_loss(logits, split.labels, loss_name), reference_acc(logits, split.labels)


def check_point(surface, model, split_name, split, index, loss_name="crossentropy", values=None):
    values = surface.values if values is None else values
    if surface.y is None:
        (ix,) = index
        coord = (surface.x[ix],)
    else:
        iy, ix = index
        coord = (surface.x[ix], surface.y[iy])
    loss, acc = brute_force(model, surface.directions, coord, split, loss_name)
    assert values[f"{split_name}/loss"][index] == pytest.approx(loss, rel=RTOL), (split_name, index, coord)
    assert values[f"{split_name}/acc"][index] == pytest.approx(acc, rel=RTOL), (split_name, index, coord)


def file_hash(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_all(path):
    """Every dataset of an HDF5 file by name."""
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[...]) if isinstance(obj, h5py.Dataset) else None)
    return out


def assert_files_equal(a, b):
    da, db = read_all(a), read_all(b)
    assert sorted(da) == sorted(db)
    for key in da:
        assert np.array_equal(da[key], db[key], equal_nan=True), key
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        assert json.loads(fa.attrs["job"]) == json.loads(fb.attrs["job"])


def error_lines(proc):
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert "Traceback" not in proc.stderr + proc.stdout
    return lines


# ---------------------------------------------------------------- API: values


@pytest.mark.parametrize("points_per_pass", [1, 4])
@pytest.mark.parametrize("loss_name", ["crossentropy", "mse"])
@pytest.mark.parametrize("model_name,norm,ignore", [("digits_cnn", "filter", "biasbn"), ("digits_mlp", "layer", "none")])
def test_values_equal_brute_force(small, loss_name, model_name, norm, ignore, points_per_pass):
    model = build_model(model_name, seed=1)
    s = compute_surface(model, small, x="-1:1:5", y="-0.5:0.5:3", loss_name=loss_name, xnorm=norm, xignore=ignore,
                        seed=4, batch_size=64, points_per_pass=points_per_pass)
    assert s.values["train/loss"].shape == (3, 5)
    assert s.mask.all()
    for index in [(0, 4), (2, 0), (0, 1), (2, 3), (1, 2)]:
        for name in ("train", "test"):
            check_point(s, model, name, small[name], index, loss_name)
    # the surface is not flat: the directions really moved the weights
    assert np.ptp(s.values["train/loss"]) > 1e-3


def test_centre_is_the_unperturbed_model_and_model_is_unchanged(small):
    model = build_model("digits_cnn", seed=2)
    model.train()  # the caller's mode must survive
    before = copy.deepcopy(model.state_dict())
    with torch.no_grad():
        logits = copy.deepcopy(model).eval()(small["train"].inputs)
    s = compute_surface(model, {"train": small["train"]}, x="-1:1:5", y="-1:1:3", seed=0, batch_size=1000)
    assert s.values["train/loss"][1, 2] == pytest.approx(reference_loss(logits, small["train"].labels, "crossentropy"),
                                                         rel=1e-6)
    assert s.values["train/acc"][1, 2] == pytest.approx(reference_acc(logits, small["train"].labels), rel=1e-9)
    after = model.state_dict()
    assert after.keys() == before.keys()
    for k in before:
        assert torch.equal(after[k], before[k]), k
    assert model.training, "compute_surface left the model in eval mode"
    # the returned directions are tensors keyed by parameter name
    assert set(s.directions[0]) == {k for k, _ in model.named_parameters()}


@pytest.mark.parametrize("x,y", [("-1:1:5", None), ("-1:1:4", "-1:1:4"), ("-1:1:5", "-0.5:0.5:3"),
                                 ("-0.4:0.8:3", "-1:0.6:6")])
def test_file_round_trip_and_axis_order(tmp_path, small, x, y):
    model = build_model("digits_mlp", seed=5)
    path = tmp_path / "s.h5"
    split = {"train": small["train"]}
    s = compute_surface(model, split, x=x, y=y, seed=3, surf_file=path)
    xs = np.linspace(*[float(v) for v in x.split(":")[:2]], int(x.split(":")[2]))
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["x"][...], xs)
        if y is None:
            assert "y" not in f
            shape = (len(xs),)
        else:
            ys = np.linspace(*[float(v) for v in y.split(":")[:2]], int(y.split(":")[2]))
            np.testing.assert_array_equal(f["y"][...], ys)
            shape = (len(ys), len(xs))
        stored = {k: f[k][...] for k in ("train/loss", "train/acc", "mask")}
        dirs = [{k: torch.from_numpy(v[...]) for k, v in f[f"directions/{a}"].items()} for a in ("xy" if y else "x")]
    assert stored["train/loss"].shape == shape and stored["train/acc"].shape == shape
    assert stored["mask"].shape == shape and stored["mask"].all()
    for k in ("train/loss", "train/acc"):
        np.testing.assert_array_equal(stored[k], s.values[k])
    # directions in the file are the directions used
    assert len(dirs) == len(s.directions)
    for d_file, d in zip(dirs, s.directions):
        assert d_file.keys() == d.keys()
        for k in d:
            assert torch.equal(d_file[k], d[k].cpu()), k
    # values at non-symmetric points, from the file
    points = [(0,), (len(xs) - 1,), (1,)] if y is None else [(0, len(xs) - 1), (shape[0] - 1, 0), (shape[0] - 2, 1)]
    for index in points:
        check_point(s, model, "train", small["train"], index, values=stored)


@pytest.mark.parametrize("points_per_pass", [1, 4])
def test_states_with_batch_norm_keep_running_var_non_negative(small, points_per_pass):
    model = build_model("digits_cnn", seed=0)
    with torch.no_grad():  # realistic, non-trivial running statistics
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    seen = []

    def hook(module, inputs):
        seen.append(module.running_var.min().item())

    # the model's own buffers hold each point with one point per pass (the stacked path uses functional_call)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)] if points_per_pass == 1 else []
    handles = [m.register_forward_pre_hook(hook) for m in bns]
    s = compute_surface(model, {"train": small["train"]}, x="-3:0:4", dir_type="states", xignore="none", seed=1,
                        points_per_pass=points_per_pass)
    for h in handles:
        h.remove()
    if bns:
        assert seen and min(seen) >= 0.0
    # every state entry but num_batches_tracked has a direction
    assert set(s.directions[0]) == {k for k in model.state_dict() if not k.endswith("num_batches_tracked")}
    for k in ("train/loss", "train/acc"):
        assert np.isfinite(s.values[k]).all(), s.values[k]
    for ix in range(4):
        check_point(s, model, "train", small["train"], (ix,))
    # α = -1 zeroes the running statistics (direction = the tensor itself); α = 0 is θ*
    assert s.x[3] == 0.0


def test_resume_computes_only_missing_points(tmp_path, small):
    model = build_model("digits_mlp", seed=7)
    path = tmp_path / "r.h5"
    kw = dict(x="-1:1:5", y="-1:1:3", seed=2, surf_file=path)
    first = compute_surface(model, {"train": small["train"]}, **kw)
    assert first.summary.computed == 15
    cleared = [(0, 0), (1, 3), (2, 4)]
    with h5py.File(path, "r+") as f:
        for idx in cleared:
            f["mask"][idx] = 0
            f["train/loss"][idx] = np.nan
            f["train/acc"][idx] = np.nan
    second = compute_surface(model, {"train": small["train"]}, **kw)
    assert second.summary.done_before == 12
    assert second.summary.computed == len(cleared)
    for k in ("train/loss", "train/acc"):
        np.testing.assert_array_equal(second.values[k], first.values[k])
    assert second.mask.all()


# ---------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A digits_cnn checkpoint (random weights, non-trivial BN statistics)."""
    model = build_model("digits_cnn", seed=11)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("ckpt") / "cnn.pt"
    torch.save({"state_dict": model.state_dict()}, path)
    return path


GRID_1D = ("--x=-1:1:7",)
GRID_2D = ("--x=-1:1:5", "--y=-0.5:0.5:3")


def cli_args(checkpoint, surf_file, grid=GRID_2D, extra=()):
    return ["--model_file", str(checkpoint), *grid, "--splits", "train,test", "--threads", "1", "--no-plot",
            "--surf_file", str(surf_file), *extra]


def test_cli_resume_refuse_force(tmp_path, checkpoint, single):
    """The 2D job of `single` (run via the CLI), rerun with the same settings on a copy of its file."""
    path = tmp_path / "s.h5"
    shutil.copyfile(single["2d"], path)
    args = cli_args(checkpoint, path, GRID_2D)
    digest = file_hash(path)

    again = run_surface(args)
    assert "this run: 0 points" in again.stderr
    assert "15/15 points" in again.stderr
    assert file_hash(path) == digest
    mtime = path.stat().st_mtime_ns

    changes = ((["--seed", "1"], "seed"), (["--y=-1:1:3"], "grid_y"))
    # one after the other: run at once, the second would (rightly) find the file locked by the first
    procs = [run_surface(args + c[0], check=False) for c in changes]
    for (_, word), proc in zip(changes, procs):
        assert proc.returncode == 2, proc.stderr
        lines = error_lines(proc)
        assert len(lines) == 1 and lines[0].startswith("landscape: error:"), proc.stderr
        assert word in lines[0] and "--force" in lines[0], lines[0]
        assert file_hash(path) == digest and path.stat().st_mtime_ns == mtime
        assert not (tmp_path / "s.h5.lock").exists()

    forced = run_surface(args + ["--x=-1:1:7", "--force"])
    assert "this run: 21 points" in forced.stderr
    new = read_all(path)
    np.testing.assert_array_equal(new["x"], np.linspace(-1, 1, 7))
    assert new["train/loss"].shape == (3, 7) and new["mask"].all()
    assert np.isfinite(new["train/loss"]).all()


@pytest.fixture(scope="module")
def single(checkpoint, tmp_path_factory):
    """1-process CLI runs of a 1D and a 2D job: the references for the MPI runs."""
    folder = tmp_path_factory.mktemp("single")
    out = {dim: folder / f"{dim}.h5" for dim in ("1d", "2d")}
    jobs = [cli_args(checkpoint, out["1d"], GRID_1D), cli_args(checkpoint, out["2d"], GRID_2D)]
    with ThreadPoolExecutor(max_workers=2) as pool:  # one core each
        procs = list(pool.map(run_surface, jobs))
    assert "this run: 7 points" in procs[0].stderr and "this run: 15 points" in procs[1].stderr
    return out


@pytest.mark.parametrize("write", ["gather", "parallel"])
@pytest.mark.parametrize("dim", ["1d", "2d"])
def test_two_ranks_equal_one_process(tmp_path, checkpoint, single, dim, write):
    grid = GRID_1D if dim == "1d" else GRID_2D
    path = tmp_path / "two.h5"
    proc = run_surface(cli_args(checkpoint, path, grid, ("--write", write)), ranks=2)
    assert "on 2 rank(s)" in proc.stderr
    assert_files_equal(single[dim], path)
    assert read_all(path)["mask"].all()


def test_dir_file_reuses_directions(tmp_path, checkpoint, single):
    path = tmp_path / "reuse.h5"
    # (--seed or --xnorm with --dir_file are refused: tests/integration/test_first_hour_cli.py)
    run_surface(cli_args(checkpoint, path, extra=("--dir_file", str(single["2d"]))))
    with h5py.File(path) as f:  # the directions were read, not drawn
        assert json.loads(f.attrs["job"])["directions"] == {"given": True}
    a, b = read_all(single["2d"]), read_all(path)
    for key in a:
        if key.startswith(("train/", "test/", "directions/", "mask", "x", "y")):
            np.testing.assert_allclose(b[key], a[key], rtol=1e-12, atol=0, err_msg=key)
