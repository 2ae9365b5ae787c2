"""Streamed splits (issue 17): every kind of data, read batch by batch from its source, gives the
batches, shards and fingerprint of the same data held in memory; CIFAR-10 is read one file at a
time; the choice between memory and disk follows the memory a rank may use."""
from __future__ import annotations

import dataclasses
import hashlib
import pickle
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
import torch

from landscape.core import data as data_module
from landscape.core.data import CIFAR_MEAN, CIFAR_STD, Holding, accepted_fingerprint, as_split, check_labels, load_dataset, subset
from landscape.core.split import Split
from landscape.core.stream import StreamedSplit
from landscape.errors import UserError

from conftest import ROOT, cli_env
from token_corpus import corpus, rows_of, save_tokenizer, train_tokenizer, write_hfdata, write_text


def write_cifar(root, per_batch=7):
    """root/cifar-10-batches-py/ in the python version's format (see tests/integration/test_cifar.py)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.RandomState(0)
    for k, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        with open(folder / name, "wb") as fh:
            pickle.dump({b"batch_label": name.encode(), b"labels": [(k * per_batch + i) % 10 for i in range(per_batch)],
                         b"data": rng.randint(0, 256, size=(per_batch, 3072)).astype(np.uint8)}, fh, protocol=2)
    return root


def whole(split, size):
    parts = list(split.batches(size))
    return torch.cat([x for x, _ in parts]), torch.cat([y for _, y in parts])


def assert_same(held, streamed, size=5):
    """The streamed split's batches, shards (--ranks_per_point), fingerprint and first examples are the held one's."""
    assert isinstance(streamed, StreamedSplit) and not isinstance(held, StreamedSplit)
    assert len(streamed) == len(held)
    x, y = whole(streamed, size)
    assert torch.equal(x, held.inputs) and torch.equal(y, held.labels)
    assert [len(b) for b, _ in streamed.batches(size)] == [len(b) for b, _ in held.batches(size)]
    assert streamed.fingerprint() == held.fingerprint()
    assert torch.equal(streamed.head(3).inputs, held.inputs[:3])
    for parts in (2, 3):
        for i in range(parts):
            a, b = held.shard(i, parts), streamed.shard(i, parts)
            assert torch.equal(whole(b, size)[0], a.inputs) and torch.equal(whole(b, size)[1], a.labels)


def token_file(tmp_path, n=5000):
    ids = np.random.RandomState(1).randint(0, 300, size=n).astype(np.uint16)
    ids.tofile(tmp_path / "train.bin")
    return f"tokens:{tmp_path / 'train.bin'}"


@pytest.mark.parametrize("subset_arg", [None, (30, "first"), (30, "random")])
@pytest.mark.parametrize("kind", ["digits", "cifar10", "tokens", "text", "dataset", "iterable"])
def test_every_source_streams_what_it_holds(tmp_path, kind, subset_arg):
    kw = {"subset": subset_arg, "splits": ["train"]}
    if kind == "cifar10":
        kw.update(data_dir=str(write_cifar(tmp_path)), subset=subset_arg and (min(subset_arg[0], 20), subset_arg[1]))
    if kind == "tokens":
        kind, kw["seq_len"] = token_file(tmp_path), 16
    if kind == "text":
        (tmp_path / "train.txt").write_bytes(bytes(np.random.RandomState(2).randint(0, 256, 3000).astype(np.uint8)))
        kind, kw["seq_len"] = f"text:{tmp_path / 'train.txt'}", 8
    if kind in ("dataset", "iterable"):
        kind = "stream_factory:digits_" + ("dataset" if kind == "dataset" else "stream")
    held = load_dataset(kind, **kw)["train"]
    streamed = load_dataset(kind, in_memory="no", **kw)["train"]
    assert_same(held, streamed)
    if kind in ("digits", "cifar10") or kind.startswith("stream_factory"):  # class labels, held by both
        assert_same(check_labels(held, 10, "train"), check_labels(streamed, 10, "train"))
    rows = subset(streamed, 4, "random")  # a Hessian subset / a BN calibration split: in memory
    assert torch.equal(rows.inputs, subset(held, 4, "random").inputs)


def test_tensors_stream_from_memory_with_data_in_memory_no():
    x, y = torch.randn(50, 3), torch.arange(50) % 4
    held = as_split((x, y), "data")
    streamed = as_split((x, y), "data", hold=Holding("no"))
    assert_same(held, streamed, size=7)
    assert "--data_in_memory no" in streamed.note


def peak(fn) -> int:
    """The peak of the memory numpy and Python allocate (tracemalloc) while fn runs."""
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_cifar_is_streamed_one_file_at_a_time(tmp_path):
    """Files of 400 images: reading the train split (5 files) into memory grows with the files (all are held), about twice
    reading the test split (1 file); a streamed pass over the train split takes what one over the test split
    takes (one file at a time)."""
    root = str(write_cifar(tmp_path, per_batch=400))

    def held(name):
        return peak(lambda: load_dataset("cifar10", data_dir=root, splits=[name]))

    def streamed(name):
        split = load_dataset("cifar10", data_dir=root, splits=[name], in_memory="no")[name]
        split = dataclasses.replace(split, workers=0)  # read in this process, where tracemalloc sees it
        return peak(lambda: [len(x) for x, _ in split.batches(100)])

    assert held("train") > 2 * held("test")  # the unpickling of one file takes ~4.5 times its rows
    assert streamed("train") < 1.3 * streamed("test"), (streamed("train"), streamed("test"))


def cifar_reference_fingerprint(folder, files, rows=None) -> str:
    """sha256 of the normalized float32 images then the int64 labels, computed here with numpy from the pickles."""
    parts = []
    for name in files:
        with open(folder / name, "rb") as fh:
            parts.append(pickle.load(fh, encoding="bytes"))
    data = np.concatenate([np.asarray(b[b"data"]) for b in parts])
    labels = np.concatenate([np.asarray(b[b"labels"], dtype=np.int64) for b in parts])
    if rows is not None:
        data, labels = data[rows], labels[rows]
    mean, std = (np.array(v, dtype=np.float32).reshape(1, 3, 1, 1) for v in (CIFAR_MEAN, CIFAR_STD))
    x = (data.reshape(-1, 3, 32, 32).astype(np.float32) / np.float32(255.0) - mean) / std
    return hashlib.sha256(x.astype(np.float32).tobytes() + labels.tobytes()).hexdigest()[:16]


@pytest.mark.parametrize("subset_arg", [None, (20, "first"), (35, "first"), (20, "random")])
def test_streamed_cifar_is_fingerprinted_by_the_read_that_finds_its_labels(tmp_path, monkeypatch, subset_arg):
    """Making a streamed CIFAR-10 split reads each file once, and that read also gives its fingerprint, the one a
    sha256 of the same images held in memory gives (computed here with numpy): asking for it reads nothing more.
    Only a random subset, whose rows depend on the split's size, is read again for it."""
    root = write_cifar(tmp_path)
    reads = []
    real = data_module.read_cifar_batch
    monkeypatch.setattr(data_module, "read_cifar_batch", lambda path: reads.append(path.name) or real(path))
    streamed = load_dataset("cifar10", data_dir=str(root), splits=["train"], subset=subset_arg, in_memory="no")["train"]
    files = [f"data_batch_{i}" for i in range(1, 6)]
    assert reads == files
    fingerprint = dataclasses.replace(streamed, workers=0).fingerprint()  # any reading happens here, counted
    random = subset_arg is not None and subset_arg[1] == "random"
    assert (len(reads) > 5) == random, reads
    rows = None if subset_arg is None else np.sort(np.random.RandomState(0).permutation(35)[:20]) if random else \
        np.arange(subset_arg[0])
    assert fingerprint == cifar_reference_fingerprint(root / "cifar-10-batches-py", files, rows)
    monkeypatch.undo()
    assert fingerprint == load_dataset("cifar10", data_dir=str(root), splits=["train"], subset=subset_arg)["train"].fingerprint()


