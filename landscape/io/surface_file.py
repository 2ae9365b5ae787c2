"""The surface file (HDF5): the only module that reads or writes it.

Schema (axis order (y, x); a 1D grid has shape (nx,)):

    /x, /y                      coordinates (y only for 2D), HDF5 dimension scales
    /<split>/loss, /<split>/acc float64, NaN where not computed; dims (y, x) attached
    /<split>/<name>             the same, for each metric of the user's own --task package.module:fn
    /mask                       uint8, 1 once every value of the point is written
    /directions/x/<name>, /directions/y/<name>   the directions, keyed by tensor name
    /trajectory/...             PCA trajectory: coords, off_plane, explained_variance, files,
                                <split>/{loss,acc}[_projected]
    /hessian/...                Hessian map on its own (sub-)grid: x, y, lambda_max, lambda_min,
                                residual_max, residual_min, n_hvp, mask; settings as attrs
    /hessian_trace/...          trace map (the same layout): trace, ci_low, ci_high, n_hvp, mask
    /hessian_topk/...           top-k map: lambda_1..k, residual_1..k, n_hvp, mask
    /spectrum/<label>/...       spectrum at one point (label theta_star or a<α>_b<β>): eigenvalues,
                                residuals, trace (+ ci), slq/{nodes,weights}, density/{grid,values},
                                blocks/{names,numel,lambda_max,residual,trace,trace_ci}; settings as attrs
    /ensemble/...               a direction ensemble (--ensemble N): member (a dimension scale), mask and
                                <split>/<metric> of shape (member, [y,] x); once complete, stats/<split>/
                                <metric>/{mean,std,min,max,q05..q95,count}, widths/<split>/<axis> (member,
                                ε, [left, right]), curvature/<split>/<axis> (member), rise/<split>/<axis>/
                                {radius,mean,max}; attrs: members, seed,
                                epsilons (analysis.ensemble); such a file has no root <split> groups
    /sharpness/<measure>/...    worst-case sharpness at θ* per batch of m examples (landscape sharpness): x
                                (batch index), rise, loss, loss_max, radius, mask; settings (ρ, m, steps,
                                definition) as attrs (analysis.sharpness)
    /directions/eigenvalues     with Hessian-eigenvector directions (--xdir hessian:K): λ of each, and
    /directions/residuals       the residuals ‖H y − λ y‖
    attrs: format, format_version, config (YAML), job (JSON of what identifies
           the job), seed, versions

The dimension scales make every group readable by xarray:
`xarray.open_dataset(path, group="train", engine="h5netcdf")` has dims (y, x) with coordinates.
Files written before the scales existed (same format_version) read the same here.

Every dataset is created, filled and written to disk when the file is made
(atomically, through a temporary name), so later writes only touch raw data:
a rank killed mid-run leaves a file that opens and resumes.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import yaml

from ..core.grid import Grid
from ..errors import UserError, storage_problem

FORMAT = "landscape-surface"
FORMAT_VERSION = 1
READABLE_VERSIONS = (1,)
DIRECTIONS_FORMAT = "landscape-directions"  # directions/x, directions/y only (landscape import-directions)
MASK = "mask"
METRICS = ("loss", "acc")
HESSIAN = "hessian"
HESSIAN_VALUES = ("lambda_max", "lambda_min", "residual_max", "residual_min", "n_hvp")
HESSIAN_METRICS = tuple(f"{HESSIAN}/{m}" for m in HESSIAN_VALUES)
HESSIAN_MASK = f"{HESSIAN}/{MASK}"
#: the ratio the figures draw (an attribute of the hessian group); the reference tool drew |λmin/λmax|
HESSIAN_RATIO = "max(0, -lambda_min) / lambda_max; NaN where lambda_max <= 0 (the reference tool: |lambda_min / lambda_max|)"
TRAJECTORY = "trajectory"
TRACE_MAP = "hessian_trace"  # the trace map: trace, ci_low, ci_high, n_hvp, mask (analysis.spectrum)
TRACE_VALUES = ("trace", "ci_low", "ci_high", "n_hvp")
TOPK_MAP = "hessian_topk"  # the top-k map: lambda_1..k, residual_1..k, n_hvp, mask
SPECTRUM = "spectrum"  # spectra at single points: spectrum/<label>/...
SHARPNESS = "sharpness"  # worst-case sharpness at θ*: sharpness/<measure>/{rise,loss,loss_max,radius,mask}, per batch
ENSEMBLE = "ensemble"  # a direction ensemble: ensemble/<split>/<metric>, ensemble/mask, ensemble/stats ...
ENSEMBLE_MASK = f"{ENSEMBLE}/{MASK}"
#: groups of the root that are not splits
NOT_SPLITS = ("directions", HESSIAN, TRAJECTORY, TRACE_MAP, TOPK_MAP, SPECTRUM, ENSEMBLE, SHARPNESS)


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
        add_axes(f, grid)
        for axis, d in zip("xy", directions or []):
            g = f.create_group(f"directions/{axis}")
            for name, array in d.items():
                g.create_dataset(name, data=np.asarray(array))
        for name, data in (extra or {}).items():
            f.create_dataset(name, data=data)
        add_datasets(f, grid.shape, metrics, mask)
    os.replace(tmp, path)


def add_axes(g: h5py.Group, grid: Grid) -> None:
    """x (and y; member for an ensemble grid) of `grid` in group `g`, made HDF5 dimension scales for
    the datasets beside them."""
    members = getattr(grid, "members", None)
    for name, coords in (("x", grid.x), ("y", grid.y), ("member", None if members is None else np.arange(members))):
        if coords is not None:
            g.create_dataset(name, data=coords)
            g[name].make_scale(name)


def attach_axes(ds: h5py.Dataset) -> None:
    """Attach x/y scales to the dataset's dims, (y, x) or (x,) (an ensemble's: (member, [y,] x)):
    those of its own group, which gets copies of the root's when it has none (xarray reads a
    group's coordinates from the group)."""
    members = ds.name.startswith(f"/{ENSEMBLE}/")
    names = ("member",) * members + (("x",) if ds.ndim - members == 1 else ("y", "x"))
    group = ds.parent
    for n in names:
        if n not in group:
            group.create_dataset(n, data=ds.file[n][...])
            group[n].make_scale(n)
    for dim, n in enumerate(names):
        ds.dims[dim].attach_scale(group[n])


