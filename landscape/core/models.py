"""Model registry and checkpoint loading.

A model is a registry name (the digits demo models, the CIFAR-10 zoo of landscape.zoo), the
user's own factory `package.module:factory` (called with no arguments, returning an
nn.Module), or `hf:FOLDER`, a Hugging Face transformers model written by `save_pretrained`
(config.json + weights), loaded offline (HF_HUB_OFFLINE=1, local_files_only=True)."""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from ..errors import UserError
from . import zoo
from .importpath import is_import_path, resolve


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


def lm_tiny(context: int = 256):
    """The embedded language model: a 4-layer decoder-only Llama (transformers.LlamaConfig) on
    byte-level tokens (vocabulary 256), width 128, 4 heads, SwiGLU width 320, RoPE, tied
    embeddings, `context` positions; 787,584 parameters."""
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(LlamaConfig(vocab_size=256, hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
                                        num_key_value_heads=4, intermediate_size=320, max_position_embeddings=context,
                                        tie_word_embeddings=True, bos_token_id=None, eos_token_id=None))


MODELS = {"digits_cnn": DigitsCNN, "digits_mlp": DigitsMLP, "lm_tiny": lm_tiny, **zoo.MODELS}


def device_of(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (the CPU for a model without tensors)."""
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


def weights_dtype(model: nn.Module) -> torch.dtype:
    """The dtype of the model's first floating-point parameter (float32 for a model without one)."""
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


class Snapshot:
    """How a model is laid out, to leave it exactly as it was after an evaluation moved it:
    each tensor's device and strides, and the training flags. (Values are the θ writer's and BN
    recalibration's to put back; requires_grad is never changed.) Strides, not just
    `is_contiguous()`: a conv weight with one input channel is contiguous in either layout, but
    its strides decide which one the convolution runs in (channels-last left behind would speed up,
    and so falsify, a later contiguous measurement: core.tuning)."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.training = {m: m.training for m in model.modules()}
        self.params = {n: (p.device, p.stride()) for n, p in model.named_parameters()}
        self.buffers = {n: (b.device, b.stride()) for n, b in model.named_buffers()}

    def restore(self) -> None:
        def laid_out(t, device, stride):
            t = t.to(device)
            if t.stride() != stride:
                t = torch.empty_strided(t.shape, stride, dtype=t.dtype, device=device).copy_(t)
            return t

        for name, p in self.model.named_parameters():
            if name in self.params and (p.device, p.stride()) != self.params[name]:
                p.data = laid_out(p.data, *self.params[name])
        for name, b in self.model.named_buffers():
            if name in self.buffers and (b.device, b.stride()) != self.buffers[name]:
                owner, _, attr = name.rpartition(".")
                setattr(self.model.get_submodule(owner), attr, laid_out(b, *self.buffers[name]))
        for m, flag in self.training.items():
            m.training = flag


def batch_statistics(model: nn.Module) -> bool:
    """Whether the model in eval mode normalizes with the statistics of each batch (a BN layer
    that tracks no running statistics): its outputs then depend on the batch size."""
    from torch.nn.modules.batchnorm import _BatchNorm

    return any(isinstance(m, _BatchNorm) and not m.track_running_stats for m in model.modules())


def code_identity(model: nn.Module, name: str | None = None) -> str:
    """A short hash of the code that makes the model compute what it does: the source of its
    class (and of the user's factory `name`); a resume with other code is refused."""
    import hashlib
    import inspect

    parts = [f"{type(model).__module__}.{type(model).__qualname__}"]
    for obj in [type(model)] + ([resolve(name, "--model")] if is_import_path(name) else []):
        try:
            parts.append(inspect.getsource(obj))
        except (OSError, TypeError):  # defined in a REPL or a C extension: the name is all there is
            pass
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


HF_PREFIX = "hf:"


WEIGHT_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


# The heads landscape evaluates: the suffix of a config's architecture, the Auto class that loads it,
# the built-in tasks it fits (any head also fits the user's own --task package.module:function).
HF_HEADS = (("ForCausalLM", "AutoModelForCausalLM", ("causal_lm",)),
            ("LMHeadModel", "AutoModelForCausalLM", ("causal_lm",)),  # GPT-2's name for a causal LM
            ("ForSequenceClassification", "AutoModelForSequenceClassification", ("classification", "regression")),
            ("ForTokenClassification", "AutoModelForTokenClassification", ()),
            ("ForMaskedLM", "AutoModelForMaskedLM", ()))


def hf_head(config: dict, task: str | None, folder: str) -> str:
    """The Auto class name for a saved transformers model: the one of the first architecture its
    config.json names, checked against `task` (None: any); without one, the task's (a sequence
    classifier for classification and regression, else a causal LM)."""
    names = config.get("architectures") or []
    arch = names[0] if isinstance(names, list) and names and isinstance(names[0], str) else None
    if arch is None:
        return ("AutoModelForSequenceClassification" if task in ("classification", "regression")
                else "AutoModelForCausalLM")
    head = next((h for h in HF_HEADS if arch.endswith(h[0])), None)
    if head is None:
        raise UserError(f"--model hf:{folder} is a {arch}, which landscape cannot evaluate: save a ...ForCausalLM, "
                        "...ForSequenceClassification, ...ForTokenClassification or ...ForMaskedLM model")
    if task is not None and not is_import_path(task) and task not in head[2]:
        fits = " or ".join(f"--task {t}" for t in head[2]) or "your own --task package.module:function"
        raise UserError(f"--model hf:{folder} is a {arch}, not a model for --task {task}: use {fits}")
    return head[1]


def load_hf(folder: str, task: str | None = "classification", dtype: str = "fp32") -> nn.Module:
    """The transformers model saved in `folder`, loaded by the Auto class of the architecture its
    config.json names (see `hf_head`; `task` None: any), its weights in `dtype` (WEIGHT_DTYPES),
    eval mode, dropout p = 0. Never goes to the network: compute nodes have none."""
    import json

    path = Path(folder)
    if not (path / "config.json").is_file():
        what = "does not exist" if not path.is_dir() else "has no config.json"
        raise UserError(f"--model hf:{folder}: the folder {folder!r} {what}: give a folder written by the model's "
                        "save_pretrained (config.json and model.safetensors), on this machine")
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"--model hf:{folder}: config.json is not readable JSON ({exc}): save the model again") from None
    head = hf_head(config if isinstance(config, dict) else {}, task, folder)
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        import transformers
    except ImportError:
        raise UserError("--model hf:... needs the transformers package: pip install transformers") from None
    transformers.utils.logging.disable_progress_bar()  # no "Loading weights" bar from every rank
    auto = getattr(transformers, head)
    try:
        model = auto.from_pretrained(path, local_files_only=True, dtype=WEIGHT_DTYPES[dtype])
    except Exception as exc:  # an unknown architecture, missing or broken weights
        raise UserError(f"--model hf:{folder}: {auto.__name__} cannot load it ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    for m in model.modules():  # landscape evaluates in eval mode already; no dropout left to switch on
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    return model.eval()


def build_model(name: str, seed: int = 0, task: str | None = "classification", dtype: str = "fp32") -> nn.Module:
    """The named model (or the one `package.module:factory` returns), initialized from `seed`;
    `hf:FOLDER`: the saved transformers model with the head its config names, checked against `task`
    (None: any; see `load_hf`), its weights in `dtype` (other models are cast by `cast_weights` once θ* is loaded)."""
    if name.startswith(HF_PREFIX):
        return load_hf(name[len(HF_PREFIX):], task, dtype)
    if is_import_path(name):
        factory = resolve(name, "--model")
    elif name in MODELS:
        factory = MODELS[name]
    else:
        raise UserError(f"unknown model {name!r}: choose one of {', '.join(MODELS)}, "
                        "or give your own as package.module:factory")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = factory()
    if not isinstance(model, nn.Module):
        raise UserError(f"--model {name!r} returned a {type(model).__name__}, not a torch.nn.Module: "
                        "make the factory return the network")
    return model


def cast_weights(model: nn.Module, dtype: str) -> nn.Module:
    """The model's floating-point parameters and buffers in `dtype` (WEIGHT_DTYPES), in place."""
    want = WEIGHT_DTYPES[dtype]
    if weights_dtype(model) != want:
        model.to(want)
    return model


def run_model(model: nn.Module, inputs: torch.Tensor, name: str = "the model") -> torch.Tensor:
    """The logits of one forward pass in eval mode on a few `inputs` (a UserError if it fails);
    floating-point inputs in the weights' dtype."""
    from .tasks import logits_of

    if inputs.is_floating_point():
        inputs = inputs.to(weights_dtype(model))
    try:
        with torch.no_grad():
            out = model.eval()(inputs)
    except Exception as exc:  # shape or dtype mismatch between model and data
        raise UserError(f"model {name!r} fails on inputs of shape {tuple(inputs.shape)} ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else ''}): use a model made for this dataset") from None
    return logits_of(out)


def num_outputs(model: nn.Module, inputs: torch.Tensor, name: str = "the model") -> int:
    """Classes the model predicts (its logits are (batch, classes)), from one forward pass."""
    out = run_model(model, inputs, name)
    if out.dim() != 2 or out.shape[0] != inputs.shape[0]:
        raise UserError(f"model {name!r} returns {tuple(out.shape)} for {inputs.shape[0]} inputs: the built-in losses "
                        "take logits of shape (batch, classes); use your own --loss_name for other outputs")
    return int(out.shape[1])


def vocab_and_context(model: nn.Module, inputs: torch.Tensor, name: str = "the model") -> tuple[int, int | None]:
    """(vocabulary size, longest sequence or None) of a language model: `config.vocab_size` and
    `config.max_position_embeddings` when it has them, else the logits' last dim of one example."""
    config = getattr(model, "config", None)
    vocab = getattr(config, "vocab_size", None)
    if vocab is None:
        vocab = run_model(model, inputs[:1], name).shape[-1]
    return int(vocab), getattr(config, "max_position_embeddings", None)


HF_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def read_folder(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a Hugging Face checkpoint folder (save_pretrained, a Trainer `checkpoint-N/`): its
    first file of HF_WEIGHTS, a sharded one's shards (named by its index's weight_map) merged."""
    import json

    found = next((path / name for name in HF_WEIGHTS if (path / name).is_file()), None)
    if found is None:
        raise UserError(f"checkpoint folder {str(path)!r} holds no weights ({', '.join(HF_WEIGHTS)}): give the folder "
                        "save_pretrained or the Trainer wrote, or a checkpoint file")
    if not found.name.endswith(".index.json"):
        return read_state_dict(found)
    try:
        shards = sorted(set(json.loads(found.read_text())["weight_map"].values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UserError(f"cannot read {str(found)!r} ({type(exc).__name__}: {exc}): is it the index "
                        "save_pretrained wrote?") from None
    state = {}
    for shard in shards:
        if not (path / shard).is_file():
            raise UserError(f"checkpoint folder {str(path)!r} lacks the shard {shard!r} its {found.name} names: "
                            "copy the whole folder")
        state.update(read_state_dict(path / shard))
    return state


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint: a plain state_dict, or one wrapped as {'state_dict': ...} or
    {'model': ...}, or a whole saved model, or a `.safetensors` file, or a Hugging Face
    checkpoint folder (`read_folder`); `module.` prefixes (DataParallel/DDP) removed."""
    path = Path(path)
    if path.is_dir():
        return read_folder(path)
    if not path.is_file():
        raise UserError(f"checkpoint {str(path)!r} does not exist: check --model_file")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise UserError(f"checkpoint {str(path)!r} is a safetensors file: pip install safetensors") from None
        try:
            return load_file(path)
        except Exception as exc:
            raise UserError(f"cannot read checkpoint {str(path)!r} ({type(exc).__name__}: {exc}): is it a "
                            "safetensors file?") from None
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
    for prefix in ("module.", "_orig_mod."):  # DataParallel / DDP, torch.compile
        if obj and all(k.startswith(prefix) for k in obj):
            obj = {k[len(prefix):]: v for k, v in obj.items()}
    return obj


def load_checkpoint(model: nn.Module, path: str | Path) -> None:
    """Load a checkpoint into `model`; a mismatch names the missing and unexpected keys.

    BN `num_batches_tracked` counters may be missing (checkpoints of PyTorch < 0.4.1, such
    as the reference tool's): the model keeps its own."""
    state = read_state_dict(path)
    own = model.state_dict()
    shared = {}  # tied tensors (an LM head tied to the embedding) are saved once by safetensors
    for k, v in own.items():
        if v.numel():
            shared.setdefault(v.data_ptr(), []).append(k)
    for keys in shared.values():
        for k in keys:
            if k not in state and any(o in state for o in keys):
                state[k] = state[next(o for o in keys if o in state)]
    for k in own:
        if k.endswith("num_batches_tracked") and k not in state:
            state[k] = own[k]
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
