"""Tied weights and shared buffers count once: every direction moves a tied tensor once.

The model: a language-model head tied to its input embedding (`head.weight is emb.weight`) and
a buffer shared by two modules (`inner.shift is shift`). `state_dict()` lists each of them
twice; θ holds each once. References are computed here from the model's distinct tensors.
"""
import torch
import torch.nn.functional as F
from torch import nn

from landscape.analysis.trajectory import model_differences, pca_directions
from landscape.api import compute_surface
from landscape.core.directions import random_directions, target_tensors
from landscape.core.theta import ThetaWriter

torch.set_num_threads(1)


class TiedLM(nn.Module):
    """Token id -> logits over the 11 tokens: head(tanh(mix(emb(x)) + shift)), head tied to emb."""

    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.emb = nn.Embedding(11, 8)
        self.mix = nn.Linear(8, 8)
        self.head = nn.Linear(8, 11, bias=False)
        self.head.weight = self.emb.weight
        self.register_buffer("shift", 0.1 * torch.randn(8))
        self.inner = nn.Module()
        self.inner.register_buffer("shift", self.shift)

    def forward(self, x):
        return self.head(torch.tanh(self.mix(self.emb(x)) + self.inner.shift))


def distinct_tensors(model, dir_type):
    """The model's own tensors by name, each once, in state_dict order: the root's buffer `shift`
    (states only), then the parameters."""
    out = {"shift": model.shift} if dir_type == "states" else {}
    return {**out, "emb.weight": model.emb.weight, "mix.weight": model.mix.weight, "mix.bias": model.mix.bias}


def distinct_theta(model, dir_type):
    """θ by name, each tensor once (copies)."""
    return {k: v.detach().clone() for k, v in distinct_tensors(model, dir_type).items()}


def tokens(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 11, (n,), generator=g), torch.randint(0, 11, (n,), generator=g)


def mean_loss(model, X, Y):
    with torch.no_grad():
        return F.cross_entropy(model(X).double(), Y).item()


def norm(tensors):
    return torch.sqrt(sum(t.double().pow(2).sum() for t in tensors.values())).item()


def test_tied_model_lists_aliases():
    """The premise: state_dict lists the tied weight and the shared buffer twice."""
    model = TiedLM()
    state = model.state_dict(keep_vars=True)
    assert state["head.weight"] is state["emb.weight"] and state["inner.shift"] is state["shift"]
    for dir_type in ("weights", "states"):
        assert list(target_tensors(model, dir_type)) == list(distinct_theta(model, dir_type))


def test_one_direction_moves_each_tensor_once():
    """(a) Filter norm, ignore none: ‖d_t‖ = ‖θ*_t‖ for every t (rows scaled to θ's rows; d = θ for
    dim ≤ 1), so at α = 1 ‖θ(1) − θ*‖ = ‖θ*‖ over the distinct tensors (moving the tied weight
    twice gives sqrt(‖θ*‖² + 3‖E‖²)), and θ(1) = θ* + d tensor by tensor."""
    for dir_type in ("weights", "states"):
        model = TiedLM()
        start = distinct_theta(model, dir_type)
        (d,) = random_directions(model, seed=0, dir_type=dir_type, ndim=1, norms=("filter",), ignores=("none",))
        for k in start:
            torch.testing.assert_close(d[k].norm(), start[k].norm(), rtol=1e-6, atol=0)
        writer = ThetaWriter(model, [d], dir_type)
        writer.write((1.0,))
        moved = distinct_theta(model, dir_type)
        delta = {k: moved[k] - start[k] for k in start}
        assert abs(norm(delta) - norm(start)) <= 1e-5 * norm(start), (dir_type, norm(delta), norm(start))
        for k in start:
            torch.testing.assert_close(moved[k], start[k] + d[k], rtol=1e-6, atol=1e-6)
        assert model.head.weight is model.emb.weight and model.inner.shift is model.shift
        writer.restore()
        for k, v in distinct_theta(model, dir_type).items():
            torch.testing.assert_close(v, start[k], rtol=0, atol=0)


def test_line_to_model_2_ends_at_model_2(tmp_path):
    """(b) x = θ₂ − θ₁ over the states: α = 0 is model 1's loss, α = 1 model 2's (brute force),
    one point per pass and four (stacked parameter sets)."""
    X, Y = tokens()
    second = TiedLM(seed=1)
    torch.save(second.state_dict(), tmp_path / "model2.pt")
    want = [mean_loss(TiedLM(seed=0), X, Y), mean_loss(second, X, Y)]
    assert abs(want[0] - want[1]) > 0.1
    for points_per_pass in (1, 4):
        model = TiedLM(seed=0)
        directions = model_differences(target_tensors(model, "states"), [str(tmp_path / "model2.pt")])
        s = compute_surface(model, {"train": (X, Y)}, x="0:1:2", dir_type="states", directions=directions,
                            points_per_pass=points_per_pass, batch_size=32)
        got = s.values["train/loss"].tolist()
        assert abs(got[0] - want[0]) <= 1e-6 * want[0] and abs(got[1] - want[1]) <= 1e-5 * want[1], (got, want)
        assert list(directions[0]) == ["shift", "emb.weight", "mix.weight", "mix.bias"]


def test_pca_of_a_tied_model_counts_the_tensor_once(tmp_path):
    """(c) Checkpoints θ_i = θ_f + a_i u + b_i v (u, v over the distinct tensors, the tied ones
    saved under both names): the PCA directions are orthonormal over the distinct tensors, and
    θ_f + Σ_k c_ik e_k written into the model is checkpoint i (its tensors and its loss)."""
    X, Y = tokens()
    model = TiedLM()
    final = distinct_theta(model, "states")
    g = torch.Generator().manual_seed(0)
    u, v = ({k: 0.1 * torch.randn(t.shape, generator=g) for k, t in final.items()} for _ in range(2))
    coeff = torch.randn(5, 2, generator=g)
    files, states, losses = [], [], []
    for i, (a, b) in enumerate(coeff.tolist()):
        other = TiedLM()
        with torch.no_grad():
            for k, t in distinct_tensors(other, "states").items():
                t.copy_(final[k] + a * u[k] + b * v[k])
        files.append(str(tmp_path / f"epoch_{i}.pt"))
        torch.save(other.state_dict(), files[-1])
        states.append(distinct_theta(other, "states"))
        losses.append(mean_loss(other, X, Y))
    traj = pca_directions(target_tensors(model, "states"), files, ignore="none")
    e = traj.directions
    gram = [[sum((e[i][k].double() * e[j][k].double()).sum().item() for k in final) for j in range(2)]
            for i in range(2)]
    torch.testing.assert_close(torch.tensor(gram, dtype=torch.float64), torch.eye(2, dtype=torch.float64),
                               rtol=0, atol=1e-6)
    assert traj.off_plane.max() <= 1e-5
    writer = ThetaWriter(model, e, "states")
    for i in range(len(files)):
        writer.write(traj.coords[i])
        for k, t in distinct_theta(model, "states").items():
            torch.testing.assert_close(t, states[i][k], rtol=1e-5, atol=1e-5)
        assert abs(mean_loss(model, X, Y) - losses[i]) <= 1e-5 * losses[i]
    writer.restore()
    assert list(e[0]) == list(final)
