"""Fast by default (core.tuning): the configuration measured at start-up gives the values of the plain path
within float rounding, is the same on every rank (real mpirun), is recorded in the file as a run option (never
part of the job), falls back where vmap cannot run the model, and is skipped for runs too short to repay it."""
from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch
from torch import nn

from landscape.api import compute_surface
from landscape.core import tuning
from landscape.core.data import load_dataset
from landscape.core.directions import random_directions
from landscape.core.models import DigitsCNN, DigitsMLP

from conftest import run_surface

PLAIN = {"channels_last": False, "compile": False, "points_per_pass": 1, "batch_size": 512}


@pytest.fixture()
def always(monkeypatch):
    """Every candidate measured, whatever the run's length (compile still only past COMPILE_WORTH)."""
    monkeypatch.setattr(tuning, "SHARE", float("inf"))


def digits(n=300):
    split = load_dataset("digits", splits=["train"], subset=(n, "first"))["train"]
    return {"train": (split.inputs, split.labels)}


@pytest.mark.parametrize("model", [DigitsCNN, DigitsMLP])
def test_every_configuration_gives_the_plain_values(model):
    """Each configuration the tuner can choose (layout × K × compile × batch size), forced, equals the plain path."""
    torch.manual_seed(0)
    net, data = model(), digits()
    dirs = random_directions(net, seed=0, ndim=2)
    plain = compute_surface(net, data, x="-1:1:4", y="-1:1:3", directions=dirs, **PLAIN).values["train/loss"]
    for cl in (False, True):
        for k in (1, 4, 16):
            for compiled in ((False, True) if k == 4 else (False,)):
                for batch in ((32, 512, 1024) if k == 4 and not compiled else (512,)):
                    got = compute_surface(net, data, x="-1:1:4", y="-1:1:3", directions=dirs, channels_last=cl,
                                          compile=compiled, points_per_pass=k, batch_size=batch).values["train/loss"]
                    np.testing.assert_allclose(got, plain, rtol=2e-5,
                                               err_msg=f"channels_last={cl} K={k} compile={compiled} batch {batch}")


def test_the_measured_choice_gives_the_plain_values_and_says_what_it_tried(always):
    torch.manual_seed(0)
    net, data = DigitsCNN(), digits()
    dirs = random_directions(net, seed=0, ndim=1)
    auto = compute_surface(net, data, x="-1:1:6", directions=dirs)
    note = auto.notes[-1]
    assert note.startswith("configuration measured:") and "channels-last" in note and "16 point(s)" in note, note
    assert "batch 512 " in note and "batch 256 " in note, note  # the batch size searched from 512 down (300 examples)
    plain = compute_surface(net, data, x="-1:1:6", directions=dirs, **PLAIN)
    np.testing.assert_allclose(auto.values["train/loss"], plain.values["train/loss"], rtol=2e-5)
    assert auto.evaluation.channels_last in (False, True) and not auto.evaluation.compile
    assert f"batch {auto.evaluation.batch_size}" in note.split(" ms per point")[0]


