"""The surface file (HDF5): schema, creation, validation for resume, writers, lock.

Schema (axis order (y, x); a 1D grid has shape (nx,)):

    /x, /y                      coordinates (y only for 2D)
    /<split>/loss, /<split>/acc float64, NaN where not computed
    /mask                       uint8, 1 once every value of the point is written
    /directions/x/<name>, /directions/y/<name>   the directions, keyed by tensor name
    attrs: format, format_version, config (YAML), job (JSON of what identifies
           the job), model_fingerprint, data_fingerprint, directions_fingerprint,
           seed, versions (JSON)

Every dataset is created, filled and written to disk when the file is made
(atomically, through a temporary name), so later writes only touch raw data:
a rank killed mid-run leaves a file that opens and resumes.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
from pathlib import Path

os.environ.setdefault("HDF5_USE_FILE_LOCKING", "FALSE")  # our own lock below; HDF5's breaks under MPI/NFS

import h5py  # noqa: E402
import numpy as np  # noqa: E402

from .errors import UserError, storage_problem  # noqa: E402
from .grid import Grid  # noqa: E402

FORMAT = "landscape-surface"
FORMAT_VERSION = 1
DIRECTIONS_FORMAT = "landscape-directions"  # directions/x, directions/y only (landscape import-directions)


def mpi_h5py() -> bool:
    return bool(h5py.get_config().mpi)


def point_index(shape: tuple[int, ...], p: int):
    return (int(p),) if len(shape) == 1 else tuple(int(i) for i in np.unravel_index(int(p), shape))


def create(path: str | Path, grid: Grid, metrics: list[str], *, mask: str = "mask",
           directions: list[dict] | None = None, attrs: dict | None = None, extra: dict | None = None) -> None:
    """Write a new surface file with every dataset allocated; replaces `path` atomically."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with h5py.File(tmp, "w") as f:
        f.attrs["format"] = FORMAT
        f.attrs["format_version"] = FORMAT_VERSION
        for k, v in (attrs or {}).items():
            f.attrs[k] = v
        f.create_dataset("x", data=grid.x)
        if grid.y is not None:
            f.create_dataset("y", data=grid.y)
        for axis, d in zip("xy", directions or []):
            g = f.create_group(f"directions/{axis}")
            for name, t in d.items():
                g.create_dataset(name, data=t.detach().cpu().numpy())
        for name, data in (extra or {}).items():
            f.create_dataset(name, data=data)
        add_datasets(f, grid.shape, metrics, mask)
    os.replace(tmp, path)


def add_datasets(f: h5py.File, shape: tuple[int, ...], metrics: list[str], mask: str) -> None:
    """NaN-filled metric arrays and a zero mask, storage allocated now (contiguous layout)."""
    for m in metrics:
        if m not in f:
            f.create_dataset(m, data=np.full(shape, np.nan))
    if mask not in f:
        f.create_dataset(mask, data=np.zeros(shape, dtype=np.uint8))


def open_surface(path: str | Path, mode: str = "r", formats: tuple[str, ...] = (FORMAT,)) -> h5py.File:
    """Open an existing surface file, with a clear error when it is not one."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{str(path)!r} does not exist: give the path of a surface file")
    try:
        f = h5py.File(path, mode)
    except OSError as exc:
        raise UserError(f"{str(path)!r} is not a readable HDF5 file ({str(exc).splitlines()[0]}): if a crashed "
                        f"writer left it marked open, `h5clear -s {path}` makes it readable again; if it is truncated "
                        "or not a surface file, move it aside (or pass --force) to start over") from None
    if f.attrs.get("format") not in formats:
        reference = "xdirection" in f
        f.close()
        if reference:
            raise UserError(f"{str(path)!r} is a direction file of the reference tool: convert it with "
                            "`landscape import-directions FILE --model MODEL --out DIRS.h5` and pass DIRS.h5")
        raise UserError(f"{str(path)!r} is not a landscape surface file: pick another --surf_file")
    return f


def differences(stored: dict, wanted: dict) -> list[str]:
    """Human-readable differences between two job descriptions."""
    out = []
    for key in sorted(set(stored) | set(wanted)):
        a, b = stored.get(key), wanted.get(key)
        if a != b:
            out.append(f"{key}: file has {a!r}, job has {b!r}")
    return out


def prepare(path: str | Path, grid: Grid, metrics: list[str], job: dict, *, mask: str = "mask",
            directions=None, attrs: dict | None = None, extra: dict | None = None, force: bool = False) -> np.ndarray:
    """Create the file, or check that an existing one belongs to the same job.

    Returns the completion mask (flat, bool). A different job is refused with what differs."""
    path = Path(path)
    if not path.parent.is_dir():
        raise UserError(f"output folder {str(path.parent)!r} does not exist: create it or choose another --surf_file")
    if not os.access(path.parent, os.W_OK):
        raise UserError(f"output folder {str(path.parent)!r} is not writable: choose another --surf_file")
    if path.exists() and not force:
        with open_surface(path) as f:
            stored = json.loads(f.attrs.get("job", "{}"))
            diff = differences(stored, job)
            if diff:
                raise UserError(
                    f"{str(path)!r} holds another job ({'; '.join(diff[:3])}): "
                    "rerun with the same settings to resume, pass --force to overwrite, or choose another --surf_file"
                )
            return f[mask][...].ravel().astype(bool)
    all_attrs = dict(attrs or {})
    all_attrs["job"] = json.dumps(job, sort_keys=True)
    try:
        create(path, grid, metrics, mask=mask, directions=directions, attrs=all_attrs, extra=extra)
    except OSError as exc:
        path.with_name(path.name + ".tmp").unlink(missing_ok=True)
        reason = storage_problem(exc) or str(exc).splitlines()[0]
        raise UserError(f"cannot write {str(path)!r} ({reason}): free space or choose another --surf_file") from None
    return np.zeros(grid.size, dtype=bool)


def _plain(v):
    """An HDF5 attribute value as a plain Python value (for comparing settings)."""
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return v.item() if isinstance(v, np.generic) else v


def prepare_group(path: str | Path, group: str, grid: Grid, metrics: list[str], settings: dict, *, mask: str,
                  force: bool = False, attrs: dict | None = None) -> np.ndarray:
    """Add to an existing surface file a group of per-point results on `grid` (e.g. a sub-grid):
    <group>/x, <group>/y, the metric datasets (NaN), the mask (0), and `settings` (plain values)
    plus `attrs` as the group's attributes. An existing group with the same settings is resumed;
    other settings are refused with what differs; force deletes and recreates only this group.
    Returns the group's completion mask (flat, bool)."""
    path = Path(path)
    open_surface(path).close()
    if not os.access(path, os.W_OK):
        raise UserError(f"{str(path)!r} is not writable: make it writable or copy it to a writable folder")
    with h5py.File(path, "r+") as f:
        if group in f and not force:
            stored = {k: _plain(v) for k, v in f[group].attrs.items() if k in settings or k not in (attrs or {})}
            diff = differences(stored, settings)
            if diff:
                raise UserError(f"{str(path)!r} holds a {group} map with other settings ({'; '.join(diff[:3])}): "
                                f"rerun with the same settings to resume, or pass --force to recompute the {group} map")
        elif group in f:
            del f[group]
        if group not in f:
            g = f.create_group(group)
            for k, v in {**settings, **(attrs or {})}.items():
                g.attrs[k] = v
            g.create_dataset("x", data=grid.x)
            if grid.y is not None:
                g.create_dataset("y", data=grid.y)
        add_datasets(f, grid.shape, metrics, mask)
        return f[mask][...].ravel().astype(bool)


