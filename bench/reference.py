"""Side by side with the reference tool (github: tomgoldstein/loss-landscape) on the same job, and
landscape's fraction of the machine's peak.

    .venv/bin/python bench/reference.py --reference /path/to/loss-landscape   # writes bench/results/reference.json

The job, the same for both tools: ResNet-20 of the reference tool's zoo (landscape's `resnet20` has
the same tensor names and shapes, checked here, and θ* is one checkpoint file both load), 1000
CIFAR-shaped images written in the CIFAR-10 python format (random pixels and labels), batch 128,
train loss and accuracy on an 11×11 grid (`--x=-1:1:11 --y=-1:1:11`), filter-normalized
directions with biasbn ignored, 2 MPI ranks each (`mpirun -n 2`, one torch thread per rank for
both), the whole process timed (wall clock of each `mpirun`).

- Same images: landscape reads the CIFAR-10 files (its own normalization constants); the
  reference gets landscape's normalized tensors through its `--trainloader` (a torch.save'd
  DataLoader, batch 128, shuffle=False), which bypasses its torchvision dataset.
- Same directions: the reference draws its own and writes its direction file; landscape
  imports that file (`landscape import-directions`) and runs with `--dir_file --dir_type weights`,
  so both compute the same surface; the largest difference of the train losses is reported.
- The reference runs unmodified through bench/reference_runner.py (environment-level fixes only).
- Then landscape again with hand-picked flags (`--channels_last`, `--compile --channels_last`,
  `--points_per_pass 4`), back to back, so the default can be set against the best of them.
- Fraction of peak: ResNet-20's multiply-adds per image (forward hooks over conv and linear
  layers) × images × points / seconds of the whole default-options process, against a measured
  peak: a 4096² float32 matrix multiply with as many torch threads as the job's ranks (best of 5).

Without a checkout (`--reference` missing or not a checkout) the comparison is skipped with a
message and only landscape's runs (with its own random directions) and the peak are measured.
The machine may be shared: the load average is recorded before and after.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pickle
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
PY = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable
RUNNER = str(ROOT / "bench" / "reference_runner.py")
FLAGS = {"default": [],  # the hand-picked sets pin every choice, so those runs measure nothing at start-up
         "channels_last": ["--channels_last", "--no-compile", "--points_per_pass", "1"],
         "compile_channels_last": ["--compile", "--channels_last", "--points_per_pass", "1"],
         "points_per_pass_4": ["--points_per_pass", "4", "--no-channels_last", "--no-compile"],
         "channels_last_no_fold": ["--channels_last", "--no-compile", "--points_per_pass", "1", "--no-fold_bn"],
         "plain": ["--no-channels_last", "--no-compile", "--points_per_pass", "1", "--no-fold_bn"]}
DIRECTIONS = ["--xnorm", "filter", "--xignore", "biasbn", "--ynorm", "filter", "--yignore", "biasbn"]


def mpi_env(threads: int = 1) -> dict:
    """scripts/mpi_env.sh's settings, one thread per rank for torch and BLAS."""
    return dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
                OMPI_MCA_rmaps_base_oversubscribe="1", OMPI_MCA_btl_vader_single_copy_mechanism="none",
                OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS=str(threads), HDF5_USE_FILE_LOCKING="FALSE",
                PATH=f"{ROOT / '.venv' / 'bin'}:{os.environ.get('PATH', '')}", PYTHONPATH=str(ROOT))


def write_cifar(root: Path, n_train: int, n_test: int, seed: int = 0) -> Path:
    """root/cifar-10-batches-py in the CIFAR-10 python format: data_batch_1..5 (n_train / 5 images
    each) and test_batch, pickled dicts with b'data' uint8 (N, 3072), b'labels', b'filenames'."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(seed)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for k, name in enumerate(names):
        n = n_test if name == "test_batch" else n_train // 5 + (k < n_train % 5)
        data = rng.randint(0, 256, size=(n, 3072)).astype(np.uint8)
        labels = rng.randint(0, 10, size=n).tolist()
        with open(folder / name, "wb") as fh:
            pickle.dump({b"batch_label": name.encode(), b"labels": labels, b"data": data,
                         b"filenames": [f"{name}_{i}.png".encode() for i in range(n)]}, fh, protocol=2)
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"class"] * 10}))
    return root


def reference_resnet20(reference: Path) -> nn.Module:
    """ResNet20 of the reference's cifar10/models/resnet.py (imports only torch), loaded from its file."""
    spec = importlib.util.spec_from_file_location("reference_resnet", reference / "cifar10" / "models" / "resnet.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ResNet20()


def check_models(reference: Path, ours: nn.Module, inputs: torch.Tensor) -> dict:
    """The two zoos' ResNet-20: the same state_dict names, shapes and order, and the same outputs
    from the same checkpoint."""
    theirs = reference_resnet20(reference)
    a, b = ours.state_dict(), theirs.state_dict()
    same_names = list(a) == list(b)
    same_shapes = same_names and all(a[k].shape == b[k].shape for k in a)
    same_parameters = [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    if not (same_names and same_shapes and same_parameters):
        raise SystemExit(f"the state_dicts differ: ours {len(a)} tensors, the reference's {len(b)}; "
                         f"names equal: {same_names}, shapes equal: {same_shapes}")
    theirs.load_state_dict(a)
    with torch.no_grad():
        diff = (ours.eval()(inputs) - theirs.eval()(inputs)).abs().max().item()
    return {"tensors": len(a), "parameters": sum(p.numel() for p in ours.parameters()), "same_names_shapes": True,
            "output_max_abs_diff": diff}


def macs_per_image(model: nn.Module) -> int:
    """Multiply-adds of one forward pass of one 3×32×32 image: conv and linear layers (forward hooks)."""
    total = [0]

    def hook(module, args, out):
        if isinstance(module, nn.Conv2d):
            k = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            total[0] += out[0].numel() * k
        elif isinstance(module, nn.Linear):
            total[0] += module.in_features * module.out_features
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, 32, 32))
    for h in handles:
        h.remove()
    return total[0]


