"""Token data from three sources (issue 16): `tokens:` nanoGPT files, `text:` files (bytes, or the
model folder's tokenizer) and `hfdata:` folders written by save_to_disk give the same blocks, with the
same data fingerprint, as ids computed independently (numpy bytes, the `tokenizers` library itself)."""
from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers is imported

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from landscape.core.data import load_dataset  # noqa: E402
from landscape.errors import UserError  # noqa: E402
from landscape.options import build_job  # noqa: E402

from token_corpus import byte_ids, corpus, lines, rows_of, save_tokenizer, train_tokenizer, word_ids, write_bin, write_hfdata, write_text  # noqa: E402

pytest.importorskip("transformers")
pytest.importorskip("datasets")

SEQ = 16
BOTH = ["train", "test"]


def reference(ids: np.ndarray, seq_len: int = SEQ) -> torch.Tensor:
    """Consecutive non-overlapping blocks of `ids`, the last partial one left out."""
    n = len(ids) // seq_len
    return torch.from_numpy(ids[: n * seq_len].astype(np.int64)).view(n, seq_len)


def assert_same_splits(loaded: dict, want: dict):
    """Every source's splits: inputs = labels = the reference blocks, and the same fingerprint."""
    first = next(iter(loaded.values()))
    for source, splits in loaded.items():
        for name, blocks in want.items():
            split = splits[name]
            assert split.inputs.dtype == torch.int64, source
            assert torch.equal(split.inputs, blocks) and torch.equal(split.labels, blocks), (source, name)
            assert split.fingerprint() == first[name].fingerprint(), (source, name)


@pytest.fixture(scope="module")
def text():
    return corpus()


def test_bytes_give_the_same_blocks_from_every_source(tmp_path, text):
    """The corpus's UTF-8 bytes as a uint16 .bin, the text file (no model: bytes), a datasets folder
    with a `text` column (one row per line) and one with `input_ids` rows of uneven lengths."""
    train, test = text
    ids = {"train": byte_ids(train), "test": byte_ids(test)}
    sources = {
        "tokens": f"tokens:{write_bin(tmp_path / 'bin', ids['train'], ids['test'])}",
        "text": f"text:{write_text(tmp_path / 'txt', train, test)}",
        "hfdata-text": f"hfdata:{write_hfdata(tmp_path / 'dtext', {'text': lines(train)}, {'text': lines(test)})}",
        "hfdata-ids": "hfdata:" + str(write_hfdata(tmp_path / "dids", {"input_ids": rows_of(ids["train"])},
                                                   {"input_ids": rows_of(ids["test"])}, test_key="test")),
    }
    want = {name: reference(ids[name]) for name in BOTH}
    assert len(want["train"]) > 100 and len(want["test"]) > 20
    assert_same_splits({k: load_dataset(v, splits=BOTH, seq_len=SEQ) for k, v in sources.items()}, want)
    rows = np.sort(np.random.RandomState(0).permutation(len(want["train"]))[:9])  # subset_rows' rule
    picked = {k: load_dataset(v, splits=["train"], seq_len=SEQ, subset=(9, "random")) for k, v in sources.items()}
    assert_same_splits(picked, {"train": want["train"][torch.from_numpy(rows)]})


