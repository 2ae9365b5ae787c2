"""Every option of a surface job, defined once: typed fields with their help text.

From these fields come the command-line flags (cli), the YAML job-file validation
(`build_job`), the README's configuration reference (`reference_table`, kept equal by a test)
and the keyword arguments of `landscape.api.compute_surface`. Flag names follow the reference
implementation (`--x=-1:1:51 --xnorm filter --xignore biasbn --dir_type weights ...`); a YAML
job file uses the same names as keys. Choices are `Literal` types, also used by the modules
that implement them. Never imports torch.
"""
from __future__ import annotations

import argparse
import difflib
import math
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Literal, Optional, Union, get_args, get_type_hints

import yaml

from .core.grid import Axis
from .errors import SharedUserError, UserError

DirType = Literal["weights", "states"]
Norm = Literal["filter", "layer", "weight", "dfilter", "dlayer", "none"]
Ignore = Literal["biasbn", "none"]
LossName = Literal["crossentropy", "mse"]  # or the user's package.module:function
Precision = Literal["fp32", "bf16", "fp16"]
WeightsDtype = Literal["fp32", "bf16", "fp16"]
DeviceKind = Literal["auto", "cpu", "cuda"]
WriteMode = Literal["auto", "parallel", "gather"]
SubsetMode = Literal["first", "random"]
TokenizerName = Literal["auto", "bytes"]
DataInMemory = Literal["auto", "yes", "no"]
SplitName = Literal["train", "test"]
MapKind = Literal["extremes", "trace", "topk"]
TraceEstimator = Literal["hutchpp", "hutchinson"]
CurvatureKind = Literal["hessian", "ggn"]
SharpnessMeasure = Literal["sam", "adaptive", "keskar"]
TaskName = Literal["auto", "classification", "regression", "causal_lm"]  # or the user's package.module:function

NORMS, IGNORES, DIR_TYPES = get_args(Norm), get_args(Ignore), get_args(DirType)
LOSS_NAMES, PRECISIONS, SPLITS = get_args(LossName), get_args(Precision), get_args(SplitName)
GROUPS = ("inputs", "grid", "directions", "evaluation", "run", "hessian", "train", "plot")


BASE_60 = re.compile(r"^[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?$")


class JobLoader(yaml.SafeLoader):
    """PyYAML's safe loader without YAML 1.1's base-60 numbers: `x: -1:1:51` stays the string '-1:1:51'."""

    yaml_implicit_resolvers = {
        first: ([("tag:yaml.org,2002:str", BASE_60)] if first in tuple("-+0123456789") else []) + resolvers
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}


DEFAULT_BATCH = 512  # the evaluation batch size an automatic one (--batch_size 0) starts from


def option(default, text: str, group: str, **kw):
    """A job field: its default, its help text (markdown; the README's wording) and its group."""
    assert group in GROUPS
    factory = {"default_factory": (lambda: list(default))} if isinstance(default, list) else {"default": default}
    return field(**factory, metadata={"help": text, "group": group, **kw})