def test_token_fingerprints_of_older_files_are_accepted_after_a_full_read(tmp_path):
    """Token data used to be fingerprinted by every id; such a stored fingerprint is accepted once a full read
    of the split confirms it, another one is not; a streamed split's sampled fingerprint is the held one's."""
    name = token_file(tmp_path)
    held = load_dataset(name, seq_len=16, splits=["train"])["train"]
    streamed = load_dataset(name, seq_len=16, splits=["train"], in_memory="no")["train"]
    old = held.content_fingerprint()
    assert old != held.fingerprint() and streamed.content_fingerprint() == old
    for split in (held, streamed):
        assert accepted_fingerprint(split, old) == old
        assert accepted_fingerprint(split, "0123456789abcdef") == split.fingerprint() == held.fingerprint()
    other = np.fromfile(tmp_path / "train.bin", dtype=np.uint16)
    other[len(other) // 2] += 1  # a block the fingerprint does not sample changes only the full read's
    other.tofile(tmp_path / "train.bin")
    changed = load_dataset(name, seq_len=16, splits=["train"], in_memory="no")["train"]
    assert accepted_fingerprint(changed, old) != old


def test_ids_made_whole_in_memory_are_refused_when_they_cannot_be_held(tmp_path, monkeypatch):
    """Tokenized text and a datasets column are made whole in memory, never streamed: when their ids may take more
    than --data_in_memory lets a rank hold (bounded before they are made: 8 bytes a byte of text, 8 an input_ids
    value), one line says to write a token file, before anything is tokenized; what fits is held and counted."""
    train, test = corpus()
    text_file = write_text(tmp_path / "text", train, test)
    model = f"hf:{save_tokenizer(train_tokenizer(train), tmp_path / 'model')}"
    ids = np.arange(1000) % 50
    folder = write_hfdata(tmp_path / "hf", {"input_ids": rows_of(ids)}, {"input_ids": rows_of(ids[:100])})
    cases = [(f"text:{text_file}", {"model": model}, 8 * len(train.encode()), "tokenized"),
             (f"hfdata:{folder}", {}, 8 * len(ids), "datasets folder")]
    for name, kw, bound, words in cases:
        def load(way, memory, name=name, kw=kw):
            return load_dataset(name, splits=["train"], seq_len=8, in_memory=way, memory=memory, **kw)["train"]

        with monkeypatch.context() as m:
            m.setattr(data_module, "encode", lambda *a: pytest.fail("tokenized before the refusal"))
            for way, memory in (("auto", 2 * bound - 2), ("yes", bound - 1), ("no", 1 << 40)):  # auto: up to half
                with pytest.raises(UserError) as info:
                    load(way, memory)
                message = str(info.value)
                assert "\n" not in message and "--dataset tokens:PATH" in message and words in message, message
        held = load("auto", 2 * bound)
        assert isinstance(held, Split) and held.note.startswith("held in memory"), held.note
        if name.startswith("hfdata"):
            assert len(held) == len(ids) // 8


def test_holding_follows_the_memory_a_rank_may_use():
    hold = Holding("auto", memory=1000)
    assert hold(400, "a")[0] is True  # 400 <= 1000 / 2
    assert hold(400, "b")[0] is False  # 400 > (1000 - 400) / 2
    assert "streamed from disk" in hold(400, "b")[1]
    assert Holding("no", memory=1 << 40)(1, "a")[0] is False
    assert Holding("yes", memory=1000)(900, "a")[0] is True
    with pytest.raises(UserError, match=r"^--data_in_memory yes: split 'x' takes .* use --data_in_memory auto"):
        Holding("yes", memory=1000)(2000, "split 'x'")
    with pytest.raises(UserError, match="unknown data_in_memory"):
        Holding("maybe")


def test_the_memory_a_rank_may_use_sees_its_address_space_limit():
    """Under RLIMIT_AS (ulimit -v) the host's available memory is what the limit leaves."""
    code = ("import resource; from landscape.core.device import host_available, _read\n"
            "vm = next(int(l.split()[1]) * 1024 for l in _read('/proc/self/status').splitlines() if l.startswith('VmSize'))\n"
            "resource.setrlimit(resource.RLIMIT_AS, (vm + (300 << 20), resource.RLIM_INFINITY))\n"
            "print(host_available())")
    out = subprocess.run([sys.executable, "-c", code], env=cli_env(), cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert 250 << 20 < int(out.stdout) <= 300 << 20
