"""CIFAR-10 from a local `cifar-10-batches-py` folder (files written here in that exact format),
and the job files in jobs/."""
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from landscape.core.data import CIFAR_MEAN, CIFAR_STD, load_dataset
from landscape.errors import UserError
from landscape.options import build_job, read_job_file

from conftest import ROOT, run_surface

PER_BATCH = 2  # images per batch file: 10 train images, 2 test images
NAMES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def write_cifar(root: Path) -> dict[str, tuple[np.ndarray, list[int]]]:
    """root/cifar-10-batches-py/ with every batch file as the CIFAR-10 python version has it:
    a pickled dict with b'batch_label', b'labels' (list of int), b'data' (uint8 (N, 3072):
    1024 red, then green, then blue values, each 32x32 row-major), b'filenames'."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.RandomState(0)
    batches = {}
    for k, name in enumerate(NAMES):
        data = rng.randint(0, 256, size=(PER_BATCH, 3072)).astype(np.uint8)
        labels = [(k * PER_BATCH + i) % 10 for i in range(PER_BATCH)]
        with open(folder / name, "wb") as fh:
            pickle.dump({b"batch_label": name.encode(), b"labels": labels, b"data": data,
                         b"filenames": [f"{name}_{i}.png".encode() for i in range(PER_BATCH)]}, fh, protocol=2)
        batches[name] = (data, labels)
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"airplane"] * 10}))
    return batches


@pytest.fixture
def cifar(tmp_path):
    return tmp_path, write_cifar(tmp_path)


def expected(data: np.ndarray) -> np.ndarray:
    """x[n, c, h, w] = (data[n, 1024 c + 32 h + w] / 255 - mean[c]) / std[c]."""
    x = data.reshape(-1, 3, 32, 32).astype(np.float64) / 255.0
    return (x - np.array(CIFAR_MEAN)[None, :, None, None]) / np.array(CIFAR_STD)[None, :, None, None]


def test_reads_splits_in_file_order_normalized(cifar):
    root, batches = cifar
    splits = load_dataset("cifar10", data_dir=str(root))
    train, test = splits["train"], splits["test"]
    assert train.inputs.shape == (5 * PER_BATCH, 3, 32, 32) and train.inputs.dtype == torch.float32
    assert test.inputs.shape == (PER_BATCH, 3, 32, 32)
    assert train.labels.dtype == torch.int64
    assert train.labels.tolist() == sum((batches[n][1] for n in NAMES[:5]), [])
    assert test.labels.tolist() == batches["test_batch"][1]
    np.testing.assert_allclose(train.inputs.numpy(), expected(np.concatenate([batches[n][0] for n in NAMES[:5]])),
                               rtol=0, atol=1e-5)
    np.testing.assert_allclose(test.inputs.numpy(), expected(batches["test_batch"][0]), rtol=0, atol=1e-5)
    # one pixel by hand: image 1 of test_batch, green channel, row 3, column 5
    raw = batches["test_batch"][0][1, 1024 + 3 * 32 + 5]
    assert test.inputs[1, 1, 3, 5].item() == pytest.approx((raw / 255 - 0.4822) / 0.2435, abs=1e-5)


def test_data_dir_may_be_the_batches_folder_itself(cifar):
    root, _ = cifar
    a = load_dataset("cifar10", data_dir=str(root), splits=["test"])["test"]
    b = load_dataset("cifar10", data_dir=str(root / "cifar-10-batches-py"), splits=["test"])["test"]
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.labels, b.labels)


def test_only_the_requested_splits_are_read(cifar):
    root, _ = cifar
    for name in NAMES[:5]:
        (root / "cifar-10-batches-py" / name).unlink()
    assert list(load_dataset("cifar10", data_dir=str(root), splits=["test"])) == ["test"]
    with pytest.raises(UserError, match="data_batch_1' is missing"):
        load_dataset("cifar10", data_dir=str(root), splits=["train"])


def test_missing_folder_errors(tmp_path):
    with pytest.raises(UserError, match="cifar10 needs --data_dir"):
        load_dataset("cifar10")
    with pytest.raises(UserError, match="does not exist: check --data_dir"):
        load_dataset("cifar10", data_dir=str(tmp_path / "nowhere"))
    with pytest.raises(UserError, match="holds neither cifar-10-batches-py nor its batch files"):
        load_dataset("cifar10", data_dir=str(tmp_path))


@pytest.mark.parametrize("content, message", [
    (b"garbage", "is not a CIFAR-10 python batch"),
    (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8)}), "is not a CIFAR-10 python batch"),
    (pickle.dumps([1, 2, 3]), "is not a CIFAR-10 python batch"),
    (pickle.dumps({b"data": np.zeros((2, 1024), np.uint8), b"labels": [0, 1]}), r"not uint8 \(N, 3072\)"),
    (pickle.dumps({b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}), r"not uint8 \(N, 3072\)"),
    (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}), "must be 2 class indices"),
    (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}), "in 0..9"),
])
def test_malformed_batch_errors(cifar, content, message):
    root, _ = cifar
    (root / "cifar-10-batches-py" / "test_batch").write_bytes(content)
    with pytest.raises(UserError, match=message) as err:
        load_dataset("cifar10", data_dir=str(root), splits=["test"])
    assert "\n" not in str(err.value)


def test_surface_job_on_cifar10_with_resnet20(cifar):
    root, _ = cifar
    surf = root / "s.h5"
    run_surface(["--model", "resnet20", "--dataset", "cifar10", "--data_dir", str(root), "--splits", "train,test",
                 "--x=-1:1:3", "--threads", "1", "--no-plot", "--no-progress", "--surf_file", str(surf)])
    with h5py.File(surf) as f:
        assert f["mask"][...].all() and np.isfinite(f["train/loss"][...]).all()
        assert f["test/loss"].shape == (3,)
        assert "data_dir:" in f.attrs["config"]


def test_every_job_file_parses_and_validates():
    files = sorted((ROOT / "jobs").glob("*.yaml"))
    assert {"resnet56_cifar10.yaml", "resnet56_noshort_cifar10.yaml"} <= {f.name for f in files}
    for path in files:
        job = build_job(read_job_file(str(path)), str(path))
        x, y = job.axes()
        assert x.num > 1, path
    for name, model in [("resnet56_cifar10", "resnet56"), ("resnet56_noshort_cifar10", "resnet56_noshort")]:
        job = build_job(read_job_file(str(ROOT / "jobs" / f"{name}.yaml")))
        assert (job.model, job.dataset, job.data_dir) == (model, "cifar10", "data/cifar10")
        assert (job.x, job.y, job.xnorm, job.ynorm, job.xignore, job.yignore) == (
            "-1:1:51", "-1:1:51", "filter", "filter", "biasbn", "biasbn")
        assert job.surf_file.startswith("out/")