def peak_macs(threads: int, n: int = 4096, repeat: int = 5) -> float:
    """Multiply-adds per second of an n×n float32 matrix multiply with `threads` torch threads, best of `repeat`."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = min(timed(lambda: torch.mm(a, b)) for _ in range(repeat))
    torch.set_num_threads(before)
    return n ** 3 / best


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run(cmd: list[str], env: dict) -> tuple[float, str]:
    """(wall seconds of the whole command, its output); fails with the output's tail."""
    t0 = time.perf_counter()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    text = out.stdout + out.stderr
    if out.returncode:
        raise SystemExit(f"failed ({out.returncode}): {' '.join(cmd)}\n{text[-4000:]}")
    return seconds, text


def notes(text: str) -> list[str]:
    """landscape's own lines about its choices (configuration, data held or streamed)."""
    return [line.strip() for line in text.splitlines() if line.startswith("[landscape]")]


def load_average() -> list[float]:
    return list(os.getloadavg())


def is_checkout(path: str | None) -> bool:
    return bool(path) and (Path(path) / "plot_surface.py").is_file() and (Path(path) / "cifar10" / "models").is_dir()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reference", help="path to a checkout of github.com/tomgoldstein/loss-landscape")
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--side", type=int, default=11, help="grid side: --x=-1:1:SIDE --y=-1:1:SIDE")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--flags", default="default,channels_last,compile_channels_last,points_per_pass_4",
                   help=f"landscape runs, in this order, among: {', '.join(FLAGS)}")
    p.add_argument("--work", help="folder for the data and files (default: a temporary one, removed)")
    p.add_argument("--output", default=str(ROOT / "bench" / "results" / "reference.json"))
    args = p.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-reference-"))
    work.mkdir(parents=True, exist_ok=True)
    env = mpi_env()
    mpirun = ["mpirun", "-n", str(args.ranks)]
    grid = [f"--x=-1:1:{args.side}", f"--y=-1:1:{args.side}"]
    points = args.side ** 2
    result = {"machine": platform.machine(), "cpus": os.cpu_count(), "torch": torch.__version__,
              "job": {"model": "resnet20", "images": args.images, "batch": args.batch, "grid": f"{args.side}x{args.side}",
                      "ranks": args.ranks, "torch_threads_per_rank": 1}, "load_average_before": load_average()}
    sys.path.insert(0, str(ROOT))
    from landscape.core.data import load_dataset
    from landscape.core.models import build_model

    write_cifar(work, args.images, 100)
    model = build_model("resnet20", seed=0)
    ckpt = work / "resnet20.pt"
    torch.save(model.state_dict(), ckpt)
    train = load_dataset("cifar10", data_dir=str(work), splits=["train"])["train"]
    result["macs_per_image"] = macs_per_image(model)

    reference = Path(args.reference).resolve() if args.reference else None
    compare = is_checkout(args.reference)
    if not compare:
        print(f"reference tool not found ({args.reference or 'no --reference given'}): a checkout of "
              "github.com/tomgoldstein/loss-landscape is needed for the comparison; it is skipped, "
              "landscape's runs use its own directions", file=sys.stderr)
    dir_args = DIRECTIONS
    if compare:
        result["models"] = check_models(reference, model, train.inputs[:16])
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(train.inputs, train.labels),
                                             batch_size=args.batch, shuffle=False, num_workers=0)
        torch.save(loader, work / "trainloader.pt")
        torch.save(loader, work / "testloader.pt")  # required by its --trainloader; not evaluated
        ref_surf = work / "reference_surface.h5"
        cmd = mpirun + [PY, RUNNER, str(reference), "--mpi", "--model", "resnet20", "--model_file", str(ckpt), *grid,
                        *DIRECTIONS, "--batch_size", str(args.batch), "--trainloader", str(work / "trainloader.pt"),
                        "--testloader", str(work / "testloader.pt"), "--surf_file", str(ref_surf)]
        print("reference:", " ".join(cmd), flush=True)
        seconds, text = run(cmd, dict(env, REFERENCE_RUNNER_VERBOSE="1"))
        ref_dirs = next(work.glob("resnet20.pt_weights*.h5"))
        result["reference"] = {"seconds": seconds, "command": " ".join(cmd), "direction_file": ref_dirs.name,
                               "log": [line for line in text.splitlines() if "reference_runner" in line or " done!" in line],
                               "load_average_after": load_average()}
        print(f"  {seconds:.1f} s", flush=True)
        run([PY, "-m", "landscape", "import-directions", str(ref_dirs), "--model", "resnet20",
             "--out", str(work / "dirs.h5")], env)
        dir_args = ["--dir_file", str(work / "dirs.h5"), "--dir_type", "weights"]

    runs = {}
    for name in args.flags.split(","):
        surf = work / f"landscape_{name}.h5"
        cmd = mpirun + [PY, "-m", "landscape", "surface", "--model", "resnet20", "--model_file", str(ckpt),
                        "--dataset", "cifar10", "--data_dir", str(work), "--splits", "train", *grid, *dir_args,
                        "--batch_size", str(args.batch), "--surf_file", str(surf), "--no-plot", "--no-progress",
                        *FLAGS[name]]
        print(f"landscape {name}:", " ".join(cmd), flush=True)
        seconds, text = run(cmd, env)
        with h5py.File(surf) as f:
            run_options = json.loads(f.attrs["run_options"])
            loss, acc = f["train/loss"][...], f["train/acc"][...]
        runs[name] = {"seconds": seconds, "flags": FLAGS[name], "command": " ".join(cmd), "notes": notes(text),
                      "run_options": run_options, "load_average_after": load_average()}
        print(f"  {seconds:.1f} s; " + "; ".join(n for n in notes(text) if "configuration" in n), flush=True)
        if compare:
            with h5py.File(ref_surf) as f:  # its (len(x), len(y)) array is filled in meshgrid(x, y) order: (y, x)
                ref_loss, ref_acc = f["train_loss"][...], f["train_acc"][...]
                assert np.array_equal(f["xcoordinates"][...], np.linspace(-1, 1, args.side))
            runs[name]["train_loss_max_abs_diff"] = float(np.abs(loss - ref_loss).max())
            runs[name]["train_loss_max_rel_diff"] = float((np.abs(loss - ref_loss) / np.abs(ref_loss)).max())
            runs[name]["train_acc_max_abs_diff"] = float(np.abs(acc - ref_acc).max())
            runs[name]["train_loss_range"] = [float(ref_loss.min()), float(ref_loss.max())]
    result["landscape"] = runs
    peak = peak_macs(args.ranks)
    result["peak_macs_per_s"] = peak
    result["peak_threads"] = args.ranks
    work_macs = result["macs_per_image"] * len(train) * points
    for r in runs.values():
        r["macs_per_s"] = work_macs / r["seconds"]
        r["fraction_of_peak"] = r["macs_per_s"] / peak
        if compare:
            r["reference_over_landscape"] = result["reference"]["seconds"] / r["seconds"]
    if compare:
        result["reference"]["macs_per_s"] = work_macs / result["reference"]["seconds"]
        result["reference"]["fraction_of_peak"] = result["reference"]["macs_per_s"] / peak
    best = min((n for n in runs if n != "default"), key=lambda n: runs[n]["seconds"], default=None)
    if best and "default" in runs:
        result["best_hand_picked"] = best
        result["default_over_best_hand_picked"] = runs["default"]["seconds"] / runs[best]["seconds"]
    result["load_average_after"] = load_average()
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")

    print(f"\nResNet-20, {len(train)} images, batch {args.batch}, {args.side}x{args.side} grid, {args.ranks} ranks; "
          f"{result['macs_per_image'] / 1e6:.1f} M multiply-adds per image; peak {peak / 1e9:.1f} G multiply-adds/s "
          f"({args.ranks} threads, 4096² float32 matmul); load average {result['load_average_before'][0]:.2f} before, "
          f"{result['load_average_after'][0]:.2f} after")
    if compare:
        r = result["reference"]
        print(f"{'reference tool':28s} {r['seconds']:7.1f} s  {r['fraction_of_peak']:6.1%} of peak")
    for name, r in runs.items():
        vs = f"  reference / this: {r['reference_over_landscape']:.2f}x" if compare else ""
        diff = f"  max |Δ train loss| {r['train_loss_max_abs_diff']:.1e}" if compare else ""
        print(f"landscape {name:18s} {r['seconds']:7.1f} s  {r['fraction_of_peak']:6.1%} of peak{vs}{diff}")
    if best:
        print(f"default / best hand-picked ({best}): {result['default_over_best_hand_picked']:.3f}")
    print(f"written: {out}")
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
