"""Loss surfaces: the Python API (`compute_surface`) and the job runner the CLI calls.

    from landscape import compute_surface
    s = compute_surface(model, {"train": (X, Y)}, x="-1:1:21", y="-1:1:21", surf_file="s.h5")
    s.values["train/loss"]   # shape (21, 21), axis order (y, x)
"""
from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import __version__, engine, store
from .data import Split, check_labels, load_dataset
from .directions import Direction, check_directions, fingerprint, random_directions
from .errors import EXIT_INTERRUPTED, EXIT_OK, UserError
from .evaluate import SurfaceEvaluator
from .grid import Axis, Grid
from .importpath import check_loss, is_import_path
from .models import build_model, load_checkpoint, num_outputs
from .trajectory import job_directions, record_checkpoint_losses


@dataclass
class Surface:
    """The arrays of a surface file: values[metric] has shape (len(y), len(x)) or (len(x),)."""

    x: np.ndarray
    y: np.ndarray | None
    values: dict[str, np.ndarray]
    mask: np.ndarray
    directions: list[Direction]
    path: str | None
    summary: engine.RunSummary | None = field(default=None, repr=False)


def on_root(comm, fn):
    """Run fn on rank 0 only; every rank gets its result, or raises its UserError."""
    result = error = None
    if comm.rank == 0:
        try:
            result = fn()
        except UserError as exc:
            error = str(exc)
    result, error = comm.bcast((result, error), root=0)
    raise_shared(error)
    return result


def locked_run(comm, path, prepare, run):
    """Rank 0 locks `path` (store.FileLock) and returns `prepare()` (the lock released again if
    that raises); every rank then returns `run(prepare's result)`; the lock is released at the
    end whatever happens."""
    lock = store.FileLock(path)

    def lock_and_prepare():
        lock.acquire()
        try:
            return prepare()
        except UserError:
            lock.release()
            raise

    try:
        return run(on_root(comm, lock_and_prepare))
    finally:
        if comm.rank == 0:
            lock.release()


def on_all(comm, fn):
    """Run fn on every rank; if any rank raises a UserError, every rank raises the first one
    (so no rank goes on alone into the run and waits there for the others forever)."""
    result = error = None
    try:
        result = fn()
    except UserError as exc:
        error = str(exc)
    errors = comm.allgather(error) if comm.size > 1 else [error]
    raise_shared(next((e for e in errors if e), None))
    return result


def raise_shared(error: str | None) -> None:
    if error:
        exc = UserError(error)
        exc.shared = True  # every rank has it: only rank 0 prints it
        raise exc


def as_splits(data) -> dict[str, Split]:
    """Accept {name: Split | (inputs, labels) | Dataset}, a Split, a pair of tensors or a Dataset."""
    if not isinstance(data, dict):
        data = {"train": data}
    out = {}
    for name, d in data.items():
        if isinstance(d, Split):
            out[name] = d
        elif isinstance(d, (tuple, list)) and len(d) == 2 and all(isinstance(t, torch.Tensor) for t in d):
            out[name] = Split(d[0], d[1].long())
        elif isinstance(d, torch.utils.data.Dataset):
            items = [d[i] for i in range(len(d))]
            out[name] = Split(torch.stack([torch.as_tensor(a) for a, _ in items]), torch.as_tensor([int(b) for _, b in items]))
        else:
            raise UserError(f"data for split {name!r} must be a Split, a (inputs, labels) pair of tensors or a Dataset")
    return out


def as_axis(spec, name: str) -> Axis:
    if isinstance(spec, Axis):
        return spec
    if isinstance(spec, (tuple, list)):
        spec = ":".join(str(v) for v in spec)
    return Axis.parse(spec, name)


