"""The locality regularizer (§E8): exact values on models of known separation rank across the
patches (I, J), the parameter gradient against finite differences in float64, the samplers'
geometry, and the no-op at coefficient 0."""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")  # the [torch] extra

from torch import nn  # noqa: E402

from deeplinear.torch import (  # noqa: E402
    FixedPatches,
    GradientChangeRegularizer,
    Patch,
    RandomPatches,
    adjacent_patches,
    gradient_change_penalty,
    separation_matrix,
)
from deeplinear.torch_locality import numerical_rank, patch_gap, selected_output  # noqa: E402

torch.set_num_threads(1)
D = torch.float64
I, J = Patch(0, 0, 3, 3), Patch(5, 6, 3, 3)
TOL = 1e-12


class Bilinear(nn.Module):
    """``f(x) = sum_r <a_r, x_I> <b_r, x_J> + h(x_I)``: separation rank ``rank`` across (I, J)
    (plus a function of x_I alone, which does not raise it)."""

    def __init__(self, rank: int, seed: int = 0, extra: bool = True) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.a = nn.Parameter(torch.randn(rank, 2 * 9, generator=gen, dtype=D))
        self.b = nn.Parameter(torch.randn(rank, 2 * 9, generator=gen, dtype=D))
        self.extra = extra

    def forward(self, x):
        xi = x[..., I.slices()[0], I.slices()[1]].flatten(1)
        xj = x[..., J.slices()[0], J.slices()[1]].flatten(1)
        out = ((xi @ self.a.T) * (xj @ self.b.T)).sum(1)
        return out + (torch.tanh(xi).sum(1) if self.extra else 0)


class Separable(nn.Module):
    """A sum of nonlinear functions of single 2x2 patches (separation rank 1 across any I, J)."""

    def forward(self, x):
        blocks = nn.functional.unfold(x, 2, stride=2)           # (B, C*4, patches)
        return torch.sin(blocks).sum(1).pow(2).sum(1, keepdim=True)


def _value(t) -> float:
    return float(t.detach())


def _batch(n=6, seed=1, size=10):
    return torch.randn(n, 2, size, size, generator=torch.Generator().manual_seed(seed), dtype=D)


def test_separable_model_gives_exactly_one():
    x = _batch()
    for i, j in [((0, 0, 2, 2), (6, 6, 2, 2)), ((2, 4, 2, 2), (8, 0, 2, 2))]:
        value = gradient_change_penalty(Separable(), x, patches=(i, j))
        assert abs(_value(value) - 1.0) < TOL


def test_rank_one_interaction_gives_exactly_one():
    x = _batch()
    value = gradient_change_penalty(Bilinear(1, extra=False), x, patches=(I, J))
    assert abs(_value(value) - 1.0) < TOL


@pytest.mark.parametrize("rank", [2, 3])
def test_higher_rank_interaction_gives_below_one(rank):
    x = _batch()
    value = _value(gradient_change_penalty(Bilinear(rank), x, patches=(I, J)))
    assert value < 0.95
    # and the output matrix over a grid of (x_I, x_J) replacements has that rank
    donors = _batch(8, seed=3)
    M = separation_matrix(Bilinear(rank, extra=False), x[0], donors, donors, I, J)
    assert numerical_rank(M, 1e-8) == rank


def test_multiclass_head_uses_true_class_logit():
    model = nn.Sequential(nn.Flatten(), nn.Linear(2 * 100, 4, dtype=D))
    x, y = _batch(), torch.tensor([0, 1, 2, 3, 0, 1])
    # a linear model is separable: exactly 1 for any labels
    assert abs(_value(gradient_change_penalty(model, x, y, patches=(I, J))) - 1.0) < TOL
    out = torch.arange(12.0).reshape(6, 2)
    assert torch.equal(selected_output(out, torch.tensor([1, 0, 1, 0, 1, 0])),
                       torch.tensor([1.0, 2, 5, 6, 9, 10]))
    with pytest.raises(ValueError, match="labels"):
        gradient_change_penalty(model, x, None, patches=(I, J))


def _small_cnn(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, dtype=D), nn.Tanh(),
                         nn.Conv2d(3, 3, 3, padding=1, dtype=D), nn.Tanh(),
                         nn.Flatten(), nn.Linear(3 * 100, 3, dtype=D))


