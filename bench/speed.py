"""Speed of the surface engine, all figures taken in one run (the machine is shared and noisy):

- floor: one bare forward pass of the plain fp32 model over the evaluation data (no loss, no
  perturbation), timed next to every evaluator call of the engine run (see PairedFloor);
- point: the wall time of that call plus the engine's own time since the previous call (chunk
  hand-out, HDF5 writes), per point: a real engine.run on 1 rank;
- ratio = point / floor, the median over the calls (1.0 is the physical floor for one point per pass);
- options: points per pass K (vmap), channels-last, torch.compile, bf16 autocast, batch size;
- a preview row: the digits CNN on its first 64 images, where per-point costs other than the
  arithmetic weigh most;
- scaling: points/s with 2 MPI ranks over 1 rank (one torch thread per rank);
- peak memory (max RSS of the process; on a GPU, max allocated).

    .venv/bin/python bench/speed.py            # prints a table, writes bench/results/speed.json
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from landscape.api import compute_surface  # noqa: E402

PLAIN = {"channels_last": False, "compile": False, "points_per_pass": 1}  # the plain path (not measured at start-up)
from landscape.core.data import Split, load_dataset  # noqa: E402
from landscape.core.models import build_model  # noqa: E402


def case(name: str, n: int):
    """(model, split): the digits models on the first n real digits, zoo models on n CIFAR-shaped tensors."""
    model = build_model(name).eval()
    if name.startswith("digits"):
        split = load_dataset("digits")["train"]
        split = Split(split.inputs[:n], split.labels[:n])
    else:
        gen = torch.Generator().manual_seed(0)
        split = Split(torch.randn(n, 3, 32, 32, generator=gen), torch.randint(0, 10, (n,), generator=gen))
    return model, split


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed_forward(model, inputs: torch.Tensor, batch: int, device) -> float:
    """Seconds of one pass of `model` over `inputs` (on `device` already), batch by batch."""
    with torch.no_grad():
        t0 = time.perf_counter()
        for i in range(0, len(inputs), batch):
            model(inputs[i : i + batch])
        sync(device)
        return time.perf_counter() - t0


def bare_forward(model, split: Split, batch: int, device) -> float:
    """The floor after one warm-up pass."""
    model = model.to(device)
    x = split.inputs.to(device)
    timed_forward(model, x, batch, device)
    return timed_forward(model, x, batch, device)


class PairedFloor:
    """Wraps an evaluator: next to each call, one bare forward pass of the unperturbed fp32 model
    over the same data (the floor) is timed, so each point's cost is compared with a floor taken
    within ~0.1 s of it; the machine's changing speed (shared, noisy) cancels out."""

    def __init__(self, evaluator, model, split: Split, batch: int, device):
        self.evaluator, self.metrics = evaluator, evaluator.metrics
        self.points_per_call = evaluator.points_per_call
        self.model, self.batch, self.device = copy.deepcopy(model).to(device).eval(), batch, device
        self.inputs = split.inputs.to(device)
        self.records, self.last_end, self.floors_since = [], None, 0.0  # records: (floor, call, engine s, points)

    def floor(self) -> float:
        return timed_forward(self.model, self.inputs, self.batch, self.device)

    def restore(self):
        self.evaluator.restore()

    def __call__(self, coords):
        """The floor before the call on even calls, after it on odd ones (cache warmth cancels out);
        the engine's time is the gap between calls less the floors timed in it."""
        start = time.perf_counter()
        engine_s = start - self.last_end - self.floors_since if self.last_end is not None else float("nan")
        floor_first = len(self.records) % 2 == 0
        floor = self.floor() if floor_first else 0.0
        t0 = time.perf_counter()
        values = self.evaluator(coords)  # returns numpy: the device is synchronized
        self.last_end = time.perf_counter()
        call = self.last_end - t0
        self.floors_since = 0.0 if floor_first else self.floor()
        self.records.append((floor if floor_first else self.floors_since, call, engine_s, len(coords)))
        return values