@dataclass
class Job:
    """A surface job: every flag of `landscape surface`, grouped as in the reference table."""

    model: str = option("digits_cnn", "`digits_cnn`, `digits_mlp`; CIFAR-10: `resnet20`, `resnet56`, `resnet110` "
                        "(each also `_noshort`), `wrn56_2`, `vgg9`, `densenet121`; `lm_tiny` (the byte-level demo "
                        "Llama, `--task causal_lm`); your own "
                        "`package.module:factory`; or `hf:FOLDER`, a transformers model saved with `save_pretrained` "
                        "(loaded offline, with the head its config.json names: a causal LM, a sequence classifier, ...)", "inputs")
    model_file: Optional[str] = option(None, "checkpoint of θ*: a state_dict, `{'state_dict': ...}` / "
                                       "`{'model': ...}`, `module.` prefixes, a saved model, a `.safetensors` file, or a Hugging Face "
                                       "checkpoint folder (save_pretrained's, a Trainer's `checkpoint-N/`, sharded too); "
                                       "without it the model is initialized from `--seed`", "inputs")
    dataset: str = option("digits", "`digits`, `cifar10` (needs `--data_dir`); token data in blocks of `--seq_len`: "
                          "`tokens:PATH` (a flat uint16 token file, `.u32.bin`: uint32), `text:PATH` (a UTF-8 text "
                          "file, see `--tokenizer`), both with the test split in the file named with `train` → `val` "
                          "or `test`, `hfdata:FOLDER` (a `datasets` folder of `save_to_disk`: column `input_ids` or "
                          "`text`; test split: `validation` or `test`); or your own `package.module:factory`", "inputs")
    dtype: WeightsDtype = option("fp32", "dtype the weights are held in: `bf16` / `fp16` for language models "
                                 "too large for float32 (each point computed in float32 and rounded once into "
                                 "that dtype; α = 0 is exactly θ*; see \"Low-precision weights\")", "inputs")
    data_dir: Optional[str] = option(None, "`cifar10`: the folder holding `cifar-10-batches-py` (or that folder "
                                     "itself)", "inputs")
    seq_len: int = option(0, "`tokens:`, `text:`, `hfdata:` datasets: tokens per block (consecutive, "
                          "non-overlapping; `--subset` counts blocks); at most the model's context", "inputs")
    tokenizer: TokenizerName = option("auto", "`text:` data (and an `hfdata:` text column): `auto`: the tokenizer "
                                      "saved in the `--model hf:FOLDER` folder (no special tokens added), else "
                                      "bytes; `bytes`: the UTF-8 bytes as ids 0..255", "inputs")
    splits: list[SplitName] = option(["train"], "splits to evaluate, comma-separated: `train,test`", "inputs")
    x: str = option("-1:1:51", "x grid `min:max:num`, ends included, e.g. `--x=-1:1:51`", "grid")
    y: Optional[str] = option(None, "y grid `min:max:num`; leave out for a 1D surface", "grid")
    dir_type: DirType = option("weights", "`weights`: parameters; `states`: state_dict incl. BN running statistics "
                               "(a running variance is clamped at 0)", "directions")
    xnorm: Norm = option("filter", "normalization of the x direction: `filter`, `layer`, `weight`, `dfilter`, "
                         "`dlayer`, `none`", "directions")
    ynorm: Optional[Norm] = option(None, "normalization of the y direction (default: `--xnorm`)", "directions")
    xignore: Ignore = option("biasbn", "`biasbn`: zero direction on 1-D tensors (biases, BN); `none`: their "
                             "direction is the tensor itself", "directions")
    yignore: Optional[Ignore] = option(None, "as `--xignore` for y (default: `--xignore`)", "directions")
    xdir: Optional[str] = option(None, "`hessian:K`: x is the unit eigenvector of the K-th largest Hessian eigenvalue "
                                 "at θ* (`hessian:-1`: the most negative one), scaled by `--xnorm` (`none`: unit "
                                 "norm); its eigenvalue is stored (see \"Curvature: spectrum, trace, top-k\")",
                                 "directions")
    ydir: Optional[str] = option(None, "`hessian:K` for the y direction (with `--xdir`), e.g. `hessian:2`", "directions")
    dir_file: Optional[str] = option(None, "take the directions from this surface file (or a directions file of "
                                     "`landscape import-directions`)", "directions")
    model_file2: Optional[str] = option(None, "x direction θ₂ − θ₁ (not normalized): the line to a second model; "
                                        "α = 1 is model 2", "directions")
    model_file3: Optional[str] = option(None, "y direction θ₃ − θ₁: the plane through three models", "directions")
    trajectory: Union[str, list[str], None] = option(None, "checkpoints of the run (glob, or a list in the job "
                                                     "file): PCA directions around `--model_file`; without `--y` "
                                                     "the grid covers the projected path", "directions")
    seed: int = option(0, "seed of the directions (x drawn first, then y) and of the initialization without "
                       "`--model_file`", "directions")
    ensemble: Optional[int] = option(None, "a direction ensemble: N random directions (planes with `--y`) from `--seed`, "
                           "evaluated as one job with a member axis; member 0 is the plain job's direction, member M "
                           "is `--member M` alone. Statistics over the members (mean, σ, quantiles, basin widths, "
                           "curvature) in the file once complete (see \"Direction ensembles and sharpness\")", "directions")
    member: int = option(0, "draw the directions of member M of the ensemble with this `--seed` (0: the plain "
                         "job's)", "directions")
    store_directions: bool = option(False, "with `--ensemble`: also store every member's directions in the file "
                                    "(N·|θ| floats per axis; by default only member 0's are, the others are drawn "
                                    "again from the seed)", "directions")
    epsilons: str = option("0.1,0.5,1", "with `--ensemble`: basin widths are where the loss first exceeds "
                           "L(θ*) + ε, for each ε (comma-separated, > 0)", "directions")
    params: Optional[str] = option(None, "the tensors the directions move, comma-separated globs over their names "
                                   "(`model.layers.0.*`; a module name matches its tensors: `model.layers.0`); the "
                                   "others stay exactly at θ*. Normalization, Hessians and the directions' "
                                   "fingerprint act on the selection only (default: every tensor)", "directions")
    exclude: Optional[str] = option(None, "globs of tensors to leave out of the selection, e.g. `*.norm.*,lm_head`",
                                    "directions")
    task: str = option("auto", "what is measured: `auto`: the model's own (`causal_lm` for a `...ForCausalLM` "
                       "model, else `classification`; the file states which); `classification` (loss and accuracy of class "
                       "indices), `regression` (mean squared error of float targets, or your own loss; no "
                       "accuracy), `causal_lm` (next-token cross-entropy of token ids, the mean per predicted "
                       "token, and next-token accuracy; perplexity shown), or your own `package.module:function`: "
                       "(outputs, (inputs, targets)) → {name: (sum, count)} (see \"Your own metrics\")",
                       "evaluation", choices=get_args(TaskName))
    loss_name: str = option("crossentropy", "`crossentropy`, `mse` (mean over classes of (softmax − one-hot)², as "
                            "the reference tool), or your own `package.module:function`: (logits, labels) → loss "
                            "summed over the batch", "evaluation", choices=LOSS_NAMES)
    batch_size: int = option(0, "evaluation batch size; 0: chosen at start-up: 512, or less where a batch's "
                             "activations would not fit the memory left, then doubled or halved while measured "
                             "faster (not for streamed data); always 512 where BN uses each batch's statistics or is "
                             "re-estimated (see \"Fast by default\")", "evaluation")
    points_per_pass: int = option(0, "grid points per forward pass: K parameter sets stacked and evaluated with "
                                  "`vmap(functional_call)` (K×θ memory); 0: measured at start-up among 1, 4, 16 "
                                  "(1 when vmap cannot run the model or BN is re-estimated; see \"Fast by "
                                  "default\"). Pays for small models on GPUs", "evaluation")
    bn_recompute: int = option(0, "re-estimate batch-norm statistics at every point from the first N train "
                               "examples (0: off; see \"Batch norm\")", "evaluation")
    subset: int = option(0, "evaluate on N examples of each split (0: all), for quick previews; recorded in the "
                         "file's config and data fingerprint", "evaluation")
    subset_mode: SubsetMode = option("first", "`first` N examples, or a fixed `random` N (numpy seed 0, kept in "
                                     "order)", "evaluation")
    data_in_memory: DataInMemory = option("auto", "`auto`: hold each split in memory when it fits half of this "
                                          "rank's share of the node's available memory, else stream it from disk "
                                          "batch by batch at every point (the choice is printed); `yes`: hold it "
                                          "(refused when it cannot fit); `no`: stream it. A run option: a file "
                                          "resumes either way; see \"Data at scale\"", "evaluation")
    precision: Precision = option("fp32", "`bf16` / `fp16`: autocast of the forward pass (GPUs); losses and sums "
                                  "stay float32/float64", "evaluation")
    compile: Optional[bool] = option(None, "`torch.compile` the model (compiles once per rank at start-up; 1.4–2× "
                                     "faster on CPUs in `bench/`); default: tried when the run is long enough to "
                                     "repay it, kept when measured faster (see \"Fast by default\")", "evaluation")
    channels_last: Optional[bool] = option(None, "channels-last memory format for conv nets (1.27–1.7× faster on "
                                           "CPUs in `bench/`); default: channels-last for conv nets on CPUs, contiguous otherwise, "
                                           "the other one measured at start-up when the run repays it (see \"Fast by "
                                           "default\")", "evaluation")
    fold_bn: Optional[bool] = option(None, "fold eval-mode batch norm into the convolution before it, recomputed "
                                     "at every call (W·s, (b − μ)·s + β with s = γ/√(σ² + ε); 1.2–1.4× faster on "
                                     "ResNets on CPUs in `bench/`; values within float rounding); default: on for landscape's "
                                     "own models (off for yours: `--fold_bn` traces its forward with torch.fx once, so "
                                     "Python side effects in it happen once), never while BN is re-estimated; recorded "
                                     "as a run option",
                                     "evaluation")
    surf_file: str = option("out/surface.h5", "the surface file to write or resume; its folder must exist", "run")
    plot: bool = option(True, "draw the figures next to the file once the grid is complete", "run")
    device: DeviceKind = option("auto", "`auto`, `cpu`, `cuda` (one GPU per rank: local rank % GPUs)", "run")
    threads: int = option(0, "torch threads per rank; 0: cores per node / ranks per node", "run")
    chunk: int = option(0, "points per chunk handed to a rank; 0: guided (1/(4·ranks) of what is left, at most "
                        "16 points)", "run")
    ranks_per_point: int = option(1, "ranks that evaluate each grid point together, each on its share of the "
                                  "data, their sums added before one writes (an MPI sub-communicator per group of "
                                  "G consecutive ranks; must divide the ranks). For evaluation sets a GPU takes "
                                  "long over, and more ranks than points; see \"Running on clusters\"", "run",
                                  minimum=1)
    write: WriteMode = option("auto", "`parallel`: every rank writes (MPI-IO, needs MPI h5py); `gather`: rank 0 "
                              "writes; `auto`: parallel when possible", "run")
    force: bool = option(False, "overwrite a file that holds another job", "run")
    progress: bool = option(True, "rank 0 prints points done, points/s and ETA", "run")

    def axes(self) -> tuple[Axis, Axis | None]:
        return Axis.parse(self.x, "x"), (Axis.parse(self.y, "y") if self.y else None)

    def to_yaml(self) -> str:
        return yaml.safe_dump(asdict(self), sort_keys=False)


