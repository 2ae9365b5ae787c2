"""A split held in memory: inputs and labels tensors (core.stream.StreamedSplit is the streamed
one with the same interface; core.data makes both)."""
from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import UserError
from .device import free_memory

SAMPLED_BLOCKS = 256  # blocks hashed by the fingerprint of token data (see `blocks_fingerprint`)


def blocks_fingerprint(n: int, seq_len: int, read) -> str:
    """The fingerprint of token data: sha256 of the number of blocks, `seq_len`, and the int64 ids
    of up to SAMPLED_BLOCKS blocks evenly spaced from the first to the last (`read(positions)`,
    positions into the split). A change in a block not sampled goes unseen; the number of blocks,
    the file's length and every sampled block are covered; the same blocks from any source (a
    token file, text, a `datasets` folder; held or streamed) give the same fingerprint."""
    positions = np.unique(np.linspace(0, n - 1, min(n, SAMPLED_BLOCKS)).round().astype(np.int64))
    h = hashlib.sha256(b"token blocks v1")
    h.update(np.array([n, seq_len], dtype=np.int64).tobytes())
    h.update(np.ascontiguousarray(np.asarray(read(positions), dtype=np.int64)).tobytes())
    return h.hexdigest()[:16]


@dataclass(frozen=True, eq=False)
class Split:
    """Inputs and integer labels of one split, held in memory (see core.stream.StreamedSplit for
    one read from disk at every pass: the same interface)."""

    inputs: torch.Tensor
    labels: torch.Tensor
    digest: str = "content"  # "content": the fingerprint hashes every byte; "blocks": token data (sampled)
    note: str = ""  # how the split came to be held, for the caller to show

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def nbytes(self) -> int:
        tensors = (self.inputs,) if self.labels is self.inputs else (self.inputs, self.labels)
        return sum(t.element_size() * t.nelement() for t in tensors)

    def head(self, n: int) -> Split:
        """The first n examples (a view)."""
        return Split(self.inputs[:n], self.labels[:n], self.digest)

    def with_labels(self, labels: torch.Tensor) -> Split:
        return dataclasses.replace(self, labels=labels)

    def to(self, device, memory_format=torch.contiguous_format) -> Split:
        """On `device`; 4-D inputs in `memory_format` (channels_last for faster convolutions)."""
        inputs = self.inputs.to(device)
        if inputs.dim() == 4:
            inputs = inputs.contiguous(memory_format=memory_format)
        return dataclasses.replace(self, inputs=inputs, labels=inputs if self.labels is self.inputs else
                                   self.labels.to(device))

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
            host = dataclasses.replace(host, inputs=host.inputs.pin_memory(), labels=host.labels.pin_memory())
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
        return Split(self.inputs[lo:hi], self.labels[lo:hi], self.digest)

    def cast(self, dtype: torch.dtype) -> Split:
        """Floating-point inputs in `dtype` (a bf16/fp16 model's); integer inputs (token ids) as they are."""
        if not self.inputs.is_floating_point() or self.inputs.dtype == dtype:
            return self
        return dataclasses.replace(self, inputs=self.inputs.to(dtype))

    def batches(self, size: int, device=None):
        """(inputs, labels) of `size` examples at a time, on `device`: slices when the split is
        held there, asynchronous copies from pinned host memory when not."""
        for i in range(0, len(self), size):
            xb, yb = self.inputs[i : i + size], self.labels[i : i + size]
            if device is not None and xb.device != device:
                xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            yield xb, yb

    def fingerprint(self) -> str:
        """sha256 of every input then every label; for token data ("blocks") of the number of blocks
        and sampled blocks (`blocks_fingerprint`), as a streamed split of them has."""
        if self.digest == "blocks":
            return blocks_fingerprint(len(self), self.inputs.shape[1], lambda p: self.inputs[torch.from_numpy(p)])
        return self.content_fingerprint()

    def content_fingerprint(self) -> str:
        """sha256 of every input then every label (the fingerprint of every split before issue 17)."""
        h = hashlib.sha256()
        for t in (self.inputs, self.labels):
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]
