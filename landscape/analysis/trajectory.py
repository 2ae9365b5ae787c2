"""Directions from other models: PCA of a training trajectory, lines and planes between models.

PCA (Li et al. 2018, Sec. 7). With D_i = θ_i − θ_final for checkpoints i = 1..n, the
centred Gram matrix G = C D Dᵀ C (C = I − 11ᵀ/n, as sklearn's PCA in the reference tool)
is only n×n: G = U Λ Uᵀ gives the unit directions e_k = Σ_j A_jk D_j with A = C U Λ^{-1/2},
the explained variance ratio λ_k / Σλ, and everything about each checkpoint from
the uncentred Gram matrix K = D Dᵀ alone: coordinates c_ik = ⟨D_i, e_k⟩ = (K A)_ik and the
off-plane distance ‖D_i − Σ_k c_ik e_k‖ = sqrt(K_ii − Σ_k c_ik²) (e_k are orthonormal).
Only one tensor of the n checkpoints is stacked at a time.

Lines and planes: x = θ₂ − θ₁ (and y = θ₃ − θ₁), raw differences, so α = 1 is model 2.
A tied tensor counts once (`distinct`: in D Dᵀ and in the directions), under its first name.
"""
from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..core.directions import Direction, distinct, random_directions, target_tensors
from ..core.evaluate import Evaluation
from ..core.models import load_checkpoint, read_state_dict
from ..core.selection import Selection
from ..errors import UserError
from ..io import surface_file


@dataclass(frozen=True)
class Trajectory:
    directions: list[Direction]  # two unit directions, keyed by tensor name
    explained_variance: np.ndarray  # (2,) ratios λ_k / Σλ
    coords: np.ndarray  # (n, 2) projection of θ_i − θ_final
    off_plane: np.ndarray  # (n,) ‖θ_i − θ_final − proj‖ / ‖θ_i − θ_final‖ (0 for θ_final itself)
    files: list[str]


def checkpoint_files(spec) -> list[str]:
    """A glob pattern or a list of paths (each may be a glob), sorted within a pattern."""
    patterns = [spec] if isinstance(spec, str) else list(spec)
    files = []
    for p in patterns:
        matches = sorted(glob.glob(str(p)))
        if not matches:
            raise UserError(f"trajectory pattern {str(p)!r} matches no file: check --trajectory")
        files += matches
    return files


