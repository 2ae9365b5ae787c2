"""`landscape vtk SURFACE.h5`: a 2D surface as a VTK file for ParaView, written with meshio.

meshio writes no structured grid (.vts), so the grid goes out as an unstructured grid of quads
(.vtu, XML, zlib-compressed; or legacy .vtk): point (ix, iy) is (x[ix], y[iy], z) with
z = zscale · loss (zscale · log10 loss with log) of one split. Point data: `<split>_loss`,
`<split>_acc` of every split (NaN where not computed) and `computed` (the mask). Quads are made
only between four points whose z is finite, so points not computed (or with a non-finite z) are
holes in the surface; their z is set to the lowest finite z (they stay in the point data).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import UserError
from ..io.surface_file import read_surface

SUFFIXES = (".vtu", ".vtk")


def surface_mesh(surf, split: str, log: bool = False, zscale: float = 1.0):
    """(points (ny·nx, 3), quads (k, 4), point_data) of a loaded 2D surface; point index iy·nx + ix."""
    nx, ny = len(surf.x), len(surf.y)
    X, Y = np.meshgrid(surf.x, surf.y)  # (ny, nx)
    loss = np.where(surf.mask, surf.values[split]["loss"], np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = zscale * (np.log10(loss) if log else loss)
    ok = np.isfinite(z)
    z = np.where(ok, z, np.min(z[ok]) if ok.any() else 0.0)
    points = np.column_stack([X.ravel(), Y.ravel(), z.ravel()])
    idx = np.arange(nx * ny).reshape(ny, nx)
    corners = [idx[:-1, :-1], idx[:-1, 1:], idx[1:, 1:], idx[1:, :-1]]  # counter-clockwise
    keep = ok[:-1, :-1] & ok[:-1, 1:] & ok[1:, 1:] & ok[1:, :-1]
    quads = np.column_stack([c[keep] for c in corners])
    data = {f"{sp}_{m}": np.where(surf.mask, v, np.nan).ravel() for sp, d in surf.values.items() for m, v in d.items()}
    data["computed"] = surf.mask.ravel().astype(np.uint8)
    return points, quads, data


def write_vtk(path, out=None, *, log: bool = False, zscale: float = 1.0, split: str | None = None) -> Path:
    """Write `path`'s 2D surface to `out` (default: <stem>.vtu next to it); returns the path written."""
    path = Path(path)
    surf = read_surface(path)
    if surf.y is None:
        raise UserError(f"{str(path)!r} is a 1D surface: the VTK export needs a 2D surface (--y); plot a 1D one")
    if min(len(surf.x), len(surf.y)) < 2:
        raise UserError(f"{str(path)!r} has a single row or column: the VTK export needs 2 or more points on each axis")
    split = split or next((sp for sp in surf.values if "loss" in surf.values[sp]), None)
    if split is None or split not in surf.values or "loss" not in surf.values[split]:
        have = ", ".join(sp for sp in surf.values if "loss" in surf.values[sp]) or "none"
        raise UserError(f"{str(path)!r} has no loss for split {split!r} (splits with a loss: {have}): "
                        "choose one with --split")
    if not (np.isfinite(zscale) and zscale != 0):
        raise UserError(f"zscale={zscale} must be a finite non-zero number, e.g. 1 or 0.1")
    out = path.with_suffix(".vtu") if out is None else Path(out)
    if out.suffix not in SUFFIXES:
        raise UserError(f"cannot write {str(out)!r}: the VTK export writes .vtu (ParaView's unstructured grid) or "
                        "legacy .vtk; meshio has no .vts writer")
    points, quads, data = surface_mesh(surf, split, log, zscale)
    if len(quads) == 0:
        raise UserError(f"{str(path)!r} has no 2×2 block of computed finite points: nothing to draw yet")
    import meshio  # only here: plotting and info do not need it

    mesh = meshio.Mesh(points, [("quad", quads)], point_data=data)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        meshio.write(out, mesh, file_format="vtu" if out.suffix == ".vtu" else "vtk")
    except OSError as exc:
        raise UserError(f"cannot write {str(out)!r} ({exc.strerror or exc}): choose another --out") from None
    return out
