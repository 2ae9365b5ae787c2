"""The curvature suite end to end on digits_mlp (4,810 parameters): Hessian-eigenvector surfaces
against a brute-force loop, `landscape spectrum` and the trace / top-k maps on 1 and 2 ranks (real
mpirun), a SIGKILLed map resumed, the figures, and the user's mistakes as one line."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
import torch
from torch.func import functional_call

from landscape.api import curvature_map, spectrum_job, surface_job
from landscape.cli import main
from landscape.core.data import load_dataset
from landscape.core.models import build_model
from landscape.io import surface_file
from landscape.options import build_job

from conftest import ROOT, cli_env

torch.set_num_threads(1)
QUIET = {"threads": 1, "plot": False, "progress": False}


def surface(path, **keys):
    job = build_job({"model": "digits_mlp", **QUIET, "surf_file": str(path), **keys})
    result = surface_job(job)
    assert result.summary.complete
    return path


@pytest.fixture(scope="module")
def plane(tmp_path_factory):
    return surface(tmp_path_factory.mktemp("spectrum") / "s.h5", x="-1:1:5", y="-1:1:3")


def mpirun(args, ranks=2, timeout=300):
    proc = subprocess.run(["mpirun", "-n", str(ranks), sys.executable, "-m", "landscape", *args], env=cli_env(),
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    return proc


def group(path, name):
    with h5py.File(path) as f:
        out = {}
        f[name].visititems(lambda k, d: out.__setitem__(k, d[...]) if isinstance(d, h5py.Dataset) else None)
        return out, dict(f[name].attrs)


def test_eigenvector_surface_equals_a_brute_force_loop(tmp_path):
    """--xdir hessian:1 --ydir hessian:-1 --xnorm none: orthonormal directions keyed by tensor name, their
    eigenvalues stored (Rayleigh quotients of the dense-free products match), every grid value equal to the
    mean loss at θ* + αu + βv computed by hand; a rerun resumes without recomputing the directions."""
    path = surface(tmp_path / "e.h5", x="-0.5:0.5:3", y="-0.5:0.5:3", xdir="hessian:1", ydir="hessian:-1", xnorm="none")
    with h5py.File(path) as f:
        dirs = [{k: torch.from_numpy(f[f"directions/{a}/{k}"][...]) for k in f[f"directions/{a}"]} for a in "xy"]
        loss = f["train/loss"][...]
        values, residuals = f["directions/eigenvalues"][...], f["directions/residuals"][...]
    model = build_model("digits_mlp", seed=0)
    names = [n for n, _ in model.named_parameters()]
    assert all(set(d) == set(names) for d in dirs)
    u, v = (torch.cat([d[n].reshape(-1) for n in names]).double() for d in dirs)
    assert float(u @ u) == pytest.approx(1, abs=1e-6) and float(v @ v) == pytest.approx(1, abs=1e-6)
    assert abs(float(u @ v)) < 1e-5
    assert values[0] > 0 > values[1] and np.all(residuals < 1e-3 * np.abs(values).max())
    train = load_dataset("digits")["train"]
    theta = {n: p.detach() for n, p in model.named_parameters()}
    for iy, b in enumerate([-0.5, 0.0, 0.5]):
        for ix, a in enumerate([-0.5, 0.0, 0.5]):
            params = {n: theta[n] + a * dirs[0][n] + b * dirs[1][n] for n in names}
            with torch.no_grad():
                out = functional_call(model, params, (train.inputs,))
            want = float(torch.nn.functional.cross_entropy(out.double(), train.labels))
            assert loss[iy, ix] == pytest.approx(want, rel=1e-5), (a, b)
    again = surface_job(build_job({"model": "digits_mlp", **QUIET, "surf_file": str(path), "x": "-0.5:0.5:3",
                                   "y": "-0.5:0.5:3", "xdir": "hessian:1", "ydir": "hessian:-1", "xnorm": "none"}))
    assert again.summary.computed == 0 and again.summary.complete


def test_spectrum_two_ranks_equal_one_rank(plane, tmp_path):
    """One spectrum over every rank (the data shared, products summed): 2 ranks equal 1 within float32 summation
    order (the shares' batches differ); the per-block table's sizes add up to the whole θ."""
    one, two = shutil.copy(plane, tmp_path / "one.h5"), shutil.copy(plane, tmp_path / "two.h5")
    r = spectrum_job(one, subset=256, k=3, blocks="auto", threads=1)
    assert r.group == "spectrum/theta_star" and r.spectrum.eig.converged
    mpirun(["spectrum", str(two), "--subset", "256", "--k", "3", "--blocks", "auto", "--threads", "1", "--no-plot"])
    a, attrs = group(one, "spectrum/theta_star")
    b, attrs2 = group(two, "spectrum/theta_star")
    assert attrs["ranks"] == 1 and attrs2["ranks"] == 2
    for key in ("eigenvalues", "trace", "trace_ci", "moments", "blocks/lambda_max", "blocks/trace"):
        np.testing.assert_allclose(b[key], a[key], rtol=1e-5, err_msg=key)
    np.testing.assert_allclose(b["residuals"], a["residuals"], atol=1e-5 * np.abs(a["eigenvalues"]).max())
    assert list(a["blocks/names"]) == [b"net.1", b"net.3"] and a["blocks/numel"].sum() == attrs["n_params"] == 4810
    assert a["slq/nodes"].shape == (4, 60) and a["moments"][0] == pytest.approx(1.0)
    np.testing.assert_allclose(a["slq/weights"].sum(1), 1.0, rtol=1e-10)
    with pytest.raises(Exception, match="already holds a spectrum"):
        spectrum_job(one, subset=256, k=3, threads=1)
    r = spectrum_job(one, point="0.5,0", subset=256, k=2, slq_runs=1, threads=1)
    assert r.group == "spectrum/a0.5_b0"
    from landscape.viz.spectrum_figures import plot_spectrum

    files = plot_spectrum(one, tmp_path / "fig")
    assert sorted(p.name for p in files) == ["one_spectrum_a0.5_b0.png", "one_spectrum_theta_star.png"]


@pytest.mark.parametrize("kind,extra", [("trace", []), ("topk", ["--k", "2"])])
def test_maps_two_ranks_equal_one_rank(plane, tmp_path, kind, extra):
    """The trace and top-k maps: 2 ranks (points distributed) give the bits of 1 rank; 2 ranks per point (the
    products summed over the pair) agree within 1e-5; trace intervals are nested around the estimate."""
    one, two = shutil.copy(plane, tmp_path / "one.h5"), shutil.copy(plane, tmp_path / "two.h5")
    k = 2 if kind == "topk" else 3
    res = curvature_map(one, kind=kind, k=k, subset=128, threads=1)
    assert res.summary.complete and res.nonfinite == 0
    args = ["hessian", str(two), "--map", kind, *extra, "--subset", "128", "--threads", "1", "--no-plot", "--no-progress"]
    mpirun(args)
    name = surface_file.TRACE_MAP if kind == "trace" else surface_file.TOPK_MAP
    a, attrs = group(one, name)
    b, _ = group(two, name)
    assert a["mask"].all() and a["mask"].shape == (3, 5)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    mpirun([*args, "--ranks_per_point", "2", "--force"])
    c, _ = group(two, name)
    first = "trace" if kind == "trace" else "lambda_1"
    np.testing.assert_allclose(c[first], a[first], rtol=1e-5)
    if kind == "trace":
        assert np.all(a["ci_low"] < a["trace"]) and np.all(a["trace"] < a["ci_high"]) and (a["n_hvp"] == 30).all()
        assert attrs["estimator"] == "hutchpp" and attrs["samples"] == 30
    else:
        assert np.all(a["lambda_1"] >= a["lambda_2"]) and attrs["k"] == 2
    from landscape.viz.spectrum_figures import plot_map

    assert [p.name for p in plot_map(one, kind, tmp_path / "fig")] == [f"one_{name}.png"]


def test_killed_map_resumes(tmp_path):
    """SIGKILL of a 2-rank top-k map after some points; the same command completes it, equal to an uninterrupted run."""
    path = surface(tmp_path / "big.h5", x="-1:1:13", y="-1:1:13")
    ref = shutil.copy(path, tmp_path / "ref.h5")
    args = ["--map", "topk", "--k", "2", "--subset", "256", "--threads", "1", "--no-plot", "--no-progress"]
    cmd = ["mpirun", "-n", "2", sys.executable, "-m", "landscape", "hessian", str(path), *args]
    job = subprocess.Popen(cmd, env=cli_env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           start_new_session=True)

    def done():
        try:
            with h5py.File(path, "r") as f:
                return int(f["hessian_topk/mask"][...].sum())
        except (OSError, KeyError):
            return 0

    try:
        end = time.monotonic() + 300
        while done() < 20 and job.poll() is None and time.monotonic() < end:
            time.sleep(0.05)
        assert job.poll() is None, job.stdout.read()
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
        job.wait()
    assert 20 <= done() < 169
    mpirun(["hessian", str(path), *args])
    mpirun(["hessian", str(ref), *args])
    a, _ = group(path, "hessian_topk")
    b, _ = group(ref, "hessian_topk")
    assert a["mask"].all()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.mark.parametrize("args,message", [
    (["hessian", "{f}", "--map", "topk", "--k", "0"], "--k 0 must be between 1 and --max_iter 100"),
    (["hessian", "{f}", "--map", "trace", "--samples", "3"], "--samples 3 is too few for hutchpp"),
    (["spectrum", "{f}", "--point", "1,2,3"], "has 3 coordinate(s) but the surface is 2D"),
    (["spectrum", "{f}", "--point", "a"], "--point 'a' is not α or α,β"),
    (["spectrum", "{f}", "--blocks", "nope"], "--blocks 'nope' matches no trainable parameter"),
    (["surface", "--model", "digits_mlp", "--x=-1:1:3", "--xdir", "hessian:0"], "not a direction source"),
    (["surface", "--model", "digits_mlp", "--x=-1:1:3", "--y=-1:1:3", "--xdir", "hessian:1"], "needs --ydir too"),
    (["surface", "--model", "digits_mlp", "--x=-1:1:3", "--xdir", "hessian:1", "--seed", "3", "--model_file",
      "x.pt"], "--seed is ignored with --xdir"),
])
def test_mistakes_are_one_line(plane, tmp_path, capsys, args, message):
    args = [a.replace("{f}", str(plane)) for a in args]
    if args[0] == "surface":
        args += ["--surf_file", str(tmp_path / "x.h5"), "--threads", "1", "--no-plot", "--no-progress"]
    else:
        args += ["--threads", "1"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def test_ggn_map_and_its_refusal(tmp_path, capsys):
    """--curvature ggn: the trace of the PSD GGN is positive at every point; with --loss_name mse it is refused."""
    path = surface(tmp_path / "g.h5", x="-1:1:3")
    res = curvature_map(path, kind="trace", curvature="ggn", subset=128, threads=1)
    values, attrs = group(path, surface_file.TRACE_MAP)
    assert res.summary.complete and (values["trace"] > 0).all() and attrs["curvature"] == "ggn"
    mse = surface(tmp_path / "m.h5", x="-1:1:3", loss_name="mse")
    assert main(["hessian", str(mse), "--map", "trace", "--curvature", "ggn", "--threads", "1", "--no-progress"]) == 2
    assert "--curvature ggn is defined here for softmax cross-entropy" in capsys.readouterr().err
