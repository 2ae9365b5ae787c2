"""How a rank's finished points reach the shared file: every rank writes through MPI-IO
(`ParallelWriter`, needs an MPI-enabled h5py), or rank 0 writes what the others send it
(`GatherWriter`, a serial h5py). Both write values before the mask (io.surface_file.write_points)."""
from __future__ import annotations

import numpy as np

from ..errors import SharedUserError
from ..io import surface_file


class ParallelWriter:
    """Every rank writes its own points into the shared file (driver='mpio', independent I/O)."""

    def __init__(self, path, comm, metrics: list[str], mask: str):
        self.f = surface_file.open_parallel(path, comm)
        self.datasets = [self.f[m] for m in metrics]
        self.mask = self.f[mask]

    def write(self, points, values) -> None:
        surface_file.write_points(self.datasets, self.mask, points, values)

    def close(self) -> None:  # collective
        self.f.close()


class GatherWriter:
    """Rank 0 writes every rank's points with a serial h5py; other ranks send theirs to it."""

    TAG = 17

    def __init__(self, path, comm, metrics: list[str], mask: str):
        self.comm = comm
        self.f = None
        self._finished = 0  # ranks that sent their last points
        if comm.rank == 0:
            self.f = surface_file.open_for_writing(path)
            self.datasets = [self.f[m] for m in metrics]
            self.mask = self.f[mask]

    def _write(self, points, values) -> None:
        surface_file.write_points(self.datasets, self.mask, points, values)
        self.f.flush()

    def write(self, points, values) -> None:
        if self.comm.rank == 0:
            self._write(points, values)
            self.poll()
        else:
            self.comm.send((np.asarray(points), np.asarray(values)), dest=0, tag=self.TAG)

    def poll(self) -> None:
        """Rank 0: write whatever the other ranks have sent so far."""
        while self.comm.rank == 0 and self.comm.iprobe(tag=self.TAG):
            msg = self.comm.recv(tag=self.TAG)
            if msg is None:
                self._finished += 1
            else:
                self._write(*msg)

    def close(self) -> None:
        if self.comm.rank != 0:
            self.comm.send(None, dest=0, tag=self.TAG)
            return
        while self._finished < self.comm.size - 1:
            msg = self.comm.recv(tag=self.TAG)
            if msg is None:
                self._finished += 1
            else:
                self._write(*msg)
        self.f.close()


def writer_for(path, comm, metrics, mask, parallel: bool | None = None):
    """ParallelWriter when h5py has MPI support (and more than one rank), else GatherWriter."""
    if parallel is None:
        parallel = surface_file.mpi_h5py() and comm.size > 1
    if parallel and not surface_file.mpi_h5py():
        raise SharedUserError("--write parallel needs h5py built with MPI (h5py.get_config().mpi is False): "
                              "use --write gather, or build h5py as scripts/setup.sh does")
    return (ParallelWriter if parallel else GatherWriter)(path, comm, metrics, mask)