def add_datasets(f: h5py.File, shape: tuple[int, ...], metrics: list[str], mask: str) -> None:
    """NaN-filled metric arrays and a zero mask, storage allocated now (contiguous layout)."""
    for m in metrics:
        if m not in f:
            attach_axes(f.create_dataset(m, data=np.full(shape, np.nan)))
    if mask not in f:
        attach_axes(f.create_dataset(mask, data=np.zeros(shape, dtype=np.uint8)))


def open_surface(path: str | Path, mode: str = "r", formats: tuple[str, ...] = (FORMAT,)) -> h5py.File:
    """Open an existing surface file, with a one-line error naming the fix when it is not one
    (or is of a format_version this landscape cannot read)."""
    path = Path(path)
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "does not exist"
        raise UserError(f"{str(path)!r} {what}: give the path of a surface file")
    try:
        f = h5py.File(path, mode)
    except OSError as exc:
        raise UserError(f"{str(path)!r} is not a readable HDF5 file ({str(exc).splitlines()[0]}): if a crashed "
                        f"writer left it marked open, `h5clear -s {path}` makes it readable again; if it is truncated "
                        "or not a surface file, move it aside (or pass --force) to start over") from None
    if _plain(f.attrs.get("format")) not in formats:
        reference = "xdirection" in f
        f.close()
        if reference:
            raise UserError(f"{str(path)!r} is a direction file of the reference tool: convert it with "
                            "`landscape import-directions FILE --model MODEL --out DIRS.h5` and pass DIRS.h5")
        raise UserError(f"{str(path)!r} is not a landscape surface file (no format={FORMAT!r}): "
                        "pick a file written by landscape")
    version = int(f.attrs.get("format_version", 1))
    if version not in READABLE_VERSIONS:
        f.close()
        raise UserError(f"{str(path)!r} has format_version {version}: upgrade landscape to read it")
    return f


