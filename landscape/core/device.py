"""This rank's device and threads: one GPU per rank (local rank % GPUs) or the CPU, with the
node's cores shared among the ranks on the node."""
from __future__ import annotations

import os

import torch

from ..errors import UserError


def _ranks_on_node(comm) -> tuple[int, int]:
    """(this rank's index on its node, ranks on the node)."""
    from mpi4py import MPI

    local = comm.Split_type(MPI.COMM_TYPE_SHARED)
    rank, size = local.rank, local.size
    local.Free()
    return rank, size


def pick_device(requested: str, comm) -> torch.device:
    """cuda:(local rank % GPUs) when a GPU is there (and not `cpu`), else the CPU."""
    if requested == "cpu" or not torch.cuda.is_available():
        if requested == "cuda":
            raise UserError("--device cuda but torch sees no GPU: use --device cpu or auto")
        return torch.device("cpu")
    index = _ranks_on_node(comm)[0] % torch.cuda.device_count()
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


def set_threads(requested: int, comm) -> None:
    """`requested` torch threads, or the node's cores shared among the ranks on the node."""
    if requested <= 0:
        requested = max(1, (os.cpu_count() or 1) // _ranks_on_node(comm)[1])
    torch.set_num_threads(requested)


def ranks_per_device(comm, device: torch.device) -> int:
    """How many ranks of this node share `device` (all of them for the CPU)."""
    n = _ranks_on_node(comm)[1]
    return -(-n // torch.cuda.device_count()) if device.type == "cuda" else n
