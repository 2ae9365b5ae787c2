"""Several ranks per point (`--ranks_per_point G`, real mpirun): the values do not depend on G beyond
float summation order, a group's leader alone writes, a SIGKILL mid-run resumes to the same file, a
failing rank of a group ends every rank, and the user's mistakes are one line each."""
from __future__ import annotations

import os
import signal
import subprocess

import h5py
import numpy as np
import pytest

from conftest import FIXED, ROOT, cli_env, command, kill_after, run_surface
from conftest import points_done as done

KEYS = ("train/loss", "train/acc", "test/loss", "test/acc")
BASE = ["--model", "digits_cnn", "--x=-1:1:5", "--y=-1:1:3", "--splits", "train,test", "--batch_size", "100",
        "--threads", "1", "--no-plot", "--no-progress"]
# The evaluation configuration fixed where files are compared bit for bit: left automatic, two independent
# runs may pick configurations whose values differ in the last float bits (core/tuning.py).


def values(path) -> dict[str, np.ndarray]:
    with h5py.File(path) as f:
        assert f["mask"][...].all()
        return {k: f[k][...] for k in KEYS}


@pytest.fixture(scope="module")
def alone(tmp_path_factory):
    """The surface with one rank per point (2 ranks)."""
    path = tmp_path_factory.mktemp("g1") / "g1.h5"
    run_surface([*BASE, "--surf_file", str(path)], ranks=2)
    return values(path)


@pytest.mark.parametrize("ranks,group", [(2, 2), (4, 2), (3, 3)])
def test_groups_give_the_surface_of_one_rank_per_point(tmp_path, alone, ranks, group):
    """G ranks share each point's batches: the values equal G = 1 within float32 summation (train 1438 and test
    359 examples do not divide evenly: the shares are unequal), every point written once."""
    path = tmp_path / "g.h5"
    proc = run_surface([*BASE, "--ranks_per_point", str(group), "--surf_file", str(path)], ranks=ranks)
    assert "15/15 points (complete)" in proc.stderr
    got = values(path)
    for k in KEYS:
        np.testing.assert_allclose(got[k], alone[k], rtol=2e-6, atol=1e-6, err_msg=k)
    resumed = run_surface([*BASE, "--ranks_per_point", "1", "--surf_file", str(path)], ranks=2)
    assert "this run: 0 points" in resumed.stdout + resumed.stderr  # G is a run option, not part of the job


def test_hessian_map_with_two_ranks_per_point(tmp_path):
    """The Hessian-vector products of a point summed over its group: λ equal one rank's within 1e-6."""
    from landscape.cli import main

    path = tmp_path / "h.h5"
    run_surface(["--model", "digits_mlp", "--x=-1:1:3", "--threads", "1", "--no-plot", "--no-progress",
                 "--surf_file", str(path)])
    hess = ["--subset", "200", "--max_iter", "40", "--threads", "1", "--no-plot", "--no-progress"]
    assert main(["hessian", str(path), *hess]) == 0
    with h5py.File(path) as f:
        one = {k: f[f"hessian/{k}"][...] for k in ("lambda_max", "lambda_min")}
    proc = subprocess.run(["mpirun", "-n", "2", *command(["x"])[:1], "-m", "landscape", "hessian", str(path), *hess,
                           "--force", "--ranks_per_point", "2"], env=cli_env(), cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    with h5py.File(path) as f:
        for k, v in one.items():
            np.testing.assert_allclose(f[f"hessian/{k}"][...], v, rtol=1e-6, err_msg=k)


def start(path, ranks, *extra, env=None):
    return subprocess.Popen(command([*BASE[:2], "--x=-1:1:21", "--y=-1:1:21", *BASE[6:], "--chunk", "2", *FIXED,
                                     "--surf_file", str(path), *extra], ranks),
                            env=dict(cli_env(), **(env or {})), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def test_sigkill_mid_run_with_groups_resumes_to_the_same_file(tmp_path):
    """4 ranks in 2 groups of 2: SIGKILL of the job after some points, then the same command completes the
    file; it equals an uninterrupted run with the same groups."""
    ref, path = tmp_path / "ref.h5", tmp_path / "killed.h5"
    assert start(ref, 4, "--ranks_per_point", "2").wait(timeout=600) == 0
    job = start(path, 4, "--ranks_per_point", "2")
    kill_after(job, path, 40)
    assert 40 <= done(path) < 441
    assert start(path, 4, "--ranks_per_point", "2").wait(timeout=600) == 0
    with h5py.File(ref) as f, h5py.File(path) as g:
        assert g["mask"][...].all()
        for k in ("train/loss", "train/acc"):
            np.testing.assert_array_equal(g[k][...], f[k][...])


def test_a_failing_rank_of_a_group_ends_every_rank(tmp_path):
    """Rank 1 (a member, not a leader) raises mid-run: every rank ends (no hang), exit non-zero, and the same
    job without the failure resumes the file to completion."""
    path = tmp_path / "fail.h5"
    args = ("--model", "failing_factory:mlp", "--ranks_per_point", "2")
    job = subprocess.Popen(command(["--model", "failing_factory:mlp", "--x=-1:1:21", "--y=-1:1:21", *BASE[6:],
                                    "--chunk", "2", "--ranks_per_point", "2", "--surf_file", str(path)], 4),
                           env=dict(cli_env(), LANDSCAPE_TEST_FAIL="1:200"), cwd=ROOT, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = job.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(job.pid, signal.SIGKILL)
        raise AssertionError("the job hung after a rank failed") from None
    assert job.returncode != 0 and "injected failure on rank 1" in out
    assert 0 < done(path) < 441
    rc = subprocess.run(command(["--model", "failing_factory:mlp", "--x=-1:1:21", "--y=-1:1:21", *BASE[6:],
                                 "--chunk", "2", *args[2:], "--surf_file", str(path)], 4),
                        env=cli_env(), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert rc.returncode == 0, rc.stderr
    assert done(path) == 441


@pytest.mark.parametrize("ranks,extra,words", [
    (2, ["--ranks_per_point", "3"], ["--ranks_per_point 3", "2 ranks", "choose one of 1, 2"]),
    (2, ["--ranks_per_point", "2", "--subset", "1"], ["--ranks_per_point 2", "larger than split 'train'", "1 examples"]),
])
def test_bad_groups_are_one_line_and_keep_the_file(tmp_path, ranks, extra, words):
    path = tmp_path / "bad.h5"
    run_surface([*BASE, "--surf_file", str(path)], ranks=2)
    before = values(path)
    proc = run_surface([*BASE, "--surf_file", str(path), *extra], ranks=ranks, check=False)
    lines = [line for line in proc.stderr.splitlines() if line.startswith("landscape: error:")]  # (mpirun adds its own)
    assert proc.returncode == 2 and len(lines) == 1 and all(w in lines[0] for w in words), proc.stderr
    assert "Traceback" not in proc.stderr
    for k, v in values(path).items():
        np.testing.assert_array_equal(v, before[k])
