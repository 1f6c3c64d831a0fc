"""Countering locality (§E8): the input-gradient-change regularizer for any PyTorch model.

Hierarchical tensor factorization, the linear counterpart of a deep convolutional network, is
implicitly biased towards low hierarchical tensor rank (§2.15): across a partition of the input
into two far regions ``(I, J)`` the learned function keeps a low *separation rank*, i.e. the
network models little interaction between distant pixels (locality). The regularizer counters
that bias directly. For a model output ``f(x)`` (the true-class logit, or the logit of a binary
head) and two disjoint patches ``I``, ``J`` of the input:

    g(x)  = ∇_{x_I} f(x) / ‖∇_{x_I} f(x)‖            (the normalized input gradient on I)
    x'    = x with patch J replaced by patch J of another sample of the batch
    R     = mean over the batch of |<g(x), g(x')>|    (in [0, 1])

If ``f`` has separation rank 1 across ``(I, J)`` (``f(x) = u(x_I) v(x_J)``, and in particular a
sum of functions of single patches), the direction of ``∇_{x_I} f`` does not depend on ``x_J``
and ``R = 1``. Minimizing ``R`` asks the gradient on ``I`` to turn when ``J`` changes, which needs
separation rank above 1. The penalty is differentiated through the input gradients
(``create_graph``), so training uses second derivatives.

Typical use, one extra term in the loss::

    reg = GradientChangeRegularizer(coefficient=0.1, sampler=RandomPatches(size=4, distance=8))
    loss = torch.nn.functional.cross_entropy(model(x), y) + reg(model, x, y)

The penalty runs on the device of ``x``; models with batch normalization in training mode see
the batch statistics of the modified batch, as in a plain forward pass.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from deeplinear._optional import needs_extra

with needs_extra("deeplinear.torch_locality"):
    import torch
    from torch import nn

__all__ = [
    "FixedPatches",
    "GradientChangeRegularizer",
    "Patch",
    "PatchSampler",
    "RandomPatches",
    "adjacent_patches",
    "gradient_change_penalty",
    "numerical_rank",
    "patch_gap",
    "replace_patch",
    "selected_output",
    "separation_matrix",
]


class Patch(NamedTuple):
    """A rectangle of the image plane: rows ``top:top+height``, columns ``left:left+width``."""

    top: int
    left: int
    height: int
    width: int

    def slices(self) -> tuple[slice, slice]:
        return slice(self.top, self.top + self.height), slice(self.left, self.left + self.width)


PatchSampler = Callable[[int, int, "torch.Generator | None"], tuple[Patch, Patch]]
"""``sampler(height, width, generator) -> (I, J)``: the two patches of one regularization step."""


def patch_gap(a: Patch, b: Patch) -> int:
    """Pixels strictly between two patches along the axis where they are farthest apart
    (``-1`` when they overlap, ``0`` when they touch)."""
    rows = max(b.top - (a.top + a.height), a.top - (b.top + b.height))
    cols = max(b.left - (a.left + a.width), a.left - (b.left + b.width))
    return max(rows, cols)


def _randint(n: int, generator: torch.Generator | None) -> int:
    return int(torch.randint(n, (1,), generator=generator))


@dataclass(frozen=True)
class RandomPatches:
    """Square patches of side ``size`` drawn uniformly at each call: ``I`` anywhere that leaves
    room for ``J``, ``J`` uniformly among the positions at least ``distance`` pixels away from
    ``I`` (``patch_gap``); with ``adjacent=True`` exactly ``distance`` pixels away."""

    size: int
    distance: int = 0
    adjacent: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 1:
            raise ValueError(f"size must be an integer >= 1, got {self.size!r}")
        if isinstance(self.distance, bool) or not isinstance(self.distance, int) or self.distance < 0:
            raise ValueError(f"distance must be an integer >= 0, got {self.distance!r}")

    def __call__(self, height: int, width: int,
                 generator: torch.Generator | None = None) -> tuple[Patch, Patch]:
        s = self.size
        if s > min(height, width):
            raise ValueError(f"patch size {s} does not fit a {height}x{width} image")
        rows, cols, d = height - s + 1, width - s + 1, self.distance
        top = torch.arange(rows).repeat_interleave(cols)
        left = torch.arange(cols).repeat(rows)
        # I must leave room for J at gap d along one axis: before it (top >= s + d) or after it
        # (top + 2s + d <= height); the other axis is then free (gap = the larger of the two)
        room = ((top >= s + d) | (top + 2 * s + d <= height)
                | (left >= s + d) | (left + 2 * s + d <= width))
        starts = torch.nonzero(room).flatten()
        if starts.numel() == 0:
            raise ValueError(f"a {height}x{width} image has no two {s}x{s} patches at distance "
                             f"{d}; use a smaller size or distance")
        pos = int(starts[_randint(starts.numel(), generator)])
        first = Patch(pos // cols, pos % cols, s, s)
        gap = torch.maximum(torch.maximum(top - (first.top + s), first.top - (top + s)),
                            torch.maximum(left - (first.left + s), first.left - (left + s)))
        where = torch.nonzero((gap == d) if self.adjacent else (gap >= d)).flatten()
        pick = int(where[_randint(where.numel(), generator)])
        return first, Patch(pick // cols, pick % cols, s, s)


def adjacent_patches(size: int, distance: int = 0) -> RandomPatches:
    """``RandomPatches(size, distance, adjacent=True)``: ``J`` exactly ``distance`` pixels from
    ``I`` (``distance=0``: touching)."""
    return RandomPatches(size, distance, adjacent=True)


@dataclass(frozen=True)
class FixedPatches:
    """Patches from a fixed list: ``I`` uniformly from ``patches``, ``J`` uniformly from the others."""

    patches: tuple[Patch, ...]

    def __init__(self, patches: Sequence[Sequence[int]]) -> None:
        items = tuple(Patch(*map(int, p)) for p in patches)
        if len(set(items)) < 2:
            raise ValueError("FixedPatches needs at least two different patches")
        object.__setattr__(self, "patches", items)

    def __call__(self, height: int, width: int,
                 generator: torch.Generator | None = None) -> tuple[Patch, Patch]:
        for p in self.patches:
            if p.top < 0 or p.left < 0 or p.top + p.height > height or p.left + p.width > width:
                raise ValueError(f"patch {tuple(p)} does not fit a {height}x{width} image")
        first = self.patches[_randint(len(self.patches), generator)]
        rest = [p for p in self.patches if p != first]
        return first, rest[_randint(len(rest), generator)]


def selected_output(outputs: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
    """One scalar per sample: the logit of a binary head (outputs ``(B,)`` or ``(B, 1)``), else
    the true-class logit ``outputs[b, y_b]`` of ``(B, C)`` outputs."""
    if outputs.ndim == 1 or (outputs.ndim == 2 and outputs.shape[1] == 1):
        return outputs.reshape(-1)
    if outputs.ndim != 2:
        raise ValueError(f"model outputs must be (B,), (B, 1) or (B, C), got {tuple(outputs.shape)}")
    if y is None:
        raise ValueError("a multi-class head needs the labels y to pick the true-class logit")
    return outputs.gather(1, y.reshape(-1, 1).long()).reshape(-1)


def replace_patch(x: torch.Tensor, patch: Patch, source: torch.Tensor) -> torch.Tensor:
    """A copy of ``x`` (``(B, C, H, W)``) whose ``patch`` is taken from ``source`` (same shape)."""
    rows, cols = patch.slices()
    out = x.clone()
    out[..., rows, cols] = source[..., rows, cols]
    return out


def _patch_direction(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None, patch: Patch,
                     create_graph: bool, eps: float) -> torch.Tensor:
    """``∇_{x_I} f / ‖∇_{x_I} f‖`` per sample, flattened: ``(B, C * h * w)``."""
    x = x.detach().requires_grad_(True)
    f = selected_output(model(x), y)
    (grad,) = torch.autograd.grad(f.sum(), x, create_graph=create_graph)
    rows, cols = patch.slices()
    g = grad[..., rows, cols].reshape(x.shape[0], -1)
    return g / g.norm(dim=1, keepdim=True).clamp_min(eps)


def gradient_change_penalty(model: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None,
                            patches: tuple[Sequence[int], Sequence[int]] | None = None, *,
                            sampler: PatchSampler | None = None,
                            generator: torch.Generator | None = None,
                            create_graph: bool = True, eps: float = 1e-12) -> torch.Tensor:
    """The input-gradient-change penalty ``R = mean_b |<g(x_b), g(x'_b)>|`` (module docstring).

    Args:
        model: maps ``x`` of shape ``(B, C, H, W)`` to ``(B, K)`` logits (``y`` picks the
            true class) or to one logit per sample, ``(B,)`` or ``(B, 1)`` (a binary head).
        x: the batch (``B >= 2``); ``y``: its labels, needed for a multi-class head.
        patches: ``(I, J)`` as ``(top, left, height, width)``; else drawn by ``sampler``.
        sampler: a :data:`PatchSampler`, e.g. :class:`RandomPatches`; ``generator`` seeds it.
        create_graph: keep the graph of the input gradients, so that ``R`` can be
            differentiated with respect to the parameters (training); False for evaluation.
        eps: floor on the gradient norms (a zero gradient on ``I`` gives a cosine of 0).

    Returns:
        A scalar tensor in ``[0, 1]`` on the device of ``x``. Sample ``b``'s patch ``J`` is
        replaced by that of sample ``b + 1`` (cyclically), so every sample sees another's ``J``.
    """
    if x.ndim != 4 or x.shape[0] < 2:
        raise ValueError(f"x must be a batch (B >= 2, C, H, W), got shape {tuple(x.shape)}")
    if patches is None:
        if sampler is None:
            raise ValueError("give the patches (I, J) or a sampler that draws them")
        first, second = sampler(x.shape[-2], x.shape[-1], generator)
    else:
        first, second = (Patch(*map(int, p)) for p in patches)
    if patch_gap(first, second) < 0:
        raise ValueError(f"patches {tuple(first)} and {tuple(second)} overlap")
    shuffled = replace_patch(x.detach(), second, torch.roll(x.detach(), -1, dims=0))
    g = _patch_direction(model, x, y, first, create_graph, eps)
    g_shuffled = _patch_direction(model, shuffled, y, first, create_graph, eps)
    return (g * g_shuffled).sum(dim=1).abs().mean()


@dataclass
class GradientChangeRegularizer:
    """``coefficient * gradient_change_penalty(...)`` with patches drawn by ``sampler`` at each
    call; ``loss = loss + reg(model, x, y)`` adds it to a training step. With ``coefficient``
    0 it returns a zero tensor without calling the model or drawing patches (a no-op).
    ``last_penalty`` holds the most recent penalty value (a float) for logging."""

    coefficient: float
    sampler: PatchSampler
    generator: torch.Generator | None = None
    last_penalty: float | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.coefficient, int | float) and self.coefficient >= 0
                and self.coefficient != float("inf")):
            raise ValueError(f"coefficient must be a finite number >= 0, got {self.coefficient!r}")

    def __call__(self, model: nn.Module, x: torch.Tensor,
                 y: torch.Tensor | None = None) -> torch.Tensor:
        if self.coefficient == 0:
            return x.new_zeros(())
        penalty = gradient_change_penalty(model, x, y, sampler=self.sampler,
                                          generator=self.generator)
        self.last_penalty = float(penalty.detach())
        return self.coefficient * penalty


def separation_matrix(model: nn.Module, x: torch.Tensor, donors_first: torch.Tensor,
                      donors_second: torch.Tensor, first: Sequence[int], second: Sequence[int],
                      y: torch.Tensor | None = None) -> torch.Tensor:
    """``M[a, b] = f(x with x_I from donors_first[a] and x_J from donors_second[b])`` for one
    image ``x`` (``(C, H, W)``): the output over a grid of ``(x_I, x_J)`` replacements. Its
    numerical rank is a lower bound on the separation rank of ``f`` across ``(I, J)`` at ``x``.
    ``f`` is the selected output (:func:`selected_output`, label ``y`` for a multi-class head);
    evaluated without gradients, in the model's current mode."""
    first, second = Patch(*map(int, first)), Patch(*map(int, second))
    n_a, n_b = donors_first.shape[0], donors_second.shape[0]
    base = x.unsqueeze(0).expand(n_a * n_b, *x.shape)
    grid = replace_patch(base, first, donors_first.repeat_interleave(n_b, dim=0))
    grid = replace_patch(grid, second, donors_second.repeat(n_a, 1, 1, 1))
    labels = None if y is None else torch.as_tensor(y).reshape(1).expand(n_a * n_b)
    with torch.no_grad():
        return selected_output(model(grid), labels).reshape(n_a, n_b)


def numerical_rank(matrix: torch.Tensor, rtol: float = 1e-2) -> int:
    """Number of singular values above ``rtol`` times the largest (0 for a zero matrix)."""
    s = torch.linalg.svdvals(matrix.double())
    return int((s > rtol * s[0]).sum()) if s.numel() and float(s[0]) > 0 else 0
