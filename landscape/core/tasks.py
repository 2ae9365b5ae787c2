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
`UserMetrics` (`--task package.module:fn`): the user's own fn(outputs, batch) -> {name: (sum,
  count)}; each metric of a split is Σ sum / Σ count over its batches.

Every task takes the model's raw output through `output` (the built-in ones: `logits_of`, float32)
and may look at the batch's inputs (`inputs=`; only the user's function does).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import torch
import torch.nn.functional as F
import torch.utils._pytree as pytree

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


def output_vector(output) -> torch.Tensor:
    """Every floating-point tensor of an output (a tensor or a tuple/dict of them), flattened into one float32 vector."""
    leaves = [t.float().flatten() for t in pytree.tree_leaves(output) if isinstance(t, torch.Tensor) and t.is_floating_point()]
    return torch.cat(leaves) if leaves else torch.zeros(0)


def float_logits(output) -> torch.Tensor:
    """The built-in tasks' view of a model's output: its logits (`logits_of`) in float32."""
    return logits_of(output).float()


class Task(Protocol):
    """The contract every task meets; the surface evaluator and the Hessian use only this."""

    metrics: tuple[str, ...]  # dataset names of the metrics within a split, 'loss' first

    def output(self, raw):
        """What the task measures of the model's raw output (its logits for the built-in tasks)."""

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor, inputs=None) -> torch.Tensor:
        """The loss summed over the batch, differentiable (Hessian-vector products use it)."""

    def sums(self, outputs: torch.Tensor, targets: torch.Tensor, stacked: bool = False, inputs=None) -> torch.Tensor:
        """float64 sums of each metric over the batch: (m,) for one point, (k, m) for k stacked points
        (the user's task: (2m,) / (k, 2m), the sums then the counts)."""

    def count(self, targets: torch.Tensor) -> int:
        """What the batch's sums are averaged by: its examples (or predicted tokens)."""

    def means(self, totals: torch.Tensor, count) -> torch.Tensor:
        """The metrics of a split from its sums and its total count."""


