"""What else stands between the surface evaluator and a CPU's floor (issue 21, "Fast by default").

    .venv/bin/python bench/cpu_study.py            # writes bench/results/cpu_study.json (about 10 min, 2 cores)
    .venv/bin/python bench/cpu_study.py --quick    # tiny sizes, a smoke run (about 1 min)

Three models: digits CNN and digits MLP on the digits train split (1438 images, batch 512), and
ResNet-20 on 256 CIFAR-shaped images (CIFAR-10 python format, random pixels, batch 128). The
machine is shared and its speed drifts, so every comparison is made within one run: the variants
alternate (their order rotated from one repetition to the next), and each is reported as its
median and as the median over repetitions of its ratio to the baseline of the same repetition.

1. threads: the whole CLI job (`landscape surface`, every choice pinned to the one the automatic
   configuration makes for the model, so nothing is measured at start-up), whole process timed:
   `mpirun -n 2`, one torch thread per rank (baseline) against `mpirun -n 1 --threads 2`.
2. in-process (freed memory kept, as the CLI does), one torch thread, points_per_pass 1, BN folded (`Evaluation(...).evaluator`),
   seconds per grid point over the same random coordinates for each variant:
   - no_grad: the evaluator as it is (`evaluate_point` is under `torch.no_grad()`): baseline;
   - inference_mode: the call wrapped in `torch.inference_mode()` (checked in a forward hook);
   - mkldnn_off: the call under `torch.backends.mkldnn.flags(enabled=False)`;
   - alternating_order: each split's batches in forward order on even points and in reverse
     order on odd points (a subclass of the evaluator), so the batches last touched come first.
3. process settings, each a fresh process (this script with `--worker`) timing the same points as
   in 2 after one warm-up point: glibc's malloc as the CLI sets it (core.device.keep_freed_memory:
   baseline) or left at its defaults, and oneDNN's primitive cache
   (`ONEDNN_PRIMITIVE_CACHE_CAPACITY` unset, 0, 4096; an environment variable).

Every variant must give the baseline's losses within float rounding (asserted); the largest
differences of the losses and accuracies are reported.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import warnings
from contextlib import nullcontext
from pathlib import Path

import h5py
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference import PY, ROOT, load_average, mpi_env, notes, run, write_cifar  # noqa: E402

sys.path.insert(0, str(ROOT))
from landscape.core.data import load_dataset  # noqa: E402
from landscape.core.device import keep_freed_memory  # noqa: E402
from landscape.core.directions import random_directions  # noqa: E402
from landscape.core.evaluate import Evaluation, SurfaceEvaluator  # noqa: E402
from landscape.core.models import build_model  # noqa: E402

PIN = ["--no-compile", "--fold_bn"]  # plus the automatic configuration's choice for each model (bench/auto_choice)
MODELS = {  # side: CLI grid side; points: in-process points per variant and repetition
    "digits_cnn": {"cli": ["--model", "digits_cnn", "--dataset", "digits"], "batch": 512, "channels_last": True,
                   "pin": ["--channels_last", "--points_per_pass", "1"], "side": 31, "points": 20},
    "digits_mlp": {"cli": ["--model", "digits_mlp", "--dataset", "digits"], "batch": 512, "channels_last": False,
                   "pin": ["--no-channels_last", "--points_per_pass", "16"], "side": 101, "points": 200},
    "resnet20": {"cli": ["--model", "resnet20", "--dataset", "cifar10"], "batch": 128, "channels_last": True,
                 "pin": ["--channels_last", "--points_per_pass", "1"], "side": 9, "points": 4, "images": 256},
}
QUICK = {"digits_cnn": {"side": 5, "points": 3}, "digits_mlp": {"side": 9, "points": 20},
         "resnet20": {"side": 3, "points": 1, "images": 64}}
warnings.filterwarnings("ignore", message="TF32 acceleration")  # from torch.backends.mkldnn.flags
THREADS = {"ranks2_threads1": (2, 1), "ranks1_threads2": (1, 2)}  # variant: (ranks, torch threads per rank)
PROCESS = {  # variant: (ONEDNN_PRIMITIVE_CACHE_CAPACITY or None: unset, keep_freed_memory called)
    "keep_freed_memory": (None, True), "glibc_default": (None, False), "cache_0": ("0", True),
    "cache_4096": ("4096", True)}


class Alternating(SurfaceEvaluator):
    """evaluate_point with each split's batches in forward order on even calls, reverse order on odd ones."""

    calls = 0

    @torch.no_grad()
    def evaluate_point(self) -> torch.Tensor:
        sums = []
        for split in self.splits.values():
            batches = list(split.batches(self.batch_size, self.device))
            totals, count = 0, 0
            for xb, yb in batches[::-1] if self.calls % 2 else batches:
                with self.autocast():
                    totals += self.task.sums(self.task.output(self.forward(xb)), yb, inputs=xb)
                count += self.task.count(yb)
            sums.append((totals, count))
        self.calls += 1
        return torch.cat(self.means(sums))


