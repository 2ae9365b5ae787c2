"""A user mistake ends the CLI with exit code 2 and one line `landscape: error: ...`, no traceback.

Every case is a real subprocess (`run_surface(args, check=False)`); the cases are started
two at a time by a module fixture so the file stays fast on a small machine, and each
parametrized test checks its own case.
"""
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from landscape.core.models import build_model

from conftest import run_surface

BASE = ["--x=-1:1:3", "--threads", "1", "--no-plot", "--no-progress"]


def write_files(folder):
    """Inputs of the cases: checkpoints and YAML job files."""
    files = {}
    files["mlp.pt"] = folder / "mlp.pt"
    torch.save(build_model("digits_mlp").state_dict(), files["mlp.pt"])
    state = build_model("digits_cnn").state_dict()
    state["classifier.weight"][3, 5] = float("nan")
    files["nan.pt"] = folder / "nan.pt"
    torch.save({"state_dict": state}, files["nan.pt"])
    files["garbage.pt"] = folder / "garbage.pt"
    files["garbage.pt"].write_bytes(b"not a checkpoint at all")
    files["typo.yaml"] = folder / "typo.yaml"
    files["typo.yaml"].write_text("model: digits_cnn\nbatch_sise: 64\n")
    files["list.yaml"] = folder / "list.yaml"
    files["list.yaml"].write_text("- model\n- digits_cnn\n")
    files["broken.yaml"] = folder / "broken.yaml"
    files["broken.yaml"].write_text("model: [digits_cnn\nx: 1\n")
    from landscape.api import compute_surface
    from landscape.core.data import load_dataset

    files["mlp_surface.h5"] = folder / "mlp_surface.h5"  # directions of another model
    compute_surface(build_model("digits_mlp"), {"train": load_dataset("digits")["train"]}, x="-1:1:2",
                    surf_file=files["mlp_surface.h5"])
    return files


# id: (extra arguments, words the one error line must contain); {name} is a file of write_files,
# {dir} the case's folder
CASES = {
    "grid-num-zero": (["--x=1:-1:0"], ["1:-1:0", "num"]),
    "grid-not-numbers": (["--x=a:b:c"], ["a:b:c", "number"]),
    "grid-two-parts": (["--x=-1:1"], ["-1:1", "min:max:num"]),
    "unknown-model": (["--model", "resnet9000"], ["resnet9000", "digits_cnn"]),
    "unknown-dataset": (["--dataset", "imagenet21k"], ["imagenet21k", "digits"]),
    "missing-checkpoint": (["--model_file", "{dir}/nope.pt"], ["nope.pt", "does not exist"]),
    "checkpoint-of-other-model": (["--model", "digits_cnn", "--model_file", "{mlp.pt}"],
                                  ["mlp.pt", "missing keys", "unexpected keys", "features.0.weight", "net.1.weight"]),
    "checkpoint-not-torch": (["--model_file", "{garbage.pt}"], ["garbage.pt"]),
    "checkpoint-nan": (["--model_file", "{nan.pt}"], ["nan.pt", "NaN", "classifier.weight"]),
    "unknown-xnorm": (["--xnorm", "foo"], ["xnorm", "'foo'", "filter"]),
    "unknown-loss": (["--loss_name", "hinge"], ["loss_name", "'hinge'", "crossentropy"]),
    "yaml-unknown-key": (["--config", "{typo.yaml}"], ["batch_sise", "did you mean 'batch_size'"]),
    "yaml-not-a-mapping": (["--config", "{list.yaml}"], ["list.yaml", "mapping"]),
    "yaml-invalid": (["--config", "{broken.yaml}"], ["broken.yaml", "YAML"]),
    "missing-config": (["--config", "{dir}/absent.yaml"], ["absent.yaml", "does not exist"]),
    "output-folder-missing": (["--surf_file", "{dir}/no/such/folder/s.h5"],
                              ["no/such/folder'", "does not exist"]),
    "batch-size-not-a-number": (["--batch_size", "big"], ["batch_size", "'big'"]),
    "dir-file-of-other-model": (["--dir_file", "{mlp_surface.h5}"], ["x direction", "does not fit the model"]),
    "dir-file-missing": (["--dir_file", "{dir}/none.h5"], ["none.h5", "does not exist"]),
    "dir-file-not-hdf5": (["--dir_file", "{garbage.pt}"], ["garbage.pt", "not a readable HDF5 file"]),
    "trajectory-matches-nothing": (["--trajectory", "{dir}/ckpt_*.pt"], ["ckpt_*.pt", "matches no file"]),
    "trajectory-too-few": (["--trajectory", "{mlp.pt}"], ["at least 3 checkpoints"]),
    "model-file3-alone": (["--model_file3", "{mlp.pt}"], ["needs --model_file2"]),
    "subset-too-large": (["--subset", "100000"], ["--subset 100000", "larger than split"]),
    "bn-recompute-without-bn": (["--model", "digits_mlp", "--bn_recompute", "100"], ["no batch-norm layer"]),
    "unknown-split": (["--splits", "train,valid"], ["'valid'", "train"]),
}


