"""Overparameterization by depth as a tool for any equinox model (§2.6-2.8, §E2).

``overparameterize(model, depth, key=...)`` replaces every dense map ``x -> W x + b`` of a model
(each ``eqx.nn.Linear``, and with ``conv=True`` each ``eqx.nn.Conv``) by ``x -> W_N ... W_1 x + b``.
This adds no expressiveness (the end-to-end matrix ``W_{1:N}`` can be any matrix when the hidden
width is at least ``min(in, out)``, §2.1), only a change of the optimization: under balancedness
gradient descent on the factors moves ``W_{1:N}`` by the preconditioned rule of §2.6. With
``init="balanced"`` (default) or ``"identity"`` the new model computes the same function at
initialization. ``collapse(model)`` multiplies the factors back into single layers for inference.

Example::

    import equinox as eqx, jax
    from deeplinear.overparam import overparameterize, collapse

    mlp = eqx.nn.MLP(784, 10, width_size=256, depth=2, key=jax.random.key(0))
    deep = overparameterize(mlp, 2, key=jax.random.key(1))   # each Linear -> W2 @ W1
    x = jax.numpy.ones(784)
    assert jax.numpy.allclose(deep(x), mlp(x))               # same function at init
    # ... train `deep` (e.g. optax.sgd with momentum) ...
    fast = collapse(deep)                                    # plain eqx.nn.Linear layers again
"""

from __future__ import annotations

import math
from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp

from deeplinear.network import balanced_from_matrix, end_to_end

__all__ = [
    "FactorizedConv",
    "FactorizedLinear",
    "collapse",
    "count_parameters",
    "dense_l2",
    "end_to_end_weights",
    "overparameterize",
]

Init = Literal["balanced", "identity", "random"]


class FactorizedLinear(eqx.Module):
    """``x -> W_N ... W_1 x + b``: a dense layer written as a depth-N linear network (Def 1).

    ``factors[j-1]`` is ``W_j`` of shape ``(d_j, d_{j-1})`` (the project's convention).
    """

    factors: tuple[jax.Array, ...]
    bias: jax.Array | None
    in_features: int | Literal["scalar"] = eqx.field(static=True)
    out_features: int | Literal["scalar"] = eqx.field(static=True)

    def end_to_end(self) -> jax.Array:
        """``W_{1:N}``, shape ``(out, in)`` (:func:`deeplinear.network.end_to_end`)."""
        return end_to_end(tuple(self.factors))

    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        if self.in_features == "scalar":
            x = jnp.reshape(x, (1,))
        # Applying the factors one at a time is cheaper than forming W_{1:N} for small batches
        # and equals W_{1:N} x up to rounding.
        for Wj in self.factors:
            x = Wj @ x
        if self.bias is not None:
            x = x + self.bias
        if self.out_features == "scalar":
            x = jnp.reshape(x, ())
        return x


class FactorizedConv(eqx.Module):
    """A convolution whose kernel, read as an ``(out, in * prod(kernel))`` matrix, is
    ``W_N ... W_1``: ``W_1`` is a convolution to ``hidden`` channels and ``W_2 ... W_N`` are 1x1
    convolutions (channel mixing), so the composite is one convolution with kernel ``W_{1:N}``.
    """

    factors: tuple[jax.Array, ...]
    conv: eqx.nn.Conv  # the original layer's settings; its weight is a 0-size placeholder
    kernel_shape: tuple[int, ...] = eqx.field(static=True)

    def end_to_end(self) -> jax.Array:
        """The end-to-end kernel, shape ``(out, in, *kernel_size)`` (groups folded into ``in``)."""
        return end_to_end(tuple(self.factors)).reshape(self.kernel_shape)

    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        conv = eqx.tree_at(lambda c: c.weight, self.conv, self.end_to_end())
        return conv(x, key=key)


def _hidden(width: int | None, n_in: int, n_out: int) -> int:
    h = n_out if width is None else width
    if h < min(n_in, n_out):
        raise ValueError(
            f"hidden_width={h} is below min(in, out) = {min(n_in, n_out)} for a {n_out}x{n_in} "
            "layer, so the factorization could not represent the layer (bottleneck, §2.1); "
            "use hidden_width >= min(in, out) or None (= out)"
        )
    return h


