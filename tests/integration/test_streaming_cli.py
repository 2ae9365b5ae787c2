"""Streamed evaluation data through the real CLI (issue 17): a split read from disk batch by batch at
every point gives the surface of the same data held in memory (CIFAR-10 files, a user's map-style and
iterable Dataset, a token file too large for the process's address-space limit), also with
--ranks_per_point 2; a file resumes whichever way its data are read; what cannot fit is refused
before any work, in one line, the file keeping its points."""
from __future__ import annotations

import json
import pickle
import subprocess
import sys

import h5py
import numpy as np
import pytest

from conftest import ROOT, cli_env, run_surface

FLAGS = ["--x=-1:1:3", "--threads", "1", "--no-plot", "--no-progress"]


def values(path, keys) -> dict[str, np.ndarray]:
    with h5py.File(path) as f:
        assert f["mask"][...].all()
        return {k: f[k][...] for k in keys}


def write_cifar(root, per_batch=4):
    """root/cifar-10-batches-py/ as the CIFAR-10 python version has it (see tests/integration/test_cifar.py)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.RandomState(0)
    for k, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        with open(folder / name, "wb") as fh:
            pickle.dump({b"batch_label": name.encode(), b"labels": [(k * per_batch + i) % 10 for i in range(per_batch)],
                         b"data": rng.randint(0, 256, size=(per_batch, 3072)).astype(np.uint8),
                         b"filenames": [f"{name}_{i}.png".encode() for i in range(per_batch)]}, fh, protocol=2)
    return root


def test_streamed_cifar_equals_in_memory_with_groups_and_resumes_either_way(tmp_path):
    """ResNet-20 on 20 train and 4 test images: streamed file by file on 2 ranks sharing each point equals the
    surface held in memory on one rank (float32 summation order aside); the streamed run reports its choice;
    each file resumes with the other way of reading (0 points computed). How many ranks shared a point is
    recorded in the file's run_options, never in its job: the job stays byte-identical when a rerun changes it."""
    root = write_cifar(tmp_path)
    args = ["--model", "resnet20", "--dataset", "cifar10", "--data_dir", str(root), "--splits", "train,test",
            "--batch_size", "3", *FLAGS]
    keys = ("train/loss", "train/acc", "test/loss", "test/acc")
    held, streamed = tmp_path / "held.h5", tmp_path / "streamed.h5"
    run_surface([*args, "--data_in_memory", "yes", "--surf_file", str(held)])
    proc = run_surface([*args, "--data_in_memory", "no", "--ranks_per_point", "2", "--surf_file", str(streamed)],
                       ranks=2)
    assert "split 'train': streamed from disk at every point (--data_in_memory no)" in proc.stderr
    a, b = values(held, keys), values(streamed, keys)
    for k in keys:
        np.testing.assert_allclose(b[k], a[k], rtol=1e-5, atol=1e-6, err_msg=k)
    with h5py.File(streamed) as f:
        job, run_options = f.attrs["job"], json.loads(f.attrs["run_options"])
    assert run_options["ranks_per_point"] == 2 and run_options["ranks"] == 2
    assert "ranks_per_point" not in json.loads(job) and "ranks_per_point" not in job
    for path, way in ((held, "no"), (streamed, "yes")):
        again = run_surface([*args, "--data_in_memory", way, "--surf_file", str(path)])
        assert "this run: 0 points" in again.stderr, again.stderr
    with h5py.File(streamed) as f:
        assert f.attrs["job"] == job and json.loads(f.attrs["run_options"])["ranks_per_point"] == 1


def test_auto_reports_what_it_holds(tmp_path):
    """`--data_in_memory auto` with data that fit says so, with the size and the memory this rank may use."""
    proc = run_surface(["--model", "digits_cnn", "--subset", "64", "--splits", "train,test", "--data_in_memory", "auto",
                        *FLAGS, "--surf_file", str(tmp_path / "s.h5")])
    for name in ("train", "test"):  # 64 digits of 64 float32 and an int64 label each
        line = next((x for x in proc.stderr.splitlines() if f"split {name!r}:" in x), "")
        assert f"split {name!r}: held in memory (16.5 KiB; this rank may use " in line, proc.stderr