def case_args(name, folder, files):
    extra, _ = CASES[name]
    subst = {k: str(v) for k, v in files.items()}
    subst["dir"] = str(folder)
    args = BASE + ["--surf_file", str(folder / "s.h5")]
    out = []
    for a in extra:
        for key, value in subst.items():
            a = a.replace("{" + key + "}", value)
        out.append(a)
    return args + out


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Runs every case (two subprocesses at a time): {case: (CompletedProcess, folder)}."""
    root = tmp_path_factory.mktemp("cli_errors")
    files = write_files(root)
    folders = {}
    for name in CASES:
        folders[name] = root / name
        folders[name].mkdir()
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(run_surface, case_args(name, folders[name], files), check=False, timeout=120)
                   for name in CASES}
        return {name: (f.result(), folders[name]) for name, f in futures.items()}


@pytest.mark.parametrize("case", list(CASES))
def test_user_error_is_one_line_and_exit_2(results, case):
    proc, folder = results[case]
    report = f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.returncode == 2, report
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, report
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, report
    assert lines[0].startswith("landscape: error:"), report
    for word in CASES[case][1]:
        assert word in lines[0], f"{word!r} not in: {lines[0]}"
    # nothing was written
    assert not (folder / "s.h5").exists()
    assert not (folder / "s.h5.lock").exists()


# Validation of the job itself, before any model or data is touched: checked in-process
# (same entry point, `landscape.cli.main`), which is cheap enough for many more cases.
CONFIG_CASES = {
    "grid-min-above-max": (["--x=1:-1:5"], ["1:-1:5", "smaller"]),
    "grid-num-not-whole": (["--x=-1:1:2.5"], ["-1:1:2.5", "whole"]),
    "grid-infinite": (["--x=-inf:1:3"], ["finite"]),
    "grid-y": (["--y=0:1:0"], ["--y", "0:1:0"]),
    "unknown-ynorm": (["--y=-1:1:3", "--ynorm", "bar"], ["ynorm", "'bar'"]),
    "unknown-ignore": (["--xignore", "all"], ["xignore", "'all'", "biasbn"]),
    "unknown-dir-type": (["--dir_type", "buffers"], ["dir_type", "'buffers'"]),
    "unknown-write": (["--write", "collective"], ["write", "'collective'"]),
    "unknown-split": (["--splits", "train,valid"], ["'valid'"]),
    "batch-size-negative": (["--batch_size=-1"], ["batch_size"]),
    "threads-negative": (["--threads=-2"], ["threads"]),
    "seed-not-a-number": (["--seed", "one"], ["seed", "'one'"]),
    "yaml-bad-value": (["--config", "{badvalue.yaml}"], ["batch_size", "'many'"]),
    "yaml-bad-bool": (["--config", "{badbool.yaml}"], ["plot", "'sometimes'"]),
    "yaml-unknown-key-no-close-match": (["--config", "{zzz.yaml}"], ["zzzzzz", "known keys"]),
}


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_config_error_in_process(tmp_path, capsys, case):
    from landscape.cli import main

    (tmp_path / "badvalue.yaml").write_text("batch_size: many\n")
    (tmp_path / "badbool.yaml").write_text("plot: sometimes\n")
    (tmp_path / "zzz.yaml").write_text("zzzzzz: 1\n")
    extra, words = CONFIG_CASES[case]
    extra = [a.replace("{", str(tmp_path) + "/").replace("}", "") for a in extra]
    code = main(["surface", *BASE, "--surf_file", str(tmp_path / "s.h5"), *extra])
    out, err = capsys.readouterr()
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("landscape: error:"), err
    for word in words:
        assert word in lines[0], f"{word!r} not in: {lines[0]}"
    assert not (tmp_path / "s.h5").exists()