VARIANTS = {"no_grad": (nullcontext, SurfaceEvaluator), "inference_mode": (torch.inference_mode, SurfaceEvaluator),
            "mkldnn_off": (lambda: torch.backends.mkldnn.flags(enabled=False), SurfaceEvaluator),
            "alternating_order": (nullcontext, Alternating)}


def evaluator(name: str, spec: dict, work: Path) -> SurfaceEvaluator:
    model = build_model(name, seed=0)
    dataset, data_dir = (("cifar10", str(work / name)) if "images" in spec else ("digits", None))
    splits = load_dataset(dataset, data_dir=data_dir, splits=["train"])
    return Evaluation(batch_size=spec["batch"], channels_last=spec["channels_last"], fold_bn=True).evaluator(
        model, splits, random_directions(model, seed=0, ndim=2), "cpu")


def coordinates(spec: dict) -> np.ndarray:
    return np.random.RandomState(0).uniform(-1, 1, (spec["points"], 2))


def rotated(names: list[str], rep: int) -> list[str]:
    return names[rep % len(names):] + names[:rep % len(names)]


def summary(times: dict[str, list[float]], base: str) -> dict:
    """Each variant's times, median, and median over repetitions of its ratio to `base` in the same one."""
    return {"times": times, "median": {v: float(np.median(t)) for v, t in times.items()},
            "ratio_to_" + base: {v: float(np.median(np.array(t) / np.array(times[base]))) for v, t in times.items()}}


def check(label: str, values: np.ndarray, base: np.ndarray, metrics: list[str], tol: float) -> dict:
    loss = [i for i, m in enumerate(metrics) if m.endswith("loss")]
    diff = {"loss_max_abs_diff": float(np.abs(values[:, loss] - base[:, loss]).max()),
            "max_abs_diff": float(np.abs(values - base).max())}
    assert np.allclose(values[:, loss], base[:, loss], rtol=tol, atol=tol), f"{label}: the losses differ: {diff}"
    return diff


def threads_study(name: str, spec: dict, work: Path, reps: int) -> dict:
    job = [*spec["cli"], "--batch_size", str(spec["batch"]), f"--x=-1:1:{spec['side']}", f"--y=-1:1:{spec['side']}",
           "--splits", "train", "--no-plot", "--no-progress", *PIN, *spec["pin"]]
    if "images" in spec:
        job += ["--data_dir", str(work / name)]
    times, losses, summaries = {v: [] for v in THREADS}, {}, {}
    for rep in range(reps):
        for v in rotated(list(THREADS), rep):
            ranks, threads = THREADS[v]
            surf = work / f"{name}_{v}_{rep}.h5"
            seconds, text = run(["mpirun", "-n", str(ranks), PY, "-m", "landscape", "surface", *job,
                                 "--threads", str(threads), "--surf_file", str(surf)], mpi_env(threads))
            with h5py.File(surf) as f:
                losses.setdefault(v, f["train/loss"][...].reshape(-1, 1))
            summaries.setdefault(v, []).extend(n for n in notes(text) if "points/s" in n)
            times[v].append(seconds)
            print(f"threads     {name:10s} {v:18s} {seconds:7.2f} s", flush=True)
    out = summary(times, "ranks2_threads1")
    out.update(command="landscape surface " + " ".join(job), landscape_summary=summaries,
               values={v: check(v, losses[v], losses["ranks2_threads1"], ["loss"], 1e-4) for v in THREADS})
    return out


def in_process(name: str, spec: dict, work: Path, reps: int) -> dict:
    ev = evaluator(name, spec, work)
    coords, modes = coordinates(spec), []
    hook = ev.forward.register_forward_hook(lambda *_: modes.append(torch.is_inference_mode_enabled()))
    times, values = {v: [] for v in VARIANTS}, {}
    for rep in range(-1, reps):  # rep -1: one point of each, warm-up
        for v in rotated(list(VARIANTS), rep):
            context, cls = VARIANTS[v]
            ev.__class__, modes[:] = cls, []
            t0 = time.perf_counter()
            with context():
                out = ev(coords if rep >= 0 else coords[:1])
            seconds = (time.perf_counter() - t0) / (len(coords) if rep >= 0 else 1)
            assert modes and all(m == (v == "inference_mode") for m in modes), f"{v}: inference mode was {modes}"
            if rep >= 0:
                times[v].append(seconds)
                values.setdefault(v, out)
                print(f"in-process  {name:10s} {v:18s} {seconds * 1e3:8.2f} ms/point", flush=True)
    hook.remove()
    ev.__class__ = SurfaceEvaluator
    ev.restore()
    out = summary(times, "no_grad")
    out.update(points=len(coords), metrics=ev.metrics, folded_bn=ev.folded,
               values={v: check(v, values[v], values["no_grad"], ev.metrics, 1e-6 if v != "mkldnn_off" else 1e-4)
                       for v in VARIANTS})
    return out