@dataclass
class HessianJob:
    """`landscape hessian SURFACE.h5`: the map's options (model, data and directions come from the file)."""

    stride: int = option(1, "every K-th point of each axis (K must divide num − 1)", "hessian")
    subset: int = option(512, "train examples (a fixed random draw); 0: the whole split", "hessian")
    tol: float = option(1e-3, "each end: residual ≤ tol·|λ| + 1e-5·max|λ|", "hessian")
    max_iter: int = option(100, "at most this many Hessian-vector products per point", "hessian")
    batch_size: int = option(512, "examples per Hessian-vector product batch", "hessian")
    force: bool = option(False, "recompute the file's Hessian map (clears only /hessian)", "hessian")
    threads: int = option(0, "torch threads per rank (0: cores per node / ranks)", "hessian")
    ranks_per_point: int = option(1, "ranks that compute each point together, each on its share of the subset "
                                  "(the Hessian-vector products summed over them); must divide the ranks", "hessian")
    device: DeviceKind = option("auto", "`auto`, `cpu`, `cuda`", "hessian")
    plot: bool = option(True, "draw the Hessian figures once the map is complete", "hessian")
    progress: bool = option(True, "rank 0 prints points done, points/s and ETA", "hessian")
    map: MapKind = option("extremes", "`extremes`: λmax, λmin (group `hessian`); `trace`: tr H with a 95% "
                          "interval (Hutch++, group `hessian_trace`); `topk`: the --k largest eigenvalues (group "
                          "`hessian_topk`)", "hessian")
    k: int = option(3, "`--map topk`: eigenvalues per point", "hessian")
    basis: int = option(0, "`--map topk`: Lanczos vectors kept (thick restart: memory 2·basis·parameters float64); "
                        "0: max(2k + start_vectors, 20)", "hessian")
    start_vectors: int = option(1, "`--map topk`: block Lanczos from this many start vectors: finds an eigenvalue "
                                "repeated up to that many times (1 finds one copy)", "hessian")
    samples: int = option(30, "`--map trace`: Hessian-vector products per point", "hessian")
    estimator: TraceEstimator = option("hutchpp", "`--map trace`: `hutchpp` (Hutch++) or `hutchinson`", "hessian")
    curvature: CurvatureKind = option("hessian", "`--map trace|topk`: `hessian`, or `ggn` (generalized "
                                      "Gauss–Newton = Fisher of softmax cross-entropy; PSD)", "hessian")
    params: Optional[str] = option(None, "the tensors the curvature is taken over, comma-separated globs (the others "
                                   "held fixed: the sub-block); default: the surface's --params selection", "hessian")
    exclude: Optional[str] = option(None, "globs of tensors to leave out of the curvature's selection", "hessian")


