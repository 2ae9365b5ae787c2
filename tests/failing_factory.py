"""A digits CNN (`cnn`) and an MLP without batch norm (`mlp`: its forward is never traced away by BN
folding) that fail on one MPI rank after a number of forward passes, when the environment asks
for it (LANDSCAPE_TEST_FAIL="rank:calls"): the same code with and without the failure, so a resume
after the failure is the same job (tests only)."""
import os

from torch import nn

from landscape.core.models import DigitsCNN


class FailingCNN(DigitsCNN):
    calls = 0

    def forward(self, x):
        rank, _, after = os.environ.get("LANDSCAPE_TEST_FAIL", "").partition(":")
        if rank:
            from mpi4py import MPI

            FailingCNN.calls += 1
            if MPI.COMM_WORLD.rank == int(rank) and FailingCNN.calls > int(after):
                raise RuntimeError(f"injected failure on rank {rank}")
        return super().forward(x)


def cnn():
    return FailingCNN()


class FailingMLP(nn.Module):
    """The same failure (LANDSCAPE_TEST_FAIL) in a model without batch norm: nothing to fold or trace
    (core.fold), so its forward runs as written at every batch."""

    calls = 0

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))

    def forward(self, x):
        rank, _, after = os.environ.get("LANDSCAPE_TEST_FAIL", "").partition(":")
        if rank:
            from mpi4py import MPI

            FailingMLP.calls += 1
            if MPI.COMM_WORLD.rank == int(rank) and FailingMLP.calls > int(after):
                raise RuntimeError(f"injected failure on rank {rank}")
        return self.body(x)


def mlp():
    return FailingMLP()
