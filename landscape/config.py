"""The job description: a YAML job file merged with command-line flags (flags win).

Flag names follow the reference implementation (`--x=-1:1:51 --xnorm filter
--xignore biasbn --dir_type weights ...`); a YAML job file uses the same names
as keys.
"""
from __future__ import annotations

import argparse
import difflib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import yaml

from .errors import UserError
from .grid import Axis


@dataclass
class Job:
    model: str = "digits_cnn"  # registry name
    model_file: str | None = None  # checkpoint of θ*; without it the model is initialized from `seed`
    model_file2: str | None = None  # x direction θ₂ − θ₁ (the line to a second model; α = 1 is model 2)
    model_file3: str | None = None  # y direction θ₃ − θ₁ (the plane through three models)
    dataset: str = "digits"
    data_dir: str | None = None  # cifar10: the folder holding cifar-10-batches-py (or that folder)
    splits: list[str] = field(default_factory=lambda: ["train"])  # which splits to evaluate: train, test
    x: str = "-1:1:51"  # grid spec min:max:num (inclusive)
    y: str | None = None  # None: a 1D surface along x
    dir_type: str = "weights"  # weights: parameters(); states: state_dict() incl. BN statistics
    xnorm: str = "filter"
    ynorm: str | None = None  # default: xnorm
    xignore: str = "biasbn"
    yignore: str | None = None  # default: xignore
    dir_file: str | None = None  # take the directions from this surface file instead of drawing them
    trajectory: str | list[str] | None = None  # checkpoints (glob or list): PCA directions around model_file
    seed: int = 0  # seed of the random directions (and of the model's initialization without model_file)
    loss_name: str = "crossentropy"
    batch_size: int = 512
    surf_file: str = "out/surface.h5"
    plot: bool = True  # write the figures next to the surface file when the grid is complete
    device: str = "auto"  # auto, cpu, cuda
    threads: int = 0  # torch threads per rank; 0: the node's cores / ranks on the node
    chunk: int = 0  # points per chunk handed to a rank; 0: automatic
    points_per_pass: int = 1  # grid points per forward pass (vmap); 0: measure at start-up
    bn_recompute: int = 0  # re-estimate BN statistics at every point from N train examples (0: keep θ*'s)
    subset: int = 0  # evaluate on N examples of each split (0: all) for quick previews
    subset_mode: str = "first"  # first N, or a fixed random N (numpy seed 0)
    precision: str = "fp32"  # fp32, bf16 or fp16 autocast of the forward pass (sums stay float64)
    compile: bool = False  # torch.compile the model
    channels_last: bool = False  # channels-last memory format for conv nets
    write: str = "auto"  # auto, parallel (every rank writes, needs MPI h5py), gather (rank 0 writes)
    force: bool = False  # overwrite a surface file of another job
    progress: bool = True

    def axes(self) -> tuple[Axis, Axis | None]:
        return Axis.parse(self.x, "x"), (Axis.parse(self.y, "y") if self.y else None)

    def to_yaml(self) -> str:
        return yaml.safe_dump(asdict(self), sort_keys=False)