class Classification:
    """loss (summed per-example loss) and acc (100 · correct) of logits (batch, classes)."""

    metrics = ("loss", "acc")
    output = staticmethod(float_logits)

    def __init__(self, loss_name: str = "crossentropy"):
        if loss_name not in LOSS_NAMES and not is_import_path(loss_name):
            raise UserError(f"unknown loss {loss_name!r}: choose one of {', '.join(LOSS_NAMES)}")
        self.loss_name = loss_name

    def loss(self, logits: torch.Tensor, labels: torch.Tensor, inputs=None) -> torch.Tensor:
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

    def sums(self, logits: torch.Tensor, labels: torch.Tensor, stacked: bool = False, inputs=None) -> torch.Tensor:
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
    output = staticmethod(float_logits)

    def __init__(self, loss_name: str = "mse"):
        if loss_name not in ("mse", "crossentropy") and not is_import_path(loss_name):
            raise UserError(f"--task regression takes --loss_name mse or your own package.module:function, not {loss_name!r}")
        self.loss_name = "mse" if loss_name == "crossentropy" else loss_name  # crossentropy: the option's default

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor, inputs=None) -> torch.Tensor:
        if self.loss_name != "mse":
            return resolve(self.loss_name, "--loss_name")(outputs, targets)
        return self.stacked_losses(outputs.unsqueeze(0), targets)[0]

    def stacked_losses(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """(k,) sums for k stacked points' outputs (k, batch, ...)."""
        if self.loss_name != "mse":
            return torch.stack([self.loss(z, targets) for z in outputs])
        err = (outputs - targets.reshape(outputs.shape[1:]).to(outputs.dtype)).pow(2)
        return err.reshape(len(outputs), outputs.shape[1], -1).mean(-1).sum(-1)

    def sums(self, outputs: torch.Tensor, targets: torch.Tensor, stacked: bool = False, inputs=None) -> torch.Tensor:
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
    output = staticmethod(float_logits)

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

    def loss(self, logits: torch.Tensor, labels: torch.Tensor, inputs=None) -> torch.Tensor:
        """The next-token loss summed over the predicted tokens (differentiable)."""
        return self.stacked_losses(logits.unsqueeze(0), labels)[0]

    def sums(self, logits: torch.Tensor, labels: torch.Tensor, stacked: bool = False, inputs=None) -> torch.Tensor:
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


def _describe(v, depth: int = 0) -> str:
    """A short text of what a function returned: types and tensor shapes, not values."""
    if isinstance(v, torch.Tensor):
        shape = f"{tuple(v.shape)}" if v.dim() else ""
        return f"tensor{shape}" + ("" if v.is_floating_point() else f" {str(v.dtype).replace('torch.', '')}")
    if depth > 2:
        return "..."
    if isinstance(v, Mapping):
        return "{" + ", ".join(f"{k!r}: {_describe(x, depth + 1)}" for k, x in list(v.items())[:4]) + \
            (", ..." if len(v) > 4 else "") + "}"
    if isinstance(v, (tuple, list)):
        inner = ", ".join(_describe(x, depth + 1) for x in v[:3]) + (", ..." if len(v) > 3 else "")
        return f"({inner})" if isinstance(v, tuple) else f"[{inner}]"
    return type(v).__name__ if not isinstance(v, (int, float)) else repr(v)


def _scalar(v) -> bool:
    """A number or a one-element tensor (not a bool)."""
    if isinstance(v, torch.Tensor):
        return v.numel() == 1 and v.dtype != torch.bool
    return isinstance(v, (int, float)) and not isinstance(v, bool)


RESERVED = ("x", "y", "mask")  # names a split's group of the surface file holds already (its coordinates)


class UserMetrics:
    """`--task package.module:fn`: the user's own metrics (segmentation, detection losses, returns...).

    fn(outputs, batch) -> {name: (sum, count)}, called once per batch:
      outputs: the model's raw output for the batch (whatever forward returns: a tensor, tuple,
               dict, ModelOutput), its floating-point tensors in float32;
      batch:   (inputs, targets) on the device;
      sum:     a tensor (one element) or a float; count: an int (or a one-element tensor).
    Metric m of a split = Σ_batches sum_m / Σ_batches count_m (float64), the dataset <split>/m.
    The names are found by `discover` (a first call at start-up); `loss`, when present, is the one
    the Hessian uses: its sum must then be differentiable. k stacked points: fn on each point."""

    def __init__(self, path: str, loss_name: str = "crossentropy"):
        if loss_name != "crossentropy":  # crossentropy: the option's default
            raise UserError(f"--task {path} computes its own metrics: leave out --loss_name {loss_name}")
        self.path = path
        self.fn = resolve(path, "--task")
        self.metrics: tuple[str, ...] = ()  # set by discover

    def expected(self) -> str:
        return ("return a dict {name: (sum, count)}, e.g. {'loss': (loss_sum, n), 'iou': (iou_sum, n)}, with names "
                f"identifiers (not {', '.join(RESERVED)}), sums tensors or floats and counts ints")

    @staticmethod
    def output(raw):
        """The raw output, floating-point tensors in float32 (autocast may give bf16/fp16)."""
        return pytree.tree_map(lambda t: t.float() if isinstance(t, torch.Tensor) and t.is_floating_point() else t, raw)

    def call(self, outputs, targets, inputs) -> dict:
        try:
            return self.fn(outputs, (inputs, targets))
        except (UserError, torch.OutOfMemoryError):  # out of memory: the caller decides (see core.tuning)
            raise
        except Exception as exc:
            raise UserError(f"--task {self.path} fails on outputs {_describe(outputs)} and targets {_describe(targets)} "
                            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None

    def discover(self, outputs, targets, inputs=None) -> tuple[str, ...]:
        """The metric names from one call (a UserError naming what came back when it is not
        {name: (sum, count)})."""
        out = self.call(outputs, targets, inputs)
        ok = isinstance(out, Mapping) and len(out) > 0 and all(
            isinstance(k, str) and k.isidentifier() and k not in RESERVED and isinstance(v, (tuple, list)) and len(v) == 2
            and _scalar(v[0]) and _scalar(v[1]) and not (isinstance(v[1], float)) for k, v in out.items())
        if not ok:
            raise UserError(f"--task {self.path} returned {_describe(out)}: {self.expected()}")
        self.metrics = tuple(out)
        return self.metrics

    def _row(self, out: dict, device) -> torch.Tensor:
        """float64 [sum_1..sum_m, count_1..count_m] of one call's result."""
        if tuple(out) != self.metrics:
            raise UserError(f"--task {self.path} returned the metrics {', '.join(map(str, out))} for a later batch, "
                            f"{', '.join(self.metrics)} for the first: return the same names for every batch")
        values = [out[m][0] for m in self.metrics] + [out[m][1] for m in self.metrics]
        return torch.stack([torch.as_tensor(v, device=device).detach().reshape(()).double() for v in values])

    def sums(self, outputs, targets, stacked: bool = False, inputs=None) -> torch.Tensor:
        """(2m,) sums and counts of one point; (k, 2m) for k stacked points (fn on each point's outputs)."""
        if not stacked:
            return self._row(self.call(outputs, targets, inputs), targets.device)
        k = len(pytree.tree_leaves(outputs)[0])
        return torch.stack([self._row(self.call(pytree.tree_map(lambda t, j=j: t[j], outputs), targets, inputs),
                                      targets.device) for j in range(k)])

    def means(self, totals: torch.Tensor, n=None) -> torch.Tensor:
        """Σ sums / Σ counts per metric (the task's own counts; n is not used)."""
        m = len(self.metrics)
        return totals[..., :m] / totals[..., m:]

    @staticmethod
    def count(targets) -> int:
        return len(targets)  # the evaluator's example count; the metrics are averaged by their own counts

    def loss(self, outputs, targets, inputs=None) -> torch.Tensor:
        """The `loss` sum of the batch (differentiable: the Hessian uses it)."""
        out = self.call(outputs, targets, inputs)
        if not isinstance(out, Mapping) or "loss" not in out:
            raise UserError(self.no_loss(out))
        total = out["loss"][0]
        if torch.is_grad_enabled() and not (isinstance(total, torch.Tensor) and total.requires_grad):
            what = "a tensor without gradient" if isinstance(total, torch.Tensor) else f"a {type(total).__name__}"
            raise UserError(f"--task {self.path}: the 'loss' sum is {what}, not differentiable: compute it "
                            "from the outputs with torch operations (no .item(), float() or torch.no_grad())")
        return total

    def no_loss(self, out) -> str:
        names = ", ".join(map(str, out)) if isinstance(out, Mapping) else _describe(out)
        return (f"--task {self.path} has no 'loss' metric (it returns {names}): a Hessian map needs one: add "
                "'loss': (a differentiable sum, count) to what it returns")

    def loss_count(self, forward, inputs, labels, batch_size: int) -> float:
        """Σ over the batches of the `loss` count at the model's current θ (what the Hessian's loss
        is averaged by; counts are taken not to depend on θ)."""
        n = 0.0
        with torch.no_grad():
            for lo in range(0, len(labels), batch_size):
                x, y = inputs[lo : lo + batch_size], labels[lo : lo + batch_size]
                out = self.call(self.output(forward(x)), y, x)
                if not isinstance(out, Mapping) or "loss" not in out:
                    raise UserError(self.no_loss(out))
                n += float(out["loss"][1])
        return n


TASKS = {"classification": Classification, "regression": Regression, "causal_lm": CausalLM}


def resolve_task(model, task: str) -> str:
    """`task`, or for `auto` the one the model is made for: `causal_lm` for a model whose class is
    a `...ForCausalLM` or `...LMHeadModel` (a transformers causal LM), `classification` for any other."""
    if task != "auto":
        return task
    name = type(model).__name__
    return "causal_lm" if "ForCausalLM" in name or "LMHeadModel" in name else "classification"


def make_task(task: str = "classification", loss_name: str = "crossentropy") -> Task:
    """The task named by --task, with its loss; `package.module:fn`: the user's own metrics."""
    if is_import_path(task):
        return UserMetrics(task, loss_name)
    if task not in TASKS:
        raise UserError(f"unknown task {task!r}: choose one of {', '.join(TASKS)}, or your own package.module:function")
    return TASKS[task](loss_name)


def task_code(task: str) -> str | None:
    """A short hash of the source of the user's metric function (None for a built-in task): a
    resume with other metric code is refused."""
    if not is_import_path(task):
        return None
    import hashlib
    import inspect

    try:
        text = inspect.getsource(resolve(task, "--task"))
    except (OSError, TypeError):  # defined where its source cannot be read: the name is all there is
        text = task
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def summed_loss(name: str, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Classification(name).loss(logits, labels): the loss summed over the batch."""
    return Classification(name).loss(logits, labels)
