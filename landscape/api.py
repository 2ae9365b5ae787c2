"""The public Python API: loss surfaces, Hessian maps, and the jobs the CLI runs.

    from landscape import compute_surface
    s = compute_surface(model, {"train": (X, Y)}, x="-1:1:21", y="-1:1:21", surf_file="s.h5")
    s.values["train/loss"]   # shape (21, 21), axis order (y, x)

Keyword options are the job options of `landscape.options` (the CLI's flags). The library
returns frozen results; only the CLI prints and draws.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import __version__, engine, options
from .analysis.hessian import (
    ATOL,
    START_SEED,
    HessianEvaluator,
    hessian_parameters,
    memory_budget,
    plan_memory,
    sub_grid,
    unconverged,
)
from .analysis.trajectory import ModelDirections, job_directions, record_checkpoint_losses
from .core.data import SUBSET_SEED, Split, as_splits, check_labels, check_tokens, load_dataset
from .core.data import subset as subset_of
from .core.device import pick_device, ranks_per_device, set_threads
from .core.directions import (
    Direction,
    as_arrays,
    check_directions,
    fingerprint,
    random_directions,
    target_tensors,
    tensor_layouts,
)
from .core.evaluate import Evaluation, fastest_points_per_pass
from .core.grid import Grid
from .core.importpath import check_loss, is_import_path
from .core.models import (
    Snapshot,
    batch_statistics,
    build_model,
    cast_weights,
    code_identity,
    device_of,
    load_checkpoint,
    num_outputs,
    run_model,
    vocab_and_context,
    weights_dtype,
)
from .core.selection import Selection
from .core.tasks import resolve_task, task_code
from .errors import SharedUserError, UserError
from .io import reference, surface_file

#: compute_surface's keyword options: the job options that do not name files of a CLI job
SURFACE_OPTIONS = ("x", "y", "dir_type", "xnorm", "ynorm", "xignore", "yignore", "seed", "params", "exclude", "task",
                   "loss_name", "batch_size", "ranks_per_point",
                   "points_per_pass", "precision", "compile", "channels_last", "chunk", "write", "force", "progress")


@dataclass(frozen=True)
class SurfaceResult:
    """The arrays of a surface file: values[metric] has shape (len(y), len(x)) or (len(x),)."""

    x: np.ndarray
    y: np.ndarray | None
    values: dict[str, np.ndarray]
    mask: np.ndarray
    directions: list[Direction]
    path: str | None
    summary: engine.RunSummary | None = field(default=None, repr=False)
    notes: tuple[str, ...] = ()  # choices made at start-up (points per pass), for the caller to show
    evaluation: Evaluation | None = field(default=None, repr=False)  # how the points were evaluated

    @property
    def nonfinite(self) -> int:
        """Computed points with a NaN or infinite value in some metric."""
        return int((self.mask & ~np.all([np.isfinite(v) for v in self.values.values()], axis=0)).sum())


@dataclass(frozen=True)
class HessianInputs:
    """What a Hessian map is computed from, rebuilt from its surface file."""

    stored: surface_file.StoredJob
    grid: Grid
    job: options.Job
    model: nn.Module
    train: Split  # the whole train split (its fingerprint is checked against the file's)
    data: Split  # the subset the Hessian is taken over
    directions: list[Direction]
    device: torch.device


@dataclass(frozen=True)
class HessianResult:
    """A Hessian map's run: the engine's summary, and once complete the points whose loss is not
    finite and the eigenvalues whose residual is above the stopping rule (see analysis.hessian)."""

    path: str
    summary: engine.RunSummary
    nonfinite: int = 0
    unconverged: int = 0


def surface_options(given: dict) -> options.Job:
    """A Job with the default options overridden by compute_surface's keywords (checked)."""
    unknown = [k for k in given if k not in SURFACE_OPTIONS]
    if unknown:
        close = difflib.get_close_matches(unknown[0], SURFACE_OPTIONS, n=1)
        raise TypeError(f"compute_surface() got an unexpected keyword {unknown[0]!r}"
                        + (f": did you mean {close[0]!r}?" if close else f"; options are {', '.join(SURFACE_OPTIONS)}"))
    values = {k: (":".join(str(v) for v in value) if k in "xy" and isinstance(value, (tuple, list)) else value)
              for k, value in given.items()}
    values.setdefault("progress", False)
    return options.build_job(values, "compute_surface")


