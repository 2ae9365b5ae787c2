"""Data at scale (issue 17): the memory of a rank streaming a token file as the file grows, the cost
of a point streamed against held in memory, and points/s with G ranks per point.

    .venv/bin/python bench/data_scale.py [--sizes 1,2,4] [--limit_mib 100] [--repeat 5] [--parts rss,point,groups]

(a) Peak host memory of a streaming rank under a memory limit: for each size (GiB) a token file of
    random uint16 ids (written, real I/O), `landscape surface --dataset tokens:FILE --seq_len 1024
    --batch_size 256`, every block of the file evaluated, 2 points (x = 0, 1), in a fresh process whose
    address space may grow by `--limit_mib` (default 100 MiB; RLIMIT_AS set after torch and MPI
    are imported, inherited by the DataLoader worker) so that the file is >= 10x the limit (held
    in memory the blocks take 4x the file, int64). `--data_in_memory auto` must choose streaming;
    `yes` under the same limit must be refused in one line, exit 2 (checked on the first size).
    Measured: the rank's RSS before the run and its peak growth during it (VmHWM after the run,
    reset to VmRSS before it by writing 5 to /proc/self/clear_refs: exact); the DataLoader
    worker's RSS when first seen (sampled every 50 ms; the pages it shares with the rank since
    the fork count) and its peak (its VmHWM, last seen within 50 ms of its end); and the peak of
    the summed PSS of the rank and its child processes (/proc/PID/smaps_rollup, sampled every 50
    ms; a page shared by n processes counts 1/n in each) over the same sum before the run (the
    rank and MPI's singleton helper, orted): the host memory the run added, workers included.
    Not ru_maxrss: on Linux a child started by vfork+exec (subprocess) inherits the parent's peak
    in it, and a forked worker's starts at the rank's RSS.
    The model (`idsum`) and metric (`idsum_metric`) are a sum of ids times one weight: a pass
    costs what reading the data costs, so that all of it can be evaluated; the value at x = 0 is
    checked against the same mean computed here from the file.
(b) Per-point cost: the surface evaluator (core.evaluate) of the same model and data, held and
    streamed, timed in one process in alternation (3 points a call, `--repeat` calls each, after
    one warm-up); the figure is the median streamed time over the median held time: digits CNN on
    the 1438 digits, ResNet-20 on 1000 CIFAR-format images (5 pickled files, as CIFAR-10's),
    lm_tiny on 256 blocks of 128 tokens of a real (random-id) token file.
(c) Points/s of a 9x9 digits CNN surface (all 1438 train images) under `mpirun -n P` with
    `--ranks_per_point G`, the CLI's own points/s (start-up left out), over the same P with G = 1.
Every CLI run has its evaluation fixed (1 point per pass, no channels-last, no compile): no
start-up measurement runs (its K stacked points would count in (a)). The files of (a) are written
into --tmp (default: the system's temporary folder) one at a time and deleted after their run.
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
import json, os, resource, sys, threading, time
import h5py, torch, mpi4py.MPI  # imported (MPI initialized) before the limit, as are the modules of a run
import landscape.api, landscape.engine, landscape.core.data, landscape.core.tasks, landscape.core.evaluate
from landscape.cli import main


def field(pid, name, file="status"):
    try:
        with open(f"/proc/{pid}/{file}") as fh:
            return next(int(line.split()[1]) * 1024 for line in fh if line.startswith(name + ":"))
    except (OSError, StopIteration):
        return 0


def family(pid):
    out = [pid]
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                for child in fh.read().split():
                    out += family(int(child))
    except OSError:
        pass
    return out


peak = {"pss": 0, "processes": 1}
workers = {}  # pid: [VmRSS when first seen, VmHWM when last seen], of the processes the run starts
before = set()  # the processes there before the run: this one, MPI's singleton helper (orted)
done = threading.Event()


def sample():
    while not done.is_set():
        pids = family(os.getpid())
        peak["pss"] = max(peak["pss"], sum(field(p, "Pss", "smaps_rollup") for p in pids))
        peak["processes"] = max(peak["processes"], len(pids))
        for p in (p for p in pids if before and p not in before):
            hwm = field(p, "VmHWM")
            if hwm:
                workers.setdefault(p, [field(p, "VmRSS"), 0])[1] = hwm
        time.sleep(0.05)


sampler = threading.Thread(target=sample, daemon=True)
sampler.start()  # its stack is in the address space before the limit
time.sleep(0.2)
before.update(family(os.getpid()))
pss0, rss0 = sum(field(p, "Pss", "smaps_rollup") for p in before), field(os.getpid(), "VmRSS")
with open("/proc/self/clear_refs", "w") as fh:  # VmHWM := VmRSS (Linux >= 4.0): the peak of the run alone
    fh.write("5")
limit = field("self", "VmSize") + int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
t0 = time.perf_counter()
rc = main(sys.argv[2:])
seconds = time.perf_counter() - t0
done.set()
sampler.join()
print("PROBE", json.dumps({
    "rank_before": rss0, "rank_growth": field(os.getpid(), "VmHWM") - rss0,
    "worker_at_start": max((w[0] for w in workers.values()), default=0),
    "worker_peak": max((w[1] for w in workers.values()), default=0),
    "worker_growth": max((w[1] - w[0] for w in workers.values()), default=0),
    "pss_growth": peak["pss"] - pss0, "processes": peak["processes"], "seconds": seconds}))
sys.exit(rc)
"""


