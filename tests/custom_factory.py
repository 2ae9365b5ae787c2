"""A user's own model, data and loss, as `--model custom_factory:tiny_net` etc. (tests only)."""
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset


class TinyNet(nn.Module):
    """6 features -> 3 classes, with batch norm (so states differ from weights)."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))

    def forward(self, x):
        return self.body(x)


def tiny_net():
    return TinyNet()


def blobs(n: int, seed: int):
    """n points of 3 Gaussian clusters in 6-D (fixed centers), labels 0, 1, 2 in turn."""
    centers = 3 * torch.randn(3, 6, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(n) % 3
    return centers[labels] + torch.randn(n, 6, generator=torch.Generator().manual_seed(seed)), labels


def tiny_data():
    """A dict of splits: train as (inputs, labels) tensors, test as a Dataset."""
    return {"train": blobs(30, 1), "test": TensorDataset(*blobs(15, 2))}


def tiny_pair():
    """A (train, test) pair of Datasets."""
    return TensorDataset(*blobs(12, 1)), TensorDataset(*blobs(6, 2))


def tiny_dataset():
    """One Dataset: the train split only."""
    return TensorDataset(*blobs(9, 1))


def summed_hinge(logits, labels):
    """The contract: (logits, labels) -> the loss summed over the batch (a 0-dim tensor)."""
    return F.multi_margin_loss(logits, labels, reduction="sum")


def mean_ce(logits, labels):
    """Breaks the contract: a mean, not a sum."""
    return F.cross_entropy(logits, labels)


def per_sample_ce(logits, labels):
    """Breaks the contract: one loss per sample, not their sum."""
    return F.cross_entropy(logits, labels, reduction="none")


def not_a_model():
    return "resnet"


def not_data():
    return 42


def wide_labels():
    """Labels up to 7 for a 3-class model."""
    x, y = blobs(12, 1)
    return x, y + 5


class NoisyNet(torch.nn.Module):
    """Dropout applied regardless of eval mode: a model the determinism check must refuse."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(torch.nn.functional.dropout(x.flatten(1), 0.5, training=True))


def noisy_model():
    return NoisyNet()


def broken_on_rank_one():
    """A model factory that fails on MPI rank 1 only (a file missing on one node, say)."""
    import os

    ok = os.environ.get("OMPI_COMM_WORLD_RANK") != "1"
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)) if ok else None


class HungryFarOut(torch.nn.Module):
    """Asks for 40 TB once its weights are far from where they started (out of memory mid-run)."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(64, 10)
        self.start = self.fc.weight.detach().clone()

    def forward(self, x):
        if (self.fc.weight - self.start).norm() > 0.6 * self.start.norm():
            torch.empty(10**13)
        return self.fc(x.flatten(1))


def hungry_far_out():
    return HungryFarOut()
