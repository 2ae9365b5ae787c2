"""Streamed splits: a split read from disk batch by batch at every point, when it does not fit the
memory it may use (or with `--data_in_memory no`); see core.data for how the choice is made.

Every kind of data goes through one path: a map-style torch Dataset read through a DataLoader in
a fixed sequential order (one batch sampler over the split's examples; persistent workers,
prefetch, pinned memory when the evaluation device is a GPU), or an iterable Dataset in its own
order (no workers: each would yield the whole stream). The built-in sources are Datasets whose
`__getitems__` reads a whole batch at once:

- `TokenBlocks`: blocks of a flat token file, each batch's consecutive blocks memory-mapped
  (np.memmap with an offset), copied and unmapped: the address space and resident memory of a
  rank stay those of a batch, whatever the file's size.
- `CifarFiles`: CIFAR-10's pickled batch files, one file at a time. A pickle cannot be memory-mapped
  (and no converted copy is written anywhere): each process that reads batches (the rank, and each
  DataLoader worker) keeps the uint8 rows of the file its batch lies in, 30 MB for a file of 10000
  images (unpickled, measured with tracemalloc: a peak of 30 MB when the rows are pickled as raw
  bytes, as the python version's are; 130 MB for a file pickled again by Python 3 with protocol 2,
  whose bytes travel as latin-1 text), plus its batches in float32 (12 KB an image), not 600 MB
  of float32 for the 50000 train images.
- `ArrayRows`: rows of arrays held in memory (the bundled digits, tensors given with
  `--data_in_memory no`): the streamed path without a file, for tests and benchmarks.

A `StreamedSplit` has the interface of `core.data.Split` that the evaluators use (`place`,
`cast`, `shard`, `batches`, `fingerprint`, `nbytes`, `len`), plus `head(n)` (the first examples,
in memory) and `materialize()` (all of them, in memory: for small things). Labels of class data
are read once (when the split is made) and held: 8 bytes an example; token blocks are their own
labels and are not held.
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler

from ..errors import UserError
from .split import Split, blocks_fingerprint

SURVEY_BATCH = 256  # examples per batch of the pass that reads a user's Dataset once
CHUNK_TOKENS = 1 << 20  # tokens per read of a pass over a token file (8 MiB of int64)


def gib(n: int) -> str:
    """A size for messages: GiB from 0.25 GiB, MiB from 1 MiB, else KiB."""
    if n >= 1 << 28:
        return f"{n / (1 << 30):.2f} GiB"
    return f"{n / (1 << 20):.1f} MiB" if n >= 1 << 20 else f"{n / 1024:.1f} KiB"


def as_item_tensor(v) -> torch.Tensor:
    return torch.as_tensor(v if isinstance(v, torch.Tensor) else np.asarray(v))


def collate_items(items) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, labels) of a list of (input, label) items, converted as core.data.dataset_tensors
    converts them (class indices as int64, float targets as they are)."""
    xs, ys = zip(*((as_item_tensor(x), as_item_tensor(y)) for x, y in items))
    x, y = torch.stack(xs), torch.stack(ys)
    return x, (y if y.is_floating_point() else y.long())


def first(batch):
    """The collate of a built-in source: its `__getitems__` already returns the batch."""
    return batch


