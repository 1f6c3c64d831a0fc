"""Overparameterization by depth for PyTorch models (§2.5-2.6, §E2): the same specification as
:mod:`deeplinear.overparam` (equinox), for ``torch.nn`` modules.

``overparameterize(model, depth)`` returns a copy of ``model`` in which every ``nn.Linear``
``x -> W x + b`` (and, with ``conv=True``, every ``nn.Conv2d``) is ``x -> W_N ... W_1 x + b``: a
product of ``depth`` matrices with the same function at initialization (``init="balanced"``, the
default, or ``"identity"``). The new parameters add no expressiveness (``W_{1:N}`` can be any
matrix when the hidden width is at least ``min(in, out)``, §2.1); they change the optimization:
from balanced factors, gradient descent moves ``W_{1:N}`` by the preconditioned end-to-end rule
of §2.6. ``collapse(model)`` multiplies the factors back into plain layers for inference.

The same module re-exports the locality regularizer of §E8 (``GradientChangeRegularizer``,
``gradient_change_penalty`` and the patch samplers, from :mod:`deeplinear.torch_locality`).

Needs the optional extra: ``pip install "deeplinear[torch]"``. Example::

    import torch
    from deeplinear.torch import collapse, overparameterize

    net = torch.nn.Sequential(torch.nn.Linear(784, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10))
    deep = overparameterize(net, depth=2)        # each Linear -> W2 @ W1, same outputs
    # ... train `deep` (e.g. torch.optim.SGD with momentum) ...
    fast = collapse(deep)                        # plain nn.Linear layers again
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from typing import Literal

from deeplinear._optional import needs_extra

with needs_extra("deeplinear.torch"):
    import torch
    from torch import nn
    from torch.nn import functional

__all__ = [
    "FactorizedConv2d",
    "FactorizedLinear",
    "balanced_factors",
    "collapse",
    "count_parameters",
    "dense_l2",
    "end_to_end_weights",
    "overparameterize",
    # the locality regularizer (§E8), defined in deeplinear.torch_locality
    "FixedPatches",
    "GradientChangeRegularizer",
    "Patch",
    "RandomPatches",
    "adjacent_patches",
    "gradient_change_penalty",
    "separation_matrix",
]

from deeplinear.torch_locality import (  # noqa: E402  (re-exported: one import for PyTorch users)
    FixedPatches,
    GradientChangeRegularizer,
    Patch,
    RandomPatches,
    adjacent_patches,
    gradient_change_penalty,
    separation_matrix,
)

Init = Literal["balanced", "identity", "random"]
INITS = ("balanced", "identity", "random")


def _product(factors: Sequence[torch.Tensor]) -> torch.Tensor:
    """``W_{1:N} = W_N ... W_1`` (Def 1) of factors ``W_j`` of shape ``(d_j, d_{j-1})``."""
    out = factors[0]
    for Wj in factors[1:]:
        out = Wj @ out
    return out


class FactorizedLinear(nn.Module):
    """``x -> W_N ... W_1 x + b``: an ``nn.Linear`` written as a depth-N linear network (Def 1).

    ``factors[j-1]`` is ``W_j`` of shape ``(d_j, d_{j-1})``; ``bias`` is the original layer's.
    """

    def __init__(self, factors: Sequence[torch.Tensor], bias: torch.Tensor | None) -> None:
        super().__init__()
        self.factors = nn.ParameterList([nn.Parameter(f) for f in factors])
        self.bias = None if bias is None else nn.Parameter(bias)
        self.in_features = int(factors[0].shape[1])
        self.out_features = int(factors[-1].shape[0])

    def end_to_end(self) -> torch.Tensor:
        """``W_{1:N}``, shape ``(out, in)``."""
        return _product(list(self.factors))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # one factor at a time: cheaper than forming W_{1:N} for small batches, equal up to rounding
        for Wj in self.factors[:-1]:
            x = functional.linear(x, Wj)
        return functional.linear(x, self.factors[-1], self.bias)

    def extra_repr(self) -> str:
        widths = [self.in_features] + [int(f.shape[0]) for f in self.factors]
        return f"widths={widths}, bias={self.bias is not None}"


class FactorizedConv2d(nn.Module):
    """An ``nn.Conv2d`` whose kernel, read as an ``(out, in/groups * kh * kw)`` matrix, is
    ``W_N ... W_1``. With ``groups=1`` this is a ``kh x kw`` convolution to ``hidden`` channels
    (``W_1``) followed by 1x1 convolutions (``W_2 ... W_N``); the forward pass runs the one
    convolution with kernel ``W_{1:N}`` (same function, any ``groups``/``padding_mode``)."""

    def __init__(self, factors: Sequence[torch.Tensor], bias: torch.Tensor | None,
                 template: nn.Conv2d) -> None:
        super().__init__()
        self.factors = nn.ParameterList([nn.Parameter(f) for f in factors])
        self.bias = None if bias is None else nn.Parameter(bias)
        self.in_channels, self.out_channels = template.in_channels, template.out_channels
        self.kernel_size = tuple(template.kernel_size)
        self.stride, self.padding = template.stride, template.padding
        self.dilation, self.groups = template.dilation, template.groups
        self.padding_mode = template.padding_mode
        self._pad = template._reversed_padding_repeated_twice

    def end_to_end(self) -> torch.Tensor:
        """The end-to-end kernel, shape ``(out, in / groups, kh, kw)``."""
        return _product(list(self.factors)).reshape(
            self.out_channels, self.in_channels // self.groups, *self.kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernel = self.end_to_end()
        if self.padding_mode != "zeros":
            x = functional.pad(x, self._pad, mode=self.padding_mode)
            return functional.conv2d(x, kernel, self.bias, self.stride, 0, self.dilation, self.groups)
        return functional.conv2d(x, kernel, self.bias, self.stride, self.padding, self.dilation,
                        self.groups)

    def extra_repr(self) -> str:
        widths = [int(self.factors[0].shape[1])] + [int(f.shape[0]) for f in self.factors]
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"widths={widths}, stride={self.stride}, padding={self.padding}")


def _hidden(width: int | None, n_in: int, n_out: int) -> int:
    h = n_out if width is None else width
    if isinstance(h, bool) or not isinstance(h, int) or h < min(n_in, n_out):
        raise ValueError(
            f"width={h!r} is below min(in, out) = {min(n_in, n_out)} for a {n_out}x{n_in} layer, "
            "so the factorization could not represent the layer (bottleneck, §2.1); use "
            "width >= min(in, out) or None (= out)")
    return h


def _pad(M: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    out = M.new_zeros((rows, cols))
    out[: M.shape[0], : M.shape[1]] = M
    return out


def balanced_factors(W: torch.Tensor, dims: Sequence[int]) -> list[torch.Tensor]:
    """Procedure 1 of ACGH19 (§2.5): balanced factors with product exactly ``W`` (to rounding).

    With the thin SVD ``W = U Σ Vᵀ`` and ``k = min(d_0, d_N)``: ``W_1 ≃ Σ^{1/N} Vᵀ``,
    ``W_j ≃ Σ^{1/N}`` (1 < j < N), ``W_N ≃ U Σ^{1/N}``, each zero-padded to ``(d_j, d_{j-1})``.
    Computed in ``W``'s dtype (at least float32, which the SVD needs) and device.
    """
    n = len(dims) - 1
    if tuple(W.shape) != (dims[-1], dims[0]):
        raise ValueError(f"W has shape {tuple(W.shape)}, expected (d_N, d_0) = {(dims[-1], dims[0])}")
    if min(dims[1:-1], default=dims[0]) < min(dims[0], dims[-1]):
        raise ValueError(f"dims {list(dims)} have a bottleneck below min(d_0, d_N)")
    if n == 1:
        return [W.detach().clone()]
    work = W.detach().to(torch.promote_types(W.dtype, torch.float32))
    U, s, Vh = torch.linalg.svd(work, full_matrices=False)
    root = torch.diag(s ** (1.0 / n))
    layers = [_pad(root @ Vh, dims[1], dims[0])]
    layers += [_pad(root, dims[j + 1], dims[j]) for j in range(1, n - 1)]
    layers.append(_pad(U @ root, dims[n], dims[n - 1]))
    return [L.to(W.dtype) for L in layers]


def _factor_matrix(W: torch.Tensor, depth: int, hidden: int, init: Init,
                   generator: torch.Generator | None) -> list[torch.Tensor]:
    """Factors ``[W_1, ..., W_N]`` of the ``(out, in)`` matrix ``W`` with hidden widths ``hidden``."""
    n_out, n_in = W.shape
    dims = (n_in,) + (hidden,) * (depth - 1) + (n_out,)
    shapes = [(dims[j + 1], dims[j]) for j in range(depth)]
    W = W.detach()
    if init == "balanced":
        return balanced_factors(W, dims)
    if init == "identity":
        # W in the first factor when hidden >= out, else in the last one (hidden >= in); every
        # other factor a zero-padded identity, so the product is exactly W
        def eye(r: int, c: int) -> torch.Tensor:
            return torch.eye(r, c, dtype=W.dtype, device=W.device)

        if hidden >= n_out:
            return [_pad(W.clone(), *shapes[0])] + [eye(*s) for s in shapes[1:]]
        return [eye(*s) for s in shapes[:-1]] + [_pad(W.clone(), *shapes[-1])]
    # "random": each factor drawn like a fresh nn.Linear weight, uniform in ±1/sqrt(fan_in)
    # (the paper's setting, §E2; does NOT keep the function)
    return [(2 * torch.rand(s, dtype=W.dtype, device=W.device, generator=generator) - 1)
            / math.sqrt(s[1]) for s in shapes]


def _targets(conv: bool) -> tuple[type, ...]:
    return (nn.Linear, nn.Conv2d) if conv else (nn.Linear,)


# Modules that read their linear layers' ``.weight`` directly instead of calling them: their
# layers are left as they are.
_OPAQUE = (nn.MultiheadAttention,)


def _swap(model: nn.Module, make: Callable[[nn.Module], nn.Module | None]) -> nn.Module:
    """Replace every submodule ``m`` for which ``make(m)`` is not None (the root included)."""
    new = make(model)
    if new is not None:
        return new
    if isinstance(model, _OPAQUE):
        return model
    for name, child in list(model.named_children()):
        setattr(model, name, _swap(child, make))
    return model


def overparameterize(model: nn.Module, depth: int = 2, *, conv: bool = False,
                     width: int | None = None, init: Init = "balanced",
                     generator: torch.Generator | None = None) -> nn.Module:
    """A copy of ``model`` with every ``nn.Linear`` (and ``nn.Conv2d`` with ``conv=True``) a
    product of ``depth`` matrices (§E2); ``model`` itself is left unchanged.

    Args:
        model: any ``nn.Module`` (or a single layer) containing ``nn.Linear``/``nn.Conv2d``
            (those inside ``nn.MultiheadAttention``, which reads its weights directly, are kept).
        depth: factors N >= 1 per layer.
        conv: also factorize ``nn.Conv2d`` layers (kernel as an ``out x (in * kh * kw)`` matrix;
            the extra factors act as 1x1 convolutions).
        width: the inserted hidden width; None uses the layer's output size (§E2: an
            ``out x in`` layer becomes ``(out x out)(out x in)``). Must be >= min(in, out).
        init: ``"balanced"``: Procedure 1 (§2.5) applied to the layer's weight, product exactly
            the weight, so the function is unchanged and the end-to-end dynamics of §2.6 apply;
            ``"identity"``: the weight in one factor, identities elsewhere (unchanged, not
            balanced); ``"random"``: fresh factors (changes the function).
        generator: random generator of ``init="random"``.

    Returns:
        The new model, on the device and in the dtype of each original layer; biases kept.
    """
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth must be an integer >= 1, got {depth!r}")
    if init not in INITS:
        raise ValueError(f"init must be 'balanced', 'identity' or 'random', got {init!r}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    model = collapse(model)  # a copy; re-factorizing starts from the end-to-end layers
    kinds = _targets(conv)
    if not any(isinstance(m, kinds) for m in model.modules()):
        names = "nn.Linear or nn.Conv2d" if conv else "nn.Linear"
        raise ValueError(f"model contains no {names} layer to overparameterize")

    def make(m: nn.Module) -> nn.Module | None:
        if not isinstance(m, kinds):
            return None
        M = m.weight.reshape(m.weight.shape[0], -1)
        n_out, n_in = M.shape
        factors = _factor_matrix(M, depth, _hidden(width, n_in, n_out), init, generator)
        bias = None if m.bias is None else m.bias.detach().clone()
        if isinstance(m, nn.Linear):
            return FactorizedLinear(factors, bias)
        return FactorizedConv2d(factors, bias, m)

    return _swap(model, make)


def collapse(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with the factors of every factorized layer multiplied back into one
    ``nn.Linear``/``nn.Conv2d`` (weight ``W_{1:N}``): the same function up to rounding, with the
    original parameter count."""

    def make(m: nn.Module) -> nn.Module | None:
        if isinstance(m, FactorizedLinear):
            W = m.end_to_end().detach()
            layer = nn.Linear(m.in_features, m.out_features, bias=m.bias is not None,
                              device=W.device, dtype=W.dtype)
        elif isinstance(m, FactorizedConv2d):
            W = m.end_to_end().detach()
            layer = nn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding,
                              m.dilation, m.groups, m.bias is not None, m.padding_mode,
                              device=W.device, dtype=W.dtype)
        else:
            return None
        with torch.no_grad():
            layer.weight.copy_(W)
            if m.bias is not None:
                layer.bias.copy_(m.bias)
        return layer

    return _swap(copy.deepcopy(model), make)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameter entries of ``model``."""
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad))


def end_to_end_weights(model: nn.Module) -> list[torch.Tensor]:
    """End-to-end weights ``W_{1:N}`` of every factorized layer of ``model``, in module order."""
    return [m.end_to_end() for m in model.modules()
            if isinstance(m, FactorizedLinear | FactorizedConv2d)]


def dense_l2(model: nn.Module, *, end_to_end: bool = True, bias: bool = True) -> torch.Tensor:
    """The L2 term of the dense layers, ``Σ_layers (‖W‖_F² + ‖b‖²) / 2`` (TensorFlow's
    ``l2_loss`` summed over every ``nn.Linear`` and ``FactorizedLinear``), differentiable.

    For a factorized layer ``W`` is the end-to-end matrix ``W_{1:N}`` when ``end_to_end`` (the
    default): then ``overparameterize(model)`` with a function-preserving init has exactly the
    regularized objective of ``model``, and only the optimization changes. With
    ``end_to_end=False`` the term is ``Σ_j ‖W_j‖_F² / 2`` over the factors (weight decay on each
    factor: another objective). ``bias=False`` leaves the biases out. Multiply by the coefficient
    (the TensorFlow MNIST tutorial adds ``5e-4 * dense_l2(model)`` to the cross-entropy).
    """
    terms: list[torch.Tensor] = []
    for m in model.modules():
        if isinstance(m, FactorizedLinear):
            mats = [m.end_to_end()] if end_to_end else list(m.factors)
        elif isinstance(m, nn.Linear):
            mats = [m.weight]
        else:
            continue
        terms += [W.square().sum() for W in mats]
        if bias and m.bias is not None:
            terms.append(m.bias.square().sum())
    if not terms:
        raise ValueError("model contains no nn.Linear or FactorizedLinear layer")
    return torch.stack(terms).sum() / 2
