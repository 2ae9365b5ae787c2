"""A failure on any one rank ends every rank, never a hang (issue 15, item 7): real mpirun runs
with a failure injected on one rank at start-up and mid-run."""
from __future__ import annotations

import subprocess
import sys

import h5py
import pytest

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


API_RUN = """
import sys
from pathlib import Path
import torch
from landscape import engine
from landscape.api import compute_surface
from landscape.core.data import load_dataset
from failing_factory import mlp
comm = engine.world()
out, group = Path(sys.argv[1]), int(sys.argv[2])
data = load_dataset("digits", splits=["train"], subset=(64, "first"))
torch.manual_seed(0)  # the same θ* on every rank and in every run
try:
    compute_surface(mlp(), data, surf_file=out / "s.h5", x="-1:1:9", y="-1:1:9", ranks_per_point=group, progress=False,
                    points_per_pass=1, channels_last=False, compile=False)
    text = "finished"
except Exception as exc:
    text = f"{type(exc).__name__}: {exc}"
(out / f"rank{comm.rank}.txt").write_text(text)  # one file per rank: mpirun interleaves the ranks' output
"""


def api_run(tmp_path, ranks: int, group: int, fail: str | None):
    env = dict(cli_env(), **({"LANDSCAPE_TEST_FAIL": fail} if fail else {}))
    for old in tmp_path.glob("rank*.txt"):
        old.unlink()
    proc = subprocess.run(["mpirun", "-n", str(ranks), sys.executable, "-c", API_RUN, str(tmp_path), str(group)],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)  # a hang fails here
    assert proc.returncode == 0, proc.stderr
    outcomes = {int(p.stem[4:]): p.read_text() for p in tmp_path.glob("rank*.txt")}
    assert sorted(outcomes) == list(range(ranks)), proc.stderr
    if not (tmp_path / "s.h5").exists():
        return outcomes, None
    with h5py.File(tmp_path / "s.h5") as f:
        return outcomes, int(f["mask"][...].sum())


@pytest.mark.parametrize("ranks,group,rank", [(4, 2, 1), (2, 2, 0), (2, 1, 1)])
def test_a_rank_that_fails_mid_run_of_the_api_makes_every_rank_raise(tmp_path, ranks, group, rank):
    """compute_surface (no CLI, which would abort the job) under mpirun: one rank's MLP raises after 20 forward
    passes, a member of a group of 2 (its leader waits in the group's sum), a group's leader, or a rank alone. Every
    rank raises instead of waiting (the failing one its own error, the others RankFailed naming it), the points
    written are kept, and the same job without the failure resumes them to the end."""
    outcomes, done = api_run(tmp_path, ranks, group, f"{rank}:20")
    assert outcomes[rank] == f"RuntimeError: injected failure on rank {rank}"
    for r in set(range(ranks)) - {rank}:
        assert outcomes[r] == (f"RankFailed: rank {rank} failed (RuntimeError: injected failure on rank {rank}); "
                               "this rank stops too"), outcomes[r]
    assert 0 < done < 81
    if ranks == 4:
        outcomes, done = api_run(tmp_path, ranks, group, None)
        assert set(outcomes.values()) == {"finished"} and done == 81


def test_a_rank_that_fails_in_the_start_up_measurement_makes_every_rank_raise(tmp_path):
    """Rank 1's MLP raises in its 4th forward pass: after the class check and the activation probe, inside the
    first timing of the start-up measurement (core.tuning; the batch size is automatic). Rank 0 raises too instead
    of waiting for rank 1's time, and no file is begun."""
    outcomes, done = api_run(tmp_path, 2, 1, "1:3")
    assert outcomes[1] == "RuntimeError: injected failure on rank 1", outcomes
    assert outcomes[0].startswith("RuntimeError: rank 1 failed (RuntimeError: injected failure on rank 1)"), outcomes
    assert done is None