@dataclass
class SpectrumJob:
    """`landscape spectrum SURFACE.h5`: top-k eigenpairs, trace and spectral density at one point."""

    point: Optional[str] = option(None, "`α` or `α,β` on the surface's axes (default: θ*, the origin)", "hessian")
    subset: int = option(512, "train examples (the same fixed random draw as `landscape hessian`); 0: all", "hessian")
    k: int = option(5, "top eigenpairs (thick-restart Lanczos, full reorthogonalization)", "hessian")
    tol: float = option(1e-3, "each eigenpair: residual ≤ tol·|λ| + 1e-5·max|λ|", "hessian")
    max_iter: int = option(100, "at most this many products for the top-k", "hessian")
    basis: int = option(0, "Lanczos vectors kept for the top-k (thick restart: memory 2·basis·parameters float64); "
                        "0: max(2k + start_vectors, 20)", "hessian")
    start_vectors: int = option(1, "block Lanczos from this many start vectors: finds an eigenvalue repeated up to "
                                "that many times (1 finds one copy)", "hessian")
    samples: int = option(30, "products of the trace estimate (exact trace for blocks of at most this size)", "hessian")
    estimator: TraceEstimator = option("hutchpp", "`hutchpp` (Hutch++) or `hutchinson`", "hessian")
    slq_runs: int = option(4, "stochastic Lanczos quadrature: random starts", "hessian")
    slq_steps: int = option(60, "stochastic Lanczos quadrature: Lanczos steps per start", "hessian")
    sigma: float = option(0.01, "width of the density's Gaussians, as a fraction of the eigenvalue range", "hessian")
    blocks: Optional[str] = option(None, "per-block table: comma-separated globs over tensor names, or `auto` "
                                   "(one block per module)", "hessian")
    curvature: CurvatureKind = option("hessian", "`hessian`, or `ggn` (generalized Gauss–Newton = Fisher of "
                                      "softmax cross-entropy)", "hessian")
    params: Optional[str] = option(None, "the tensors the curvature is taken over, comma-separated globs (the others "
                                   "held fixed: the sub-block); default: the surface's --params selection", "hessian")
    exclude: Optional[str] = option(None, "globs of tensors to leave out of the curvature's selection", "hessian")
    batch_size: int = option(512, "examples per product batch", "hessian")
    force: bool = option(False, "recompute a spectrum already stored at this point", "hessian")
    threads: int = option(0, "torch threads per rank (0: cores per node / ranks)", "hessian")
    device: DeviceKind = option("auto", "`auto`, `cpu`, `cuda`", "hessian")
    plot: bool = option(True, "draw the density figure", "hessian")


