"""The headline: a 51×51 surface of ResNet-56 over 50,000 CIFAR-shaped images, predicted from
the measured time per grid point on this machine's device (the reference tool took about an
hour on four GPUs). Meant for a GPU; on a CPU use a small --n to check the script.

    .venv/bin/python bench/headline.py                     # GPU: prints a table, writes JSON
    .venv/bin/python bench/headline.py --n 64 --points 4   # CPU smoke run

For each option set: the bare forward pass over the data (the floor), the engine's time per
point (compute_surface over `--points` points after a 2-point warm-up that also compiles),
their ratio, and the 51×51 grid's predicted time on one device.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from speed import bare_forward, case, sync  # noqa: E402

from landscape.api import compute_surface  # noqa: E402

PLAIN = {"channels_last": False, "compile": False, "points_per_pass": 1}  # forced: no start-up measurement
VARIANTS = {
    "auto (default options)": {"channels_last": None, "compile": None, "points_per_pass": 0},
    "fp32": {},
    "fp32 channels-last": {"channels_last": True},
    "bf16": {"precision": "bf16"},
    "bf16 channels-last": {"precision": "bf16", "channels_last": True},
    "bf16 channels-last compile": {"precision": "bf16", "channels_last": True, "compile": True},
}


def time_per_point(model, split, batch, points, device, **options) -> float:
    model, options = copy.deepcopy(model), {**PLAIN, **options}
    with tempfile.TemporaryDirectory() as tmp:
        compute_surface(model, {"train": split}, x="-1:1:2", batch_size=batch, surf_file=Path(tmp) / "warm.h5",
                        device=device, **options)
        sync(device)
        t0 = time.perf_counter()
        compute_surface(model, {"train": split}, x=f"-1:1:{points}", batch_size=batch, surf_file=Path(tmp) / "s.h5",
                        device=device, **options)
        sync(device)
        return (time.perf_counter() - t0) / points


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="resnet56")
    p.add_argument("--n", type=int, default=50000)
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--points", type=int, default=6, help="grid points timed per option set")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated: " + ", ".join(VARIANTS))
    args = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    model, split = case(args.model, args.n)
    floor = min(bare_forward(model, split, args.batch, device) for _ in range(3))
    rows = []
    for label in args.variants.split(","):
        seconds = time_per_point(model, split, args.batch, args.points, device, **VARIANTS[label])
        rows.append({"options": label, "seconds_per_point": seconds, "ratio_to_fp32_floor": seconds / floor,
                     "grid_51x51_minutes": 51 * 51 * seconds / 60})
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    print(f"{args.model}, {len(split)} CIFAR-shaped images, batch {args.batch}, on {name} (torch {torch.__version__})")
    print(f"bare fp32 forward pass over the data: {floor:.3f} s")
    print(f"{'options':<28} {'s/point':>9} {'/ floor':>8} {'51x51 (min)':>12}")
    for r in rows:
        print(f"{r['options']:<28} {r['seconds_per_point']:>9.3f} {r['ratio_to_fp32_floor']:>8.2f} "
              f"{r['grid_51x51_minutes']:>12.1f}")
    out = ROOT / "bench" / "results" / f"headline_{name.replace(' ', '_')}.json"
    out.write_text(json.dumps({"device": name, "torch": torch.__version__, "model": args.model, "n": len(split),
                               "batch": args.batch, "floor_s": floor, "rows": rows, "peak_memory_bytes": peak},
                              indent=1))


if __name__ == "__main__":
    main()
