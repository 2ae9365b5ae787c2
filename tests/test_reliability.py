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


def test_bn_recompute_matches_precise_bn_by_hand(tmp_path, demo_checkpoint):
    """At each point the BN statistics are those of the perturbed network on the calibration set."""
    import copy

    import torch
    import torch.nn.functional as F

    from landscape.data import load_dataset
    from landscape.models import build_model, load_checkpoint

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
