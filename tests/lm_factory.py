"""Tiny Hugging Face models and nanoGPT-style token files for the language-model tests."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

VOCAB, SEQ_LEN, BLOCKS = 61, 16, 40


def tiny_config(**kw):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       num_key_value_heads=2, intermediate_size=64, max_position_embeddings=64,
                       tie_word_embeddings=True, **kw)


def save_causal_lm(folder: Path, seed: int = 0) -> Path:
    """A 2-layer Llama causal LM (vocab 61, hidden 32) drawn from `seed`, saved with save_pretrained."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    LlamaForCausalLM(tiny_config()).save_pretrained(folder)
    return folder


def save_classifier(folder: Path, seed: int = 0) -> Path:
    """A 2-layer Llama sequence classifier with 3 classes (pad token 0), saved with save_pretrained."""
    from transformers import LlamaForSequenceClassification

    torch.manual_seed(seed)
    LlamaForSequenceClassification(tiny_config(num_labels=3, pad_token_id=0)).save_pretrained(folder)
    return folder


def save_regressor(folder: Path, seed: int = 0) -> Path:
    """A 2-layer Llama sequence classifier with one output (num_labels=1), for --task regression."""
    from transformers import LlamaForSequenceClassification

    torch.manual_seed(seed)
    LlamaForSequenceClassification(tiny_config(num_labels=1, pad_token_id=0)).save_pretrained(folder)
    return folder


def token_sequences(n: int, seed: int, seq_len: int = 8) -> torch.Tensor:
    """n sequences of `seq_len` ids in 1..VOCAB−1 (no pad token 0, so the classifier reads the last one)."""
    return torch.randint(1, VOCAB, (n, seq_len), generator=torch.Generator().manual_seed(seed))


def token_classes():
    """Dataset factory (`--dataset lm_factory:token_classes`): (train, test) of token ids and a class in 0..2."""
    return tuple((ids, torch.randint(0, 3, (len(ids),), generator=torch.Generator().manual_seed(seed + 10)))
                 for ids, seed in ((token_sequences(24, 1), 1), (token_sequences(10, 2), 2)))


def token_targets():
    """Dataset factory (`--dataset lm_factory:token_targets`): (train, test) of token ids and a float target."""
    return tuple((ids, torch.randn(len(ids), generator=torch.Generator().manual_seed(seed + 20)))
                 for ids, seed in ((token_sequences(20, 3), 3), (token_sequences(8, 4), 4)))


def logits_mse(outputs, batch):
    """The user's own metric (`--task lm_factory:logits_mse`) of an HF model's output: Σ (logit − y)² per example."""
    return {"loss": ((outputs.logits.squeeze(-1) - batch[1]).pow(2).sum(), len(batch[1]))}


class Unsupported(torch.nn.Module):
    """A model whose forward returns `value` (a set, a string: no logits in it)."""

    def __init__(self, value):
        super().__init__()
        self.value = value
        self.linear = torch.nn.Linear(SEQ_LEN, 3)

    def forward(self, x):
        return self.value


def set_output():
    """Model factory that breaks the contract: its model returns a set."""
    return Unsupported({"not", "logits"})


def string_output():
    """Model factory that breaks the contract: its model returns a string."""
    return Unsupported("logits")


def write_tokens(path: Path, blocks: int = BLOCKS, seq_len: int = SEQ_LEN, vocab: int = VOCAB, seed: int = 0) -> Path:
    """`blocks`·`seq_len` random ids below `vocab` as a flat uint16 file (nanoGPT's train.bin)."""
    np.random.default_rng(seed).integers(0, vocab, blocks * seq_len).astype(np.uint16).tofile(path)
    return path
