"""What every figure module shares: matplotlib on the Agg backend (files, no screen), the masking
of points not computed, and saving a figure in several formats with one-line errors."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # the one place: figures are files; compute nodes have no screen
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402

from ..errors import UserError  # noqa: E402

COLORMAPS = matplotlib.colormaps
__all__ = ["COLORMAPS", "FigureCanvasAgg", "edges", "folder", "masked", "plt", "save_figure"]


def masked(values: np.ndarray, mask: np.ndarray) -> np.ma.MaskedArray:
    """Values with points not computed or not finite masked."""
    values = np.asarray(values, dtype=float)
    return np.ma.masked_array(values, mask=~(np.asarray(mask, bool) & np.isfinite(values)))


def edges(c: np.ndarray) -> tuple[float, float]:
    """The outer edges of the cells centred on coordinates c (for imshow's extent)."""
    c = np.asarray(c)
    half = (c[-1] - c[0]) / (len(c) - 1) / 2 if len(c) > 1 else 0.5
    return c[0] - half, c[-1] + half


def folder(out_dir) -> Path:
    """The output folder, created if needed (a UserError when it cannot be)."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create output folder {str(out_dir)!r} ({exc.strerror}): choose another one") from None
    return out_dir


def save_figure(fig, out_dir, name, formats, dpi, written):
    """Save `fig` as out_dir/name.<fmt> for each format (appending to `written`), then close it."""
    for fmt in formats:
        p = out_dir / f"{name}.{fmt}"
        try:
            fig.savefig(p, dpi=dpi)
        except (OSError, ValueError) as exc:
            plt.close(fig)
            raise UserError(f"cannot write {str(p)!r} ({exc}): choose another output folder or format") from None
        written.append(p)
    plt.close(fig)