def compute_surface(
    model: nn.Module,
    data,
    *,
    x="-1:1:21",
    y=None,
    loss_name: str = "crossentropy",
    dir_type: str = "weights",
    norm: str | tuple[str, str] = "filter",
    ignore: str | tuple[str, str] = "biasbn",
    seed: int = 0,
    directions: list[Direction] | None = None,
    surf_file: str | os.PathLike | None = None,
    batch_size: int = 512,
    device: str | torch.device = "cpu",
    comm=None,
    chunk: int = 0,
    write: str = "auto",
    points_per_pass: int = 1,
    precision: str = "fp32",
    compile: bool = False,
    channels_last: bool = False,
    bn_calibration: Split | None = None,
    force: bool = False,
    progress: bool = False,
    attrs: dict | None = None,
    extra: dict | None = None,
    source: dict | None = None,
) -> Surface:
    """Loss and accuracy of `model` at θ* + αδ (+ βη) over the grid, on every rank of `comm`.

    Directions are drawn from `seed` (see landscape.directions) unless given. Writes (or
    resumes) `surf_file`; without one, a temporary file is used and removed. `extra`: more
    datasets for the new file ({path: array}); `source`: how given directions were made."""
    comm = comm or engine.world()
    axes = [as_axis(x, "x")] + ([as_axis(y, "y")] if y is not None else [])
    grid = Grid(axes[0].coordinates(), axes[1].coordinates() if len(axes) > 1 else None)
    splits = as_splits(data)
    norms = (norm, norm) if isinstance(norm, str) else tuple(norm)
    ignores = (ignore, ignore) if isinstance(ignore, str) else tuple(ignore)
    if directions is None:
        directions = random_directions(model, seed=seed, dir_type=dir_type, ndim=grid.ndim, norms=norms, ignores=ignores)
        source = {"seed": int(seed), "norm": list(norms[: grid.ndim]), "ignore": list(ignores[: grid.ndim])}
    else:
        directions = [{k: torch.as_tensor(v) for k, v in d.items()} for d in directions[: grid.ndim]]
        if len(directions) < grid.ndim:
            raise UserError(f"a {grid.ndim}D grid needs {grid.ndim} directions, got {len(directions)}")
        check_directions(directions, model, dir_type, "the given directions")
        source = source or {"given": True}
    was_training = model.training  # the model is left as it was (the evaluator switches it to eval mode)
    evaluator = SurfaceEvaluator(model, splits, directions, dir_type=dir_type, loss_name=loss_name,
                                 batch_size=batch_size, device=device, points_per_pass=max(points_per_pass, 1),
                                 precision=precision, compile=compile, channels_last=channels_last,
                                 bn_calibration=bn_calibration)
    on_root(comm, evaluator.check_deterministic)
    if points_per_pass == 0:  # measured on rank 0; every rank uses the same K, so values match across runs
        evaluator.set_points_per_pass(on_root(comm, evaluator.fastest_points_per_pass))
    tmpdir = None
    if surf_file is None:
        tmpdir = on_root(comm, lambda: tempfile.mkdtemp(prefix="landscape-"))
        surf_file = Path(tmpdir) / "surface.h5"
    path = Path(surf_file)
    job = {
        "grid_x": [float(grid.x[0]), float(grid.x[-1]), len(grid.x)],
        "grid_y": None if grid.y is None else [float(grid.y[0]), float(grid.y[-1]), len(grid.y)],
        "splits": list(splits), "loss_name": loss_name, "dir_type": dir_type, "directions": source,
        "bn_calibration": None if bn_calibration is None else bn_calibration.fingerprint(),
    }
    def prepare():
        job.update(model_fingerprint=fingerprint(model.state_dict()), directions_fingerprint=fingerprint(directions),
                   data_fingerprint={k: s.fingerprint() for k, s in splits.items()})
        meta = {"versions": f"landscape {__version__}, torch {torch.__version__}, numpy {np.__version__}",
                "seed": int(seed), **(attrs or {})}
        return store.prepare(path, grid, evaluator.metrics, job, directions=directions, attrs=meta, extra=extra,
                             force=force)

    def run(done):
        return engine.run(evaluator, grid, path, done, comm=comm, chunk=chunk, progress=progress,
                          parallel_write={"auto": None, "parallel": True, "gather": False}[write])

    try:
        summary = locked_run(comm, path, prepare, run)
    finally:
        evaluator.restore()
        model.train(was_training)
    with store.open_surface(path) as f:
        values = {m: f[m][...] for m in evaluator.metrics}
        mask = f["mask"][...].astype(bool)
    if tmpdir is not None:
        comm.Barrier()
        if comm.rank == 0:
            path.unlink()
            os.rmdir(tmpdir)
    return Surface(grid.x, grid.y, values, mask, directions, None if tmpdir else str(path), summary)


def pick_device(requested: str, comm) -> torch.device:
    """cuda:(local rank % GPUs) when a GPU is there (and not `cpu`), else the CPU."""
    if requested == "cpu" or not torch.cuda.is_available():
        if requested == "cuda":
            raise UserError("--device cuda but torch sees no GPU: use --device cpu or auto")
        return torch.device("cpu")
    from mpi4py import MPI

    local = comm.Split_type(MPI.COMM_TYPE_SHARED)
    index = local.rank % torch.cuda.device_count()
    local.Free()
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


