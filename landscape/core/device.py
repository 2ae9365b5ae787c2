"""This rank's device and threads: one GPU per rank (local rank % GPUs) or the CPU, with the
node's cores shared among the ranks on the node."""
from __future__ import annotations

import os

import numpy as np
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
    """cuda:(local rank % GPUs) when a GPU is there (and not `cpu`), else the CPU. Collective:
    every rank calls it (the node's ranks are counted on all of them, GPU or not)."""
    local_rank = _ranks_on_node(comm)[0]
    if requested == "cpu" or not torch.cuda.is_available():
        if requested == "cuda":
            raise UserError("--device cuda but torch sees no GPU: use --device cpu or auto")
        return torch.device("cpu")
    index = local_rank % torch.cuda.device_count()
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


def set_threads(requested: int, comm) -> None:
    """`requested` torch threads, or the node's cores shared among the ranks on the node."""
    if requested <= 0:
        requested = max(1, (os.cpu_count() or 1) // _ranks_on_node(comm)[1])
    torch.set_num_threads(requested)


def keep_freed_memory() -> bool:
    """Have glibc's malloc keep freed memory for the next batch: blocks up to 32 MiB (its largest
    mmap threshold) from the heap, and no heap trimmed below 2 GiB of free top (M_MMAP_THRESHOLD,
    M_TRIM_THRESHOLD). By default a batch's activations above a threshold that starts at 128 KiB
    are mapped and unmapped at every batch until it has adapted, and a freed heap top is given
    back, so their pages are faulted in and zeroed again at every point: 1.3-1.6x the time of a
    CPU job in bench/cpu_study.py. Larger blocks are still mapped on their own (what an address-space
    limit, `ulimit -v`, needs). Set by the CLI's evaluating commands; memory freed stays with the
    process, which reuses it. False where the C library is not glibc."""
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(-3, 32 * 2**20)) and bool(libc.mallopt(-1, 2**31 - 1))  # M_MMAP_THRESHOLD, M_TRIM_
    except (OSError, AttributeError):
        return False


def ranks_per_device(comm, device: torch.device) -> int:
    """How many ranks of this node share `device` (all of them for the CPU)."""
    n = _ranks_on_node(comm)[1]
    return -(-n // torch.cuda.device_count()) if device.type == "cuda" else n


class GroupFailed(RuntimeError):
    """Raised by `group_sum` on the ranks of a group one of whose ranks failed (`group_failed`)
    before it could add its share: they stop instead of waiting for it."""


def _failure_flag(group, failed: bool) -> bool:
    """Whether some rank of `group` failed (one 4-byte allreduce, the first step of `group_sum`)."""
    from mpi4py import MPI

    seen = np.zeros(1, dtype=np.int32)
    group.Allreduce(np.array([int(failed)], dtype=np.int32), seen, op=MPI.MAX)
    return bool(seen[0])


def group_sum(group, values):
    """Σ over the ranks of `group` (an MPI communicator; None: this rank alone) of a float64
    tensor, on its own device: the sums of a point's share of the data (--ranks_per_point).
    Reduced on the group's rank 0 and broadcast, so every rank has the same bits (an allreduce
    may round differently on different ranks, and the ranks' solvers must take the same steps).
    First the group agrees that none of its ranks failed before its share was summed: when one
    did (it called `group_failed` instead), every other rank raises GroupFailed, none waits."""
    if group is None or group.size == 1:
        return values
    from mpi4py import MPI

    if _failure_flag(group, False):
        raise GroupFailed("another rank of this point's group failed")
    host = values.detach().to("cpu", torch.float64).contiguous().numpy()
    out = host.copy()
    group.Reduce(host, out, op=MPI.SUM, root=0)
    group.Bcast(out, root=0)
    return torch.from_numpy(out).to(values.device)


def group_failed(group) -> None:
    """This rank of `group` failed while computing its share: the group's other ranks, waiting
    in `group_sum` (the next one this rank would have called), raise GroupFailed. Call it once,
    from the code that catches the failure (engine.scheduler), never after a GroupFailed."""
    if group is not None and group.size > 1:
        _failure_flag(group, True)


def free_memory(device: torch.device) -> int:
    """Free bytes on `device`: the GPU's free memory, or the host's available memory."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    return host_available()


def _read(path: str) -> str | None:
    try:
        with open(path) as fh:
            return fh.read()
    except OSError:
        return None


def host_available() -> int:
    """The host memory this process may still use: the least of MemAvailable (/proc/meminfo; free
    pages where it is not there), its cgroup's limit less its usage (a SLURM job's --mem; cgroup
    v2), and its address-space limit (RLIMIT_AS, `ulimit -v`) less its address space now."""
    import resource

    found = []
    info = _read("/proc/meminfo")
    line = next((ln for ln in (info or "").splitlines() if ln.startswith("MemAvailable:")), None)
    if line:
        found.append(int(line.split()[1]) * 1024)
    else:
        try:
            found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            found.append(1 << 32)
    limit, used = _read("/sys/fs/cgroup/memory.max"), _read("/sys/fs/cgroup/memory.current")
    if limit and used and limit.strip().isdigit() and used.strip().isdigit():
        found.append(max(0, int(limit) - int(used)))
    soft = resource.getrlimit(resource.RLIMIT_AS)[0]
    status = _read("/proc/self/status")
    vm = next((ln for ln in (status or "").splitlines() if ln.startswith("VmSize:")), None)
    if soft != resource.RLIM_INFINITY and vm:
        found.append(max(0, soft - int(vm.split()[1]) * 1024))
    return min(found)
