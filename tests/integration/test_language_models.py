"""Language models (issue: `hf:` models, `--task causal_lm`, `tokens:` data): a tiny Llama saved with
save_pretrained, a nanoGPT-style token file, the surface under mpirun checked against Hugging Face's
own loss (`labels=`), 2 ranks against 1 process, a resume, a sequence classifier through the API, and
the user's mistakes as one-line errors. Offline: HF_HUB_OFFLINE=1 for this process and its children."""
from __future__ import annotations

import copy
import os
from concurrent.futures import ThreadPoolExecutor

os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers is imported; cli_env() copies os.environ

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from landscape.analysis.hessian import HessianVectorProduct  # noqa: E402
from landscape.api import compute_surface  # noqa: E402
from landscape.core.data import load_dataset  # noqa: E402
from landscape.core.models import build_model  # noqa: E402
from landscape.core.tasks import CausalLM, logits_of, make_task  # noqa: E402

from conftest import run_surface  # noqa: E402
from lm_factory import BLOCKS, SEQ_LEN, VOCAB, save_causal_lm, save_classifier, write_tokens  # noqa: E402

pytest.importorskip("transformers")

BASE = ["--task", "causal_lm", "--x=-1:1:5", "--dir_type", "weights", "--threads", "1", "--no-plot", "--no-progress"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lm")
    out = {"model": save_causal_lm(folder / "lm"), "train": write_tokens(folder / "train.bin"),
           "val": write_tokens(folder / "val.bin", blocks=10, seed=1), "folder": folder}
    return out


def moved(model, direction, alpha):
    """A copy of `model` at θ* + α·δ (δ keyed by parameter name; a tied weight once)."""
    m = copy.deepcopy(model)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name in direction:
                p += alpha * torch.as_tensor(direction[name])
    return m


def brute_force_lm(model, ids):
    """(loss, acc) from Hugging Face's own loss: each block's mean over its T − 1 predicted tokens,
    loss = Σ_blocks loss_b · (T − 1) / (blocks · (T − 1)); acc = 100 · correct next tokens / that count."""
    total = correct = 0.0
    with torch.no_grad():
        for block in ids:
            out = model(input_ids=block[None], labels=block[None])
            total += out.loss.double().item() * (len(block) - 1)
            correct += (out.logits[0, :-1].argmax(-1) == block[1:]).sum().item()
    n = len(ids) * (ids.shape[1] - 1)
    return total / n, 100.0 * correct / n


def blocks(path, seq_len=SEQ_LEN):
    return torch.from_numpy(np.fromfile(path, dtype=np.uint16).astype(np.int64)).view(-1, seq_len)


def surface_args(files, path):
    return ["--model", f"hf:{files['model']}", "--dataset", f"tokens:{files['train']}", "--seq_len", str(SEQ_LEN),
            "--splits", "train,test", *BASE, "--surf_file", str(path)]


def test_causal_lm_surface_under_mpirun_matches_hugging_face_loss(files):
    """2 ranks: every value (train = train.bin, test = val.bin) equals HF's loss of the moved model within
    1e-5; one process (θ* also read from model.safetensors, the tied head filled in) gives the same values;
    rerunning the finished job computes 0 points; its Hessian map is finite."""
    two, one = files["folder"] / "two.h5", files["folder"] / "one.h5"
    run_surface(surface_args(files, two), ranks=2)
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(files["model"], local_files_only=True).eval()
    with h5py.File(two) as f:
        direction = {k: v[...] for k, v in f["directions/x"].items()}
        values = {k: f[k][...] for k in ("train/loss", "train/acc", "test/loss", "test/acc")}
    for split, path in (("train", files["train"]), ("test", files["val"])):
        want = np.array([brute_force_lm(moved(model, direction, a), blocks(path)) for a in np.linspace(-1, 1, 5)])
        np.testing.assert_allclose(values[f"{split}/loss"], want[:, 0], rtol=1e-5)
        np.testing.assert_allclose(values[f"{split}/acc"], want[:, 1], rtol=1e-5)
    run_surface([*surface_args(files, one), "--model_file", str(files["model"] / "model.safetensors")])
    with h5py.File(one) as f:
        for k, v in values.items():
            np.testing.assert_allclose(f[k][...], v, rtol=1e-6)
    resumed = run_surface(surface_args(files, two), ranks=2)
    assert "this run: 0 points" in resumed.stdout + resumed.stderr
    from landscape.cli import main  # the Hessian map of the mean per-token loss: double backward runs (eager attention)

    assert main(["hessian", str(one), "--subset", "8", "--max_iter", "10", "--threads", "1", "--no-plot",
                 "--no-progress"]) == 0
    with h5py.File(one) as f:
        top, bottom = f["hessian/lambda_max"][...], f["hessian/lambda_min"][...]
    assert np.isfinite(top).all() and np.isfinite(bottom).all() and (top > bottom).all()


def test_token_blocks_and_subset(files):
    """tokens:PATH: consecutive blocks of seq_len ids (int64), labels = inputs; --subset picks blocks with
    subset_rows' rule; the test split is val.bin."""
    all_blocks = blocks(files["train"])
    splits = load_dataset(f"tokens:{files['train']}", seq_len=SEQ_LEN, splits=["train", "test"])
    assert splits["train"].inputs.dtype == torch.int64 and len(splits["train"]) == BLOCKS
    assert torch.equal(splits["train"].inputs, all_blocks) and torch.equal(splits["train"].labels, all_blocks)
    assert torch.equal(splits["test"].inputs, blocks(files["val"]))
    picked = load_dataset(f"tokens:{files['train']}", seq_len=SEQ_LEN, subset=(5, "random"))["train"]
    rows = np.sort(np.random.RandomState(0).permutation(BLOCKS)[:5])
    assert torch.equal(picked.inputs, all_blocks[torch.from_numpy(rows)])


def test_sequence_classifier_through_the_api(tmp_path):
    """An HF sequence classifier (3 classes) on token ids: each value equals HF's own loss (`labels=`)."""
    model = build_model(f"hf:{save_classifier(tmp_path / 'cls')}", task="classification")
    gen = torch.Generator().manual_seed(0)
    ids, labels = torch.randint(1, VOCAB, (12, 8), generator=gen), torch.randint(0, 3, (12,), generator=gen)
    result = compute_surface(model, {"train": (ids, labels)}, x="-1:1:3", task="classification", progress=False)
    want = []
    for a in np.linspace(-1, 1, 3):
        with torch.no_grad():
            want.append(moved(model, result.directions[0], a)(input_ids=ids, labels=labels).loss.item())
    np.testing.assert_allclose(result.values["train/loss"], want, rtol=1e-5)


def test_causal_lm_task_sums_stacked_and_hessian_count(files):
    """CausalLM: −100 labels are not predicted; k stacked points' sums equal one at a time; the Hessian's
    L(θ) is the mean per predicted token (HF's loss over the batch)."""
    task = make_task("causal_lm")
    gen = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(3, 2, 5, 7, generator=gen), torch.randint(0, 7, (2, 5), generator=gen)
    labels[0, 2] = -100
    assert task.count(labels) == 2 * 4 - 1
    stacked = task.sums(logits, labels, stacked=True)
    np.testing.assert_allclose(stacked, torch.stack([task.sums(z, labels) for z in logits]), rtol=1e-12)
    with pytest.raises(Exception, match="crossentropy"):
        make_task("causal_lm", "mse")
    model = build_model(f"hf:{files['model']}", task="causal_lm")
    ids = blocks(files["train"])[:6]
    hvp = HessianVectorProduct(model, ids, ids, lambda out, y: CausalLM().loss(logits_of(out), y), batch_size=4,
                               count=task.count)
    assert hvp.count == 6 * (SEQ_LEN - 1)
    with torch.no_grad():
        want = model(input_ids=ids, labels=ids).loss.item()
    assert hvp.prepare() == pytest.approx(want, rel=1e-5)


def error_cases(files):
    folder = files["folder"]
    (folder / "noconfig").mkdir(exist_ok=True)
    big = folder / "big_train.bin"
    np.full(4 * SEQ_LEN, VOCAB + 3, dtype=np.uint16).tofile(big)
    empty = folder / "empty_train.bin"
    empty.write_bytes(b"")
    model, data = f"hf:{files['model']}", f"tokens:{files['train']}"
    return {  # id: (model, dataset, seq_len, words the one error line must contain)
        "no-folder": (f"hf:{folder / 'missing'}", data, SEQ_LEN, ["missing", "does not exist"]),
        "no-config": (f"hf:{folder / 'noconfig'}", data, SEQ_LEN, ["noconfig", "config.json"]),
        "ids-above-vocab": (model, f"tokens:{big}", SEQ_LEN, [str(VOCAB + 3), "vocabulary", str(VOCAB)]),
        "seq-len-above-context": (model, data, 80, ["--seq_len 80", "64"]),
        "empty-file": (model, f"tokens:{empty}", SEQ_LEN, ["empty_train.bin", "empty"]),
    }


def test_bad_input_is_one_line_and_exit_2(files):
    cases = error_cases(files)

    def run(case):
        model, data, seq_len, _ = cases[case]
        return run_surface(["--model", model, "--dataset", data, "--seq_len", str(seq_len), *BASE, "--surf_file",
                            str(files["folder"] / f"{case}.h5")], check=False)

    with ThreadPoolExecutor(max_workers=2) as pool:
        procs = dict(zip(cases, pool.map(run, cases)))
    for case, proc in procs.items():
        report = f"{case}: exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, report
        assert all(w in lines[0] for w in cases[case][3]), report