def compute_surface(model: nn.Module, data, *, directions: list[Direction] | None = None, surf_file=None,
                    device: str | torch.device | None = None, comm=None, bn_calibration: Split | None = None,
                    attrs: dict | None = None, extra: dict | None = None, source: dict | None = None,
                    model_code: str | None = None, **opts) -> SurfaceResult:
    """Loss and accuracy of `model` at θ* + αδ (+ βη) over the grid, on every rank of `comm`.

    `opts`: the options in SURFACE_OPTIONS (x, y, xnorm, batch_size, ...; see the README's
    reference). Directions are drawn from `seed` (see core.directions) unless given. Writes (or
    resumes) `surf_file`; without one, a temporary file is used and removed. `device`: default
    the model's own. The model is left exactly as it was (device, memory format, values, flags).
    `extra`: more datasets for the new file ({path: array}); `source`: how given directions were
    made; `model_code`: what identifies the model's code (default: its class's source)."""
    job = surface_options(opts)
    job = dataclasses.replace(job, task=resolve_task(model, job.task))
    comm = comm or engine.world()
    device = device_of(model) if device is None else torch.device(device)
    axes = [a for a in job.axes() if a is not None]
    grid = Grid(axes[0].coordinates(), axes[1].coordinates() if len(axes) > 1 else None)
    splits = as_splits(data)
    norms, ignores = (job.xnorm, job.ynorm or job.xnorm), (job.xignore, job.yignore or job.xignore)
    select = Selection.of(job.params, job.exclude)
    if directions is None:
        directions = random_directions(model, seed=job.seed, dir_type=job.dir_type, ndim=grid.ndim, norms=norms,
                                       ignores=ignores, select=select)
        source = {"seed": job.seed, "norm": list(norms[: grid.ndim]), "ignore": list(ignores[: grid.ndim])}
    else:
        directions = [{k: torch.as_tensor(v) for k, v in d.items()} for d in directions[: grid.ndim]]
        if len(directions) < grid.ndim:
            raise UserError(f"a {grid.ndim}D grid needs {grid.ndim} directions, got {len(directions)}")
        check_directions(directions, model, job.dir_type, "the given directions", select)
        source = source or {"given": True}
    evaluation = Evaluation(dir_type=job.dir_type, loss_name=job.loss_name, batch_size=job.batch_size, task=job.task,
                            precision=job.precision, compile=job.compile, channels_last=job.channels_last,
                            bn_calibration=bn_calibration, select=select)
    snapshot = Snapshot(model)  # the model is left as it was; the evaluator moves it and sets eval mode
    if job.task == "classification" and not is_import_path(job.loss_name):  # class indices below the outputs
        def class_indices():
            try:
                classes = num_outputs(model, next(iter(splits.values())).inputs[:4].to(device_of(model)))
            finally:
                snapshot.restore()
            return {name: check_labels(s, classes, name) for name, s in splits.items()}

        splits = engine.on_all(comm, class_indices)
    if job.task == "causal_lm":  # token ids below the vocabulary, sequences within the context
        engine.on_all(comm, lambda: check_language_data(model, splits, snapshot))
    sharing = ranks_per_device(comm, device)  # collective; ranks on one GPU share its memory
    group = engine.rank_groups(comm, job.ranks_per_point)  # collective
    whole = splits  # the data fingerprints are of the whole splits, whatever the group size
    if group.size > 1:
        splits = engine.on_all(comm, lambda: shares(model, splits, group))
    try:  # on every rank at once: the user's metric function is first called here (core.tasks.UserMetrics)
        evaluator = engine.on_all(comm, lambda: evaluation.evaluator(model, splits, directions, device, sharing=sharing,
                                                                     points_per_pass=max(job.points_per_pass, 1),
                                                                     group=group))
    except BaseException:
        snapshot.restore()
        raise
    notes = []
    try:
        engine.on_root(comm, evaluator.check_deterministic)
        if job.points_per_pass == 0:  # measured on every rank at once (as loaded as in the run); the least K wins,
            found = comm.allgather(engine.on_all(comm, lambda: fastest_points_per_pass(evaluator)))
            k, note = min(found, key=lambda kn: kn[0])  # so every rank uses the same K and values match across runs
            evaluator.set_points_per_pass(k)
            notes.append(note + (f" (the least over {comm.size} ranks)" if comm.size > 1 else ""))
    except BaseException:
        evaluator.restore()
        snapshot.restore()
        raise
    tmpdir = None
    if surf_file is None:
        tmpdir = engine.on_root(comm, lambda: tempfile.mkdtemp(prefix="landscape-"))
        surf_file = Path(tmpdir) / "surface.h5"
    path = Path(surf_file)
    selected = target_tensors(model, job.dir_type, select)
    identity = {
        "grid_x": [float(grid.x[0]), float(grid.x[-1]), len(grid.x)],
        "grid_y": None if grid.y is None else [float(grid.y[0]), float(grid.y[-1]), len(grid.y)],
        "splits": list(splits), "loss_name": job.loss_name, "dir_type": job.dir_type, "directions": source,
        "bn_calibration": None if bn_calibration is None else bn_calibration.fingerprint(),
        "precision": job.precision, "model_code": model_code or code_identity(model), "task": job.task,
        **({"task_code": task_code(job.task)} if is_import_path(job.task) else {}),  # the user's metric code
        "params": None if select.everything else {**select.record(), "tensors": len(selected),
                                                  "numel": sum(t.numel() for t in selected.values())},
        "weights_dtype": str(weights_dtype(model)).removeprefix("torch."),
    }
    if bn_calibration is not None or batch_statistics(model):  # then the values depend on the batches
        identity["batch_size"] = job.batch_size

    def prepare():
        identity.update(model_fingerprint=fingerprint(model.state_dict()), directions_fingerprint=fingerprint(directions),
                        data_fingerprint={k: s.fingerprint() for k, s in whole.items()})
        meta = {"versions": f"landscape {__version__}, torch {torch.__version__}, numpy {np.__version__}",
                "seed": int(job.seed), **(attrs or {})}
        return surface_file.prepare(path, grid, evaluator.metrics, identity, directions=as_arrays(directions),
                                    attrs=meta, extra=extra, force=job.force)

    # a temporary file lies on rank 0's node only: then rank 0 alone writes it (gather)
    parallel = False if tmpdir is not None else {"auto": None, "parallel": True, "gather": False}[job.write]

    def run(done):
        return engine.run(evaluator, grid, path, done, comm=comm, chunk=job.chunk, progress=job.progress, group=group,
                          parallel_write=parallel)

    try:
        summary = engine.locked_run(comm, path, prepare, run)
    finally:
        evaluator.restore()
        snapshot.restore()
    values, mask = engine.on_root(comm, lambda: surface_file.read_values(path, evaluator.metrics))
    if tmpdir is not None and comm.rank == 0:
        path.unlink()
        os.rmdir(tmpdir)
    return SurfaceResult(grid.x, grid.y, values, mask, directions, None if tmpdir else str(path), summary,
                         tuple(notes), evaluation)