class DataDependent(nn.Module):
    """A branch on a value (.item()): vmap cannot run it."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        z = self.fc(x.flatten(1))
        return z if z.sum().item() > -1e9 else -z


def test_points_per_pass_fall_back_when_vmap_cannot_run_the_model(always):
    torch.manual_seed(0)
    net, data = DataDependent(), digits()
    s = compute_surface(net, data, x="-1:1:5")
    assert "1 point(s) per pass" in s.notes[-1] and "4 points per pass failed" in s.notes[-1], s.notes
    want = compute_surface(net, data, x="-1:1:5", **PLAIN)
    np.testing.assert_array_equal(s.values["train/loss"], want.values["train/loss"])


def test_a_short_run_keeps_the_given_configuration():
    s = compute_surface(DigitsMLP(), digits(64), x="-1:1:3")
    assert s.notes[-1].startswith("configuration as given (contiguous, 1 point(s) per pass, batch 512)"), s.notes


def test_a_short_run_of_a_conv_net_on_the_cpu_runs_channels_last():
    """Nothing measured: a conv net on a CPU starts (and stays) channels-last, with the plain values."""
    torch.manual_seed(0)
    net, data = DigitsCNN(), digits(64)
    strides = {n: p.stride() for n, p in net.named_parameters()}
    s = compute_surface(net, data, x="-1:1:3")
    assert s.notes[-1].startswith("configuration as given (channels-last, 1 point(s) per pass, batch 512)"), s.notes
    assert s.evaluation.channels_last
    # the model is left as it was, strides too: the first conv's weight (one input channel) is contiguous in either
    # layout, and channels-last strides left on it would make a later contiguous run channels-last in disguise
    assert {n: p.stride() for n, p in net.named_parameters()} == strides
    plain = compute_surface(net, data, x="-1:1:3", **PLAIN)
    np.testing.assert_allclose(s.values["train/loss"], plain.values["train/loss"], rtol=2e-5)


def test_the_choice_is_the_same_on_every_rank_and_recorded_as_a_run_option(tmp_path):
    """2 ranks, a grid long enough to tune: one choice (rank 0's) for both ranks, printed once; the file's
    run_options hold it and the job does not; a rerun with forced flags resumes the same file."""
    path = tmp_path / "s.h5"
    args = ["--model", "digits_mlp", "--x=-1:1:45", "--y=-1:1:45", "--subset", "200", "--threads", "1",
            "--no-plot", "--no-progress", "--surf_file", str(path)]
    proc = run_surface(args, ranks=2)
    assert proc.stderr.count("configuration measured:") == 1, proc.stderr
    with h5py.File(path) as f:
        options, job = json.loads(f.attrs["run_options"]), json.loads(f.attrs["job"])
    assert options["ranks"] == 2 and set(options["evaluation"]) == {*PLAIN, "fold_bn"}
    assert not {"channels_last", "compile", "points_per_pass", "batch_size"} & set(job)
    again = run_surface([*args, "--points_per_pass", "1", "--no-compile"], ranks=2)
    assert "this run: 0 points" in again.stdout + again.stderr


def test_a_resumed_file_keeps_the_configuration_of_its_first_run(tmp_path, always):
    """The first run's measured choice is in run_options; a rerun with the flags left automatic evaluates as it
    did (no new measurement), and a flag given on the rerun still wins."""
    from landscape.io.surface_file import read_run_options

    torch.manual_seed(0)
    net, data, path = DigitsCNN(), digits(), tmp_path / "s.h5"
    first = compute_surface(net, data, x="-1:1:6", surf_file=path)
    chosen = read_run_options(path)["evaluation"]
    assert first.notes[-1].startswith("configuration measured")
    again = compute_surface(net, data, x="-1:1:6", surf_file=path)
    assert not any(n.startswith("configuration measured") for n in again.notes)
    assert read_run_options(path)["evaluation"] == chosen
    forced = compute_surface(net, data, x="-1:1:6", surf_file=path, channels_last=not chosen["channels_last"])
    assert forced.evaluation.channels_last is not chosen["channels_last"]


def test_measuring_leaves_bn_statistics_at_theta_star(tmp_path, always):
    """With BN re-estimated at every point, the timed points re-estimate the statistics too: they are put back,
    so the file's θ* fingerprint is the model's own and a Hessian map of it is not refused."""
    from landscape.core.data import Split
    from landscape.core.directions import fingerprint

    torch.manual_seed(0)
    net, data = DigitsCNN(), digits()
    before = fingerprint(net.state_dict())
    calibration = Split(data["train"][0][:64], data["train"][1][:64])
    compute_surface(net, data, x="-1:1:5", surf_file=tmp_path / "s.h5", bn_calibration=calibration)
    with h5py.File(tmp_path / "s.h5") as f:
        assert json.loads(f.attrs["job"])["model_fingerprint"] == before == fingerprint(net.state_dict())


def test_an_automatic_batch_size_fits_the_memory_left_and_gives_the_plain_values(monkeypatch):
    """With little memory left on the device, the batch size starts below 512: the largest power of two whose
    activations (core.memory.example_bytes, an upper bound: at least the widest layer's output and the input
    itself) fit HEADROOM of the room; larger ones are never tried. The values are the plain path's."""
    import landscape.api as api
    from landscape.core.memory import example_bytes

    torch.manual_seed(0)
    net, data = DigitsMLP(), digits()
    dirs = random_directions(net, seed=0, ndim=1)
    probe = compute_surface(net, data, x="-1:1:3", directions=dirs, **PLAIN)
    per = example_bytes(probe.evaluation.evaluator(net, {"train": load_dataset("digits", splits=["train"])["train"]},
                                                   dirs, "cpu"))
    assert per >= 4 * 64 + 4 * 64  # the hidden layer's output and the 8×8 input, in float32
    room = 70 * per / tuning.HEADROOM  # 64 examples fit, 128 do not
    need = {}
    real_needs = api.surface_needs

    def needs(*args, **kw):
        need.update(real_needs(*args, **kw))
        return need

    monkeypatch.setattr(api, "surface_needs", needs)
    monkeypatch.setattr(api, "free_memory", lambda device: int(sum(need.values()) + room))
    monkeypatch.setattr(tuning, "SHARE", float("inf"))
    s = compute_surface(net, data, x="-1:1:7", directions=dirs)
    assert s.evaluation.batch_size <= 64 and "batch 128" not in s.notes[-1], s.notes
    np.testing.assert_allclose(s.values["train/loss"], compute_surface(net, data, x="-1:1:7", directions=dirs,
                                                                       **PLAIN).values["train/loss"], rtol=2e-5)


class BatchStatistics(nn.Module):
    """BN without running statistics: each batch is normalized by its own, so the batch size changes values."""

    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm1d(64, track_running_stats=False)
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(self.bn(x.flatten(1)))


def test_the_batch_size_is_not_measured_where_it_changes_values(tmp_path, always):
    """BN with each batch's statistics: an automatic batch size is 512, never another one, and it is part of the
    job (a resume with another batch size is refused); the other choices are still measured."""
    torch.manual_seed(0)
    path = tmp_path / "s.h5"
    s = compute_surface(BatchStatistics(), digits(), x="-1:1:7", surf_file=path)
    assert s.evaluation.batch_size == 512 and "batch 256" not in s.notes[-1], s.notes
    with h5py.File(path) as f:
        assert json.loads(f.attrs["job"])["batch_size"] == 512
        assert json.loads(f.attrs["run_options"])["evaluation"]["batch_size"] == 512
