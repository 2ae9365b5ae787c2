"""Files of the reference implementation (github: tomgoldstein/loss-landscape).

Direction files (its net_plotter.setup_direction, h5_util.write_list): HDF5 groups
`xdirection` and, in 2D, `ydirection`, each with one dataset per tensor, named '0', '1', ...
by position: the position in `parameters()` for `weights` directions, in `state_dict()` for
`states` directions (every entry: BN `num_batches_tracked` too, in files made with
PyTorch >= 0.4.1). landscape keys directions by tensor name, so the model names the positions.

Surface files (its plot_surface.py): `xcoordinates`, `ycoordinates`, `<split>_loss`,
`<split>_acc` (mean loss, accuracy in percent), `dir_file`; Hessian maps `max_eig`, `min_eig`.

Orientation. The reference allocates its value arrays with shape (len(x), len(y)) but fills
them by the flat index of np.meshgrid(x, y), whose order is (y, x): flat entry k belongs to
(x[k % nx], y[k // nx]). A square grid thus reads as value[iy, ix], which is how its plot_2D
draws it against meshgrid(x, y); on a non-square grid the declared shape contradicts the
contents and its plots fail. The export keeps the reference's flat order and writes the shape
(len(y), len(x)), landscape's own axis order: identical to the reference's files on square
grids, and correct (plottable with the reference's scripts) on non-square ones. Points not
computed are written as -1, the reference's marker (its resume recomputes values <= 0).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np
import torch
from torch import nn

from . import store
from .directions import Direction, check_directions, target_tensors
from .errors import UserError

AXES = ("xdirection", "ydirection")
SPLITS = ("train", "test")
HESSIAN_KEYS = {"hessian/lambda_max": "max_eig", "hessian/lambda_min": "min_eig"}


def layouts(model: nn.Module) -> dict[str, list[tuple[str, tuple]]]:
    """(name, shape) by position in each tensor order a reference direction file may use."""
    states = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    return {
        "weights": [(k, tuple(p.shape)) for k, p in model.named_parameters()],
        "states": states,  # PyTorch >= 0.4.1: num_batches_tracked included
        "states (PyTorch < 0.4.1)": [(k, s) for k, s in states if not k.endswith("num_batches_tracked")],
    }


def read_lists(path: str | Path) -> list[list[np.ndarray]]:
    """The x (and y) direction of a reference direction file as lists of arrays by position."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"direction file {str(path)!r} does not exist")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise UserError(f"{str(path)!r} is not a readable HDF5 file ({exc})") from None
    with f:
        if AXES[0] not in f:
            raise UserError(f"{str(path)!r} has no 'xdirection' group: it is not a direction file of the reference tool")
        lists = []
        for axis in AXES:
            if axis not in f:
                continue
            group = f[axis]
            if set(group.keys()) != {str(i) for i in range(len(group))}:
                raise UserError(f"{str(path)!r}: group {axis!r} must hold datasets '0', '1', ... '{len(group) - 1}'")
            lists.append([group[str(i)][...] for i in range(len(group))])
    if len(lists) == 2 and len(lists[0]) != len(lists[1]):
        raise UserError(f"{str(path)!r}: xdirection has {len(lists[0])} tensors but ydirection {len(lists[1])}")
    return lists


def read_reference_directions(path: str | Path, model: nn.Module, dir_type: str = "auto") -> tuple[list[Direction], str]:
    """Directions of a reference direction file keyed by the tensor names of `model`.

    dir_type: weights, states, or auto (the tensor order whose count and shapes fit).
    Returns the directions (over `target_tensors(model, dir_type)`) and the dir_type."""
    if dir_type not in ("auto", "weights", "states"):
        raise UserError(f"unknown dir_type {dir_type!r}: choose auto, weights or states")
    lists = read_lists(path)
    shapes = [tuple(a.shape) for a in lists[0]]
    found, notes = None, []
    for kind, layout in layouts(model).items():
        if dir_type != "auto" and not kind.startswith(dir_type):
            continue
        if len(layout) != len(shapes):
            notes.append(f"{len(layout)} {kind} tensors")
            continue
        bad = next((i for i, ((_, s), t) in enumerate(zip(layout, shapes)) if s != t), None)
        if bad is None:
            found = (kind, layout)
            break
        notes.append(f"{kind} tensor {bad} is {layout[bad][0]} {layout[bad][1]}, the file's is {shapes[bad]}")
    if found is None:
        raise UserError(f"{str(path)!r} holds {len(shapes)} tensors that do not fit the model (it has "
                        f"{'; '.join(notes)}): use the --model the file was made for")
    kind, layout = found
    kind = kind.split()[0]
    wanted = target_tensors(model, kind)
    directions = [
        {name: torch.as_tensor(a, dtype=torch.float32) for (name, _), a in zip(layout, arrays) if name in wanted}
        for arrays in lists
    ]
    return directions, kind


