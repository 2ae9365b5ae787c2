"""Model registry and checkpoint loading."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .errors import UserError


class DigitsCNN(nn.Module):
    """Two 3x3 conv layers with batch norm on 8x8 digits; 9.9k parameters."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Linear(32 * 4 * 4, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


class DigitsMLP(nn.Module):
    """64-64-10 perceptron with ReLU on flattened 8x8 digits."""

    def __init__(self, num_classes: int = 10, hidden: int = 64):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

    def forward(self, x):
        return self.net(x)


MODELS = {"digits_cnn": DigitsCNN, "digits_mlp": DigitsMLP}


def build_model(name: str, seed: int = 0) -> nn.Module:
    """The named model with weights initialized from `seed`."""
    if name not in MODELS:
        raise UserError(f"unknown model {name!r}: choose one of {', '.join(sorted(MODELS))}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MODELS[name]()


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint: a plain state_dict, or one wrapped as {'state_dict': ...} or
    {'model': ...}, or a whole saved model; `module.` prefixes (DataParallel/DDP) removed."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {str(path)!r} does not exist: check --model_file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # pickle, zip or torch errors: all mean "not a checkpoint"
        raise UserError(f"cannot read checkpoint {str(path)!r} ({type(exc).__name__}: {exc}): is it a torch.save file?") from None
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model", "net"):
            if key in obj and isinstance(obj[key], (dict, nn.Module)):
                obj = obj[key]
                if isinstance(obj, nn.Module):
                    obj = obj.state_dict()
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"checkpoint {str(path)!r} holds no state_dict of tensors")
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def load_checkpoint(model: nn.Module, path: str | Path) -> None:
    """Load a checkpoint into `model`; a mismatch names the missing and unexpected keys."""
    state = read_state_dict(path)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        def few(keys):
            return ", ".join(keys[:4]) + (f" (+{len(keys) - 4} more)" if len(keys) > 4 else "")
        parts = []
        if missing:
            parts.append(f"missing keys: {few(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {few(unexpected)}")
        if wrong:
            parts.append(f"wrong shapes: {few(wrong)}")
        raise UserError(f"checkpoint {str(path)!r} does not match the model ({'; '.join(parts)}): check --model and --model_file")
    for k, v in state.items():
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise UserError(f"checkpoint {str(path)!r} has NaN or Inf values in {k!r}: use a checkpoint from before training diverged")
    model.load_state_dict(state)