def test_parameter_gradient_matches_finite_differences():
    model, x, y = _small_cnn(), _batch(), torch.tensor([0, 1, 2, 0, 1, 2])
    penalty = gradient_change_penalty(model, x, y, patches=(I, J))
    assert 0 < _value(penalty) < 1
    params = list(model.parameters())
    grads = [torch.zeros_like(p) if g is None else g  # the last bias does not enter ∇_x f
             for p, g in zip(params, torch.autograd.grad(penalty, params, allow_unused=True),
                             strict=True)]
    gen = torch.Generator().manual_seed(5)
    for _ in range(3):  # directional derivatives along random directions, central differences
        dirs = [torch.randn(p.shape, generator=gen, dtype=D) for p in params]
        analytic = sum(float((g * d).sum()) for g, d in zip(grads, dirs, strict=True))
        h, values = 1e-5, []
        for sign in (1, -1):
            moved = copy.deepcopy(model)
            with torch.no_grad():
                for p, d in zip(moved.parameters(), dirs, strict=True):
                    p.add_(sign * h * d)
            values.append(_value(gradient_change_penalty(moved, x, y, patches=(I, J),
                                                        create_graph=False)))
        numeric = (values[0] - values[1]) / (2 * h)
        assert abs(analytic - numeric) <= 1e-7 * max(1.0, abs(numeric)), (analytic, numeric)


def test_coefficient_zero_is_a_no_op():
    model, x, y = _small_cnn(), _batch(), torch.tensor([0, 1, 2, 0, 1, 2])
    twin = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(0)
    reg = GradientChangeRegularizer(0.0, RandomPatches(3, distance=2), generator=gen)
    state = gen.get_state()
    opt_a = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    opt_b = torch.optim.SGD(twin.parameters(), lr=0.1, momentum=0.9)
    for _ in range(3):
        for net, opt, extra in ((model, opt_a, True), (twin, opt_b, False)):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(net(x), y)
            if extra:
                loss = loss + reg(net, x, y)
            loss.backward()
            opt.step()
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(p, q)
    assert torch.equal(gen.get_state(), state) and reg.last_penalty is None


def test_regularized_training_lowers_the_penalty():
    model, x, y = _small_cnn(1), _batch(16, seed=4), torch.arange(16) % 3
    reg = GradientChangeRegularizer(1.0, FixedPatches([I, J]))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    before = _value(gradient_change_penalty(model, x, y, patches=(I, J), create_graph=False))
    for _ in range(30):
        opt.zero_grad()
        reg(model, x, y).backward()
        opt.step()
    after = _value(gradient_change_penalty(model, x, y, patches=(I, J), create_graph=False))
    assert after < before - 0.05, (before, after)


def test_random_patches_respect_size_and_distance():
    gen = torch.Generator().manual_seed(0)
    for distance in (0, 3, 8):
        sampler = RandomPatches(4, distance)
        for _ in range(50):
            a, b = sampler(20, 24, gen)
            assert a.height == a.width == b.height == b.width == 4
            assert a.top + 4 <= 20 and a.left + 4 <= 24 and b.top + 4 <= 20 and b.left + 4 <= 24
            assert patch_gap(a, b) >= distance
    near = adjacent_patches(3, 2)
    gaps = {patch_gap(*near(16, 16, gen)) for _ in range(50)}
    assert gaps == {2}
    far = RandomPatches(4, 12)  # only the corners' neighbourhoods leave room on a 20x20 image
    assert all(patch_gap(*far(20, 20, gen)) >= 12 for _ in range(30))
    with pytest.raises(ValueError, match="no two"):
        RandomPatches(8, 10)(16, 16, gen)


def test_fixed_patches_draw_two_different_ones_from_the_list():
    gen = torch.Generator().manual_seed(0)
    items = [(0, 0, 2, 2), (0, 6, 2, 2), (6, 0, 2, 2)]
    sampler = FixedPatches(items)
    seen = set()
    for _ in range(60):
        a, b = sampler(8, 8, gen)
        assert a != b and tuple(a) in items and tuple(b) in items
        seen.add((tuple(a), tuple(b)))
    assert len(seen) == 6
    with pytest.raises(ValueError, match="two different"):
        FixedPatches([(0, 0, 2, 2)])


def test_bad_inputs_fail_with_a_message():
    x = _batch()
    with pytest.raises(ValueError, match="overlap"):
        gradient_change_penalty(Separable(), x, patches=((0, 0, 3, 3), (2, 2, 3, 3)))
    with pytest.raises(ValueError, match="sampler"):
        gradient_change_penalty(Separable(), x)
    with pytest.raises(ValueError, match="batch"):
        gradient_change_penalty(Separable(), x[:1], patches=(I, J))
    with pytest.raises(ValueError, match="coefficient"):
        GradientChangeRegularizer(-1.0, RandomPatches(2))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    model, x, y = _small_cnn(), _batch(), torch.tensor([0, 1, 2, 0, 1, 2])
    cpu = gradient_change_penalty(model, x, y, patches=(I, J))
    gpu = gradient_change_penalty(copy.deepcopy(model).cuda(), x.cuda(), y.cuda(), patches=(I, J))
    assert gpu.device.type == "cuda"
    assert abs(_value(cpu) - _value(gpu)) < 1e-10


def test_readme_snippet_runs_and_adds_the_penalty():
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", readme, flags=re.S)
              if "GradientChangeRegularizer" in b]
    assert len(blocks) == 1
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)  # noqa: S102
    reg, loss = namespace["reg"], namespace["loss"]
    assert 0 < reg.last_penalty <= 1 and reg.coefficient > 0 and loss.requires_grad
