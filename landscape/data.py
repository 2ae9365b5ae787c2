"""Datasets as tensors held whole on the evaluation device.

`digits`: the 8x8 handwritten digits bundled with scikit-learn (1797 images, 10
classes, no download). Pixels are scaled to [0, 1]; the split is fixed: a
permutation drawn with numpy seed 0, the first 1438 images (80%) for `train`,
the remaining 359 for `test`.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch

from .errors import UserError

DATASETS = ("digits",)
SPLITS = ("train", "test")


@dataclass(frozen=True)
class Split:
    """Inputs and integer labels of one split."""

    inputs: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device) -> "Split":
        return Split(self.inputs.to(device), self.labels.to(device))

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for t in (self.inputs, self.labels):
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]


def digits() -> dict[str, Split]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = bunch.images.astype(np.float32) / 16.0
    labels = bunch.target.astype(np.int64)
    order = np.random.RandomState(0).permutation(len(labels))
    n_train = int(round(0.8 * len(labels)))
    parts = {"train": order[:n_train], "test": order[n_train:]}
    return {
        name: Split(torch.from_numpy(images[idx][:, None].copy()), torch.from_numpy(labels[idx].copy()))
        for name, idx in parts.items()
    }


def load_dataset(name: str) -> dict[str, Split]:
    if name == "digits":
        return digits()
    raise UserError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}")


def check_labels(split: Split, num_classes: int, name: str) -> None:
    lo, hi = int(split.labels.min()), int(split.labels.max())
    if lo < 0 or hi >= num_classes:
        raise UserError(
            f"split {name!r} has labels in [{lo}, {hi}] but the model has {num_classes} outputs: "
            "use a model with as many outputs as classes"
        )
