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


def stored_directions(path):
    with h5py.File(path) as f:
        dirs = [{k: torch.from_numpy(f[f"directions/{a}/{k}"][...]) for k in f[f"directions/{a}"]} for a in "xy"]
        return dirs, f["train/loss"][...], f["directions/eigenvalues"][...], f["directions/residuals"][...]


def assert_brute_force(path):
    """Every grid value of the 3×3 plane equals the mean loss at θ* + αu + βv along the file's own directions."""
    dirs, loss, _, _ = stored_directions(path)
    model = build_model("digits_mlp", seed=0)
    names = [n for n, _ in model.named_parameters()]
    train = load_dataset("digits")["train"]
    theta = {n: p.detach() for n, p in model.named_parameters()}
    for iy, b in enumerate([-0.5, 0.0, 0.5]):
        for ix, a in enumerate([-0.5, 0.0, 0.5]):
            params = {n: theta[n] + a * dirs[0][n] + b * dirs[1][n] for n in names}
            with torch.no_grad():
                out = functional_call(model, params, (train.inputs,))
            want = float(torch.nn.functional.cross_entropy(out.double(), train.labels))
            assert loss[iy, ix] == pytest.approx(want, rel=1e-5), (a, b)


def test_eigenvector_surface_equals_a_brute_force_loop(tmp_path):
    """--xdir hessian:1 --ydir hessian:-1 --xnorm none: orthonormal directions keyed by tensor name, their
    eigenvalues stored (Rayleigh quotients of the dense-free products match), every grid value equal to the
    mean loss at θ* + αu + βv computed by hand; a rerun resumes without recomputing the directions. On 2 ranks
    (real mpirun: the subset shared, products summed, rank 0's vectors broadcast) the stored directions equal the
    1-rank job's within 1e-6 and every point, whichever rank computed it, is on the brute-force loop."""
    path = surface(tmp_path / "e.h5", x="-0.5:0.5:3", y="-0.5:0.5:3", xdir="hessian:1", ydir="hessian:-1", xnorm="none")
    dirs, _, values, residuals = stored_directions(path)
    model = build_model("digits_mlp", seed=0)
    names = [n for n, _ in model.named_parameters()]
    assert all(set(d) == set(names) for d in dirs)
    u, v = (torch.cat([d[n].reshape(-1) for n in names]).double() for d in dirs)
    assert float(u @ u) == pytest.approx(1, abs=1e-6) and float(v @ v) == pytest.approx(1, abs=1e-6)
    assert abs(float(u @ v)) < 1e-5
    assert values[0] > 0 > values[1] and np.all(residuals < 1e-3 * np.abs(values).max())
    assert_brute_force(path)
    two = tmp_path / "two.h5"
    mpirun(["surface", "--model", "digits_mlp", "--x=-0.5:0.5:3", "--y=-0.5:0.5:3", "--xdir", "hessian:1", "--ydir",
            "hessian:-1", "--xnorm", "none", "--surf_file", str(two), "--threads", "1", "--no-plot", "--no-progress"])
    dirs2, _, values2, residuals2 = stored_directions(two)
    for d, d2 in zip(dirs, dirs2):
        for n in names:
            np.testing.assert_allclose(d2[n].numpy(), d[n].numpy(), atol=1e-6, err_msg=n)
    np.testing.assert_allclose(values2, values, rtol=1e-5)
    assert not np.array_equal(values2, values)  # float32 sums over two shares: the products were shared, not redone
    assert np.all(residuals2 < 1e-3 * np.abs(values2).max())
    assert_brute_force(two)
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
    (["hessian", "{f}", "--map", "topk", "--k", "3", "--basis", "3"], "--basis 3 must be 0 (automatic) or at least --k + "
     "--start_vectors = 4"),
    (["spectrum", "{f}", "--k", "3", "--start_vectors", "2", "--basis", "4"], "--basis 4 must be 0 (automatic) or at least"),
    (["spectrum", "{f}", "--start_vectors", "0"], "--start_vectors 0 must be at least 1"),
    (["hessian", "{f}", "--k", "5"], "--k is read only by --map topk, not --map extremes: leave out --k or add --map topk"),
    (["hessian", "{f}", "--curvature", "ggn"], "--curvature is read only by --map trace or --map topk, not --map extremes"),
    (["hessian", "{f}", "--samples", "10"], "--samples is read only by --map trace, not --map extremes"),
    (["hessian", "{f}", "--map", "extremes", "--estimator", "hutchinson"], "--estimator is read only by --map trace"),
    (["hessian", "{f}", "--map", "topk", "--samples", "10"], "--samples is read only by --map trace, not --map topk"),
    (["hessian", "{f}", "--map", "topk", "--estimator", "hutchinson"], "--estimator is read only by --map trace, not --map topk"),
    (["hessian", "{f}", "--map", "trace", "--k", "2"], "--k is read only by --map topk, not --map trace"),
    (["hessian", "{f}", "--map", "trace", "--max_iter", "50"], "--max_iter is read only by --map extremes or --map topk, "
     "not --map trace"),
    (["hessian", "{f}", "--map", "trace", "--tol", "1e-4"], "--tol is read only by --map extremes or --map topk"),
    (["hessian", "{f}", "--start_vectors", "2"], "--start_vectors is read only by --map topk, not --map extremes"),
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


