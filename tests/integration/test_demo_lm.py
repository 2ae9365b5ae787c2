"""The embedded language-model demo's parts (scripts/demo_lm.sh), small: the standard-library corpus
(file-level split, token files that decode to the sources), `landscape train --task causal_lm` on it
(the loss falls), and its checkpoints loaded through `hf:` and `--model_file` giving Hugging Face's
own loss. Offline: HF_HUB_OFFLINE=1."""
from __future__ import annotations

import json
import os
import sysconfig
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers is imported

import pytest  # noqa: E402
import torch  # noqa: E402

from landscape.api import compute_surface  # noqa: E402
from landscape.cli.main import main  # noqa: E402
from landscape.core.corpus import decode, path_hash, stdlib_corpus, stdlib_files  # noqa: E402
from landscape.core.data import load_dataset  # noqa: E402
from landscape.core.models import build_model, load_checkpoint  # noqa: E402

pytest.importorskip("transformers")

TRAIN_BYTES, VAL_BYTES, SEQ_LEN = 16_384, 4_096, 64
STDLIB = Path(sysconfig.get_paths()["stdlib"])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    return folder, stdlib_corpus(folder, train_bytes=TRAIN_BYTES, val_bytes=VAL_BYTES)


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory):
    """lm_tiny trained by the CLI for 2 epochs of 10 AdamW steps; its checkpoint folder."""
    folder, _ = corpus
    out = tmp_path_factory.mktemp("lm_ckpt")
    assert main(["train", "--model", "lm_tiny", "--task", "causal_lm", "--dataset", f"tokens:{folder}/stdlib_train.bin",
                 "--seq_len", str(SEQ_LEN), "--epochs", "2", "--steps", "10", "--batch_size", "8",
                 "--out_dir", str(out)]) == 0
    return out


def test_split_is_by_file_disjoint_and_follows_the_path_hash(corpus):
    _, m = corpus
    train = [f for f, _ in m["splits"]["train"]["files"]]
    val = [f for f, _ in m["splits"]["val"]["files"]]
    assert train and val and not set(train) & set(val)
    assert all(path_hash(f) % 10 for f in train) and all(path_hash(f) % 10 == 0 for f in val)
    every = stdlib_files()
    assert set(train) | set(val) <= set(every)
    assert not any(part in ("test", "tests", "site-packages", "encodings") for f in every for part in f.split("/")[:-1])


def test_token_files_decode_to_the_source_bytes_and_are_reproducible(corpus, tmp_path):
    folder, m = corpus
    for split, size in (("train", TRAIN_BYTES), ("val", VAL_BYTES)):
        info = m["splits"][split]
        want = b"".join((STDLIB / f).read_bytes()[:n] for f, n in info["files"])
        assert info["bytes"] == size and decode(folder / f"stdlib_{split}.bin") == want
        # every file but the last is used whole
        assert all(n == (STDLIB / f).stat().st_size for f, n in info["files"][:-1])
    assert json.loads((folder / "stdlib_manifest.json").read_text())["fingerprint"] == m["fingerprint"]
    assert stdlib_corpus(tmp_path, train_bytes=TRAIN_BYTES, val_bytes=VAL_BYTES)["fingerprint"] == m["fingerprint"]


def test_training_lowers_train_and_test_loss(trained):
    history = json.loads((trained / "history.json").read_text())
    assert [h["epoch"] for h in history] == [0, 1, 2]
    test = [h["test_loss"] for h in history]
    assert test[0] > test[1] > test[2] and test[0] > 5.0  # ln 256 = 5.55 at the start
    assert history[1]["train_loss"] > history[2]["train_loss"]


def test_checkpoint_loads_by_hf_and_model_file_and_gives_hf_own_loss(corpus, trained):
    folder, _ = corpus
    history = json.loads((trained / "history.json").read_text())
    last = trained / "epoch_002"
    model = build_model(f"hf:{last}", task="causal_lm")
    same = build_model("lm_tiny")
    load_checkpoint(same, last / "model.safetensors")
    for (name, a), b in zip(model.state_dict().items(), same.state_dict().values()):
        assert torch.equal(a, b), name
    ids = load_dataset(f"tokens:{folder}/stdlib_train.bin", seq_len=SEQ_LEN, splits=["test"])["test"].inputs
    with torch.no_grad():
        hf = model(input_ids=ids, labels=ids).loss.double().item()  # all blocks have T - 1 predicted tokens
    assert history[-1]["test_loss"] == pytest.approx(hf, rel=1e-5)
    few = ids[:16]
    with torch.no_grad():
        hf = model(input_ids=few, labels=few).loss.double().item()
    s = compute_surface(model, {"train": (few, few)}, x="-1:1:3", task="causal_lm", batch_size=16, progress=False)
    assert s.values["train/loss"][1] == pytest.approx(hf, rel=1e-5)
    assert s.values["train/loss"][0] > hf and s.values["train/loss"][2] > hf