def _factor_matrix(
    W: jax.Array, depth: int, hidden: int, init: Init, key: jax.Array
) -> tuple[jax.Array, ...]:
    """Factors ``(W_1, ..., W_N)`` of the ``(out, in)`` matrix ``W``, hidden widths ``hidden``."""
    n_out, n_in = W.shape
    dims = (n_in,) + (hidden,) * (depth - 1) + (n_out,)
    if init == "balanced":
        return tuple(F.astype(W.dtype) for F in balanced_from_matrix(W, dims))
    if init == "identity":
        # W sits in the first factor when hidden >= out, else in the last one (hidden >= in);
        # every other factor is a zero-padded identity, so the product is exactly W.
        def eye(rows: int, cols: int) -> jax.Array:
            return jnp.eye(rows, cols, dtype=W.dtype)

        def pad(M: jax.Array, rows: int, cols: int) -> jax.Array:
            return jnp.zeros((rows, cols), W.dtype).at[: M.shape[0], : M.shape[1]].set(M)

        shapes = [(dims[j + 1], dims[j]) for j in range(depth)]
        if hidden >= n_out:
            return (pad(W, *shapes[0]),) + tuple(eye(*s) for s in shapes[1:])
        return tuple(eye(*s) for s in shapes[:-1]) + (pad(W, *shapes[-1]),)
    if init == "random":
        # Each factor drawn like a fresh eqx.nn.Linear (uniform in ±1/sqrt(fan_in)): the paper's
        # setting (§E2), which does NOT keep the function of the original model.
        keys = jax.random.split(key, depth)
        return tuple(
            jax.random.uniform(k, (dims[j + 1], dims[j]), W.dtype, -1.0, 1.0) / math.sqrt(dims[j])
            for j, k in enumerate(keys)
        )
    raise ValueError(f"init must be 'balanced', 'identity' or 'random', got {init!r}")


def _is_target(node: object, conv: bool) -> bool:
    return isinstance(node, eqx.nn.Linear | FactorizedLinear) or (
        conv and isinstance(node, eqx.nn.Conv | FactorizedConv)
    )


def overparameterize(
    model: eqx.Module,
    depth: int,
    *,
    hidden_width: int | None = None,
    conv: bool = False,
    key: jax.Array,
    init: Init = "balanced",
) -> eqx.Module:
    """Replace every dense (and, with ``conv=True``, convolutional) linear map by ``depth`` factors.

    Args:
        model: any equinox model (pytree) containing ``eqx.nn.Linear`` / ``eqx.nn.Conv`` layers.
        depth: number of factors N >= 1 per layer (1 returns an equivalent one-factor model).
        hidden_width: width of the inserted hidden dimensions; ``None`` uses the layer's output
            size, which is §E2's choice (an ``out x in`` layer becomes ``out x out`` times
            ``out x in``). Must be >= min(in, out) of every layer.
        conv: also factorize convolutions (kernel as an ``out x (in * kh * kw)`` matrix, the
            extra factors being 1x1 convolutions).
        key: PRNG key (used by ``init="random"``).
        init: ``"balanced"``: balanced factors with product exactly the original weight
            (ACGH19 Procedure 1, §2.5), so the model is unchanged and the end-to-end dynamics
            of §2.6 apply; ``"identity"``: the original weight in one factor, identities in the
            others (also unchanged, not balanced); ``"random"``: fresh factors (changes the model).

    Returns:
        The model with ``FactorizedLinear`` (``FactorizedConv``) layers; biases are kept as is.
    """
    if not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth must be an integer >= 1, got {depth!r}")
    if init not in ("balanced", "identity", "random"):
        raise ValueError(f"init must be 'balanced', 'identity' or 'random', got {init!r}")
    factorized = lambda n: isinstance(n, FactorizedLinear | FactorizedConv)  # noqa: E731
    if any(factorized(n) for n in jax.tree_util.tree_leaves(model, is_leaf=factorized)):
        model = collapse(model)  # re-factorizing starts from the end-to-end layers
    leaves, treedef = jax.tree_util.tree_flatten(model, is_leaf=lambda n: _is_target(n, conv))
    targets = [i for i, n in enumerate(leaves) if _is_target(n, conv)]
    if not targets:
        kinds = "eqx.nn.Linear or eqx.nn.Conv" if conv else "eqx.nn.Linear"
        raise ValueError(f"model contains no {kinds} layer to overparameterize")
    keys = jax.random.split(key, len(targets))
    for i, k in zip(targets, keys, strict=True):
        layer = leaves[i]
        if isinstance(layer, eqx.nn.Linear):
            W = layer.weight
            n_out, n_in = W.shape
            factors = _factor_matrix(W, depth, _hidden(hidden_width, n_in, n_out), init, k)
            leaves[i] = FactorizedLinear(factors, layer.bias, layer.in_features,
                                         layer.out_features)
        else:
            kernel = layer.weight
            M = kernel.reshape(kernel.shape[0], -1)
            n_out, n_in = M.shape
            factors = _factor_matrix(M, depth, _hidden(hidden_width, n_in, n_out), init, k)
            placeholder = jnp.zeros((0,), kernel.dtype)
            leaves[i] = FactorizedConv(factors, eqx.tree_at(lambda c: c.weight, layer, placeholder),
                                       tuple(kernel.shape))
    return jax.tree_util.tree_unflatten(treedef, leaves)


