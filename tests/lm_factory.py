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


def write_tokens(path: Path, blocks: int = BLOCKS, seq_len: int = SEQ_LEN, vocab: int = VOCAB, seed: int = 0) -> Path:
    """`blocks`·`seq_len` random ids below `vocab` as a flat uint16 file (nanoGPT's train.bin)."""
    np.random.default_rng(seed).integers(0, vocab, blocks * seq_len).astype(np.uint16).tofile(path)
    return path
