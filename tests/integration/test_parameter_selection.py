"""Parameter selection (`--params` / `--exclude`) and low-precision weights (`--dtype`), on a tiny tied
Llama saved with save_pretrained: only the selected tensors move (the others bit-identical at every
point), the values equal a brute-force loop with Hugging Face's own loss, the selection is recorded,
the Hessian map's centre equals the dense Hessian of the selected block, a glob that matches nothing
is one line; bf16 weights: α = 0 is exactly θ*, every other point within one bf16 rounding of
θ* + αδ computed in float64."""
from __future__ import annotations

import json
import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers is imported; cli_env() copies os.environ

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from landscape.api import compute_surface  # noqa: E402
from landscape.core.directions import random_directions, target_tensors  # noqa: E402
from landscape.core.models import build_model  # noqa: E402
from landscape.core.selection import Selection  # noqa: E402
from landscape.core.theta import ThetaWriter  # noqa: E402

from conftest import run_surface  # noqa: E402
from lm_factory import SEQ_LEN, save_causal_lm, write_tokens  # noqa: E402

pytest.importorskip("transformers")

LAYER = "model.layers.1.self_attn.k_proj"  # 32 × 32 weights, no bias
BASE = ["--task", "causal_lm", "--dir_type", "weights", "--threads", "1", "--no-plot", "--no-progress"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("select")
    return {"model": save_causal_lm(folder / "lm"), "train": write_tokens(folder / "train.bin", blocks=12),
            "folder": folder}


def ids_of(path):
    return torch.from_numpy(np.fromfile(path, dtype=np.uint16).astype(np.int64)).view(-1, SEQ_LEN)


def hf_loss(model, ids) -> float:
    """Hugging Face's own mean next-token loss over the blocks (each block has T − 1 predicted tokens)."""
    with torch.no_grad():
        return float(np.mean([model(input_ids=b[None], labels=b[None]).loss.item() for b in ids]))


def test_selection_moves_only_the_selected_tensors_and_equals_a_brute_force_loop(files):
    """2 ranks, --params on one layer's attention and --exclude of its v_proj: the directions hold exactly the
    selected tensors, the values equal HF's loss with only those moved, the selection is in the job and in
    `landscape info` with its size."""
    path = files["folder"] / "layer.h5"
    run_surface(["--model", f"hf:{files['model']}", "--dataset", f"tokens:{files['train']}", "--seq_len",
                 str(SEQ_LEN), "--x=-1:1:3", "--y=-1:1:3", "--params", "model.layers.1.self_attn",
                 "--exclude", "*.v_proj.*", *BASE, "--surf_file", str(path)], ranks=2)
    model = build_model(f"hf:{files['model']}", task="causal_lm")
    with h5py.File(path) as f:
        dirs = [{k: torch.from_numpy(v[...]) for k, v in f[f"directions/{a}"].items()} for a in "xy"]
        loss = f["train/loss"][...]
        job = json.loads(f.attrs["job"])
    assert set(dirs[0]) == {f"model.layers.1.self_attn.{p}_proj.weight" for p in "qko"}
    assert job["params"] == {"params": ["model.layers.1.self_attn"], "exclude": ["*.v_proj.*"], "tensors": 3,
                             "numel": 3 * 32 * 32}
    from landscape.viz.info import info

    assert "tensors moved: --params model.layers.1.self_attn --exclude *.v_proj.* (3 tensors, 3,072 parameters)" \
        in info(path)
    ids = ids_of(files["train"])
    origin = {k: v.detach().clone() for k, v in model.named_parameters()}
    for j, b in enumerate((-1.0, 0.0, 1.0)):
        for i, a in enumerate((-1.0, 0.0, 1.0)):
            with torch.no_grad():
                for k, p in model.named_parameters():
                    p.copy_(origin[k] + (a * dirs[0][k] + b * dirs[1][k] if k in dirs[0] else 0))
            assert loss[j, i] == pytest.approx(hf_loss(model, ids), rel=1e-5)


def test_unselected_tensors_are_bit_identical_at_every_point(files):
    """A forward pre-hook compares every unselected tensor with its bytes at θ* at every forward pass of a
    real run (one and four points per pass); the selected one has moved away from θ* at some point."""
    model = build_model(f"hf:{files['model']}", task="causal_lm")
    ids = ids_of(files["train"])
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    moved, checked = [], []

    def check(module, args):
        state = module.state_dict()
        same = [k for k in before if k != f"{LAYER}.weight" and not torch.equal(state[k], before[k])]
        assert not same, f"unselected tensors changed: {same[:3]}"
        moved.append(not torch.equal(state[f"{LAYER}.weight"], before[f"{LAYER}.weight"]))
        checked.append(1)

    handle = model.register_forward_pre_hook(check)
    try:
        result = compute_surface(model, {"train": (ids, ids)}, x="-1:1:5", task="causal_lm", params=LAYER)
    finally:
        handle.remove()
    assert list(result.directions[0]) == [f"{LAYER}.weight"] and any(moved) and len(checked) >= 5
    stacked = compute_surface(model, {"train": (ids, ids)}, x="-1:1:5", task="causal_lm", params=LAYER,
                              points_per_pass=4)  # vmap: only the selected tensor is stacked
    np.testing.assert_allclose(stacked.values["train/loss"], result.values["train/loss"], rtol=1e-5)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def dense_hessian(model, ids, name) -> np.ndarray:
    """∇² of HF's mean next-token loss over the blocks with respect to one weight, by torch.func (eager attention)."""
    from torch.func import functional_call, hessian

    model.set_attn_implementation("eager")
    params = {k: v.detach() for k, v in model.named_parameters()}
    n_tokens = ids.numel() - len(ids)

    def loss(w):
        out = functional_call(model, {**params, name: w.view(params[name].shape)}, (ids,), {"labels": ids})
        return out.loss  # the mean over the whole batch's predicted tokens

    assert n_tokens == len(ids) * (SEQ_LEN - 1)
    return hessian(loss)(params[name].reshape(-1)).double().numpy()


def test_hessian_map_of_a_selection_equals_the_dense_sub_block(files):
    """`landscape hessian` of a surface with --params on one 32×32 weight: λmax and λmin at the centre equal the
    extreme eigenvalues of the dense 1024×1024 Hessian of that weight alone (the rest held fixed)."""
    from landscape.cli import main

    path = files["folder"] / "hess.h5"
    run_surface(["--model", f"hf:{files['model']}", "--dataset", f"tokens:{files['train']}", "--seq_len",
                 str(SEQ_LEN), "--x=-1:1:3", "--params", LAYER, *BASE, "--surf_file", str(path)])
    assert main(["hessian", str(path), "--subset", "0", "--tol", "1e-6", "--max_iter", "300",
                 "--threads", "1", "--no-plot", "--no-progress"]) == 0
    with h5py.File(path) as f:
        top, bottom = f["hessian/lambda_max"][1], f["hessian/lambda_min"][1]
        assert json.loads(f["hessian"].attrs["params"]) == {"params": [LAYER], "exclude": []}
    model = build_model(f"hf:{files['model']}", task="causal_lm")
    eig = np.linalg.eigvalsh(dense_hessian(model, ids_of(files["train"]), f"{LAYER}.weight"))
    scale = max(abs(eig[0]), abs(eig[-1]))
    assert top == pytest.approx(eig[-1], rel=1e-4, abs=1e-6 * scale)
    assert bottom == pytest.approx(eig[0], rel=1e-4, abs=1e-6 * scale)


def test_a_glob_that_matches_nothing_is_one_line(files):
    for flag, glob in (("--params", "model.layer.9*"), ("--exclude", "*.nothing")):
        proc = run_surface(["--model", f"hf:{files['model']}", "--dataset", f"tokens:{files['train']}", "--seq_len",
                            str(SEQ_LEN), "--x=-1:1:3", flag, glob, *BASE, "--surf_file",
                            str(files["folder"] / "bad.h5")], check=False)
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 2 and len(lines) == 1, proc.stderr
        assert glob in lines[0] and "model.embed_tokens.weight" in lines[0] and flag in lines[0]
    assert not (files["folder"] / "bad.h5").exists()


def test_a_tied_weight_is_selected_by_any_of_its_names(files):
    """lm_head.weight is the embedding itself (tied): selecting it by the head's name moves the one tensor once."""
    model = build_model(f"hf:{files['model']}", task="causal_lm")
    chosen = target_tensors(model, "weights", Selection.of("lm_head"))
    assert list(chosen) == ["model.embed_tokens.weight"]
    (d,) = random_directions(model, seed=0, ndim=1, select=Selection.of("lm_head"))
    theta = ThetaWriter(model, [d], "weights", Selection.of("lm_head"))
    theta.write((1.0,))
    assert torch.allclose(model.lm_head.weight, theta.origin[0] + d["model.embed_tokens.weight"])
    theta.restore()


# ---------------------------------------------------------------- low-precision weights


def bf16_ulp(x: torch.Tensor) -> torch.Tensor:
    """The spacing of bfloat16 numbers at |x| (8 significant bits)."""
    return torch.exp2(torch.floor(torch.log2(x.abs().clamp(min=torch.finfo(torch.bfloat16).tiny))) - 7)


def test_bf16_weights_are_written_within_one_rounding_and_exactly_at_zero(files):
    """--dtype bf16: θ(0) is θ* bit for bit; θ(α, β) = θ* + αδ + βη (float64) within half a bf16 spacing per
    element, plus float32's own rounding of the terms (|θ*| + |αδ| + |βη|)·2⁻²², at every point; the same
    after many points (no drift)."""
    model = build_model(f"hf:{files['model']}", task="causal_lm", dtype="bf16")
    assert model.model.embed_tokens.weight.dtype == torch.bfloat16
    star = {k: v.detach().clone() for k, v in model.named_parameters()}
    dirs = random_directions(model, seed=3, ndim=2, norms=("filter", "filter"))
    theta = ThetaWriter(model, dirs)
    for coord in [(0.37, -0.81), (1e-3, 2e-3), (-1.0, 1.0), (0.5, 0.25)] * 3:
        theta.write(coord)
        for k, p in model.named_parameters():
            terms = [star[k].double(), coord[0] * dirs[0][k].double(), coord[1] * dirs[1][k].double()]
            exact, size = sum(terms), sum(t.abs() for t in terms)
            err = (p.detach().double() - exact).abs()
            assert (err <= 0.5 * bf16_ulp(exact).double() + 2.0**-22 * size + 1e-30).all(), k
    theta.restore()
    assert all(torch.equal(p, star[k]) for k, p in model.named_parameters())


def test_bf16_surface_through_the_cli(files):
    """A bf16 surface: its centre is the bf16 model's own HF loss, the file records the weights' dtype, and a
    resume in float32 is refused."""
    path = files["folder"] / "bf16.h5"
    args = ["--model", f"hf:{files['model']}", "--dataset", f"tokens:{files['train']}", "--seq_len", str(SEQ_LEN),
            "--x=-1:1:3", *BASE, "--surf_file", str(path)]
    run_surface([*args, "--dtype", "bf16"])
    with h5py.File(path) as f:
        centre, job = f["train/loss"][1], json.loads(f.attrs["job"])
    assert job["weights_dtype"] == "bfloat16"
    model = build_model(f"hf:{files['model']}", task="causal_lm", dtype="bf16")
    assert centre == pytest.approx(hf_loss(model, ids_of(files["train"])), rel=1e-3)
    proc = run_surface(args, check=False)
    assert proc.returncode == 2 and "weights_dtype" in proc.stderr


def test_bf16_points_per_pass_equal_one_point_at_a_time(files):
    """The stacked path writes bf16 parameter sets the same way: 4 points per pass equal 1 (bf16 logits)."""
    model = build_model(f"hf:{files['model']}", task="causal_lm", dtype="bf16")
    ids = ids_of(files["train"])[:4]
    one = compute_surface(model, {"train": (ids, ids)}, x="-0.5:0.5:4", task="causal_lm")
    four = compute_surface(model, {"train": (ids, ids)}, x="-0.5:0.5:4", task="causal_lm", points_per_pass=4)
    np.testing.assert_allclose(four.values["train/loss"], one.values["train/loss"], rtol=2e-2)
    assert one.values["train/loss"][0] != one.values["train/loss"][1]


def test_a_causal_lm_folder_is_refused_as_a_classifier_and_read_as_saved_by_the_reference_commands(files):
    """--task classification on a ...ForCausalLM folder is one line (it would get a random head); the
    reference-tool commands load an hf: folder as it was saved: export-reference --dir_out then
    import-directions gives back the surface's own directions."""
    from landscape.cli import main

    proc = run_surface(["--model", f"hf:{files['model']}", "--dataset", f"tokens:{files['train']}", "--seq_len",
                        str(SEQ_LEN), "--x=-1:1:3", "--task", "classification", "--no-plot", "--surf_file",
                        str(files["folder"] / "cls.h5")], check=False)
    assert proc.returncode == 2 and "LlamaForCausalLM" in proc.stderr and "--task causal_lm" in proc.stderr
    path, out = files["folder"] / "ref.h5", files["folder"]
    run_surface(["--model", f"hf:{files['model']}", "--dataset", f"tokens:{files['train']}", "--seq_len",
                 str(SEQ_LEN), "--x=-1:1:3", *BASE, "--surf_file", str(path)])
    model = f"hf:{files['model']}"
    assert main(["export-reference", str(path), str(out / "ref_surface.h5"), "--model", model, "--dir_out",
                 str(out / "ref_dirs.h5"), "--force"]) == 0
    assert main(["import-directions", str(out / "ref_dirs.h5"), "--model", model, "--out", str(out / "back.h5"),
                 "--dir_type", "weights", "--force"]) == 0
    with h5py.File(path) as f, h5py.File(out / "back.h5") as g:
        assert set(g["directions/x"]) == set(f["directions/x"])
        for k in f["directions/x"]:
            np.testing.assert_array_equal(g[f"directions/x/{k}"][...], f[f"directions/x/{k}"][...])


def test_the_task_is_inferred_from_a_causal_lm_and_stated_in_the_file(files):
    """No --task: a ...ForCausalLM folder is evaluated as a causal LM (its centre is HF's own loss), and the file's
    job and stored config say causal_lm, so `landscape info` shows perplexity and a Hessian map uses that loss."""
    import yaml

    from landscape.viz.info import info

    path = files["folder"] / "auto.h5"
    run_surface(["--model", f"hf:{files['model']}", "--dataset", f"tokens:{files['train']}", "--seq_len",
                 str(SEQ_LEN), "--x=-1:1:3", "--threads", "1", "--no-plot", "--no-progress", "--surf_file", str(path)])
    with h5py.File(path) as f:
        job, config, centre = json.loads(f.attrs["job"]), yaml.safe_load(f.attrs["config"]), f["train/loss"][1]
    assert job["task"] == config["task"] == "causal_lm"
    model = build_model(f"hf:{files['model']}", task=None)
    assert centre == pytest.approx(hf_loss(model, ids_of(files["train"])), rel=1e-5)
    assert "perplexity" in info(path)
