"""Datasets: splits of (inputs, labels) tensors, held whole on the evaluation device.

Only the examples a job uses are converted (`load_dataset(..., subset=(n, mode))`); every rank
still reads its own copy (streaming the data is issue 17's).

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

The data fingerprint (Split.fingerprint) is of the blocks used: other ids (another tokenizer, file
or subset) give another one, so a resume with them is refused; the same blocks from another source
give the same one (they evaluate to the same values).

`package.module:factory`: the user's own; see `from_factory`.
"""
from __future__ import annotations

import functools
import hashlib
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from ..options import SPLITS
from .device import free_memory
from .importpath import is_import_path, resolve

DATASETS = ("digits", "cifar10")
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
CIFAR_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
CIFAR_HINT = ("download cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html "
              "and extract it into --data_dir")


@dataclass(frozen=True)
class Split:
    """Inputs and integer labels of one split."""

    inputs: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def nbytes(self) -> int:
        return sum(t.element_size() * t.nelement() for t in (self.inputs, self.labels))

    def to(self, device, memory_format=torch.contiguous_format) -> Split:
        """On `device`; 4-D inputs in `memory_format` (channels_last for faster convolutions)."""
        inputs = self.inputs.to(device)
        if inputs.dim() == 4:
            inputs = inputs.contiguous(memory_format=memory_format)
        return Split(inputs, self.labels.to(device))

    def place(self, device, memory_format=torch.contiguous_format, resident: bool | None = None,
              sharing: int = 1) -> Split:
        """Held whole on `device` when `resident` (None: when it fits in this rank's share of half
        the free memory of a GPU that `sharing` ranks use; always on a CPU); else kept on the
        host, pinned for a GPU, and copied batch by batch (see `batches`)."""
        device = torch.device(device)
        if resident is None:
            resident = device.type != "cuda" or self.nbytes * max(1, sharing) <= free_memory(device) // 2
        if resident:
            return self.to(device, memory_format)
        host = self.to("cpu", memory_format)
        if device.type == "cuda":
            host = Split(host.inputs.pin_memory(), host.labels.pin_memory())
        return host

    def shard(self, index: int, parts: int, name: str = "train") -> Split:
        """The index-th of `parts` contiguous, nearly equal shares of the examples (a rank's share of
        a point's data with --ranks_per_point); more parts than examples is a UserError."""
        n = len(self)
        if parts > n:
            raise UserError(f"--ranks_per_point {parts} is larger than split {name!r} ({n} examples): choose at most "
                            f"{n} ranks per point, or evaluate more examples")
        if parts == 1:
            return self
        lo, hi = index * n // parts, (index + 1) * n // parts
        return Split(self.inputs[lo:hi], self.labels[lo:hi])

    def cast(self, dtype: torch.dtype) -> Split:
        """Floating-point inputs in `dtype` (a bf16/fp16 model's); integer inputs (token ids) as they are."""
        if not self.inputs.is_floating_point() or self.inputs.dtype == dtype:
            return self
        return Split(self.inputs.to(dtype), self.labels)

    def batches(self, size: int, device=None):
        """(inputs, labels) of `size` examples at a time, on `device`: slices when the split is
        held there, asynchronous copies from pinned host memory when not."""
        for i in range(0, len(self), size):
            xb, yb = self.inputs[i : i + size], self.labels[i : i + size]
            if device is not None and xb.device != device:
                xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            yield xb, yb

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for t in (self.inputs, self.labels):
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]


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


def digits(splits=SPLITS, pick=None) -> dict[str, Split]:
    """The named splits; `pick(split, size)`: the rows to build (sorted; None: all)."""
    pixels, target = digits_arrays()
    order = np.random.RandomState(0).permutation(len(target))
    n_train = int(round(0.8 * len(target)))
    parts = {"train": order[:n_train], "test": order[n_train:]}
    out = {}
    for name in splits:
        idx = parts[name]
        rows = pick(name, len(idx)) if pick else None
        idx = idx if rows is None else idx[rows]
        out[name] = Split(torch.from_numpy(pixels[idx][:, None].astype(np.float32) / 16.0),
                          torch.from_numpy(target[idx].astype(np.int64)))
    return out


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


