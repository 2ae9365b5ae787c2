"""A digits CNN that fails on one MPI rank after a number of forward passes, when the environment asks
for it (LANDSCAPE_TEST_FAIL="rank:calls"): the same code with and without the failure, so a resume
after the failure is the same job (tests only)."""
import os

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
