"""Files of the reference tool (tomgoldstein/loss-landscape): its direction-file layout in both
directions, and the export of a surface file to its key names and orientation."""
import json

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from landscape.api import read_reference_directions
from landscape.cli import main
from landscape.core.data import load_dataset
from landscape.core.directions import as_arrays, random_directions, tensor_layouts
from landscape.core.models import build_model
from landscape.errors import UserError
from landscape.io import reference
from landscape.io import surface_file as store

from conftest import run_surface


def write_like_reference(path, lists):
    """What its h5_util.write_list writes: group 'xdirection' (and 'ydirection'), datasets '0', '1', ..."""
    with h5py.File(path, "w") as f:
        for axis, arrays in zip(("xdirection", "ydirection"), lists):
            group = f.create_group(axis)
            for i, a in enumerate(arrays):
                group.create_dataset(str(i), data=a)


def reference_lists(model, directions, order):
    """Directions as the reference keeps them: lists by position in `order` (name, tensor) pairs;
    entries that are no direction here (num_batches_tracked) are 0, as its biasbn makes them."""
    return [[d[k].numpy() if k in d else np.zeros(t.shape, np.float32) for k, t in order] for d in directions]


def landscape_cli(*args):
    """`landscape ARGS` in this process (these subcommands use no MPI)."""
    assert main(list(args)) == 0


@pytest.mark.parametrize("dir_type", ["weights", "states"])
def test_direction_file_round_trip(tmp_path, dir_type):
    model = build_model("digits_cnn")
    directions = random_directions(model, seed=3, dir_type=dir_type, ndim=2, ignores=("none", "none"))
    order = list(model.named_parameters()) if dir_type == "weights" else list(model.state_dict().items())
    reference.write_reference_directions(tmp_path / "ours.h5", as_arrays(directions), tensor_layouts(model)[dir_type])
    write_like_reference(tmp_path / "theirs.h5", reference_lists(model, directions, order))
    with h5py.File(tmp_path / "ours.h5") as a, h5py.File(tmp_path / "theirs.h5") as b:
        assert set(a) == set(b) == {"xdirection", "ydirection"}
        for axis in b:
            assert set(a[axis]) == set(b[axis]) == {str(i) for i in range(len(order))}
            for i in b[axis]:
                np.testing.assert_array_equal(a[axis][i][...], b[axis][i][...])
    back, kind = read_reference_directions(tmp_path / "theirs.h5", model)
    assert kind == dir_type
    for d, e in zip(back, directions):
        assert list(d) == list(e)
        for k in d:
            torch.testing.assert_close(d[k], e[k], rtol=0, atol=0)


def test_states_file_of_old_pytorch_has_no_num_batches_tracked(tmp_path):
    model = build_model("digits_cnn")
    directions = random_directions(model, seed=0, dir_type="states", ndim=1)
    old = [(k, t) for k, t in model.state_dict().items() if not k.endswith("num_batches_tracked")]
    write_like_reference(tmp_path / "old.h5", reference_lists(model, directions, old))
    back, kind = read_reference_directions(tmp_path / "old.h5", model, "states")
    assert kind == "states" and len(back) == 1 and set(back[0]) == set(directions[0])


def test_file_of_another_model_is_refused(tmp_path):
    model = build_model("digits_mlp")
    write_like_reference(tmp_path / "mlp.h5", [[p.detach().numpy() for p in model.parameters()]])
    with pytest.raises(UserError, match=r"holds 4 tensors that do not fit the model .*use the --model the file"):
        read_reference_directions(tmp_path / "mlp.h5", build_model("digits_cnn"))
    with h5py.File(tmp_path / "surface_not_directions.h5", "w") as f:
        f["xcoordinates"] = np.zeros(3)
    with pytest.raises(UserError, match="no 'xdirection' group"):
        read_reference_directions(tmp_path / "surface_not_directions.h5", model)


def test_reference_file_as_dir_file_gets_a_hint(tmp_path):
    write_like_reference(tmp_path / "ref.h5", [[np.zeros(3, np.float32)]])
    with pytest.raises(UserError, match="landscape import-directions"):
        store.read_directions(tmp_path / "ref.h5")