def shares(model: nn.Module, splits: dict[str, Split], group) -> dict[str, Split]:
    """This rank's share of every split in its group of --ranks_per_point ranks (core.data.Split.shard)."""
    if batch_statistics(model):
        raise UserError(f"--ranks_per_point {group.size} splits each point's batches among ranks, but the model's "
                        "batch norm uses each batch's own statistics (track_running_stats=False): leave out "
                        "--ranks_per_point")
    return {name: s.shard(group.rank, group.size, name) for name, s in splits.items()}


def check_language_data(model: nn.Module, splits: dict[str, Split], snapshot: Snapshot | None = None) -> None:
    """Every split's token ids and labels below the model's vocabulary, its sequences no longer
    than the model's context (see core.data.check_tokens)."""
    try:
        vocab, context = vocab_and_context(model, next(iter(splits.values())).inputs[:1].to(device_of(model)))
    finally:
        if snapshot is not None:
            snapshot.restore()
    for name, split in splits.items():
        check_tokens(split, vocab, context, name)


# ---------------------------------------------------------------- jobs of the CLI


def load_inputs(job: options.Job, comm) -> tuple[nn.Module, dict[str, Split], torch.device]:
    """The model (θ* loaded, eval mode), the job's splits and this rank's device, checked;
    a mistake found on any rank stops every rank."""
    set_threads(job.threads, comm)
    device = engine.on_all(comm, lambda: pick_device(job.device, comm))  # collective; a mistake stops every rank

    def load():
        model = build_model(job.model, seed=job.seed, task=None if job.task == "auto" else job.task, dtype=job.dtype)
        if job.model_file:
            load_checkpoint(model, job.model_file)
        cast_weights(model, job.dtype)
        splits = load_dataset(job.dataset, data_dir=job.data_dir, splits=job.splits, subset=(job.subset, job.subset_mode),
                              seq_len=job.seq_len, model=job.model, tokenizer=job.tokenizer)
        sample = splits[job.splits[0]]
        task = resolve_task(model, job.task)
        if task == "causal_lm":
            check_language_data(model, splits)
        if is_import_path(job.loss_name):
            check_loss(job.loss_name, run_model(model, sample.inputs[:4], job.model), sample.labels[:4])
        elif task == "classification":
            num_outputs(model, sample.inputs[:4], job.model)  # labels are checked by compute_surface
        elif not is_import_path(job.task):  # the user's metric function takes any output (checked at start-up)
            run_model(model, sample.inputs[:4], job.model)
        return model, splits

    model, splits = engine.on_all(comm, load)
    if comm.size > 1 and (is_import_path(job.model) or is_import_path(job.dataset)):
        same_on_all_ranks(comm, model, splits)
    return model, splits, device


