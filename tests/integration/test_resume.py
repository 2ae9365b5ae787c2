"""Real kill tests: SIGKILL / SIGTERM / SIGUSR1 real `mpirun plot_surface.py` jobs, then resume.

Every kill is followed by the same checks: the job ends (no rank left behind),
the surface file (when there is one) opens with h5py and every point its mask
marks done holds exactly the reference value; the same command, rerun, resumes
to the end, and the final file equals an uninterrupted reference run.

Kill moments are drawn from seeded RNGs and triggered by what the job has done
(seconds since launch during start-up, the moment the file is being created,
points marked done in the file), not by wall time alone, so they land where
intended on a loaded machine too.

OpenMPI 4.1 signal behaviour these tests pin down (see landscape/engine.py):
- SIGUSR1 to mpirun is forwarded to every rank at once; the ranks stop after the
  point in hand and exit 75; mpirun exits 75.
- SIGTERM (or SIGINT) to mpirun: mpirun waits `odls_base_sigkill_timeout` (T,
  default 1 s), sends SIGTERM to the ranks, waits T again, then SIGKILLs them.
  The ranks stop cleanly (the summary says "interrupted") when the point in hand
  ends within T, but mpirun's own exit code is 1, whatever the ranks returned.
- SIGTERM to every rank (what srun / a scheduler does to a job step): exit 75.
- SIGKILL of one rank: mpirun kills the others and exits non-zero; no hang.
"""
from __future__ import annotations

import os

os.environ.setdefault("HDF5_USE_FILE_LOCKING", "FALSE")  # read the file while the job writes it

import random  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from conftest import FIXED, ROOT, cli_env, command  # noqa: E402

NX = NY = 11
TOTAL = NX * NY
KEYS = ("train/loss", "train/acc", "mask")
EXIT_USER_ERROR, EXIT_INTERRUPTED = 2, 75
INTERRUPTED_TEXT = "interrupted; rerun the same command to resume"
KILLS = {"tried": 0}  # kill points tried in this module (printed at the end)
JOBS: list = []  # every job started, so that a failing test leaves no process behind


# Jobs to be killed mid-run are slowed (the values do not change, only the time per point): at full speed the
# 121 points take about 1.3 s on 2 cores, less than the watcher needs to see a target and deliver the kill.
SLOWED = {"LANDSCAPE_SLOW_RANKS": "0:4,1:4"}

# The evaluation configuration is fixed: left automatic, two independent runs may pick configurations whose
# values differ in the last float bits (core/tuning.py), and these tests compare files bit for bit.


def job_args(path: Path, *extra: str) -> list[str]:
    return ["--model", "digits_cnn", f"--x=-1:1:{NX}", f"--y=-1:1:{NY}", "--threads", "1", "--no-plot",
            "--chunk", "2", *FIXED, "--surf_file", str(path), *extra]


# ---------------------------------------------------------------- processes


def proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, pgid) of a live process, None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[2])


def all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def rank_pids(mpirun_pid: int) -> dict[int, int]:
    """{MPI rank: pid} of the ranks mpirun has started (its children, rank read from their environment)."""
    out = {}
    for pid in all_pids():
        st = proc_stat(pid)
        if st is None or st[1] != mpirun_pid or st[0] == "Z":
            continue
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        for kv in env:
            if kv.startswith(b"OMPI_COMM_WORLD_RANK="):
                out[int(kv.split(b"=", 1)[1])] = pid
    return out


def session_left(pgid: int) -> list[int]:
    """Live (non-zombie) processes still in the job's process group."""
    return [pid for pid in all_pids() if (st := proc_stat(pid)) and st[2] == pgid and st[0] != "Z"]