def write_reference_directions(path: str | Path, directions: list[Direction], model: nn.Module, dir_type: str) -> None:
    """Write directions in the reference's layout (h5_util.write_list): datasets by position.
    States files list every state_dict entry; num_batches_tracked (not a direction here) gets 0."""
    check_directions(directions, model, dir_type, "the directions")
    layout = layouts(model)[dir_type]
    with h5py.File(path, "w") as f:
        for axis, d in zip(AXES, directions):
            group = f.create_group(axis)
            for i, (name, shape) in enumerate(layout):
                value = d[name] if name in d else np.zeros(shape, np.float32)
                value = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
                group.create_dataset(str(i), data=value.astype(np.float32))


def write_directions(path: str | Path, directions: list[Direction], attrs: dict) -> None:
    """A landscape directions-only file (directions/x, directions/y by name): a --dir_file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with h5py.File(tmp, "w") as f:
        f.attrs["format"] = store.DIRECTIONS_FORMAT
        f.attrs["format_version"] = store.FORMAT_VERSION
        for k, v in attrs.items():
            f.attrs[k] = v
        for axis, d in zip("xy", directions):
            group = f.create_group(f"directions/{axis}")
            for name, t in d.items():
                group.create_dataset(name, data=t.detach().cpu().numpy())
    os.replace(tmp, path)


def check_output(path: Path, force: bool, *inputs: str | Path) -> None:
    if any(path.resolve() == Path(p).resolve() for p in inputs):
        raise UserError(f"output {str(path)!r} is also an input: choose another output file")
    if path.exists() and not force:
        raise UserError(f"{str(path)!r} exists: pass --force to overwrite it or choose another output file")
    if not path.parent.is_dir():
        raise UserError(f"output folder {str(path.parent)!r} does not exist: create it first")


def import_directions(ref_file: str | Path, out_file: str | Path, model: nn.Module, *, model_name: str = "",
                      dir_type: str = "auto", force: bool = False) -> tuple[str, int]:
    """Convert a reference direction file into a directions-only file for --dir_file.
    Returns the dir_type found and the number of directions."""
    out = Path(out_file)
    check_output(out, force, ref_file)
    directions, kind = read_reference_directions(ref_file, model, dir_type)
    write_directions(out, directions, {"dir_type": kind, "model": model_name, "source": str(ref_file)})
    return kind, len(directions)


def export_surface(surf_file: str | Path, out_file: str | Path, *, model: nn.Module | None = None,
                   dir_out: str | Path | None = None, force: bool = False) -> list[str]:
    """Write `surf_file`'s values under the reference's key names (see the module docstring for
    the orientation); with `model` and `dir_out`, also its directions as a reference direction
    file, named by the surface's `dir_file`. Returns the keys written."""
    out = Path(out_file)
    check_output(out, force, surf_file)
    if dir_out is not None:
        if model is None:
            raise UserError("exporting the directions needs the model that names their positions: give --model")
        check_output(Path(dir_out), force, surf_file, out)
    arrays = {}
    with store.open_surface(surf_file) as f:
        job = json.loads(f.attrs.get("job", "{}"))
        arrays["xcoordinates"] = f["x"][...]
        if "y" in f:
            arrays["ycoordinates"] = f["y"][...]
        done = f["mask"][...].astype(bool) if "mask" in f else None
        for split in SPLITS:
            for metric in ("loss", "acc"):
                if f"{split}/{metric}" in f:
                    values = f[f"{split}/{metric}"][...].astype(np.float64)
                    missing = np.isnan(values) if done is None else (~done | np.isnan(values))
                    arrays[f"{split}_{metric}"] = np.where(missing, -1.0, values)
        for key, name in HESSIAN_KEYS.items():
            if key in f:
                arrays[name] = f[key][...].astype(np.float64)
    if dir_out is not None:
        directions = [{k: torch.as_tensor(v) for k, v in d.items()} for d in store.read_directions(surf_file)]
        write_reference_directions(dir_out, directions, model, job.get("dir_type", "weights"))
    tmp = out.with_name(out.name + ".tmp")
    with h5py.File(tmp, "w") as g:
        for key, value in arrays.items():
            g.create_dataset(key, data=value)
        if dir_out is not None:
            g["dir_file"] = str(dir_out)
    os.replace(tmp, out)
    return list(arrays) + (["dir_file"] if dir_out is not None else [])