class TokenBlocks(Dataset):
    """Blocks of `seq_len` ids (int64) of a flat file of `dtype` ids; inputs = labels."""

    def __init__(self, file, dtype, seq_len: int, blocks: int):
        self.file, self.dtype, self.seq_len, self.blocks = str(file), np.dtype(dtype), int(seq_len), int(blocks)

    def __len__(self):
        return self.blocks

    def ids(self, lo: int, hi: int) -> np.ndarray:
        """Blocks lo:hi as stored (`dtype`), read through a memory map of their bytes only."""
        mapped = np.memmap(self.file, dtype=self.dtype, mode="r", offset=lo * self.seq_len * self.dtype.itemsize,
                           shape=(hi - lo, self.seq_len))
        out = np.array(mapped)
        del mapped
        return out

    def __getitems__(self, index):
        index = np.asarray(index, dtype=np.int64)
        cuts = np.flatnonzero(np.diff(index) != 1) + 1  # runs of consecutive blocks, one map each
        parts = [self.ids(int(run[0]), int(run[-1]) + 1) for run in np.split(index, cuts) if len(run)]
        ids = torch.from_numpy(np.concatenate(parts).astype(np.int64))
        return ids, ids

    def id_range(self, rows, lo: int, hi: int) -> tuple[int, int]:
        """(least, largest) id of the blocks rows[lo:hi] (None: blocks lo:hi), read CHUNK_TOKENS at a time."""
        step = max(1, CHUNK_TOKENS // self.seq_len)
        least, most = None, None
        for i in range(lo, hi, step):
            j = min(i + step, hi)
            ids = self.ids(i, j) if rows is None else self.__getitems__(rows[i:j])[0].numpy()
            a, b = int(ids.min()), int(ids.max())
            least, most = (a, b) if least is None else (min(least, a), max(most, b))
        return least, most


class CifarFiles(Dataset):
    """Rows of CIFAR-10 batch files (counts[k] rows in files[k]), normalized as core.data.cifar10."""

    def __init__(self, files, counts, read, convert):
        self.files, self.read, self.convert = list(files), read, convert
        self.starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.cached = (None, None)  # (file number, its uint8 rows): one file per process

    def __len__(self):
        return int(self.starts[-1])

    def rows_of(self, k: int) -> np.ndarray:
        if self.cached[0] != k:
            self.cached = (None, None)  # the old file is let go before the next is read
            self.cached = (k, self.read(self.files[k])[0])
        return self.cached[1]

    def __getitems__(self, index):
        index = np.asarray(index, dtype=np.int64)
        k = np.searchsorted(self.starts, index, side="right") - 1
        parts = [self.rows_of(int(f))[index[k == f] - self.starts[f]] for f in np.unique(k)]
        return self.convert(np.concatenate(parts)), None


class ArrayRows(Dataset):
    """Rows of arrays held in memory, `convert(rows)` -> (inputs, labels)."""

    def __init__(self, arrays, convert):
        self.arrays, self.convert = arrays, convert

    def __len__(self):
        return len(self.arrays[0])

    def __getitems__(self, index):
        index = np.asarray(index, dtype=np.int64)
        return self.convert(*(a[index] for a in self.arrays))


class Batches(Sampler):
    """The positions `rows[lo:hi]` (or lo:hi) in batches of `size`, in order, made as they are asked for."""

    def __init__(self, rows, lo: int, hi: int, size: int):
        self.rows, self.lo, self.hi, self.size = rows, lo, hi, size

    def __len__(self):
        return -(-(self.hi - self.lo) // self.size)

    def __iter__(self):
        for i in range(self.lo, self.hi, self.size):
            j = min(i + self.size, self.hi)
            yield (np.arange(i, j) if self.rows is None else self.rows[i:j]).tolist()


class Items(IterableDataset):
    """The items of an iterable Dataset whose positions are in `keep` (sorted; None: lo:hi)."""

    def __init__(self, data, keep, lo: int, hi: int):
        self.data, self.keep, self.lo, self.hi = data, keep, lo, hi

    def __iter__(self):
        if self.keep is None:
            yield from itertools.islice(self.data, self.lo, self.hi)
            return
        wanted = iter(self.keep[self.lo : self.hi].tolist())
        nxt = next(wanted, None)
        for i, item in enumerate(self.data):
            if nxt is None:
                return
            if i == nxt:
                yield item
                nxt = next(wanted, None)


def return_freed_buffers(threshold: int = 256 << 10) -> None:
    """Have glibc serve allocations above `threshold` bytes (batch buffers) by mmap, so that each is
    returned to the system when freed. Its default threshold rises to the largest block freed,
    after which such buffers come from the heap, which then grows with the number of batches read
    (measured: a streaming rank's peak RSS 53 -> 94 -> 242 MiB for 1, 4, 16 GiB of tokens, flat
    with a fixed threshold). Nothing where there is no glibc. The C library's symbols are looked up
    in the process itself (dlopen(NULL)): no ctypes.util.find_library, which runs ldconfig."""
    import ctypes

    try:
        ctypes.CDLL(None).mallopt(-3, int(threshold))  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


def freeze_inherited(worker_id: int) -> None:
    """A DataLoader worker's start: the Python objects it inherited from the rank at the fork are
    left out of its garbage collections (gc.freeze), which would otherwise write to each of them
    and so copy every page of the rank's Python heap into the worker, once one runs."""
    import gc

    gc.freeze()


def workers_for(source) -> int:
    """DataLoader workers: none for an iterable Dataset, else half this rank's threads (1 to 4)."""
    if isinstance(source, IterableDataset):
        return 0
    return max(1, min(4, torch.get_num_threads() // 2))


@dataclass(frozen=True, eq=False)
class StreamedSplit:
    """A split read from `source` at every pass: its examples `rows` (positions in the source,
    sorted; None: all), of which this split is `lo:hi` (a rank's share with --ranks_per_point)."""

    source: Dataset
    rows: np.ndarray | None
    lo: int
    hi: int
    held_labels: torch.Tensor | None = None  # every label of `rows` (class data), read once
    digest: str = "content"  # "content": sha256 of every byte (`content`); "blocks": token data
    content: object = None  # the sha256 of every input, in order (before the labels are added)
    note: str = ""  # how the split came to be streamed, for the caller to show
    example_bytes: int = 0  # of one example held in memory (inputs and labels)
    device: torch.device | None = None  # batches are made for (pinned when a GPU)
    dtype: torch.dtype | None = None  # floating inputs cast to
    memory_format: torch.memory_format = torch.contiguous_format
    workers: int = 1
    cache: dict = field(default_factory=dict)  # loaders by (batch size, lo, hi, pinned); pass results

    def __len__(self) -> int:
        return self.hi - self.lo

    @property
    def nbytes(self) -> int:
        """What the split would take held in memory."""
        return len(self) * self.example_bytes

    @property
    def labels(self) -> torch.Tensor | None:
        return None if self.held_labels is None else self.held_labels[self.lo : self.hi]

    @property
    def batched(self) -> bool:
        return hasattr(self.source, "__getitems__")

    def positions(self, lo: int, hi: int) -> np.ndarray:
        return np.arange(lo, hi) if self.rows is None else self.rows[lo:hi]

    def take(self, index: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """The examples at positions `index` (sorted) of the whole split (not of a shard), in memory."""
        index = np.asarray(index, dtype=np.int64)
        at = index if self.rows is None else self.rows[index]
        if self.batched:
            x, y = self.source.__getitems__(at.tolist())
        elif isinstance(self.source, IterableDataset):
            x, y = collate_items(list(Items(self.source, at, 0, len(at))))
        else:
            x, y = collate_items([self.source[i] for i in at.tolist()])
        if self.held_labels is not None:
            y = self.held_labels[torch.from_numpy(index)]
        return x, y

    def head(self, n: int):
        """The first n examples, in memory (a core.data.Split)."""
        return Split(*self.take(np.arange(self.lo, min(self.hi, self.lo + n))))

    def materialize(self):
        """Every example, in memory (a core.data.Split): for small things."""
        parts = list(self.batches(4096))
        return Split(torch.cat([x for x, _ in parts]), torch.cat([y for _, y in parts]), self.digest, self.note)

    def to(self, device, memory_format=torch.contiguous_format):
        return self.materialize().to(device, memory_format)

    def place(self, device, memory_format=torch.contiguous_format, resident=None, sharing: int = 1) -> StreamedSplit:
        """Batches made for `device` (read into pinned host memory for a GPU, copied asynchronously)."""
        return dataclasses.replace(self, device=torch.device(device), memory_format=memory_format)

    def cast(self, dtype: torch.dtype) -> StreamedSplit:
        """Floating-point inputs cast to `dtype` batch by batch (integer ones, token ids, as they are)."""
        return dataclasses.replace(self, dtype=dtype)

    def with_labels(self, labels: torch.Tensor) -> StreamedSplit:
        held = self.held_labels.clone()
        held[self.lo : self.hi] = labels
        return dataclasses.replace(self, held_labels=held.to(labels.dtype) if held.dtype != labels.dtype else held)

    def shard(self, index: int, parts: int, name: str = "train") -> StreamedSplit:
        """The index-th of `parts` contiguous, nearly equal ranges of the examples (see core.data.Split.shard)."""
        n = len(self)
        if parts > n:
            raise UserError(f"--ranks_per_point {parts} is larger than split {name!r} ({n} examples): choose at most "
                            f"{n} ranks per point, or evaluate more examples")
        if parts == 1:
            return self
        return dataclasses.replace(self, lo=self.lo + index * n // parts, hi=self.lo + (index + 1) * n // parts,
                                   content=None)  # the hash of the whole split's inputs is not the share's

    def loader(self, size: int):
        pinned = self.device is not None and self.device.type == "cuda"
        key = (size, self.lo, self.hi, pinned)
        if key not in self.cache:
            return_freed_buffers()
            if isinstance(self.source, IterableDataset):
                self.cache[key] = DataLoader(Items(self.source, self.rows, self.lo, self.hi), batch_size=size,
                                             collate_fn=collate_items, pin_memory=pinned)
            else:
                w = self.workers
                self.cache[key] = DataLoader(self.source, batch_sampler=Batches(self.rows, self.lo, self.hi, size),
                                             collate_fn=first if self.batched else collate_items, num_workers=w,
                                             persistent_workers=w > 0, prefetch_factor=2 if w else None,
                                             pin_memory=pinned, worker_init_fn=freeze_inherited if w else None)
        return self.cache[key]

    def batches(self, size: int, device=None):
        """(inputs, labels) of `size` examples at a time, in the split's order, on `device`."""
        device = self.device if device is None else torch.device(device)
        at = self.lo
        for x, y in self.loader(size):
            n = len(x)
            if self.held_labels is not None:
                y = self.held_labels[at : at + n]
            at += n
            if self.dtype is not None and x.is_floating_point() and x.dtype != self.dtype:
                x = x.to(self.dtype)
            if device is not None and x.device != device:
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if x.dim() == 4 and self.memory_format != torch.contiguous_format:
                x = x.contiguous(memory_format=self.memory_format)
            yield x, y
        if at != self.hi:
            raise UserError(f"the dataset yielded {at - self.lo} examples of {len(self)} this pass: a streamed "
                            "Dataset must give the same items at every pass")

    def fingerprint(self) -> str:
        """As core.data.Split.fingerprint of the same examples held in memory (computed from the pass
        that made the split, or from sampled blocks for token data)."""
        if self.digest == "blocks":
            return blocks_fingerprint(len(self), self.source.seq_len, lambda p: self.take(self.lo + p)[0])
        h = (self.content or self.hash_inputs()).copy()
        h.update(self.labels.contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

    def hash_inputs(self):
        """The sha256 of every input in order, from one pass (kept)."""
        key = ("content", self.lo, self.hi)
        if key not in self.cache:
            h = hashlib.sha256()
            for x, _ in self.loader(SURVEY_BATCH):
                h.update(x.contiguous().numpy().tobytes())
            self.cache[key] = h
        return self.cache[key]

    def content_fingerprint(self) -> str:
        """sha256 of every input then every label, read in full (two passes for token blocks, which
        are their own labels): core.data.Split.fingerprint of the data held in memory."""
        if self.digest != "blocks":
            return self.fingerprint()
        h = hashlib.sha256()
        step = max(1, CHUNK_TOKENS // self.source.seq_len)
        for _ in range(2):  # inputs, then labels: the same ids
            for i in range(self.lo, self.hi, step):
                h.update(self.take(np.arange(i, min(i + step, self.hi)))[0].numpy().tobytes())
        return h.hexdigest()[:16]

    def id_range(self) -> tuple[int, int]:
        """(least, largest) token id of the split, from one pass over it (kept)."""
        key = ("ids", self.lo, self.hi)
        if key not in self.cache:
            return_freed_buffers()
            self.cache[key] = self.source.id_range(self.rows, self.lo, self.hi)
        return self.cache[key]


def survey(source, rows, what: str) -> tuple[int, torch.Tensor, object, int]:
    """One pass over a user's Dataset through a DataLoader: (examples, their labels, the sha256 of
    every input in order, bytes of one example), its items checked alike; a UserError names a
    Dataset that cannot be read as (input, label) items."""
    size = len(rows) if rows is not None else (None if isinstance(source, IterableDataset) else len(source))
    probe = StreamedSplit(source, rows, 0, size if size is not None else 1 << 62, workers=workers_for(source))
    h, labels, shape, n = hashlib.sha256(), [], None, 0
    try:
        for x, y in probe.loader(SURVEY_BATCH):
            if shape is None:
                shape = (x.shape[1:], x.dtype, y.shape[1:], y.dtype)
            elif (x.shape[1:], x.dtype, y.shape[1:], y.dtype) != shape:
                raise ValueError(f"items {n}.. are {x.dtype} {tuple(x.shape[1:])}, the first are "
                                 f"{shape[1]} {tuple(shape[0])}")
            h.update(x.contiguous().numpy().tobytes())
            labels.append(y)
            n += len(x)
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"{what}: cannot read the Dataset as (input tensor, class index) items "
                        f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    finally:
        probe.cache.clear()  # its workers end
    if n == 0:
        raise UserError(f"{what}: the Dataset has no items: give at least one")
    y = torch.cat(labels)
    per = (int(np.prod(shape[0])) * shape[1].itemsize if shape[0] is not None else 0) + y[0].nelement() * y.element_size()
    return n, y, h, per