def wait_until(cond, timeout: float, interval: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = cond()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


class Job:
    """One `mpirun -n ranks plot_surface.py ...` in its own session (process group = mpirun's pid)."""

    def __init__(self, path: Path, ranks: int = 2, extra: tuple[str, ...] = (), env: dict | None = None):
        self.path = Path(path)
        self.lock = Path(str(path) + ".lock")
        self.lock_before = self.lock.read_bytes() if self.lock.exists() else b""
        self.done_before = done_points(self.path)
        log = self.path.with_name(f"{self.path.name}.{time.monotonic_ns()}.log")
        self.log = open(log, "w+")
        self.nranks = ranks
        self.cmd = command(job_args(self.path, *extra), ranks)
        self.proc = subprocess.Popen(self.cmd, env=dict(cli_env(), **(env or {})), stdout=self.log,
                                     stderr=subprocess.STDOUT, text=True, cwd=ROOT, start_new_session=True)
        self.started = time.monotonic()
        JOBS.append(self)

    # -- triggers
    def lock_taken(self) -> bool:
        """Rank 0 holds the lock: it is about to create (or check) the file."""
        try:
            now = self.lock.read_bytes()
        except OSError:
            return False
        return bool(now) and now != self.lock_before

    def wait_creating(self, timeout: float = 90) -> str:
        """Return as soon as the file is being created (a new temporary `<file>.tmp`) or, if that was too
        quick to see, just after it was created."""
        tmp = self.path.with_name(self.path.name + ".tmp")

        def stamp(p: Path):
            try:
                st = p.stat()
                return st.st_ino, st.st_mtime_ns
            except OSError:
                return None

        tmp_before, file_before = stamp(tmp), stamp(self.path)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            now = stamp(tmp)
            if now is not None and now != tmp_before:
                return "file being created (its temporary exists)"
            if stamp(self.path) != file_before:
                return "file just created"
            if self.proc.poll() is not None:
                raise AssertionError(f"job ended early: {self.output()}")
            time.sleep(0.0005)
        raise AssertionError("timed out waiting for the file's creation")

    def wait_points(self, target: int, timeout: float = 90) -> int:
        def reached():
            if self.proc.poll() is not None:
                raise AssertionError(f"job ended (exit {self.proc.returncode}) before {target} points: {self.output()}")
            n = done_points(self.path) if self.lock_taken() else 0
            return n if n >= target else 0

        return wait_until(reached, timeout, 0.05, f"{target} points in {self.path}")

    # -- signals
    def ranks(self, n: int) -> dict[int, int]:
        def found():
            if self.proc.poll() is not None:
                raise AssertionError(f"job ended (exit {self.proc.returncode}) before the kill: {self.output()}")
            r = rank_pids(self.proc.pid)
            return r if len(r) == n else None

        return wait_until(found, 60, 0.01, "the rank processes")

    def kill_rank(self, rank: int, sig=signal.SIGKILL) -> None:
        os.kill(self.ranks(self.nranks)[rank], sig)

    def signal_all_ranks(self, sig) -> None:
        for pid in self.ranks(self.nranks).values():
            os.kill(pid, sig)

    def kill_job(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)

    def finish(self, timeout: float = 120) -> int:
        """Wait for the job; fail (after cleaning up) if it hangs or leaves a process behind."""
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.cleanup()
            raise AssertionError(f"job hung: {self.output()}") from None
        try:
            wait_until(lambda: not session_left(self.proc.pid), 10, 0.05, "every process of the job to end")
        except AssertionError:
            self.cleanup()
            raise
        return rc

    def cleanup(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()


@pytest.fixture(autouse=True)
def no_job_left_behind():
    yield
    while JOBS:
        job = JOBS.pop()
        if job.proc.poll() is None:
            job.cleanup()
        job.log.close()


def done_points(path: Path) -> int:
    """Points marked done in the file; 0 when it is missing or cannot be read now."""
    try:
        with h5py.File(path, "r") as f:
            return int(f["mask"][...].sum())
    except (OSError, KeyError):
        return 0


def read_surface(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        return {k: f[k][...] for k in KEYS}


def check_partial(path: Path, reference: dict[str, np.ndarray]) -> int:
    """After a kill: the file, if any, opens and every point marked done holds the reference value."""
    if not path.exists():
        return 0
    got = read_surface(path)  # must open
    mask = got["mask"]
    assert set(np.unique(mask)) <= {0, 1}
    done = mask.astype(bool)
    for key in KEYS[:-1]:
        np.testing.assert_array_equal(got[key][done], reference[key][done], err_msg=key)
    return int(done.sum())


def assert_equals_reference(path: Path, reference: dict[str, np.ndarray]) -> None:
    got = read_surface(path)
    for key in KEYS:
        assert np.array_equal(got[key], reference[key]), f"{key} differs from the uninterrupted run"
    assert got["mask"].all()


def complete(path: Path, reference, *, ranks: int = 2, extra: tuple[str, ...] = ()) -> None:
    job = Job(path, ranks, extra)
    rc = job.finish()
    assert rc == 0, job.output()
    assert f"{TOTAL}/{TOTAL} points (complete)" in job.output()
    assert_equals_reference(path, reference)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, pytestconfig) -> dict[str, np.ndarray]:
    """An uninterrupted 2-rank run of the job every test kills."""
    path = tmp_path_factory.mktemp("reference") / "surface.h5"
    job = Job(path)
    assert job.finish() == 0, job.output()
    ref = read_surface(path)
    assert ref["mask"].all() and np.isfinite(ref["train/loss"]).all()
    yield ref
    line = f"\n[test_resume] kill points tried: {KILLS['tried']} (SIGKILL of one rank / the whole job, SIGTERM, SIGUSR1)"
    capture = pytestconfig.pluginmanager.getplugin("capturemanager")
    if capture is not None:  # shown even without -s
        with capture.global_and_fixture_disabled():
            print(line)
    else:
        print(line)


def kill_then_check(job: Job, how: str, trigger: tuple, reference) -> str:
    """Wait for the trigger, deliver the kill, wait for the job to end, check the file."""
    kind = trigger[0]
    if kind == "startup":
        time.sleep(max(0.0, trigger[1] - (time.monotonic() - job.started)))
        where = f"{trigger[1]:.2f} s after launch (start-up)"
    elif kind == "creating":
        where = job.wait_creating()
    else:
        target = max(job.done_before + 2, int(trigger[1] * TOTAL))
        where = f"{job.wait_points(target)} points done (target {target})"
    if how == "job":
        job.kill_job()
    else:
        job.kill_rank(int(how))
    KILLS["tried"] += 1
    rc = job.finish()
    assert rc != 0 or f"{TOTAL}/{TOTAL} points (complete)" in job.output(), job.output()
    done = check_partial(job.path, reference)
    line = f"SIGKILL {'whole job' if how == 'job' else 'rank ' + how} at {where}: exit {rc}, {done}/{TOTAL} points in the file"
    print(line)
    return line


def test_sigkill_one_rank_then_resume(tmp_path, reference):
    rng = random.Random(1)
    path = tmp_path / "surface.h5"
    plan = [("startup", rng.uniform(0.3, 1.5), "1"),
            ("creating", None, "0"),
            ("points", rng.uniform(0.1, 0.4), str(rng.choice([0, 1]))),
            ("points", rng.uniform(0.5, 0.85), "1")]
    for kind, value, rank in plan:
        kill_then_check(Job(path, env=SLOWED), rank, (kind, value), reference)
    complete(path, reference)


def test_sigkill_whole_job_then_resume(tmp_path, reference):
    rng = random.Random(2)
    path = tmp_path / "surface.h5"
    plan = [("creating", None), ("points", rng.uniform(0.15, 0.45)), ("points", rng.uniform(0.5, 0.85))]
    for trigger in plan:
        kill_then_check(Job(path, env=SLOWED), "job", trigger, reference)
    complete(path, reference)


def test_gather_writer_kill_then_resume(tmp_path, reference):
    """--write gather: rank 0 writes with a serial h5py; SIGKILL the writer mid-run, then resume."""
    rng = random.Random(3)
    path = tmp_path / "surface.h5"
    gather = ("--write", "gather")
    kill_then_check(Job(path, extra=gather, env=SLOWED), "0", ("points", rng.uniform(0.3, 0.7)), reference)
    complete(path, reference, extra=gather)


def test_sigterm_sigusr1_and_lock(tmp_path, reference):
    """Stop signals end the run cleanly; a second job on the same file is refused while the first runs."""
    path = tmp_path / "surface.h5"
    # 1. a slowed run (the values do not change, only the time per point), so it is still running
    #    when the second job reaches the lock
    first = Job(path, env={"LANDSCAPE_SLOW_RANKS": "0:12,1:12", "OMPI_MCA_odls_base_sigkill_timeout": "3"})
    first.wait_points(4)
    second = subprocess.run(command(job_args(path)), env=cli_env(), capture_output=True, text=True, cwd=ROOT,
                            timeout=120)
    assert first.proc.poll() is None, "the first job ended before the second one was refused: test too slow?"
    assert second.returncode == EXIT_USER_ERROR, second.stderr
    assert "is being written by another job" in second.stderr, second.stderr
    assert "Traceback" not in second.stderr
    # SIGTERM to mpirun: forwarded after odls_base_sigkill_timeout (here 3 s, so that a point slowed on a
    # loaded machine still ends before mpirun's SIGKILL), ranks stop cleanly, mpirun exits 1
    os.kill(first.proc.pid, signal.SIGTERM)
    KILLS["tried"] += 1
    assert first.finish() == 1, first.output()
    assert INTERRUPTED_TEXT in first.output()
    done = check_partial(path, reference)
    assert 0 < done < TOTAL - 10, "the slowed job went too far for the next steps"
    print(f"SIGTERM to mpirun: exit 1 (OpenMPI's own code), ranks stopped cleanly, {done}/{TOTAL} points")

    # 2. SIGUSR1 to mpirun: forwarded at once, mpirun passes on the ranks' 75
    job = Job(path, env=SLOWED)
    job.wait_points(done + max(2, (TOTAL - done) // 4))
    os.kill(job.proc.pid, signal.SIGUSR1)
    KILLS["tried"] += 1
    assert job.finish() == EXIT_INTERRUPTED, job.output()
    assert INTERRUPTED_TEXT in job.output()
    done2 = check_partial(path, reference)
    assert done < done2 < TOTAL
    print(f"SIGUSR1 to mpirun: exit 75, {done2}/{TOTAL} points")

    # 3. SIGTERM to every rank (srun, a scheduler signalling the job step): 75
    job = Job(path, env=SLOWED)
    job.wait_points(done2 + max(2, (TOTAL - done2) // 4))
    job.signal_all_ranks(signal.SIGTERM)
    KILLS["tried"] += 1
    assert job.finish() == EXIT_INTERRUPTED, job.output()
    done3 = check_partial(path, reference)
    assert done2 < done3 < TOTAL
    print(f"SIGTERM to every rank: exit 75, {done3}/{TOTAL} points")

    complete(path, reference)


def test_more_ranks_than_points(tmp_path):
    """4 ranks, 3 points: the ranks without a chunk just finish."""
    path = tmp_path / "small.h5"
    args = ["--model", "digits_mlp", "--x=-1:1:3", "--threads", "1", "--no-plot", "--surf_file", str(path)]
    proc = subprocess.run(command(args, 4), env=cli_env(), capture_output=True, text=True, cwd=ROOT, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "3/3 points (complete)" in proc.stderr
    with h5py.File(path, "r") as f:
        assert f["mask"][...].all() and np.isfinite(f["train/loss"][...]).all()
