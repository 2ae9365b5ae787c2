"""The loss surface's evaluator: the task's metrics over each split at θ = θ* + αδ + βη.

θ is written by the one θ writer (core.theta); the metrics come from the task (core.tasks).
Data stay on the device (or, when they do not fit in half a GPU's free memory, in pinned host
memory, copied batch by batch); sums are accumulated on the device in float64 and read back
once per point.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import islice

import numpy as np
import torch
from torch import nn

from ..errors import UserError
from ..options import PRECISIONS
from .bn import BNRecalibration
from .data import Split
from .device import group_sum
from .directions import Direction
from .fold import fold_batch_norm
from .models import Snapshot, weights_dtype
from .selection import Selection
from .tasks import Task, UserMetrics, make_task, output_vector
from .theta import ThetaWriter

AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class SurfaceEvaluator:
    """Loss and accuracy (percent) over each split at a batch of grid coordinates (an
    engine.Evaluator).

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
        task: str = "classification",
        loss_name: str = "crossentropy",
        batch_size: int = 512,
        device: torch.device | str = "cpu",
        points_per_pass: int = 1,
        precision: str = "fp32",
        compile: bool = False,
        channels_last: bool = False,
        fold_bn: bool = False,
        bn_calibration: Split | None = None,
        resident: bool | None = None,
        sharing: int = 1,
        select: Selection | None = None,
        group=None,
    ):
        if precision not in PRECISIONS:
            raise UserError(f"unknown precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
        self.task: Task = make_task(task, loss_name)
        self.device = torch.device(device)
        self.snapshot = Snapshot(model)  # restore() leaves the model as it was: device, layout, flags
        self.model = model.to(self.device).eval()
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.amp_dtype = AUTOCAST_DTYPES[precision]  # autocast of the forward pass; sums stay float64
        self.compile = compile
        # BN folded into the conv before it (core.fold); not while BN statistics are re-estimated at every point
        self.forward, self.folded = fold_batch_norm(self.model) if fold_bn and bn_calibration is None else (self.model, 0)
        if compile:
            self.forward = torch.compile(self.forward)
        self.theta = ThetaWriter(self.model, directions, dir_type, select)
        self.group = group  # the ranks that evaluate each point together, each on its share of `splits`
        self.batch_limit = None  # at most this many batches of each split (timing at start-up: core.tuning)
        # data on the device when they fit (see Split.place); `resident=False` forces per-batch copies
        self.splits = {name: split.place(self.device, self.memory_format, resident, sharing).cast(weights_dtype(model))
                       for name, split in splits.items()}
        self.batch_size = int(batch_size)
        if isinstance(self.task, UserMetrics):  # the names of the user's metrics, from a first call
            xb, yb = next(next(iter(self.splits.values())).batches(self.batch_size, self.device))
            with torch.no_grad(), self.autocast():
                self.task.discover(self.task.output(self.forward(xb)), yb, xb)
        self.metrics = [f"{s}/{m}" for s in self.splits for m in self.task.metrics]
        self.set_points_per_pass(points_per_pass)
        self.bn = None
        if bn_calibration is not None:
            if self.points_per_call > 1:
                raise UserError("--bn_recompute works one point per pass: leave out --points_per_pass")
            self.bn = BNRecalibration(self.model, bn_calibration.place(self.device, self.memory_format, resident, sharing)
                                      .cast(weights_dtype(model)),
                                      dir_type=dir_type, batch_size=batch_size)

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None)

    def set_point(self, coord) -> None:
        """θ <- θ* + Σ_i coord_i · d_i, in place."""
        self.theta.write(coord)

    def check_deterministic(self) -> None:
        """The first batch of each split, twice at θ*: the outputs must agree. Randomness left in
        the forward pass (dropout called with training=True, noise layers) makes every value of
        the surface noisy."""
        self.theta.restore()
        with torch.no_grad():
            for name, split in self.splits.items():
                xb, _ = next(split.batches(self.batch_size, self.device))
                with self.autocast():
                    a, b = (output_vector(self.task.output(self.forward(xb))) for _ in range(2))
                if not torch.allclose(a, b, rtol=1e-5, atol=1e-6):
                    raise UserError(
                        f"the model gives different outputs for the same {name!r} inputs in eval mode: remove randomness "
                        "from its forward pass (F.dropout(..., training=True), noise) or use self.training to switch it off")

    def restore(self) -> None:
        self.theta.restore()
        if self.bn is not None:
            self.bn.restore()
        self.snapshot.restore()

    @torch.no_grad()
    def evaluate_point(self) -> torch.Tensor:
        """The metrics of the model as it is ([loss, acc] per split), one device sync."""
        sums = []
        for split in self.splits.values():
            totals, count = 0, 0  # a float64 tensor of the task's sums after the first batch
            for xb, yb in islice(split.batches(self.batch_size, self.device), self.batch_limit):
                with self.autocast():
                    totals += self.task.sums(self.task.output(self.forward(xb)), yb, inputs=xb)
                count += self.task.count(yb)
            sums.append((totals, count))
        return torch.cat(self.means(sums))

    def means(self, sums: list[tuple[torch.Tensor, int]]) -> list[torch.Tensor]:
        """Each split's metrics from its (sums, count); with a group (--ranks_per_point), both are
        first added over the group's ranks, each of which evaluated its share of the split (one
        reduction for all splits)."""
        if self.group is not None and self.group.size > 1:
            flat = group_sum(self.group, torch.cat([torch.cat([t.reshape(-1).double(), t.new_tensor([float(c)],
                                                                dtype=torch.float64)]) for t, c in sums]))
            out, i = [], 0
            for t, _ in sums:
                out.append((flat[i : i + t.numel()].view(t.shape), int(flat[i + t.numel()])))
                i += t.numel() + 1
            sums = out
        return [self.task.means(t, c) for t, c in sums]

    def __call__(self, coords: np.ndarray) -> np.ndarray:
        if self.points_per_call > 1:
            return np.concatenate([self.evaluate_stack(coords[i : i + self.points_per_call]).cpu().numpy()
                                   for i in range(0, len(coords), self.points_per_call)])
        out = np.empty((len(coords), len(self.metrics)))
        for k, coord in enumerate(coords):
            self.set_point(coord)
            if self.bn is not None:
                self.bn.run(self.forward, self.device, self.autocast)
            out[k] = self.evaluate_point().cpu().numpy()
        return out

    def set_points_per_pass(self, k: int) -> None:
        self.points_per_call = max(1, int(k))
        if self.points_per_call > 1:
            self._prepare_stack(self.points_per_call)
        else:
            self.stack = None

    def _prepare_stack(self, k: int) -> None:
        """Room for k parameter sets of the tensors that vary from point to point, allocated once.
        Targets whose direction is zero in every direction (biases and BN with the default
        --xignore biasbn) are passed unstacked, at θ*: no K copies of them to hold and write."""
        from torch.func import functional_call, vmap

        theta = self.theta
        stacked = theta.varying()
        self.stack = [torch.empty((k, *theta.targets[i].shape), dtype=theta.targets[i].dtype, device=self.device)
                      for i in stacked]
        self.stacked_part = theta.part(stacked)
        names = [theta.names[i] for i in stacked]
        fixed = {**dict(self.model.named_parameters()), **dict(self.model.named_buffers()),
                 **dict(zip(theta.names, theta.origin))}
        fixed = {n: t for n, t in fixed.items() if n not in names}

        def forward(tensors, inputs):
            return self.task.output(functional_call(self.model, {**dict(zip(names, tensors)), **fixed}, (inputs,)))

        self.batched_forward = vmap(forward, in_dims=(0, None))
        if self.compile:
            self.batched_forward = torch.compile(self.batched_forward)

    @torch.no_grad()
    def evaluate_stack(self, coords: np.ndarray) -> torch.Tensor:
        """(k, n_metrics) for k <= points_per_pass coordinates, one forward pass per batch."""
        k = len(coords)
        for j, coord in enumerate(coords):
            ThetaWriter.write_into([s[j] for s in self.stack], coord, self.stacked_part)
        tensors = [s[:k] for s in self.stack]
        sums = []
        for split in self.splits.values():
            totals, count = 0, 0
            for xb, yb in islice(split.batches(self.batch_size, self.device), self.batch_limit):
                with self.autocast():
                    totals += self.task.sums(self.batched_forward(tensors, xb), yb, stacked=True, inputs=xb)
                count += self.task.count(yb)
            sums.append((totals, count))
        return torch.cat(self.means(sums), dim=1)


