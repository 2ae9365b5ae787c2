"""Per-point evaluation of loss and accuracy at θ = θ* + αδ + βη.

The point is written in place into the model's own tensors: copy θ* back, then
add α·δ and β·η with fused multi-tensor ops, so nothing is allocated per point
and no error accumulates from point to point. Data stay on the device (or, when
they do not fit in half a GPU's free memory, in pinned host memory, copied batch
by batch); sums are accumulated on the device in float64 and read back once per
point.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .data import Split
from .directions import Direction, target_tensors
from .errors import UserError

LOSSES = ("crossentropy", "mse")
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def summed_loss(name: str, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum over the batch of the per-sample loss.

    crossentropy: -log softmax(z)_y.  mse: mean over classes of (softmax(z) - onehot(y))^2
    (the reference implementation's MSE on softmax outputs)."""
    if name == "crossentropy":
        return F.cross_entropy(logits, labels, reduction="sum")
    if name == "mse":
        onehot = F.one_hot(labels, logits.shape[1]).to(logits.dtype)
        return (logits.softmax(1) - onehot).pow(2).mean(1).sum()
    if ":" in name:  # the user's own package.module:function(logits, labels) -> summed loss
        from .importpath import resolve

        return resolve(name, "--loss_name")(logits, labels)
    raise UserError(f"unknown loss {name!r}: choose one of {', '.join(LOSSES)}")


