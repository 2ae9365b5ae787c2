"""Datasets: splits of (inputs, labels), held in memory (`Split`) or streamed from disk batch by
batch at every point (core.stream.StreamedSplit: the same interface, the evaluators do not know
which).

Only the examples a job uses are converted (`load_dataset(..., subset=(n, mode))`); every rank
reads its own copy. Held or streamed (`--data_in_memory`, see `Holding`): `auto` holds each split
while it fits half of the memory this rank may use (the host's available memory, its cgroup and
RLIMIT_AS limits, shared among the node's ranks: core.device.host_available), else streams it;
the choice is a note of the split, which the CLI prints. Streamed: digits (from the arrays), CIFAR-10
(file by file), token files and `text:` bytes (memory-mapped batch by batch), the user's Datasets
(through a DataLoader). Tokenized `text:` and `hfdata:` ids are made whole in memory and held:
when they may not fit what `--data_in_memory` lets a rank hold (bounded before they are made: 8
bytes an id, at most one id a byte of text, or the `input_ids` column's length), the job is refused
in one line that says to write them to a token file.

Data fingerprints (Split.fingerprint, the same held or streamed, so a file resumes either way):
digits, CIFAR-10 and the user's data: sha256 of every input then every label (a streamed split's
from the one pass at start-up that also reads its labels; for a random --subset of CIFAR-10, from a
second pass on the rank that writes the file: its rows are known only after the first). Token data:
sha256 of the number of blocks, seq_len and 256 evenly spaced blocks (no full read; a change in an
unsampled block is not seen). Token-data files written before issue 17 stored the full hash: it
is accepted after one full read confirms it (`accepted_fingerprint`).

`digits`: the 8x8 handwritten digits bundled with scikit-learn (1797 images, 10
classes, no download). Pixels are scaled to [0, 1]; the split is fixed: a
permutation drawn with numpy seed 0, the first 1438 images (80%) for `train`,
the remaining 359 for `test`.

`cifar10`: CIFAR-10 read from a local `cifar-10-batches-py` folder (the "python
version" of https://www.cs.toronto.edu/~kriz/cifar.html: pickled dicts with b'data',
uint8 (N, 3072) rows of 3 channel planes of 32x32, and b'labels'); `train` is
data_batch_1..5 (50000 images), `test` is test_batch (10000), in file order. Pixels are
scaled to [0, 1] and normalized per channel with CIFAR_MEAN / CIFAR_STD; no augmentation.

Token data, cut into consecutive non-overlapping blocks of `--seq_len` tokens (a last partial
block is left out); inputs = labels = the blocks' ids (int64); `--subset` counts blocks. Three
sources, one stream of ids each, give the same blocks from the same ids:

`tokens:PATH`: a nanoGPT-style flat token file (uint16 ids, uint32 when the name ends with
`.u32.bin`; no header). Only the byte range from the first to the last block used is mapped
(np.memmap with an offset), only the blocks used are read: a file larger than the process may
hold is fine. `train` is PATH; `test` is the sibling file named with `train` replaced by `val`,
else by `test` (train.bin → val.bin or test.bin), when it exists.

`text:PATH`: a UTF-8 text file, test split by the same naming rule (train.txt → val.txt). Its
ids are those of the tokenizer saved in the `--model hf:FOLDER` folder (AutoTokenizer, offline,
no special tokens added, the whole file at once), else (`--tokenizer bytes`, another model, no
tokenizer files there) its bytes as ids 0..255, read like a uint8 token file.

`hfdata:FOLDER`: a Hugging Face `datasets` folder written by `save_to_disk`: a Dataset (the train
split) or a DatasetDict with `train` and `validation` (else `test`) for the test split. Its
`input_ids` column (lists of ids), else its `text` column (each row tokenized as in `text:`, no
separator added), concatenated in row order. `datasets` is imported only here.

The data fingerprint (Split.fingerprint) is of the blocks used (sampled, see above): other ids
(another tokenizer, file or subset) give another one, so a resume with them is refused; the same
blocks from another source give the same one (they evaluate to the same values).

`package.module:factory`: the user's own; see `from_factory`.
"""
from __future__ import annotations

import functools
import hashlib
import pickle
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from ..options import SPLITS
from .device import free_memory
from .importpath import is_import_path, resolve
from .split import Split
from .stream import (
    ArrayRows,
    CifarFiles,
    StreamedSplit,
    TokenBlocks,
    gib,
    survey,
    workers_for,
)

DATASETS = ("digits", "cifar10")
DATA_IN_MEMORY = ("auto", "yes", "no")
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
CIFAR_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
CIFAR_HINT = ("download cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html "
              "and extract it into --data_dir")