def test_model_tokenizer_gives_the_same_blocks_from_every_source(tmp_path, text):
    """A word-level tokenizer saved (save_pretrained) in the `hf:` model folder: text file and datasets
    text column tokenized with it equal the ids of the `tokenizers` object itself, written as .bin
    and as `input_ids` rows; `--tokenizer bytes` gives the bytes instead (another fingerprint)."""
    train, test = text
    tok = train_tokenizer(train)
    model = f"hf:{save_tokenizer(tok, tmp_path / 'model')}"
    ids = {"train": word_ids(tok, train), "test": word_ids(tok, test)}
    assert ids["test"].min() == 0 and ids["train"].max() == tok.get_vocab_size() - 1  # [UNK] in test, all words
    text_file = write_text(tmp_path / "txt", train, test)
    sources = {
        "tokens": load_dataset(f"tokens:{write_bin(tmp_path / 'bin', ids['train'], ids['test'])}", splits=BOTH,
                               seq_len=SEQ, model=model),
        "text": load_dataset(f"text:{text_file}", splits=BOTH, seq_len=SEQ, model=model),
        "hfdata-text": load_dataset(f"hfdata:{write_hfdata(tmp_path / 'dt', {'text': lines(train)}, {'text': lines(test)})}",
                                    splits=BOTH, seq_len=SEQ, model=model),
        "hfdata-ids": load_dataset("hfdata:" + str(write_hfdata(tmp_path / "di", {"input_ids": rows_of(ids["train"])},
                                                                {"input_ids": rows_of(ids["test"])})),
                                   splits=BOTH, seq_len=SEQ),
    }
    assert_same_splits(sources, {name: reference(ids[name]) for name in BOTH})
    forced = load_dataset(f"text:{text_file}", splits=BOTH, seq_len=SEQ, model=model, tokenizer="bytes")
    assert torch.equal(forced["train"].inputs, reference(byte_ids(train)))
    assert forced["train"].fingerprint() != sources["text"]["train"].fingerprint()


def test_uint32_token_file(tmp_path):
    """`train.u32.bin` holds uint32 ids (here above 65535); its test split is `val.u32.bin`."""
    rng = np.random.default_rng(0)
    train, test = rng.integers(0, 2**20, 10 * SEQ + 5), rng.integers(0, 2**20, 3 * SEQ)
    path = write_bin(tmp_path, train, test, suffix=".u32.bin", dtype=np.uint32)
    splits = load_dataset(f"tokens:{path}", splits=BOTH, seq_len=SEQ)
    assert torch.equal(splits["train"].inputs, reference(train)) and int(splits["train"].inputs.max()) > 65535
    assert torch.equal(splits["test"].inputs, reference(test))


def test_test_split_falls_back_to_test_file(tmp_path):
    """Without val.bin next to train.bin the test split is test.bin; with both, val.bin; the same for text."""
    rng = np.random.default_rng(1)
    train, val, test = (rng.integers(0, 1000, k * SEQ).astype(np.uint16) for k in (4, 2, 3))
    train.tofile(tmp_path / "train.bin")
    test.tofile(tmp_path / "test.bin")
    data = f"tokens:{tmp_path / 'train.bin'}"
    assert torch.equal(load_dataset(data, splits=BOTH, seq_len=SEQ)["test"].inputs, reference(test))
    val.tofile(tmp_path / "val.bin")
    assert torch.equal(load_dataset(data, splits=BOTH, seq_len=SEQ)["test"].inputs, reference(val))
    write_text(tmp_path / "t", "x" * 40, "the test text, 32 bytes long....", test_name="test")
    got = load_dataset(f"text:{tmp_path / 't' / 'train.txt'}", splits=BOTH, seq_len=SEQ)["test"].inputs
    assert torch.equal(got, reference(byte_ids("the test text, 32 bytes long...."))) and got.shape == (2, SEQ)


def vm_size() -> int:
    return next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmSize"))


def test_only_the_blocks_used_are_mapped(tmp_path):
    """--subset 3 of a 4 GiB token file (sparse, ids 0 but for block 1) under an address-space limit
    (RLIMIT_AS, soft) of this process's size + 256 MiB: mapping the file whole fails (ENOMEM), the
    3 blocks used load. The soft limit is put back afterwards."""
    import resource

    path = tmp_path / "train.bin"
    with open(path, "wb") as fh:
        fh.truncate(4 << 30)
        fh.seek(SEQ * 2)
        np.arange(1, SEQ + 1, dtype=np.uint16).tofile(fh)
    want = torch.zeros(3, SEQ, dtype=torch.int64)
    want[1] = torch.arange(1, SEQ + 1)
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (vm_size() + (256 << 20), hard))
    try:
        with pytest.raises(OSError):
            np.memmap(path, dtype=np.uint16, mode="r")
        got = load_dataset(f"tokens:{path}", splits=["train"], seq_len=SEQ, subset=(3, "first"))["train"]
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    assert torch.equal(got.inputs, want)


