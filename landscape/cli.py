"""Command line: `landscape surface|plot|vtk|info|train|import-directions|export-reference|hessian ...`
(plot_surface.py is `landscape surface`)."""
from __future__ import annotations

import argparse
import os
import sys

from .errors import EXIT_USER_ERROR, UserError, storage_problem

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
    pl = sub.add_parser("plot", help="draw every figure a surface file supports (or compare files side by side)")
    pl.add_argument("surf_files", nargs="+", metavar="surf_file", help="one or more surface files")
    pl.add_argument("--out_dir", default=None, help="folder for the figures (default: the file's folder)")
    pl.add_argument("--format", default="png,pdf", help="comma-separated formats: png, pdf, svg")
    pl.add_argument("--vmin", type=float, default=None, help="lowest loss level (default: the minimum)")
    pl.add_argument("--vmax", type=float, default=None, help="highest loss level (default: 75th percentile)")
    pl.add_argument("--vlevel", type=float, default=None, help="spacing of loss levels (decades with --log)")
    pl.add_argument("--log", action="store_true", help="log10 of the loss")
    pl.add_argument("--cmap", default="viridis", help="a matplotlib colormap")
    pl.add_argument("--dpi", type=int, default=150, help="resolution of raster formats")
    pl.add_argument("--kinds", default=None,
                    help="comma-separated: 1d, contour, contourf, heat, 3d, trajectory, hessian (default: all the file supports)")
    pl.add_argument("--splits", default=None, help="comma-separated splits (default: all)")
    pl.add_argument("--metrics", default=None, help="comma-separated: loss, acc (default: both)")
    pl.add_argument("--compare", action="store_true", help="one figure with a panel per file on one colour scale")
    pl.add_argument("--titles", default=None, help="with --compare: comma-separated panel titles, one per file")
    vt = sub.add_parser("vtk", help="export a 2D surface for ParaView (.vtu, written with meshio)")
    vt.add_argument("surf_file")
    vt.add_argument("--out", default=None, help="the .vtu (or legacy .vtk) file (default: <stem>.vtu next to the file)")
    vt.add_argument("--split", default=None, help="split whose loss is z (default: the first, train)")
    vt.add_argument("--log", action="store_true", help="z = log10 loss")
    vt.add_argument("--zscale", type=float, default=1.0, help="z = zscale * loss (or * log10 loss)")
    inf = sub.add_parser("info", help="a short summary of a surface file: grid, completion, minima, sharpness, provenance")
    inf.add_argument("surf_file")
    t = sub.add_parser("train", help="train a demo model and save a checkpoint per epoch")
    t.add_argument("--model", default="digits_cnn")
    t.add_argument("--dataset", default="digits")
    t.add_argument("--out_dir", default="out/demo/checkpoints")
    t.add_argument("--epochs", type=int, default=10)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--lr", type=float, default=0.05)
    t.add_argument("--batch_size", type=int, default=64)
    im = sub.add_parser("import-directions", help="convert a direction file of the reference tool into a --dir_file")
    im.add_argument("ref_file", help="the reference's direction file (groups xdirection, ydirection)")
    im.add_argument("--model", required=True, help="the model the file was made for: names the tensor positions")
    im.add_argument("--out", required=True, help="the directions file to write (a --dir_file)")
    im.add_argument("--dir_type", default="auto", choices=("auto", "weights", "states"),
                    help="tensor order of the file (auto: the one whose count and shapes fit)")
    im.add_argument("--force", action="store_true", help="overwrite --out")
    ex = sub.add_parser("export-reference", help="write a surface file under the reference tool's key names")
    ex.add_argument("surf_file")
    ex.add_argument("out_file")
    ex.add_argument("--model", default=None, help="with --dir_out: the model that orders the directions")
    ex.add_argument("--dir_out", default=None, help="also write the directions as a reference direction file")
    ex.add_argument("--force", action="store_true", help="overwrite the output files")
    he = sub.add_parser("hessian", help="Hessian λmax, λmin, |λmin/λmax| maps over a surface's grid; MPI-aware")
    he.add_argument("surf_file", help="a surface file written by `landscape surface` (model, data, directions come from it)")
    he.add_argument("--stride", type=int, default=1, help="every K-th point of each axis (K must divide num - 1)")
    he.add_argument("--subset", type=int, default=512, help="train examples (seeded draw); 0: the whole split")
    he.add_argument("--tol", type=float, default=1e-3, help="each end: residual <= tol*|λ| + 1e-5*max|λ|")
    he.add_argument("--max_iter", type=int, default=100, help="at most this many Hessian-vector products per point")
    he.add_argument("--batch_size", type=int, default=512, help="examples per Hessian-vector product batch")
    he.add_argument("--force", action="store_true", help="recompute the file's Hessian map (clears only /hessian)")
    he.add_argument("--threads", type=int, default=0, help="torch threads per rank (0: cores per node / ranks)")
    he.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    he.add_argument("--plot", action=argparse.BooleanOptionalAction, default=True, help="figures when complete")
    he.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True)
    return p


