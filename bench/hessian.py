"""Hessian cost on the demo model (digits_cnn, out/demo/checkpoints/epoch_010.pt, 512 train images).

1. Formulation: seconds per Hessian-vector product, in units of one bare forward pass over the
   same data: double backward with the per-batch gradient graphs kept between products (what
   landscape.analysis.hessian does), double backward rebuilding them per product, and torch.func
   forward-over-reverse jvp(grad). Interleaved, best of --repeat.
2. Products per point for λmax and λmin at a tolerance: one Lanczos run (landscape.analysis.hessian.lanczos)
   vs the reference tool's two ARPACK solves (scipy eigsh(k=1, tol), then eigsh on H − 0.51·λ₁·I,
   exactly as its hess_vec_prod.py), same operator and start vector; errors against a float64
   Lanczos run at tol 1e-9 (atol 1e-12), in units of ‖H‖ = max |λ|.

    .venv/bin/python bench/hessian.py [--threads 1]     # writes bench/results/hessian.json
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from scipy.sparse.linalg import LinearOperator, eigsh
from torch.func import functional_call, grad, jvp

from landscape.analysis.hessian import HessianVectorProduct, lanczos, saved_bytes, start_vector
from landscape.core.data import load_dataset
from landscape.core.data import subset as take_subset
from landscape.core.directions import random_directions
from landscape.core.evaluate import SurfaceEvaluator
from landscape.core.models import build_model, load_checkpoint
from landscape.core.tasks import summed_loss

ROOT = Path(__file__).resolve().parents[1]
CKPT = ROOT / "out/demo/checkpoints/epoch_010.pt"


def ce(z, y):
    return summed_loss("crossentropy", z, y)


def demo_model():
    if not CKPT.is_file():
        from landscape.core.train import train

        train(model="digits_cnn", out_dir=str(CKPT.parent), epochs=10, seed=0)
    model = build_model("digits_cnn")
    load_checkpoint(model, CKPT)
    return model.eval()


def prepared(hvp: HessianVectorProduct) -> HessianVectorProduct:
    hvp.prepare()
    return hvp


def best(fn, repeat):
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def formulations(model, data, batch_size, repeat):
    """Seconds per product of each formulation (and one forward pass, and building the graphs)."""
    X, Y = data.inputs, data.labels
    kept = HessianVectorProduct(model, X, Y, ce, batch_size=batch_size)
    rebuilt = HessianVectorProduct(model, X, Y, ce, batch_size=batch_size, memory=0)
    names = [n for n, _ in model.named_parameters()]
    primals = {n: p.detach() for n, p in model.named_parameters()}
    gloss = grad(lambda p, x, y: ce(functional_call(model, p, (x,)), y))

    def func_hvp(v):
        tangents = dict(zip(names, kept._unflatten(v)))
        acc = torch.zeros(kept.n, dtype=torch.float64)
        for i in range(0, len(Y), batch_size):
            _, hv = jvp(lambda p: gloss(p, X[i : i + batch_size], Y[i : i + batch_size]), (primals,), (tangents,))
            acc += torch.cat([hv[n].reshape(-1) for n in names]).double()
        return acc / len(Y)

    def forward():
        with torch.no_grad():
            for i in range(0, len(Y), batch_size):
                ce(model(X[i : i + batch_size]), Y[i : i + batch_size])

    v = start_vector(kept.n, "cpu")
    kept.prepare()
    rebuilt.prepare()
    ref = kept(v)
    assert torch.equal(rebuilt(v), ref)
    func_diff = float((func_hvp(v) - ref).abs().max() / ref.abs().max())
    memory = sum(saved_bytes(lambda: kept._grad_graph(lo, hi))[1] for lo, hi in kept.batches)
    t = {"forward": [], "kept": [], "rebuilt": [], "func_jvp_grad": [], "build_graphs": []}
    for _ in range(repeat):  # interleaved, so load from other processes hits all alike
        t["forward"].append(best(forward, 1))
        t["kept"].append(best(lambda: kept(v), 1))
        t["rebuilt"].append(best(lambda: rebuilt(v), 1))
        t["func_jvp_grad"].append(best(lambda: func_hvp(v), 1))
        t["build_graphs"].append(best(kept.prepare, 1))
    fwd = min(t["forward"])
    return {"batch_size": batch_size, "forward_ms": 1e3 * fwd,
            **{f"{k}_ms": 1e3 * min(s) for k, s in t.items() if k != "forward"},
            **{f"{k}_forwards": min(s) / fwd for k, s in t.items() if k != "forward"},
            "kept_graph_MB": memory / 1e6, "func_vs_double_backward_max_rel_diff": func_diff}


def reference_two_solves(hvp, v0, tol):
    """The reference tool's min_max_hessian_eigs: eigsh(k=1, tol) (which='LM'), then on H − 0.51·λ·I."""
    n = hvp.n
    count = [0]

    def mv(x):
        count[0] += 1
        return hvp(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64)).reshape(-1)).numpy()

    v0 = v0.numpy()
    maxeig = eigsh(LinearOperator((n, n), matvec=mv, dtype=np.float64), k=1, tol=tol, v0=v0)[0][0]
    first = count[0]
    shift = maxeig * 0.51
    shifted = LinearOperator((n, n), matvec=lambda x: mv(x) - shift * x.reshape(-1), dtype=np.float64)
    mineig = eigsh(shifted, k=1, tol=tol, v0=v0)[0][0] + shift
    if maxeig <= 0 and mineig > 0:
        maxeig, mineig = mineig, maxeig
    return {"lambda_max": float(maxeig), "lambda_min": float(mineig), "n_hvp": count[0],
            "n_hvp_max": first, "n_hvp_min": count[0] - first}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--subset", type=int, default=512)
    p.add_argument("--tols", default="1e-2,1e-3")
    p.add_argument("--points", default="0,0;0.5,0;0.5,0.5;1,-1")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = demo_model()
    data = take_subset(load_dataset("digits")["train"], args.subset)
    out = {"model": "digits_cnn", "checkpoint": str(CKPT.relative_to(ROOT)), "subset": len(data),
           "params": sum(p.numel() for p in model.parameters()), "threads": args.threads,
           "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}",
           "formulation": [formulations(model, data, b, args.repeat) for b in (512, 128)]}
    for f in out["formulation"]:
        print(json.dumps(f))
    directions = random_directions(model, seed=0, ndim=2)  # as the demo surface: filter-normalized, biasbn
    point = SurfaceEvaluator(model, {"train": data}, directions)
    points = [tuple(float(a) for a in s.split(",")) for s in args.points.split(";") if s]
    rows = []
    for coord in points:
        point.set_point(coord)
        exact_model = build_model("digits_cnn").double().eval()
        exact_model.load_state_dict({k: v.double() for k, v in model.state_dict().items()})
        exact = lanczos(prepared(HessianVectorProduct(exact_model, data.inputs.double(), data.labels, ce)),
                        start_vector(out["params"], "cpu"), tol=1e-9, atol=1e-12, max_iter=400)
        scale = max(abs(exact.lambda_max), abs(exact.lambda_min))
        hvp = prepared(HessianVectorProduct(model, data.inputs, data.labels, ce))
        for tol in [float(t) for t in args.tols.split(",")]:
            one = lanczos(hvp, start_vector(hvp.n, "cpu"), tol=tol, max_iter=400)
            two = reference_two_solves(hvp, start_vector(hvp.n, "cpu"), tol)
            row = {"point": coord, "tol": tol, "exact_lambda_max": exact.lambda_max,
                   "exact_lambda_min": exact.lambda_min, "exact_converged": exact.converged,
                   "lanczos_n_hvp": one.n_hvp, "lanczos_converged": one.converged,
                   "lanczos_err_max": abs(one.lambda_max - exact.lambda_max) / scale,
                   "lanczos_err_min": abs(one.lambda_min - exact.lambda_min) / scale,
                   "two_solves_n_hvp": two["n_hvp"], "two_solves_n_hvp_max": two["n_hvp_max"],
                   "two_solves_n_hvp_min": two["n_hvp_min"],
                   "two_solves_err_max": abs(two["lambda_max"] - exact.lambda_max) / scale,
                   "two_solves_err_min": abs(two["lambda_min"] - exact.lambda_min) / scale}
            print(json.dumps(row))
            rows.append(row)
    point.restore()
    out["points"] = rows
    dest = ROOT / "bench/results/hessian.json"
    dest.write_text(json.dumps(out, indent=1))
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