def engine_point(model, split: Split, batch: int, points: int, device, floor_batch: int | None = None,
                 **options) -> tuple[float, list[float]]:
    """Median over the evaluator calls of a real engine run (engine.run on 1 rank, HDF5 writes
    included) of (call + engine time since the previous call) / (points in the call × the floor
    timed next to it), and those floors. The first two calls (warm-up, torch.compile's compilation) are left out."""
    from landscape import engine
    from landscape.core.directions import random_directions
    from landscape.core.evaluate import SurfaceEvaluator
    from landscape.core.grid import Grid
    from landscape.io import surface_file as store

    evaluator = SurfaceEvaluator(copy.deepcopy(model), {"train": split}, random_directions(model, seed=0),
                                 batch_size=batch, device=device, **options)
    paired = PairedFloor(evaluator, model, split, floor_batch or batch, device)
    grid = Grid(np.linspace(-1, 1, points))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.h5"
        engine.run(paired, grid, path, store.prepare(path, grid, evaluator.metrics, {}), progress=False)
    kept = paired.records[2:]
    return float(np.median([(call + engine_s) / (k * floor) for floor, call, engine_s, k in kept])), [r[0] for r in kept]


class NullEvaluator:
    """Returns zeros at once: what is left of a run's time is the engine's own cost per point."""

    metrics = ["train/loss", "train/acc", "test/loss", "test/acc"]
    points_per_call = 1

    def __call__(self, coords):
        return np.zeros((len(coords), len(self.metrics)))

    def restore(self):
        pass


def engine_overhead(comm=None, side: int = 40) -> float:
    """Seconds per point and rank that the engine adds to the evaluation (chunk hand-out,
    HDF5 writes of 4 metrics and the mask, progress), measured with NullEvaluator."""
    from landscape import engine
    from landscape.core.grid import Grid
    from landscape.io import surface_file as store

    comm = comm or engine.world()
    grid = Grid(np.linspace(-1, 1, side), np.linspace(-1, 1, side))
    tmp = comm.bcast(tempfile.mkdtemp() if comm.rank == 0 else None)
    path = Path(tmp) / "null.h5"
    done = comm.bcast(store.prepare(path, grid, NullEvaluator.metrics, {}) if comm.rank == 0 else None)
    t0 = time.perf_counter()
    engine.run(NullEvaluator(), grid, path, done, comm=comm, progress=False)
    return (time.perf_counter() - t0) * comm.size / grid.size


def scaling(name: str, n: int, side: int, batch: int, repeat: int) -> dict:
    """Points/s of the CLI engine with 1 and 2 ranks (mpirun, one thread per rank)."""
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1", OMPI_MCA_btl_vader_single_copy_mechanism="none")
    rates = {1: [], 2: []}
    for _ in range(repeat):  # alternate 1 and 2 ranks; medians are kept
        for ranks in (1, 2):
            out = subprocess.run(["mpirun", "-n", str(ranks), sys.executable, __file__, "--worker", name, "--n", str(n),
                                  "--side", str(side), "--batch", str(batch)], env=env, capture_output=True, text=True)
            if out.returncode:
                raise SystemExit(out.stderr)
            rates[ranks].append(float(out.stdout.strip().splitlines()[-1]))
    rates = {k: float(np.median(v)) for k, v in rates.items()}
    return {"model": name, "points_per_s_1": rates[1], "points_per_s_2": rates[2], "speedup": rates[2] / rates[1]}


