"""Command line: `landscape surface|plot|vtk|info|report|train|corpus|import-directions|export-reference|hessian ...`
(plot_surface.py is `landscape surface`). The only module that prints; nothing imports it.

The job flags come from landscape.options (surface, hessian and train jobs); each command
calls the library, then prints and draws."""
from __future__ import annotations

import argparse
import difflib
import os
import sys

from ..errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_USER_ERROR, SharedUserError, UserError, storage_problem

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


class Parser(argparse.ArgumentParser):
    """argparse whose errors are one line: a UserError, which main prints before it exits 2."""

    def error(self, message):
        raise UserError(f"{message}: see {self.prog} --help")


def parser() -> Parser:
    from ..options import HessianJob, PlotJob, SharpnessJob, SpectrumJob, TrainJob, add_arguments, add_job_arguments

    p = Parser(prog="landscape", description="Loss landscapes of neural networks (Li et al. 2018).")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    p.commands = sub.choices
    s = sub.add_parser("surface", help="compute (or resume) a 1D/2D loss surface; MPI-aware")
    add_job_arguments(s)
    pl = sub.add_parser("plot", help="draw every figure a surface file supports (or compare files side by side)")
    pl.add_argument("surf_files", nargs="+", metavar="surf_file", help="one or more surface files")
    add_arguments(pl, PlotJob)
    vt = sub.add_parser("vtk", help="export a 2D surface for ParaView (.vtu, written with meshio)")
    vt.add_argument("surf_file")
    vt.add_argument("--out", default=None, help="the .vtu (or legacy .vtk) file (default: <stem>.vtu next to the file)")
    vt.add_argument("--split", default=None, help="split whose loss is z (default: the first, train)")
    vt.add_argument("--log", action="store_true", help="z = log10 loss")
    vt.add_argument("--zscale", type=float, default=1.0, help="z = zscale * loss (or * log10 loss)")
    inf = sub.add_parser("info", help="a short summary of a surface file: grid, completion, minima, sharpness, provenance")
    inf.add_argument("surf_file")
    rep = sub.add_parser("report", help="one self-contained interactive HTML page (Plotly, offline) of one or more "
                         "surface files, side by side on shared scales")
    rep.add_argument("surf_files", nargs="+", metavar="surf_file", help="one or more surface files")
    rep.add_argument("--out", default=None, help="the .html file (default: <stem>_report.html next to the first file)")
    rep.add_argument("--titles", default=None, help="comma-separated titles, one per file (default: the file names)")
    t = sub.add_parser("train", help="train a demo model and save a checkpoint per epoch")
    add_arguments(t, TrainJob)
    co = sub.add_parser("corpus", help="write the standard library's own source files as byte-level token files")
    co.add_argument("--out_dir", default="out/demo_lm/data", help="folder for stdlib_train.bin, stdlib_val.bin and "
                    "stdlib_manifest.json (default: %(default)s)")
    co.add_argument("--train_bytes", type=int, default=1_000_000, help="bytes (tokens) of the train split "
                    "(default: %(default)s)")
    co.add_argument("--val_bytes", type=int, default=100_000, help="bytes (tokens) of the val split "
                    "(default: %(default)s)")
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
    add_arguments(he, HessianJob)
    sp = sub.add_parser("spectrum", help="top-k eigenpairs, trace and spectral density (SLQ) of the Hessian at one "
                        "point of a surface; every rank shares the data")
    sp.add_argument("surf_file", help="a surface file written by `landscape surface` (model, data, directions come from it)")
    add_arguments(sp, SpectrumJob)
    sh = sub.add_parser("sharpness", help="worst-case sharpness at θ* (SAM's m-sharpness, adaptive, Keskar's), batch by "
                        "batch over the ranks; stored in the surface file")
    sh.add_argument("surf_file", help="a surface file written by `landscape surface` (model and data come from it)")
    add_arguments(sh, SharpnessJob)
    return p