def calibration_split(job: options.Job, train: Split | None = None) -> Split | None:
    """The first job.bn_recompute train examples (before any --subset), or None: a view of `train`,
    the job's loaded train split, when it holds them (no --subset, or --subset_mode first with at
    least as many); else only those examples are read."""
    n = job.bn_recompute
    if not n:
        return None
    if train is not None and (not job.subset or (job.subset_mode == "first" and job.subset >= n)):
        return subset_of(train, n, "first", "train", "--bn_recompute")
    return load_dataset(job.dataset, data_dir=job.data_dir, splits=["train"], subset=(n, "first"),
                        flag="--bn_recompute", seq_len=job.seq_len, model=job.model, tokenizer=job.tokenizer)["train"]


def same_on_all_ranks(comm, model: nn.Module, splits: dict[str, Split]) -> None:
    """The user's factories must give every rank the same θ and data (seed them)."""
    mine = (fingerprint(dict(model.state_dict())), {k: s.fingerprint() for k, s in splits.items()})
    if any(other != mine for other in comm.allgather(mine)):
        raise SharedUserError("your --model or --dataset factory gives different weights or data on different ranks: "
                              "make it deterministic (seed its random numbers, fix the file order)")


def surface_job(job: options.Job, comm=None) -> SurfaceResult:
    """Run a surface job (`landscape surface`) on every rank: the model, data and directions it
    names, the surface into job.surf_file, and a trajectory's checkpoint losses once complete."""
    comm = comm or engine.world()
    model, splits, device = load_inputs(job, comm)
    job = dataclasses.replace(job, task=resolve_task(model, job.task))  # the stored config states the task

    def directions_of_job() -> ModelDirections:
        found = job_directions(job, model)
        if found is None:
            stored = surface_file.read_directions(job.dir_file) if job.dir_file else None
            found = ModelDirections(stored, job.x, job.y, {}, None)
        return found

    chosen = engine.on_all(comm, directions_of_job)
    opts = {**{k: getattr(job, k) for k in SURFACE_OPTIONS}, "x": chosen.x, "y": chosen.y}
    result = compute_surface(
        model, splits, directions=chosen.directions, surf_file=job.surf_file, device=device, comm=comm,
        bn_calibration=calibration_split(job, splits.get("train")), attrs={"config": job.to_yaml()}, extra=chosen.extra,
        source=chosen.source, model_code=code_identity(model, job.model), **opts)
    if comm.rank == 0 and chosen.trajectory is not None and result.summary.complete:
        record_checkpoint_losses(job.surf_file, model, splits, chosen.trajectory, result.directions, result.evaluation,
                                 device)
    return result