def open_for_writing(path: str | Path) -> h5py.File:
    """A prepared surface file opened by one process for writing points."""
    return h5py.File(path, "r+")


def open_parallel(path: str | Path, comm) -> h5py.File:
    """A prepared surface file opened by every rank of `comm` (driver='mpio', collective)."""
    return h5py.File(path, "r+", driver="mpio", comm=comm)


ANY = object()  # an implied value that accepts whatever the job has


def differences(stored: dict, wanted: dict, implied: dict | None = None) -> list[str]:
    """Human-readable differences between two job descriptions. `implied`: the values that a
    stored description written before a key existed stands for (ANY: unknown, accepted)."""
    out = []
    implied = implied or {}
    for key in sorted(set(stored) | set(wanted)):
        a, b = stored.get(key, implied.get(key)), wanted.get(key)
        if a is not ANY and a != b:
            out.append(f"{key}: file has {a!r}, job has {b!r}")
    return out


def implied_job(f: h5py.File) -> dict:
    """What a job description without the keys added after format version 1 stands for: the
    precision of its config (fp32 without one); its model code and value-changing batch size
    are unknown; every tensor was selected, in float32."""
    return {"precision": read_provenance(f).config.get("precision", "fp32"), "model_code": ANY, "batch_size": ANY,
            "task": "classification", "params": None, "weights_dtype": "float32"}


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
            diff = differences(stored, job, implied_job(f))
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


def points_left(path: str | Path, size: int, mask: str = MASK) -> int:
    """Points of an existing surface file not yet computed (`size` when there is no readable file of
    that many points): what a rerun will compute, for planning it."""
    try:
        with h5py.File(path, "r") as f:
            mask = f[mask][...]
        return int(mask.size - mask.sum()) if mask.size == size else size
    except (OSError, KeyError):
        return size


def read_run_options(path: str | Path) -> dict:
    """The `run_options` of an existing surface file's last run ({} when there is none)."""
    try:
        with h5py.File(path, "r") as f:
            return json.loads(f.attrs.get("run_options", "{}"))
    except (OSError, ValueError):
        return {}


def record_run_options(path: str | Path, options: dict) -> None:
    """The options of the run now starting (how it evaluates, not what: never part of the job), as
    the JSON attribute `run_options`; rank 0, before the run opens the file."""
    text = json.dumps(options, sort_keys=True)
    if read_run_options(path) != json.loads(text):  # a rerun as before leaves the file as it was
        with open_for_writing(path) as f:
            f.attrs["run_options"] = text


def _plain(v):
    """An HDF5 attribute value as a plain Python value (for comparing settings)."""
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return v.item() if isinstance(v, np.generic) else v


#: settings of a group (a Hessian map) written before these keys existed
IMPLIED_SETTINGS = {"precision": "fp32", "bn_recompute": 0, "subset_draw": "torch randperm(subset_seed), sorted",
                    "task": "classification"}


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
            diff = differences(stored, settings, IMPLIED_SETTINGS)
            if diff:
                raise UserError(f"{str(path)!r} holds a {group} map with other settings ({'; '.join(diff[:3])}): "
                                f"rerun with the same settings to resume, or pass --force to recompute the {group} map")
        elif group in f:
            del f[group]
        if group not in f:
            g = f.create_group(group)
            for k, v in {**settings, **(attrs or {})}.items():
                g.attrs[k] = v
            add_axes(g, grid)
        add_datasets(f, grid.shape, metrics, mask)
        return f[mask][...].ravel().astype(bool)


def read_directions(path: str | Path) -> list[dict[str, np.ndarray]]:
    """The directions of a surface file or of a directions-only file."""
    with open_surface(path, formats=(FORMAT, DIRECTIONS_FORMAT)) as f:
        if "directions" not in f:
            raise UserError(f"{str(path)!r} has no directions: use a surface file written by landscape")
        return [{k: v[...] for k, v in f[f"directions/{a}"].items()} for a in "xy" if a in f["directions"]]


