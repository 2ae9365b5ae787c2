"""The user's own model, dataset and loss (`package.module:name`), end to end and their errors.

The factories live in tests/custom_factory.py (on the path of these tests and of the CLI runs)."""
import json

import h5py
import numpy as np
import pytest
import torch

from landscape.core.data import check_labels, load_dataset
from landscape.core.importpath import check_loss
from landscape.core.models import build_model, num_outputs
from landscape.errors import UserError
from landscape.options import build_job

import custom_factory
from conftest import run_surface


def test_surface_job_with_own_model_data_and_loss(tmp_path):
    surf = tmp_path / "s.h5"
    run_surface(["--model", "custom_factory:tiny_net", "--dataset", "custom_factory:tiny_data",
                 "--loss_name", "custom_factory:summed_hinge", "--splits", "train,test",
                 "--x=-1:1:3", "--y=-1:1:3", "--threads", "1", "--no-plot", "--no-progress", "--surf_file", str(surf)])
    model = build_model("custom_factory:tiny_net", seed=0).eval()  # the job's θ*: its seed is 0 too
    data = load_dataset("custom_factory:tiny_data")
    with h5py.File(surf) as f:
        assert f["mask"][...].all()
        assert json.loads(f.attrs["job"])["loss_name"] == "custom_factory:summed_hinge"
        for name, split in data.items():
            with torch.no_grad():
                want = custom_factory.summed_hinge(model(split.inputs), split.labels).item() / len(split)
                acc = 100.0 * (model(split.inputs).argmax(1) == split.labels).double().mean().item()
            loss = f[f"{name}/loss"][...]
            assert loss.shape == (3, 3) and np.isfinite(loss).all()
            assert loss[1, 1] == pytest.approx(want, rel=1e-5)  # the centre (0, 0) is θ* itself
            assert f[f"{name}/acc"][1, 1] == pytest.approx(acc)


def test_dataset_factory_forms():
    dict_form = load_dataset("custom_factory:tiny_data")
    assert {k: len(v) for k, v in dict_form.items()} == {"train": 30, "test": 15}
    assert dict_form["test"].inputs.shape == (15, 6) and dict_form["test"].labels.dtype == torch.int64
    torch.testing.assert_close(dict_form["train"].inputs, custom_factory.blobs(30, 1)[0])
    pair = load_dataset("custom_factory:tiny_pair")
    assert {k: len(v) for k, v in pair.items()} == {"train": 12, "test": 6}
    single = load_dataset("custom_factory:tiny_dataset", splits=["train"])
    assert len(single["train"]) == 9
    with pytest.raises(UserError, match="has no 'test' split"):
        load_dataset("custom_factory:tiny_dataset", splits=["train", "test"])


@pytest.mark.parametrize("path, message", [
    ("no_such_module:net", "there is no module 'no_such_module'"),
    ("custom_factory:missing", "has no 'missing'"),
    ("custom_factory:torch", "not a function or class"),
    ("custom_factory", "unknown model"),
    ("custom_factory:not_a_model", "returned a str, not a torch.nn.Module"),
])
def test_model_factory_errors(path, message):
    with pytest.raises(UserError, match=message):
        build_model(path)


def test_dataset_factory_errors():
    with pytest.raises(UserError, match="no module 'nowhere'"):
        load_dataset("nowhere:data")
    with pytest.raises(UserError, match="returned a int"):
        load_dataset("custom_factory:not_data")
    wide = load_dataset("custom_factory:wide_labels", splits=["train"])["train"]
    with pytest.raises(UserError, match=r"labels in \[5, 7\] but the model has 3 outputs"):
        check_labels(wide, num_outputs(build_model("custom_factory:tiny_net"), wide.inputs[:2]), "train")


def test_model_that_does_not_fit_the_data():
    with pytest.raises(UserError, match="fails on inputs of shape"):
        num_outputs(build_model("custom_factory:tiny_net"), torch.zeros(2, 1, 8, 8), "custom_factory:tiny_net")


def test_loss_contract_is_checked():
    logits, labels = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    check_loss("custom_factory:summed_hinge", logits, labels)
    with pytest.raises(UserError, match="looks like a mean"):
        check_loss("custom_factory:mean_ce", logits, labels)
    with pytest.raises(UserError, match=r"returns shape \(4,\): it must return a 0-dim float tensor"):
        check_loss("custom_factory:per_sample_ce", logits, labels)
    with pytest.raises(UserError, match="fails on logits"):
        check_loss("custom_factory:blobs", logits, labels)


def test_config_accepts_import_paths():
    job = build_job({"model": "pkg.mod:net", "dataset": "pkg.mod:data", "loss_name": "pkg.mod:loss"})
    assert job.loss_name == "pkg.mod:loss"
    with pytest.raises(UserError, match="unknown loss_name"):
        build_job({"loss_name": "hinge"})


def test_labels_out_of_range_is_one_line_from_the_cli(tmp_path):
    proc = run_surface(["--model", "custom_factory:tiny_net", "--dataset", "custom_factory:wide_labels",
                        "--x=-1:1:3", "--threads", "1", "--no-plot", "--surf_file", str(tmp_path / "s.h5")], check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "landscape: error: split 'train' has labels in [5, 7] but the model has 3 outputs: "
        "use a model with as many outputs as classes"]
