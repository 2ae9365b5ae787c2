"""The automatic configuration choice (landscape/core/tuning.py) against hand-picked flags.

    .venv/bin/python bench/auto_choice.py            # writes bench/results/auto_choice.json

For each model, one surface job run by the CLI under `mpirun -n 2` (one torch thread per rank),
whole process timed, with default options (`--channels_last`, `--compile`, `--points_per_pass`,
`--batch_size` left out: measured at start-up) and with each hand-picked flag set, every flag
pinned (so the flagged run measures nothing; a set `name@B` is set `name` at batch size B, else the
model's `batch`). Runs alternate: default, set 1, default, set 2, ... so each set has
a default run next to it on a machine whose speed drifts. The grids are large enough that the
start-up measurement runs (core/tuning.py: the measurements may cost at most SHARE of the run):

- digits CNN: the digits train split (1438 images), 41×41 grid, sets at batch 512;
- digits MLP: the same data, 101×101 grid, sets at batch 512;
- ResNet-20: 256 CIFAR-shaped images (CIFAR-10 python format, random pixels), 13×13, sets at batch 128.

Reported: each run's seconds and the configuration it printed; per model, the default's median
over its runs against the best hand-picked set's (its median over `--repeat` runs; "within 5%":
ratio ≤ 1.05), and the median ratio within each default/flagged pair.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path

import h5py
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference import PY, ROOT, load_average, mpi_env, notes, run, write_cifar  # noqa: E402

PLAIN = ["--no-channels_last", "--no-compile", "--points_per_pass", "1"]
SETS = {
    "plain": PLAIN,
    "channels_last": ["--channels_last", "--no-compile", "--points_per_pass", "1"],
    "compile": ["--no-channels_last", "--compile", "--points_per_pass", "1"],
    "compile_channels_last": ["--channels_last", "--compile", "--points_per_pass", "1"],
    "points_per_pass_4": ["--no-channels_last", "--no-compile", "--points_per_pass", "4"],
    "points_per_pass_16": ["--no-channels_last", "--no-compile", "--points_per_pass", "16"],
}
MODELS = {
    "digits_cnn": {"args": ["--model", "digits_cnn", "--dataset", "digits"], "side": 41, "batch": 512,
                   "sets": ["plain", "channels_last", "compile", "compile_channels_last", "points_per_pass_4",
                            "points_per_pass_16", "channels_last@256"]},
    "digits_mlp": {"args": ["--model", "digits_mlp", "--dataset", "digits"], "side": 101, "batch": 512,
                   "sets": ["plain", "compile", "points_per_pass_4", "points_per_pass_16", "plain@2048",
                            "points_per_pass_16@2048"]},
    "resnet20": {"args": ["--model", "resnet20", "--dataset", "cifar10"], "side": 13, "batch": 128,
                 "images": 256, "sets": ["plain", "channels_last", "compile_channels_last", "points_per_pass_4",
                                         "channels_last@256"]},
}


def flags(name: str, batch: int) -> list[str]:
    """The flags of set `name` (`base@B`: set base at batch size B), every choice pinned."""
    base, _, size = name.partition("@")
    return [*SETS[base], "--batch_size", size or str(batch)]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--sets", help="only these sets (comma-separated), for every model asked")
    p.add_argument("--repeat", type=int, default=1, help="each default/set pair this many times (medians compared)")
    p.add_argument("--work", help="folder for the data and files (default: a temporary one, removed)")
    p.add_argument("--output", default=str(ROOT / "bench" / "results" / "auto_choice.json"))
    args = p.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-auto-"))
    work.mkdir(parents=True, exist_ok=True)
    env = mpi_env()
    result = {"machine": platform.machine(), "cpus": os.cpu_count(), "torch": torch.__version__, "ranks": args.ranks,
              "torch_threads_per_rank": 1, "load_average_before": load_average(), "models": {}}
    for name in args.models.split(","):
        spec = MODELS[name]
        job = [*spec["args"], f"--x=-1:1:{spec['side']}", f"--y=-1:1:{spec['side']}", "--splits", "train",
               "--no-plot", "--no-progress"]
        if "images" in spec:
            write_cifar(work / name, spec["images"], 16)
            job += ["--data_dir", str(work / name)]
        runs, reference_loss = [], None
        chosen = args.sets.split(",") if args.sets else spec["sets"]
        for flagged in [s for _ in range(args.repeat) for s in chosen]:
            for label, pinned in (("default", []), (flagged, flags(flagged, spec["batch"]))):
                surf = work / f"{name}_{len(runs)}_{label}.h5"  # a new file each run: nothing resumed
                cmd = ["mpirun", "-n", str(args.ranks), PY, "-m", "landscape", "surface", *job,
                       "--surf_file", str(surf), *pinned]
                seconds, text = run(cmd, env)
                with h5py.File(surf) as f:
                    loss = f["train/loss"][...]
                    options = json.loads(f.attrs["run_options"])["evaluation"]
                reference_loss = loss if reference_loss is None else reference_loss
                runs.append({"set": label, "seconds": seconds, "flags": pinned, "evaluation": options,
                             "notes": [n for n in notes(text) if "configuration" in n],
                             "loss_max_abs_diff_to_first": float(np.abs(loss - reference_loss).max()),
                             "load_average_after": load_average()[0]})
                print(f"{name:10s} {label:22s} {seconds:6.1f} s  {options}", flush=True)
        defaults = [r["seconds"] for r in runs if r["set"] == "default"]
        flagged = {s: float(np.median([r["seconds"] for r in runs if r["set"] == s])) for s in chosen}  # medians
        best = min(flagged, key=flagged.get)
        pairs = {s: float(np.median([runs[i]["seconds"] / runs[i + 1]["seconds"] for i in range(0, len(runs), 2)
                                     if runs[i + 1]["set"] == s])) for s in chosen}
        summary = {"command": " ".join(["mpirun", "-n", str(args.ranks), "landscape", "surface", *job]),
                   "default_median_s": float(np.median(defaults)), "default_s": defaults, "flagged_s": flagged,
                   "best_hand_picked": best, "default_over_best": float(np.median(defaults)) / flagged[best],
                   "default_over_flagged_in_pair": pairs,
                   "default_choices": [r["evaluation"] for r in runs if r["set"] == "default"], "runs": runs}
        summary["within_5_percent"] = summary["default_over_best"] <= 1.05
        result["models"][name] = summary
        print(f"{name}: default median {summary['default_median_s']:.1f} s, best hand-picked {best} "
              f"{flagged[best]:.1f} s: default / best {summary['default_over_best']:.3f} "
              f"(in its pair {pairs[best]:.3f})", flush=True)
    result["load_average_after"] = load_average()
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"written: {out}")
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
