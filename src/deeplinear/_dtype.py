"""dtype rules shared by the package: arrays follow the data, new arrays take a ``dtype``.

The package never changes JAX's configuration. A function computes in the dtype of the arrays it
gets; a function that creates arrays from nothing (an initializer, a data generator) takes
``dtype``, whose default ``None`` is JAX's default float (float64 under ``jax_enable_x64``,
float32 otherwise).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np


def float_dtype(dtype: Any = None) -> np.dtype:
    """The float dtype to create arrays in: ``dtype``, or JAX's default float if ``None``.

    A float64 request while JAX runs without x64 is an error (JAX would silently give float32).
    """
    if dtype is None:
        return jnp.dtype(jnp.result_type(float))
    message = f"dtype must be a float dtype such as 'float32' or 'float64', got {dtype!r}"
    try:
        out = jnp.dtype(dtype)
    except TypeError:
        raise ValueError(message) from None
    if not jnp.issubdtype(out, jnp.floating):
        raise ValueError(message)
    if out.itemsize == 8 and not jax.config.jax_enable_x64:
        raise ValueError("dtype float64 needs JAX's x64 mode: call deeplinear.enable_x64() or run "
                         "inside `with jax.enable_x64(True):`")
    return out


def as_float(x: Any, dtype: Any = None) -> jax.Array:
    """``x`` as a JAX float array: in ``dtype`` if given, else in its own float dtype (numpy
    float64 becomes float32 when JAX runs without x64); integers and Python numbers become JAX's
    default float."""
    if dtype is not None:
        return jnp.asarray(x, dtype=float_dtype(dtype))
    x = jnp.asarray(x)
    return x if jnp.issubdtype(x.dtype, jnp.inexact) else x.astype(float_dtype())


def float_leaves(tree: Any) -> list[jax.Array]:
    """The floating-point array leaves of a pytree (e.g. a problem's data)."""
    return [leaf for leaf in jax.tree_util.tree_leaves(eqx.filter(tree, eqx.is_inexact_array))]


def common_dtype(*trees: Any) -> np.dtype:
    """The dtype a computation on ``trees`` runs in: JAX's promotion of their float leaves (JAX's
    default float if they have none)."""
    leaves = [leaf for t in trees for leaf in float_leaves(t)]
    return jnp.dtype(jnp.result_type(*leaves)) if leaves else float_dtype()


F = TypeVar("F", bound=Callable[..., Any])


def in_float64(fn: F) -> F:
    """``fn`` computing inside ``jax.enable_x64(True)``: the JAX arrays it creates default to
    float64, whatever the caller's configuration (restored on return; local to the thread).
    Idempotent: an already wrapped ``fn`` is returned as is."""
    if getattr(fn, "_in_float64", False):
        return fn

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with jax.enable_x64(True):
            return fn(*args, **kwargs)

    wrapper._in_float64 = True  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]
