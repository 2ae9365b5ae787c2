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


def summed_squared_error(outputs, targets):
    """A regression loss for float targets: Σ (f(x) − y)² over the batch (single output)."""
    return (outputs.squeeze(-1) - targets).pow(2).sum()


class FailsMidRun(torch.nn.Module):
    """Fails on MPI rank FAIL_RANK (environment) from its FAIL_AFTER-th forward pass on: a rank that
    dies in the middle of a run."""

    def __init__(self):
        super().__init__()
        import os

        self.fc = torch.nn.Linear(64, 10)
        self.calls = 0
        self.fail = os.environ.get("OMPI_COMM_WORLD_RANK") == os.environ.get("FAIL_RANK", "none")
        self.after = int(os.environ.get("FAIL_AFTER", "0"))

    def forward(self, x):
        self.calls += 1
        if self.fail and self.calls > self.after:
            raise RuntimeError("injected failure")
        return self.fc(x.flatten(1))


def fails_mid_run():
    torch.manual_seed(0)
    return FailsMidRun()


class SlowNet(torch.nn.Module):
    """A linear model that takes PAUSE seconds per forward pass and writes its rank's pid to
    PID_DIR/rank<r>.pid, so a test can signal one rank."""

    def __init__(self):
        super().__init__()
        import os

        self.fc = torch.nn.Linear(64, 10)
        self.pause = float(os.environ.get("PAUSE", "0.1"))
        folder = os.environ.get("PID_DIR")
        if folder:
            with open(os.path.join(folder, f"rank{os.environ.get('OMPI_COMM_WORLD_RANK', '0')}.pid"), "w") as f:
                f.write(str(os.getpid()))

    def forward(self, x):
        import time

        time.sleep(self.pause)
        return self.fc(x.flatten(1))


def slow_net():
    torch.manual_seed(0)
    return SlowNet()


def hangs_on_rank_one():
    """A factory that never returns on MPI rank 1 (a file system that hangs on one node)."""
    import os
    import time

    if os.environ.get("OMPI_COMM_WORLD_RANK") == "1":
        time.sleep(3600)
    return slow_net()


def wide_net():
    """2.2 million parameters on 8×8 digits: a Lanczos basis of 10⁵ vectors would take terabytes."""
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 30000), torch.nn.ReLU(),
                               torch.nn.Linear(30000, 10))


def regressor():
    """One output per example: a regression model."""
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))


def regression_data():
    """y = sin(x₀) + x₁/2 with float targets: (train, test)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 6, generator=g)
    y = torch.sin(x[:, 0]) + x[:, 1] / 2
    return (x[:240], y[:240]), (x[240:], y[240:])