@dataclass
class SharpnessJob:
    """`landscape sharpness SURFACE.h5`: worst-case sharpness at θ*, batch by batch (analysis.sharpness)."""

    measure: SharpnessMeasure = option("sam", "`sam`: max over ‖δ‖₂ ≤ ρ; `adaptive`: over ‖δ ⊘ |θ*|‖₂ ≤ ρ; "
                                       "`keskar`: over |δᵢ| ≤ ρ(|θ*ᵢ| + 1), in percent of 1 + L", "hessian")
    rho: float = option(0.05, "the radius ρ of the perturbation set", "hessian")
    m: int = option(128, "examples per batch: the mean of the batches' worst-case rises is m-sharpness (0: the "
                    "whole subset as one batch)", "hessian")
    steps: int = option(10, "projected gradient-ascent steps per batch, from a random start in the set", "hessian")
    subset: int = option(1024, "train examples (the same fixed random draw as `landscape hessian`); 0: all", "hessian")
    force: bool = option(False, "recompute this measure (clears only its group)", "hessian")
    threads: int = option(0, "torch threads per rank (0: cores per node / ranks)", "hessian")
    device: DeviceKind = option("auto", "`auto`, `cpu`, `cuda`", "hessian")
    progress: bool = option(True, "rank 0 prints batches done, batches/s and ETA", "hessian")


@dataclass
class TrainJob:
    """`landscape train`: a demo model trained with SGD (momentum 0.9, weight decay 5e-4), or a
    causal LM with AdamW (β = (0.9, 0.95), weight decay 0.1)."""

    model: str = option("digits_cnn", "model to train (a registry name such as `lm_tiny`, package.module:factory, "
                        "or `hf:FOLDER`)", "train")
    dataset: str = option("digits", "dataset whose train split it learns (`tokens:PATH` with `--task causal_lm`; its "
                          "test split is reported)", "train")
    task: str = option("classification", "`classification` (cross-entropy of class indices) or `causal_lm` "
                       "(next-token cross-entropy; checkpoints are `save_pretrained` folders epoch_000/ .. epoch_N/)",
                       "train", choices=("classification", "causal_lm"))
    seq_len: int = option(0, "`tokens:` datasets: tokens per block", "train")
    out_dir: str = option("out/demo/checkpoints", "folder for epoch_000.pt (the initialization) .. epoch_N.pt", "train")
    epochs: int = option(10, "passes over the train split, a checkpoint after each", "train")
    steps: int = option(0, "`causal_lm`: optimizer steps per epoch (0: one pass over the train split)", "train")
    seed: int = option(0, "seed of the initialization and of the batch order", "train")
    optimizer: str = option("auto", "`sgd`, `adamw`, or `auto`: SGD for classification, AdamW for causal_lm", "train",
                            choices=("auto", "sgd", "adamw"))
    lr: float = option(0.0, "learning rate (0: 0.05 for SGD, 0.003 for AdamW)", "train")
    batch_size: int = option(64, "examples (blocks) per step", "train")