def hessian_map(surf_file, *, stride: int = 1, subset: int = 512, tol: float = 1e-3, max_iter: int = 100,
                batch_size: int = 512, force: bool = False, threads: int = 0, device: str = "auto",
                progress: bool = False, chunk: int = 0, ranks_per_point: int = 1, comm=None) -> HessianResult:
    """Compute (or resume) the Hessian map of a surface file on every rank of `comm`.

    Model, θ*, data and directions are rebuilt from the file (its `config` attr and /directions);
    the map covers every `stride`-th point of each axis and is stored in the file's `hessian`
    group with its settings as attrs (see README.md, "Hessian maps")."""
    comm = comm or engine.world()
    path = Path(surf_file)

    def setup():  # the same on every rank
        if not tol > 0 or not math.isfinite(tol):
            raise UserError(f"--tol {tol} must be a positive number, e.g. 1e-3")
        if max_iter < 1:
            raise UserError(f"--max_iter {max_iter} must be at least 1")
        if batch_size < 1:
            raise UserError(f"--batch_size {batch_size} must be at least 1")
        stored = engine.on_root(comm, lambda: surface_file.read_job(path))
        grid = sub_grid(stored.x, stored.y, int(stride))
        job = options.build_job(stored.provenance.config, f"the config stored in {str(path)!r}")
        def checkpoint_here():  # every rank looks on its own node; one missing stops all
            if job.model_file and not Path(job.model_file).is_file():
                raise UserError(f"the surface's checkpoint {job.model_file!r} (from its stored config) is not found "
                                f"from {os.getcwd()!r}: run landscape hessian in the folder the surface job ran in")

        engine.on_all(comm, checkpoint_here)
        job = dataclasses.replace(job, splits=["train"], threads=int(threads), device=device)
        model, splits, dev = load_inputs(job, comm)
        job = dataclasses.replace(job, task=resolve_task(model, job.task))
        data = subset_of(splits["train"], int(subset), "random", "train")
        directions = [{k: torch.from_numpy(v) for k, v in d.items()} for d in stored.directions[: grid.ndim]]
        if len(directions) < grid.ndim:
            raise UserError(f"{str(path)!r} has {len(directions)} direction(s) for a {grid.ndim}D grid: recompute the surface")
        check_directions(directions, model, job.dir_type, str(path), Selection.of(job.params, job.exclude))
        return HessianInputs(stored, grid, job, model, splits["train"], data, directions, dev)

    try:
        h = setup()
    except UserError as exc:
        raise SharedUserError(str(exc)) from None  # every rank meets the same error: rank 0 prints it
    job, model = h.job, h.model

    def check_same_inputs():
        want, have = h.stored.provenance.job.get("model_fingerprint"), fingerprint(model.state_dict())
        if want and want != have:
            raise UserError(f"θ* from {job.model_file or 'seed ' + str(job.seed)!r} is not the model of the surface in "
                            f"{str(path)!r} (fingerprint {have} != {want}): restore the checkpoint the surface was computed with")
        want = h.stored.provenance.job.get("data_fingerprint", {}).get("train")
        if want and want != h.train.fingerprint():
            raise UserError(f"the train split of dataset {job.dataset!r} differs from the one in {str(path)!r}: "
                            "use the same data as the surface job")
        want = h.stored.provenance.job.get("task_code")
        if want and want != task_code(job.task):
            raise UserError(f"the source of --task {job.task} changed since the surface in {str(path)!r} was computed: "
                            "restore the metric function it was computed with")

    engine.on_root(comm, check_same_inputs)
    select = Selection.of(job.params, job.exclude)
    params = hessian_parameters(model, select)
    settings = {
        "stride": int(stride), "subset": int(subset), "subset_size": len(h.data), "subset_seed": SUBSET_SEED,
        "subset_draw": "numpy RandomState(subset_seed), sorted", "split": "train", "loss_name": job.loss_name,
        "tol": float(tol), "max_iter": int(max_iter), "batch_size": int(batch_size), "start_seed": START_SEED,
        "precision": job.precision, "bn_recompute": job.bn_recompute, "task": job.task,
        "atol": ATOL, "params": "all trainable parameters" if select.everything else json.dumps(select.record()),
        "hvp": "double backward, float64 sum over batches",
        "solver": "lanczos, full reorthogonalization",
    }
    if is_import_path(job.task):  # the user's metric code: a resume with other code is refused
        settings["task_code"] = task_code(job.task)
    sharing = ranks_per_device(comm, h.device)  # collective
    n = sum(p.numel() for p in params)
    memory = engine.on_all(comm, lambda: plan_memory(n, max_iter, memory_budget(h.device, sharing)))  # before any work
    evaluation = Evaluation(dir_type=job.dir_type, loss_name=job.loss_name, batch_size=job.batch_size, task=job.task,
                            precision=job.precision, bn_calibration=calibration_split(job, h.train),
                            select=select)  # the surface's
    group = engine.rank_groups(comm, ranks_per_point)  # collective
    data = engine.on_all(comm, lambda: shares(model, {"train": h.data}, group)["train"]) if group.size > 1 else h.data
    evaluator = HessianEvaluator(model, data, h.directions, evaluation=evaluation, batch_size=batch_size,
                                 device=h.device, tol=tol, max_iter=max_iter, memory=memory, group=group)

    def prepare():
        return surface_file.prepare_group(path, surface_file.HESSIAN, h.grid, evaluator.metrics, settings,
                                          mask=surface_file.HESSIAN_MASK, force=force,
                                          attrs={"versions": f"landscape {__version__}, torch {torch.__version__}",
                                                 "ratio": surface_file.HESSIAN_RATIO})

    def run(done):
        return engine.run(evaluator, h.grid, path, done, comm=comm, mask=surface_file.HESSIAN_MASK, chunk=chunk, group=group,
                          progress=progress, label="hessian")

    try:
        summary = engine.locked_run(comm, path, prepare, run)
    finally:
        evaluator.restore()
    nan = slow = 0
    if summary.complete:
        stored_map = engine.on_root(comm, lambda: surface_file.read_hessian(path))
        nan, slow = int(np.isnan(stored_map.values["lambda_max"]).sum()), unconverged(stored_map.values, tol)
    return HessianResult(str(path), summary, nan, slow)


