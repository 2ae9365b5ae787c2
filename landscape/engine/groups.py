"""Rank groups (`--ranks_per_point G`): the world cut into groups of G consecutive ranks, each an
MPI sub-communicator whose ranks evaluate every point of their chunks together, each on its own
share of the data, their sums added inside the group (core.device.group_sum) before the leader
writes."""
from __future__ import annotations

from ..errors import SharedUserError


def divisors(n: int) -> list[int]:
    return [k for k in range(1, n + 1) if n % k == 0]


def rank_groups(comm, ranks_per_point: int = 1):
    """This rank's group: ranks r with the same r // G (collective over `comm`). A G that does not
    divide the world size is one line on every rank."""
    g = int(ranks_per_point)
    if g < 1:
        raise SharedUserError(f"--ranks_per_point {g} must be at least 1 (1: every rank evaluates its own points)")
    if comm.size % g:
        raise SharedUserError(f"--ranks_per_point {g} does not divide the {comm.size} ranks of this job: choose one "
                              f"of {', '.join(map(str, divisors(comm.size)))}, or start a multiple of {g} ranks")
    return comm.Split(comm.rank // g, comm.rank)
