import h5py
import numpy as np

from conftest import run_surface


def test_two_ranks_equal_one_process(tmp_path, demo_checkpoint):
    common = ["--model_file", str(demo_checkpoint), "--x=-1:1:5", "--y=-0.5:0.5:3", "--splits", "train,test",
              "--threads", "1", "--no-plot"]
    run_surface(common + ["--surf_file", str(tmp_path / "one.h5")])
    run_surface(common + ["--surf_file", str(tmp_path / "two.h5")], ranks=2)
    with h5py.File(tmp_path / "one.h5") as a, h5py.File(tmp_path / "two.h5") as b:
        assert a["train/loss"].shape == (3, 5)
        for key in ("train/loss", "train/acc", "test/loss", "test/acc", "mask"):
            np.testing.assert_array_equal(a[key][...], b[key][...])
        assert a["mask"][...].all()
