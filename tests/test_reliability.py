"""Non-finite values at far points and the determinism check."""
import h5py
import numpy as np

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
