"""Token data through the real CLI (issue 16): a `text:` dataset tokenized with the tokenizer saved in
the `hf:` model folder gives HF's own `labels=` loss at the centre; a resume that reads the text with
another tokenizer is refused, one with the same blocks from a `datasets` folder resumes; and a token
file larger than the process's address-space limit is evaluated without being mapped whole."""
from __future__ import annotations

import os
import subprocess
import sys

os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers is imported; cli_env() copies os.environ

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from conftest import ROOT, cli_env, run_surface  # noqa: E402
from lm_factory import save_causal_lm, tiny_config  # noqa: E402
from token_corpus import corpus, rows_of, save_tokenizer, train_tokenizer, word_ids, write_hfdata, write_text  # noqa: E402

pytest.importorskip("transformers")
pytest.importorskip("datasets")

SEQ = 16
BASE = ["--task", "causal_lm", "--seq_len", str(SEQ), "--x=-1:1:3", "--threads", "1", "--no-plot", "--no-progress"]


def hf_loss(model, ids: np.ndarray) -> tuple[float, float]:
    """HF's `labels=` loss of the blocks of `ids` (one batch: the mean over all predicted tokens) and
    the next-token accuracy in percent."""
    n = len(ids) // SEQ
    blocks = torch.from_numpy(ids[: n * SEQ]).view(n, SEQ)
    with torch.no_grad():
        out = model(input_ids=blocks, labels=blocks)
    acc = (out.logits[:, :-1].argmax(-1) == blocks[:, 1:]).double().mean().item() * 100
    return out.loss.item(), acc


def test_text_surface_centre_is_hugging_face_loss_and_resume_checks_the_tokenizer(tmp_path):
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    train, test = corpus()
    tok = train_tokenizer(train)
    config = tiny_config()
    config.vocab_size = 400  # above the tokenizer's words and the 256 byte ids
    assert 256 < tok.get_vocab_size() < config.vocab_size
    torch.manual_seed(0)
    folder = tmp_path / "lm"
    LlamaForCausalLM(config).save_pretrained(folder)
    save_tokenizer(tok, folder)
    text = write_text(tmp_path / "data", train, test)
    surf = tmp_path / "surface.h5"
    args = ["--model", f"hf:{folder}", "--dataset", f"text:{text}", "--splits", "train,test", *BASE,
            "--surf_file", str(surf)]
    run_surface(args)
    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True).eval()
    with h5py.File(surf) as f:
        for split, part in (("train", train), ("test", test)):
            loss, acc = hf_loss(model, word_ids(tok, part))
            assert f[f"{split}/loss"][1] == pytest.approx(loss, rel=1e-5)
            assert f[f"{split}/acc"][1] == pytest.approx(acc, rel=1e-9)
    refused = run_surface([*args, "--tokenizer", "bytes"], check=False)
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert refused.returncode == 2 and len(lines) == 1 and "another job" in lines[0], refused.stderr
    assert "data_fingerprint" in lines[0], refused.stderr
    ids = write_hfdata(tmp_path / "hfdata", {"input_ids": rows_of(word_ids(tok, train))},
                       {"input_ids": rows_of(word_ids(tok, test))})
    same = run_surface([*args[:2], "--dataset", f"hfdata:{ids}", *args[4:]])
    assert "this run: 0 points" in same.stdout + same.stderr


PROBE = """
import resource, sys
import torch, mpi4py.MPI, transformers  # imported (MPI initialized) before the limit
from landscape.cli import main

def vm_size():
    return next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmSize"))

limit = vm_size() + int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
rc = main(sys.argv[2:])
print("peak RSS growth", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before)
sys.exit(rc)
"""


def test_token_file_larger_than_the_address_space_limit(tmp_path):
    """An 8 GiB token file (sparse: os.truncate, every id 0) evaluated with --subset 4 in a process whose
    address space (RLIMIT_AS) may grow by only 2 GiB after torch and MPI are loaded: mapping the whole
    file would fail (ENOMEM), so only the blocks used were mapped. Measured too: the process's peak
    RSS (ru_maxrss) grows by less than 1 GiB, an eighth of the file, from its value once torch,
    MPI and transformers are loaded (shared-library pages paged in count in RSS: seen here from
    0.4 to 1.8 GB in all, by how warm the page cache was); the loss is HF's on 4 blocks of zeros."""
    big = tmp_path / "train.bin"
    with open(big, "wb") as fh:
        fh.truncate(8 << 30)
    folder = save_causal_lm(tmp_path / "lm")
    surf = tmp_path / "big.h5"
    args = ["surface", "--model", f"hf:{folder}", "--dataset", f"tokens:{big}", "--subset", "4", *BASE,
            "--surf_file", str(surf)]
    proc = subprocess.run([sys.executable, "-c", PROBE, str(2 << 30), *args], env=cli_env(), cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    peak = int(proc.stdout.split("peak RSS growth")[-1])
    assert peak < (1 << 30), peak
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True).eval()
    with h5py.File(surf) as f:
        assert f["train/loss"][1] == pytest.approx(hf_loss(model, np.zeros(4 * SEQ, dtype=np.int64))[0], rel=1e-5)
