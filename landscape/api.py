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
from .analysis import ensemble as ensemble_stats
from .analysis.hessian import (
    ATOL,
    START_SEED,
    HessianEvaluator,
    hessian_parameters,
    memory_budget,
    plan_memory,
    plan_vectors,
    sub_grid,
    unconverged,
)
from .analysis.spectrum import job_eigen_directions
from .analysis.trajectory import ModelDirections, job_directions, record_checkpoint_losses
from .core import tuning
from .core.data import SUBSET_SEED, Holding, Split, accepted_fingerprint, as_splits, check_labels, check_tokens, load_dataset
from .core.data import subset as subset_of
from .core.device import free_memory, pick_device, ranks_per_device, set_threads
from .core.directions import (
    Direction,
    as_arrays,
    check_directions,
    fingerprint,
    random_directions,
    target_tensors,
    tensor_layouts,
)
from .core.ensemble import EnsembleEvaluator, member_directions, member_seed
from .core.evaluate import Evaluation
from .core.grid import EnsembleGrid, Grid
from .core.importpath import check_loss, is_import_path
from .core.memory import check_fits, example_bytes, surface_needs
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
SURFACE_OPTIONS = ("x", "y", "dir_type", "xnorm", "ynorm", "xignore", "yignore", "seed", "ensemble", "member",
                   "store_directions", "epsilons", "params", "exclude", "task",
                   "loss_name", "batch_size", "ranks_per_point", "data_in_memory",
                   "points_per_pass", "precision", "compile", "channels_last", "fold_bn", "chunk", "write", "force",
                   "progress")


