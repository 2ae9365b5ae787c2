"""Non-finite values, the determinism check, BN re-estimation, disk full, read-only and damaged files."""
import subprocess

import h5py
import numpy as np
import pytest

from conftest import run_surface


def test_nonfinite_points_are_stored_counted_and_masked(tmp_path):
    out = tmp_path / "far.h5"
    proc = run_surface(["--model", "digits_mlp", "--x=0:1e37:3", "--y=-1:1:2", "--threads", "1",
                        "--surf_file", str(out)])
    assert "4 with non-finite values" in proc.stderr
    with h5py.File(out) as f:
        loss, mask = f["train/loss"][...], f["mask"][...]
    assert mask.all()  # computed, not missing
    assert np.isfinite(loss[:, 0]).all() and not np.isfinite(loss[:, 1:]).any()
    assert list(tmp_path.glob("far_train_loss_heat.png"))  # the figures are drawn, the bad points masked


def test_randomness_in_eval_mode_is_refused(tmp_path):
    proc = run_surface(["--model", "custom_factory:noisy_model", "--x=-1:1:3", "--surf_file", str(tmp_path / "n.h5")],
                       check=False)
    assert proc.returncode == 2, proc.stderr
    assert "different outputs for the same 'train' inputs in eval mode" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "n.h5").exists()


def test_bn_recompute_matches_precise_bn_by_hand(tmp_path, demo_checkpoint):
    """At each point the BN statistics are those of the perturbed network on the calibration set."""
    import copy

    import torch
    import torch.nn.functional as F

    from landscape.core.data import load_dataset
    from landscape.core.models import build_model, load_checkpoint

    out = tmp_path / "bn.h5"
    run_surface(["--model_file", str(demo_checkpoint), "--x=-0.6:0.6:3", "--bn_recompute", "300", "--batch_size", "100",
                 "--threads", "1", "--no-plot", "--surf_file", str(out)])
    model = build_model("digits_cnn")
    load_checkpoint(model, demo_checkpoint)
    train = load_dataset("digits")["train"]
    with h5py.File(out) as f:
        got, x = f["train/loss"][...], f["x"][...]
        d = {k: torch.from_numpy(v[...]) for k, v in f["directions/x"].items()}
    for i, a in enumerate(x):
        m = copy.deepcopy(model)
        with torch.no_grad():
            for name, p in m.named_parameters():
                p += a * d[name]
            bns = [b for b in m.modules() if isinstance(b, torch.nn.BatchNorm2d)]
            for b in bns:
                b.reset_running_stats()
                b.momentum = None
            m.train()
            for j in range(0, 300, 100):
                m(train.inputs[j : j + 100])
            m.eval()
            want = F.cross_entropy(m(train.inputs), train.labels).item()
        np.testing.assert_allclose(got[i], want, rtol=1e-5)
    # the plain surface differs away from the centre (the fixed statistics of θ*)
    plain = tmp_path / "plain.h5"
    run_surface(["--model_file", str(demo_checkpoint), "--x=-0.6:0.6:3", "--threads", "1", "--no-plot",
                 "--surf_file", str(plain)])
    with h5py.File(plain) as f:
        assert abs(f["train/loss"][0] - got[0]) > 1e-3


@pytest.fixture
def small_fs(tmp_path):
    """A 64 KiB tmpfs (needs root, as in CI); skipped where mounting is not allowed."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_disk_full_is_one_line_and_leaves_nothing(small_fs):
    proc = run_surface(["--model", "digits_mlp", "--x=-1:1:101", "--y=-1:1:101", "--surf_file", str(small_fs / "s.h5")],
                       check=False)
    assert proc.returncode == 2 and "no space left on device" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not list(small_fs.iterdir())


def test_read_only_file_system_on_resume(small_fs):
    out = small_fs / "s.h5"
    args = ["--model", "digits_mlp", "--x=-1:1:5", "--threads", "1", "--no-plot", "--surf_file", str(out)]
    run_surface(args)
    before = out.read_bytes()
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    proc = run_surface(args, check=False)
    assert proc.returncode == 2 and "read-only file system" in proc.stderr.lower(), proc.stderr
    assert "Traceback" not in proc.stderr and out.read_bytes() == before


def test_truncated_file_is_explained(tmp_path):
    out = tmp_path / "s.h5"
    args = ["--model", "digits_mlp", "--x=-1:1:5", "--threads", "1", "--no-plot", "--surf_file", str(out)]
    run_surface(args)
    data = out.read_bytes()
    out.write_bytes(data[: len(data) // 2])
    proc = run_surface(args, check=False)
    assert proc.returncode == 2 and "is not a readable HDF5 file" in proc.stderr and "--force" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    run_surface(args + ["--force"])  # the way out the message gives


def test_a_mistake_on_one_rank_stops_every_rank(tmp_path):
    """No rank goes on alone and waits for the others forever: the job ends with the error."""
    proc = run_surface(["--model", "custom_factory:broken_on_rank_one", "--x=-1:1:3", "--surf_file",
                        str(tmp_path / "s.h5")], ranks=2, check=False, timeout=120)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("landscape: error:")]
    assert len(errors) == 1 and "not a torch.nn.Module" in errors[0]
    assert not (tmp_path / "s.h5").exists()


def test_out_of_memory_mid_run_is_one_line_and_keeps_the_points(tmp_path):
    out = tmp_path / "s.h5"
    proc = run_surface(["--model", "custom_factory:hungry_far_out", "--x=0:1:5", "--threads", "1",
                        "--surf_file", str(out)], check=False)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("landscape: error: out of memory: lower --batch_size")
    assert "Traceback" not in proc.stderr
    with h5py.File(out) as f:  # points up to the failing one are kept, and only those
        mask, loss = f["mask"][...].astype(bool), f["train/loss"][...]
    assert mask.any() and not mask[3:].any() and np.isfinite(loss[mask]).all()
