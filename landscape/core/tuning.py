"""Fast by default: the evaluation configuration a surface job runs with, measured at start-up.

Left automatic (`--channels_last` / `--compile` not given, `--points_per_pass 0`), the memory
format, the points per pass K and torch.compile are chosen from timings of a few batches at θ*:

- a configuration's time per point t is that of the first BATCHES batches of each split at
  θ* + tiny steps (best of REPEATS, after one warm-up call), scaled to the whole splits;
- a candidate is measured only when the run can repay it: the measurements may cost at most
  SHARE of the run's estimated time with the given configuration, (points left / groups) · t;
- the run starts from channels-last for a conv net on a CPU, else contiguous (`default_layout`),
  which is what it keeps when nothing else can be measured;
- candidates: contiguous or channels-last (only for 4-D floating-point inputs into 2-D
  convolutions) × K ∈ {1, 4, 16} (K = 1 when BN statistics are re-estimated at every point); a
  flag fixes its choice;
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

BATCHES, REPEATS = 2, 2
MARGIN = 1.1  # another configuration is taken only when this many times faster than the given one
SHARE = 0.05  # the measurements may cost at most this share of the run's estimated time
COMPILE_WORTH = 600.0  # seconds of estimated run time before compiling is tried


@dataclass(frozen=True)
class Choice:
    """The configuration chosen, and how."""

    channels_last: bool
    compile: bool
    points_per_pass: int
    note: str

    def record(self) -> dict:
        return {"channels_last": self.channels_last, "compile": self.compile, "points_per_pass": self.points_per_pass}


def seconds_per_point(evaluator, batches: int = BATCHES, repeats: int = REPEATS) -> tuple[float, float]:
    """(estimated seconds per point of `evaluator` as configured, seconds the measurement took):
    the first `batches` batches of each split, best of `repeats` after a warm-up, this rank alone."""
    k = evaluator.points_per_call
    coords = np.linspace(0.0, 1e-3, 2 * k).reshape(k, 2)[:, : len(evaluator.theta.directions)]
    sizes = [math.ceil(len(s) / evaluator.batch_size) for s in evaluator.splits.values()]
    scale = sum(sizes) / sum(min(batches, n) for n in sizes)
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


def tune(evaluation, evaluator, build, *, channels_last: bool | None, compile: bool | None, points_per_pass: int,
         points_left: int, groups: int, comm):
    """(evaluation, evaluator, Choice): the fastest configuration among those the flags leave
    open (None / 0: automatic; see the module docstring). `evaluator` is built with the given
    configuration (automatic ones off, K = 1); `build(evaluation, k)` builds another one.
    Collective over `comm`: every rank calls it with the same arguments."""
    fixed = Choice(laid_out(evaluator), bool(compile), max(points_per_pass, 1), "")
    t_given, unit = comm.bcast(seconds_per_point(evaluator), root=0)  # unit: one measurement at K = 1
    run = points_left / max(groups, 1) * t_given
    budget = run * SHARE  # what the measurements may cost
    layouts = [fixed.channels_last]
    if channels_last is None and convolves(evaluator.model, evaluator.splits) and 2 * unit <= budget:
        layouts = [fixed.channels_last, not fixed.channels_last]
    ks = [fixed.points_per_pass]
    if points_per_pass == 0 and evaluator.bn is None:
        ks += [k for k in (4, 16) if unit * len(layouts) * (1 + 4 + k) <= budget]
    candidates = [(cl, k) for cl in layouts for k in ks]
    if len(candidates) == 1 and not (compile is None and run > COMPILE_WORTH):
        return evaluation, evaluator, dataclasses.replace(fixed, note=(
            f"configuration as given ({describe(fixed)}): the run, about {run:.3g} s per rank, is too short to repay "
            "measuring others" + ("; BN statistics are re-estimated at every point: 1 point per pass"
                                  if evaluator.bn is not None and points_per_pass == 0 else "")))
    times, failed, current = {}, {}, evaluator
    for cl in layouts:
        if cl != laid_out(current):
            current = swap(current, build, dataclasses.replace(evaluation, channels_last=cl), 1)
        for k in ks:
            try:
                current.set_points_per_pass(k)
                times[cl, k] = t_given if (cl, k) == (fixed.channels_last, fixed.points_per_pass) \
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
    if times.get((cl, k), t_given) * MARGIN > t_given:  # not clearly faster: keep the given configuration
        cl, k = given
    best = times.get((cl, k), t_given)
    use_compile, compile_note = fixed.compile, ""
    if compile is None and points_left / max(groups, 1) * best > COMPILE_WORTH:
        current = swap(current, build, dataclasses.replace(evaluation, channels_last=cl, compile=True), k)
        try:
            t_compiled, ok = seconds_per_point(current)[0], True
        except Exception as exc:
            t_compiled, ok, compile_note = math.inf, False, f"; compile failed ({type(exc).__name__})"
        ok = all(comm.allgather(ok))
        t_compiled = comm.bcast(t_compiled, root=0)
        use_compile = ok and t_compiled < best
        if ok:
            compile_note = f"; compiled: {t_compiled * 1e3:.3g} ms"
        best = min(best, t_compiled)
    chosen = Choice(cl, use_compile, k, "")
    final = dataclasses.replace(evaluation, channels_last=cl, compile=use_compile)
    if (laid_out(current), current.compile) != (cl, use_compile):
        current = swap(current, build, final, k)
    current.set_points_per_pass(k)
    tried = ", ".join(f"{describe(Choice(c, fixed.compile, j, ''))} {t * 1e3:.3g} ms" for (c, j), t in times.items()
                      if (c, j) not in failed)
    fails = "".join(f"; {j} points per pass failed ({why})" for (c, j), why in failed.items() if c == cl)
    return final, current, dataclasses.replace(chosen, note=(
        f"configuration measured: {describe(chosen)}, {best * 1e3:.3g} ms per point against {t_given * 1e3:.3g} ms as "
        f"given (tried: {tried}{compile_note}{fails})"))


def laid_out(evaluator) -> bool:
    """Whether the evaluator runs channels-last."""
    return evaluator.memory_format == torch.channels_last


def swap(evaluator, build, evaluation, k: int):
    """A new evaluator for `evaluation` and K = k, the old one put back first (the model as it was)."""
    evaluator.restore()
    return build(evaluation, k)


def describe(c: Choice) -> str:
    return (f"{'channels-last' if c.channels_last else 'contiguous'}, {c.points_per_pass} point(s) per pass"
            + (", compiled" if c.compile else ""))