def write_directions(path: str | Path, directions: list[dict[str, np.ndarray]], attrs: dict) -> None:
    """A landscape directions-only file (directions/x, directions/y by name): a --dir_file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with h5py.File(tmp, "w") as f:
        f.attrs["format"] = DIRECTIONS_FORMAT
        f.attrs["format_version"] = FORMAT_VERSION
        for k, v in attrs.items():
            f.attrs[k] = v
        for axis, d in zip("xy", directions):
            group = f.create_group(f"directions/{axis}")
            for name, array in d.items():
                group.create_dataset(name, data=np.asarray(array))
    os.replace(tmp, path)


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


# ---------------------------------------------------------------- readers


def _text(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


@dataclass(frozen=True)
class Provenance:
    """What made the file: the job (JSON: what identifies it, compared on resume), the config
    (the job file's keys, YAML), the direction seed and the versions; empty where absent."""

    job: dict
    config_text: str
    config: dict
    seed: str
    versions: str


@dataclass(frozen=True)
class StoredTrajectory:
    """The PCA trajectory stored with a surface: projections of the checkpoints and, once the
    surface is complete, each checkpoint's true loss beside the surface's value at its projection."""

    coords: np.ndarray  # (n, 2)
    off_plane: np.ndarray  # (n,) relative distance from the plane
    explained_variance: np.ndarray  # (2,)
    files: tuple[str, ...]
    losses: dict  # {split: {'loss': (n,), 'loss_projected': (n,), 'acc': ..., ...}}


@dataclass(frozen=True)
class Surface:
    """The values of a surface file: values[split][metric] has the mask's shape, (len(y), len(x))
    or (len(x),); mask: point computed."""

    path: str
    x: np.ndarray
    y: np.ndarray | None
    mask: np.ndarray
    values: dict
    provenance: Provenance
    trajectory: StoredTrajectory | None = None
    hessian_mask: np.ndarray | None = None  # the Hessian map's own mask, None without one
    hessian_stride: int | None = None

    @property
    def done(self) -> float:
        return float(self.mask.mean())

    @property
    def nonfinite(self) -> int:
        """Computed points with a NaN or infinite value."""
        bad = np.zeros(self.mask.shape, dtype=bool)
        for metrics in self.values.values():
            for v in metrics.values():
                bad |= self.mask & ~np.isfinite(v)
        return int(bad.sum())


@dataclass(frozen=True)
class HessianMap:
    """The Hessian map of a surface file on its own grid (every `stride`-th point of the surface's)."""

    x: np.ndarray
    y: np.ndarray | None
    values: dict  # lambda_max, lambda_min, residual_max, residual_min, n_hvp
    mask: np.ndarray
    settings: dict
    x_range: tuple[float, float]  # the surface's axis ranges
    y_range: tuple[float, float] | None


def read_provenance(f: h5py.File) -> Provenance:
    """The provenance attributes of an open surface file."""
    a = {k: _plain(v) for k, v in f.attrs.items()}
    try:
        job = json.loads(a.get("job") or "{}")
    except (TypeError, ValueError):
        job = {}
    text = _text(a.get("config", ""))
    try:
        config = yaml.safe_load(text) or {}
    except yaml.YAMLError:
        config = {}
    versions = a.get("versions", "–")
    try:
        parsed = json.loads(versions)
        if isinstance(parsed, dict):
            versions = ", ".join(f"{k} {v}" for k, v in parsed.items())
    except (TypeError, ValueError):
        pass
    return Provenance(job if isinstance(job, dict) else {}, text, config if isinstance(config, dict) else {},
                      str(a.get("seed", "–")), str(versions))


def _split_order(name: str):
    return (name not in ("train", "test"), name != "train", name)


def read_surface(path: str | Path) -> Surface:
    """Every value of a surface file, checked (one-line UserErrors for damaged or empty files)."""
    path = Path(path)
    with open_surface(path) as f:
        if "x" not in f:
            raise UserError(f"{str(path)!r} has no /x coordinates: the file is damaged, recompute it")
        x = np.asarray(f["x"][...], dtype=float)
        y = np.asarray(f["y"][...], dtype=float) if "y" in f else None
        shape = (len(x),) if y is None else (len(y), len(x))
        values = {}
        for split in sorted(f, key=_split_order):
            if isinstance(f[split], h5py.Group) and split not in NOT_SPLITS:
                names = [m for m in METRICS if m in f[split]] + [  # loss, acc, then the user's own metrics
                    m for m in f[split] if m not in METRICS and isinstance(f[split][m], h5py.Dataset)
                    and not f[split][m].is_scale]  # not the group's x, y coordinates
                found = {m: np.asarray(f[split][m][...], dtype=float) for m in names}
                if found:
                    values[split] = found
        if not values and ENSEMBLE_MASK in f:
            raise UserError(f"{str(path)!r} holds a direction ensemble: `landscape plot`, `info` and `report` read it; "
                            "for Hessian maps, trajectories or the reference export compute one member alone "
                            "(--seed S --member M, without --ensemble)")
        if not values:
            raise UserError(f"{str(path)!r} has no metric datasets (/<split>/loss or /acc): the job wrote nothing, rerun it")
        if MASK in f:
            mask = np.asarray(f[MASK][...]).astype(bool)
        else:  # computed = any metric written
            mask = np.any([np.isfinite(v) for s in values.values() for v in s.values()], axis=0)
        trajectory = None
        if f"{TRAJECTORY}/coords" in f:
            t = f[TRAJECTORY]
            files = tuple(_text(v) for v in t["files"][...]) if "files" in t else ()
            losses = {sp: {k: t[sp][k][...] for k in t[sp]} for sp in t if isinstance(t[sp], h5py.Group)}
            trajectory = StoredTrajectory(t["coords"][...], t["off_plane"][...], t["explained_variance"][...], files, losses)
        hessian = np.asarray(f[HESSIAN_MASK][...]).astype(bool) if HESSIAN_MASK in f else None
        stride = _plain(f[HESSIAN].attrs.get("stride")) if HESSIAN in f else None
        provenance = read_provenance(f)
    for name, arr in [(MASK, mask)] + [(f"{s}/{m}", v) for s, d in values.items() for m, v in d.items()]:
        if arr.shape != shape:
            raise UserError(f"{str(path)!r}: /{name} has shape {arr.shape}, expected {shape} (len y, len x): "
                            "the file is damaged, recompute it")
    if not mask.any():
        raise UserError(f"{str(path)!r}: no point computed yet: wait for the job or check its log")
    return Surface(str(path), x, y, mask, values, provenance, trajectory, hessian, stride)


def read_values(path: str | Path, metrics, mask: str = MASK) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """({metric: values}, mask) of the named datasets, unchecked (the library's own results)."""
    with open_surface(path) as f:
        return {m: f[m][...] for m in metrics}, f[mask][...].astype(bool)


def read_hessian(path: str | Path) -> HessianMap:
    """The Hessian map of a surface file, or a UserError naming how to compute one."""
    path = Path(path)
    with open_surface(path) as f:
        if HESSIAN not in f or MASK not in f[HESSIAN]:
            raise UserError(f"{str(path)!r} has no Hessian map: compute it with `landscape hessian {path}`")
        g = f[HESSIAN]
        values = {k: g[k][...] for k in HESSIAN_VALUES if k in g}
        return HessianMap(
            g["x"][...], g["y"][...] if "y" in g else None, values, g[MASK][...].astype(bool),
            {k: _plain(v) for k, v in g.attrs.items()}, (float(f["x"][0]), float(f["x"][-1])),
            (float(f["y"][0]), float(f["y"][-1])) if "y" in f else None)


def write_datasets(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    """Write (or replace) the named datasets of an existing surface file (serial, one process)."""
    with open_surface(path, "r+") as f:
        for name, values in arrays.items():
            if name in f:
                del f[name]
            f.create_dataset(name, data=values)


@dataclass(frozen=True)
class StoredJob:
    """What a later job on a surface file (a Hessian map) rebuilds the surface's inputs from."""

    provenance: Provenance
    x: np.ndarray
    y: np.ndarray | None
    directions: list  # [{tensor name: array}] for x (and y)


def read_job(path: str | Path) -> StoredJob:
    """The config, job, coordinates and directions of a surface file computed by `landscape surface`."""
    with open_surface(path) as f:
        if "config" not in f.attrs or "directions" not in f:
            raise UserError(f"{str(path)!r} has no job config or no directions: compute it with `landscape surface`, "
                            "which stores both")
        provenance = read_provenance(f)
        if not provenance.config:
            raise UserError(f"{str(path)!r} has a damaged config attribute: recompute the surface")
        directions = [{k: v[...] for k, v in f[f"directions/{a}"].items()} for a in "xy" if a in f["directions"]]
        return StoredJob(provenance, f["x"][...], f["y"][...] if "y" in f else None, directions)


# ---------------------------------------------------------------- curvature maps and spectra


def read_map(path: str | Path, group: str) -> HessianMap:
    """A per-point map of a surface file stored like the Hessian map (the trace map TRACE_MAP, the
    top-k map TOPK_MAP): every dataset of the group but its coordinates and mask; or a UserError
    naming how to compute one."""
    path = Path(path)
    how = {TRACE_MAP: "--map trace", TOPK_MAP: "--map topk"}.get(group, "")
    with open_surface(path) as f:
        if group not in f or MASK not in f[group]:
            raise UserError(f"{str(path)!r} has no {group} map: compute it with `landscape hessian {path} {how}`")
        g = f[group]
        values = {k: g[k][...] for k in g if k not in ("x", "y", MASK) and isinstance(g[k], h5py.Dataset)}
        return HessianMap(
            g["x"][...], g["y"][...] if "y" in g else None, values, g[MASK][...].astype(bool),
            {k: _plain(v) for k, v in g.attrs.items()}, (float(f["x"][0]), float(f["x"][-1])),
            (float(f["y"][0]), float(f["y"][-1])) if "y" in f else None)


def spectrum_label(point) -> str:
    """The group name of a spectrum at `point` (α[, β]): theta_star at the origin, else a<α>_b<β>."""
    if all(float(c) == 0.0 for c in point):
        return "theta_star"
    return "_".join(f"{n}{float(c):g}" for n, c in zip("ab", point))


def write_spectrum(path: str | Path, label: str, arrays: dict[str, np.ndarray], attrs: dict, *,
                   force: bool = False) -> str:
    """Write spectrum/<label> (datasets `arrays` by relative name, `attrs` as its attributes) into a
    surface file (one process); an existing one is refused unless `force`. Returns the group's name."""
    name = f"{SPECTRUM}/{label}"
    open_surface(path).close()
    if not os.access(path, os.W_OK):
        raise UserError(f"{str(path)!r} is not writable: make it writable or copy it to a writable folder")
    with h5py.File(path, "r+") as f:
        if name in f:
            if not force:
                raise UserError(f"{str(path)!r} already holds a spectrum at this point ({name}): pass --force to "
                                "recompute it")
            del f[name]
        g = f.create_group(name)
        for k, v in attrs.items():
            g.attrs[k] = v
        for k, v in arrays.items():
            g.create_dataset(k, data=v)
    return name


@dataclass(frozen=True)
class StoredSpectrum:
    """A spectrum of a surface file: its datasets by relative name (eigenvalues, slq/nodes, ...) and settings."""

    label: str
    values: dict
    settings: dict


def read_spectra(path: str | Path) -> dict[str, StoredSpectrum]:
    """Every spectrum of a surface file by label, or a UserError naming how to compute one."""
    path = Path(path)
    with open_surface(path) as f:
        if SPECTRUM not in f or not len(f[SPECTRUM]):
            raise UserError(f"{str(path)!r} has no spectrum: compute one with `landscape spectrum {path}`")
        out = {}
        for label, g in f[SPECTRUM].items():
            values = {}
            g.visititems(lambda k, d: values.__setitem__(k, d[...]) if isinstance(d, h5py.Dataset) else None)
            values = {k: (np.array([_text(s) for s in v]) if v.dtype.kind in "OS" else v) for k, v in values.items()}
            out[label] = StoredSpectrum(label, values, {k: _plain(v) for k, v in g.attrs.items()})
        return out


@dataclass(frozen=True)
class Ensemble:
    """A direction ensemble's file: values[split][metric] of shape (members, [len(y),] len(x)), its
    mask, the stored statistics (ensemble/stats, widths, curvature by relative name; {} until the
    ensemble is complete) and the group's attributes (members, seed, epsilons, ...)."""

    path: str
    x: np.ndarray
    y: np.ndarray | None
    mask: np.ndarray
    values: dict
    stats: dict
    attrs: dict
    provenance: Provenance

    @property
    def members(self) -> int:
        return int(self.mask.shape[0])

    @property
    def done(self) -> float:
        return float(self.mask.mean())


def is_ensemble(path: str | Path) -> bool:
    with open_surface(path) as f:
        return ENSEMBLE_MASK in f


def read_ensemble(path: str | Path) -> Ensemble:
    """Every value of a direction-ensemble file (one-line UserErrors for other or empty files)."""
    path = Path(path)
    with open_surface(path) as f:
        if ENSEMBLE_MASK not in f:
            raise UserError(f"{str(path)!r} is not a direction ensemble: compute one with --ensemble N")
        g = f[ENSEMBLE]
        x = np.asarray(f["x"][...], dtype=float)
        y = np.asarray(f["y"][...], dtype=float) if "y" in f else None
        mask = np.asarray(g[MASK][...]).astype(bool)
        values = {split: {m: np.asarray(d[...], dtype=float) for m, d in g[split].items()
                          if isinstance(d, h5py.Dataset) and not d.is_scale}
                  for split in sorted(g, key=_split_order) if isinstance(g[split], h5py.Group)
                  and split not in ENSEMBLE_RESULTS}
        stats = {}
        for name in ENSEMBLE_RESULTS:
            if name in g:
                g[name].visititems(lambda k, d, name=name: stats.__setitem__(f"{name}/{k}", d[...])
                                   if isinstance(d, h5py.Dataset) else None)
        attrs = {k: _plain(v) for k, v in g.attrs.items()}
        provenance = read_provenance(f)
    if not mask.any():
        raise UserError(f"{str(path)!r}: no point computed yet: wait for the job or check its log")
    return Ensemble(str(path), x, y, mask, values, stats, attrs, provenance)


ENSEMBLE_RESULTS = ("stats", "widths", "curvature", "rise")  # groups of /ensemble that are not splits


def write_ensemble_results(path: str | Path, arrays: dict[str, np.ndarray], attrs: dict) -> None:
    """Replace the ensemble's statistics (names relative to /ensemble, under ENSEMBLE_RESULTS) and
    set the group's attributes (serial, one process, after the run)."""
    with open_surface(path, "r+") as f:
        g = f[ENSEMBLE]
        for name in ENSEMBLE_RESULTS:
            if name in g:
                del g[name]
        for name, values in arrays.items():
            g.create_dataset(name, data=values)
        for k, v in attrs.items():
            g.attrs[k] = v


def read_sharpness(path: str | Path) -> dict[str, HessianMap]:
    """Every `landscape sharpness` measure of a file by name ({} without any): per batch rise, loss,
    loss_max, radius on the group's own 1D grid (x: batch index), its mask and settings."""
    with open_surface(path) as f:
        if SHARPNESS not in f:
            return {}
        names = [m for m in f[SHARPNESS] if isinstance(f[SHARPNESS][m], h5py.Group) and MASK in f[SHARPNESS][m]]
    return {m: read_map(path, f"{SHARPNESS}/{m}") for m in names}
