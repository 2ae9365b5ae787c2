"""Cost of the curvature suite on the demo model (digits_cnn, out/demo/checkpoints/epoch_010.pt, 512 train images).

1. Maps: Hessian-vector products and seconds per point of the trace map (Hutch++, 30 products),
   the top-k map (k = 3, tol 1e-3) and the λmax/λmin map (tol 1e-3), the evaluators that
   `landscape hessian --map trace|topk|extremes` runs, at the points of bench/hessian.py.
2. At θ*: landscape.analysis.spectrum (top-3 Lanczos, Hutch++ 30, SLQ 4 × 60) against PyHessian
   0.1 itself with its published defaults (eigenvalues(top_n=3, maxIter=100, tol=1e-3): power
   iteration with deflation; trace(maxIter=100, tol=1e-3): Hutchinson until the running mean
   moves < 1e-3 relative; density(iter=100, n_v=1): one SLQ run of 100 steps), its products counted
   by wrapping its hessian_vector_product, on the same 512 images as one batch. References:
   top-3 from a float64 Lanczos run (tol 1e-9); tr H and tr H² from 300 Rademacher products
   (zᵀHz and ‖Hz‖², with their 95% intervals).

    pip install --no-deps --target /tmp/pyh pyhessian==0.1       # PyHessian, outside the venv
    .venv/bin/python bench/spectrum.py --pyhessian /tmp/pyh       # writes bench/results/spectrum.json

3. `--topk-basis`: products of the top-k (k = 1, 3, 5, 10; tol 1e-3 and 1e-6) with the basis
   unbounded (basis 1000 ≥ the products: never restarted, the Krylov space of the former
   unrestarted solver), the default bounded basis max(2k + 1, 20), the smallest 2k + 1, and
   blocks of 2; writes bench/results/spectrum_topk.json.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from landscape.analysis.hessian import HessianEvaluator, HessianVectorProduct
from landscape.analysis.spectrum import (
    TopKEvaluator,
    TraceEvaluator,
    eigenpairs,
    eigenpairs_bytes,
    rademacher,
    slq,
    t_quantile,
    trace,
)
from landscape.core.data import load_dataset
from landscape.core.data import subset as take_subset
from landscape.core.directions import random_directions
from landscape.core.models import build_model, load_checkpoint
from landscape.core.tasks import summed_loss

ROOT = Path(__file__).resolve().parents[1]
CKPT = ROOT / "out/demo/checkpoints/epoch_010.pt"


def ce(z, y):
    return summed_loss("crossentropy", z, y)


def demo_model(dtype=torch.float32, ckpt: Path = CKPT):
    if not ckpt.is_file():
        from landscape.core.train import train

        train(model="digits_cnn", out_dir=str(ckpt.parent), epochs=10, seed=0)
    model = build_model("digits_cnn")
    load_checkpoint(model, ckpt)
    return model.to(dtype).eval()


def topk_basis(model, data):
    """Products, restarts and memory of the top-k with an unbounded, the default, the smallest basis and blocks of 2."""
    op = HessianVectorProduct(model, data.inputs, data.labels, ce)
    op.prepare()
    rows = []
    for tol in (1e-3, 1e-6):
        for k in (1, 3, 5, 10):
            row = {"k": k, "tol": tol}
            for name, kw in (("unbounded", {"basis": 1000}), ("default", {}), ("smallest", {"basis": 2 * k + 1}),
                             ("block2", {"block": 2})):
                t0 = time.perf_counter()
                e = eigenpairs(op, op.n, top=k, tol=tol, max_iter=1000, **kw)
                row[name] = {"n_hvp": e.n_hvp, "restarts": e.restarts, "converged": e.converged,
                             "seconds": time.perf_counter() - t0, "values": e.values.tolist(),
                             "bytes": eigenpairs_bytes(op.n, k, **kw)}
            print(json.dumps({"k": k, "tol": tol, **{n: row[n]["n_hvp"] for n in row if isinstance(row[n], dict)}}))
            rows.append(row)
    return rows


def maps(model, data, points):
    directions = random_directions(model, seed=0, ndim=2)  # as the demo surface: filter-normalized, biasbn
    evaluators = {"extremes": HessianEvaluator(model, data, directions, tol=1e-3),
                  "trace": TraceEvaluator(model, data, directions, samples=30),
                  "topk": TopKEvaluator(model, data, directions, k=3, tol=1e-3)}
    rows = []
    for coord in points:
        row = {"point": coord}
        for name, ev in evaluators.items():
            t0 = time.perf_counter()
            out = ev(np.array([coord]))[0]
            row[f"{name}_seconds"] = time.perf_counter() - t0
            row[f"{name}_n_hvp"] = int(out[-1])
        print(json.dumps(row))
        rows.append(row)
    for ev in evaluators.values():
        ev.restore()
    return rows


def reference(model, data):
    """top-3 (float64 Lanczos, tol 1e-9) and tr H, tr H² from 300 Rademacher products."""
    exact = demo_model(torch.float64)
    op64 = HessianVectorProduct(exact, data.inputs.double(), data.labels, ce)
    op64.prepare()
    top = eigenpairs(op64, op64.n, top=3, tol=1e-9, atol=1e-12, max_iter=400)
    op = HessianVectorProduct(model, data.inputs, data.labels, ce)
    op.prepare()
    quad, sq = [], []
    for z in rademacher(op.n, 300, 12345):
        hz = op(z)
        quad.append(float(z @ hz))
        sq.append(float(hz @ hz))
    t = t_quantile(299)

    def ci(s):
        s = np.array(s)
        return float(s.mean()), float(t * s.std(ddof=1) / math.sqrt(len(s)))

    return {"top3": top.values.tolist(), "top3_residuals": top.residuals.tolist(), "trace": ci(quad),
            "trace_h2": ci(sq)}


def ours(model, data):
    op = HessianVectorProduct(model, data.inputs, data.labels, ce)
    op.prepare()
    out = {}
    t0 = time.perf_counter()
    e = eigenpairs(op, op.n, top=3, tol=1e-3)
    t1 = time.perf_counter()
    tr = trace(op, op.n, samples=30)
    t2 = time.perf_counter()
    d = slq(op, op.n, runs=4, steps=60)
    t3 = time.perf_counter()
    d1 = slq(op, op.n, runs=1, steps=100)  # PyHessian's SLQ budget, our Lanczos
    out["top3"] = {"values": e.values.tolist(), "n_hvp": e.n_hvp, "seconds": t1 - t0}
    out["trace"] = {"estimate": tr.estimate, "ci": [tr.ci_low, tr.ci_high], "n_hvp": tr.n_hvp, "seconds": t2 - t1}
    n = op.n
    out["slq_4x60"] = {"n_hvp": d.n_hvp, "seconds": t3 - t2, "trace": n * d.moment(1), "trace_h2": n * d.moment(2)}
    out["slq_1x100"] = {"n_hvp": d1.n_hvp, "trace": n * d1.moment(1), "trace_h2": n * d1.moment(2)}
    return out


def pyhessian(model, data, path):
    sys.path.insert(0, str(path))
    import pyhessian.hessian  # noqa: F401  (the package exports a class of the same name)

    ph = sys.modules["pyhessian.hessian"]

    count = [0]
    inner = ph.hessian_vector_product

    def counted(*a, **k):
        count[0] += 1
        return inner(*a, **k)

    ph.hessian_vector_product = counted
    torch.manual_seed(0)
    h = ph.hessian(model, lambda z, y: ce(z, y) / len(y), data=(data.inputs, data.labels), cuda=False)
    out = {}
    for name, fn in (("top3", lambda: h.eigenvalues(top_n=3)[0]), ("trace", lambda: float(np.mean(h.trace()))),
                     ("density", lambda: h.density())):
        count[0] = 0
        t0 = time.perf_counter()
        try:
            value = fn()
        except Exception as exc:  # PyHessian 0.1's density calls torch.eig, removed from torch ≥ 1.13
            value = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
        out[name] = {"value": value, "n_hvp": count[0], "seconds": time.perf_counter() - t0}
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--subset", type=int, default=512)
    p.add_argument("--points", default="0,0;0.5,0;0.5,0.5;1,-1")
    p.add_argument("--pyhessian", default=None, help="folder holding the pyhessian package")
    p.add_argument("--checkpoint", type=Path, default=CKPT, help="the demo checkpoint (trained there when missing)")
    p.add_argument("--topk-basis", action="store_true", help="only the top-k basis table (spectrum_topk.json)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = demo_model(ckpt=args.checkpoint)
    data = take_subset(load_dataset("digits")["train"], args.subset)
    if args.topk_basis:
        out = {"model": "digits_cnn", "checkpoint": args.checkpoint.name, "subset": len(data),
               "params": sum(p.numel() for p in model.parameters()), "threads": args.threads,
               "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}",
               "rows": topk_basis(model, data)}
        dest = ROOT / "bench/results/spectrum_topk.json"
        dest.write_text(json.dumps(out, indent=1))
        print(f"wrote {dest}")
        return
    out = {"model": "digits_cnn", "checkpoint": str(CKPT.relative_to(ROOT)), "subset": len(data),
           "params": sum(p.numel() for p in model.parameters()), "threads": args.threads,
           "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}"}
    points = [tuple(float(a) for a in s.split(",")) for s in args.points.split(";") if s]
    out["maps"] = maps(model, data, points)
    out["reference"] = reference(model, data)
    print(json.dumps(out["reference"]))
    out["ours"] = ours(model, data)
    print(json.dumps(out["ours"]))
    if args.pyhessian:
        out["pyhessian"] = pyhessian(model, data, args.pyhessian)
        print(json.dumps(out["pyhessian"], default=str))
    dest = ROOT / "bench/results/spectrum.json"
    dest.write_text(json.dumps(out, indent=1, default=str))
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