def cifar10(data_dir: str | Path | None, splits=SPLITS, pick=None) -> dict[str, Split]:
    """The named splits of CIFAR-10 from a local folder, normalized per channel (float32 NCHW);
    `pick(split, size)`: the rows to convert (sorted; None: all)."""
    folder = cifar_folder(data_dir)
    mean = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
    out = {}
    for name in splits:
        parts = [read_cifar_batch(folder / f) for f in CIFAR_FILES[name]]
        data, labels = np.concatenate([d for d, _ in parts]), np.concatenate([y for _, y in parts])
        rows = pick(name, len(labels)) if pick else None
        if rows is not None:
            data, labels = data[rows], labels[rows]
        inputs = torch.from_numpy(data).view(-1, 3, 32, 32).float().div_(255.0).sub_(mean).div_(std)
        out[name] = Split(inputs, torch.from_numpy(labels))
    return out


def is_array(t) -> bool:
    return isinstance(t, (torch.Tensor, np.ndarray))


def dataset_tensors(data, pick=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and labels of a Dataset's items (only rows `pick(len(data))`, when given), filled
    one by one into tensors shaped after the first item: no list of all items."""
    rows = pick(len(data)) if pick else None
    rows = range(len(data)) if rows is None else rows.tolist()
    inputs = labels = None
    for k, i in enumerate(rows):
        x, y = data[i]
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


def as_split(data, source: str, pick=None) -> Split:
    """A Split from a Split, an (inputs, labels) pair, or a map-style torch Dataset of (input, label);
    `pick(size)`: the rows to keep (sorted; None: all), the only items a Dataset is asked for."""
    if isinstance(data, Split):
        inputs, labels = data.inputs, data.labels
    elif isinstance(data, (tuple, list)) and len(data) == 2 and all(is_array(t) for t in data):
        inputs, labels = (torch.as_tensor(t) for t in data)
    elif isinstance(data, torch.utils.data.Dataset):
        try:
            inputs, labels = dataset_tensors(data, pick)
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
    return Split(inputs, labels)  # floating targets stay floating: check_labels converts class indices


def as_splits(data) -> dict[str, Split]:
    """{name: Split} from {name: Split | (inputs, labels) | Dataset}, or one of those (the train split)."""
    if not isinstance(data, dict):
        data = {"train": data}
    return {name: as_split(d, f"data for split {name!r}") for name, d in data.items()}


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
    (kept in their order); n = 0 or the whole size: the split itself."""
    rows = subset_rows(len(split), n, mode, name, flag)
    if rows is None:
        return split
    if mode == "first":
        return Split(split.inputs[:n], split.labels[:n])
    index = torch.from_numpy(rows)
    return Split(split.inputs[index], split.labels[index])


def from_factory(path: str, splits=None, pick=None) -> dict[str, Split]:
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
    return {s: as_split(parts[s], f"{source} split {s!r}", pick and functools.partial(pick, s)) for s in splits}


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


def blocks_split(blocks) -> Split:
    """inputs = labels = the blocks' ids as int64."""
    ids = torch.from_numpy(np.asarray(blocks, dtype=np.int64))
    return Split(ids, ids)


def file_blocks(file: Path, dtype, seq_len: int, name: str, pick, what: str) -> Split:
    """The blocks `pick(name, n)` of a flat file of `dtype` ids: only the byte range from the
    first to the last block used is mapped (np.memmap), only the blocks used are read."""
    n = block_count(file.stat().st_size // dtype.itemsize, seq_len, what)
    rows = pick(name, n) if pick else None
    lo, hi = (0, n) if rows is None else (int(rows[0]), int(rows[-1]) + 1)
    mapped = np.memmap(file, dtype=dtype, mode="r", offset=lo * seq_len * dtype.itemsize, shape=(hi - lo, seq_len))
    split = blocks_split(mapped if rows is None else mapped[rows - lo])
    del mapped
    return split


def stream_blocks(ids: np.ndarray, seq_len: int, name: str, pick, what: str) -> Split:
    """The blocks `pick(name, n)` of a token stream held in memory."""
    n = block_count(len(ids), seq_len, what)
    rows = pick(name, n) if pick else None
    blocks = ids[: n * seq_len].reshape(n, seq_len)
    return blocks_split(blocks if rows is None else blocks[rows])


def need_seq_len(source: str, seq_len: int) -> None:
    if seq_len < 1:
        raise UserError(f"--dataset {source} needs --seq_len N, the tokens per block (e.g. 256)")


def tokens(path: str, seq_len: int, splits=SPLITS, pick=None) -> dict[str, Split]:
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
        out[name] = file_blocks(file, dtype, seq_len, name, pick, f"token file {str(file)!r}")
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


def text(path: str, seq_len: int, splits=SPLITS, pick=None, tokenizer=None) -> dict[str, Split]:
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
            out[name] = file_blocks(file, np.dtype(np.uint8), seq_len, name, pick, what)
            continue
        try:
            content = file.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise UserError(f"{what} is not UTF-8 ({exc.reason} at byte {exc.start}): convert it to UTF-8, "
                            "or read its bytes with --tokenizer bytes") from None
        out[name] = stream_blocks(encode([content], tokenizer), seq_len, name, pick, what + " tokenized")
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


def hfdata(path: str, seq_len: int, splits=SPLITS, pick=None, tokenizer=lambda: None) -> dict[str, Split]:
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
        out[name] = stream_blocks(dataset_ids(parts[name], what, tokenizer), seq_len, name, pick, what)
    return out


def check_tokens(split: Split, vocab: int, context: int | None, name: str) -> None:
    """Token ids (batch, T) in 0..vocab-1 (labels may also be −100: not predicted), T ≤ `context`."""
    ids = split.inputs
    if ids.dim() != 2 or ids.is_floating_point():
        raise UserError(f"split {name!r} has inputs {ids.dtype} {tuple(ids.shape)}: --task causal_lm takes token "
                        "ids (examples, seq_len), e.g. --dataset tokens:PATH --seq_len N")
    if context is not None and ids.shape[1] > context:
        raise UserError(f"--seq_len {ids.shape[1]} is longer than the model's context ({context} positions, "
                        f"config.max_position_embeddings): choose --seq_len {context} or less")
    labels = split.labels[split.labels != -100]
    for what, t in (("token ids", ids), ("labels", labels)):
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= vocab):
            raise UserError(f"split {name!r} has {what} in [{int(t.min())}, {int(t.max())}] but the model's vocabulary "
                            f"has {vocab} tokens: use the tokenizer of this model")


def load_dataset(name: str, *, data_dir: str | Path | None = None, splits=SPLITS, subset: tuple[int, str] | None = None,
                 flag: str = "--subset", seq_len: int = 0, model: str | None = None,
                 tokenizer: str = "auto") -> dict[str, Split]:
    """The named splits of dataset `name` (a name of DATASETS, `tokens:PATH`, `text:PATH` or
    `hfdata:FOLDER` cut into blocks of `seq_len` tokens, or `package.module:factory`).
    `subset` (n, mode): only the examples that `subset(split, n, mode)` keeps are converted (a
    Dataset is asked for those items only); `flag` names n in messages. Text is tokenized with the
    tokenizer saved in the folder of `model` (`hf:FOLDER`) unless `tokenizer` is 'bytes' (see
    `model_tokenizer`)."""
    splits = list(splits)
    pick = None
    if subset and subset[0]:
        def pick(split, size):
            return subset_rows(size, subset[0], subset[1], split, flag)
    if name == "digits":
        return digits(splits, pick)
    if name == "cifar10":
        return cifar10(data_dir, splits, pick)
    if name.startswith(TOKENS_PREFIX):
        return tokens(name[len(TOKENS_PREFIX):], seq_len, splits, pick)
    if name.startswith(TEXT_PREFIX):
        return text(name[len(TEXT_PREFIX):], seq_len, splits, pick, model_tokenizer(model, tokenizer))
    if name.startswith(HFDATA_PREFIX):
        return hfdata(name[len(HFDATA_PREFIX):], seq_len, splits, pick,
                      functools.cache(lambda: model_tokenizer(model, tokenizer)))
    if is_import_path(name):
        return from_factory(name, splits, pick)
    raise UserError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}, {', '.join(p + 'PATH' for p in TOKEN_SOURCES)}, "
                    "or give your own as package.module:factory")


def check_labels(split: Split, num_classes: int, name: str) -> Split:
    """The split with class indices (int64) in 0..num_classes-1, as the built-in losses take them;
    float labels are accepted only when they are whole numbers (never truncated)."""
    labels = split.labels
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
    return Split(split.inputs, labels.long())
