"""Hessians of models with integer inputs (token ids into nn.Embedding), tied weights too.

Dense reference, computed here: torch.autograd.functional.hessian of the mean cross-entropy as a
function of the flat vector of `named_parameters()` (torch.func.functional_call, which keeps
tied weights tied), eigenvalues by numpy's eigvalsh. Float64 models: products within 1e-10
relative, eigenvalues within 1e-9·max|λ| at tol 1e-9 (as in test_hessian.py).
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from landscape.analysis.hessian import HessianEvaluator, HessianVectorProduct, extreme_eigenvalues, lanczos, start_vector
from landscape.core.data import Split
from landscape.core.directions import random_directions
from landscape.core.evaluate import Evaluation

torch.set_num_threads(1)


def ce(z, y):
    return F.cross_entropy(z, y, reduction="sum")


class TiedLM(nn.Module):
    """Token id -> logits over the 11 tokens, the output layer tied to the embedding: 11·8 + 8·8 + 8
    parameters."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(11, 8)
        self.mix = nn.Linear(8, 8)
        self.head = nn.Linear(8, 11, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, x):
        return self.head(torch.tanh(self.mix(self.emb(x))))


def make(kind):
    """(model, token ids, labels): a bag of 3 embedded tokens into a linear classifier, or TiedLM."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    if kind == "embedding":
        model = nn.Sequential(nn.Embedding(11, 4), nn.Flatten(), nn.Linear(12, 5))
        X, Y = torch.randint(0, 11, (60, 3), generator=g), torch.randint(0, 5, (60,), generator=g)
    else:
        model = TiedLM()
        X, Y = torch.randint(0, 11, (60,), generator=g), torch.randint(0, 11, (60,), generator=g)
    return model.double(), X, Y


def dense_hessian(model, X, Y):
    named = dict(model.named_parameters())
    flat = torch.cat([p.detach().reshape(-1) for p in named.values()])

    def f(theta):
        params, i = {}, 0
        for n, p in named.items():
            params[n] = theta[i : i + p.numel()].view(p.shape)
            i += p.numel()
        return ce(functional_call(model, params, (X,)), Y) / len(Y)

    return torch.autograd.functional.hessian(f, flat)


@pytest.mark.parametrize("kind", ["embedding", "tied"])
@pytest.mark.parametrize("batch_size,memory", [(60, None), (16, 0)])
def test_hvp_and_eigenvalues_of_integer_inputs(kind, batch_size, memory):
    """Kept graphs and rebuilt graphs (memory=0): H v, λmax and λmin of the dense Hessian."""
    model, X, Y = make(kind)
    H = dense_hessian(model, X, Y)
    n = sum(p.numel() for p in model.parameters())
    assert H.shape == (n, n) and n == (11 * 4 + 12 * 5 + 5 if kind == "embedding" else 11 * 8 + 8 * 8 + 8)
    eig = np.linalg.eigvalsh(H.numpy())
    s = np.abs(eig).max()
    hvp = HessianVectorProduct(model, X, Y, ce, batch_size=batch_size, memory=memory)
    loss = hvp.prepare()
    assert abs(loss - ce(model(X), Y).item() / len(Y)) <= 1e-12 * loss
    for seed in range(2):
        v = start_vector(n, "cpu", seed)
        torch.testing.assert_close(hvp(v), H @ v, rtol=1e-10, atol=1e-10 * s)
    r = lanczos(hvp, start_vector(n, "cpu"), tol=1e-9, max_iter=n, atol=0)
    assert r.converged
    assert abs(r.lambda_max - eig[-1]) <= 1e-9 * s and abs(r.lambda_min - eig[0]) <= 1e-9 * s
    r = extreme_eigenvalues(hvp, tol=1e-9, max_iter=n, atol=0)
    assert r.converged
    assert abs(r.lambda_max - eig[-1]) <= 1e-9 * s and abs(r.lambda_min - eig[0]) <= 1e-9 * s


def test_map_point_of_a_tied_model():
    """The map's evaluator at θ* + α d (d over the states) moves the tied weight once: its λmax,
    λmin are those of the dense Hessian at θ* + α d (set here by hand, each tensor once), within
    the solver's floor atol·s = 1e-5·s."""
    model, X, Y = make("tied")
    (d,) = random_directions(model, seed=0, dir_type="states", ndim=1, norms=("filter",), ignores=("none",))
    other, _, _ = make("tied")
    with torch.no_grad():
        for k, p in other.named_parameters():
            p.add_(0.5 * d[k].double())
    eig = np.linalg.eigvalsh(dense_hessian(other, X, Y).numpy())
    s = np.abs(eig).max()
    ev = HessianEvaluator(model, Split(X, Y), [d], evaluation=Evaluation(dir_type="states"), batch_size=16, tol=1e-9,
                          max_iter=160)
    out = ev(np.array([[0.5]]))[0]
    assert abs(out[0] - eig[-1]) <= 1e-5 * s and abs(out[1] - eig[0]) <= 1e-5 * s, (out[:2], eig[[-1, 0]])
