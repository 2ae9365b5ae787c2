"""Directions in parameter space, keyed by parameter (or state) name.

A random direction d has d_t ~ N(0, I) for every tensor t of θ*, then is
normalized tensor by tensor (Li et al. 2018, Sec. 4):

- ``filter``:  d_{t,i} <- d_{t,i} * ||θ_{t,i}|| / (||d_{t,i}|| + 1e-10) for every slice i along
  dim 0 (an output filter of a conv; a row of a linear weight, i.e. a 1x1 conv);
- ``layer``:   d_t <- d_t * ||θ_t|| / ||d_t||;
- ``weight``:  d_t <- d_t ⊙ θ_t;
- ``dfilter`` / ``dlayer``: unit norm per filter / per tensor;
- ``none``:    unchanged.

Tensors with dim <= 1 (biases, BN weights and statistics) get d_t = 0 with
ignore ``biasbn`` and d_t = θ_t otherwise, as in the reference implementation.

A tensor tied to another (a language model's output layer sharing the input embedding's
weight, a shared buffer) is one tensor of θ, listed once under its first name: moving it once
per alias would write θ* + 2αd.
"""
from __future__ import annotations

import hashlib

import torch
from torch import nn

from ..errors import UserError
from ..options import IGNORES, NORMS, DirType
from .selection import Selection

Direction = dict[str, torch.Tensor]


def alias_groups(tensors: dict[str, torch.Tensor]) -> dict[str, list[str]]:
    """{first name: every name of that tensor}: aliases share memory, shape, strides and dtype
    (as `state_dict()` lists a tied weight once per module)."""
    first, groups = {}, {}
    for name, t in tensors.items():
        key = (t.device, t.data_ptr(), t.dtype, tuple(t.shape), t.stride()) if t.numel() else name
        if key in first:
            groups[first[key]].append(name)
        else:
            first[key] = name
            groups[name] = [name]
    return groups


def distinct(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`tensors` with each tied tensor once, under its first name (see `alias_groups`)."""
    return {name: tensors[name] for name in alias_groups(tensors)}


def target_tensors(model: nn.Module, dir_type: DirType, select: Selection | None = None) -> dict[str, torch.Tensor]:
    """The tensors a direction spans, by name, each tied tensor once (under its first name):
    `parameters()` for weights, the floating-point entries of `state_dict()` (BN running
    statistics too, not num_batches_tracked) for states; only those of `select` (core.selection),
    whose globs may name any alias of a tied tensor."""
    if dir_type == "weights":
        named = dict(model.named_parameters(remove_duplicate=False))
    elif dir_type == "states":
        named = {k: v for k, v in model.state_dict(keep_vars=True).items() if v.is_floating_point()}
    else:
        raise UserError(f"unknown dir_type {dir_type!r}: choose weights or states")
    groups = alias_groups(named)
    names = list(groups) if select is None or select.everything else select.names(groups)
    return {name: named[name] for name in names}


def normalize(d: torch.Tensor, w: torch.Tensor, norm: str) -> None:
    """Normalize direction tensor d against weight tensor w in place (see module docstring)."""
    if norm == "filter":
        for di, wi in zip(d, w):
            di.mul_(wi.norm() / (di.norm() + 1e-10))
    elif norm == "layer":
        d.mul_(w.norm() / d.norm())
    elif norm == "weight":
        d.mul_(w)
    elif norm == "dfilter":
        for di in d:
            di.div_(di.norm() + 1e-10)
    elif norm == "dlayer":
        d.div_(d.norm())
    elif norm != "none":
        raise UserError(f"unknown normalization {norm!r}: choose one of {', '.join(NORMS)}")


def random_direction(
    tensors: dict[str, torch.Tensor], *, generator: torch.Generator, norm: str = "filter", ignore: str = "biasbn"
) -> Direction:
    """A Gaussian direction over `tensors`, drawn on the CPU in float32 (same numbers on any device)."""
    if norm not in NORMS:
        raise UserError(f"unknown normalization {norm!r}: choose one of {', '.join(NORMS)}")
    if ignore not in IGNORES:
        raise UserError(f"unknown ignore {ignore!r}: choose biasbn or none")
    out = {}
    for name, w in tensors.items():
        w = w.detach().to("cpu", torch.float32)
        d = torch.randn(w.shape, generator=generator, dtype=torch.float32)
        if w.dim() <= 1:
            d = torch.zeros_like(w) if ignore == "biasbn" else w.clone()
        else:
            normalize(d, w, norm)
        out[name] = d
    return out


def random_directions(
    model: nn.Module,
    *,
    seed: int,
    dir_type: str = "weights",
    ndim: int = 2,
    norms: tuple[str, ...] = ("filter", "filter"),
    ignores: tuple[str, ...] = ("biasbn", "biasbn"),
    select: Selection | None = None,
) -> list[Direction]:
    """`ndim` directions from one generator seeded with `seed`: x first, then y; over the tensors
    of `select` only (drawn in their order, so a selection draws other numbers than the whole θ)."""
    tensors = target_tensors(model, dir_type, select)
    generator = torch.Generator().manual_seed(int(seed))
    return [random_direction(tensors, generator=generator, norm=norms[i], ignore=ignores[i]) for i in range(ndim)]


def check_directions(directions: list[Direction], model: nn.Module, dir_type: str, source: str,
                     select: Selection | None = None) -> None:
    """Directions loaded from a file must match the model's (selected) tensor names and shapes."""
    tensors = target_tensors(model, dir_type, select)
    for axis, d in zip("xy", directions):
        missing = [k for k in tensors if k not in d]
        extra = [k for k in d if k not in tensors]
        wrong = [k for k in tensors if k in d and tuple(d[k].shape) != tuple(tensors[k].shape)]
        if missing or extra or wrong:
            what = (f"missing {missing[:3]}" if missing else "") + (f" unexpected {extra[:3]}" if extra else "") + (
                f" wrong shape {wrong[:3]}" if wrong else ""
            )
            raise UserError(
                f"{axis} direction in {source!r} does not fit the model ({what.strip()}): "
                "use a direction file made for this model, --dir_type and --params/--exclude"
            )


def fingerprint(tensors: dict[str, torch.Tensor] | list[dict[str, torch.Tensor]]) -> str:
    """Short SHA-256 of names, shapes and float32 values (identifies θ* or a set of directions).
    A plain `state_dict()` hashes a tied tensor once per alias: still the same θ*, the same hash."""
    h = hashlib.sha256()
    for group in tensors if isinstance(tensors, list) else [tensors]:
        for name, t in group.items():
            h.update(name.encode())
            h.update(str(tuple(t.shape)).encode())
            h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def tensor_layouts(model: nn.Module) -> dict[str, list[tuple[str, tuple]]]:
    """(name, shape) by position in each tensor order a reference-tool direction file may use."""
    states = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    return {
        "weights": [(k, tuple(p.shape)) for k, p in model.named_parameters()],
        "states": states,  # PyTorch >= 0.4.1: num_batches_tracked included
        "states (PyTorch < 0.4.1)": [(k, s) for k, s in states if not k.endswith("num_batches_tracked")],
    }


def as_arrays(directions: list[Direction]) -> list[dict]:
    """The directions as numpy arrays (for the surface file)."""
    return [{k: v.detach().cpu().numpy() for k, v in d.items()} for d in directions]