def set_threads(requested: int, comm) -> None:
    """`requested` torch threads, or the node's cores shared among the ranks on the node."""
    if requested <= 0:
        from mpi4py import MPI

        local = comm.Split_type(MPI.COMM_TYPE_SHARED)
        requested = max(1, (os.cpu_count() or 1) // local.size)
        local.Free()
    torch.set_num_threads(requested)


def load_inputs(job, comm) -> tuple[nn.Module, dict[str, Split], torch.device]:
    """The model (θ* loaded, eval mode), the job's splits and this rank's device, checked;
    a mistake found on any rank stops every rank."""
    set_threads(job.threads, comm)
    device = pick_device(job.device, comm)

    def load():
        model = build_model(job.model, seed=job.seed)
        if job.model_file:
            load_checkpoint(model, job.model_file)
        splits = load_dataset(job.dataset, data_dir=job.data_dir, splits=job.splits)
        if job.subset:
            splits = {name: subset(s, job.subset, job.subset_mode, name) for name, s in splits.items()}
        sample = splits[job.splits[0]]
        num_classes = num_outputs(model, sample.inputs[:4], job.model)
        for name, s in splits.items():
            check_labels(s, num_classes, name)
        if is_import_path(job.loss_name):
            with torch.no_grad():
                check_loss(job.loss_name, model(sample.inputs[:4]), sample.labels[:4])
        return model, splits

    model, splits = on_all(comm, load)
    if comm.size > 1 and (is_import_path(job.model) or is_import_path(job.dataset)):
        same_on_all_ranks(comm, model, splits)
    return model, splits, device


def calibration_split(job) -> Split | None:
    """The first job.bn_recompute train examples (before any --subset), or None."""
    if not job.bn_recompute:
        return None
    train = load_dataset(job.dataset, data_dir=job.data_dir, splits=["train"])["train"]
    return subset(train, job.bn_recompute, "first", "train", "--bn_recompute")


def subset(split: Split, n: int, mode: str, name: str, flag: str = "--subset") -> Split:
    """The first n examples, or n drawn at random with numpy seed 0 (kept in their order)."""
    if n > len(split):
        raise UserError(f"{flag} {n} is larger than split {name!r} ({len(split)} examples): choose at most {len(split)}")
    index = np.arange(n) if mode == "first" else np.sort(np.random.RandomState(0).permutation(len(split))[:n])
    index = torch.from_numpy(index)
    return Split(split.inputs[index], split.labels[index])


def same_on_all_ranks(comm, model: nn.Module, splits: dict[str, Split]) -> None:
    """The user's factories must give every rank the same θ and data (seed them)."""
    mine = (fingerprint(dict(model.state_dict())), {k: s.fingerprint() for k, s in splits.items()})
    if any(other != mine for other in comm.allgather(mine)):
        exc = UserError("your --model or --dataset factory gives different weights or data on different ranks: "
                        "make it deterministic (seed its random numbers, fix the file order)")
        exc.shared = True
        raise exc


def run_job(job, comm=None) -> int:
    """Run a surface job (a config.Job) on every rank; returns the process exit code."""
    comm = comm or engine.world()

    model, splits, device = load_inputs(job, comm)

    def directions_of_job():
        x, y = job.axes()
        directions, extra, source, traj = None, None, None, None
        from_models = job_directions(job, model)
        if from_models:
            directions, x, y, extra, source, traj = from_models
        elif job.dir_file:
            directions = store.read_directions(job.dir_file)
        return x, y, directions, extra, source, traj

    x, y, directions, extra, source, traj = on_all(comm, directions_of_job)
    surface = compute_surface(
        model, splits, x=x, y=y, loss_name=job.loss_name, dir_type=job.dir_type,
        norm=(job.xnorm, job.ynorm or job.xnorm), ignore=(job.xignore, job.yignore or job.xignore),
        seed=job.seed, directions=directions, surf_file=job.surf_file, batch_size=job.batch_size, device=device,
        comm=comm, chunk=job.chunk, write=job.write, points_per_pass=job.points_per_pass, precision=job.precision,
        compile=job.compile, channels_last=job.channels_last, force=job.force,
        bn_calibration=calibration_split(job),
        progress=job.progress, attrs={"config": job.to_yaml()}, extra=extra, source=source)
    summary = surface.summary
    if comm.rank == 0:
        if traj is not None and summary.complete:
            record_checkpoint_losses(job.surf_file, model, splits, traj, surface.directions, loss_name=job.loss_name,
                                     batch_size=job.batch_size, device=device)
        print(f"[landscape] {summary.text()}", file=sys.stderr)
        print(f"[landscape] surface file: {job.surf_file}")
        if job.plot and summary.complete:
            from .plot import plot_file

            figures = plot_file(job.surf_file)
            print(f"[landscape] figures: {Path(job.surf_file).parent}/ ({len(figures)} files)")
    return EXIT_INTERRUPTED if summary.interrupted else EXIT_OK