def read_matching(path: str, like: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tensors named in `like` from a checkpoint, which must have the same architecture."""
    state = read_state_dict(path)
    missing = [k for k in like if k not in state]
    wrong = [k for k in like if k in state and tuple(state[k].shape) != tuple(like[k].shape)]
    if missing or wrong:
        what = f"missing {missing[:3]}" if missing else f"shapes differ at {wrong[:3]}"
        raise UserError(f"checkpoint {path!r} is of another architecture than the model ({what}): "
                        "use checkpoints of the same model")
    return {k: state[k].to(torch.float64) for k in like}


def pca_directions(final: dict[str, torch.Tensor], files: list[str], *, ignore: str = "biasbn") -> Trajectory:
    """Two PCA directions of the checkpoints in `files` around `final` (see module docstring)."""
    if len(files) < 3:
        raise UserError(f"PCA needs at least 3 checkpoints, got {len(files)}: save more checkpoints of the run")
    final = {k: v.detach().cpu().to(torch.float64) for k, v in distinct(final).items()}
    states = [read_matching(f, final) for f in files]
    used = [k for k, v in final.items() if not (ignore == "biasbn" and v.dim() <= 1)]
    n = len(files)
    gram = torch.zeros(n, n, dtype=torch.float64)
    for k in used:
        d = torch.stack([s[k] - final[k] for s in states]).reshape(n, -1)
        gram += d @ d.T
    centre = torch.eye(n, dtype=torch.float64) - 1.0 / n
    lam, u = torch.linalg.eigh(centre @ gram @ centre)
    lam, u = lam.flip(0), u.flip(1)
    if lam[1] <= 1e-12 * max(float(lam[0]), 1e-300):
        raise UserError("the checkpoints span less than two dimensions around the final model: "
                        "use checkpoints from different epochs of one run")
    coeff = centre @ u[:, :2] / lam[:2].sqrt()  # e_k = Σ_j coeff[j, k] D_j
    directions = [{}, {}]
    for k, v in final.items():
        if k in used:
            d = torch.stack([s[k] - v for s in states]).reshape(n, -1)
            for axis in range(2):
                directions[axis][k] = (coeff[:, axis] @ d).reshape(v.shape).to(torch.float32)
        else:
            for axis in range(2):
                directions[axis][k] = torch.zeros(v.shape, dtype=torch.float32)
    coords = gram @ coeff
    sq = torch.diagonal(gram)
    residual = (sq - (coords**2).sum(1)).clamp(min=0).sqrt()
    off_plane = torch.where(sq > 0, residual / sq.sqrt().clamp(min=1e-300), torch.zeros_like(sq))
    ratio = lam[:2] / lam.clamp(min=0).sum()
    return Trajectory(directions, ratio.numpy(), coords.numpy(), off_plane.numpy(), [str(Path(f)) for f in files])


def covering_axes(coords: np.ndarray, num: int = 51, margin: float = 0.15) -> tuple[str, str]:
    """Grid specs that cover the projected path (and the final model at 0) with a margin."""
    specs = []
    for axis in range(2):
        lo, hi = min(coords[:, axis].min(), 0.0), max(coords[:, axis].max(), 0.0)
        pad = margin * (hi - lo) if hi > lo else 1.0
        specs.append(f"{lo - pad:.6g}:{hi + pad:.6g}:{num}")
    return specs[0], specs[1]


def model_differences(first: dict[str, torch.Tensor], files: list[str]) -> list[Direction]:
    """θ_k − θ₁ for each checkpoint in `files` (the line to model 2, the plane through model 3)."""
    first = {k: v.detach().cpu().to(torch.float64) for k, v in distinct(first).items()}
    return [{k: (s[k] - first[k]).to(torch.float32) for k in first} for s in (read_matching(f, first) for f in files)]


@dataclass(frozen=True)
class ModelDirections:
    """Directions of a job that come from other models, with the grid they ask for."""

    directions: list[Direction]
    x: str
    y: str | None
    extra: dict  # datasets for the new surface file (the trajectory's projections)
    source: dict  # how they were made, stored in the job
    trajectory: Trajectory | None = None


def job_directions(job, model) -> ModelDirections | None:
    """Directions of a job that come from other models (a line, a plane, a PCA trajectory), or
    None for random or stored directions."""

    if job.model_file3 and not job.model_file2:
        raise UserError("--model_file3 needs --model_file2: the plane is spanned by θ₂ − θ₁ and θ₃ − θ₁")
    if job.trajectory and (job.model_file2 or job.dir_file):
        raise UserError("--trajectory sets the directions itself: leave out --model_file2 and --dir_file")
    if job.model_file2 and job.dir_file:
        raise UserError("--model_file2 sets the x direction itself: leave out --dir_file")
    select = Selection.of(job.params, job.exclude)
    tensors = {k: v.detach() for k, v in target_tensors(model, job.dir_type, select).items()}
    if job.model_file2:
        files = [job.model_file2] + ([job.model_file3] if job.model_file3 else [])
        directions = model_differences(tensors, files)
        source = {"models": files}
        if job.y and not job.model_file3:  # the reference tool's choice: a random y direction
            directions.append(random_directions(model, seed=job.seed, dir_type=job.dir_type, ndim=2,
                                                norms=(job.xnorm, job.ynorm or job.xnorm),
                                                ignores=(job.xignore, job.yignore or job.xignore), select=select)[1])
            source["random_y"] = {"seed": job.seed, "norm": job.ynorm or job.xnorm}
        if job.model_file3 and not job.y:
            raise UserError("--model_file3 makes a plane: give --y too, e.g. --y=-0.5:1.5:41")
        return ModelDirections(directions, job.x, job.y, {}, source)
    if job.trajectory:
        traj = pca_directions(tensors, checkpoint_files(job.trajectory), ignore=job.xignore)
        x, y = (job.x, job.y) if job.y else covering_axes(traj.coords, num=int(job.x.split(":")[2]))
        t = surface_file.TRAJECTORY
        extra = {f"{t}/coords": traj.coords, f"{t}/off_plane": traj.off_plane,
                 f"{t}/explained_variance": traj.explained_variance, f"{t}/files": np.array(traj.files, dtype=object)}
        return ModelDirections(traj.directions, x, y, extra, {"trajectory": traj.files, "ignore": job.xignore}, traj)
    return None


def record_checkpoint_losses(path, model, splits, traj: Trajectory, directions, evaluation: Evaluation, device):
    """For each checkpoint: its true loss/acc and the surface's value at its projected point,
    as trajectory/<split>/{loss,acc} and trajectory/<split>/{loss,acc}_projected, both evaluated
    as the surface was (`evaluation`: the same directions' tensors, precision, BN re-estimation)."""
    import copy

    on_plane = evaluation.evaluator(model, splits, directions, device)
    try:
        projected = on_plane(traj.coords)
    finally:
        on_plane.restore()
    true = []
    for f in traj.files:
        other = copy.deepcopy(model)
        load_checkpoint(other, f)
        true.append(evaluation.evaluator(other, splits, [], device)(np.zeros((1, 0)))[0])
    true = np.array(true)
    arrays = {}
    for j, metric in enumerate(on_plane.metrics):
        arrays[f"{surface_file.TRAJECTORY}/{metric}"] = true[:, j]
        arrays[f"{surface_file.TRAJECTORY}/{metric}_projected"] = projected[:, j]
    surface_file.write_datasets(path, arrays)
