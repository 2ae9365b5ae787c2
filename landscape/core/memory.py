"""The memory a surface job needs on its device, planned before any work (issue 17).

Counted: the model when it is not yet on the device; the θ writer's copies (θ* in each tensor's
dtype, and each direction: float32 for bf16/fp16 tensors, see core.theta); the K parameter sets
of `--points_per_pass K` (of the tensors some direction moves, in their dtype: core.evaluate
stacks only those); a streamed split's batches in flight (the batch being evaluated and the next,
on the device: 2 · min(batch size, examples) · bytes of an example). Not counted: activations (a
batch's, which --batch_size sets), the θ writer's float32 scratch (the largest bf16/fp16 tensor) and data
held in memory (placed on a GPU only when they fit, see core.data.Split.place; on the host
already allocated when this is planned). The budget is this rank's share of the device: a GPU's
free memory, or the host's available memory (core.device.free_memory), divided among the ranks
that use it (core.device.ranks_per_device).
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import UserError
from .directions import target_tensors
from .models import weights_dtype
from .stream import StreamedSplit, gib
from .theta import LOW_PRECISION


def nbytes(t: torch.Tensor, dtype: torch.dtype | None = None) -> int:
    return t.nelement() * (torch.empty((), dtype=dtype).element_size() if dtype else t.element_size())


def surface_needs(model: nn.Module, directions, splits: dict, device, *, dir_type: str = "weights", select=None,
                  points_per_pass: int = 1, batch_size: int = 512) -> dict[str, int]:
    """{what: bytes} a surface evaluator will allocate on `device` (see the module's docstring)."""
    device = torch.device(device)
    named = target_tensors(model, dir_type, select)
    targets = list(named.values())
    need = {}
    tensors = list(model.parameters()) + list(model.buffers())
    if any(t.device != device for t in tensors):
        need["the model"] = sum(nbytes(t) for t in tensors)
    need["θ*"] = sum(nbytes(t) for t in targets)
    per = sum(nbytes(t, torch.float32 if t.dtype in LOW_PRECISION else None) for t in targets)
    if directions:
        need[f"{len(directions)} direction(s)"] = len(directions) * per
    if points_per_pass > 1:
        moving = [t for name, t in named.items()
                  if any(name in d and bool(torch.as_tensor(d[name]).any()) for d in directions or ())]
        need[f"{points_per_pass} points per pass"] = points_per_pass * sum(nbytes(t) for t in moving or targets[:1])
    streamed = [s for s in splits.values() if isinstance(s, StreamedSplit)]
    if streamed:
        need["streamed batches"] = 2 * max(min(batch_size, len(s)) * s.example_bytes for s in streamed)
    return need


def check_fits(need: dict[str, int], budget: int, device, sharing: int = 1) -> None:
    """A UserError, before any work, when `need` is more than `budget` (this rank's share of the device)."""
    total = sum(need.values())
    if total <= budget:
        return
    parts = ", ".join(f"{k} {gib(v)}" for k, v in need.items())
    fixes = []
    if any(k.endswith("points per pass") for k in need):
        fixes.append("lower --points_per_pass")
    fixes += ["hold the weights in bf16 (--dtype bf16)", f"run fewer ranks per {'GPU' if device.type == 'cuda' else 'node'}"]
    raise UserError(f"the surface needs {gib(total)} on {device} ({parts}) but this rank may use {gib(budget)} "
                    f"({sharing} rank(s) share the device's free memory): {', or '.join(fixes)}")


def example_bytes(evaluator, examples: int = 8) -> int:
    """Bytes one more example adds to a forward pass of `evaluator` (a SurfaceEvaluator at θ*), an
    upper bound for choosing a batch size within the memory budget (core.tuning): on a GPU, the
    peak allocated above what was allocated before, over a batch of a few examples; on a CPU, the
    sum of every module's outputs (no_grad frees each once it is used, so the true peak is
    lower) and the root's; both per example, plus the example itself (a batch slice or copy)."""
    x = next(iter(evaluator.splits.values())).head(examples).to(evaluator.device, evaluator.memory_format).inputs
    if x.is_floating_point():  # as the evaluator casts them (no loader of this size for a streamed split)
        x = x.to(weights_dtype(evaluator.model))
    n = len(x)
    forward = getattr(evaluator.forward, "_orig_mod", evaluator.forward)  # not compiled: no compilation for this
    modules = forward if isinstance(forward, nn.Module) else evaluator.model
    cuda = evaluator.device.type == "cuda"
    total, hooks = 0, []
    if cuda:
        torch.cuda.synchronize(evaluator.device)
        torch.cuda.reset_peak_memory_stats(evaluator.device)
        base = torch.cuda.memory_allocated(evaluator.device)
    else:
        def count(module, inputs, output):
            nonlocal total
            total += sum(t.nbytes for t in torch.utils._pytree.tree_leaves(output) if isinstance(t, torch.Tensor))

        hooks = [m.register_forward_hook(count) for m in modules.modules() if not list(m.children()) or m is modules]
    try:
        with torch.no_grad(), evaluator.autocast():
            evaluator.task.output(forward(x))
    finally:
        for h in hooks:
            h.remove()
    if cuda:
        total = torch.cuda.max_memory_allocated(evaluator.device) - base
    return int(total / n) + x[:1].nbytes
