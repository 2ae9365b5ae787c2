"""Command line: `landscape surface|plot|train ...` (plot_surface.py is `landscape surface`)."""
from __future__ import annotations

import argparse
import sys

from .errors import EXIT_USER_ERROR, UserError

GRID_FLAGS = ("--x", "--y")


def join_grid_values(argv: list[str]) -> list[str]:
    """Accept `--x -1:1:51` as well as `--x=-1:1:51` (argparse takes -1:1:51 for a flag)."""
    out, i = [], 0
    while i < len(argv):
        if argv[i] in GRID_FLAGS and i + 1 < len(argv):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def parser() -> argparse.ArgumentParser:
    from .config import add_job_arguments

    p = argparse.ArgumentParser(prog="landscape", description="Loss landscapes of neural networks (Li et al. 2018).")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("surface", help="compute (or resume) a 1D/2D loss surface; MPI-aware")
    add_job_arguments(s)
    pl = sub.add_parser("plot", help="draw every figure a surface file supports")
    pl.add_argument("surf_file")
    pl.add_argument("--out_dir", default=None, help="folder for the figures (default: the file's folder)")
    pl.add_argument("--format", default="png,pdf", help="comma-separated formats: png, pdf, svg")
    pl.add_argument("--vmin", type=float, default=None)
    pl.add_argument("--vmax", type=float, default=None)
    pl.add_argument("--vlevel", type=float, default=None)
    pl.add_argument("--log", action="store_true", help="log10 of the loss")
    pl.add_argument("--cmap", default="viridis")
    pl.add_argument("--dpi", type=int, default=150)
    t = sub.add_parser("train", help="train a demo model and save a checkpoint per epoch")
    t.add_argument("--model", default="digits_cnn")
    t.add_argument("--dataset", default="digits")
    t.add_argument("--out_dir", default="out/demo/checkpoints")
    t.add_argument("--epochs", type=int, default=10)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--lr", type=float, default=0.05)
    t.add_argument("--batch_size", type=int, default=64)
    return p


def run(argv: list[str]) -> int:
    args = parser().parse_args(join_grid_values(argv))
    if args.command == "surface":
        from .config import job_from_args
        from .surface import run_job

        return run_job(job_from_args(args))
    if args.command == "plot":
        from .plot import plot_file

        paths = plot_file(args.surf_file, args.out_dir, formats=tuple(args.format.split(",")), vmin=args.vmin,
                          vmax=args.vmax, vlevel=args.vlevel, log=args.log, cmap=args.cmap, dpi=args.dpi)
        print(f"[landscape] {len(paths)} figures in {paths[0].parent if paths else args.out_dir}")
        return 0
    if args.command == "train":
        from .train import train

        train(model=args.model, dataset=args.dataset, out_dir=args.out_dir, epochs=args.epochs, seed=args.seed,
              lr=args.lr, batch_size=args.batch_size)
        return 0
    return 2


def rank() -> int:
    if "mpi4py.MPI" not in sys.modules:
        return 0
    from mpi4py import MPI

    return MPI.COMM_WORLD.rank


def main(argv: list[str] | None = None) -> int:
    """Entry point: a user mistake prints one line and exits 2; under MPI an unexpected
    error on one rank aborts the whole job (no rank hangs), and the file stays resumable."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        return run(argv)
    except UserError as exc:
        if not (getattr(exc, "shared", False) and rank() != 0):
            print(f"landscape: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except BaseException:
        if "mpi4py.MPI" in sys.modules:
            from mpi4py import MPI

            if MPI.COMM_WORLD.size > 1:
                import traceback

                traceback.print_exc()
                sys.stderr.flush()
                MPI.COMM_WORLD.Abort(1)
        raise


def surface_main() -> int:
    return main(["surface", *sys.argv[1:]])
