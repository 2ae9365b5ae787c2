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
from landscape.analysis.trajectory import pca_directions  # noqa: E402
from landscape.api import compute_surface  # noqa: E402
from landscape.core.data import load_dataset  # noqa: E402
from landscape.core.models import build_model, load_checkpoint, read_state_dict  # noqa: E402
from landscape.core.tasks import CausalLM, logits_of, make_task  # noqa: E402
from landscape.errors import UserError  # noqa: E402

from conftest import run_surface  # noqa: E402
from lm_factory import (  # noqa: E402
    BLOCKS,
    SEQ_LEN,
    VOCAB,
    save_causal_lm,
    save_classifier,
    save_regressor,
    tiny_config,
    token_classes,
    token_targets,
    write_tokens,
)

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


def hf_loss(model, ids, labels):
    """(loss, acc) of a sequence classifier from Hugging Face's own loss (`labels=`: cross-entropy, or the MSE of a
    one-output model); acc = 100 · correct / examples (NaN for a regressor)."""
    with torch.no_grad():
        out = model(input_ids=ids, labels=labels)
    acc = 100.0 * (out.logits.argmax(-1) == labels).double().mean().item() if out.logits.shape[-1] > 1 else np.nan
    return out.loss.item(), acc


def test_a_sequence_regressor_keeps_its_score_head_with_regression_and_user_metrics(tmp_path):
    """A one-output ...ForSequenceClassification folder with --task regression (CLI, float targets) and with the
    user's own metrics (API) is loaded as saved, score head and all: each value is HF's own MSE (`labels=`) of the
    moved model."""
    folder, path = save_regressor(tmp_path / "reg"), tmp_path / "reg.h5"
    run_surface(["--model", f"hf:{folder}", "--task", "regression", "--dataset", "lm_factory:token_targets", "--splits",
                 "train,test", "--x=-1:1:3", "--dir_type", "weights", "--threads", "1", "--no-plot", "--no-progress",
                 "--surf_file", str(path)])
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(folder, local_files_only=True).eval()
    with h5py.File(path) as f:
        direction = {k: v[...] for k, v in f["directions/x"].items()}
        values = {split: f[f"{split}/loss"][...] for split in ("train", "test")}
        assert "score.weight" in direction
    for split, (ids, y) in zip(("train", "test"), token_targets()):
        want = [hf_loss(moved(model, direction, a), ids, y)[0] for a in np.linspace(-1, 1, 3)]
        np.testing.assert_allclose(values[split], want, rtol=1e-5)
    user = build_model(f"hf:{folder}", task="lm_factory:logits_mse")
    assert type(user).__name__ == "LlamaForSequenceClassification"
    ids, y = token_targets()[0]
    result = compute_surface(user, {"train": (ids, y)}, x="-1:1:3", task="lm_factory:logits_mse", progress=False)
    want = [hf_loss(moved(model, result.directions[0], a), ids, y)[0] for a in np.linspace(-1, 1, 3)]
    np.testing.assert_allclose(result.values["train/loss"], want, rtol=1e-5)


def test_the_auto_class_follows_the_saved_architecture(tmp_path):
    """The head comes from config.json's architectures, the task only without one; a task the head cannot serve and
    an architecture landscape cannot evaluate (a base model) are one-line errors."""
    import json
    import shutil

    folder = save_classifier(tmp_path / "cls")
    for task in ("classification", "regression", None, "lm_factory:logits_mse"):
        assert type(build_model(f"hf:{folder}", task=task)).__name__ == "LlamaForSequenceClassification"
    with pytest.raises(UserError, match="LlamaForSequenceClassification.*--task classification or --task regression"):
        build_model(f"hf:{folder}", task="causal_lm")

    def variant(name, architectures):
        copy_ = shutil.copytree(folder, tmp_path / name)
        config = json.loads((copy_ / "config.json").read_text())
        config["architectures"] = architectures
        (copy_ / "config.json").write_text(json.dumps(config))
        return copy_

    plain = variant("plain", None)
    assert type(build_model(f"hf:{plain}", task="regression")).__name__ == "LlamaForSequenceClassification"
    assert type(build_model(f"hf:{plain}", task="causal_lm")).__name__ == "LlamaForCausalLM"
    with pytest.raises(UserError, match="LlamaModel, which landscape cannot evaluate"):
        build_model(f"hf:{variant('base', ['LlamaModel'])}", task="classification")


