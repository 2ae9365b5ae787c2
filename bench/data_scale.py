"""Data at scale (issue 17): the memory of a rank streaming a token file as the file grows, the cost
of a point streamed against held in memory, and points/s with G ranks per point.

    .venv/bin/python bench/data_scale.py [--sizes 1,4,16] [--repeat 5]

(a) Peak RSS: for each size (GiB) a sparse token file (os.truncate: every id 0, no disk used),
    `landscape surface --model data_scale:bigram --dataset tokens:FILE --seq_len 1024 --subset N`
    with N = 1/64 of the file's blocks (the first ones: 8 Mi tokens a GiB of file), 3 points, in a
    fresh process, streamed (--data_in_memory no) and held (yes); the figure is the growth of
    ru_maxrss from its value once torch and MPI are imported (shared-library pages are in RSS
    before). `bigram` (below) is an embedding of 8 tokens: the cheapest causal LM, so that the data
    dominate.
(b) Per-point cost: the surface evaluator (core.evaluate) of the same model and data, held and
    streamed, timed in one process in alternation (3 points a call, `--repeat` calls each, after
    one warm-up); the figure is the median streamed time over the median held time: digits CNN on
    the 1438 digits, ResNet-20 on 1000 CIFAR-format images (5 pickled files, as CIFAR-10's),
    lm_tiny on 256 blocks of 128 tokens of a real (random-id) token file.
(c) Points/s of a 9x9 digits CNN surface (all 1438 train images) under `mpirun -n P` with
    `--ranks_per_point G`, the CLI's own points/s (start-up left out), over the same P with G = 1.
Every CLI run has its evaluation fixed (1 point per pass, no channels-last, no compile): no
start-up measurement runs (its K stacked points would count in (a)).
Writes bench/results/data_scale.json and prints it.
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OMPI_MCA_rmaps_base_oversubscribe="1", OMPI_MCA_btl_vader_single_copy_mechanism="none",
           PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "bench")]))
FLAGS = ["--threads", "1", "--no-plot", "--no-progress", "--points_per_pass", "1", "--no-channels_last", "--no-compile"]

PROBE = """
import resource, sys
import torch, mpi4py.MPI
from landscape.cli import main
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
rc = main(sys.argv[1:])
print("peak RSS growth", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before)
sys.exit(rc)
"""


def bigram():
    """logits = an embedding of the current token (vocabulary 8): `--model data_scale:bigram`."""
    import torch

    torch.manual_seed(0)
    return torch.nn.Embedding(8, 8)


def rss(tmp: Path, sizes: list[int]) -> list[dict]:
    out = []
    for gib in sizes:
        f = tmp / f"train_{gib}.bin"
        with open(f, "wb") as fh:
            fh.truncate(gib << 30)
        row = {"file_gib": gib, "tokens_evaluated": (gib << 30) // 2 // 1024 // 64 * 1024}
        for way in ("no", "yes"):
            blocks = (gib << 30) // 2 // 1024
            args = ["surface", "--model", "data_scale:bigram", "--task", "causal_lm", "--dataset", f"tokens:{f}",
                    "--seq_len", "1024", "--subset", str(blocks // 64), "--batch_size", "64", "--x=-1:1:3",
                    "--data_in_memory", way, *FLAGS,
                    "--surf_file", str(tmp / f"rss_{gib}_{way}.h5")]
            p = subprocess.run([sys.executable, "-c", PROBE, *args], env=ENV, cwd=ROOT, capture_output=True, text=True)
            assert p.returncode == 0, p.stderr
            row["streamed_mib" if way == "no" else "held_mib"] = int(p.stdout.split("peak RSS growth")[-1]) / (1 << 20)
        f.unlink()
        out.append(row)
        print(row, flush=True)
    return out


def write_cifar(root: Path, per_file: int = 200) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(folder / name, "wb") as fh:
            pickle.dump({b"labels": [int(v) for v in rng.randint(0, 10, per_file)],
                         b"data": rng.randint(0, 256, size=(per_file, 3072)).astype(np.uint8)}, fh, protocol=2)
    return root


def per_point(tmp: Path, repeat: int) -> dict:
    from landscape.core.data import load_dataset
    from landscape.core.directions import random_directions
    from landscape.core.evaluate import Evaluation
    from landscape.core.models import build_model

    np.random.RandomState(1).randint(0, 256, size=256 * 128).astype(np.uint16).tofile(tmp / "lm_train.bin")
    cases = {"digits CNN, 1438 digits": ("digits_cnn", "digits", {}, "classification"),
             "ResNet-20, 1000 CIFAR-format images": ("resnet20", "cifar10", {"data_dir": str(write_cifar(tmp))},
                                                     "classification"),
             "lm_tiny, 256 blocks of 128 tokens": ("lm_tiny", f"tokens:{tmp / 'lm_train.bin'}", {"seq_len": 128},
                                                   "causal_lm")}
    out = {}
    for label, (model_name, dataset, kw, task) in cases.items():
        model = build_model(model_name, seed=0)
        directions = random_directions(model, seed=0, ndim=1)
        evaluators = {}
        for way in ("yes", "no"):
            splits = load_dataset(dataset, splits=["train"], in_memory=way, **kw)
            evaluators[way] = Evaluation(task=task, batch_size=256).evaluator(model, splits, directions, "cpu")
        coords = np.linspace(-0.5, 0.5, 3)[:, None]
        times = {"yes": [], "no": []}
        for way in ("yes", "no"):
            evaluators[way](coords[:1])  # warm-up (the DataLoader's workers start)
        for _ in range(repeat):
            for way in ("yes", "no"):
                t0 = time.perf_counter()
                evaluators[way](coords)
                times[way].append((time.perf_counter() - t0) / len(coords))
        a, b = evaluators["yes"](coords), evaluators["no"](coords)
        for e in evaluators.values():
            e.restore()
        held, streamed = statistics.median(times["yes"]), statistics.median(times["no"])
        out[label] = {"held_s": held, "streamed_s": streamed, "ratio": streamed / held,
                      "max_abs_difference": float(np.abs(a - b).max())}
        print(label, out[label], flush=True)
    return out


def groups(tmp: Path) -> list[dict]:
    rows = []
    for ranks, gs in ((2, (1, 2)), (4, (1, 2, 4))):
        speed = {}
        for g in gs:
            path = tmp / f"g_{ranks}_{g}.h5"
            cmd = ["mpirun", "-n", str(ranks), sys.executable, str(ROOT / "plot_surface.py"), "--model", "digits_cnn",
                   "--x=-1:1:9", "--y=-1:1:9", "--ranks_per_point", str(g), *FLAGS, "--surf_file", str(path)]
            p = subprocess.run(cmd, env=ENV, cwd=ROOT, capture_output=True, text=True)
            assert p.returncode == 0, p.stderr
            speed[g] = float(re.search(r"([0-9.]+) points/s", p.stderr).group(1))
            path.unlink()
        for g in gs:
            rows.append({"ranks": ranks, "G": g, "points_per_s": speed[g], "over_G1": speed[g] / speed[1]})
            print(rows[-1], flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1,4,16")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--parts", default="rss,point,groups", help="which of (a), (b), (c) to run (the others are kept "
                    "from the results file)")
    args = ap.parse_args()
    parts = args.parts.split(",")
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        out = ROOT / "bench" / "results" / "data_scale.json"
        result = json.loads(out.read_text()) if out.is_file() else {}
        result["machine"] = f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"
        if "rss" in parts:
            result["peak_rss"] = rss(tmp, [int(s) for s in args.sizes.split(",")])
        if "point" in parts:
            result["per_point"] = per_point(tmp, args.repeat)
        if "groups" in parts:
            result["ranks_per_point"] = groups(tmp)
    out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