def test_import_surface_export_round_trip(tmp_path):
    """Reference direction file -> import-directions -> surface job on a non-square grid with
    --dir_file -> export-reference: coordinates, values, orientation and directions survive."""
    model = build_model("digits_cnn", seed=0)  # θ* of the job below (no model_file, seed 0)
    directions = random_directions(model, seed=5, dir_type="weights", ndim=2)
    lists = reference_lists(model, directions, list(model.named_parameters()))
    write_like_reference(tmp_path / "ref_dirs.h5", lists)

    landscape_cli("import-directions", str(tmp_path / "ref_dirs.h5"), "--model", "digits_cnn",
                  "--out", str(tmp_path / "dirs.h5"))
    surf = tmp_path / "surface.h5"
    run_surface(["--model", "digits_cnn", "--dir_file", str(tmp_path / "dirs.h5"), "--x=-1:1:3", "--y=0:0.5:2",
                 "--splits", "train,test", "--threads", "1", "--no-plot", "--no-progress", "--surf_file", str(surf)])
    landscape_cli("export-reference", str(surf), str(tmp_path / "ref_surface.h5"), "--model", "digits_cnn",
                  "--dir_out", str(tmp_path / "ref_dirs_out.h5"))

    with h5py.File(surf) as ours, h5py.File(tmp_path / "ref_surface.h5") as theirs:
        assert set(theirs) == {"xcoordinates", "ycoordinates", "train_loss", "train_acc", "test_loss", "test_acc",
                               "dir_file"}
        np.testing.assert_array_equal(theirs["xcoordinates"][...], [-1, 0, 1])
        np.testing.assert_array_equal(theirs["ycoordinates"][...], [0, 0.5])
        for key in ("train_loss", "train_acc", "test_loss", "test_acc"):
            assert theirs[key].shape == (2, 3)  # (len(y), len(x)): see landscape.reference
            np.testing.assert_array_equal(theirs[key][...], ours[key.replace("_", "/")][...])
        assert theirs["dir_file"][()].decode() == str(tmp_path / "ref_dirs_out.h5")
        # the reference's flat order: entry k is meshgrid(x, y) entry k; check k = 5: (x=1, y=0.5)
        X, Y = np.meshgrid(theirs["xcoordinates"][...], theirs["ycoordinates"][...])
        k = 5
        a, b = X.ravel()[k], Y.ravel()[k]
        loss_k = theirs["train_loss"][...].ravel()[k]
    assert (a, b) == (1.0, 0.5)
    train = load_dataset("digits")["train"]
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_(a * directions[0][name] + b * directions[1][name])
        want = F.cross_entropy(model.eval()(train.inputs), train.labels).item()
    assert loss_k == pytest.approx(want, rel=1e-5)

    # the exported directions are the reference file we started from
    with h5py.File(tmp_path / "ref_dirs.h5") as a_file, h5py.File(tmp_path / "ref_dirs_out.h5") as b_file:
        for axis in ("xdirection", "ydirection"):
            assert len(a_file[axis]) == len(b_file[axis])
            for i in a_file[axis]:
                np.testing.assert_array_equal(a_file[axis][i][...], b_file[axis][i][...])


def test_export_marks_missing_points_like_the_reference(tmp_path):
    """1D, partly computed: the reference's -1 marks what is missing (its resume recomputes it)."""
    path = tmp_path / "partial.h5"
    with h5py.File(path, "w") as f:
        f.attrs["format"] = store.FORMAT
        f.attrs["job"] = json.dumps({"dir_type": "weights"})
        f["x"] = np.linspace(-1, 1, 4)
        f["train/loss"] = np.array([2.0, np.nan, 0.5, 1.5])
        f["train/acc"] = np.array([10.0, np.nan, 90.0, 50.0])
        f["mask"] = np.array([1, 0, 1, 0], np.uint8)  # point 3 has values but no mask entry
    keys = reference.export_surface(path, tmp_path / "ref.h5")
    assert keys == ["xcoordinates", "train_loss", "train_acc"]
    with h5py.File(tmp_path / "ref.h5") as f:
        np.testing.assert_array_equal(f["train_loss"][...], [2.0, -1, 0.5, -1])
        np.testing.assert_array_equal(f["train_acc"][...], [10.0, -1, 90.0, -1])
    with pytest.raises(UserError, match="exists: pass --force"):
        reference.export_surface(path, tmp_path / "ref.h5")
    with pytest.raises(UserError, match="needs the model"):
        reference.export_surface(path, tmp_path / "ref2.h5", dir_out=tmp_path / "d.h5")