def test_model_file_takes_hugging_face_checkpoint_folders(files, tmp_path):
    """--model_file / --model_file2 / --trajectory take HF checkpoint folders: save_pretrained's (one file, or sharded
    with an index) and a Trainer-style checkpoint-N/ with pytorch_model.bin hold the same tensors as the single file;
    through the CLI α = 0 and α = 1 are HF's own losses of the two folders' models."""
    from transformers import LlamaForCausalLM

    one = save_causal_lm(tmp_path / "one", seed=1)
    sharded = tmp_path / "sharded"
    LlamaForCausalLM.from_pretrained(one, local_files_only=True).save_pretrained(sharded, max_shard_size="20KB")
    assert len(list(sharded.glob("model-*.safetensors"))) > 2 and (sharded / "model.safetensors.index.json").is_file()
    torch.manual_seed(2)
    two = LlamaForCausalLM(tiny_config()).eval()
    trainer = tmp_path / "checkpoint-7"
    trainer.mkdir()
    torch.save(two.state_dict(), trainer / "pytorch_model.bin")
    single = read_state_dict(one / "model.safetensors")
    for folder in (one, sharded):
        got = read_state_dict(folder)
        assert set(got) == set(single) and all(torch.equal(got[k], single[k]) for k in single)
    model = build_model(f"hf:{files['model']}", task="causal_lm")
    load_checkpoint(model, sharded)
    reference = LlamaForCausalLM.from_pretrained(one, local_files_only=True)
    assert all(torch.equal(p, q) for p, q in zip(model.state_dict().values(), reference.state_dict().values()))
    final = dict(build_model(f"hf:{files['model']}", task="causal_lm").named_parameters())
    three = save_causal_lm(tmp_path / "three", seed=3)
    by_folder = pca_directions(final, [str(sharded), str(trainer), str(three)])
    by_file = pca_directions(final, [str(one / "model.safetensors"), str(trainer / "pytorch_model.bin"),
                                     str(three / "model.safetensors")])
    np.testing.assert_array_equal(by_folder.coords, by_file.coords)
    path = tmp_path / "line.h5"
    run_surface(["--model", f"hf:{files['model']}", "--model_file", str(sharded), "--model_file2", str(trainer),
                 "--dataset", f"tokens:{files['train']}", "--seq_len", str(SEQ_LEN), "--task", "causal_lm", "--x=0:1:2",
                 "--subset", "8", "--threads", "1", "--no-plot", "--no-progress", "--surf_file", str(path)])
    with h5py.File(path) as f:
        loss = f["train/loss"][...]
    ids = blocks(files["train"])[:8]
    np.testing.assert_allclose(loss, [brute_force_lm(reference.eval(), ids)[0], brute_force_lm(two, ids)[0]], rtol=1e-5)


EXACT = ["--points_per_pass", "1", "--no-compile", "--no-channels_last", "--batch_size", "512", "--threads", "1", "--no-plot",
         "--no-progress"]


def clear_and_rerun(path, args, points, ranks=2):
    """Mark `points` (flat indices) not done, their values NaN, and rerun the job: it computes exactly those."""
    with h5py.File(path, "r+") as f:
        for key in ("mask", *[f"{s}/{m}" for s in ("train", "test") if s in f for m in ("loss", "acc") if m in f[s]]):
            values = f[key][...]
            values.flat[points] = 0 if key == "mask" else np.nan
            f[key][...] = values
    proc = run_surface(args, ranks=ranks)
    assert f"this run: {len(points)} points" in proc.stdout + proc.stderr, proc.stdout + proc.stderr


def surface_values(path):
    with h5py.File(path) as f:
        return {k: f[k][...] for k in ("mask", "train/loss", "train/acc", "test/loss", "test/acc")}


def test_sequence_classifier_under_mpirun_equals_one_process_hugging_face_and_a_resume(tmp_path):
    """An hf: sequence classifier (task inferred) on the user's token dataset, 3×3 grid: 2 ranks equal 1 process bit
    for bit and HF's own loss (`labels=`) and accuracy of the moved model; with a third of the mask cleared the rerun
    computes only those points and gives the same file."""
    folder = save_classifier(tmp_path / "cls")
    two, one = tmp_path / "two.h5", tmp_path / "one.h5"

    def args(path):
        return ["--model", f"hf:{folder}", "--dataset", "lm_factory:token_classes", "--splits", "train,test",
                "--x=-1:1:3", "--y=-1:1:3", "--dir_type", "weights", "--batch_size", "8", *EXACT, "--surf_file", str(path)]

    run_surface(args(two), ranks=2)
    run_surface(args(one))
    done, alone = surface_values(two), surface_values(one)
    assert done["mask"].all()
    for k in done:
        np.testing.assert_array_equal(alone[k], done[k], err_msg=k)
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(folder, local_files_only=True).eval()
    with h5py.File(two) as f:
        dx = {k: v[...] for k, v in f["directions/x"].items()}
        dy = {k: v[...] for k, v in f["directions/y"].items()}
    coords = np.linspace(-1, 1, 3)
    for split, (ids, labels) in zip(("train", "test"), token_classes()):
        for ix, a in enumerate(coords):
            for iy, b in enumerate(coords):  # value[iy, ix] is at (x[ix], y[iy])
                loss, acc = hf_loss(moved(moved(model, dx, a), dy, b), ids, labels)
                assert done[f"{split}/loss"][iy, ix] == pytest.approx(loss, rel=1e-5), (split, ix, iy)
                assert done[f"{split}/acc"][iy, ix] == pytest.approx(acc, rel=1e-6), (split, ix, iy)
    clear_and_rerun(two, args(two), [1, 4, 8])
    for k, v in surface_values(two).items():
        np.testing.assert_array_equal(v, done[k], err_msg=k)


