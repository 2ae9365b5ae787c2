"""Speed of the surface engine, all figures taken in one run (the machine is shared and noisy):

- floor: one bare forward pass of the model over the evaluation data (no loss, no perturbation);
- point: the engine's marginal wall time per grid point (compute_surface, file writes included,
  one-off start-up excluded by timing two grid sizes);
- ratio = point / floor (1.0 is the physical floor for one point per pass);
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

from landscape.data import Split, load_dataset  # noqa: E402
from landscape.models import build_model  # noqa: E402
from landscape.surface import compute_surface  # noqa: E402


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


def bare_forward(model, split: Split, batch: int, device) -> float:
    model = model.to(device)
    x = split.inputs.to(device)
    with torch.no_grad():
        for i in range(0, len(split), batch):
            model(x[i : i + batch])
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for i in range(0, len(split), batch):
            model(x[i : i + batch])
        if device.type == "cuda":
            torch.cuda.synchronize()
    return time.perf_counter() - t0


def engine_point(model, split: Split, batch: int, side: int, device, **options) -> float:
    """Marginal wall time per point: (T(2·side × side grid) − T(side × side grid)) / (side² points),
    so the one-off start-up (file creation, fingerprints, directions) is not counted. A copy of the
    model (options such as channels-last change it), warmed up once (torch.compile compiles then)."""
    model = copy.deepcopy(model)
    times = {}
    with tempfile.TemporaryDirectory() as tmp:
        for nx in (2, side, 2 * side):
            t0 = time.perf_counter()
            compute_surface(model, {"train": split}, x=f"-1:1:{nx}", y=f"-1:1:{side}", batch_size=batch,
                            surf_file=Path(tmp) / f"s{nx}.h5", device=device, **options)
            times[nx] = time.perf_counter() - t0
    return (times[2 * side] - times[side]) / side**2


class NullEvaluator:
    """Returns zeros at once: what is left of a run's time is the engine's own cost per point."""

    metrics = ["train/loss", "train/acc", "test/loss", "test/acc"]
    points_per_call = 1

    def __call__(self, coords):
        return np.zeros((len(coords), len(self.metrics)))


def engine_overhead(comm=None, side: int = 40) -> float:
    """Seconds per point and rank that the engine adds to the evaluation (chunk hand-out,
    HDF5 writes of 4 metrics and the mask, progress), measured with NullEvaluator."""
    from landscape import engine, store
    from landscape.grid import Grid

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
                        surf_file=Path(tmp) / "s.h5", comm=comm)
    if comm.rank == 0:
        print(s.summary.computed / s.summary.seconds)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--worker")
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--side", type=int, default=5)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--quick", action="store_true", help="digits models only")
    p.add_argument("--repeat", type=int, default=3, help="interleaved repeats per variant (median kept)")
    args = p.parse_args()
    if args.worker:
        return worker(args.worker, args.n, args.side, args.batch)
    torch.set_num_threads(1)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cases = [("digits_cnn", 1438, 1438, 6), ("digits_cnn", 64, 64, 12), ("digits_mlp", 1438, 1438, 6)]
    if not args.quick:
        cases += [("resnet20", 256, 256, 3)]
    rows = []
    for name, n, batch, side in cases:
        model, split = case(name, n)
        row = {"model": name, "n": len(split), "batch": batch}
        variants = {"plain": {}, "K=4": {"points_per_pass": 4}, "K=16": {"points_per_pass": 16},
                    "channels_last": {"channels_last": True}, "compile": {"compile": True},
                    "bf16": {"precision": "bf16"},
                    "batch/4": {"batch_size": max(1, batch // 4)}}
        if name.startswith("resnet"):
            variants.pop("K=16")
        floors = []
        for label, options in variants.items():
            # floor right before and after each engine measurement, repeated; the median of the
            # ratios is kept, so the machine's changing speed (shared, noisy) cancels out
            options = {"batch_size": batch, **options}
            size = options.pop("batch_size")
            ratios = []
            for _ in range(args.repeat):
                before = min(bare_forward(model, split, batch, device) for _ in range(2))
                point = engine_point(model, split, size, side, device, **options)
                after = min(bare_forward(model, split, batch, device) for _ in range(2))
                floors += [before, after]
                ratios.append(point / (0.5 * (before + after)))
            row[label] = float(np.median(ratios))
        row["forward_s"] = float(np.median(floors))
        row["floor_spread"] = max(floors) / min(floors)  # how much the machine's speed moved during the row
        rows.append(row)
    scale = [scaling("digits_cnn", 1438, 9, 1438, args.repeat)]
    if not args.quick:
        scale.append(scaling("resnet20", 128, 5, 128, args.repeat))
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
    out = ROOT / "bench" / "results" / "speed.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"device": str(device), "machine": platform.machine(), "cpus": os.cpu_count(),
                               "torch": torch.__version__, "rows": rows, "scaling": scale,
                               "engine_overhead": overhead, "peak_memory_bytes": peak}, indent=1))


if __name__ == "__main__":
    main()
