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

from ..errors import UserError
from . import surface_file

AXES = ("xdirection", "ydirection")
SPLITS = ("train", "test")
HESSIAN_KEYS = {"hessian/lambda_max": "max_eig", "hessian/lambda_min": "min_eig"}

Layout = list[tuple[str, tuple]]  # (tensor name, shape) by position


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


def match_layout(lists: list[list[np.ndarray]], layouts: dict[str, Layout], dir_type: str, path) -> tuple[str, Layout]:
    """The tensor order (weights or states) whose count and shapes fit the file's x direction.

    layouts: {kind: layout} as core.directions.tensor_layouts gives for the model; dir_type:
    weights, states, or auto (the first that fits)."""
    if dir_type not in ("auto", "weights", "states"):
        raise UserError(f"unknown dir_type {dir_type!r}: choose auto, weights or states")
    shapes = [tuple(a.shape) for a in lists[0]]
    notes = []
    for kind, layout in layouts.items():
        if dir_type != "auto" and not kind.startswith(dir_type):
            continue
        if len(layout) != len(shapes):
            notes.append(f"{len(layout)} {kind} tensors")
            continue
        bad = next((i for i, ((_, s), t) in enumerate(zip(layout, shapes)) if s != t), None)
        if bad is None:
            return kind.split()[0], layout
        notes.append(f"{kind} tensor {bad} is {layout[bad][0]} {layout[bad][1]}, the file's is {shapes[bad]}")
    raise UserError(f"{str(path)!r} holds {len(shapes)} tensors that do not fit the model (it has "
                    f"{'; '.join(notes)}): use the --model the file was made for")


def write_reference_directions(path: str | Path, directions: list[dict[str, np.ndarray]], layout: Layout) -> None:
    """Write directions in the reference's layout (h5_util.write_list): datasets by position.
    States files list every state_dict entry; num_batches_tracked (not a direction here) gets 0."""
    with h5py.File(path, "w") as f:
        for axis, d in zip(AXES, directions):
            group = f.create_group(axis)
            for i, (name, shape) in enumerate(layout):
                value = np.asarray(d[name]) if name in d else np.zeros(shape, np.float32)
                group.create_dataset(str(i), data=value.astype(np.float32))


def check_output(path: Path, force: bool, *inputs: str | Path) -> None:
    if any(path.resolve() == Path(p).resolve() for p in inputs):
        raise UserError(f"output {str(path)!r} is also an input: choose another output file")
    if path.exists() and not force:
        raise UserError(f"{str(path)!r} exists: pass --force to overwrite it or choose another output file")
    if not path.parent.is_dir():
        raise UserError(f"output folder {str(path.parent)!r} does not exist: create it first")


def export_surface(surf_file: str | Path, out_file: str | Path, *, layouts: dict[str, Layout] | None = None,
                   dir_out: str | Path | None = None, force: bool = False) -> list[str]:
    """Write `surf_file`'s values under the reference's key names (see the module docstring for
    the orientation); with `layouts` (core.directions.tensor_layouts of the model) and `dir_out`,
    also its directions as a reference direction file, named by the surface's `dir_file`.
    Returns the keys written."""
    out = Path(out_file)
    check_output(out, force, surf_file)
    if dir_out is not None:
        if layouts is None:
            raise UserError("exporting the directions needs the model that names their positions: give --model")
        check_output(Path(dir_out), force, surf_file, out)
    arrays = {}
    with surface_file.open_surface(surf_file) as f:
        if surface_file.ENSEMBLE_MASK in f:
            raise UserError(f"{str(surf_file)!r} holds a direction ensemble, which the reference tool's files cannot: "
                            "export one member computed alone (--seed S --member M, without --ensemble)")
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
        directions = surface_file.read_directions(surf_file)
        layout = layouts[job.get("dir_type", "weights")]
        names = {name for name, _ in layout}
        for axis, d in zip("xy", directions):
            missing = [n for n in names - set(d) if not n.endswith("num_batches_tracked")]
            if missing or set(d) - names or any(tuple(np.shape(d[n])) != s for n, s in layout if n in d):
                raise UserError(f"{axis} direction in {str(surf_file)!r} does not fit the model: "
                                "give the --model the surface was computed with")
        write_reference_directions(dir_out, directions, layout)
    tmp = out.with_name(out.name + ".tmp")
    with h5py.File(tmp, "w") as g:
        for key, value in arrays.items():
            g.create_dataset(key, data=value)
        if dir_out is not None:
            g["dir_file"] = str(dir_out)
    os.replace(tmp, out)
    return list(arrays) + (["dir_file"] if dir_out is not None else [])
