"""One real text corpus written as every token source: a nanoGPT token file, a text file and a
saved `datasets` folder, with byte ids or the ids of a small word-level tokenizer trained on it."""
from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np


def corpus() -> tuple[str, str]:
    """(train, test) text: the standard library's textwrap.py, its first 120 lines and the next 40."""
    lines = Path(textwrap.__file__).read_text(encoding="utf-8").splitlines(keepends=True)
    return "".join(lines[:120]), "".join(lines[120:160])


def train_tokenizer(text: str):
    """A `tokenizers` word-level tokenizer (whitespace/punctuation pre-tokenizer, [UNK]) trained on `text`."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator([text], trainers.WordLevelTrainer(special_tokens=["[UNK]"]))
    return tok


def save_tokenizer(tok, folder: Path) -> Path:
    """`tok` as a transformers PreTrainedTokenizerFast saved with save_pretrained into `folder`."""
    from transformers import PreTrainedTokenizerFast

    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]").save_pretrained(folder)
    return folder


def byte_ids(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64)


def word_ids(tok, text: str) -> np.ndarray:
    return np.asarray(tok.encode(text).ids, dtype=np.int64)


def write_text(folder: Path, train: str, test: str, test_name: str = "val") -> Path:
    """folder/train.txt and folder/{test_name}.txt; returns the train file."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{test_name}.txt").write_text(test, encoding="utf-8")
    (folder / "train.txt").write_text(train, encoding="utf-8")
    return folder / "train.txt"


def write_bin(folder: Path, train: np.ndarray, test: np.ndarray, suffix: str = ".bin", dtype=np.uint16) -> Path:
    """folder/train{suffix} and folder/val{suffix}, flat ids of `dtype` (nanoGPT's format)."""
    folder.mkdir(parents=True, exist_ok=True)
    np.asarray(test, dtype=dtype).tofile(folder / f"val{suffix}")
    np.asarray(train, dtype=dtype).tofile(folder / f"train{suffix}")
    return folder / f"train{suffix}"


def write_hfdata(folder: Path, train_rows: dict, test_rows: dict, test_key: str = "validation") -> Path:
    """A DatasetDict {'train', test_key} of the given columns, written with save_to_disk."""
    import datasets

    datasets.disable_progress_bars()
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(train_rows),
                          test_key: datasets.Dataset.from_dict(test_rows)}).save_to_disk(str(folder))
    return folder


def lines(text: str) -> list[str]:
    return text.splitlines(keepends=True)


def rows_of(ids: np.ndarray, sizes=(7, 30, 1, 64)) -> list[list[int]]:
    """`ids` as rows of uneven lengths (cycling through `sizes`), in order."""
    rows, i, k = [], 0, 0
    while i < len(ids):
        rows.append(ids[i : i + sizes[k % len(sizes)]].tolist())
        i, k = i + sizes[k % len(sizes)], k + 1
    return rows