# ---------------------------------------------------------------- the reference tool's files


def import_directions(ref_file, out_file, model: nn.Module, *, model_name: str = "", dir_type: str = "auto",
                      force: bool = False) -> tuple[str, int]:
    """Convert a reference direction file into a directions-only file for --dir_file.
    Returns the dir_type found and the number of directions."""
    out = Path(out_file)
    reference.check_output(out, force, ref_file)
    directions, kind = read_reference_directions(ref_file, model, dir_type)
    surface_file.write_directions(out, as_arrays(directions), {"dir_type": kind, "model": model_name,
                                                              "source": str(ref_file)})
    return kind, len(directions)


def read_reference_directions(path, model: nn.Module, dir_type: str = "auto") -> tuple[list[Direction], str]:
    """Directions of a reference direction file keyed by the tensor names of `model`.

    dir_type: weights, states, or auto (the tensor order whose count and shapes fit).
    Returns the directions (over `target_tensors(model, dir_type)`) and the dir_type."""
    lists = reference.read_lists(path)
    kind, layout = reference.match_layout(lists, tensor_layouts(model), dir_type, path)
    wanted = target_tensors(model, kind)
    return [{name: torch.as_tensor(a, dtype=torch.float32) for (name, _), a in zip(layout, arrays) if name in wanted}
            for arrays in lists], kind


def export_reference(surf_file, out_file, *, model: nn.Module | None = None, dir_out=None,
                     force: bool = False) -> list[str]:
    """The surface under the reference tool's key names (see io.reference); with `model` and
    `dir_out` also its directions as a reference direction file. Returns the keys written."""
    layouts = None if model is None else tensor_layouts(model)
    return reference.export_surface(surf_file, out_file, layouts=layouts, dir_out=dir_out, force=force)