def test_map_vectors_are_planned_before_any_work(plane, tmp_path, monkeypatch, capsys):
    """The trace map holds the Rademacher signs (int8, samples·n bytes) and Hutch++ also A S, its QR copy and Q
    (3·⌊samples/3⌋·n float64); the top-k map its bounded basis ((2·basis + 3·start_vectors)·n float64). A budget between
    the former Hutch++ plan (2·⌊samples/3⌋·n float64) and the real need is refused in one line before the map's
    group is created; Hutchinson, which needs less, runs in it."""
    from landscape.analysis.spectrum import eigenpairs_bytes, trace_bytes

    n, s = 4810, 300
    assert trace_bytes(n, s, "hutchpp") == s * n + 4 * n * 8 + 3 * 100 * n * 8
    assert trace_bytes(n, s, "hutchinson") == s * n + 4 * n * 8
    assert trace_bytes(n, 5000, "hutchpp") == 4 * n * 8  # n ≤ samples: the exact trace
    assert eigenpairs_bytes(n, 3) == (2 * 20 + 3) * n * 8 and eigenpairs_bytes(n, 3, basis=8, block=2) == 22 * n * 8
    budget = (2 * (s // 3) * n * 8 + trace_bytes(n, s, "hutchpp")) // 2
    monkeypatch.setattr("landscape.api.memory_budget", lambda device, sharing=1: budget)
    path = shutil.copy(plane, tmp_path / "m.h5")
    args = ["hessian", str(path), "--subset", "128", "--threads", "1", "--no-plot", "--no-progress", "--stride", "2"]
    assert main([*args, "--map", "trace", "--samples", str(s)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the trace map's vectors" in err and "lower --samples" in err, err
    with h5py.File(path) as f:
        assert "hessian_trace" not in f
    monkeypatch.setattr("landscape.api.memory_budget", lambda device, sharing=1: eigenpairs_bytes(n, 3) - 1)
    assert main([*args, "--map", "topk", "--k", "3"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Lanczos basis" in err and "lower --basis" in err, err
    monkeypatch.setattr("landscape.api.memory_budget", lambda device, sharing=1: budget)
    assert main([*args, "--map", "trace", "--samples", str(s), "--estimator", "hutchinson"]) == 0
    values, attrs = group(path, surface_file.TRACE_MAP)
    assert values["mask"].all() and (values["n_hvp"] == s).all() and attrs["estimator"] == "hutchinson"


def test_topk_map_with_a_small_basis_restarts(plane, tmp_path):
    """--basis 6 (top 3: several restarts per point) gives the default basis's λ1..λ3 within the residuals."""
    a, b = shutil.copy(plane, tmp_path / "a.h5"), shutil.copy(plane, tmp_path / "b.h5")
    curvature_map(a, kind="topk", k=3, subset=128, stride=2, tol=1e-6, max_iter=400, threads=1)
    curvature_map(b, kind="topk", k=3, subset=128, stride=2, tol=1e-6, max_iter=400, basis=6, threads=1)
    x, _ = group(a, surface_file.TOPK_MAP)
    y, attrs = group(b, surface_file.TOPK_MAP)
    assert attrs["basis"] == 6 and attrs["start_vectors"] == 1 and (y["n_hvp"] > x["n_hvp"]).all()
    for i in (1, 2, 3):
        assert np.all(np.abs(x[f"lambda_{i}"] - y[f"lambda_{i}"]) <= x[f"residual_{i}"] + y[f"residual_{i}"] + 1e-12)


def test_ggn_map_and_its_refusal(tmp_path, capsys):
    """--curvature ggn: the trace of the PSD GGN is positive at every point; with --loss_name mse it is refused."""
    path = surface(tmp_path / "g.h5", x="-1:1:3")
    res = curvature_map(path, kind="trace", curvature="ggn", subset=128, threads=1)
    values, attrs = group(path, surface_file.TRACE_MAP)
    assert res.summary.complete and (values["trace"] > 0).all() and attrs["curvature"] == "ggn"
    mse = surface(tmp_path / "m.h5", x="-1:1:3", loss_name="mse")
    assert main(["hessian", str(mse), "--map", "trace", "--curvature", "ggn", "--threads", "1", "--no-progress"]) == 2
    assert "--curvature ggn is defined here for softmax cross-entropy" in capsys.readouterr().err


def test_curvature_selection_is_the_dense_sub_block(plane, tmp_path, capsys):
    """--params net.3 (650 parameters: the last Linear), independent of the surface's selection (every tensor):
    the spectrum's top-3 within their residuals of the dense sub-block's eigenvalues (autograd.functional.hessian
    of the mean loss over the same 128-example draw, θ outside net.3 fixed), its trace exact (--samples ≥ 650)
    and equal to the sub-block's trace; the top-k map's λ1 at θ* is the sub-block's too, and a glob that
    matches nothing is one line."""
    from landscape.core.data import subset as subset_of

    path = shutil.copy(plane, tmp_path / "p.h5")
    r = spectrum_job(path, params="net.3", subset=128, k=3, tol=1e-8, max_iter=400, samples=700, slq_runs=1,
                     slq_steps=10, threads=1)
    model = build_model("digits_mlp", seed=0).double()
    data = subset_of(load_dataset("digits")["train"], 128, "random", "train")
    X, Y = data.inputs.double(), data.labels
    named = {n: p.detach() for n, p in model.named_parameters()}
    shapes = [("net.3.weight", (10, 64)), ("net.3.bias", (10,))]

    def loss(flat):
        params, i = dict(named), 0
        for name, shape in shapes:
            size = int(np.prod(shape))
            params[name] = flat[i : i + size].view(shape)
            i += size
        return torch.nn.functional.cross_entropy(functional_call(model, params, (X,)), Y)

    H = torch.autograd.functional.hessian(loss, torch.cat([named[n].reshape(-1) for n, _ in shapes]))
    lam = torch.linalg.eigvalsh(H).numpy()[::-1]
    s = r.spectrum
    assert s.n == 650 and s.eig.converged and s.trace.method == "exact"
    assert np.all(np.abs(s.eig.values - lam[:3]) <= s.eig.residuals + 1e-5 * lam[0]), (s.eig.values, lam[:3])
    assert s.trace.estimate == pytest.approx(float(torch.trace(H)), rel=1e-5)
    _, attrs = group(path, r.group)
    assert '"net.3"' in attrs["params"] and attrs["n_params"] == 650
    res = curvature_map(path, kind="topk", k=1, subset=128, tol=1e-8, max_iter=200, params="net.3", threads=1)
    assert res.summary.complete
    values, _ = group(path, surface_file.TOPK_MAP)
    assert abs(values["lambda_1"][1, 2] - lam[0]) <= values["residual_1"][1, 2] + 1e-5 * lam[0]  # (α, β) = (0, 0)
    assert main(["spectrum", str(path), "--params", "net.9", "--threads", "1", "--force", "--no-plot"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--params 'net.9' matches no tensor" in err, err
