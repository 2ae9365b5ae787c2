"""The CIFAR-10 model zoo (landscape.zoo) and checkpoint loading in every form."""
import pytest
import torch
from torch import nn

from landscape.core import zoo
from landscape.core.models import MODELS, build_model, load_checkpoint, read_state_dict
from landscape.errors import UserError

import custom_factory

# Exact parameter counts (sum of numel over parameters()).
# Source: the CIFAR-10 model definitions of the reference implementation (github:
# tomgoldstein/loss-landscape, cifar10/models/{resnet,vgg,densenet}.py), run separately: same
# counts, same state_dict keys, shapes and parameter order, equal outputs on equal weights.
# Published: He et al. 2016, Table 6: ResNet-20/56/110 have 0.27M/0.85M/1.7M parameters with
# option-A (parameter-free) shortcuts, exactly our `_noshort` counts; the reference's 1x1
# conv + BN projections (16->32, 32->64) add 2,752. DenseNet-121 for CIFAR (growth 32):
# 6,956,298, the ~7.0M usually quoted. WRN-56-2 and VGG-9: the reference's definitions.
PARAMETERS = {
    "resnet20": 272_474,
    "resnet56": 855_770,
    "resnet110": 1_730_714,
    "resnet20_noshort": 269_722,
    "resnet56_noshort": 853_018,
    "resnet110_noshort": 1_727_962,
    "wrn56_2": 3_412_394,
    "vgg9": 2_789_706,
    "densenet121": 6_956_298,
}


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", list(PARAMETERS))
def test_zoo_model_forward_and_parameter_count(name):
    model = build_model(name, seed=0).eval()
    assert count(model) == PARAMETERS[name]
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10) and torch.isfinite(out).all()


def test_every_zoo_model_is_registered_and_counted():
    assert set(zoo.MODELS) == set(PARAMETERS)
    assert set(zoo.MODELS) <= set(MODELS)


def test_reference_key_names_and_shortcuts():
    keys = set(build_model("resnet20").state_dict())
    assert {"conv1.weight", "bn1.running_var", "layer2.0.shortcut.0.weight", "layer2.0.shortcut.1.bias",
            "layer3.2.conv2.weight", "linear.weight"} <= keys
    assert "layer1.0.shortcut.0.weight" not in keys  # identity where the shape is kept
    assert not any("shortcut" in k for k in build_model("resnet20_noshort").state_dict())
    assert "fc.1.running_mean" in build_model("vgg9").state_dict()
    assert "trans3.conv.weight" in build_model("densenet121").state_dict()


def test_generic_wide_resnet_factory():
    model = zoo.wide_resnet(depth=20, k=4, num_classes=100)
    assert model.layer3[0].conv1.out_channels == 256
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 100)
    with pytest.raises(ValueError, match="6n \\+ 2"):
        zoo.CifarResNet(depth=21)


def test_build_model_is_seeded():
    a, b, c = (build_model("resnet20", seed=s) for s in (1, 1, 2))
    assert torch.equal(a.conv1.weight, b.conv1.weight) and not torch.equal(a.conv1.weight, c.conv1.weight)


# --- checkpoints ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained():
    """A resnet20 whose weights and BN statistics differ from any fresh initialization."""
    model = build_model("resnet20", seed=7)
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.add_(torch.rand_like(t))
    return model


def check_loads(path, trained):
    fresh = build_model("resnet20", seed=0)
    load_checkpoint(fresh, path)
    for k, v in trained.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k


@pytest.mark.parametrize("form", ["plain", "state_dict", "model_dict", "model_module", "module_prefix",
                                  "dataparallel_module", "whole_model", "compiled_prefix"])
def test_checkpoint_forms(tmp_path, trained, form):
    sd = trained.state_dict()
    obj = {
        "plain": sd,
        "state_dict": {"state_dict": sd, "epoch": 300, "acc": 93.0, "model": "resnet20"},
        "model_dict": {"model": sd, "optimizer": {"lr": 0.1}},
        "model_module": {"model": trained, "epoch": 3},
        "module_prefix": {"state_dict": {f"module.{k}": v for k, v in sd.items()}},
        "dataparallel_module": nn.DataParallel(trained),
        "whole_model": trained,
        "compiled_prefix": {f"_orig_mod.{k}": v for k, v in sd.items()},
    }[form]
    torch.save(obj, tmp_path / "ckpt.pt")
    check_loads(tmp_path / "ckpt.pt", trained)


def test_whole_user_model_checkpoint(tmp_path):
    net = custom_factory.tiny_net()
    torch.save(net, tmp_path / "whole.pt")
    assert set(read_state_dict(tmp_path / "whole.pt")) == set(net.state_dict())


def test_checkpoint_without_num_batches_tracked(tmp_path, trained):
    """PyTorch < 0.4.1 (the reference's trained models) had no BN num_batches_tracked."""
    old = {k: v for k, v in trained.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save({"state_dict": old}, tmp_path / "old.t7")
    check_loads(tmp_path / "old.t7", trained)


def test_mismatch_names_missing_and_unexpected_keys(tmp_path):
    torch.save(build_model("resnet20_noshort").state_dict(), tmp_path / "noshort.pt")
    with pytest.raises(UserError, match=r"missing keys: layer2\.0\.shortcut\.0\.weight") as err:
        load_checkpoint(build_model("resnet20"), tmp_path / "noshort.pt")
    assert "check --model and --model_file" in str(err.value)
    torch.save(build_model("resnet20").state_dict(), tmp_path / "short.pt")
    with pytest.raises(UserError, match=r"unexpected keys: layer2\.0\.shortcut\.0\.weight"):
        load_checkpoint(build_model("resnet20_noshort"), tmp_path / "short.pt")
    torch.save(build_model("wrn56_2").state_dict(), tmp_path / "wide.pt")
    with pytest.raises(UserError, match="wrong shapes: conv1.weight"):
        load_checkpoint(build_model("resnet56"), tmp_path / "wide.pt")


def test_unreadable_checkpoints(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        read_state_dict(tmp_path / "none.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot read checkpoint"):
        read_state_dict(tmp_path / "junk.pt")
    torch.save({"epoch": 3}, tmp_path / "meta.pt")
    with pytest.raises(UserError, match="holds no state_dict"):
        read_state_dict(tmp_path / "meta.pt")
