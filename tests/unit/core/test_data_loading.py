"""Data are read once, and only what the job uses: subsets before reading, the BN calibration
from the loaded train split, and a Dataset filled into tensors item by item (issue item 16)."""
import pickle
import tracemalloc

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from landscape import api, engine
from landscape.core.data import SUBSET_SEED, as_split, load_dataset, subset
from landscape.errors import UserError
from landscape.options import build_job

import counting_factory

MODES = ["first", "random"]


def same(a, b):
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.labels, b.labels)
    assert a.fingerprint() == b.fingerprint()  # existing surface files resume with the same data


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("n", [1, 100, 359, 0])
def test_digits_subset_before_reading_is_subset_after(mode, n):
    whole = load_dataset("digits")
    part = load_dataset("digits", subset=(n, mode))
    for name in ("train", "test"):
        same(part[name], subset(whole[name], n, mode, name))


def write_cifar(root, per_batch=7):
    """root/cifar-10-batches-py/ in the python version's format (see tests/integration/test_cifar.py)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.RandomState(0)
    for k, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        with open(folder / name, "wb") as fh:
            pickle.dump({b"batch_label": name.encode(), b"labels": [(k * per_batch + i) % 10 for i in range(per_batch)],
                         b"data": rng.randint(0, 256, size=(per_batch, 3072)).astype(np.uint8)}, fh, protocol=2)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("n", [3, 12, 0])
def test_cifar_subset_before_reading_is_subset_after(tmp_path, monkeypatch, mode, n):
    write_cifar(tmp_path)  # 35 train images in 5 files, 7 test images
    whole = load_dataset("cifar10", data_dir=str(tmp_path))
    converted = []  # rows of the arrays that become tensors (and then floats)
    from_numpy = torch.from_numpy
    monkeypatch.setattr(torch, "from_numpy", lambda a: converted.append(len(a)) or from_numpy(a))
    for name, k in (("train", n), ("test", min(n, 7))):
        converted.clear()
        part = load_dataset("cifar10", data_dir=str(tmp_path), splits=[name], subset=(k, mode))[name]
        assert converted == [k or len(whole[name])] * 2  # images and labels: the selected rows only
        same(part, subset(whole[name], k, mode, name))


@pytest.mark.parametrize("mode", MODES)
def test_a_dataset_is_read_at_the_selected_rows_only(mode):
    counting_factory.reset()
    part = load_dataset("counting_factory:data", splits=["train", "test"], subset=(7, mode))
    reads = list(counting_factory.READS)
    draw = {size: np.sort(np.random.RandomState(SUBSET_SEED).permutation(size)[:7]).tolist() for size in (40, 20)}
    want = {name: list(range(7)) if mode == "first" else draw[size] for name, size in (("train", 40), ("test", 20))}
    assert reads == [("train", i) for i in want["train"]] + [("test", i) for i in want["test"]]
    whole = load_dataset("counting_factory:data", splits=["train", "test"])
    for name in ("train", "test"):
        same(part[name], subset(whole[name], 7, mode, name))


def test_subset_errors_stay_one_line():
    with pytest.raises(UserError, match=r"^--subset 41 is larger than split 'train' \(40 examples\)"):
        load_dataset("counting_factory:data", splits=["train"], subset=(41, "first"))
    with pytest.raises(UserError, match=r"^--bn_recompute 41 is larger than split 'train'"):
        load_dataset("counting_factory:data", splits=["train"], subset=(41, "first"), flag="--bn_recompute")


def job(**values):
    return build_job({"model": "custom_factory:tiny_net", "dataset": "counting_factory:data", "threads": 1,
                      "device": "cpu", **values})


@pytest.mark.parametrize("values, reuse", [
    ({}, True),  # the whole train split: the calibration is its first 10
    ({"subset": 20}, True),  # first 20 ⊇ first 10
    ({"subset": 10}, True),
    ({"subset": 5}, False),  # first 5: rows 5..9 were not read
    ({"subset": 20, "subset_mode": "random"}, False),
    ({"splits": "test"}, False),  # the train split is not evaluated
])
def test_the_calibration_is_not_read_a_second_time(values, reuse):
    threads = torch.get_num_threads()
    counting_factory.reset()
    j = job(bn_recompute=10, splits=values.pop("splits", "train,test"), **values)
    try:
        _, splits, _ = api.load_inputs(j, engine.world())
    finally:
        torch.set_num_threads(threads)
    first_reads = list(counting_factory.READS)
    calibration = api.calibration_split(j, splits.get("train"))
    more, calls = counting_factory.READS[len(first_reads):], counting_factory.CALLS["data"]
    same(calibration, subset(load_dataset("counting_factory:data", splits=["train"])["train"], 10, "first"))
    if reuse:  # the factory is called once, no item is read again, the calibration shares the train tensors
        assert calls == 1 and more == []
        assert calibration.inputs.data_ptr() == splits["train"].inputs.data_ptr()
    else:  # only the first 10 train rows are read again, never the whole split
        assert more == [("train", i) for i in range(10)]
    assert len({r for r in first_reads}) == len(first_reads)  # load_inputs reads each item once


@pytest.mark.parametrize("values, again", [
    ({}, []),  # the calibration is the train split's first 10: nothing is read twice
    ({"subset": 20}, []),
    ({"subset": 5}, [("train", i) for i in range(10)]),  # rows 5..9 are needed: the first 10 only
])
def test_a_surface_job_reads_each_item_once(tmp_path, values, again):
    threads = torch.get_num_threads()
    counting_factory.reset()
    try:
        api.surface_job(job(bn_recompute=10, splits="train,test", x="-1:1:2", progress=False,
                            surf_file=str(tmp_path / "s.h5"), **values))
    finally:
        torch.set_num_threads(threads)
    reads = counting_factory.READS
    assert counting_factory.CALLS["data"] == (1 if not again else 2)
    first = reads[: len(reads) - len(again)]
    assert len(set(first)) == len(first) and reads[len(first):] == again


def test_no_calibration_without_bn_recompute():
    counting_factory.reset()
    assert api.calibration_split(job()) is None and counting_factory.CALLS["data"] == 0


class Arrays(Dataset):
    """n items of 64 KB, each a new numpy array (numpy's allocations are seen by tracemalloc)."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return np.full(16384, i, dtype=np.float32), i % 10


def test_a_dataset_becomes_tensors_without_a_list_of_its_items():
    data = Arrays(500)
    nbytes = 500 * 16384 * 4
    tracemalloc.start()
    try:
        split = as_split(data, "test data")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # the result is torch's (not traced): a list of every item would hold the data's bytes again
    assert peak < 0.1 * nbytes, f"{peak / nbytes:.2f}x the data's bytes held in items at once"
    assert split.inputs.shape == (500, 16384) and split.inputs.dtype == torch.float32
    assert torch.equal(split.inputs[:, 0], torch.arange(500, dtype=torch.float32))
    assert split.labels.tolist() == [i % 10 for i in range(500)]


class Ragged(Dataset):
    def __len__(self):
        return 3

    def __getitem__(self, i):
        return torch.zeros(4 if i < 2 else 5), 0


def test_a_ragged_dataset_is_a_one_line_error():
    with pytest.raises(UserError, match=r"^src: cannot read the Dataset as \(input tensor, class index\) items") as e:
        as_split(Ragged(), "src")
    assert "\n" not in str(e.value)