@dataclass
class PlotJob:
    """`landscape plot FILE...`: which figures, and how they look (viz.figures takes its defaults here)."""

    out_dir: Optional[str] = option(None, "folder for the figures (default: the file's folder)", "plot")
    format: str = option("png,pdf", "comma-separated formats: png, pdf, svg", "plot")
    vmin: Optional[float] = option(None, "lowest loss level (default: the minimum)", "plot")
    vmax: Optional[float] = option(None, "highest loss level (default: 75th percentile)", "plot")
    vlevel: Optional[float] = option(None, "spacing of loss levels (decades with --log)", "plot")
    log: bool = option(False, "log10 of the loss", "plot")
    cmap: str = option("viridis", "a matplotlib colormap", "plot")
    dpi: int = option(150, "resolution of raster formats", "plot")
    kinds: Optional[str] = option(None, "comma-separated: 1d, contour, contourf, heat, 3d, trajectory, hessian "
                                  "(default: all the file supports)", "plot")
    splits: Optional[str] = option(None, "comma-separated splits (default: all)", "plot")
    metrics: Optional[str] = option(None, "comma-separated: loss, acc, or the names of your own metrics (default: "
                                    "all of the file's)", "plot")
    compare: bool = option(False, "one figure with a panel per file on one colour scale", "plot")
    titles: Optional[str] = option(None, "with --compare: comma-separated panel titles, one per file", "plot")


FIELDS = {f.name: f for f in fields(Job)}
TYPES = get_type_hints(Job)


def choices(name: str, cls=Job) -> tuple[str, ...]:
    """The allowed values of a field: its Literal's arguments (or its `choices` metadata)."""
    f, kind = {f.name: f for f in fields(cls)}[name], get_type_hints(cls)[name]
    if "choices" in f.metadata:
        return tuple(f.metadata["choices"])
    found = [a for a in get_args(kind) if getattr(a, "__origin__", None) is Literal]
    if getattr(kind, "__origin__", None) is Literal:
        found = [kind]
    return tuple(v for lit in found for v in get_args(lit))


def is_bool(name: str) -> bool:
    """A flag (`--name` / `--no-name`); Optional[bool] ones default to automatic (None)."""
    return TYPES[name] in (bool, Optional[bool])


def plain_help(f) -> str:
    """A field's help text without markdown, for argparse (which formats % itself)."""
    return f.metadata["help"].replace("`", "").replace("%", "%%")


def add_job_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per Job field, default None so that only given flags override the job file."""
    parser.add_argument("--config", help="YAML job file; flags given here override its keys")
    groups = {}
    for name, f in FIELDS.items():
        group = f.metadata["group"]
        if group not in groups:
            groups[group] = parser.add_argument_group(group)
        if is_bool(name):
            groups[group].add_argument(f"--{name}", action=argparse.BooleanOptionalAction, default=None,
                                       help=plain_help(f))
        else:
            groups[group].add_argument(f"--{name}", default=None, metavar=name.upper(), help=plain_help(f))


def add_arguments(parser: argparse.ArgumentParser, cls) -> None:
    """One flag per field of an options dataclass (HessianJob, TrainJob, PlotJob), typed, with its default."""
    hints = get_type_hints(cls)
    for f in fields(cls):
        kind, text = hints[f.name], plain_help(f) + ("" if f.default is None else " (default: %(default)s)")
        if getattr(kind, "__origin__", None) is Union:  # Optional[X]: X
            kind = next(a for a in get_args(kind) if a is not type(None))
        if kind is bool:
            parser.add_argument(f"--{f.name}", action=argparse.BooleanOptionalAction, default=f.default,
                                help=text)
        elif choices(f.name, cls):
            parser.add_argument(f"--{f.name}", default=f.default, choices=choices(f.name, cls), help=text)
        else:
            parser.add_argument(f"--{f.name}", type=kind, default=f.default, help=text)


def from_namespace(cls, args: argparse.Namespace):
    """An options dataclass from parsed arguments."""
    return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})


def reference_table() -> str:
    """The README's configuration reference, in markdown, from the fields."""
    rows = ["| flag / key | default | meaning |", "|---|---|---|", "| `--config` | – | YAML job file; flags override its keys |"]
    group = None
    for name, f in FIELDS.items():
        if f.metadata["group"] != group:
            group = f.metadata["group"]
            rows.append(f"| **{group}** | | |")
        default = f.default_factory() if callable(f.default_factory) else f.default
        if is_bool(name):
            flag, shown = f"`--{name}` / `--no-{name}`", "auto" if default is None else "on" if default else "off"
        else:
            flag = f"`--{name}`"
            shown = "–" if default is None else f"`{','.join(default) if isinstance(default, list) else default}`"
        rows.append(f"| {flag} | {shown} | {f.metadata['help']} |")
    return "\n".join(rows) + "\n"