class Holding:
    """Which splits are held in memory (`in_memory`: `yes`, `no`, or `auto`: while the splits held so
    far and this one fit half of `memory`, the bytes this rank may use: by default the host's
    available memory (core.device.free_memory) shared among the `ranks` of the node)."""

    def __init__(self, in_memory: str = "auto", ranks: int = 1, memory: int | None = None):
        if in_memory not in DATA_IN_MEMORY:
            raise UserError(f"unknown data_in_memory {in_memory!r}: choose one of {', '.join(DATA_IN_MEMORY)}")
        self.in_memory = in_memory
        self.memory = free_memory(torch.device("cpu")) // max(1, ranks) if memory is None else int(memory)
        self.used = 0

    def __call__(self, nbytes: int, what: str) -> tuple[bool, str]:
        """(hold it, a note of why) for `what` of `nbytes` held in memory."""
        left = self.memory - self.used
        if self.in_memory == "no":
            return False, "streamed from disk at every point (--data_in_memory no)"
        if self.in_memory == "yes" and nbytes > left:
            raise UserError(f"--data_in_memory yes: {what} takes {gib(nbytes)} in memory but this rank may use "
                            f"{gib(left)} (the node's available memory shared among its ranks): use "
                            "--data_in_memory auto to stream it from disk, or run fewer ranks per node")
        if self.in_memory == "yes" or nbytes <= left // 2:
            self.used += nbytes
            why = "--data_in_memory yes" if self.in_memory == "yes" else f"this rank may use {gib(left)}"
            return True, f"held in memory ({gib(nbytes)}; {why})"
        return False, (f"streamed from disk at every point ({gib(nbytes)} would take more than half of the "
                       f"{gib(left)} this rank may use; --data_in_memory yes holds it)")


def hold_all(nbytes: int, what: str) -> tuple[bool, str]:
    """The Holding of callers that give none: everything in memory, no note."""
    return True, ""


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """(1797, 8, 8) pixel values 0..16 and labels, read from the file scikit-learn ships
    (without importing sklearn.datasets, which costs a second per process)."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the digits dataset comes with scikit-learn, which is not installed: pip install scikit-learn")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"
    if not path.is_file():  # another layout: let sklearn find it
        from sklearn.datasets import load_digits

        bunch = load_digits()
        return bunch.images, bunch.target
    table = np.loadtxt(path, delimiter=",")
    return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)


def digits_rows(pixels: np.ndarray, target: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(pixels[:, None].astype(np.float32) / 16.0), torch.from_numpy(target.astype(np.int64))


def digits(splits=SPLITS, pick=None, hold=hold_all) -> dict[str, Split | StreamedSplit]:
    """The named splits; `pick(split, size)`: the rows to build (sorted; None: all); `hold`: a
    Holding (streamed: from the arrays, through the path of data on disk)."""
    pixels, target = digits_arrays()
    order = np.random.RandomState(0).permutation(len(target))
    n_train = int(round(0.8 * len(target)))
    parts = {"train": order[:n_train], "test": order[n_train:]}
    out = {}
    for name in splits:
        idx = parts[name]
        rows = pick(name, len(idx)) if pick else None
        idx = idx if rows is None else idx[rows]
        keep, note = hold(len(idx) * (64 * 4 + 8), f"split {name!r} of digits")
        if keep:
            out[name] = Split(*digits_rows(pixels[idx], target[idx]), note=note)
        else:
            out[name] = StreamedSplit(ArrayRows((pixels, target), digits_rows), idx, 0, len(idx),
                                      held_labels=torch.from_numpy(target[idx].astype(np.int64)), note=note,
                                      example_bytes=64 * 4 + 8)
    return out


def picked(pick, name: str, size: int) -> int:
    """How many of `size` examples `pick` keeps (`size` when it keeps all, or when it cannot tell)."""
    try:
        rows = pick(name, size) if pick else None
    except UserError:
        rows = None
    return size if rows is None else len(rows)


def cifar_folder(data_dir: str | Path | None) -> Path:
    """`data_dir`/cifar-10-batches-py, or `data_dir` itself when it holds the batch files."""
    if not data_dir:
        raise UserError(f"dataset cifar10 needs --data_dir, the folder holding cifar-10-batches-py: {CIFAR_HINT}")
    root = Path(data_dir)
    if not root.is_dir():
        raise UserError(f"CIFAR-10 folder {str(root)!r} does not exist: check --data_dir, or {CIFAR_HINT}")
    if (root / "cifar-10-batches-py").is_dir():
        return root / "cifar-10-batches-py"
    if any((root / name).is_file() for names in CIFAR_FILES.values() for name in names):
        return root
    raise UserError(f"{str(root)!r} holds neither cifar-10-batches-py nor its batch files "
                    f"(data_batch_1..5, test_batch): {CIFAR_HINT}")


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3072) uint8 and labels (N,) int64 of one CIFAR-10 python batch file."""
    if not path.is_file():
        raise UserError(f"CIFAR-10 file {str(path)!r} is missing: the folder must hold data_batch_1..5 and "
                        f"test_batch; {CIFAR_HINT}")
    try:
        with open(path, "rb") as fh:
            batch = pickle.load(fh, encoding="bytes")
        data = np.asarray(batch[b"data"] if b"data" in batch else batch["data"])
        labels = np.asarray(batch[b"labels"] if b"labels" in batch else batch["labels"])
    except Exception as exc:  # not a pickle, not a dict, keys missing
        raise UserError(f"{str(path)!r} is not a CIFAR-10 python batch (a pickled dict with b'data' and "
                        f"b'labels'; {type(exc).__name__}: {exc}): {CIFAR_HINT}") from None
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise UserError(f"{str(path)!r}: b'data' is {data.dtype} {data.shape}, not uint8 (N, 3072): {CIFAR_HINT}")
    if labels.shape != (len(data),) or not np.issubdtype(labels.dtype, np.integer) or (
            len(labels) and (labels.min() < 0 or labels.max() > 9)):
        raise UserError(f"{str(path)!r}: b'labels' must be {len(data)} class indices in 0..9: {CIFAR_HINT}")
    return data, labels.astype(np.int64)


