"""A failure on any one rank ends every rank, never a hang (issue 15, item 7): real mpirun runs
with a failure injected on one rank at start-up and mid-run."""
from __future__ import annotations

import subprocess
import sys

import h5py

from conftest import ROOT, cli_env, command

STEP = """
import sys
from pathlib import Path
from landscape import engine
from landscape.errors import UserError
comm = engine.world()
which, kind, out = sys.argv[1], sys.argv[2], Path(sys.argv[4])
def step():
    if comm.rank == int(sys.argv[3]):
        raise (UserError if kind == "user" else ValueError)("injected on rank %d" % comm.rank)
    return 1
def say(text):  # one file per rank: mpirun interleaves the ranks' output
    (out / f"rank{comm.rank}.txt").write_text(f"rank {comm.rank} {text}")
try:
    (engine.on_root if which == "root" else engine.on_all)(comm, step)
except UserError as exc:
    say(f"user error: {exc}")
    sys.exit(2)
except Exception as exc:
    say(f"{type(exc).__name__} {exc}")
    sys.exit(1)
say("went on")
"""


class Outcome:
    def __init__(self, proc, folder):
        self.returncode = proc.returncode
        self.stdout = "\n".join(p.read_text() for p in sorted(folder.glob("rank*.txt")))


def run_step(tmp_path, which, kind, rank, ranks=3):
    proc = subprocess.run(["mpirun", "-n", str(ranks), sys.executable, "-c", STEP, which, kind, str(rank), str(tmp_path)],
                          env=cli_env(), cwd=ROOT, capture_output=True, text=True, timeout=120)
    return Outcome(proc, tmp_path)


def test_an_unexpected_error_on_rank_0_stops_every_rank(tmp_path):
    proc = run_step(tmp_path, "root", "other", 0)
    assert proc.returncode != 0 and "went on" not in proc.stdout
    assert proc.stdout.count("ValueError injected on rank 0") == 1
    assert proc.stdout.count("RuntimeError rank 0 failed (ValueError: injected on rank 0)") == 2


def test_an_unexpected_error_on_one_rank_stops_every_rank(tmp_path):
    proc = run_step(tmp_path, "all", "other", 2)
    assert proc.returncode != 0 and "went on" not in proc.stdout
    assert "rank 2 ValueError" in proc.stdout and proc.stdout.count("rank 2 failed") == 2


def test_a_user_mistake_on_one_rank_is_every_ranks(tmp_path):
    proc = run_step(tmp_path, "all", "user", 1)
    assert proc.returncode == 2 and proc.stdout.count("user error: injected on rank 1") == 3


def test_a_rank_that_fails_mid_run_ends_the_job_and_the_file_resumes(tmp_path):
    path = tmp_path / "s.h5"
    args = ["--model", "custom_factory:fails_mid_run", "--x=-1:1:9", "--y=-1:1:9", "--threads", "1", "--no-plot",
            "--no-progress", "--surf_file", str(path)]
    env = {**cli_env(), "FAIL_RANK": "1", "FAIL_AFTER": "12"}  # start-up passes, then rank 1 fails mid-run
    proc = subprocess.run(command(args, ranks=3), env=env, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert proc.returncode != 0 and "injected failure" in proc.stderr
    with h5py.File(path) as f:
        done = int(f["mask"][...].sum())
    assert 0 < done < 81  # the other ranks' points are kept
    proc = subprocess.run(command(args, ranks=3), env=cli_env(), cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    with h5py.File(path) as f:
        assert f["mask"][...].all()