def parse(argv: list[str]) -> argparse.Namespace:
    """The parsed arguments; an unknown command or flag is a UserError with the closest known one."""
    p = parser()
    if argv and not argv[0].startswith("-") and argv[0] not in p.commands:
        close = difflib.get_close_matches(argv[0], p.commands, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"choose one of {', '.join(p.commands)}"
        raise UserError(f"unknown command {argv[0]!r}: {hint}")
    args, extra = p.parse_known_args(join_grid_values(argv))
    flag = next((a.split("=")[0] for a in extra if a.startswith("-")), None)
    if flag:
        known = [s for s in p.commands[args.command]._option_string_actions if s.startswith("--")]
        close = difflib.get_close_matches(flag, known, n=1)
        raise UserError(f"unknown flag {flag}: " + (f"did you mean {close[0]}?" if close else
                                                    f"see landscape {args.command} --help"))
    if extra:
        raise UserError(f"unexpected argument(s) {' '.join(extra)}: see landscape {args.command} --help")
    return args


def run(argv: list[str]) -> int:
    args = parse(argv)
    if args.command == "surface":
        from ..options import job_from_args

        return surface(job_from_args(args))
    if args.command == "plot":
        from ..io.surface_file import is_ensemble
        from ..viz.ensemble_figures import compare_ensembles, plot_ensemble
        from ..viz.figures import compare_files, plot_file

        opts = dict(formats=args.format, vmin=args.vmin, vmax=args.vmax, vlevel=args.vlevel, log=args.log,
                    cmap=args.cmap, dpi=args.dpi, kinds=args.kinds, splits=args.splits, metrics=args.metrics)
        if args.compare and all(is_ensemble(f) for f in args.surf_files):
            titles = None if args.titles is None else [t.strip() for t in args.titles.split(",")]
            paths = compare_ensembles(args.surf_files, args.out_dir, titles=titles, formats=args.format, dpi=args.dpi)
        elif args.compare:
            paths = compare_files(args.surf_files, args.out_dir, titles=args.titles, **opts)
        elif args.titles is not None:
            raise UserError("--titles goes with --compare: add --compare to draw the files side by side")
        else:
            paths = [p for f in args.surf_files for p in (plot_ensemble(f, args.out_dir, formats=args.format, dpi=args.dpi)
                                                          if is_ensemble(f) else plot_file(f, args.out_dir, **opts))]
        print(f"[landscape] {len(paths)} figures in {', '.join(sorted({str(p.parent) for p in paths})) or '-'}")
        return 0
    if args.command == "vtk":
        from ..viz.vtk import write_vtk

        out = write_vtk(args.surf_file, args.out, log=args.log, zscale=args.zscale, split=args.split)
        print(f"[landscape] {out}")
        return 0
    if args.command == "info":
        from ..io.surface_file import is_ensemble
        from ..viz.ensemble_info import ensemble_info
        from ..viz.info import info

        print(ensemble_info(args.surf_file) if is_ensemble(args.surf_file) else info(args.surf_file))
        return 0
    if args.command == "report":
        from ..viz.report import default_out, report

        titles = None if args.titles is None else [t.strip() for t in args.titles.split(",")]
        out = report(args.surf_files, args.out or default_out(args.surf_files[0]), titles=titles)
        print(f"[landscape] report: {out}")
        return 0
    if args.command == "train":
        from ..core.train import train
        from ..options import TrainJob, from_namespace

        train(from_namespace(TrainJob, args), report=print)
        return 0
    if args.command == "corpus":
        from ..core.corpus import stdlib_corpus

        m = stdlib_corpus(args.out_dir, train_bytes=args.train_bytes, val_bytes=args.val_bytes)
        for name, split in m["splits"].items():
            print(f"[corpus] {name}: {split['bytes']} bytes of {split['n_files']} files -> {split['file']}")
        print(f"[corpus] Python {m['python']} standard library ({m['stdlib']}), fingerprint {m['fingerprint']}")
        return 0
    if args.command == "import-directions":
        from ..api import import_directions
        from ..core.models import build_model

        kind, n = import_directions(args.ref_file, args.out, build_model(args.model, task=None), model_name=args.model,
                                    dir_type=args.dir_type, force=args.force)
        print(f"[landscape] {n} {kind} direction(s) in {args.out}: use --dir_file {args.out} --dir_type {kind}")
        return 0
    if args.command == "export-reference":
        from ..api import export_reference

        model = None
        if args.model:
            from ..core.models import build_model

            model = build_model(args.model, task=None)  # an hf: model as it was saved
        keys = export_reference(args.surf_file, args.out_file, model=model, dir_out=args.dir_out, force=args.force)
        print(f"[landscape] {args.out_file}: {', '.join(keys)}")
        return 0
    if args.command == "hessian":
        from ..options import HessianJob, from_namespace

        return hessian(args.surf_file, from_namespace(HessianJob, args))
    if args.command == "sharpness":
        from ..options import SharpnessJob, from_namespace

        return sharpness(args.surf_file, from_namespace(SharpnessJob, args))
    if args.command == "spectrum":
        from ..options import SpectrumJob, from_namespace

        return spectrum(args.surf_file, from_namespace(SpectrumJob, args))
    return 2


def surface(job) -> int:
    """`landscape surface`: compute (or resume), then on rank 0 print the summary and draw."""
    from ..api import surface_job

    result = surface_job(job)
    summary = result.summary
    if rank() == 0:
        for note in result.notes:
            print(f"[landscape] {note}", file=sys.stderr)
        print(f"[landscape] {summary.text()}", file=sys.stderr)
        print(f"[landscape] surface file: {job.surf_file}")
        if job.plot and summary.complete and job.ensemble:
            from ..io.surface_file import read_ensemble
            from ..viz.ensemble_figures import plot_ensemble
            from ..viz.ensemble_info import summary_lines

            for line in summary_lines(read_ensemble(job.surf_file)):
                print(f"[landscape] {line.strip()}")
            figures = plot_ensemble(job.surf_file)
            print(f"[landscape] figures: {os.path.dirname(job.surf_file) or '.'}/ ({len(figures)} files)")
            print_report(job.surf_file)
        elif job.plot and summary.complete:
            from ..viz.figures import plot_file

            figures = plot_file(job.surf_file)
            print(f"[landscape] figures: {os.path.dirname(job.surf_file) or '.'}/ ({len(figures)} files)")
            print_report(job.surf_file)
    return EXIT_INTERRUPTED if summary.interrupted else EXIT_OK


def hessian(surf_file: str, opts) -> int:
    """`landscape hessian`: compute (or resume) the map, then on rank 0 print and draw."""
    from ..api import hessian_map
    from ..options import refuse_ignored_map

    refuse_ignored_map(opts)
    if opts.map != "extremes":
        return curvature_map(surf_file, opts)
    result = hessian_map(surf_file, stride=opts.stride, subset=opts.subset, tol=opts.tol, max_iter=opts.max_iter,
                         batch_size=opts.batch_size, force=opts.force, threads=opts.threads, device=opts.device,
                         progress=opts.progress, ranks_per_point=opts.ranks_per_point, params=opts.params,
                         exclude=opts.exclude)
    summary = result.summary
    if rank() == 0:
        print(f"[landscape] hessian: {summary.text()}", file=sys.stderr)
        if result.unconverged or result.nonfinite:
            print(f"[landscape] hessian: {result.unconverged} eigenvalue(s) not converged within --max_iter "
                  f"{opts.max_iter} (see hessian/residual_*), {result.nonfinite} point(s) with a non-finite loss (NaN)",
                  file=sys.stderr)
        if opts.plot and summary.complete:
            from ..viz.hessian_figures import plot_hessian

            figures = plot_hessian(surf_file)
            print(f"[landscape] hessian figures: {os.path.dirname(surf_file) or '.'}/ ({len(figures)} files)")
            print_report(surf_file)
    return EXIT_INTERRUPTED if summary.interrupted else EXIT_OK


def curvature_map(surf_file: str, opts) -> int:
    """`landscape hessian --map trace|topk`: compute (or resume) the map, then on rank 0 print and draw."""
    from ..api import curvature_map as run_map

    result = run_map(surf_file, kind=opts.map, stride=opts.stride, subset=opts.subset, k=opts.k, samples=opts.samples,
                     estimator=opts.estimator, curvature=opts.curvature, tol=opts.tol, max_iter=opts.max_iter,
                     batch_size=opts.batch_size, force=opts.force, threads=opts.threads, device=opts.device,
                     progress=opts.progress, ranks_per_point=opts.ranks_per_point, basis=opts.basis, start_vectors=opts.start_vectors,
                     params=opts.params, exclude=opts.exclude)
    summary = result.summary
    if rank() == 0:
        print(f"[landscape] {opts.map} map: {summary.text()}", file=sys.stderr)
        if result.unconverged or result.nonfinite:
            print(f"[landscape] {opts.map} map: {result.unconverged} eigenvalue(s) not converged within --max_iter "
                  f"{opts.max_iter}, {result.nonfinite} point(s) with a non-finite loss (NaN)", file=sys.stderr)
        if opts.plot and summary.complete:
            from ..viz.spectrum_figures import plot_map

            figures = plot_map(surf_file, opts.map)
            print(f"[landscape] {opts.map} figures: {os.path.dirname(surf_file) or '.'}/ ({len(figures)} files)")
            print_report(surf_file)
    return EXIT_INTERRUPTED if summary.interrupted else EXIT_OK


def spectrum(surf_file: str, opts) -> int:
    """`landscape spectrum`: compute the spectrum at one point on every rank; rank 0 prints and draws."""
    from ..api import spectrum_job

    r = spectrum_job(surf_file, point=opts.point, subset=opts.subset, k=opts.k, tol=opts.tol, max_iter=opts.max_iter,
                     samples=opts.samples, estimator=opts.estimator, slq_runs=opts.slq_runs, slq_steps=opts.slq_steps,
                     sigma=opts.sigma, blocks=opts.blocks, curvature=opts.curvature, batch_size=opts.batch_size,
                     force=opts.force, threads=opts.threads, device=opts.device, basis=opts.basis, start_vectors=opts.start_vectors,
                     params=opts.params, exclude=opts.exclude)
    if rank() == 0:
        s = r.spectrum
        print(f"[landscape] spectrum at {r.point} ({s.n:,} parameters, loss {s.loss:.6g}, {r.ranks} rank(s), "
              f"{s.seconds:.1f} s) -> {r.path}:/{r.group}")
        print("[landscape] top eigenvalues: " + ", ".join(f"{v:.6g} ± {e:.1g}" for v, e in
                                                          zip(s.eig.values, s.eig.residuals))
              + ("" if s.eig.converged else f" (not all converged within --max_iter {opts.max_iter})"))
        print(f"[landscape] trace: {s.trace.estimate:.6g}, 95% interval [{s.trace.ci_low:.6g}, {s.trace.ci_high:.6g}] "
              f"({s.trace.method}, {s.trace.n_hvp} products); density: {opts.slq_runs} × {opts.slq_steps} SLQ steps")
        if s.blocks is not None:
            print("[landscape] block                     params    λmax          trace [95% interval]")
            b = s.blocks
            for i, name in enumerate(b.names):
                print(f"[landscape] {name:<25} {b.numel[i]:>8,}  {b.lambda_max[i]:<12.6g}  {b.trace[i]:.6g} "
                      f"[{b.trace_ci[i][0]:.6g}, {b.trace_ci[i][1]:.6g}]")
        if opts.plot:
            from ..viz.spectrum_figures import plot_spectrum

            figures = plot_spectrum(surf_file)
            print(f"[landscape] spectrum figures: {', '.join(str(f) for f in figures)}")
            print_report(surf_file)
    return EXIT_OK


def sharpness(surf_file: str, opts) -> int:
    """`landscape sharpness`: compute (or resume) one measure on every rank; rank 0 prints it."""
    import numpy as np

    from ..api import sharpness_job

    r = sharpness_job(surf_file, measure=opts.measure, rho=opts.rho, m=opts.m, steps=opts.steps, subset=opts.subset,
                      force=opts.force, threads=opts.threads, device=opts.device, progress=opts.progress)
    if rank() == 0:
        print(f"[landscape] sharpness {opts.measure}: {r.summary.text()}", file=sys.stderr)
        if r.summary.complete:
            spread = f", σ over batches {np.std(r.rises, ddof=1):.6g}" if len(r.rises) > 1 else ""
            print(f"[landscape] {opts.measure} sharpness (ρ {opts.rho:g}, m {opts.m}, {opts.steps} steps): "
                  f"{r.value:.6g}{'%' if opts.measure == 'keskar' else ''} over {len(r.rises)} batch(es){spread} "
                  f"-> {surf_file}:/sharpness/{opts.measure}")
    return EXIT_INTERRUPTED if r.summary.interrupted else EXIT_OK


def print_report(surf_file: str) -> None:
    """Write <stem>_report.html next to the file (`landscape report`) and print its path; a file the
    report cannot show yet (no surface point computed) is a note, not a failure of the job."""
    from ..viz.report import default_out, report

    try:
        print(f"[landscape] report: {report([surf_file], default_out(surf_file))}")
    except UserError as exc:
        print(f"[landscape] report not written: {exc}", file=sys.stderr)


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
    if argv and argv[0] in ("surface", "hessian", "sharpness", "spectrum", "train"):
        from ..core.device import keep_freed_memory

        keep_freed_memory()  # every batch's activations reuse the memory freed by the last one
    if argv and argv[0] in ("surface", "hessian", "sharpness"):
        from ..engine.signals import install_stop_handlers

        install_stop_handlers()
    try:
        return run(argv)
    except UserError as exc:
        if not (isinstance(exc, SharedUserError) and rank() != 0):
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

            from ..engine.mpi import RankFailed

            if isinstance(exc, RankFailed):  # the failing rank prints its error and ends the job (its exit code)
                return 1
            if MPI.COMM_WORLD.size > 1:
                import traceback

                traceback.print_exc()
                sys.stderr.flush()
                MPI.COMM_WORLD.Abort(1)
        raise


def surface_main() -> int:
    return main(["surface", *sys.argv[1:]])
