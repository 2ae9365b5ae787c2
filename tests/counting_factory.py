"""A user's dataset that records what is read of it, as `--dataset counting_factory:data` (tests only)."""
import torch
from torch.utils.data import Dataset

CALLS = {"data": 0}  # factory calls
READS = []  # (split, index) of every item read


class Counted(Dataset):
    """n points in 6-D (6 features, as custom_factory:tiny_net takes), labels 0, 1, 2 in turn."""

    def __init__(self, name: str, n: int, seed: int):
        self.name = name
        self.x = torch.randn(n, 6, generator=torch.Generator().manual_seed(seed))
        self.y = torch.arange(n) % 3

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        READS.append((self.name, i))
        return self.x[i], self.y[i]


def data():
    CALLS["data"] += 1
    return {"train": Counted("train", 40, 1), "test": Counted("test", 20, 2)}


def reset():
    CALLS["data"] = 0
    READS.clear()
