"""Per-point overhead: engine time per grid point over one bare forward pass of the same
model over the same data and batch size (the floor, ratio 1.0).

    .venv/bin/python bench/overhead.py [--threads 1] [--points 25]

Both are timed in one run, interleaved, best of `--repeat`; writes bench/results/overhead.json."""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from landscape.data import Split, load_dataset
from landscape.models import build_model
from landscape.surface import compute_surface


def bare_forward(model, split: Split, batch_size: int) -> float:
    """Seconds for one pass over the split: the floor of one grid point."""
    t0 = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(split), batch_size):
            model(split.inputs[i : i + batch_size])
    return time.perf_counter() - t0


def engine_per_point(model, split: Split, batch_size: int, points: int, tmp: Path) -> float:
    side = int(points**0.5)
    surf = tmp / f"s{time.monotonic_ns()}.h5"
    t0 = time.perf_counter()
    s = compute_surface(model, {"train": split}, x=f"-1:1:{side}", y=f"-1:1:{side}", batch_size=batch_size, surf_file=surf)
    total = time.perf_counter() - t0
    busy = s.summary.per_rank_busy[0]
    return total / s.summary.computed, busy / s.summary.computed


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--points", type=int, default=25)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cases = []
    digits = load_dataset("digits")["train"]
    cases.append(("digits_cnn", build_model("digits_cnn").eval(), digits, 1437))
    cases.append(("digits_mlp", build_model("digits_mlp").eval(), digits, 1437))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, model, split, bs in cases:
            floor = min(bare_forward(model, split, bs) for _ in range(args.repeat + 2))
            per_point = [engine_per_point(model, split, bs, args.points, Path(tmp)) for _ in range(args.repeat)]
            wall = min(w for w, _ in per_point)
            busy = min(b for _, b in per_point)
            floor = min(floor, *(bare_forward(model, split, bs) for _ in range(args.repeat)))
            rows.append({"model": name, "n": len(split), "batch": bs, "forward_s": floor, "point_s": wall,
                         "evaluator_s": busy, "ratio": wall / floor, "evaluator_ratio": busy / floor})
    print(f"{'model':<12} {'n':>6} {'batch':>6} {'forward ms':>11} {'point ms':>9} {'ratio':>6} {'eval only':>9}")
    for r in rows:
        print(f"{r['model']:<12} {r['n']:>6} {r['batch']:>6} {1e3 * r['forward_s']:>11.2f} {1e3 * r['point_s']:>9.2f} "
              f"{r['ratio']:>6.2f} {r['evaluator_ratio']:>9.2f}")
    out = Path(__file__).parent / "results" / "overhead.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"machine": platform.processor() or platform.machine(), "threads": args.threads,
                               "torch": torch.__version__, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