def idsum():
    """The cheapest model of token blocks: (batch, 1) = the sum of each block's ids times one weight
    (`--model data_scale:idsum`); a (1, 1) Linear, so that the direction has a filter to normalize."""
    import torch

    class IdSum(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.w = torch.nn.Linear(1, 1, bias=False)

        def forward(self, ids):
            return self.w(ids.sum(1, keepdim=True).float() / ids.shape[1])

    return IdSum()


def idsum_metric(outputs, batch):
    """`--task data_scale:idsum_metric`: loss = the mean output per block (a cheap, exact metric)."""
    return {"loss": (outputs.double().sum(), len(outputs))}


def write_tokens(path: Path, gib: int, seed: int) -> int:
    """`gib` GiB of random uint16 ids (0..65535), written 64 MiB at a time; the number of ids."""
    rng = np.random.default_rng(seed)
    n = (gib << 30) // 2
    with open(path, "wb") as fh:
        for lo in range(0, n, 32 << 20):
            fh.write(rng.integers(0, 1 << 16, size=min(32 << 20, n - lo), dtype=np.uint16).tobytes())
    return n


def probe(limit: int, args: list[str]):
    return subprocess.run([sys.executable, "-c", PROBE, str(limit), "surface", *args], env=ENV, cwd=ROOT,
                          capture_output=True, text=True)


def rss(tmp: Path, sizes: list[int], limit_mib: int) -> list[dict]:
    out = []
    limit = limit_mib << 20
    for k, gib in enumerate(sizes):
        f = tmp / f"train_{gib}.bin"
        n = write_tokens(f, gib, seed=gib)
        blocks = n // 1024
        args = ["--model", "data_scale:idsum", "--task", "data_scale:idsum_metric", "--dataset", f"tokens:{f}",
                "--seq_len", "1024", "--batch_size", "256", "--x=0:1:2", *FLAGS, "--surf_file", str(tmp / f"rss_{gib}.h5")]
        if k == 0:  # held under the same limit: refused before any work
            p = probe(limit, [*args, "--data_in_memory", "yes"])
            lines = [line for line in p.stderr.splitlines() if line.strip()]
            assert p.returncode == 2 and len(lines) == 1, p.stderr
            refusal = lines[0]
        p = probe(limit, [*args, "--data_in_memory", "auto"])
        assert p.returncode == 0, p.stderr
        assert "streamed from disk at every point" in p.stderr, p.stderr
        m = json.loads(p.stdout.split("PROBE")[-1])
        import h5py

        with h5py.File(tmp / f"rss_{gib}.h5") as h:
            value = float(h["train/loss"][...].ravel()[0])  # x = 0: θ*
        ids = np.memmap(f, dtype=np.uint16, mode="r")  # the reference: the mean block sum over every block
        total = sum(int(ids[i : i + (64 << 20)].sum(dtype=np.int64)) for i in range(0, blocks * 1024, 64 << 20))
        del ids
        w = float(idsum().w.weight.detach().double())  # θ* (the point is the origin)
        ref = w * total / 1024 / blocks
        row = {"file_gib": gib, "tokens_evaluated": blocks * 1024, "share_evaluated": blocks * 1024 / n,
               "limit_mib": limit_mib, "held_would_take_gib": blocks * 1024 * 8 / (1 << 30),
               "rank_rss_before_mib": m["rank_before"] / (1 << 20),
               "rank_peak_rss_growth_mib": m["rank_growth"] / (1 << 20),
               "worker_rss_first_seen_mib": m["worker_at_start"] / (1 << 20),
               "worker_peak_rss_mib": m["worker_peak"] / (1 << 20),
               "worker_peak_rss_growth_mib": m["worker_growth"] / (1 << 20),
               "rank_and_workers_peak_pss_growth_mib": m["pss_growth"] / (1 << 20),
               "processes": m["processes"], "seconds": m["seconds"],
               "value_relative_error": abs(value - ref) / abs(ref)}
        (tmp / f"rss_{gib}.h5").unlink()
        f.unlink()
        out.append(row)
        print(row, flush=True)
    return out, refusal


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
    ap.add_argument("--sizes", default="1,2,4")
    ap.add_argument("--limit_mib", type=int, default=100, help="(a): the address space a run may add after imports")
    ap.add_argument("--tmp", default=None, help="the folder of (a)'s token files (default: the system's)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--parts", default="rss,point,groups", help="which of (a), (b), (c) to run (the others are kept "
                    "from the results file)")
    args = ap.parse_args()
    parts = args.parts.split(",")
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(dir=args.tmp) as d:
        tmp = Path(d)
        out = ROOT / "bench" / "results" / "data_scale.json"
        result = json.loads(out.read_text()) if out.is_file() else {}
        result["machine"] = f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"
        if "rss" in parts:
            result["peak_rss"], result["held_refused_under_the_limit"] = rss(tmp, [int(s) for s in args.sizes.split(",")],
                                                                             args.limit_mib)
        if "point" in parts:
            result["per_point"] = per_point(tmp, args.repeat)
        if "groups" in parts:
            result["ranks_per_point"] = groups(tmp)
    out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