def worker(name: str, n: int, side: int, batch: int) -> None:
    from landscape.engine import world

    if name == "null":
        seconds = engine_overhead()
        if world().rank == 0:
            print(seconds)
        return
    torch.set_num_threads(1)
    model, split = case(name, n)
    comm = world()
    tmp = tempfile.mkdtemp() if comm.rank == 0 else None
    tmp = comm.bcast(tmp)
    s = compute_surface(model, {"train": split}, x=f"-1:1:{side}", y=f"-1:1:{side}", batch_size=batch,
                        surf_file=Path(tmp) / "s.h5", comm=comm, **PLAIN)
    if comm.rank == 0:
        print(s.summary.computed / s.summary.seconds)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--worker")
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--side", type=int, default=5)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--quick", action="store_true", help="digits models only")
    p.add_argument("--repeat", type=int, default=1, help="runs per variant (median kept)")
    p.add_argument("--cases", help="only these rows, e.g. digits_cnn:1438,digits_cnn:64 (model:images)")
    p.add_argument("--variants", help="only these columns, e.g. plain,K=4,K=16")
    p.add_argument("--no-scaling", action="store_true", help="leave out the 1 vs 2 ranks runs")
    p.add_argument("--scaling_repeat", type=int, default=3, help="alternated 1- and 2-rank runs (median kept)")
    p.add_argument("--output", default=str(ROOT / "bench" / "results" / "speed.json"))
    args = p.parse_args()
    if args.worker:
        return worker(args.worker, args.n, args.side, args.batch)
    torch.set_num_threads(1)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    # (model, images, batch, points per variant at least); variants with K points per pass get 6K
    cases = [("digits_cnn", 1438, 1438, 24), ("digits_cnn", 64, 64, 48), ("digits_mlp", 1438, 1438, 48)]
    if not args.quick:
        cases += [("resnet20", 256, 256, 8)]
    if args.cases:
        cases = [c for c in cases if f"{c[0]}:{c[1]}" in args.cases.split(",")]
    rows = []
    for name, n, batch, points in cases:
        model, split = case(name, n)
        row = {"model": name, "n": len(split), "batch": batch}
        variants = {"plain": {}, "K=4": {"points_per_pass": 4}, "K=16": {"points_per_pass": 16},
                    "channels_last": {"channels_last": True}, "compile": {"compile": True},
                    "bf16": {"precision": "bf16"},
                    "batch/4": {"batch_size": max(1, batch // 4)}}
        if name.startswith("resnet"):
            variants.pop("K=16")
        if args.variants:
            variants = {k: v for k, v in variants.items() if k in args.variants.split(",")}
        floors = []
        for label, options in variants.items():
            options = {"batch_size": batch, **PLAIN, **options}  # each variant forced (no start-up measurement)
            size = options.pop("batch_size")
            count = max(points, 6 * options.get("points_per_pass", 1))
            ratios = []
            for _ in range(args.repeat):
                ratio, floor = engine_point(model, split, size, count, device, floor_batch=batch, **options)
                ratios.append(ratio)
                floors += floor
            row[label] = float(np.median(ratios))
        row["forward_s"] = float(np.median(floors))
        row["floor_spread"] = float(np.percentile(floors, 90) / np.percentile(floors, 10))  # the machine's drift
        rows.append(row)
    scale = [] if args.no_scaling else [scaling("digits_cnn", 1438, 9, 1438, args.scaling_repeat)]
    if not (args.quick or args.no_scaling):
        scale.append(scaling("resnet20", 128, 5, 128, args.scaling_repeat))
    overhead = {"1_rank_ms": 1e3 * engine_overhead()}
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1", OMPI_MCA_btl_vader_single_copy_mechanism="none")
    out = subprocess.run(["mpirun", "-n", "2", sys.executable, __file__, "--worker", "null"], env=env,
                         capture_output=True, text=True)
    overhead["2_ranks_ms"] = 1e3 * float(out.stdout.strip().splitlines()[-1])
    for r in rows:
        r["overhead_ratio"] = 1 + overhead["2_ranks_ms"] / 1e3 / r["forward_s"]
    peak = (torch.cuda.max_memory_allocated() if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    labels = [k for k in rows[0] if k not in ("model", "n", "batch", "forward_s")]
    print("batch/4: engine at a quarter of the batch size, over the floor at the full batch size")
    print(f"time per grid point / one bare forward pass ({device}, 1 thread, {platform.machine()})")
    print(f"{'model':<11} {'n':>5} {'fwd ms':>8} " + " ".join(f"{k:>13}" for k in labels))
    for r in rows:
        print(f"{r['model']:<11} {r['n']:>5} {1e3 * r['forward_s']:>8.2f} " + " ".join(f"{r.get(k, float('nan')):>13.2f}" for k in labels))
    for s in scale:
        print(f"scaling {s['model']}: 1 rank {s['points_per_s_1']:.2f} points/s, 2 ranks {s['points_per_s_2']:.2f} "
              f"points/s, speed-up {s['speedup']:.2f}x")
    print(f"engine's own cost per point and rank (null evaluator): {overhead['1_rank_ms']:.2f} ms with 1 rank, "
          f"{overhead['2_ranks_ms']:.2f} ms with 2 ranks; 1 + that / forward: "
          + ", ".join(f"{r['model']} {r['overhead_ratio']:.3f}" for r in rows))
    print(f"peak memory {peak / 2**20:.0f} MiB")
    out = Path(args.output)
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"device": str(device), "machine": platform.machine(), "cpus": os.cpu_count(),
                               "torch": torch.__version__, "rows": rows, "scaling": scale,
                               "engine_overhead": overhead, "peak_memory_bytes": peak}, indent=1))


if __name__ == "__main__":
    main()