def run(argv: list[str]) -> int:
    args = parser().parse_args(join_grid_values(argv))
    if args.command == "surface":
        from .config import job_from_args
        from .surface import run_job

        return run_job(job_from_args(args))
    if args.command == "plot":
        from .plot import compare_files, plot_file

        opts = dict(formats=args.format, vmin=args.vmin, vmax=args.vmax, vlevel=args.vlevel, log=args.log,
                    cmap=args.cmap, dpi=args.dpi, kinds=args.kinds, splits=args.splits, metrics=args.metrics)
        if args.compare:
            paths = compare_files(args.surf_files, args.out_dir, titles=args.titles, **opts)
        elif args.titles is not None:
            raise UserError("--titles goes with --compare: add --compare to draw the files side by side")
        else:
            paths = [p for f in args.surf_files for p in plot_file(f, args.out_dir, **opts)]
        print(f"[landscape] {len(paths)} figures in {', '.join(sorted({str(p.parent) for p in paths})) or '-'}")
        return 0
    if args.command == "vtk":
        from .export import write_vtk

        out = write_vtk(args.surf_file, args.out, log=args.log, zscale=args.zscale, split=args.split)
        print(f"[landscape] {out}")
        return 0
    if args.command == "info":
        from .info import info

        print(info(args.surf_file))
        return 0
    if args.command == "train":
        from .train import train

        train(model=args.model, dataset=args.dataset, out_dir=args.out_dir, epochs=args.epochs, seed=args.seed,
              lr=args.lr, batch_size=args.batch_size)
        return 0
    if args.command == "import-directions":
        from .models import build_model
        from .reference import import_directions

        kind, n = import_directions(args.ref_file, args.out, build_model(args.model), model_name=args.model,
                                    dir_type=args.dir_type, force=args.force)
        print(f"[landscape] {n} {kind} direction(s) in {args.out}: use --dir_file {args.out} --dir_type {kind}")
        return 0
    if args.command == "export-reference":
        from .reference import export_surface

        model = None
        if args.model:
            from .models import build_model

            model = build_model(args.model)
        keys = export_surface(args.surf_file, args.out_file, model=model, dir_out=args.dir_out, force=args.force)
        print(f"[landscape] {args.out_file}: {', '.join(keys)}")
        return 0
    if args.command == "hessian":
        from .hessian import run_hessian_job

        return run_hessian_job(args)
    return 2


def rank() -> int:
    if "mpi4py.MPI" not in sys.modules:
        return 0
    from mpi4py import MPI

    return MPI.COMM_WORLD.rank


def out_of_memory(exc: BaseException) -> bool:
    """GPU (torch.OutOfMemoryError) or host (MemoryError, torch's CPU allocator) memory exhausted."""
    return (isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError"
            or (isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc)))


def fail_every_rank(message: str) -> int:
    """Print one error line; under MPI stop the other ranks too (they would wait for this one)."""
    print(f"landscape: error: {message}", file=sys.stderr)
    sys.stderr.flush()
    if "mpi4py.MPI" in sys.modules:
        from mpi4py import MPI

        if MPI.COMM_WORLD.size > 1:
            MPI.COMM_WORLD.Abort(EXIT_USER_ERROR)
    return EXIT_USER_ERROR


def main(argv: list[str] | None = None) -> int:
    """Entry point: a user mistake prints one line and exits 2; under MPI an unexpected
    error on one rank aborts the whole job (no rank hangs), and the file stays resumable."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("surface", "hessian"):
        from .engine import install_stop_handlers

        install_stop_handlers()
    try:
        return run(argv)
    except UserError as exc:
        if not (getattr(exc, "shared", False) and rank() != 0):
            print(f"landscape: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except BrokenPipeError:  # `landscape info FILE | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:
        reason = storage_problem(exc)
        if reason is None:
            raise
        return fail_every_rank(f"cannot write ({reason}): free space or fix the permissions, then rerun the same "
                               "command: every point written so far is kept")
    except BaseException as exc:
        if out_of_memory(exc):
            return fail_every_rank("out of memory: lower --batch_size or --points_per_pass, or run fewer ranks per "
                                   "GPU, then rerun the same command: every point written so far is kept")
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
