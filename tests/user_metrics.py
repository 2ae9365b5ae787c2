"""The user's own metric functions, as `--task user_metrics:mse_and_mae` etc. (tests only).

The contract: fn(outputs, batch) -> {name: (sum, count)}, batch = (inputs, targets)."""
import torch


def mse_and_mae(outputs, batch):
    """loss: Σ (f(x) − y)² (differentiable, a tensor); mae: Σ |f(x) − y| as a Python float; both per example."""
    _, y = batch
    err = outputs.squeeze(-1) - y
    return {"loss": (err.pow(2).sum(), len(y)), "mae": (err.detach().abs().sum().item(), len(y))}


def within_half(outputs, batch):
    """No 'loss': the share of examples whose error is below 0.5 (a count as a 0-dim tensor)."""
    x, y = batch
    err = (outputs.squeeze(-1) - y).abs()
    return {"within": ((err < 0.5).sum().double(), torch.tensor(len(x)))}


def a_tensor(outputs, batch):
    """Breaks the contract: a tensor, not a dict."""
    return (outputs.squeeze(-1) - batch[1]).pow(2).sum()


def float_count(outputs, batch):
    """Breaks the contract: a float count."""
    return {"loss": ((outputs.squeeze(-1) - batch[1]).pow(2).sum(), 2.5)}


def not_differentiable(outputs, batch):
    """A loss the Hessian cannot use: a Python float."""
    return {"loss": ((outputs.squeeze(-1) - batch[1]).pow(2).sum().detach().item(), len(batch[1]))}


def from_a_dict(outputs, batch):
    """A model whose forward returns a dict (not logits): the mean of its 'pred' head's squared error."""
    err = outputs["pred"].squeeze(-1) - batch[1]
    return {"loss": (err.pow(2).sum(), len(err)), "scale": (outputs["scale"].sum(), outputs["scale"].numel())}
