"""Optimizers by name (optax), plus GroupRMSprop: one adaptive rate for all parameters."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

__all__ = [
    "group_rmsprop",
    "GroupRMSpropState",
    "make_optimizer",
    "OPTIMIZERS",
]


class GroupRMSpropState(NamedTuple):
    count: jax.Array
    square_avg: jax.Array


def group_rmsprop(
    learning_rate: float, alpha: float = 0.99, eps: float = 1e-4
) -> optax.GradientTransformation:
    """RMSprop with ONE adaptive rate for all parameters (roosephu ``opt.py``, §4 pitfall 8).

    ``v_t = alpha v_{t-1} + (1 - alpha) Σ_params ||g||^2``, ``v̂_t = v_t / (1 - alpha^t)``,
    update ``= -lr g / (sqrt(v̂_t) + eps)``.
    """

    def init(params):
        dtype = jnp.result_type(*jax.tree_util.tree_leaves(params))  # the parameters' float dtype
        return GroupRMSpropState(jnp.zeros([], jnp.int32), jnp.zeros([], dtype))

    def update(updates, state, params=None):
        del params
        sq = sum(jnp.sum(g * g) for g in jax.tree_util.tree_leaves(updates))
        count = state.count + 1
        avg = alpha * state.square_avg + (1 - alpha) * sq
        denom = jnp.sqrt(avg / (1 - alpha ** count.astype(avg.dtype))) + eps
        scaled = jax.tree_util.tree_map(lambda g: -learning_rate * g / denom, updates)
        return scaled, GroupRMSpropState(count, avg)

    return optax.GradientTransformation(init, update)


_OPTIMIZERS: dict[str, Callable[..., optax.GradientTransformation]] = {
    "gd": optax.sgd,
    "momentum": lambda lr, momentum=0.9, nesterov=False: optax.sgd(lr, momentum, nesterov),
    "adam": optax.adam,
    "adagrad": optax.adagrad,
    "adadelta": optax.adadelta,
    "rmsprop": optax.rmsprop,
    "group_rmsprop": group_rmsprop,
}
OPTIMIZERS = tuple(_OPTIMIZERS)


def make_optimizer(name: str, lr: float | jax.Array, **kwargs: Any) -> optax.GradientTransformation:
    """An optax optimizer by name: one of :data:`OPTIMIZERS`."""
    if name not in _OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")
    return _OPTIMIZERS[name](lr, **kwargs)