def worker(name: str, spec: dict, work: Path, reps: int, keep: bool) -> None:
    """Seconds per point (median of `reps` passes over the points, after one warm-up point) and the values, as JSON."""
    torch.set_num_threads(1)
    if keep:
        keep_freed_memory()
    ev, coords = evaluator(name, spec, work), coordinates(spec)
    ev(coords[:1])
    seconds = []
    for _ in range(reps):
        t0 = time.perf_counter()
        values = ev(coords)
        seconds.append((time.perf_counter() - t0) / len(coords))
    print(json.dumps({"seconds": float(np.median(seconds)), "values": values.tolist(), "metrics": ev.metrics}))


def process_settings(name: str, spec: dict, work: Path, reps: int, quick: bool) -> dict:
    times, values, metrics = {v: [] for v in PROCESS}, {}, None
    for rep in range(reps):
        for v in rotated(list(PROCESS), rep):
            cache, keep = PROCESS[v]
            env = {k: val for k, val in mpi_env(1).items() if k != "ONEDNN_PRIMITIVE_CACHE_CAPACITY"}
            if cache is not None:
                env["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] = cache
            _, text = run([PY, __file__, "--worker", name, "--work", str(work), *(["--quick"] if quick else []),
                           *(["--keep"] if keep else [])], env)
            got = json.loads(text.strip().splitlines()[-1])
            times[v].append(got["seconds"])
            values.setdefault(v, np.array(got["values"]))
            metrics = got["metrics"]
            print(f"process     {name:10s} {v:18s} {got['seconds'] * 1e3:8.2f} ms/point", flush=True)
    out = summary(times, "keep_freed_memory")
    out["values"] = {v: check(v, values[v], values["keep_freed_memory"], metrics, 1e-6) for v in PROCESS}
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes and one or two repetitions: a smoke run")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--output", default=str(ROOT / "bench" / "results" / "cpu_study.json"))
    p.add_argument("--work", help="folder for the data and files (default: a temporary one, removed)")
    p.add_argument("--worker", help=argparse.SUPPRESS)  # one process-settings measurement of this model
    p.add_argument("--keep", action="store_true", help=argparse.SUPPRESS)  # the worker keeps freed memory
    args = p.parse_args()
    specs = {n: {**MODELS[n], **(QUICK[n] if args.quick else {})} for n in args.models.split(",")}
    if args.worker:
        return worker(args.worker, specs[args.worker], Path(args.work), 1 if args.quick else 3, args.keep)
    reps = {"threads": 1, "in_process": 2, "cache": 1} if args.quick else {"threads": 3, "in_process": 7, "cache": 3}
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-cpu-"))
    work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    keep_freed_memory()  # as the CLI does
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    result = {"machine": {"machine": platform.machine(), "cpu": cpu, "cpus": os.cpu_count(), "torch": torch.__version__,
                          "mkldnn_available": torch.backends.mkldnn.is_available(),
                          "mkldnn_enabled": torch.backends.mkldnn.enabled,
                          "cpu_capability": torch.backends.cpu.get_cpu_capability()},
              "quick": args.quick, "repetitions": reps, "load_average_before": load_average(), "models": {}}
    print(f"mkldnn available: {torch.backends.mkldnn.is_available()}, {cpu}, {os.cpu_count()} cpus", flush=True)
    for name, spec in specs.items():
        if "images" in spec:
            write_cifar(work / name, spec["images"], 16)
        result["models"][name] = {"threads": threads_study(name, spec, work, reps["threads"]),
                                  "in_process": in_process(name, spec, work, reps["in_process"]),
                                  "process_settings": process_settings(name, spec, work, reps["cache"], args.quick)}
    result["load_average_after"] = load_average()
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    for name, parts in result["models"].items():
        for part, r in parts.items():
            base = next(k for k in r if k.startswith("ratio_to_"))
            print(f"{name:10s} {part:22s} {base}: " + ", ".join(f"{v} {x:.3f}" for v, x in r[base].items()))
    print(f"load average {result['load_average_before'][0]:.2f} before, {result['load_average_after'][0]:.2f} after")
    print(f"written: {out}")
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
