"""Train a demo model and save a checkpoint per epoch (epoch_000.pt is the initialization).

Plain SGD with momentum on the train split; the checkpoints are later the θ* of a
surface job and the trajectory of a PCA plot."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
import torch.nn.functional as F

from ..options import TrainJob
from .data import load_dataset
from .models import build_model


def accuracy(model, split) -> float:
    with torch.no_grad():
        return 100.0 * (model(split.inputs).argmax(1) == split.labels).double().mean().item()


def train(opts: TrainJob | None = None, *, report=None, **changes) -> Path:
    """Train as `opts` (options.TrainJob, with `changes` applied) says; returns the path of the last
    checkpoint. Deterministic for a given seed on the CPU. report(line) gets a line per epoch."""
    o = dataclasses.replace(opts or TrainJob(), **changes)
    model, dataset, out_dir, epochs, seed, lr, batch_size = (o.model, o.dataset, o.out_dir, o.epochs, o.seed, o.lr,
                                                              o.batch_size)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    net = build_model(model, seed=seed)
    splits = load_dataset(dataset)
    train_split, test_split = splits["train"], splits["test"]
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
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
