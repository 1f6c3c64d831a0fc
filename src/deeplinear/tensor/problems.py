"""Losses on the end-to-end tensor, with analytic gradients, and their data (§2.15, §E6, §E7).

Each is a ``deeplinear.problems.Problem`` (so the training loops take it) whose ``shape`` is the
tensor's shape, with the loss scalings of ``deeplinear.problems`` (``reduction``: "mean",
"half_mean", "half_sum"):

* :class:`TensorCompletion`: ``l(W) = c Σ_k (W[idx_k] - y_k)^2`` from index arrays (order 2 is
  matrix completion);
* :class:`TensorSensing`: ``l(W) = c Σ_k (<A_k, W> - y_k)^2``;
* :class:`ObservedEntries`: ``l(p) = c Σ_k (p_k - y_k)^2`` on a vector of predicted entries, for
  parameterizations that evaluate only the observed entries (``cp.CPEntries``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from deeplinear._dtype import as_float
from deeplinear.problems import Problem, Reduction, _check_finite, _check_int, _coefficients
from deeplinear.tensor import cp

__all__ = [
    "ObservedEntries",
    "TensorCompletion",
    "TensorSensing",
    "cp_ground_truth",
    "sample_tensor_completion",
    "sample_tensor_sensing",
]


class TensorCompletion(Problem):
    """``l(W) = c Σ_k (W[index_k] - values_k)^2`` over the observed entries; ``index`` is
    ``(m, N)`` integers. The gradient is ``2c (W - y)`` scattered onto the observed entries."""

    index: jax.Array
    values: jax.Array
    dims: tuple[int, ...] = eqx.field(static=True)
    reduction: str = eqx.field(static=True)

    def __init__(self, index, values, shape: Sequence[int], reduction: Reduction = "mean", *,
                 dtype=None):
        index = np.asarray(index)
        shape = tuple(_check_int(f"shape[{i}]", d, 1) for i, d in enumerate(shape))
        if len(shape) < 1:
            raise ValueError("shape must list the tensor's mode sizes, got ()")
        if index.ndim != 2 or index.shape[1] != len(shape) or index.shape[0] < 1:
            raise ValueError(f"index must be (m >= 1, N = {len(shape)}) integers, got shape "
                             f"{index.shape}")
        if not np.issubdtype(index.dtype, np.integer):
            raise ValueError(f"index must hold integers, got {index.dtype}")
        if np.any(index < 0) or np.any(index >= np.asarray(shape)):
            raise ValueError(f"index entries must lie in [0, d_n) for shape {shape}")
        values = as_float(values, dtype)
        if values.shape != (index.shape[0],):
            raise ValueError(f"values must be ({index.shape[0]},) like index, got {values.shape}")
        _check_finite("values", values)
        _coefficients(reduction, index.shape[0])
        self.index = jnp.asarray(index, dtype=jnp.int32)
        self.values = values
        self.dims = shape
        self.reduction = reduction

    @property
    def shape(self) -> tuple[int, ...]:
        return self.dims

    @property
    def order(self) -> int:
        return len(self.dims)

    def mask(self) -> np.ndarray:
        """Boolean tensor: True on the observed entries."""
        out = np.zeros(self.dims, dtype=bool)
        out[tuple(np.asarray(self.index).T)] = True
        return out

    def value_and_grad(self, W):
        c, g = _coefficients(self.reduction, self.index.shape[0])
        at = tuple(self.index[:, n] for n in range(self.order))
        r = W[(Ellipsis, *at)] - self.values
        grad = jnp.zeros(W.shape, W.dtype).at[(Ellipsis, *at)].add(g * r)
        return c * jnp.sum(r * r, axis=-1), grad


class TensorSensing(Problem):
    """``l(W) = c Σ_k (<A_k, W> - y_k)^2``; ``A`` is ``(m, d_1, ..., d_N)``."""

    A: jax.Array
    y: jax.Array
    reduction: str = eqx.field(static=True)

    def __init__(self, A, y, reduction: Reduction = "mean", *, dtype=None):
        A, y = as_float(A, dtype), as_float(y, dtype)
        if A.ndim < 2 or y.shape != (A.shape[0],) or A.shape[0] < 1:
            raise ValueError(f"A must be (m >= 1, d_1, ..., d_N) and y (m,), got {A.shape} and "
                             f"{y.shape}")
        _check_finite("A", A)
        _check_finite("y", y)
        _coefficients(reduction, A.shape[0])
        self.A, self.y, self.reduction = A, y, reduction

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.A.shape[1:])

    def value_and_grad(self, W):
        c, g = _coefficients(self.reduction, self.A.shape[0])
        K = self.A.ndim - 1
        r = jnp.tensordot(W, self.A, axes=(tuple(range(W.ndim - K, W.ndim)),
                                            tuple(range(1, K + 1)))) - self.y
        grad = g * jnp.tensordot(r, self.A, axes=((r.ndim - 1,), (0,)))
        return c * jnp.sum(r * r, axis=-1), grad


class ObservedEntries(Problem):
    """``l(p) = c Σ_k (p_k - values_k)^2`` on the vector ``p`` of predicted observed entries
    (the end-to-end map of ``cp.CPEntries``)."""

    values: jax.Array
    reduction: str = eqx.field(static=True)

    def __init__(self, values, reduction: Reduction = "mean", *, dtype=None):
        values = as_float(values, dtype)
        if values.ndim != 1 or values.shape[0] < 1:
            raise ValueError(f"values must be a non-empty vector, got shape {values.shape}")
        _check_finite("values", values)
        _coefficients(reduction, values.shape[0])
        self.values, self.reduction = values, reduction

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.values.shape)

    def value_and_grad(self, p):
        c, g = _coefficients(self.reduction, self.values.shape[0])
        r = p - self.values
        return c * jnp.sum(r * r, axis=-1), g * r


def cp_ground_truth(key: jax.Array, dims: Sequence[int], rank: int, *, fro_norm: float = 1.0,
                    dtype=None) -> jax.Array:
    """A CP-rank-``rank`` tensor ``Σ_r ⊗_n w_r^n`` with standard Gaussian vectors, rescaled to
    Frobenius norm ``fro_norm`` (§E6: rank 1, norm 1; §E7: rank 5, norm 1)."""
    if not fro_norm > 0:
        raise ValueError(f"fro_norm must be > 0, got {fro_norm!r}")
    W = cp.cp_tensor(cp.gaussian_init(key, dims, rank, 1.0, dtype=dtype))
    return W * (fro_norm / jnp.linalg.norm(W))


def sample_tensor_completion(key: jax.Array, target: jax.Array, m: int,
                             reduction: Reduction = "mean") -> TensorCompletion:
    """Observe ``m`` entries of ``target`` drawn uniformly without replacement, in a random
    order (§E6)."""
    target = as_float(target)
    size = math.prod(target.shape)
    _check_int("m (observations)", m, 1, size)
    flat = np.asarray(jax.random.permutation(key, size)[:m])
    index = np.stack(np.unravel_index(flat, target.shape), axis=1)
    return TensorCompletion(index, target.reshape(-1)[flat], target.shape, reduction)


def sample_tensor_sensing(key: jax.Array, target: jax.Array, m: int,
                          reduction: Reduction = "mean") -> TensorSensing:
    """Gaussian sensing: ``A_k`` with i.i.d. ``N(0, 1/numel)`` entries, ``y_k = <A_k, W*>``."""
    target = as_float(target)
    _check_int("m (measurements)", m, 1)
    A = jax.random.normal(key, (m, *target.shape), target.dtype) / np.sqrt(target.size)
    return TensorSensing(A, jnp.tensordot(A, target, axes=target.ndim))
