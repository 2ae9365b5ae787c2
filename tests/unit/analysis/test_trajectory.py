"""PCA directions, projections and lines between models against independent references."""
import numpy as np
import pytest
import torch

from landscape.analysis.trajectory import checkpoint_files, covering_axes, model_differences, pca_directions
from landscape.errors import UserError


def flat(d, keys):
    return np.concatenate([d[k].double().ravel().numpy() for k in keys])


@pytest.fixture
def run(tmp_path):
    """A final model and 6 checkpoints around it, saved as state_dicts."""
    gen = torch.Generator().manual_seed(0)
    final = {"conv.weight": torch.randn(4, 3, 3, 3, generator=gen), "fc.weight": torch.randn(5, 4, generator=gen),
             "fc.bias": torch.randn(5, generator=gen)}
    files = []
    for i in range(6):
        state = {k: v + (0.3 + i) * torch.randn(v.shape, generator=gen) for k, v in final.items()}
        files.append(str(tmp_path / f"epoch_{i}.pt"))
        torch.save({"state_dict": state}, files[-1])
    return final, files


@pytest.mark.parametrize("ignore", ["none", "biasbn"])
def test_pca_matches_svd_of_stacked_differences(run, ignore):
    final, files = run
    keys = [k for k in final if ignore == "none" or final[k].dim() > 1]
    t = pca_directions(final, files, ignore=ignore)
    D = np.stack([flat({k: torch.load(f)["state_dict"][k] - final[k] for k in keys}, keys) for f in files])
    _, s, vt = np.linalg.svd(D - D.mean(0), full_matrices=False)
    e = np.stack([flat(t.directions[a], keys) for a in range(2)])
    sign = np.sign((e * vt[:2]).sum(1))
    np.testing.assert_allclose(e, vt[:2] * sign[:, None], atol=1e-6)
    np.testing.assert_allclose(t.explained_variance, (s**2 / (s**2).sum())[:2], rtol=1e-6)
    np.testing.assert_allclose(t.coords, D @ (vt[:2] * sign[:, None]).T, rtol=1e-5, atol=1e-5)
    off = np.linalg.norm(D - t.coords @ e, axis=1) / np.linalg.norm(D, axis=1)
    np.testing.assert_allclose(t.off_plane, off, atol=1e-6)
    if ignore == "biasbn":
        assert all(float(t.directions[a]["fc.bias"].abs().max()) == 0 for a in range(2))


def test_checkpoints_in_a_plane_project_exactly(tmp_path, run):
    """Checkpoints θ_f + a_i u + b_i v: the PCA plane is span(u, v), every off-plane distance is 0
    and the projected coordinates reproduce each checkpoint's offset exactly."""
    final, _ = run
    gen = torch.Generator().manual_seed(1)
    u = {k: torch.randn(v.shape, generator=gen, dtype=torch.float64) for k, v in final.items()}
    v_ = {k: torch.randn(v.shape, generator=gen, dtype=torch.float64) for k, v in final.items()}
    ab = [(1.0, 0.2), (-0.5, 2.0), (0.3, -1.0), (2.0, 1.5)]
    files = []
    for i, (a, b) in enumerate(ab):
        files.append(str(tmp_path / f"p{i}.pt"))
        torch.save({k: final[k].double() + a * u[k] + b * v_[k] for k in final}, files[-1])
    t = pca_directions({k: w.double() for k, w in final.items()}, files, ignore="none")
    np.testing.assert_allclose(t.off_plane, 0, atol=1e-6)
    e = np.stack([flat(t.directions[i], list(final)) for i in range(2)])
    offsets = np.stack([a * flat(u, list(final)) + b * flat(v_, list(final)) for a, b in ab])
    np.testing.assert_allclose(t.coords @ e, offsets, atol=1e-5)
    np.testing.assert_allclose(t.explained_variance.sum(), 1.0, atol=1e-9)


def test_model_differences_are_raw(run):
    final, files = run
    (d,) = model_differences(final, files[:1])
    other = torch.load(files[0])["state_dict"]
    for k in final:
        torch.testing.assert_close(d[k], (other[k] - final[k]).float())


def test_covering_axes_contain_path_and_origin():
    coords = np.array([[2.0, 3.0], [4.0, 5.0]])
    x, y = covering_axes(coords, num=11)
    lo, hi, num = (float(v) for v in x.split(":"))
    assert lo < 0 < 4 < hi and num == 11
    lo, hi, _ = (float(v) for v in y.split(":"))
    assert lo < 0 and hi > 5


def test_bad_inputs(tmp_path, run):
    final, files = run
    with pytest.raises(UserError, match="at least 3 checkpoints"):
        pca_directions(final, files[:2])
    with pytest.raises(UserError, match="matches no file"):
        checkpoint_files(str(tmp_path / "nothing_*.pt"))
    torch.save({"other.weight": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(UserError, match="another architecture"):
        pca_directions(final, files + [str(tmp_path / "other.pt")])
