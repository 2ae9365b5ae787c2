"""A model whose loss is a closed-form quadratic (tests only): `--model quadratic_factory:linear
--dataset quadratic_factory:data --task regression`. The targets are the model's own outputs at θ*, so
L(w) = mean_i (x_i·(w − w*))² = (w − w*)ᵀ A (w − w*) with A = XᵀX / n, minimal (0) at θ*."""
import torch
from torch import nn

W_STAR = torch.tensor([[0.5, -1.0, 2.0, 0.3]])
SCALES = torch.tensor([3.0, 1.0, 0.5, 0.2])  # feature scales: A's eigenvalues well apart


def linear():
    model = nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(W_STAR)
    return model


def inputs(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 4, generator=torch.Generator().manual_seed(seed)) * SCALES


def data():
    splits = {}
    for name, (n, seed) in {"train": (200, 1), "test": (50, 2)}.items():
        x = inputs(n, seed)
        with torch.no_grad():
            splits[name] = (x, linear()(x))
    return splits