def read_directions(path: str | Path) -> list[dict[str, np.ndarray]]:
    """The directions of a surface file or of a directions-only file."""
    with open_surface(path, formats=(FORMAT, DIRECTIONS_FORMAT)) as f:
        if "directions" not in f:
            raise UserError(f"{str(path)!r} has no directions: use a surface file written by landscape")
        return [{k: v[...] for k, v in f[f"directions/{a}"].items()} for a in "xy" if a in f["directions"]]


class FileLock:
    """An fcntl lock on `<file>.lock` held by rank 0 for the whole run; released by the OS
    when the process dies, so a killed job never leaves a stale lock."""

    def __init__(self, path: str | Path):
        self.path = Path(str(path) + ".lock")
        self.fd = None

    def acquire(self) -> None:
        if not self.path.parent.is_dir():  # the lock comes before prepare(): name the real problem here
            raise UserError(f"output folder {str(self.path.parent)!r} does not exist: create it or choose another --surf_file")
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise UserError(f"cannot create lock file {str(self.path)!r} ({exc.strerror}): choose a writable --surf_file") from None
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise UserError(
                f"{str(self.path)[:-5]!r} is being written by another job ({holder}): wait for it to end or choose another --surf_file"
            ) from None
        try:  # the lock file we locked may have been removed by its previous holder after we opened it
            same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
        except OSError:
            same = False
        if not same:
            os.close(fd)
            return self.acquire()
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"host {socket.gethostname()} pid {os.getpid()}".encode(), 0)
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            try:  # remove it while still holding the lock, so no other job can lock a removed file
                self.path.unlink()
            except OSError:
                pass
            os.close(self.fd)
            self.fd = None


def write_points(datasets, mask, points, values) -> None:
    """Values of every point first (one column per dataset), then the points' mask entries:
    one element-selection write per dataset (h5py's fancy indexing costs ~0.1 ms per element)."""
    coords = np.array([point_index(mask.shape, p) for p in points], dtype=np.uint64).reshape(len(points), -1)
    memory = h5py.h5s.create_simple((len(points),))
    columns = [np.ascontiguousarray(values[:, j], dtype=ds.dtype) for j, ds in enumerate(datasets)]
    for ds, column in zip([*datasets, mask], [*columns, np.ones(len(points), dtype=mask.dtype)]):
        space = ds.id.get_space()
        space.select_elements(coords)
        ds.id.write(memory, space, column)


class ParallelWriter:
    """Every rank writes its own points into the shared file (driver='mpio', independent I/O)."""

    def __init__(self, path, comm, metrics: list[str], mask: str):
        self.f = h5py.File(path, "r+", driver="mpio", comm=comm)
        self.datasets = [self.f[m] for m in metrics]
        self.mask = self.f[mask]

    def write(self, points, values) -> None:
        write_points(self.datasets, self.mask, points, values)

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
            self.f = h5py.File(path, "r+")
            self.datasets = [self.f[m] for m in metrics]
            self.mask = self.f[mask]

    def _write(self, points, values) -> None:
        write_points(self.datasets, self.mask, points, values)
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
        parallel = mpi_h5py() and comm.size > 1
    if parallel and not mpi_h5py():
        exc = UserError("--write parallel needs h5py built with MPI (h5py.get_config().mpi is False): "
                        "use --write gather, or build h5py as scripts/setup.sh does")
        exc.shared = True  # the same on every rank
        raise exc
    return (ParallelWriter if parallel else GatherWriter)(path, comm, metrics, mask)
