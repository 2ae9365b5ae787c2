"""Fast by default: the evaluation configuration a surface job runs with, measured at start-up.

Left automatic (`--channels_last` / `--compile` not given, `--points_per_pass 0`, `--batch_size 0`),
the batch size, the memory format, the points per pass K and torch.compile are chosen from timings
of a few batches at θ*:

- a configuration's time per point t is that of the first BATCHES batches of each split at
  θ* + tiny steps (best of REPEATS, after one warm-up call), scaled to the whole splits;
- a candidate is measured only when the run can repay it: the measurements may cost at most
  SHARE of the run's estimated time with the given configuration, (points left / groups) · t;
- the run starts from channels-last for a conv net on a CPU, else contiguous (`default_layout`),
  which is what it keeps when nothing else can be measured;
- the batch size first (`search_batch_size`), from `starting_batch` (512, options.DEFAULT_BATCH,
  halved until its activations fit HEADROOM of the memory left: an upper bound per example,
  core.memory.example_bytes; set even for a run too short to measure): doubled while each step
  is STEP times faster, else halved likewise, among sizes that fit (times K); never where it
  changes values (BN with batch statistics or re-estimated at every point: 512) or where the data
  are streamed (a loader per size);
- then, at that batch size: contiguous or channels-last (only for 4-D floating-point inputs into
  2-D convolutions) × K ∈ {1, 4, 16} (K = 1 when BN statistics are re-estimated at every point;
  only K that fit); a flag fixes its choice;
- compile is tried on the fastest candidate only when the estimated run takes more than
  COMPILE_WORTH seconds (compiling a ResNet on a CPU takes 20-60 s), and kept when faster;
- every rank measures at once (as loaded as it is in the run); a candidate that fails on any
  rank (vmap cannot run the model, out of memory, compile errors) is dropped; rank 0's times
  decide (another configuration than the given one only when MARGIN times faster) and its choice
  is every rank's. The choice never changes values beyond float rounding
  (tests/integration/test_tuning.py); it is a run option, recorded in the file's `run_options`,
  and a resumed file keeps the configuration its first run chose, so its values stay consistent.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from ..engine.mpi import on_all
from ..options import DEFAULT_BATCH
from .stream import StreamedSplit

BATCHES, REPEATS = 2, 2
MARGIN = 1.1  # another configuration is taken only when this many times faster than the given one
SHARE = 0.05  # the measurements may cost at most this share of the run's estimated time
COMPILE_WORTH = 600.0  # seconds of estimated run time before compiling is tried
STEP = 1.03  # a batch size twice (half) as large is taken when this many times faster
MIN_BATCH = 32
HEADROOM = 0.5  # the activations of a batch may take at most this share of the room left on the device


@dataclass(frozen=True)
class Choice:
    """The configuration chosen, and how."""

    channels_last: bool
    compile: bool
    points_per_pass: int
    batch_size: int
    note: str

    def record(self) -> dict:
        return {"channels_last": self.channels_last, "compile": self.compile, "points_per_pass": self.points_per_pass,
                "batch_size": self.batch_size}


def seconds_per_point(evaluator, batches: int = BATCHES, repeats: int = REPEATS) -> tuple[float, float]:
    """(estimated seconds per point of `evaluator` as configured, seconds the measurement took):
    the first `batches` batches of each split, best of `repeats` after a warm-up, this rank alone."""
    k = evaluator.points_per_call
    coords = np.linspace(0.0, 1e-3, 2 * k).reshape(k, 2)[:, : len(evaluator.theta.directions)]
    lengths = [len(s) for s in evaluator.splits.values()]  # scaled by examples: a short last batch costs less
    scale = sum(lengths) / sum(min(batches * evaluator.batch_size, n) for n in lengths)
    group, evaluator.group, evaluator.batch_limit = evaluator.group, None, batches
    start = time.perf_counter()
    try:
        evaluator(coords)  # warm-up (and compilation)
        best = math.inf
        for _ in range(repeats):
            t0 = time.perf_counter()
            evaluator(coords)
            best = min(best, time.perf_counter() - t0)
    finally:
        evaluator.group, evaluator.batch_limit = group, None
        evaluator.theta.restore()
        if evaluator.bn is not None:  # the statistics re-estimated at the timed points: θ*'s back
            evaluator.bn.restore()
    return best / k * scale, time.perf_counter() - start


def measured(evaluator, comm) -> tuple[float, float] | None:
    """Rank 0's (seconds per point, seconds measuring) for `evaluator` as configured, measured on
    every rank at once; None when it failed on some rank (out of memory, vmap cannot run the model)."""
    try:
        timing = seconds_per_point(evaluator)
    except Exception:
        timing = None
    ok = all(comm.allgather(timing is not None))
    return comm.bcast(timing, root=0) if ok else None


def convolves(model, splits) -> bool:
    """4-D floating-point inputs into a model with 2-D convolutions: what channels-last can speed up."""
    firsts = [s.head(1).inputs for s in splits.values()]  # one example (a streamed split has no .inputs)
    return (any(x.dim() == 4 and x.is_floating_point() for x in firsts)
            and any(isinstance(m, torch.nn.Conv2d) for m in model.modules()))


def default_layout(model, splits, device) -> bool:
    """The layout a run starts from when `--channels_last` is left automatic: channels-last for a conv
    net on a CPU (faster on every conv net of bench/: 0.58-0.89x the time), else contiguous; another
    one is taken only when measured MARGIN times faster (see `tune`)."""
    return torch.device(device).type == "cpu" and convolves(model, splits)


def search_batch_size(evaluator, t_given: float, unit: float, budget: float, fits, comm):
    """(batch size, its seconds per point, {size: seconds per point} of those measured, seconds
    spent measuring): from the evaluator's batch size B, doubling while each step is STEP times
    faster, else halving likewise (not below MIN_BATCH, not past one batch holding the largest
    split, only sizes that `fits`), while the measurements, each estimated from `unit` (one at B)
    by its examples, stay within `budget`; B again unless the size found is MARGIN times faster."""
    given = best = evaluator.batch_size
    t_best, spent, tried = t_given, 0.0, {given: t_given}
    lengths = [len(s) for s in evaluator.splits.values()]
    largest = max(lengths)
    for step in (2.0, 0.5):
        size = best
        while True:
            size = int(size * step)
            if size < MIN_BATCH or (step > 1 and size // 2 >= largest) or not fits(size, evaluator.points_per_call):
                break
            if all(min(size, n) == min(best, n) for n in lengths):  # the same batches (splits shorter than both)
                continue
            if spent + unit * min(size, largest) / min(given, largest) > budget:
                break
            evaluator.batch_size = size
            timing = measured(evaluator, comm)
            if timing is None:
                break
            spent += timing[1]
            tried[size] = timing[0]
            if timing[0] * STEP >= t_best:
                break
            best, t_best = size, timing[0]
        if best != given:  # larger batches helped: smaller ones are not tried
            break
    if best != given:  # confirmed against B measured again (the first measurements of a process run cold)
        confirmed = True
        for size in (given, best):
            evaluator.batch_size = size
            timing = measured(evaluator, comm) if spent + 2 * unit <= budget else None
            if timing is None:
                confirmed = False
                break
            spent += timing[1]
            tried[size] = min(tried[size], timing[0])
        t_given, t_best = tried[given], tried[best] if confirmed else math.inf
    if t_best * MARGIN > t_given:
        best, t_best = given, t_given
    evaluator.batch_size = best
    return best, t_best, tried, spent


def starting_batch(per_example: int, room: float) -> int:
    """The batch size an automatic one starts from: options.DEFAULT_BATCH, halved until the
    activations of a batch (`per_example` bytes each, core.memory.example_bytes) fit HEADROOM of
    `room`, the bytes this rank may still allocate on its device."""
    size = DEFAULT_BATCH
    while size > 1 and size * per_example > room * HEADROOM:
        size //= 2
    return size


def tune(evaluation, evaluator, build, *, channels_last: bool | None, compile: bool | None, points_per_pass: int,
         batch_size: bool, room: float, per_example: int, points_left: int, groups: int, comm):
    """(evaluation, evaluator, Choice): the fastest configuration among those the flags leave
    open (None / 0: automatic; `batch_size`: whether the batch size is; see the module docstring).
    `evaluator` is built with the given configuration (automatic ones off, K = 1, the starting batch
    size); `build(evaluation, k)` builds another one. `room`: the bytes this rank may still allocate
    on its device, `per_example`: the activation bytes of an example (see `starting_batch`).
    Collective over `comm`: every rank calls it with the same arguments."""
    fixed = Choice(laid_out(evaluator), bool(compile), max(points_per_pass, 1), evaluator.batch_size, "")
    # unit: one measurement at K = 1; a failure on one rank (the model raises) is every rank's, none waits
    t_given, unit = comm.bcast(on_all(comm, lambda: seconds_per_point(evaluator)), root=0)
    run = points_left / max(groups, 1) * t_given
    budget = run * SHARE  # what the measurements may cost

    def fits(size: int, k: int) -> bool:  # the activations of k points of `size` examples within the room
        return size * k * per_example <= room * HEADROOM

    t_start, searched = t_given, ""
    if batch_size and evaluator.bn is None and not any(isinstance(s, StreamedSplit) for s in evaluator.splits.values()):
        size, t_start, tried, spent = search_batch_size(evaluator, t_given, unit, budget, fits, comm)
        budget, t_given = budget - spent, tried[fixed.batch_size]  # the given one's best measurement
        if len(tried) > 1:
            searched = ", ".join(f"batch {b} {t * 1e3:.3g} ms" for b, t in tried.items())
        if size != fixed.batch_size:
            evaluation = dataclasses.replace(evaluation, batch_size=size)
            largest = max(len(s) for s in evaluator.splits.values())
            unit *= min(size, largest) / min(fixed.batch_size, largest)
    start = dataclasses.replace(fixed, batch_size=evaluator.batch_size)
    layouts = [fixed.channels_last]
    if channels_last is None and convolves(evaluator.model, evaluator.splits) and 2 * unit <= budget:
        layouts = [fixed.channels_last, not fixed.channels_last]
    ks = [fixed.points_per_pass]
    if points_per_pass == 0 and evaluator.bn is None:
        ks += [k for k in (4, 16) if unit * len(layouts) * (1 + 4 + k) <= budget and fits(start.batch_size, k)]
    candidates = [(cl, k) for cl in layouts for k in ks]
    if len(candidates) == 1 and not searched and not (compile is None and run > COMPILE_WORTH):
        return evaluation, evaluator, dataclasses.replace(start, note=(
            f"configuration as given ({describe(start)}): the run, about {run:.3g} s per rank, is too short to repay "
            "measuring others" + ("; BN statistics are re-estimated at every point: 1 point per pass"
                                  if evaluator.bn is not None and points_per_pass == 0 else "")))
    times, failed, current = {}, {}, evaluator
    for cl in layouts:
        if cl != laid_out(current):
            current = swap(current, build, dataclasses.replace(evaluation, channels_last=cl), 1)
        for k in ks:
            try:
                current.set_points_per_pass(k)
                times[cl, k] = t_start if (cl, k) == (fixed.channels_last, fixed.points_per_pass) \
                    else seconds_per_point(current)[0]
            except Exception as exc:  # vmap cannot run the model, out of memory: no larger K either
                why = f"{type(exc).__name__}: {str(exc).splitlines()[0][:100] if str(exc) else ''}"
                failed.update({(cl, j): why for j in ks if j >= k})
                current.stack = None
                break
    failed = {c: why for found in comm.allgather(failed) for c, why in found.items()}
    times = comm.bcast(times, root=0)
    given = (fixed.channels_last, fixed.points_per_pass)
    cl, k = min((c for c in times if c not in failed), key=times.get, default=given)
    if times.get((cl, k), t_start) * MARGIN > t_start:  # not clearly faster: keep the given configuration
        cl, k = given
    best = times.get((cl, k), t_start)
    use_compile, compile_note = fixed.compile, ""
    if compile is None and points_left / max(groups, 1) * best > COMPILE_WORTH:
        current = swap(current, build, dataclasses.replace(evaluation, channels_last=cl, compile=True), k)
        timing = measured(current, comm)
        use_compile = timing is not None and timing[0] < best
        compile_note = "; compile failed on some rank" if timing is None else f"; compiled: {timing[0] * 1e3:.3g} ms"
        best = best if timing is None else min(best, timing[0])
    chosen = Choice(cl, use_compile, k, start.batch_size, "")
    final = dataclasses.replace(evaluation, channels_last=cl, compile=use_compile)
    if (laid_out(current), current.compile) != (cl, use_compile):
        current = swap(current, build, final, k)
    current.set_points_per_pass(k)
    tried = ", ".join(f"{describe(Choice(c, fixed.compile, j, start.batch_size, ''), batch=False)} {t * 1e3:.3g} ms"
                      for (c, j), t in times.items() if (c, j) not in failed)
    fails = "".join(f"; {j} points per pass failed ({why})" for (c, j), why in failed.items() if c == cl)
    return final, current, dataclasses.replace(chosen, note=(
        f"configuration measured: {describe(chosen)}, {best * 1e3:.3g} ms per point against {t_given * 1e3:.3g} ms as "
        f"given (tried: {'; '.join([searched] * bool(searched) + [tried])}{compile_note}{fails})"))


def laid_out(evaluator) -> bool:
    """Whether the evaluator runs channels-last."""
    return evaluator.memory_format == torch.channels_last


def swap(evaluator, build, evaluation, k: int):
    """A new evaluator for `evaluation` and K = k, the old one put back first (the model as it was)."""
    evaluator.restore()
    return build(evaluation, k)


def describe(c: Choice, batch: bool = True) -> str:
    return (f"{'channels-last' if c.channels_last else 'contiguous'}, {c.points_per_pass} point(s) per pass"
            + (f", batch {c.batch_size}" if batch else "") + (", compiled" if c.compile else ""))