CHOICES = {
    "dir_type": ("weights", "states"),
    "xnorm": ("filter", "layer", "weight", "dfilter", "dlayer", "none"),
    "xignore": ("biasbn", "none"),
    "loss_name": ("crossentropy", "mse"),
    "device": ("auto", "cpu", "cuda"),
    "write": ("auto", "parallel", "gather"),
    "subset_mode": ("first", "random"),
    "precision": ("fp32", "bf16", "fp16"),
}
CHOICES["ynorm"], CHOICES["yignore"] = CHOICES["xnorm"], CHOICES["xignore"]
HELP = {
    "model": "model name (digits_cnn, digits_mlp, resnet20/56/110[_noshort], wrn56_2, vgg9, densenet121) "
             "or your own package.module:factory",
    "model_file": "checkpoint of the trained model θ*",
    "dataset": "dataset name (digits, cifar10) or your own package.module:factory",
    "data_dir": "cifar10: the folder holding cifar-10-batches-py (or that folder itself)",
    "splits": "comma-separated splits to evaluate (train,test)",
    "x": "x grid min:max:num, e.g. --x=-1:1:51",
    "y": "y grid min:max:num; leave out for a 1D surface",
    "dir_type": "weights (parameters) or states (state_dict, incl. BN statistics)",
    "xnorm": "normalization of the x direction",
    "ynorm": "normalization of the y direction (default: xnorm)",
    "xignore": "biasbn: zero direction on biases and BN; none: keep them",
    "yignore": "as xignore for y (default: xignore)",
    "dir_file": "reuse the directions stored in this surface file",
    "model_file2": "second model: x direction θ₂ − θ₁ (1D interpolation; α=1 is model 2)",
    "model_file3": "third model: y direction θ₃ − θ₁ (the plane through three models)",
    "trajectory": "checkpoints of the run (glob, or a list in the job file): PCA directions around --model_file;"
                  " without --y the grid covers the projected path",
    "seed": "seed of the random directions (and of the initialization without --model_file)",
    "loss_name": "crossentropy, mse, or your own package.module:function(logits, labels) -> summed loss",
    "batch_size": "evaluation batch size",
    "surf_file": "the surface file (HDF5) to write or resume",
    "plot": "write figures when the grid is complete (--no-plot to skip)",
    "device": "auto, cpu or cuda (one GPU per rank: local rank %% GPUs)",
    "threads": "torch threads per rank (0: cores per node / ranks per node)",
    "chunk": "points per chunk (0: automatic)",
    "points_per_pass": "grid points evaluated per forward pass via vmap (0: measure and pick at start-up)",
    "bn_recompute": "re-estimate batch-norm statistics at every point from the first N train examples (0: off)",
    "subset": "evaluate on N examples of each split (0: all), recorded in the file",
    "subset_mode": "first: the first N examples; random: a fixed random N (seed 0)",
    "precision": "fp32, bf16 or fp16 autocast of the forward pass; sums stay float64",
    "compile": "torch.compile the model (compiles once per rank at start-up)",
    "channels_last": "channels-last memory format (faster convolutions on GPUs and recent CPUs)",
    "write": "auto, parallel (all ranks write via MPI-IO) or gather (rank 0 writes)",
    "force": "overwrite a surface file that holds another job",
    "progress": "print progress on rank 0 (--no-progress to silence)",
}


def add_job_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per Job field, default None so that only given flags override the job file."""
    parser.add_argument("--config", help="YAML job file; flags given here override its keys")
    for f in fields(Job):
        name = f"--{f.name}"
        if f.type in ("bool", bool):
            parser.add_argument(name, action=argparse.BooleanOptionalAction, default=None, help=HELP[f.name])
        else:
            parser.add_argument(name, default=None, metavar=f.name.upper(), help=HELP[f.name])


def convert(name: str, value, default):
    """Check and convert one value to the type of the field `name`."""
    if value is None:
        return None
    if name == "trajectory" and isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    if name == "splits":
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or not items:
            raise UserError(f"splits must be a list like train,test, got {value!r}")
        items = [str(s).strip() for s in items]
        for s in items:
            if s not in ("train", "test"):
                raise UserError(f"unknown split {s!r}: choose train and/or test, e.g. --splits train,test")
        return items
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        raise UserError(f"{name} must be true or false, got {value!r}")
    if isinstance(default, int):
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise UserError(f"{name} must be a whole number, got {value!r}") from None
        if number < 0 or (name == "batch_size" and number < 1):
            raise UserError(f"{name} must be {'positive' if name == 'batch_size' else '>= 0'}, got {number}")
        return number
    value = str(value)
    if name in CHOICES and value not in CHOICES[name] and not (name == "loss_name" and ":" in value):
        raise UserError(f"unknown {name} {value!r}: choose one of {', '.join(CHOICES[name])}")
    return value


def read_job_file(path: str) -> dict:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"job file {path!r} does not exist: check --config")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise UserError(f"job file {path!r} is not valid YAML ({str(exc).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"job file {path!r} must be a mapping of keys to values, like 'model: digits_cnn'")
    return data


def build_job(values: dict, source: str = "job") -> Job:
    """A validated Job from a mapping of field names to values (None: keep the default)."""
    names = [f.name for f in fields(Job)]
    for key in values:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f": did you mean {close[0]!r}?" if close else f": known keys are {', '.join(names)}"
            raise UserError(f"unknown key {key!r} in {source}{hint}")
    job = Job()
    for f in fields(Job):
        value = convert(f.name, values.get(f.name), getattr(job, f.name))
        if value is not None:
            setattr(job, f.name, value)
    job.axes()  # grid specs are valid
    return job


def job_from_args(args: argparse.Namespace) -> Job:
    """YAML job file (if any) overridden by the flags that were given."""
    values = read_job_file(args.config) if args.config else {}
    job = build_job(values, args.config or "job")
    given = {f.name: getattr(args, f.name) for f in fields(Job) if getattr(args, f.name, None) is not None}
    merged = {**asdict(job), **given}
    return build_job(merged, "command line")