def error(fn):
    with pytest.raises(UserError) as exc:
        fn()
    message = str(exc.value)
    assert "\n" not in message
    return message


def load(name, splits=("train",), **kw):
    return load_dataset(name, splits=splits, **kw)


def test_user_mistakes_are_one_line_errors(tmp_path, text):
    """Empty or too short text, no --seq_len, not UTF-8 with a tokenizer, a missing or foreign datasets
    folder, no usable column, no test or no train split: each one UserError line."""
    empty = tmp_path / "empty_train.txt"
    empty.write_text("")
    msg = error(lambda: load(f"text:{empty}", seq_len=SEQ))
    assert "empty_train.txt" in msg and "empty" in msg
    short = write_text(tmp_path / "short", "tiny", "tiny")
    assert "--seq_len 16" in error(lambda: load(f"text:{short}", seq_len=SEQ))
    assert "--seq_len" in error(lambda: load(f"text:{short}"))
    latin = tmp_path / "latin" / "train.txt"
    latin.parent.mkdir()
    latin.write_bytes("café ".encode("latin-1") * 10)
    model = f"hf:{save_tokenizer(train_tokenizer(text[0]), tmp_path / 'tok')}"
    assert "UTF-8" in error(lambda: load(f"text:{latin}", seq_len=SEQ, model=model))
    assert len(load(f"text:{latin}", seq_len=SEQ, model=model, tokenizer="bytes")["train"]) == 3
    assert "does not exist" in error(lambda: load(f"hfdata:{tmp_path / 'nothing'}", seq_len=SEQ))
    assert "save_to_disk" in error(lambda: load(f"hfdata:{tmp_path / 'tok'}", seq_len=SEQ))
    import datasets

    datasets.Dataset.from_dict({"label": [1, 2]}).save_to_disk(str(tmp_path / "nocol"))
    assert "'input_ids'" in error(lambda: load(f"hfdata:{tmp_path / 'nocol'}", seq_len=1))
    datasets.Dataset.from_dict({"input_ids": [[1, 2], [3]]}).save_to_disk(str(tmp_path / "one"))
    assert len(load(f"hfdata:{tmp_path / 'one'}", seq_len=1)["train"]) == 3
    assert "--splits train" in error(lambda: load(f"hfdata:{tmp_path / 'one'}", seq_len=1, splits=BOTH))
    datasets.DatasetDict(validation=datasets.Dataset.from_dict({"input_ids": [[1]]})).save_to_disk(str(tmp_path / "dd"))
    assert "no 'train'" in error(lambda: load(f"hfdata:{tmp_path / 'dd'}", seq_len=1))


def test_tokenizer_and_seq_len_refused_where_ignored():
    assert build_job({"dataset": "text:a.txt", "seq_len": 8, "tokenizer": "bytes"}).tokenizer == "bytes"
    assert build_job({"dataset": "hfdata:folder", "seq_len": 8}).seq_len == 8
    assert "--tokenizer" in error(lambda: build_job({"dataset": "digits", "tokenizer": "bytes"}))
    assert "--tokenizer" in error(lambda: build_job({"dataset": "tokens:train.bin", "seq_len": 8, "tokenizer": "bytes"}))
    assert "--seq_len" in error(lambda: build_job({"dataset": "digits", "seq_len": 8}))
    assert "tokenizer" in error(lambda: build_job({"dataset": "text:a.txt", "tokenizer": "gpt2"}))