def convert(name: str, value, default):
    """Check and convert one value to the type of the field `name`."""
    if value is None:
        return None
    if name == "trajectory" and isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    if name == "epsilons":
        return ",".join(f"{e:g}" for e in epsilon_values(value))
    if name == "ensemble":  # None (not given): one plane
        try:
            number = int(value) if not isinstance(value, (bool, float)) or float(value).is_integer() else None
        except (TypeError, ValueError):
            number = None
        if number is None or number < 1:
            raise UserError(f"--ensemble needs a whole number of directions of at least 1, got {value!r}: e.g. "
                            "--ensemble 64 (leave it out for one plane)")
        return number
    if name in ("params", "exclude"):
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or not all(isinstance(v, str) and v.strip() for v in items):
            raise UserError(f"--{name} takes comma-separated globs over tensor names, e.g. 'model.layers.0.*', "
                            f"got {value!r}")
        return ",".join(v.strip() for v in items)
    if name == "splits":
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or not items:
            raise UserError(f"splits must be a list like train,test, got {value!r}")
        items = [str(s).strip() for s in items]
        for s in items:
            if s not in SPLITS:
                raise UserError(f"unknown split {s!r}: choose train and/or test, e.g. --splits train,test")
        return items
    if is_bool(name):
        if isinstance(value, bool):
            return value
        if value == "auto" and default is None:
            return None
        raise UserError(f"{name} must be true or false{' or auto' if default is None else ''}, got {value!r}")
    if isinstance(default, int):
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise UserError(f"{name} must be a whole number, got {value!r}")
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise UserError(f"{name} must be a whole number, got {value!r}") from None
        minimum = FIELDS[name].metadata.get("minimum", 0)
        if number < minimum:
            raise UserError(f"{name} must be {'positive' if minimum == 1 else '>= 0'}, got {number}")
        return number
    if name == "data_in_memory" and isinstance(value, bool):  # YAML 1.1 reads yes / no as booleans
        value = "yes" if value else "no"
    value = str(value)
    allowed = choices(name)
    if allowed and value not in allowed and not (name in ("loss_name", "task") and ":" in value):
        raise UserError(f"unknown {name} {value!r}: choose one of {', '.join(allowed)}")
    return value


def epsilon_values(value) -> list[float]:
    """The ε of `--epsilons` (comma-separated or a list), each a finite number > 0."""
    items = value.split(",") if isinstance(value, str) else value if isinstance(value, (list, tuple)) else [value]
    try:
        out = [float(v) for v in items]
    except (TypeError, ValueError):
        out = []
    if not out or not all(math.isfinite(e) and e > 0 for e in out):
        raise UserError(f"--epsilons takes loss rises > 0, comma-separated, e.g. --epsilons 0.1,0.5,1; got {value!r}")
    return out