def cifar_inputs(data: np.ndarray) -> torch.Tensor:
    """uint8 (N, 3072) rows as float32 NCHW in [0, 1], normalized per channel."""
    mean = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
    return torch.from_numpy(data).view(-1, 3, 32, 32).float().div_(255.0).sub_(mean).div_(std)


CIFAR_ROW_BYTES = 3072 * 4 + 8  # an image and its label held in memory


CIFAR_HASH_ROWS = 1000  # images normalized at a time by the fingerprint of the first read (12 MB of float32)


def streamed_cifar(files: list[Path], name: str, pick, note: str) -> StreamedSplit:
    """A streamed CIFAR-10 split from one read of its files, one at a time: the labels (held), each
    file's number of rows, and the sha256 of the normalized inputs used (Split.fingerprint of them
    held), hashed CIFAR_HASH_ROWS at a time while each file is in memory, when the rows used are
    known before the read: all of them, or the first n (`pick.first`, set by load_dataset). A
    random subset's rows depend on the split's size, known only after the read: they are hashed
    by a second pass when the fingerprint is asked for (StreamedSplit.hash_inputs)."""
    first = None if pick is None else getattr(pick, "first", None)
    h = hashlib.sha256() if pick is None or first else None
    per_file, hashed = [], 0
    for f in files:
        data, labels = read_cifar_batch(f)
        per_file.append(labels)
        if h is not None:
            take = len(data) if first is None else max(0, min(len(data), first - hashed))
            for i in range(0, take, CIFAR_HASH_ROWS):
                h.update(cifar_inputs(data[i : min(i + CIFAR_HASH_ROWS, take)]).numpy().tobytes())
            hashed += take
        del data  # the next file is read after this one is let go
    labels = np.concatenate(per_file)
    rows = pick(name, len(labels)) if pick else None
    labels = labels if rows is None else labels[rows]
    content = h if h is not None and hashed == len(labels) else None
    return StreamedSplit(CifarFiles(files, [len(y) for y in per_file], read_cifar_batch, cifar_inputs), rows, 0,
                         len(labels), held_labels=torch.from_numpy(labels), content=content, note=note,
                         example_bytes=CIFAR_ROW_BYTES)


