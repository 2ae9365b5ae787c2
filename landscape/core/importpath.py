"""The user's own model, dataset and loss, named by an import path `package.module:name`.

The module is imported from PYTHONPATH or, failing that, from the current folder; `name`
may be dotted (`module:Class.method`). Mistakes become one-line UserErrors.
"""
from __future__ import annotations

import functools
import importlib
import os
import sys

from ..errors import UserError

PATH_PREFIXES = ("hf:", "tokens:", "text:", "hfdata:")  # `hf:FOLDER` models and token datasets name files, not modules


def is_import_path(name) -> bool:
    return isinstance(name, str) and ":" in name and not name.startswith(PATH_PREFIXES)


@functools.cache
def resolve(path: str, flag: str):
    """The callable that `path` (`package.module:name`) names; `flag` is used in messages."""
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise UserError(f"{flag} {path!r} is not an import path: write package.module:name, e.g. mymodels:resnet")
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise UserError(
                f"{flag} {path!r}: there is no module {module_name!r}: put its folder on PYTHONPATH "
                "or run from the folder that holds it") from None
        raise UserError(f"{flag} {path!r}: importing {module_name!r} failed: it needs {exc.name!r}, "
                        "which is not installed") from None
    except Exception as exc:  # a syntax or runtime error in the user's module
        raise UserError(f"{flag} {path!r}: importing {module_name!r} failed ({type(exc).__name__}: {exc})") from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UserError(f"{flag} {path!r}: module {module_name!r} has no {attr!r}: check the name after ':'")
        obj = getattr(obj, part)
    if not callable(obj):
        raise UserError(f"{flag} {path!r} is a {type(obj).__name__}, not a function or class: name a factory")
    return obj


def check_loss(path: str, logits, labels) -> None:
    """The user's loss `path` must map (logits, labels) to the sum over the batch of the
    per-sample losses, a finite 0-dim tensor: checked on a few samples, one by one and together."""
    import torch

    fn = resolve(path, "--loss_name")
    flag = f"--loss_name {path!r}"
    try:
        whole = fn(logits, labels)
        parts = [fn(logits[i : i + 1], labels[i : i + 1]) for i in range(len(labels))]
    except Exception as exc:
        raise UserError(f"{flag} fails on logits {tuple(logits.shape)} and labels {tuple(labels.shape)} "
                        f"({type(exc).__name__}: {exc})") from None
    for out in [whole, *parts]:
        if not isinstance(out, torch.Tensor) or out.dim() != 0 or not out.is_floating_point():
            what = f"shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else type(out).__name__
            raise UserError(f"{flag} returns {what}: it must return a 0-dim float tensor, the loss summed over the batch")
    whole, total = float(whole), float(sum(float(p) for p in parts))
    if not (abs(whole - total) <= 1e-4 * max(1.0, abs(total))):
        hint = " (it looks like a mean: use reduction='sum')" if abs(whole * len(labels) - total) <= 1e-4 * max(1.0, abs(total)) else ""
        raise UserError(f"{flag} gives {whole:g} for {len(labels)} samples but {total:g} as the sum of their "
                        f"single losses{hint}: it must return the sum of per-sample losses")