@dataclass(frozen=True)
class SurfaceResult:
    """The arrays of a surface file: values[metric] has shape (len(y), len(x)) or (len(x),); of a
    direction ensemble, values['ensemble/<split>/<metric>'] and the mask have a leading member axis."""

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
    members = job.ensemble or 0  # a direction ensemble (core.ensemble): 0 for one plane
    splits = as_splits(data, Holding(job.data_in_memory, ranks_per_device(comm, torch.device("cpu"))))  # collective
    norms, ignores = (job.xnorm, job.ynorm or job.xnorm), (job.xignore, job.yignore or job.xignore)
    select = Selection.of(job.params, job.exclude)
    if directions is None:
        directions = random_directions(model, seed=member_seed(job.seed, job.member), dir_type=job.dir_type,
                                       ndim=grid.ndim, norms=norms, ignores=ignores, select=select)
        source = {"seed": job.seed, "norm": list(norms[: grid.ndim]), "ignore": list(ignores[: grid.ndim]),
                  **({"member": job.member} if job.member else {})}
    elif members:
        raise UserError("--ensemble draws its members' directions from --seed: leave out the given directions")
    else:
        directions = [{k: torch.as_tensor(v) for k, v in d.items()} for d in directions[: grid.ndim]]
        if len(directions) < grid.ndim:
            raise UserError(f"a {grid.ndim}D grid needs {grid.ndim} directions, got {len(directions)}")
        check_directions(directions, model, job.dir_type, "the given directions", select)
        source = source or {"given": True}
    # automatic options: as the file's first run chose them (its values stay consistent), else measured below
    first = {} if surf_file is None or job.force else engine.on_root(
        comm, lambda: surface_file.read_run_options(surf_file).get("evaluation", {}))
    automatic = {"channels_last": job.channels_last is None, "compile": job.compile is None,
                 "points_per_pass": job.points_per_pass == 0, "fold_bn": job.fold_bn is None,
                 "batch_size": job.batch_size == 0}
    if first:  # a file begun before BN folding (automatic batch sizes) existed goes on unfolded (at 512)
        first = {"fold_bn": False, "batch_size": options.DEFAULT_BATCH, **first}
    job = dataclasses.replace(job, **{k: first[k] for k, auto in automatic.items() if auto and k in first})
    # an automatic batch size is measured (core.tuning) unless the values depend on the batches
    auto_batch = job.batch_size == 0 and bn_calibration is None and not batch_statistics(model)
    batch_size = job.batch_size or options.DEFAULT_BATCH
    evaluation = Evaluation(dir_type=job.dir_type, loss_name=job.loss_name, batch_size=batch_size, task=job.task,
                            precision=job.precision, compile=bool(job.compile),
                            channels_last=(tuning.default_layout(model, splits, device) if job.channels_last is None
                                           else job.channels_last),
                            fold_bn=own_model(model) if job.fold_bn is None else job.fold_bn,
                            bn_calibration=bn_calibration, select=select)
    snapshot = Snapshot(model)  # the model is left as it was; the evaluator moves it and sets eval mode
    if job.task == "classification" and not is_import_path(job.loss_name):  # class indices below the outputs
        def class_indices():
            try:
                classes = num_outputs(model, next(iter(splits.values())).head(4).inputs.to(device_of(model)))
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
    need = surface_needs(model, directions, splits, device, dir_type=job.dir_type, select=select,
                         points_per_pass=max(job.points_per_pass, 1), batch_size=batch_size)
    budget = engine.on_all(comm, lambda: free_memory(device) // sharing)
    engine.on_all(comm, lambda: check_fits(need, budget, device, sharing))  # before any work
    try:  # on every rank at once: the user's metric function is first called here (core.tasks.UserMetrics)
        evaluator = engine.on_all(comm, lambda: evaluation.evaluator(model, splits, directions, device, sharing=sharing,
                                                                     points_per_pass=max(job.points_per_pass, 1),
                                                                     group=group))
    except BaseException:
        snapshot.restore()
        raise
    notes = [f"split {name!r}: {s.note}" for name, s in whole.items() if s.note]  # held or streamed, and why
    if evaluator.folded:
        notes.append(f"batch norm folded into the convolution before it: {evaluator.folded} pair(s) (--no-fold_bn "
                     "keeps them apart)")
    room = budget - sum(need.values())  # what this rank may still allocate: the batches' activations
    try:
        per_example = 0
        if auto_batch or job.points_per_pass == 0:  # the activations of an example, an upper bound (core.memory)
            per_example = max(comm.allgather(engine.on_all(comm, lambda: example_bytes(evaluator))))
        if auto_batch:  # 512, or less where that does not fit
            batch_size = evaluator.batch_size = tuning.starting_batch(per_example, room)
            evaluation = dataclasses.replace(evaluation, batch_size=batch_size)
        run_options = {"ranks_per_point": group.size, "ranks": comm.size,
                       "evaluation": {"channels_last": evaluation.channels_last, "compile": evaluation.compile,
                                      "points_per_pass": max(job.points_per_pass, 1), "batch_size": batch_size}}
        engine.on_root(comm, evaluator.check_deterministic)
        if job.channels_last is None or job.compile is None or job.points_per_pass == 0 or auto_batch:  # core.tuning
            def build(chosen, k):
                return engine.on_all(comm, lambda: chosen.evaluator(model, splits, directions, device, sharing=sharing,
                                                                    points_per_pass=k, group=group))

            total = grid.size * max(members, 1)
            left = total if surf_file is None or job.force else engine.on_root(comm, lambda: surface_file.points_left(
                surf_file, total, surface_file.ENSEMBLE_MASK if members else surface_file.MASK))
            evaluation, evaluator, choice = tuning.tune(
                evaluation, evaluator, build, channels_last=job.channels_last, compile=job.compile,
                points_per_pass=job.points_per_pass, batch_size=auto_batch, room=room, per_example=per_example,
                points_left=left, groups=comm.size // group.size, comm=comm)
            notes.append(choice.note)
            run_options["evaluation"] = choice.record()
        run_options["evaluation"]["fold_bn"] = bool(evaluator.folded)  # what was folded: kept on resume
    except BaseException:
        evaluator.restore()
        snapshot.restore()
        raise
    mask = surface_file.MASK
    if members:  # every member's points through the same evaluator, its directions drawn when its points come
        evaluator = EnsembleEvaluator(evaluator, seed=job.seed, norms=norms[: grid.ndim], ignores=ignores[: grid.ndim])
        grid, mask = EnsembleGrid(members, grid), surface_file.ENSEMBLE_MASK
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
        identity["batch_size"] = batch_size
    if members:
        identity["ensemble"] = {"members": members}

    def prepare():
        stored = stored_data_fingerprints(path, job.force)  # an older file's token-data fingerprints still resume
        identity.update(model_fingerprint=fingerprint(model.state_dict()), directions_fingerprint=fingerprint(directions),
                        data_fingerprint={k: accepted_fingerprint(s, stored.get(k)) for k, s in whole.items()})
        meta = {"versions": f"landscape {__version__}, torch {torch.__version__}, numpy {np.__version__}",
                "seed": int(job.seed), **(attrs or {})}
        new = job.force or not path.exists()  # `extra` datasets go into a new file only
        kept = stored_members(model, job, members, norms, ignores, select) if job.store_directions and new else {}
        done = surface_file.prepare(path, grid, evaluator.metrics, identity, mask=mask,
                                    directions=as_arrays(directions), attrs=meta, extra={**(extra or {}), **kept},
                                    force=job.force)
        surface_file.record_run_options(path, run_options)
        return done

    # a temporary file lies on rank 0's node only: then rank 0 alone writes it (gather)
    parallel = False if tmpdir is not None else {"auto": None, "parallel": True, "gather": False}[job.write]

    def run(done):
        return engine.run(evaluator, grid, path, done, comm=comm, chunk=job.chunk, progress=job.progress, group=group,
                          parallel_write=parallel, mask=mask)

    try:
        summary = engine.locked_run(comm, path, prepare, run)
    finally:
        evaluator.restore()
        snapshot.restore()
    values, done = engine.on_root(comm, lambda: surface_file.read_values(path, evaluator.metrics, mask))
    if members and done.all():  # the ensemble's statistics, in the file once it is complete
        engine.on_root(comm, lambda: write_ensemble_results(path, grid, values, job))
    if tmpdir is not None and comm.rank == 0:
        path.unlink()
        os.rmdir(tmpdir)
    return SurfaceResult(grid.x, grid.y, values, done, directions, None if tmpdir else str(path), summary,
                         tuple(notes), evaluation)


def own_model(model: nn.Module) -> bool:
    """One of landscape's own models (core.models, core.zoo), whose forward torch.fx traces exactly: BN is folded
    into them by default. A user's model is traced only when asked (--fold_bn): tracing runs its forward once,
    symbolically, so Python side effects and branches on non-tensor values are fixed at that moment."""
    return type(model).__module__.startswith("landscape.")


def stored_members(model: nn.Module, job: options.Job, members: int, norms, ignores, select) -> dict:
    """--store_directions: every member's directions, as datasets ensemble/directions/<m>/<axis>/<name>
    (members · ndim · |θ| floats in the file; drawn here, on rank 0, before any point)."""
    ndim = 2 if job.y else 1
    tensors = target_tensors(model, job.dir_type, select)
    return {f"{surface_file.ENSEMBLE}/directions/{m}/{axis}/{name}": t.numpy()
            for m in range(members)
            for axis, d in zip("xy", member_directions(tensors, seed=job.seed, member=m, ndim=ndim, norms=norms,
                                                       ignores=ignores))
            for name, t in d.items()}


def write_ensemble_results(path: Path, grid: EnsembleGrid, values: dict, job: options.Job) -> None:
    """The statistics of a complete ensemble (analysis.ensemble) into its file."""
    by_split: dict = {}
    for name, v in values.items():  # ensemble/<split>/<metric>
        _, split, metric = name.split("/", 2)
        by_split.setdefault(split, {})[metric] = v
    epsilons = options.epsilon_values(job.epsilons)
    arrays = ensemble_stats.results(grid.x, grid.y, by_split, epsilons)
    surface_file.write_ensemble_results(path, arrays, {
        "members": grid.members, "seed": int(job.seed), "epsilons": epsilons,
        "quantiles": list(ensemble_stats.QUANTILES), "member_seeds": "member 0: seed; member m: core.ensemble.member_seed",
        "statistics": ensemble_stats.DEFINITIONS})


def stored_data_fingerprints(path: Path, force: bool = False) -> dict:
    """The data fingerprints of the job in an existing surface file ({} when there is none)."""
    if force or not path.exists():
        return {}
    try:
        return surface_file.read_job(path).provenance.job.get("data_fingerprint") or {}
    except Exception:  # not a surface file: surface_file.prepare says what is wrong
        return {}


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
        vocab, context = vocab_and_context(model, next(iter(splits.values())).head(1).inputs.to(device_of(model)))
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
    node = ranks_per_device(comm, torch.device("cpu"))  # collective: the ranks that share this node's memory

    def load():
        model = build_model(job.model, seed=job.seed, task=None if job.task == "auto" else job.task, dtype=job.dtype)
        if job.model_file:
            load_checkpoint(model, job.model_file)
        cast_weights(model, job.dtype)
        splits = load_dataset(job.dataset, data_dir=job.data_dir, splits=job.splits, subset=(job.subset, job.subset_mode),
                              seq_len=job.seq_len, model=job.model, tokenizer=job.tokenizer,
                              in_memory=job.data_in_memory, ranks=node)
        sample = splits[job.splits[0]].head(4)
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

    def stored_eigen_directions():  # a resume reuses the file's Hessian directions, never recomputes them
        if not job.xdir or job.force or not Path(job.surf_file).is_file():
            return None
        try:
            found = surface_file.read_job(job.surf_file)
        except UserError:
            return None
        return {"source": found.provenance.job.get("directions"), "directions": found.directions}

    earlier = engine.on_root(comm, stored_eigen_directions)

    def directions_of_job() -> ModelDirections:
        train = splits.get("train", next(iter(splits.values())))
        found = job_eigen_directions(job, model, train, earlier, comm) or job_directions(job, model)
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


def map_inputs(path: Path, *, stride: int, subset: int, threads: int, device: str, comm, check=None,
               ensemble_ok: bool = False) -> HessianInputs:
    """Model, θ*, data and directions of a surface file, rebuilt on every rank and checked against the file's
    fingerprints (`check()`: the caller's own option checks, run first; a mistake is one line on rank 0).
    `ensemble_ok`: a direction ensemble's file is accepted (for what is computed at θ* alone)."""

    def setup():  # the same on every rank
        if check is not None:
            check()
        if not ensemble_ok and engine.on_root(comm, lambda: surface_file.is_ensemble(path)):
            raise UserError(f"{str(path)!r} holds a direction ensemble: Hessian maps and spectra take one plane; compute "
                            "one member alone (--seed S --member M, without --ensemble) and use that file")
        stored = engine.on_root(comm, lambda: surface_file.read_job(path))
        grid = sub_grid(stored.x, stored.y, int(stride))
        job = options.build_job(stored.provenance.config, f"the config stored in {str(path)!r}")
        def checkpoint_here():  # every rank looks on its own node; one missing stops all
            if job.model_file and not Path(job.model_file).exists():  # a file or an HF checkpoint folder
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
        if want and want != accepted_fingerprint(h.train, want):
            raise UserError(f"the train split of dataset {job.dataset!r} differs from the one in {str(path)!r}: "
                            "use the same data as the surface job")
        want = h.stored.provenance.job.get("task_code")
        if want and want != task_code(job.task):
            raise UserError(f"the source of --task {job.task} changed since the surface in {str(path)!r} was computed: "
                            "restore the metric function it was computed with")

    engine.on_root(comm, check_same_inputs)
    return h


def map_settings(h: HessianInputs, *, stride: int, subset: int, batch_size: int, select: Selection) -> dict:
    """The settings every curvature map and spectrum records (and a resume compares)."""
    job = h.job
    settings = {
        "stride": int(stride), "subset": int(subset), "subset_size": len(h.data), "subset_seed": SUBSET_SEED,
        "subset_draw": "numpy RandomState(subset_seed), sorted", "split": "train", "loss_name": job.loss_name,
        "batch_size": int(batch_size), "precision": job.precision, "bn_recompute": job.bn_recompute, "task": job.task,
        "params": "all trainable parameters" if select.everything else json.dumps(select.record()),
        "hvp": "double backward, float64 sum over batches",
    }
    if is_import_path(job.task):  # the user's metric code: a resume with other code is refused
        settings["task_code"] = task_code(job.task)
    return settings


def map_evaluation(h: HessianInputs, select: Selection) -> Evaluation:
    job = h.job
    return Evaluation(dir_type=job.dir_type, loss_name=job.loss_name, batch_size=job.batch_size or options.DEFAULT_BATCH,
                      task=job.task, precision=job.precision, bn_calibration=calibration_split(job, h.train),
                      select=select)  # the surface's


def run_map(path: Path, h: HessianInputs, evaluator, *, group_name: str, settings: dict, group, force: bool,
            chunk: int, progress: bool, comm, attrs: dict | None = None) -> engine.RunSummary:
    """Map `evaluator` over h.grid into the file's `group_name` group (resumed from its mask)."""
    mask = f"{group_name}/{surface_file.MASK}"

    def prepare():
        return surface_file.prepare_group(path, group_name, h.grid, evaluator.metrics, settings, mask=mask, force=force,
                                          attrs={"versions": f"landscape {__version__}, torch {torch.__version__}",
                                                 **(attrs or {})})

    def run(done):
        return engine.run(evaluator, h.grid, path, done, comm=comm, mask=mask, chunk=chunk, group=group,
                          progress=progress, label=group_name.replace("_", " "))

    try:
        return engine.locked_run(comm, path, prepare, run)
    finally:
        evaluator.restore()


def hessian_map(surf_file, *, stride: int = 1, subset: int = 512, tol: float = 1e-3, max_iter: int = 100,
                batch_size: int = 512, force: bool = False, threads: int = 0, device: str = "auto",
                progress: bool = False, chunk: int = 0, ranks_per_point: int = 1, params: str | None = None,
                exclude: str | None = None, comm=None) -> HessianResult:
    """Compute (or resume) the Hessian map of a surface file on every rank of `comm`.

    Model, θ*, data and directions are rebuilt from the file (its `config` attr and /directions);
    the map covers every `stride`-th point of each axis and is stored in the file's `hessian`
    group with its settings as attrs (see README.md, "Hessian maps"). `params`/`exclude`: globs
    of the tensors H is taken over (default: the surface's selection)."""
    from .analysis.spectrum import curvature_selection

    comm = comm or engine.world()
    path = Path(surf_file)

    def check():
        if not tol > 0 or not math.isfinite(tol):
            raise UserError(f"--tol {tol} must be a positive number, e.g. 1e-3")
        if max_iter < 1:
            raise UserError(f"--max_iter {max_iter} must be at least 1")
        if batch_size < 1:
            raise UserError(f"--batch_size {batch_size} must be at least 1")

    h = map_inputs(path, stride=stride, subset=subset, threads=threads, device=device, comm=comm, check=check)
    job, model = h.job, h.model
    select = Selection.of(job.params, job.exclude)
    curv = curvature_selection(model, select, params, exclude)
    settings = {**map_settings(h, stride=stride, subset=subset, batch_size=batch_size, select=curv),
                "tol": float(tol), "max_iter": int(max_iter), "start_seed": START_SEED, "atol": ATOL,
                "solver": "lanczos, full reorthogonalization"}
    sharing = ranks_per_device(comm, h.device)  # collective
    n = sum(p.numel() for p in hessian_parameters(model, curv))
    memory = engine.on_all(comm, lambda: plan_memory(n, max_iter, memory_budget(h.device, sharing)))  # before any work
    group = engine.rank_groups(comm, ranks_per_point)  # collective
    data = engine.on_all(comm, lambda: shares(model, {"train": h.data}, group)["train"]) if group.size > 1 else h.data
    evaluator = HessianEvaluator(model, data, h.directions, evaluation=map_evaluation(h, select), batch_size=batch_size,
                                 device=h.device, tol=tol, max_iter=max_iter, memory=memory, group=group,
                                 curvature_select=curv)
    summary = run_map(path, h, evaluator, group_name=surface_file.HESSIAN, settings=settings, group=group, force=force,
                      chunk=chunk, progress=progress, comm=comm, attrs={"ratio": surface_file.HESSIAN_RATIO})
    nan = slow = 0
    if summary.complete:
        stored_map = engine.on_root(comm, lambda: surface_file.read_hessian(path))
        nan, slow = int(np.isnan(stored_map.values["lambda_max"]).sum()), unconverged(stored_map.values, tol)
    return HessianResult(str(path), summary, nan, slow)


def curvature_map(surf_file, *, kind: str = "trace", stride: int = 1, subset: int = 512, k: int = 3,
                  samples: int = 30, estimator: str = "hutchpp", curvature: str = "hessian", tol: float = 1e-3,
                  max_iter: int = 100, batch_size: int = 512, force: bool = False, threads: int = 0,
                  device: str = "auto", progress: bool = False, chunk: int = 0, ranks_per_point: int = 1,
                  basis: int = 0, start_vectors: int = 1, params: str | None = None, exclude: str | None = None,
                  comm=None) -> HessianResult:
    """Compute (or resume) the trace map (`kind='trace'`: Hutch++ or Hutchinson with `samples`
    products per point, a 95% interval; group `hessian_trace`) or the top-k map (`kind='topk'`:
    the k largest eigenvalues and residuals, thick-restart block Lanczos to `tol` with at most `basis`
    vectors from `start_vectors` start vectors; group `hessian_topk`) of a surface
    file, as `hessian_map` does (same inputs, engine, resume, MPI; see analysis.spectrum).
    `curvature='ggn'`: the generalized Gauss–Newton (= Fisher of softmax cross-entropy) instead of H.
    `unconverged` of the result: top-k eigenvalues above the stopping rule. `params`/`exclude`:
    globs of the tensors the curvature is taken over (default: the surface's selection)."""
    from .analysis.spectrum import (
        CURVATURES,
        ESTIMATORS,
        TopKEvaluator,
        TraceEvaluator,
        basis_size,
        check_ggn,
        curvature_selection,
        eigenpairs_bytes,
        trace_bytes,
    )

    comm = comm or engine.world()
    path = Path(surf_file)
    block = int(start_vectors)  # block Lanczos: the block size

    def check():
        if kind not in ("trace", "topk"):
            raise UserError(f"unknown map {kind!r}: choose extremes, trace or topk")
        if curvature not in CURVATURES:
            raise UserError(f"unknown --curvature {curvature!r}: choose one of {', '.join(CURVATURES)}")
        if estimator not in ESTIMATORS:
            raise UserError(f"unknown --estimator {estimator!r}: choose one of {', '.join(ESTIMATORS)}")
        if kind == "trace" and samples < (6 if estimator == "hutchpp" else 2):
            raise UserError(f"--samples {samples} is too few for {estimator}: use at least "
                            f"{6 if estimator == 'hutchpp' else 2} (30 is a good start)")
        if kind == "topk" and not (1 <= k <= max_iter):
            raise UserError(f"--k {k} must be between 1 and --max_iter {max_iter}")
        if kind == "topk" and block < 1:
            raise UserError(f"--start_vectors {block} must be at least 1 (2 finds doubled eigenvalues)")
        if kind == "topk" and (basis < 0 or 0 < basis < k + block):
            raise UserError(f"--basis {basis} must be 0 (automatic) or at least --k + --start_vectors = {k + block}")
        if not tol > 0 or not math.isfinite(tol):
            raise UserError(f"--tol {tol} must be a positive number, e.g. 1e-3")
        if batch_size < 1:
            raise UserError(f"--batch_size {batch_size} must be at least 1")

    h = map_inputs(path, stride=stride, subset=subset, threads=threads, device=device, comm=comm, check=check)
    job, model = h.job, h.model
    if curvature == "ggn":
        check_ggn(resolve_task(model, job.task), job.loss_name)
    select = Selection.of(job.params, job.exclude)
    curv = curvature_selection(model, select, params, exclude)
    n = sum(p.numel() for p in hessian_parameters(model, curv))
    settings = {**map_settings(h, stride=stride, subset=subset, batch_size=batch_size, select=curv),
                "curvature": curvature}
    if kind == "trace":
        settings.update(samples=int(samples), estimator=estimator, trace_seed=1,
                        interval="estimate ± t(0.975, s-1)·sd/sqrt(s) over the s Hutchinson samples")
        need = trace_bytes(n, samples, estimator)
        what = f"the trace map's vectors ({n:,} parameters, --samples {samples}, {estimator})"
        fix = "lower --samples"
    else:
        m = min(basis_size(k, block, basis), n)
        settings.update(k=int(k), tol=float(tol), max_iter=int(max_iter), start_seed=START_SEED, atol=ATOL,
                        basis=int(m), start_vectors=int(block),
                        solver="thick-restart block lanczos, full reorthogonalization")
        need = eigenpairs_bytes(n, k, block=block, basis=basis)
        what = (f"the top-k map's Lanczos basis ({n:,} parameters, {m} vectors, blocks of {block}: "
                "(2·basis + 3·start_vectors)·n float64)")
        fix = f"lower --basis (at least --k + --start_vectors = {k + block})"
    sharing = ranks_per_device(comm, h.device)  # collective
    memory = engine.on_all(comm, lambda: plan_vectors(need, memory_budget(h.device, sharing), what, fix))
    group = engine.rank_groups(comm, ranks_per_point)  # collective
    data = engine.on_all(comm, lambda: shares(model, {"train": h.data}, group)["train"]) if group.size > 1 else h.data
    common = dict(evaluation=map_evaluation(h, select), batch_size=batch_size, device=h.device, tol=tol,
                  max_iter=max_iter, memory=memory, group=group, curvature=curvature, curvature_select=curv)
    if kind == "trace":
        evaluator = TraceEvaluator(model, data, h.directions, samples=samples, method=estimator,
                                   prefix=surface_file.TRACE_MAP, **common)
    else:
        evaluator = TopKEvaluator(model, data, h.directions, k=k, prefix=surface_file.TOPK_MAP, basis=basis, block=block,
                                  **common)
    name = surface_file.TRACE_MAP if kind == "trace" else surface_file.TOPK_MAP
    summary = run_map(path, h, evaluator, group_name=name, settings=settings, group=group, force=force, chunk=chunk,
                      progress=progress, comm=comm)
    nan = slow = 0
    if summary.complete:
        values = engine.on_root(comm, lambda: surface_file.read_map(path, name).values)
        first = values["trace" if kind == "trace" else "lambda_1"]
        nan = int(np.isnan(first).sum())
        if kind == "topk":
            lam = np.stack([values[f"lambda_{i}"] for i in range(1, k + 1)])
            res = np.stack([values[f"residual_{i}"] for i in range(1, k + 1)])
            slow = int((res > tol * np.abs(lam) + ATOL * np.nanmax(np.abs(lam), axis=0)).sum())
    return HessianResult(str(path), summary, nan, slow)


@dataclass(frozen=True)
class SpectrumResult:
    """A spectrum's run: where it is stored (`spectrum/<label>`), and the Spectrum itself."""

    path: str
    group: str
    point: tuple[float, ...]
    spectrum: object  # analysis.spectrum.Spectrum
    ranks: int


def spectrum_job(surf_file, *, point: str | None = None, subset: int = 512, k: int = 5, tol: float = 1e-3,
                 max_iter: int = 100, samples: int = 30, estimator: str = "hutchpp", slq_runs: int = 4,
                 slq_steps: int = 60, sigma: float = 0.01, blocks: str | None = None, curvature: str = "hessian",
                 batch_size: int = 512, force: bool = False, threads: int = 0, device: str = "auto",
                 basis: int = 0, start_vectors: int = 1, params: str | None = None, exclude: str | None = None,
                 comm=None) -> SpectrumResult:
    """Top-k eigenpairs, trace and SLQ density (and a per-block table with `blocks`: comma-separated
    globs, or `auto`: one block per module) of the curvature at one point of a surface file
    (`point` 'α' or 'α,β' on the surface's axes; default θ*), written to spectrum/<label>.

    Every rank of `comm` holds a share of the data (Split.shard) and the products are summed over
    all of them: one spectrum uses every rank. See analysis.spectrum for the estimators.
    `params`/`exclude`: globs of the tensors the curvature is taken over (default: the surface's
    selection; the point's θ is still the surface's plane)."""
    from .analysis.spectrum import (
        CURVATURES,
        ESTIMATORS,
        SLQ_SEED,
        TRACE_SEED,
        CurvatureEvaluator,
        basis_size,
        check_ggn,
        curvature_selection,
        default_blocks,
        eigenpairs_bytes,
        restricted,
        slq_bytes,
        spectrum,
        trace_bytes,
    )
    from .core.selection import globs

    comm = comm or engine.world()
    path = Path(surf_file)
    block = int(start_vectors)  # block Lanczos: the block size
    coords = [0.0] if point is None else None

    def check():
        nonlocal coords
        if curvature not in CURVATURES:
            raise UserError(f"unknown --curvature {curvature!r}: choose one of {', '.join(CURVATURES)}")
        if estimator not in ESTIMATORS:
            raise UserError(f"unknown --estimator {estimator!r}: choose one of {', '.join(ESTIMATORS)}")
        if point is not None:
            try:
                coords = [float(c) for c in str(point).split(",")]
            except ValueError:
                raise UserError(f"--point {point!r} is not α or α,β (numbers on the surface's axes), e.g. --point 0.5,0") from None
        for name, value, least in (("--k", k, 1), ("--max_iter", max_iter, 1), ("--samples", samples, 2),
                                   ("--slq_runs", slq_runs, 1), ("--slq_steps", slq_steps, 1),
                                   ("--batch_size", batch_size, 1), ("--start_vectors", block, 1),
                                   ("--basis", basis, 0)):
            if value < least:
                raise UserError(f"{name} {value} must be at least {least}")
        if not tol > 0 or not sigma > 0:
            raise UserError(f"--tol {tol} and --sigma {sigma} must be positive, e.g. 1e-3 and 0.01")
        if 0 < basis < k + block:
            raise UserError(f"--basis {basis} must be 0 (automatic) or at least --k + --start_vectors = {k + block}")

    h = map_inputs(path, stride=1, subset=subset, threads=threads, device=device, comm=comm, check=check)
    job, model = h.job, h.model
    if curvature == "ggn":
        check_ggn(resolve_task(model, job.task), job.loss_name)
    ndim = h.grid.ndim
    if coords == [0.0]:
        coords = [0.0] * ndim
    if len(coords) != ndim:
        raise SharedUserError(f"--point {point!r} has {len(coords)} coordinate(s) but the surface is {ndim}D: give "
                              + ("α" if ndim == 1 else "α,β"))
    select = Selection.of(job.params, job.exclude)
    curv = curvature_selection(model, select, params, exclude)
    block_list = None
    if blocks:
        block_list = default_blocks(model, curv) if blocks == "auto" else list(globs(blocks))
        names = [n for n, _ in model.named_parameters()]

        def check_blocks():
            for b in block_list:
                if not any(Selection.of(b).keep([n]) for n in names):
                    raise UserError(f"--blocks {b!r} matches no trainable parameter (names are like "
                                    f"{', '.join(names[:3])}): give globs over tensor or module names, or auto")

        engine.on_all(comm, check_blocks)
    n = sum(p.numel() for p in hessian_parameters(model, curv))
    sharing = ranks_per_device(comm, h.device)  # collective
    need = max(eigenpairs_bytes(n, k, block=block, basis=basis), trace_bytes(n, samples, estimator),
               slq_bytes(n, slq_steps, slq_runs))
    what = (f"the spectrum's vectors ({n:,} parameters: the top-k's basis of {min(basis_size(k, block, basis), n)}, "
            f"--samples {samples}, --slq_steps {slq_steps})")
    memory = engine.on_all(comm, lambda: plan_vectors(need, memory_budget(h.device, sharing), what,
                                                      "lower --basis, --samples or --slq_steps"))
    data = engine.on_all(comm, lambda: shares(model, {"train": h.data}, comm)["train"]) if comm.size > 1 else h.data
    evaluation = map_evaluation(h, select)
    evaluator = CurvatureEvaluator(model, data, h.directions, evaluation=evaluation, batch_size=batch_size,
                                   device=h.device, tol=tol, max_iter=max_iter, memory=memory, group=comm,
                                   curvature=curvature, curvature_select=curv)

    def block_op(selection):  # the same products over the same data, θ restricted to a block
        return restricted(evaluator.hvp, selection)

    try:
        result = engine.on_all(comm, lambda: evaluator.at(np.asarray(coords, float), lambda op: spectrum(
            op, k=k, tol=tol, max_iter=max_iter, samples=samples, method=estimator, runs=slq_runs, steps=slq_steps,
            sigma=sigma, make_op=block_op, blocks=block_list, basis=basis, block=block)))
    finally:
        evaluator.restore()
    if result is None:
        raise SharedUserError(f"the loss at --point {point} is not finite: pick a point nearer θ*")
    settings = {**map_settings(h, stride=1, subset=subset, batch_size=batch_size, select=curv),
                "point": list(coords), "curvature": curvature, "k": int(k), "tol": float(tol), "max_iter": int(max_iter),
                "atol": ATOL, "start_seed": START_SEED, "basis": min(basis_size(k, block, basis), int(result.n)),
                "start_vectors": int(block), "restarts": int(result.eig.restarts), "samples": int(samples), "estimator": estimator,
                "trace_method": result.trace.method, "trace_seed": TRACE_SEED, "slq_runs": int(slq_runs),
                "slq_steps": int(slq_steps), "slq_seed": SLQ_SEED, "sigma": float(sigma), "sigma_abs": result.sigma,
                "n_params": int(result.n), "loss": result.loss, "converged": bool(result.eig.converged),
                "n_hvp": int(result.eig.n_hvp + result.trace.n_hvp + result.slq.n_hvp
                             + (result.blocks.n_hvp if result.blocks else 0)),
                "n_hvp_eigenpairs": int(result.eig.n_hvp), "n_hvp_trace": int(result.trace.n_hvp),
                "n_hvp_slq": int(result.slq.n_hvp), "seconds": result.seconds, "ranks": comm.size,
                "versions": f"landscape {__version__}, torch {torch.__version__}",
                "interval": "estimate ± t(0.975, s-1)·sd/sqrt(s) over the s Hutchinson samples (95%)",
                "density": "(1/R) Σ_runs Σ_j τ_j N(t; θ_j, sigma_abs²), sigma_abs = sigma·(max θ − min θ)"}
    arrays = {"eigenvalues": result.eig.values, "residuals": result.eig.residuals, "trace": result.trace.estimate,
              "trace_ci": np.array([result.trace.ci_low, result.trace.ci_high]),
              "slq/nodes": result.slq.nodes, "slq/weights": result.slq.weights,
              "density/grid": result.grid, "density/values": result.density,
              "moments": np.array([result.slq.moment(i) for i in range(4)])}
    if result.blocks is not None:
        b = result.blocks
        arrays.update({"blocks/names": np.array(b.names, dtype=object), "blocks/numel": b.numel,
                       "blocks/lambda_max": b.lambda_max, "blocks/residual": b.residual, "blocks/trace": b.trace,
                       "blocks/trace_ci": b.trace_ci})
    label = surface_file.spectrum_label(coords)
    name = engine.on_root(comm, lambda: surface_file.write_spectrum(path, label, arrays, settings, force=force))
    return SpectrumResult(str(path), name, tuple(coords), result, comm.size)


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


@dataclass(frozen=True)
class SharpnessResult:
    """A sharpness run (analysis.sharpness): the engine's summary and, once every batch is done, the
    measure (the mean rise over batches; Keskar's in percent) with its per-batch values."""

    path: str
    measure: str
    summary: engine.RunSummary
    value: float = math.nan
    rises: np.ndarray | None = None


def sharpness_job(surf_file, *, measure: str = "sam", rho: float = 0.05, m: int = 128, steps: int = 10,
                  subset: int = 1024, force: bool = False, threads: int = 0, device: str = "auto",
                  progress: bool = False, chunk: int = 0, comm=None) -> SharpnessResult:
    """Compute (or resume) a worst-case sharpness measure at θ* of a surface file (plain or ensemble)
    on every rank of `comm`: its train subset cut into batches of `m` (0: one batch), one batch a
    point of the engine, stored in the file's group sharpness/<measure> with its settings."""
    from .analysis.sharpness import MEASURES, START_SEED, SharpnessEvaluator

    comm = comm or engine.world()
    path = Path(surf_file)

    def check():
        if measure not in MEASURES:
            raise UserError(f"unknown --measure {measure!r}: choose one of {', '.join(MEASURES)}")
        if not (rho > 0 and math.isfinite(rho)):
            raise UserError(f"--rho {rho} must be a positive number, e.g. 0.05")
        if m < 0 or steps < 0:
            raise UserError(f"--m {m} and --steps {steps} must be >= 0 (--m 0: the whole subset as one batch)")

    h = map_inputs(path, stride=1, subset=subset, threads=threads, device=device, comm=comm, check=check,
                   ensemble_ok=True)
    job, model = h.job, h.model
    if job.bn_recompute:
        raise SharedUserError(f"{str(path)!r} re-estimates BN statistics at every point (--bn_recompute), which "
                              "sharpness does not: compute it on a surface without --bn_recompute")
    select = Selection.of(job.params, job.exclude)
    group_name = f"{surface_file.SHARPNESS}/{measure}"
    data = h.data.to(h.device)
    evaluator = engine.on_all(comm, lambda: SharpnessEvaluator(
        model, data.inputs, data.labels, measure=measure, rho=rho, m=m, steps=steps, task=job.task,
        loss_name=job.loss_name, select=select, device=h.device, group=group_name))
    grid = Grid(np.arange(evaluator.batches(), dtype=float))
    settings = {**map_settings(h, stride=1, subset=subset, batch_size=m, select=select), "precision": "weights' dtype",
                "measure": measure,
                "rho": float(rho), "m": int(m), "steps": int(steps), "start_seed": START_SEED,
                "definition": sharpness_definition(measure)}
    h = dataclasses.replace(h, grid=grid)
    summary = run_map(path, h, evaluator, group_name=group_name, settings=settings, group=None, force=force,
                      chunk=chunk, progress=progress, comm=comm)
    if not summary.complete:
        return SharpnessResult(str(path), measure, summary)
    values, _ = engine.on_root(comm, lambda: surface_file.read_values(path, [f"{group_name}/rise"], f"{group_name}/mask"))
    rises = values[f"{group_name}/rise"]
    return SharpnessResult(str(path), measure, summary, float(np.mean(rises)), rises)


def sharpness_definition(measure: str) -> str:
    """The stored definition of a measure (analysis.sharpness)."""
    return {"sam": "mean over batches B of max_{||d||_2 <= rho} L_B(theta* + d) - L_B(theta*)",
            "adaptive": "mean over batches B of max_{||d / |theta*| ||_2 <= rho} L_B(theta* + d) - L_B(theta*)",
            "keskar": "mean over batches B of 100 (max_{|d_i| <= rho (|theta*_i| + 1)} L_B(theta* + d) - L_B(theta*)) "
                      "/ (1 + L_B(theta*))"}[measure] + "; projected gradient ascent, `steps` steps from a random start"
