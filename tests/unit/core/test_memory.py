"""The memory plan of a surface job (core.memory, issue 17) against byte counts worked out by hand."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from landscape.core.data import load_dataset
from landscape.core.memory import check_fits, surface_needs
from landscape.errors import UserError


def bf16_model():
    """Linear(10, 4) in bf16 (weight 40, bias 4 elements: 2 bytes each), BatchNorm1d(4) in float32 (weight, bias,
    running mean, running variance: 4 elements of 4 bytes each; num_batches_tracked: one int64)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 4), nn.BatchNorm1d(4))
    model[0].to(torch.bfloat16)
    return model


def directions():
    """Two directions that move the Linear weight, the second also the BN weight; biases stay at θ*."""
    zero = {"0.weight": torch.zeros(4, 10), "0.bias": torch.zeros(4), "1.weight": torch.zeros(4), "1.bias": torch.zeros(4)}
    return [{**zero, "0.weight": torch.randn(4, 10)}, {**zero, "0.weight": torch.randn(4, 10), "1.weight": torch.ones(4)}]


def test_surface_needs_counts_by_hand():
    model = bf16_model()
    streamed = load_dataset("digits", splits=["train"], in_memory="no")  # 1438 examples of 64 float32 + an int64
    held = load_dataset("digits", splits=["test"])
    need = surface_needs(model, directions(), {**streamed, **held}, "cuda", points_per_pass=3, batch_size=100)
    assert need == {
        "the model": (40 + 4) * 2 + (4 + 4) * 4 + (4 + 4) * 4 + 8,  # not on the device yet: parameters and buffers
        "θ*": (40 + 4) * 2 + (4 + 4) * 4,  # the parameters, each in its dtype
        "2 direction(s)": 2 * ((40 + 4) * 4 + (4 + 4) * 4),  # float32 for the bf16 tensors too
        "3 points per pass": 3 * (40 * 2 + 4 * 4),  # the tensors a direction moves, in their dtype
        "streamed batches": 2 * 100 * (64 * 4 + 8),  # the batch evaluated and the next; the held split not at all
    }


def test_surface_needs_on_the_models_device_with_states_and_small_splits():
    model = bf16_model()
    few = load_dataset("digits", splits=["train", "test"], subset=(30, "first"), in_memory="no")
    need = surface_needs(model, directions()[:1], few, "cpu", dir_type="states", batch_size=512)
    assert need == {
        "θ*": (40 + 4) * 2 + (4 + 4 + 4 + 4) * 4,  # states: the BN running statistics too, not num_batches_tracked
        "1 direction(s)": (40 + 4) * 4 + (4 + 4 + 4 + 4) * 4,
        "streamed batches": 2 * 30 * (64 * 4 + 8),  # a batch is at most the split
    }


def test_check_fits_is_one_line_naming_the_fixes():
    need = {"θ*": 3 << 30, "4 points per pass": 12 << 30}
    check_fits(need, 16 << 30, torch.device("cpu"))
    with pytest.raises(UserError) as info:
        check_fits(need, 8 << 30, torch.device("cpu"), sharing=2)
    message = str(info.value)
    assert "\n" not in message and "15.00 GiB" in message and "8.00 GiB" in message
    assert "lower --points_per_pass" in message and "2 rank(s)" in message


def test_keep_freed_memory_keeps_a_freed_batch_for_the_next_one():
    """After keep_freed_memory (what the CLI's evaluating commands call), a 16 MiB tensor is allocated from the
    heap, not mapped on its own, and its memory stays with the process once freed (glibc's mallinfo2): the next
    batch reuses it instead of faulting fresh pages in. Without it, the same tensor is mapped and unmapped."""
    import subprocess
    import sys

    script = """
import ctypes, sys, torch
from landscape.core.device import keep_freed_memory
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                                              "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info
kept = keep_freed_memory() if sys.argv[1] == "keep" else False
x = torch.ones(4 * 2**20)
mapped = libc.mallinfo2().hblkhd
del x
print(kept, mapped >= 16 * 2**20, libc.mallinfo2().fordblks >= 16 * 2**20)
"""
    def run(mode):
        out = subprocess.run([sys.executable, "-c", script, mode], capture_output=True, text=True, check=True)
        return out.stdout.split()

    assert run("keep") == ["True", "False", "True"]
    assert run("system") == ["False", "True", "False"]