def test_causal_lm_surface_resumed_after_a_partial_run_equals_an_uninterrupted_one(files, tmp_path):
    """A causal-LM surface (2 ranks, one evaluation configuration forced) with 2 of its 5 points cleared from the mask
    is completed by a rerun to the same values bit for bit."""
    path = tmp_path / "lm.h5"
    args = ["--model", f"hf:{files['model']}", "--dataset", f"tokens:{files['train']}", "--seq_len", str(SEQ_LEN),
            "--splits", "train,test", "--task", "causal_lm", "--x=-1:1:5", "--dir_type", "weights", *EXACT,
            "--surf_file", str(path)]
    run_surface(args, ranks=2)
    done = surface_values(path)
    assert done["mask"].all() and np.isfinite(done["train/loss"]).all()
    clear_and_rerun(path, args, [0, 3])
    for k, v in surface_values(path).items():
        np.testing.assert_array_equal(v, done[k], err_msg=k)


def error_cases(files):
    folder = files["folder"]
    (folder / "noconfig").mkdir(exist_ok=True)
    big = folder / "big_train.bin"
    np.full(4 * SEQ_LEN, VOCAB + 3, dtype=np.uint16).tofile(big)
    empty = folder / "empty_train.bin"
    empty.write_bytes(b"")
    empty_text = folder / "empty_train.txt"
    empty_text.write_text("")
    (folder / "no_weights").mkdir(exist_ok=True)
    model, data = f"hf:{files['model']}", f"tokens:{files['train']}"
    return {  # id: (model, dataset, seq_len, words the one error line must contain, more arguments)
        "no-folder": (f"hf:{folder / 'missing'}", data, SEQ_LEN, ["missing", "does not exist"], []),
        "no-config": (f"hf:{folder / 'noconfig'}", data, SEQ_LEN, ["noconfig", "config.json"], []),
        "ids-above-vocab": (model, f"tokens:{big}", SEQ_LEN, [str(VOCAB + 3), "vocabulary", str(VOCAB)], []),
        "seq-len-above-context": (model, data, 80, ["--seq_len 80", "64"], []),
        "empty-file": (model, f"tokens:{empty}", SEQ_LEN, ["empty_train.bin", "empty"], []),
        "empty-text": (model, f"text:{empty_text}", SEQ_LEN, ["empty_train.txt", "empty"], []),
        "set-output": ("lm_factory:set_output", data, SEQ_LEN, ["returned a set", "logits"], []),
        "string-output": ("lm_factory:string_output", data, SEQ_LEN, ["returned a str", "logits"], []),
        "folder-without-weights": (model, data, SEQ_LEN, ["no_weights", "holds no weights", "model.safetensors"],
                                   ["--model_file", str(folder / "no_weights")]),
        "causal-lm-as-regressor": (model, data, SEQ_LEN, ["LlamaForCausalLM", "--task regression", "--task causal_lm"],
                                   ["--task", "regression"]),
    }


def test_bad_input_is_one_line_and_exit_2(files):
    """Each mistake (a missing or broken folder, bad token data, an empty text file, a model whose output holds no
    logits, a checkpoint folder without weights, a task the head does not serve) is one line, exit code 2."""
    cases = error_cases(files)

    def run(case):
        model, data, seq_len, _, more = cases[case]
        return run_surface(["--model", model, "--dataset", data, "--seq_len", str(seq_len), *BASE, *more, "--surf_file",
                            str(files["folder"] / f"{case}.h5")], check=False)

    with ThreadPoolExecutor(max_workers=2) as pool:
        procs = dict(zip(cases, pool.map(run, cases)))
    for case, proc in procs.items():
        report = f"{case}: exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, report
        assert all(w in lines[0] for w in cases[case][3]), report
