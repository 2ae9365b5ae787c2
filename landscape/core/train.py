"""Train a demo model and save a checkpoint per epoch (epoch_000 is the initialization).

Classifiers: plain SGD with momentum on the train split, checkpoints epoch_NNN.pt.
Causal LMs (`task="causal_lm"`, token blocks of `tokens:` data): AdamW on the next-token loss of
landscape.core.tasks.CausalLM (the loss the surface measures), checkpoints written by
`save_pretrained` (folders epoch_NNN/, for `--model hf:FOLDER`), train and test loss per epoch in
history.json. The checkpoints are later the θ* of a surface job and the trajectory of a PCA plot."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import UserError
from ..options import TrainJob
from .data import check_tokens, load_dataset
from .models import build_model, vocab_and_context
from .tasks import CausalLM, logits_of


def accuracy(model, split) -> float:
    with torch.no_grad():
        return 100.0 * (model(split.inputs).argmax(1) == split.labels).double().mean().item()


def optimizer(net, o: TrainJob) -> torch.optim.Optimizer:
    """SGD (momentum 0.9, weight decay 5e-4, lr 0.05) or AdamW (β = (0.9, 0.95), weight decay 0.1 on
    tensors of dim ≥ 2 only, lr 0.003), as `o.optimizer` says (`auto`: AdamW for causal_lm)."""
    kind = o.optimizer if o.optimizer != "auto" else ("adamw" if o.task == "causal_lm" else "sgd")
    if kind == "sgd":
        return torch.optim.SGD(net.parameters(), lr=o.lr or 0.05, momentum=0.9, weight_decay=5e-4)
    params = list(dict.fromkeys(net.parameters()))  # tied tensors once
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=o.lr or 3e-3, betas=(0.9, 0.95))


def train(opts: TrainJob | None = None, *, report=None, **changes) -> Path:
    """Train as `opts` (options.TrainJob, with `changes` applied) says; returns the path of the last
    checkpoint. Deterministic for a given seed on the CPU. report(line) gets a line per epoch."""
    o = dataclasses.replace(opts or TrainJob(), **changes)
    if o.task == "causal_lm":
        return train_lm(o, report)
    if o.dataset.startswith(("tokens:", "text:", "hfdata:")):
        raise UserError(f"--dataset {o.dataset} holds token blocks: train a language model on it with "
                        "--task causal_lm (e.g. --model lm_tiny --seq_len 128)")
    model, dataset, out_dir, epochs, seed, batch_size = o.model, o.dataset, o.out_dir, o.epochs, o.seed, o.batch_size
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    net = build_model(model, seed=seed)
    splits = load_dataset(dataset)
    train_split, test_split = splits["train"], splits["test"]
    opt = optimizer(net, o)
    gen = torch.Generator().manual_seed(seed)

    def save(epoch: int) -> Path:
        net.eval()
        path = out / f"epoch_{epoch:03d}.pt"
        torch.save({"state_dict": net.state_dict(), "model": model, "epoch": epoch,
                    "test_acc": accuracy(net, test_split)}, path)
        return path

    path = save(0)
    for epoch in range(1, epochs + 1):
        net.train()
        order = torch.randperm(len(train_split), generator=gen)
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            loss = F.cross_entropy(net(train_split.inputs[idx]), train_split.labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        path = save(epoch)
        if report:
            report(f"[train] epoch {epoch}/{epochs}: train acc {accuracy(net.eval(), train_split):.1f}%, "
                   f"test acc {accuracy(net, test_split):.1f}% -> {path}")
    return path


def lm_loss(net, split, batch_size: int) -> tuple[float, float]:
    """(mean next-token loss, next-token accuracy %) of `net` over a split of token blocks."""
    task, total = CausalLM(), torch.zeros(2, dtype=torch.float64)
    with torch.no_grad():
        for xb, yb in split.batches(batch_size):
            total += task.sums(logits_of(net(xb)), yb)
    n = task.count(split.labels)
    return total[0].item() / n, 100.0 * total[1].item() / n


def train_lm(o: TrainJob, report=None) -> Path:
    """Train a causal LM on `o.dataset`'s train blocks (see the module docstring); returns the last
    checkpoint folder. Each epoch is `o.steps` AdamW steps (0: one pass) on random batches of blocks,
    drawn from permutations of the train split (a new one when it is used up)."""
    out = Path(o.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    net = build_model(o.model, seed=o.seed, task="causal_lm")
    if hasattr(net, "save_pretrained"):
        import transformers

        transformers.utils.logging.disable_progress_bar()  # no "Writing model shards" bar per checkpoint
    splits = load_dataset(o.dataset, seq_len=o.seq_len)
    vocab, context = vocab_and_context(net, splits["train"].inputs[:1], o.model)
    for name, split in splits.items():
        check_tokens(split, vocab, context, name)
    train_split, test_split = splits["train"], splits["test"]
    task, opt = CausalLM(), optimizer(net, o)
    gen = torch.Generator().manual_seed(o.seed)
    steps = o.steps or -(-len(train_split) // o.batch_size)
    order, pos, history = torch.randperm(len(train_split), generator=gen), 0, []

    def save(epoch: int, train_loss: float | None) -> Path:
        net.eval()
        path = out / f"epoch_{epoch:03d}"
        if hasattr(net, "save_pretrained"):
            net.save_pretrained(path)
        else:
            path = path.with_suffix(".pt")
            torch.save({"state_dict": net.state_dict(), "model": o.model, "epoch": epoch}, path)
        test_loss, test_acc = lm_loss(net, test_split, o.batch_size)
        history.append({"epoch": epoch, "step": epoch * steps, "train_loss": train_loss, "test_loss": test_loss,
                        "test_acc": test_acc, "checkpoint": str(path)})
        (out / "history.json").write_text(json.dumps(history, indent=1) + "\n")
        return path

    path = save(0, None)
    if report:
        report(f"[train] {sum(p.numel() for p in dict.fromkeys(net.parameters())):,} parameters, "
               f"{len(train_split)} train / {len(test_split)} test blocks of {train_split.inputs.shape[1]} tokens; "
               f"initial test loss {history[0]['test_loss']:.3f}")
    for epoch in range(1, o.epochs + 1):
        net.train()
        total = 0.0
        for _ in range(steps):
            if pos + o.batch_size > len(order):
                order, pos = torch.randperm(len(train_split), generator=gen), 0
            idx = order[pos : pos + o.batch_size]
            pos += len(idx)
            xb, yb = train_split.inputs[idx], train_split.labels[idx]
            loss = task.loss(logits_of(net(xb)), yb) / task.count(yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item()
        path = save(epoch, total / steps)
        if report:
            h = history[-1]
            report(f"[train] epoch {epoch}/{o.epochs} ({steps} steps): train loss {h['train_loss']:.3f} "
                   f"(mean over the epoch's steps), test loss {h['test_loss']:.3f}, test acc {h['test_acc']:.1f}% "
                   f"-> {path}")
    return path
