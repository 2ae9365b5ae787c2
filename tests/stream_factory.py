"""Models and Datasets for the streaming tests (issue 17), as `--model stream_factory:...` and
`--dataset stream_factory:...`."""
from __future__ import annotations

import torch
from torch.utils.data import Dataset, IterableDataset

from landscape.core.data import digits_arrays

VOCAB = 8  # token ids of the big-file tests are 0..7


def bigram():
    """A causal LM of VOCAB tokens as cheap as they come: logits = an embedding of the current token."""
    torch.manual_seed(0)
    return torch.nn.Embedding(VOCAB, VOCAB)


class Digits(Dataset):
    """The 1797 digits as a user's map-style Dataset of (numpy image, python int) items."""

    def __init__(self, lo: int, hi: int):
        pixels, target = digits_arrays()
        self.x, self.y = (pixels[lo:hi, None] / 16.0).astype("float32"), target[lo:hi]

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


class DigitsStream(IterableDataset):
    """The same items as an iterable Dataset (no length, no indexing)."""

    def __init__(self, lo: int, hi: int):
        self.data = Digits(lo, hi)

    def __iter__(self):
        return (self.data[i] for i in range(len(self.data)))


def digits_dataset():
    return {"train": Digits(0, 1400), "test": Digits(1400, 1797)}


def digits_stream():
    return {"train": DigitsStream(0, 1400), "test": DigitsStream(1400, 1797)}