def cifar10(data_dir: str | Path | None, splits=SPLITS, pick=None, hold=hold_all) -> dict[str, Split | StreamedSplit]:
    """The named splits of CIFAR-10 from a local folder, normalized per channel (float32 NCHW);
    `pick(split, size)`: the rows to convert (sorted; None: all); `hold`: a Holding, asked with
    the size estimated from the files' sizes (3073 bytes a row). Streamed: the files are read one
    at a time, once here (the labels, held, and the fingerprint: `streamed_cifar`) and at every
    pass (core.stream.CifarFiles)."""
    folder = cifar_folder(data_dir)
    out = {}
    for name in splits:
        files = [folder / f for f in CIFAR_FILES[name]]
        estimate = sum(f.stat().st_size // 3073 for f in files if f.is_file())
        keep, note = hold(picked(pick, name, estimate) * CIFAR_ROW_BYTES, f"split {name!r} of CIFAR-10")
        if not keep:
            out[name] = streamed_cifar(files, name, pick, note)
            continue
        parts = [read_cifar_batch(folder / f) for f in CIFAR_FILES[name]]
        data, labels = np.concatenate([d for d, _ in parts]), np.concatenate([y for _, y in parts])
        rows = pick(name, len(labels)) if pick else None
        if rows is not None:
            data, labels = data[rows], labels[rows]
        out[name] = Split(cifar_inputs(data), torch.from_numpy(labels), note=note)
    return out


def is_array(t) -> bool:
    return isinstance(t, (torch.Tensor, np.ndarray))


def dataset_tensors(data, pick=None, first=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and labels of a Dataset's items (only rows `pick(len(data))`, when given), filled
    one by one into tensors shaped after the first item: no list of all items; `first`: the first
    of those items, already read."""
    rows = pick(len(data)) if pick else None
    rows = range(len(data)) if rows is None else rows.tolist()
    inputs = labels = None
    for k, i in enumerate(rows):
        x, y = first if k == 0 and first is not None else data[i]
        x = torch.as_tensor(x if isinstance(x, torch.Tensor) else np.asarray(x))
        y = torch.as_tensor(y if isinstance(y, torch.Tensor) else np.asarray(y))
        if inputs is None:
            inputs = torch.empty((len(rows), *x.shape), dtype=x.dtype, device=x.device)
            # class indices as int64; float targets stay float (never truncated: check_labels decides)
            labels = torch.empty((len(rows), *y.shape), dtype=y.dtype if y.is_floating_point() else torch.int64)
        elif x.shape != inputs.shape[1:] or x.dtype != inputs.dtype:
            raise ValueError(f"item {i} is {x.dtype} {tuple(x.shape)}, item {rows[0]} is "
                             f"{inputs.dtype} {tuple(inputs.shape[1:])}")
        inputs[k] = x
        labels[k] = y
    if inputs is None:
        return torch.empty(0), torch.empty(0, dtype=torch.int64)
    return inputs, labels


def streamed_dataset(data, source: str, pick, hold, note: str = "") -> Split | StreamedSplit:
    """A user's Dataset read by one pass (core.stream.survey: its labels, held, and the hash of its
    inputs), then at every pass through a DataLoader; held in memory when `hold` says so after all
    (an iterable Dataset, whose size only the pass tells)."""
    iterable = isinstance(data, torch.utils.data.IterableDataset)
    rows = None if iterable or not pick else pick(len(data))
    n, labels, content, per = survey(data, rows, source)
    if iterable and pick and pick(n) is not None:  # the pass hashed every item: the subset is hashed later
        rows = pick(n)
        labels, content, n = labels[torch.from_numpy(rows)], None, len(rows)
    if labels.dtype == torch.bool or labels.is_complex():
        raise UserError(f"{source}: labels must be class indices or float targets, got dtype {labels.dtype}")
    if iterable:
        keep, note = hold(n * per, source)
    split = StreamedSplit(data, rows, 0, n, held_labels=labels, content=content, note=note, example_bytes=per,
                          workers=workers_for(data))
    return split.materialize() if iterable and keep else split


def as_split(data, source: str, pick=None, hold=hold_all) -> Split | StreamedSplit:
    """A Split from a Split, an (inputs, labels) pair, or a map-style torch Dataset of (input, label);
    `pick(size)`: the rows to keep (sorted; None: all), the only items a Dataset is asked for;
    `hold`: a Holding (a Dataset that it does not hold, or an iterable one, is streamed: see
    `streamed_dataset`; tensors are held, or streamed from memory with --data_in_memory no)."""
    if isinstance(data, StreamedSplit):
        return data
    if isinstance(data, torch.utils.data.IterableDataset):
        return streamed_dataset(data, source, pick, hold)
    keep, note, first = True, "", None
    if isinstance(data, torch.utils.data.Dataset) and hold is not hold_all:  # its size from its first item
        try:
            rows = pick(len(data)) if pick else None
            size = len(data) if rows is None else len(rows)
            first = data[0 if rows is None else int(rows[0])] if size else None
            x, y = (stream_item(v) for v in first) if size else (torch.zeros(0), torch.zeros(0))
            per = x.element_size() * x.nelement() + 8 * max(1, y.nelement())
        except UserError:
            raise
        except Exception as exc:
            raise UserError(f"{source}: cannot read the Dataset as (input tensor, class index) items "
                            f"({type(exc).__name__}: {exc})") from None
        keep, note = hold(size * per, source)
        if not keep:
            return streamed_dataset(data, source, pick, hold, note)
    if isinstance(data, Split):
        inputs, labels = data.inputs, data.labels
    elif isinstance(data, (tuple, list)) and len(data) == 2 and all(is_array(t) for t in data):
        inputs, labels = (torch.as_tensor(t) for t in data)
    elif isinstance(data, torch.utils.data.Dataset):
        try:
            inputs, labels = dataset_tensors(data, pick, first)
            pick = None  # the Dataset gave the picked rows only
        except UserError:
            raise
        except Exception as exc:
            raise UserError(f"{source}: cannot read the Dataset as (input tensor, class index) items "
                            f"({type(exc).__name__}: {exc})") from None
    else:
        raise UserError(f"{source} is a {type(data).__name__}: give a torch Dataset or an (inputs, labels) "
                        "pair of tensors")
    if len(labels) == 0 or len(inputs) != len(labels):
        raise UserError(f"{source}: {len(inputs)} inputs and labels of shape {tuple(labels.shape)}: give one "
                        "label (or target) per input, at least one")
    if labels.dtype == torch.bool or labels.is_complex():
        raise UserError(f"{source}: labels must be class indices or float targets, got dtype {labels.dtype}")
    rows = pick(len(labels)) if pick else None
    if rows is not None:
        inputs, labels = inputs[torch.from_numpy(rows)], labels[torch.from_numpy(rows)]
    digest = data.digest if isinstance(data, Split) else "content"
    if hold is not hold_all and not isinstance(data, torch.utils.data.Dataset):  # tensors: already in memory
        keep, note = hold(0, source) if hold.in_memory == "no" else (True, data.note if isinstance(data, Split) else "")
    if not keep:  # --data_in_memory no: the streamed path, from memory
        return StreamedSplit(ArrayRows((inputs, labels), lambda x, y: (x, y)), None, 0, len(labels),
                             held_labels=labels, digest=digest, note=note,
                             example_bytes=Split(inputs, labels).nbytes // len(labels))
    return Split(inputs, labels, digest, note)  # floating targets stay floating: check_labels converts class indices


def stream_item(v) -> torch.Tensor:
    return torch.as_tensor(v if isinstance(v, torch.Tensor) else np.asarray(v))


def as_splits(data, hold=hold_all) -> dict[str, Split | StreamedSplit]:
    """{name: Split} from {name: Split | StreamedSplit | (inputs, labels) | Dataset}, or one of those (the
    train split); `hold`: a Holding (see `as_split`)."""
    if not isinstance(data, dict):
        data = {"train": data}
    return {name: as_split(d, f"data for split {name!r}", hold=hold) for name, d in data.items()}


SUBSET_SEED = 0  # a random subset is drawn with numpy RandomState(SUBSET_SEED)


def subset_rows(size: int, n: int, mode: str = "first", name: str = "train", flag: str = "--subset"):
    """The rows (sorted) of `subset` in a split of `size` examples; None for the whole split."""
    if n < 0:
        raise UserError(f"{flag} {n} must be >= 0 (0: the whole {name} split)")
    if n > size:
        raise UserError(f"{flag} {n} is larger than split {name!r} ({size} examples): choose at most "
                        f"{size}, or 0 for the whole split")
    if n in (0, size):
        return None
    return np.arange(n) if mode == "first" else np.sort(np.random.RandomState(SUBSET_SEED).permutation(size)[:n])


def subset(split: Split, n: int, mode: str = "first", name: str = "train", flag: str = "--subset") -> Split:
    """The first n examples (a view), or n drawn without replacement with numpy seed SUBSET_SEED
    (kept in their order); n = 0 or the whole size: the split itself. Of a streamed split: those
    examples read into memory (a Hessian subset, a BN calibration split)."""
    rows = subset_rows(len(split), n, mode, name, flag)
    if rows is None:
        return split
    if isinstance(split, StreamedSplit):
        return Split(*split.take(split.lo + rows), split.digest)
    if mode == "first":
        return Split(split.inputs[:n], split.labels[:n])
    index = torch.from_numpy(rows)
    return Split(split.inputs[index], split.labels[index])


def from_factory(path: str, splits=None, pick=None, hold=hold_all) -> dict[str, Split | StreamedSplit]:
    """The named splits (default: all) that the user's `package.module:factory` returns: a torch
    Dataset or an (inputs, labels) pair of tensors (the train split), a (train, test) pair of
    those, or a dict {'train': ..., 'test': ...} of those; `pick(split, size)`: the rows to keep."""
    obj = resolve(path, "--dataset")()
    source = f"--dataset {path!r}"
    if isinstance(obj, dict):
        unknown = [k for k in obj if k not in SPLITS]
        if unknown:
            raise UserError(f"{source} returned a dict with keys {unknown}: use 'train' and 'test'")
        parts = obj
    elif isinstance(obj, (Split, torch.utils.data.Dataset)) or (isinstance(obj, (tuple, list)) and len(obj) == 2
                                                                and all(is_array(t) for t in obj)):
        parts = {"train": obj}
    elif isinstance(obj, (tuple, list)) and len(obj) == 2:
        parts = {"train": obj[0], "test": obj[1]}
    else:
        raise UserError(f"{source} returned a {type(obj).__name__}: return a torch Dataset, an (inputs, labels) "
                        "pair of tensors, or a (train, test) pair or {'train': ..., 'test': ...} dict of those")
    splits = list(parts) if splits is None else splits
    for s in splits:
        if s not in parts:
            raise UserError(f"dataset {path!r} has no {s!r} split (it has {', '.join(parts)}): "
                            f"choose --splits {','.join(parts)}")
    return {s: as_split(parts[s], f"{source} split {s!r}", pick and functools.partial(pick, s), hold) for s in splits}


TOKENS_PREFIX, TEXT_PREFIX, HFDATA_PREFIX = "tokens:", "text:", "hfdata:"
TOKEN_SOURCES = (TOKENS_PREFIX, TEXT_PREFIX, HFDATA_PREFIX)  # datasets cut into blocks of --seq_len
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")  # what save_pretrained of a tokenizer writes


def token_file(train: Path, split: str, prefix: str = TOKENS_PREFIX) -> Path:
    """The file of `split`: `train` itself; for `test`, `train` with 'train' replaced by 'val',
    else by 'test', in its file name (the first that exists)."""
    if split == "train":
        return train
    for other in ("val", "test"):
        candidate = train.with_name(train.name.replace("train", other))
        if "train" in train.name and candidate.is_file():
            return candidate
    raise UserError(f"--dataset {prefix}{train} has no test split (no {train.name.replace('train', 'val')!r} or "
                    f"{train.name.replace('train', 'test')!r} next to it; the train file's name must contain "
                    "'train'): use --splits train")


def block_count(length: int, seq_len: int, what: str) -> int:
    """How many whole blocks of `seq_len` a stream of `length` tokens holds (at least one)."""
    if length // seq_len == 0:
        raise UserError(f"--seq_len {seq_len} is longer than {what} ({length} tokens): choose at most {length}")
    return length // seq_len


def blocks_split(blocks, note: str = "") -> Split:
    """inputs = labels = the blocks' ids as int64."""
    ids = torch.from_numpy(np.asarray(blocks, dtype=np.int64))
    return Split(ids, ids, "blocks", note)


def file_blocks(file: Path, dtype, seq_len: int, name: str, pick, what: str, hold=hold_all) -> Split | StreamedSplit:
    """The blocks `pick(name, n)` of a flat file of `dtype` ids: only the byte range from the
    first to the last block used is mapped (np.memmap), only the blocks used are read; streamed
    (core.stream.TokenBlocks) when `hold` does not hold them."""
    n = block_count(file.stat().st_size // dtype.itemsize, seq_len, what)
    rows = pick(name, n) if pick else None
    used = n if rows is None else len(rows)
    keep, note = hold(used * seq_len * 8, what)
    if not keep:
        return StreamedSplit(TokenBlocks(file, dtype, seq_len, n), rows, 0, used, digest="blocks", note=note,
                             example_bytes=seq_len * 8)
    lo, hi = (0, n) if rows is None else (int(rows[0]), int(rows[-1]) + 1)
    mapped = np.memmap(file, dtype=dtype, mode="r", offset=lo * seq_len * dtype.itemsize, shape=(hi - lo, seq_len))
    split = blocks_split(mapped if rows is None else mapped[rows - lo], note)
    del mapped
    return split


TO_TOKEN_FILE = ("write them to a flat token file (np.array(ids, dtype=np.uint16).tofile(PATH)) and use "
                 "--dataset tokens:PATH to stream them")


def check_whole_ids(hold, bound: int, what: str) -> None:
    """Before the ids of `what` are made whole in memory (tokenized text, a `datasets` column: they
    cannot be streamed), a one-line UserError when `hold` (a Holding) would not hold `bound` bytes
    of them: --data_in_memory no, or more than it holds (auto: half of what this rank may use)."""
    if hold is hold_all:
        return
    if hold.in_memory == "no":
        raise UserError(f"--data_in_memory no: the ids of {what} are made whole in memory (tokenized, or "
                        f"concatenated from the datasets column): {TO_TOKEN_FILE}")
    left = hold.memory - hold.used
    room = left if hold.in_memory == "yes" else left // 2
    if bound > room:
        raise UserError(f"the ids of {what} are made whole in memory (tokenized, or concatenated from the datasets "
                        f"column) and may take {gib(bound)}, more than {'the' if hold.in_memory == 'yes' else 'half of the'} "
                        f"{gib(left)} this rank may use: {TO_TOKEN_FILE}, or run fewer ranks per node")


def stream_blocks(ids: np.ndarray, seq_len: int, name: str, pick, what: str, hold=hold_all) -> Split:
    """The blocks `pick(name, n)` of a token stream held in memory (the tokenizer's or the `datasets`
    column's ids, made whole: held, after `check_whole_ids` let them be made)."""
    n = block_count(len(ids), seq_len, what)
    rows = pick(name, n) if pick else None
    blocks = ids[: n * seq_len].reshape(n, seq_len)
    used = n if rows is None else len(rows)
    note = ""
    if hold is not hold_all:
        hold.used += used * seq_len * 8
        note = f"held in memory ({gib(used * seq_len * 8)}; its ids are made whole in memory)"
    return blocks_split(blocks if rows is None else blocks[rows], note)


def need_seq_len(source: str, seq_len: int) -> None:
    if seq_len < 1:
        raise UserError(f"--dataset {source} needs --seq_len N, the tokens per block (e.g. 256)")


def tokens(path: str, seq_len: int, splits=SPLITS, pick=None, hold=hold_all) -> dict[str, Split | StreamedSplit]:
    """Blocks of `seq_len` token ids of a flat token file (see the module's docstring); `pick(split,
    size)`: the blocks to read (sorted; None: all)."""
    train = Path(path)
    need_seq_len(TOKENS_PREFIX + path, seq_len)
    out = {}
    for name in splits:
        file = token_file(train, name)
        if not file.is_file():
            raise UserError(f"token file {str(file)!r} does not exist: check --dataset tokens:PATH")
        dtype = np.dtype(np.uint32 if file.name.endswith(".u32.bin") else np.uint16)
        size = file.stat().st_size
        if size == 0 or size % dtype.itemsize:
            raise UserError(f"token file {str(file)!r} is {'empty' if size == 0 else f'{size} bytes, not whole {dtype} ids'}: "
                            "write the ids with np.array(ids, dtype=np.uint16).tofile(path) (uint32: name it *.u32.bin)")
        out[name] = file_blocks(file, dtype, seq_len, name, pick, f"token file {str(file)!r}", hold)
    return out


def model_tokenizer(model: str | None, choice: str = "auto"):
    """The tokenizer saved in the folder of `--model hf:FOLDER` (AutoTokenizer, offline), or None
    for bytes: with `choice` 'bytes', another model, or no tokenizer files in the folder."""
    if choice == "bytes" or not model or not model.startswith("hf:"):
        return None
    folder = Path(model[len("hf:"):])
    if not any((folder / f).is_file() for f in TOKENIZER_FILES):
        return None
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise UserError("the tokenizer of --model hf:... needs the transformers package: pip install transformers, "
                        "or use --tokenizer bytes") from None
    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception as exc:
        raise UserError(f"cannot load the tokenizer saved in {str(folder)!r} ({type(exc).__name__}: {exc}): save it "
                        "again with tokenizer.save_pretrained, or use --tokenizer bytes") from None


def encode(texts: list[str], tokenizer) -> np.ndarray:
    """The ids of `texts`, one after another: the tokenizer's (no special tokens), or the UTF-8 bytes."""
    if tokenizer is None:
        return np.frombuffer(b"".join(t.encode("utf-8") for t in texts), dtype=np.uint8).astype(np.int64)
    rows = tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"] if texts else []
    return np.fromiter((i for row in rows for i in row), dtype=np.int64)


def text(path: str, seq_len: int, splits=SPLITS, pick=None, tokenizer=None,
         hold=hold_all) -> dict[str, Split | StreamedSplit]:
    """Blocks of `seq_len` ids of a UTF-8 text file: its bytes (read through a memory map, only the
    blocks used) when `tokenizer` is None, else the tokenizer's ids of the whole text."""
    train = Path(path)
    need_seq_len(TEXT_PREFIX + path, seq_len)
    out = {}
    for name in splits:
        file = token_file(train, name, TEXT_PREFIX)
        if not file.is_file():
            raise UserError(f"text file {str(file)!r} does not exist: check --dataset text:PATH")
        if file.stat().st_size == 0:
            raise UserError(f"text file {str(file)!r} is empty: give a UTF-8 text file of at least --seq_len tokens")
        what = f"text file {str(file)!r}"
        if tokenizer is None:
            out[name] = file_blocks(file, np.dtype(np.uint8), seq_len, name, pick, what, hold)
            continue
        check_whole_ids(hold, 8 * file.stat().st_size, what + " tokenized")  # at most one int64 id a byte
        try:
            content = file.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise UserError(f"{what} is not UTF-8 ({exc.reason} at byte {exc.start}): convert it to UTF-8, "
                            "or read its bytes with --tokenizer bytes") from None
        out[name] = stream_blocks(encode([content], tokenizer), seq_len, name, pick, what + " tokenized", hold)
    return out


def hf_splits(folder: Path):
    """{'train': Dataset, 'test': Dataset (when there)} of a folder written by `save_to_disk`."""
    try:
        import datasets
    except ImportError:
        raise UserError("--dataset hfdata:FOLDER needs the datasets package: pip install datasets") from None
    if not folder.is_dir():
        raise UserError(f"datasets folder {str(folder)!r} does not exist: give a folder written by "
                        "Dataset.save_to_disk or DatasetDict.save_to_disk")
    try:
        saved = datasets.load_from_disk(str(folder))
    except Exception as exc:
        raise UserError(f"{str(folder)!r} is not a folder written by save_to_disk ({type(exc).__name__}: {exc}): "
                        "save it with Dataset.save_to_disk or DatasetDict.save_to_disk") from None
    if isinstance(saved, datasets.Dataset):
        return {"train": saved}
    if "train" not in saved:
        raise UserError(f"datasets folder {str(folder)!r} has splits {', '.join(saved)} but no 'train': name the "
                        "split to evaluate 'train' (and 'validation' or 'test' for --splits train,test)")
    test = next((saved[k] for k in ("validation", "test") if k in saved), None)
    return {"train": saved["train"], **({"test": test} if test is not None else {})}


def dataset_id_bound(data) -> int:
    """At most how many ids `dataset_ids` makes of a datasets.Dataset, from its Arrow columns without
    converting them: its `input_ids` values, else the bytes of its `text` column (at most one id a
    byte); 0 when neither column is there as expected (`dataset_ids` then says what is wrong)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    table = data.with_format("arrow")[:]
    try:
        if "input_ids" in data.column_names:
            return sum(len(chunk.flatten()) for chunk in table.column("input_ids").chunks)
        if "text" in data.column_names:
            return int(pc.sum(pc.binary_length(table.column("text"))).as_py() or 0)
    except (pa.ArrowException, AttributeError, TypeError):
        pass
    return 0


def dataset_ids(data, what: str, tokenizer) -> np.ndarray:
    """The ids of a datasets.Dataset's rows, in row order: its `input_ids` column (lists of ids), or
    its `text` column, each row encoded with `tokenizer()` (see `encode`)."""
    import pyarrow as pa

    table = data.with_format("arrow")[:]
    if "input_ids" in data.column_names:
        column = table.column("input_ids")
        if not (pa.types.is_list(column.type) or pa.types.is_large_list(column.type)
                or pa.types.is_fixed_size_list(column.type)) or not pa.types.is_integer(column.type.value_type):
            raise UserError(f"{what}: column 'input_ids' is {column.type}, not lists of integer token ids")
        parts = [chunk.flatten().to_numpy(zero_copy_only=False) for chunk in column.chunks]
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)
    if "text" in data.column_names:
        column = table.column("text")
        if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
            raise UserError(f"{what}: column 'text' is {column.type}, not strings")
        return encode([t for t in column.to_pylist() if t], tokenizer())
    raise UserError(f"{what} has columns {', '.join(data.column_names)}: give an 'input_ids' column (lists of token "
                    "ids) or a 'text' column")


def hfdata(path: str, seq_len: int, splits=SPLITS, pick=None, tokenizer=lambda: None, hold=hold_all) -> dict[str, Split]:
    """Blocks of `seq_len` ids of a saved Hugging Face dataset (see the module's docstring);
    `tokenizer()`: the tokenizer for a `text` column, or None for bytes (called only for one)."""
    folder = Path(path)
    need_seq_len(HFDATA_PREFIX + path, seq_len)
    parts = hf_splits(folder)
    out = {}
    for name in splits:
        if name not in parts:
            raise UserError(f"datasets folder {str(folder)!r} has no test split (a DatasetDict with 'validation' or "
                            "'test'): use --splits train")
        what = f"split {name!r} of datasets folder {str(folder)!r}"
        check_whole_ids(hold, 8 * dataset_id_bound(parts[name]), what)
        out[name] = stream_blocks(dataset_ids(parts[name], what, tokenizer), seq_len, name, pick, what, hold)
    return out


def check_tokens(split: Split | StreamedSplit, vocab: int, context: int | None, name: str) -> None:
    """Token ids (batch, T) in 0..vocab-1 (labels may also be −100: not predicted), T ≤ `context`;
    of a streamed split from its first example and one pass over its ids (none when the file's id
    type cannot hold an id ≥ vocab)."""
    ids = split.head(1).inputs if isinstance(split, StreamedSplit) else split.inputs
    if ids.dim() != 2 or ids.is_floating_point():
        raise UserError(f"split {name!r} has inputs {ids.dtype} {tuple(ids.shape)}: --task causal_lm takes token "
                        "ids (examples, seq_len), e.g. --dataset tokens:PATH --seq_len N")
    if context is not None and ids.shape[1] > context:
        raise UserError(f"--seq_len {ids.shape[1]} is longer than the model's context ({context} positions, "
                        f"config.max_position_embeddings): choose --seq_len {context} or less")
    if isinstance(split, StreamedSplit):
        source = split.source
        if not isinstance(source, TokenBlocks):
            ranges = [(int(t.min()), int(t.max())) for x, y in split.batches(4096, "cpu")
                      for t in (x, y[y != -100]) if t.numel()]
            lo, hi = min(a for a, _ in ranges), max(b for _, b in ranges)
        elif 1 << (8 * source.dtype.itemsize) <= vocab:
            return
        else:
            lo, hi = split.id_range()
        if lo < 0 or hi >= vocab:
            raise UserError(f"split {name!r} has token ids in [{lo}, {hi}] but the model's vocabulary has {vocab} "
                            "tokens: use the tokenizer of this model")
        return
    labels = split.labels[split.labels != -100]
    for what, t in (("token ids", ids), ("labels", labels)):
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= vocab):
            raise UserError(f"split {name!r} has {what} in [{int(t.min())}, {int(t.max())}] but the model's vocabulary "
                            f"has {vocab} tokens: use the tokenizer of this model")


def load_dataset(name: str, *, data_dir: str | Path | None = None, splits=SPLITS, subset: tuple[int, str] | None = None,
                 flag: str = "--subset", seq_len: int = 0, model: str | None = None,
                 tokenizer: str = "auto", in_memory: str | None = None, ranks: int = 1,
                 memory: int | None = None) -> dict[str, Split | StreamedSplit]:
    """The named splits of dataset `name` (a name of DATASETS, `tokens:PATH`, `text:PATH` or
    `hfdata:FOLDER` cut into blocks of `seq_len` tokens, or `package.module:factory`).
    `subset` (n, mode): only the examples that `subset(split, n, mode)` keeps are converted (a
    Dataset is asked for those items only); `flag` names n in messages. Text is tokenized with the
    tokenizer saved in the folder of `model` (`hf:FOLDER`) unless `tokenizer` is 'bytes' (see
    `model_tokenizer`). `in_memory` (`--data_in_memory`: yes, no, auto; None: every split held,
    unchecked): which splits are held in memory, the others streamed (see `Holding`; `ranks`: the
    ranks of this node, `memory`: the bytes this rank may use, default the node's available memory
    shared among them)."""
    splits = list(splits)
    hold = hold_all if in_memory is None else Holding(in_memory, ranks, memory)
    pick = None
    if subset and subset[0]:
        def pick(split, size):
            return subset_rows(size, subset[0], subset[1], split, flag)

        pick.first = subset[0] if subset[1] == "first" else None  # the rows are the first n, whatever the size
    if name == "digits":
        return digits(splits, pick, hold)
    if name == "cifar10":
        return cifar10(data_dir, splits, pick, hold)
    if name.startswith(TOKENS_PREFIX):
        return tokens(name[len(TOKENS_PREFIX):], seq_len, splits, pick, hold)
    if name.startswith(TEXT_PREFIX):
        return text(name[len(TEXT_PREFIX):], seq_len, splits, pick, model_tokenizer(model, tokenizer), hold)
    if name.startswith(HFDATA_PREFIX):
        return hfdata(name[len(HFDATA_PREFIX):], seq_len, splits, pick,
                      functools.cache(lambda: model_tokenizer(model, tokenizer)), hold)
    if is_import_path(name):
        return from_factory(name, splits, pick, hold)
    raise UserError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}, {', '.join(p + 'PATH' for p in TOKEN_SOURCES)}, "
                    "or give your own as package.module:factory")


def check_labels(split: Split | StreamedSplit, num_classes: int, name: str) -> Split | StreamedSplit:
    """The split with class indices (int64) in 0..num_classes-1, as the built-in losses take them;
    float labels are accepted only when they are whole numbers (never truncated). A streamed
    split's labels are held (read once when it was made), except token blocks'."""
    labels = split.labels
    if labels is None:  # streamed token blocks: their own labels
        labels = split.head(1).labels
    if labels.dim() != 1:
        raise UserError(f"split {name!r} has labels of shape {tuple(labels.shape)}: the built-in losses take one "
                        "class index per example; use your own --loss_name for other targets")
    if labels.is_floating_point():
        if not torch.equal(labels, labels.round()):
            raise UserError(f"split {name!r} has fractional labels: the built-in losses take class indices; use "
                            "your own --loss_name (package.module:function) for regression targets")
        labels = labels.long()
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= num_classes:
        raise UserError(
            f"split {name!r} has labels in [{lo}, {hi}] but the model has {num_classes} outputs: "
            "use a model with as many outputs as classes"
        )
    return split.with_labels(labels.long())


def accepted_fingerprint(split: Split | StreamedSplit, stored: str | None) -> str:
    """The split's fingerprint, or `stored` when that is the fingerprint token data had before
    issue 17 (sha256 of every id, twice: inputs and labels) and a full read of the split confirms
    it: a surface file of token data written then still resumes (checked by one full read at
    every resume of it)."""
    mine = split.fingerprint()
    if stored and stored != mine and split.digest == "blocks" and split.content_fingerprint() == stored:
        return stored
    return mine
