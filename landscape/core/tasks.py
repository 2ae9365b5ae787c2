"""Tasks: what is measured at a point, given a batch and the model's output.

A task returns per-batch sums of each of its metrics (float64 on the device) and the count
they are averaged by (examples, or predicted tokens); the evaluator adds both over the batches
of a split and takes `means`. Losses live here, not in the evaluator; the Hessian takes `loss`
(summed, differentiable) and `count`.

`Classification` (`--task classification`, the reference tool's): per-example loss, accuracy
  in percent. crossentropy: −log softmax(z)_y;  mse: mean over classes of (softmax(z) −
  onehot(y))² (the reference implementation's MSE on softmax outputs);  `package.module:fn(logits,
  labels) -> summed loss`: the user's own.
`Regression` (`--task regression`): per-example mean over outputs of (f(x) − y)², or the
  user's own loss; no accuracy.
`CausalLM` (`--task causal_lm`): next-token cross-entropy of token ids, summed over the predicted
  tokens and averaged by their count; accuracy of the next token.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import torch
import torch.nn.functional as F

from ..errors import UserError
from ..options import LOSS_NAMES
from .importpath import is_import_path, resolve


def logits_of(output):
    """The logits in a model's output: a tensor, the first element of a tuple/list, or the
    `logits` entry of a dict / Hugging Face ModelOutput."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    logits = output.get("logits") if isinstance(output, Mapping) else getattr(output, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    raise UserError(f"the model returned a {type(output).__name__}: return a tensor of logits, a tuple/list whose "
                    "first element is the logits, or a dict / ModelOutput with 'logits'")


class Task(Protocol):
    """The contract every task meets; the surface evaluator and the Hessian use only this."""

    metrics: tuple[str, ...]  # dataset names of the metrics within a split, 'loss' first

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The loss summed over the batch, differentiable (Hessian-vector products use it)."""

    def sums(self, outputs: torch.Tensor, targets: torch.Tensor, stacked: bool = False) -> torch.Tensor:
        """float64 sums of each metric over the batch: (m,) for one point, (k, m) for k stacked points."""

    def count(self, targets: torch.Tensor) -> int:
        """What the batch's sums are averaged by: its examples (or predicted tokens)."""

    def means(self, totals: torch.Tensor, count) -> torch.Tensor:
        """The metrics of a split from its sums and its total count."""


class Classification:
    """loss (summed per-example loss) and acc (100 · correct) of logits (batch, classes)."""

    metrics = ("loss", "acc")

    def __init__(self, loss_name: str = "crossentropy"):
        if loss_name not in LOSS_NAMES and not is_import_path(loss_name):
            raise UserError(f"unknown loss {loss_name!r}: choose one of {', '.join(LOSS_NAMES)}")
        self.loss_name = loss_name

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Sum over the batch of the per-example loss (differentiable)."""
        if self.loss_name == "crossentropy":
            return F.cross_entropy(logits, labels, reduction="sum")
        if self.loss_name == "mse":
            onehot = F.one_hot(labels, logits.shape[1]).to(logits.dtype)
            return (logits.softmax(1) - onehot).pow(2).mean(1).sum()
        return resolve(self.loss_name, "--loss_name")(logits, labels)

    def stacked_losses(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(k,) sums for k stacked points' logits (k, batch, classes): one kernel sequence for all
        k with the built-in losses (a loop over the points for the user's own)."""
        if self.loss_name == "crossentropy":
            return -logits.log_softmax(-1).gather(-1, labels.expand(len(logits), -1).unsqueeze(-1)).sum((1, 2))
        if self.loss_name == "mse":
            onehot = F.one_hot(labels, logits.shape[-1]).to(logits.dtype)
            return (logits.softmax(-1) - onehot).pow(2).mean(-1).sum(-1)
        return torch.stack([self.loss(z, labels) for z in logits])

    def sums(self, logits: torch.Tensor, labels: torch.Tensor, stacked: bool = False) -> torch.Tensor:
        """float64 [loss sum, correct count] of one point's logits (batch, classes), shape (2,);
        of k stacked points' logits (k, batch, classes), shape (k, 2). Accuracy is NaN for targets
        that are not class indices (the user's own loss on float targets or other outputs)."""
        loss = self.stacked_losses(logits, labels) if stacked else self.loss(logits, labels)
        if labels.is_floating_point() or logits.dim() != labels.dim() + 1 + stacked:
            correct = torch.full_like(loss, float("nan"), dtype=torch.float64)
        else:
            correct = (logits.argmax(-1) == labels).sum(-1).double()
        return torch.stack([loss.double(), correct], dim=-1)

    @staticmethod
    def count(labels: torch.Tensor) -> int:
        return len(labels)

    @staticmethod
    def means(totals: torch.Tensor, n) -> torch.Tensor:
        """[mean loss, accuracy in percent] from the sums over a split of n examples."""
        return torch.stack([totals[..., 0] / n, totals[..., 1] * (100.0 / n)], dim=-1)