def summed_losses(name: str, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(k,) sums over the batch for k stacked points' logits (k, batch, classes), one kernel
    sequence for all k with the built-in losses (a loop over the points for the user's own)."""
    if name == "crossentropy":
        return -logits.log_softmax(-1).gather(-1, labels.expand(len(logits), -1).unsqueeze(-1)).sum((1, 2))
    if name == "mse":
        onehot = F.one_hot(labels, logits.shape[-1]).to(logits.dtype)
        return (logits.softmax(-1) - onehot).pow(2).mean(-1).sum(-1)
    return torch.stack([summed_loss(name, z, labels) for z in logits])


class SurfaceEvaluator:
    """Loss and accuracy (percent) over each split at a batch of grid coordinates.

    metrics: ['<split>/loss', '<split>/acc', ...] in the order of the returned columns.
    points_per_pass K > 1: K perturbed parameter sets stacked once (K × |θ| memory) and
    evaluated in one forward pass per batch with `vmap(functional_call)`; worth it for
    models too small to fill a GPU (see bench/)."""

    def __init__(
        self,
        model: nn.Module,
        splits: dict[str, Split],
        directions: list[Direction],
        *,
        dir_type: str = "weights",
        loss_name: str = "crossentropy",
        batch_size: int = 512,
        device: torch.device | str = "cpu",
        points_per_pass: int = 1,
        precision: str = "fp32",
        compile: bool = False,
        channels_last: bool = False,
        bn_calibration: Split | None = None,
        resident: bool | None = None,
    ):
        if loss_name not in LOSSES and ":" not in loss_name:
            raise UserError(f"unknown loss {loss_name!r}: choose one of {', '.join(LOSSES)}")
        if precision not in PRECISIONS:
            raise UserError(f"unknown precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        # autocast for the forward pass; losses and sums stay in float32/float64
        self.amp_dtype = PRECISIONS[precision]
        self.compile = compile
        self.forward = torch.compile(self.model) if compile else self.model
        named = target_tensors(self.model, dir_type)
        self.names = list(named)
        self.targets = [t.data if isinstance(t, nn.Parameter) else t for t in named.values()]
        self.origin = [t.detach().clone() for t in self.targets]  # clone keeps each tensor's memory format
        self.directions = [[torch.empty_like(t).copy_(d[n]) for n, t in zip(self.names, self.targets)] for d in directions]
        self.whole = self._part(range(len(self.targets)))
        # data on the device when they fit (see Split.place); `resident=False` forces per-batch copies
        self.resident = resident
        self.splits = {name: split.place(self.device, self.memory_format, resident) for name, split in splits.items()}
        self.loss_name = loss_name
        self.batch_size = int(batch_size)
        self.metrics = [f"{s}/{m}" for s in self.splits for m in ("loss", "acc")]
        self.set_points_per_pass(points_per_pass)
        self.calibration = None
        if bn_calibration is not None:
            self._prepare_calibration(bn_calibration, dir_type)

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None)

    @torch.no_grad()
    def set_point(self, coord) -> None:
        """θ <- θ* + Σ_i coord_i · d_i, in place."""
        self._write_point(self.targets, coord, self.whole)

    def _part(self, index) -> tuple[list, list, list]:
        """θ*, the directions and the positions of running variances (a perturbed one must stay
        >= 0) of the targets numbered `index`, gathered once for _write_point."""
        index = list(index)
        return ([self.origin[i] for i in index], [[d[i] for i in index] for d in self.directions],
                [p for p, i in enumerate(index) if self.names[i].endswith("running_var")])

    @staticmethod
    def _write_point(tensors: list[torch.Tensor], coord, part) -> None:
        """tensors <- θ* + Σ_i coord_i · d_i (running variances clamped at 0), in place; `part`
        from _part for the same targets."""
        origin, directions, variances = part
        torch._foreach_copy_(tensors, origin)
        for d, a in zip(directions, coord):
            if a != 0.0:
                torch._foreach_add_(tensors, d, alpha=float(a))
        for p in variances:
            tensors[p].clamp_(min=0.0)

    def check_deterministic(self) -> None:
        """The first batch of each split, twice at θ*: the outputs must agree. Randomness left in
        the forward pass (dropout called with training=True, noise layers) makes every value of
        the surface noisy."""
        self.restore()
        with torch.no_grad():
            for name, split in self.splits.items():
                xb, _ = next(split.batches(self.batch_size, self.device))
                with self.autocast():
                    a, b = self.forward(xb).float(), self.forward(xb).float()
                if not torch.allclose(a, b, rtol=1e-5, atol=1e-6):
                    raise UserError(
                        f"the model gives different outputs for the same {name!r} inputs in eval mode: remove randomness "
                        "from its forward pass (F.dropout(..., training=True), noise) or use self.training to switch it off")

    def restore(self) -> None:
        self.set_point(())
        if self.calibration is not None:
            torch._foreach_copy_(self.bn_buffers, self.bn_origin)

    def _prepare_calibration(self, split: Split, dir_type: str) -> None:
        """BN statistics re-estimated at every point from `split` (precise BN: the average over
        its batches of the batch statistics of the perturbed network)."""
        from torch.nn.modules.batchnorm import _BatchNorm

        self.bn_layers = [m for m in self.model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
        if not self.bn_layers:
            raise UserError("--bn_recompute: the model has no batch-norm layer with running statistics: leave it out")
        if dir_type == "states":
            raise UserError("--bn_recompute re-estimates the BN statistics that --dir_type states perturbs: choose one")
        if self.points_per_call > 1:
            raise UserError("--bn_recompute works one point per pass: leave out --points_per_pass")
        self.bn_buffers = [b for m in self.bn_layers for b in (m.running_mean, m.running_var)]
        self.bn_origin = [b.clone() for b in self.bn_buffers]
        self.calibration = split.place(self.device, self.memory_format, self.resident)

    @torch.no_grad()
    def recalibrate(self) -> None:
        for m in self.bn_layers:
            m.reset_running_stats()
            m.momentum, m.saved_momentum = None, m.momentum  # None: cumulative average over batches
            m.train()
        try:
            for xb, _ in self.calibration.batches(self.batch_size, self.device):
                with self.autocast():
                    self.forward(xb)
        finally:
            for m in self.bn_layers:
                m.momentum = m.saved_momentum
                m.eval()

    @torch.no_grad()
    def evaluate_point(self) -> torch.Tensor:
        """[loss, acc, loss, acc, ...] of the model as it is, one device sync."""
        sums = []
        for split in self.splits.values():
            loss = torch.zeros((), dtype=torch.float64, device=self.device)
            correct = torch.zeros((), dtype=torch.int64, device=self.device)
            for xb, yb in split.batches(self.batch_size, self.device):
                with self.autocast():
                    logits = self.forward(xb).float()
                loss += summed_loss(self.loss_name, logits, yb).double()
                correct += (logits.argmax(1) == yb).sum()
            n = len(split)
            sums += [loss / n, correct.double() * (100.0 / n)]
        return torch.stack(sums)

    def __call__(self, coords: np.ndarray) -> np.ndarray:
        if self.points_per_call > 1:
            return np.concatenate([self.evaluate_stack(coords[i : i + self.points_per_call]).cpu().numpy()
                                   for i in range(0, len(coords), self.points_per_call)])
        out = np.empty((len(coords), len(self.metrics)))
        for k, coord in enumerate(coords):
            self.set_point(coord)
            if self.calibration is not None:
                self.recalibrate()
            out[k] = self.evaluate_point().cpu().numpy()
        return out

    def set_points_per_pass(self, k: int) -> None:
        self.points_per_call = max(1, int(k))
        if self.points_per_call > 1:
            self._prepare_stack(self.points_per_call)
        else:
            self.stack = None

    def fastest_points_per_pass(self, candidates=(1, 4, 16)) -> int:
        """Time each K on K points near θ* (best of 2) and return the K with the least time per point
        (the memory budget: a K whose stack or activations run out of GPU memory ends the search)."""
        import time

        best, best_time = 1, float("inf")
        for k in candidates:
            coords = np.linspace(0, 0.01, 2 * k).reshape(k, 2)[:, : len(self.directions)]
            seconds = []
            try:
                self.set_points_per_pass(k)
                self(coords[:1])  # warm-up
                for _ in range(2):
                    t0 = time.perf_counter()
                    self(coords)
                    seconds.append((time.perf_counter() - t0) / k)
            except torch.OutOfMemoryError:  # k parameter sets and their activations do not fit: stop here
                self.stack = None
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                break
            if min(seconds) < best_time:
                best, best_time = k, min(seconds)
        self.restore()
        self.set_points_per_pass(best)
        return best

    def _prepare_stack(self, k: int) -> None:
        """Room for k parameter sets of the tensors that vary from point to point, allocated once.
        Targets whose direction is zero in every direction (biases and BN with the default
        --xignore biasbn) are passed unstacked, at θ*: no K copies of them to hold and write."""
        from torch.func import functional_call, vmap

        stacked = [i for i in range(len(self.targets)) if any(bool(d[i].any()) for d in self.directions)] or [0]
        self.stack = [torch.empty((k, *self.targets[i].shape), dtype=self.targets[i].dtype, device=self.device)
                      for i in stacked]
        self.stacked_part = self._part(stacked)
        names = [self.names[i] for i in stacked]
        fixed = {**dict(self.model.named_parameters()), **dict(self.model.named_buffers()),
                 **{n: t for n, t in zip(self.names, self.origin)}}
        fixed = {n: t for n, t in fixed.items() if n not in names}

        def forward(tensors, inputs):
            return functional_call(self.model, {**dict(zip(names, tensors)), **fixed}, (inputs,))

        self.batched_forward = vmap(forward, in_dims=(0, None))
        if self.compile:
            self.batched_forward = torch.compile(self.batched_forward)

    @torch.no_grad()
    def evaluate_stack(self, coords: np.ndarray) -> torch.Tensor:
        """(k, n_metrics) for k <= points_per_pass coordinates, one forward pass per batch."""
        k = len(coords)
        for j, coord in enumerate(coords):
            self._write_point([s[j] for s in self.stack], coord, self.stacked_part)
        tensors = [s[:k] for s in self.stack]
        columns = []
        for split in self.splits.values():
            loss = torch.zeros(k, dtype=torch.float64, device=self.device)
            correct = torch.zeros(k, dtype=torch.int64, device=self.device)
            for xb, yb in split.batches(self.batch_size, self.device):
                with self.autocast():
                    logits = self.batched_forward(tensors, xb).float()  # (k, batch, classes)
                loss += summed_losses(self.loss_name, logits, yb).double()
                correct += (logits.argmax(-1) == yb).sum(-1)
            n = len(split)
            columns += [loss / n, correct.double() * (100.0 / n)]
        return torch.stack(columns, dim=1)