def collapse(model: eqx.Module) -> eqx.Module:
    """Multiply the factors of every factorized layer back into one ``eqx.nn.Linear``/``Conv``.

    The collapsed model computes the same function (up to floating-point rounding) and has the
    original parameter count; use it for inference or to re-factorize.
    """

    def is_fact(node: object) -> bool:
        return isinstance(node, FactorizedLinear | FactorizedConv)

    def one(node: object) -> object:
        if isinstance(node, FactorizedLinear):
            W = node.end_to_end()
            lin = eqx.nn.Linear(node.in_features, node.out_features, use_bias=node.bias is not None,
                                dtype=W.dtype, key=jax.random.key(0))
            lin = eqx.tree_at(lambda m: m.weight, lin, W)
            if node.bias is not None:
                lin = eqx.tree_at(lambda m: m.bias, lin, node.bias)
            return lin
        if isinstance(node, FactorizedConv):
            return eqx.tree_at(lambda c: c.weight, node.conv, node.end_to_end())
        return node

    return jax.tree_util.tree_map(one, model, is_leaf=is_fact)


def count_parameters(model: eqx.Module) -> int:
    """Number of trainable array entries (``eqx.is_inexact_array`` leaves) of ``model``."""
    leaves = jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_inexact_array))
    return int(sum(math.prod(x.shape) for x in leaves))


# A tiny convenience for users who want the end-to-end matrices of a factorized model.
def end_to_end_weights(model: eqx.Module) -> list[jax.Array]:
    """End-to-end weights ``W_{1:N}`` of every factorized layer of ``model``, in tree order."""
    found: list[jax.Array] = []

    def visit(node: object) -> object:
        if isinstance(node, FactorizedLinear | FactorizedConv):
            found.append(node.end_to_end())
        return node

    jax.tree_util.tree_map(
        visit, model, is_leaf=lambda n: isinstance(n, FactorizedLinear | FactorizedConv)
    )
    return found



def dense_l2(model: eqx.Module, *, end_to_end: bool = True, bias: bool = True) -> jax.Array:
    """The L2 term of the dense layers, ``Σ_layers (‖W‖_F² + ‖b‖²) / 2`` (TensorFlow's
    ``l2_loss`` summed over every ``eqx.nn.Linear`` and ``FactorizedLinear``), differentiable.

    For a factorized layer ``W`` is the end-to-end matrix ``W_{1:N}`` when ``end_to_end`` (the
    default): then ``overparameterize(model, ...)`` with a function-preserving init has exactly
    the regularized objective of ``model``, and only the optimization changes. With
    ``end_to_end=False`` the term is ``Σ_j ‖W_j‖_F² / 2`` over the factors (weight decay on each
    factor: another objective). ``bias=False`` leaves the biases out. Multiply by the coefficient
    (the TensorFlow MNIST tutorial adds ``5e-4 * dense_l2(model)`` to the cross-entropy).
    """
    def dense(n: object) -> bool:
        return isinstance(n, eqx.nn.Linear | FactorizedLinear)

    terms: list[jax.Array] = []
    for node in jax.tree_util.tree_leaves(model, is_leaf=dense):
        if isinstance(node, FactorizedLinear):
            mats = [node.end_to_end()] if end_to_end else list(node.factors)
        elif isinstance(node, eqx.nn.Linear):
            mats = [node.weight]
        else:
            continue
        terms += [jnp.sum(W**2) for W in mats]
        if bias and node.bias is not None:
            terms.append(jnp.sum(node.bias**2))
    if not terms:
        raise ValueError("model contains no eqx.nn.Linear or FactorizedLinear layer")
    return sum(terms[1:], terms[0]) / 2