class Regression:
    """loss: the per-example mean over outputs of (f(x) − y)² (or the user's own summed loss)."""

    metrics = ("loss",)

    def __init__(self, loss_name: str = "mse"):
        if loss_name not in ("mse", "crossentropy") and not is_import_path(loss_name):
            raise UserError(f"--task regression takes --loss_name mse or your own package.module:function, not {loss_name!r}")
        self.loss_name = "mse" if loss_name == "crossentropy" else loss_name  # crossentropy: the option's default

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.loss_name != "mse":
            return resolve(self.loss_name, "--loss_name")(outputs, targets)
        return self.stacked_losses(outputs.unsqueeze(0), targets)[0]

    def stacked_losses(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """(k,) sums for k stacked points' outputs (k, batch, ...)."""
        if self.loss_name != "mse":
            return torch.stack([self.loss(z, targets) for z in outputs])
        err = (outputs - targets.reshape(outputs.shape[1:]).to(outputs.dtype)).pow(2)
        return err.reshape(len(outputs), outputs.shape[1], -1).mean(-1).sum(-1)

    def sums(self, outputs: torch.Tensor, targets: torch.Tensor, stacked: bool = False) -> torch.Tensor:
        loss = self.stacked_losses(outputs, targets) if stacked else self.loss(outputs, targets)
        return loss.double().unsqueeze(-1)

    @staticmethod
    def count(targets: torch.Tensor) -> int:
        return len(targets)

    @staticmethod
    def means(totals: torch.Tensor, n) -> torch.Tensor:
        return totals / n


IGNORE_INDEX = -100  # a label that is not predicted (Hugging Face's convention)


class CausalLM:
    """Next-token prediction. Inputs: token ids (batch, T) int64; labels: the same ids, or −100
    where a token is not predicted; logits z (batch, T, vocab) ((k, batch, T, vocab) stacked).
    Position t predicts token t+1: P = {(b, t) : t < T−1, y[b, t+1] ≠ −100},
      loss = Σ_{(b,t)∈P} −log softmax(z[b, t])_{y[b, t+1]},   count = |P|,
      acc  = 100 · #{(b,t)∈P : argmax z[b, t] = y[b, t+1]} / |P|,
    so the split's loss is the mean per predicted token (Hugging Face's `labels=` loss over the split)."""

    metrics = ("loss", "acc")

    def __init__(self, loss_name: str = "crossentropy"):
        if loss_name != "crossentropy":
            raise UserError(f"--task causal_lm takes only --loss_name crossentropy (next-token), not {loss_name!r}")
        self.loss_name = loss_name

    @staticmethod
    def stacked_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(k,) summed next-token losses of k stacked points' logits (k, batch, T, vocab)."""
        z, y = logits[..., :-1, :], labels[:, 1:].expand(len(logits), -1, -1)
        ce = F.cross_entropy(z.flatten(0, -2), y.flatten(), ignore_index=IGNORE_INDEX, reduction="none")
        return ce.view(len(logits), -1).sum(1)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The next-token loss summed over the predicted tokens (differentiable)."""
        return self.stacked_losses(logits.unsqueeze(0), labels)[0]

    def sums(self, logits: torch.Tensor, labels: torch.Tensor, stacked: bool = False) -> torch.Tensor:
        """float64 [loss sum, correct next tokens]: (2,) for one point, (k, 2) for k stacked points."""
        z = logits if stacked else logits.unsqueeze(0)
        y = labels[:, 1:]
        correct = ((z[..., :-1, :].argmax(-1) == y) & (y != IGNORE_INDEX)).sum((-2, -1)).double()
        out = torch.stack([self.stacked_losses(z, labels).double(), correct], dim=-1)
        return out if stacked else out[0]

    @staticmethod
    def count(labels: torch.Tensor) -> int:
        """The predicted tokens: labels y[:, 1:] that are not −100."""
        return int((labels[:, 1:] != IGNORE_INDEX).sum())

    means = staticmethod(Classification.means)


TASKS = {"classification": Classification, "regression": Regression, "causal_lm": CausalLM}


def make_task(task: str = "classification", loss_name: str = "crossentropy") -> Task:
    """The task named by --task, with its loss."""
    if task not in TASKS:
        raise UserError(f"unknown task {task!r}: choose one of {', '.join(TASKS)}")
    return TASKS[task](loss_name)


def summed_loss(name: str, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Classification(name).loss(logits, labels): the loss summed over the batch."""
    return Classification(name).loss(logits, labels)
