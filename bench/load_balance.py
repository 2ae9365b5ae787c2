"""Dynamic load balance: the same 2-rank job, (a) as is, (b) with rank 1 slowed 3x.

    .venv/bin/python bench/load_balance.py [--grid 21] [--slow 3] [--chunk 0] [--repeat 1]

Each case is a real `mpirun -n 2` job through the engine (this file, `--worker`,
calls landscape.compute_surface, as the CLI does, and reports the engine's
RunSummary: points and busy seconds per rank). The slow-down is the engine's
debugging knob LANDSCAPE_SLOW_RANKS="1:3": rank 1 sleeps 2x its measured
evaluation time after every evaluator call, so it does a third of the other
rank's work per second without taking a core from it.

With t the time of one point on one rank and N points:
  unslowed, 2 ranks:    N t / 2                                (case a)
  static split, slowed: the slow rank does N/2 points at 3t -> 1.5 N t = 3x (a)
  dynamic ideal:        N / (1/t + 1/(3t)) = 0.75 N t = 1.5x (a), 3/4 of the
                        points on the fast rank, 1/4 on the slow one.
The predictions are made twice: from case (a)'s t (nominal), and from the speeds
the two ranks really had in case (b) (busy seconds / points: robust to other load
on the machine). Times are the engine's own (start-up of torch is left out).
Writes bench/results/load_balance.json and prints a table.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MPI_ENV = {
    "OMPI_ALLOW_RUN_AS_ROOT": "1",
    "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
    "OMPI_MCA_rmaps_base_oversubscribe": "1",
    "OMPI_MCA_btl_vader_single_copy_mechanism": "none",
}


def worker(opts) -> None:
    """One rank of the job (under mpirun): the surface job the CLI would run, summary as JSON on rank 0."""
    import torch
    from mpi4py import MPI

    from landscape.api import compute_surface
    from landscape.core.data import load_dataset
    from landscape.core.models import build_model

    comm = MPI.COMM_WORLD
    torch.set_num_threads(1)
    model = build_model(opts.model, seed=0)
    train = load_dataset("digits")["train"]
    grid = f"-1:1:{opts.grid}"
    s = compute_surface(model, {"train": train}, x=grid, y=grid, surf_file=opts.worker, chunk=opts.chunk, comm=comm,
                        channels_last=False, compile=False, points_per_pass=1)
    if comm.rank == 0:
        summ = s.summary
        print("SUMMARY " + json.dumps({"points": summ.computed, "engine_s": summ.seconds,
                                       "per_rank_points": summ.per_rank_points,
                                       "per_rank_busy_s": summ.per_rank_busy}), flush=True)


def run_case(opts, slow: str | None, workdir: Path) -> dict:
    surf = workdir / f"lb_{time.monotonic_ns()}.h5"
    env = dict(os.environ, **MPI_ENV)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.pop("LANDSCAPE_SLOW_RANKS", None)
    if slow:
        env["LANDSCAPE_SLOW_RANKS"] = slow
    cmd = ["mpirun", "-n", "2", sys.executable, __file__, "--worker", str(surf), "--grid", str(opts.grid),
           "--chunk", str(opts.chunk), "--model", opts.model]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("SUMMARY ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"job failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    out = json.loads(lines[-1][len("SUMMARY "):])
    out["engine_s"] = round(out["engine_s"], 3)
    out["per_rank_busy_s"] = [round(b, 3) for b in out["per_rank_busy_s"]]
    out["process_wall_s"] = round(wall, 2)
    out["load_avg_1min_after"] = round(os.getloadavg()[0], 2)
    return out


def predictions(n: int, t_fast: float, t_slow: float) -> dict:
    """Static half/half split and the dynamic ideal for per-point times t_fast (rank 0), t_slow (rank 1)."""
    half = n / 2
    return {"static_split_s": round(max(half * t_fast, half * t_slow), 2),
            "dynamic_ideal_s": round(n / (1 / t_fast + 1 / t_slow), 2),
            "dynamic_ideal_points_per_rank": [round(n * t_slow / (t_fast + t_slow)), round(n * t_fast / (t_fast + t_slow))]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--grid", type=int, default=21, help="grid side: grid x grid points")
    ap.add_argument("--slow", type=float, default=3.0, help="slow-down factor of rank 1")
    ap.add_argument("--chunk", type=int, default=0, help="points per chunk (0: the engine's automatic size)")
    ap.add_argument("--model", default="digits_cnn")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each case; the fastest is kept")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "load_balance.json"))
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    opts = ap.parse_args()
    if opts.worker:
        return worker(opts)

    from landscape.core.grid import chunk_bounds

    with tempfile.TemporaryDirectory(prefix="lb-") as tmp:
        cases = {}
        for name, slow in (("normal", None), ("rank1_slowed", f"1:{opts.slow:g}")):
            runs = [run_case(opts, slow, Path(tmp)) for _ in range(opts.repeat)]
            cases[name] = min(runs, key=lambda r: r["engine_s"])
            cases[name]["all_engine_s"] = [r["engine_s"] for r in runs]
    a, b = cases["normal"], cases["rank1_slowed"]
    n, f = a["points"], opts.slow
    t = 2 * a["engine_s"] / n  # one point on one rank, from (a)
    nominal = predictions(n, t, f * t)
    t_fast, t_slow = (busy / max(p, 1) for busy, p in zip(b["per_rank_busy_s"], b["per_rank_points"]))
    actual = predictions(n, t_fast, t_slow)
    result = {
        "job": f"digits {opts.model}, {opts.grid}x{opts.grid} grid ({n} points), 2 ranks, --threads 1, "
               f"{len(chunk_bounds(n, 2, opts.chunk)) - 1} chunks ({opts.chunk or 'guided'})",
        "slow_factor_rank1": f,
        "cases": cases,
        "nominal": {"seconds_per_point_per_rank": round(t, 4), **nominal},
        "from_slowed_run_speeds": {"seconds_per_point": [round(t_fast, 4), round(t_slow, 4)], **actual},
        "slowed_over_ideal": round(b["engine_s"] / actual["dynamic_ideal_s"], 3),
        "static_over_slowed": round(actual["static_split_s"] / b["engine_s"], 3),
        "host": {"machine": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    out = Path(opts.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")

    base = a["engine_s"]
    rows = [
        ("(a) normal, measured", base, a["per_rank_points"]),
        (f"(b) rank 1 {f:g}x slower, dynamic, measured", b["engine_s"], b["per_rank_points"]),
        ("    static split, nominal (3x (a))", nominal["static_split_s"], [n - n // 2, n // 2]),
        ("    dynamic ideal, nominal (1.5x (a))", nominal["dynamic_ideal_s"], nominal["dynamic_ideal_points_per_rank"]),
        ("    static split, at (b)'s rank speeds", actual["static_split_s"], [n - n // 2, n // 2]),
        ("    dynamic ideal, at (b)'s rank speeds", actual["dynamic_ideal_s"], actual["dynamic_ideal_points_per_rank"]),
    ]
    print(result["job"])
    print(f"t = {t * 1e3:.1f} ms per point per rank in (a); in (b) {t_fast * 1e3:.1f} / {t_slow * 1e3:.1f} ms "
          f"(rank 0 / rank 1)")
    print(f"{'case':<42} {'seconds':>8} {'/ (a)':>6}  points per rank")
    for name, s, pts in rows:
        print(f"{name:<42} {s:8.2f} {s / base:6.2f}  {pts}")
    print(f"(b) measured / dynamic ideal = {result['slowed_over_ideal']:.2f}; "
          f"static split / (b) measured = {result['static_over_slowed']:.2f}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
