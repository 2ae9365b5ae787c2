"""Batch-norm statistics re-estimated at every point (`--bn_recompute N`): precise BN, the
average over the batches of N train examples of the batch statistics of the perturbed network."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..errors import UserError
from .data import Split


class BNRecalibration:
    """Recomputes the running statistics of every tracking BN layer of `model` from `split`."""

    def __init__(self, model: nn.Module, split: Split, *, dir_type: str, batch_size: int):
        self.layers = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
        if not self.layers:
            raise UserError("--bn_recompute: the model has no batch-norm layer with running statistics: leave it out")
        if dir_type == "states":
            raise UserError("--bn_recompute re-estimates the BN statistics that --dir_type states perturbs: choose one")
        # reset_running_stats() zeroes num_batches_tracked too: it is put back with the statistics
        self.buffers = [b for m in self.layers for b in (m.running_mean, m.running_var, m.num_batches_tracked)
                        if b is not None]
        self.origin = [b.clone() for b in self.buffers]
        self.split, self.batch_size = split, int(batch_size)

    @torch.no_grad()
    def run(self, forward, device, autocast) -> None:
        """Reset the statistics and average them over the split (momentum None), in train mode."""
        for m in self.layers:
            m.reset_running_stats()
            m.momentum, m.saved_momentum = None, m.momentum  # None: cumulative average over batches
            m.train()
        try:
            for xb, _ in self.split.batches(self.batch_size, device):
                with autocast():
                    forward(xb)
        finally:
            for m in self.layers:
                m.momentum = m.saved_momentum
                m.eval()

    def restore(self) -> None:
        torch._foreach_copy_(self.buffers, self.origin)