def read_job_file(path: str) -> dict:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"job file {path!r} does not exist: check --config")
    try:
        data = yaml.load(p.read_text(), Loader=JobLoader)
    except yaml.YAMLError as exc:
        raise UserError(f"job file {path!r} is not valid YAML ({str(exc).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"job file {path!r} must be a mapping of keys to values, like 'model: digits_cnn'")
    return data


def given_values(values: dict, source: str = "job") -> dict:
    """The checked, converted values of a mapping that differ from the defaults (None: not given)."""
    names = list(FIELDS)
    for key in values:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f": did you mean {close[0]!r}?" if close else f": known keys are {', '.join(names)}"
            raise UserError(f"unknown key {key!r} in {source}{hint}")
    defaults, given = Job(), {}
    for name in names:
        value = convert(name, values.get(name), getattr(defaults, name))
        if value is not None and value != getattr(defaults, name):
            given[name] = value
    return given


def build_job(values: dict, source: str = "job") -> Job:
    """A validated Job from a mapping of field names to values (None, or the default: not given)."""
    given = given_values(values, source)
    job = Job(**given)
    job.axes()  # grid specs are valid
    refuse_ignored(job, set(given))
    return job


RANDOM_OPTIONS = ("xnorm", "ynorm", "xignore", "yignore", "seed")


def refuse_ignored(job: Job, given: set[str]) -> None:
    """Refuse the options in `given` (set to a non-default value) that the job would silently ignore
    (the rules of analysis.trajectory.job_directions and api.load_inputs)."""
    if "data_dir" in given and job.dataset != "cifar10":
        raise UserError(f"--data_dir is read only by --dataset cifar10, not {job.dataset!r}: leave out --data_dir")
    if "seq_len" in given and not job.dataset.startswith(("tokens:", "text:", "hfdata:")):
        raise UserError(f"--seq_len is read only by --dataset tokens:PATH, text:PATH or hfdata:FOLDER, not "
                        f"{job.dataset!r}: leave out --seq_len")
    if "tokenizer" in given and not job.dataset.startswith(("text:", "hfdata:")):
        raise UserError(f"--tokenizer is read only by --dataset text:PATH or hfdata:FOLDER (a text column), not "
                        f"{job.dataset!r}: leave out --tokenizer")
    not_random = {"dir_file": "the directions come from that file",
                  "model_file2": f"x is θ₂ − θ₁{' and y is θ₃ − θ₁' if job.model_file3 else ''}, not drawn at random",
                  "trajectory": "the directions are the checkpoints' PCA directions",
                  "xdir": "the directions are Hessian eigenvectors"}
    source = next((k for k in not_random if getattr(job, k)), None)
    for key in ("ensemble", "member"):
        if key in given and source is not None:
            raise UserError(f"--{key} draws random directions from --seed, but with --{source} {not_random[source]}: "
                            f"leave out --{key} or --{source}")
    if "member" in given and job.ensemble:
        raise UserError("--member evaluates one member of an ensemble alone: leave out --ensemble (or --member)")
    for key in ("store_directions", "epsilons"):
        if key in given and not job.ensemble:
            raise UserError(f"--{key} is for direction ensembles: add --ensemble N or leave out --{key}")
    used = set(RANDOM_OPTIONS) if source is None else set()
    if source == "xdir":
        used = {"xnorm", "ynorm", "xignore", "yignore"}  # how the eigenvectors are scaled
    if source == "trajectory":
        used = {"xignore"}  # PCA leaves out 1-D tensors with biasbn
    if source == "model_file2" and job.y and not job.model_file3:  # y is drawn at random (x first, from seed)
        used = {"seed", "ynorm" if job.ynorm else "xnorm", "yignore" if job.yignore else "xignore"}
    if not job.model_file:
        used.add("seed")  # the model is initialized from it
    for key in RANDOM_OPTIONS:
        if key in given and key not in used:
            why = not_random[source] + (", and θ* comes from --model_file" if key == "seed" else "")
            raise UserError(f"--{key} is ignored with --{source}: {why}; leave out --{key}")
    for key in ("ynorm", "yignore"):
        if key in given and not job.y:
            raise UserError(f"--{key} is for the y direction of a 2D surface: add --y (e.g. --y=-1:1:51) or leave "
                            f"out --{key}")


MAP_OPTIONS = {"k": ("topk",), "basis": ("topk",), "start_vectors": ("topk",), "samples": ("trace",),
               "estimator": ("trace",), "curvature": ("trace", "topk"), "tol": ("extremes", "topk"),
               "max_iter": ("extremes", "topk")}


def refuse_ignored_map(opts: HessianJob) -> None:
    """Refuse an option of `landscape hessian` set to a non-default value that the chosen --map does
    not read (a SharedUserError: every rank meets it)."""
    defaults = HessianJob()
    for name, maps in MAP_OPTIONS.items():
        if opts.map not in maps and getattr(opts, name) != getattr(defaults, name):
            raise SharedUserError(f"--{name} is read only by --map {' or --map '.join(maps)}, not --map {opts.map}: "
                                  f"leave out --{name} or add --map {maps[0]}")


def job_from_args(args: argparse.Namespace) -> Job:
    """YAML job file (if any) overridden by the flags that were given."""
    values = given_values(read_job_file(args.config), args.config) if args.config else {}
    flags = {f.name: getattr(args, f.name) for f in fields(Job) if getattr(args, f.name, None) is not None}
    return build_job({**values, **flags}, "command line")