@dataclass(frozen=True)
class Evaluation:
    """Every setting that changes the value of a point. The surface is evaluated this way, and so
    is everything computed later from its file (trajectory projections, Hessian maps): one way."""

    dir_type: str = "weights"
    loss_name: str = "crossentropy"
    batch_size: int = 512
    task: str = "classification"
    precision: str = "fp32"
    compile: bool = False
    channels_last: bool = False
    fold_bn: bool = False  # eval-mode BN folded into the conv before it (core.fold)
    bn_calibration: Split | None = None  # re-estimate BN statistics at every point from this split
    select: Selection | None = None  # the tensors the directions move (--params / --exclude; None: all)

    def evaluator(self, model: nn.Module, splits: dict[str, Split], directions: list[Direction], device,
                  points_per_pass: int = 1, sharing: int = 1, group=None) -> SurfaceEvaluator:
        """`sharing`: ranks using the same device (they split its memory); `group`: the ranks that
        evaluate each point together, `splits` this rank's share of the data."""
        return SurfaceEvaluator(model, splits, directions, dir_type=self.dir_type, task=self.task, loss_name=self.loss_name,
                                batch_size=self.batch_size, device=device, points_per_pass=points_per_pass,
                                precision=self.precision, compile=self.compile, channels_last=self.channels_last,
                                fold_bn=self.fold_bn,
                                bn_calibration=self.bn_calibration, sharing=sharing, select=self.select,
                                group=group)