@pytest.mark.parametrize("factory,ranks,group", [("digits_dataset", 2, 2), ("digits_stream", 1, 1)])
def test_a_streamed_user_dataset_equals_in_memory(tmp_path, factory, ranks, group):
    """The user's map-style Dataset through a DataLoader (2 ranks sharing each point), and an iterable one, equal
    the same items held in memory (the map-style Dataset read whole); the fingerprint is the same (resume)."""
    args = ["--model", "digits_cnn", "--dataset", f"stream_factory:{factory}", "--splits", "train,test",
            "--batch_size", "128", *FLAGS]
    keys = ("train/loss", "train/acc", "test/loss", "test/acc")
    held, streamed = tmp_path / "held.h5", tmp_path / "streamed.h5"
    run_surface(["--model", "digits_cnn", "--dataset", "stream_factory:digits_dataset", "--splits", "train,test",
                 "--batch_size", "128", *FLAGS, "--data_in_memory", "yes", "--surf_file", str(held)])
    proc = run_surface([*args, "--data_in_memory", "no", "--ranks_per_point", str(group), "--surf_file",
                        str(streamed)], ranks=ranks)
    assert "split 'train': streamed from disk at every point (--data_in_memory no)" in proc.stderr, proc.stderr
    a, b = values(held, keys), values(streamed, keys)
    for k in keys:
        np.testing.assert_allclose(b[k], a[k], rtol=2e-6, atol=1e-6, err_msg=k)
    again = run_surface([*args[:3], "stream_factory:digits_dataset", *args[4:], "--surf_file", str(streamed)])
    assert "this run: 0 points" in again.stderr, again.stderr


PROBE = """
import resource, sys
import torch, mpi4py.MPI  # imported (MPI initialized) before the limit
from landscape.cli import main

def vm_size():
    return next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmSize"))

limit = vm_size() + int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
rc = main(sys.argv[2:])
print("peak RSS growth", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before)
sys.exit(rc)
"""


def probe(limit: int, args: list[str]):
    return subprocess.run([sys.executable, "-c", PROBE, str(limit), "surface", *args], env=cli_env(), cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


def test_tokens_that_cannot_be_held_under_an_address_space_limit_are_streamed_and_equal_memory(tmp_path):
    """32 Mi tokens (64 MiB of uint16 ids 0..7; 256 MiB as the int64 blocks held in memory) in a process whose
    address space may grow by 160 MiB after torch and MPI are loaded: `auto` sees the limit and streams every
    block (it says so), the values equal the in-memory run's without the limit, and the process's peak RSS grows
    by less than half of what holding the blocks takes; `--data_in_memory yes` under the same limit is one line,
    exit 2, before any work: the file keeps its points."""
    ids = np.random.RandomState(0).randint(0, 8, size=32 << 20).astype(np.uint16)
    ids.tofile(tmp_path / "train.bin")
    args = ["--model", "stream_factory:bigram", "--dataset", f"tokens:{tmp_path / 'train.bin'}", "--task", "causal_lm",
            "--seq_len", "256", "--batch_size", "256", "--points_per_pass", "1", *FLAGS]  # no start-up measuring
    keys = ("train/loss", "train/acc")
    held, streamed = tmp_path / "held.h5", tmp_path / "streamed.h5"
    run_surface([*args, "--data_in_memory", "yes", "--surf_file", str(held)], timeout=600)
    proc = probe(160 << 20, [*args, "--surf_file", str(streamed)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "split 'train': streamed from disk at every point" in proc.stderr, proc.stderr
    growth = int(proc.stdout.split("peak RSS growth")[-1])
    assert growth < 128 << 20, growth
    a, b = values(held, keys), values(streamed, keys)
    for k in keys:
        np.testing.assert_allclose(b[k], a[k], rtol=1e-12, err_msg=k)
    refused = probe(160 << 20, [*args, "--data_in_memory", "yes", "--surf_file", str(streamed)])
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert refused.returncode == 2 and len(lines) == 1, refused.stderr
    assert "--data_in_memory yes" in lines[0] and "use --data_in_memory auto" in lines[0]
    np.testing.assert_array_equal(values(streamed, keys)["train/loss"], b["train/loss"])


def test_a_memory_budget_that_cannot_be_met_is_one_line_and_keeps_the_file(tmp_path):
    """10⁷ parameter sets of the digits CNN per pass (--points_per_pass) cannot fit any host: refused on both
    ranks before any work with the fix named, exit 2; the file keeps its values."""
    path = tmp_path / "s.h5"
    args = ["--model", "digits_cnn", "--subset", "64", *FLAGS, "--surf_file", str(path)]
    run_surface(args, ranks=2)
    before = values(path, ("train/loss",))
    proc = run_surface([*args, "--points_per_pass", "10000000"], ranks=2, check=False)
    lines = [line for line in proc.stderr.splitlines() if line.startswith("landscape: error:")]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "the surface needs" in lines[0] and "lower --points_per_pass" in lines[0], lines[0]
    assert "Traceback" not in proc.stderr
    np.testing.assert_array_equal(values(path, ("train/loss",))["train/loss"], before["train/loss"])
