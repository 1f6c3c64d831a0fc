"""Losses on the end-to-end matrix, with analytic gradients, and their data generators.

A problem is a frozen ``equinox.Module`` (a pytree, so it can be passed through ``jit``/``vmap``)
with ``shape = (d_N, d_0)``, ``loss(W)``, ``grad(W)`` and ``value_and_grad(W)``. The
overparameterized objective of Def 2 is ``phi(W_1, ..., W_N) = problem.loss(end_to_end(factors))``.

Loss scalings differ between the papers (§4 pitfall 9); ``reduction`` names them:

* ``"mean"``: mean over observations of the squared residual, no ½ (roosephu, §E3);
* ``"half_mean"``: ``(1/2m) Σ`` (the TAU notes);
* ``"half_sum"``: ``½ Σ`` (RC20, §E5).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "completion_2x2",
    "completion_dxd",
    "CustomLoss",
    "low_rank_ground_truth",
    "LpRegression",
    "MatrixCompletion",
    "MatrixSensing",
    "Problem",
    "Reduction",
    "sample_completion",
    "sample_sensing",
    "WhitenedSquare",
]

Reduction = Literal["mean", "half_mean", "half_sum"]
_REDUCTIONS = ("mean", "half_mean", "half_sum")


def _check_int(name: str, value: object, low: int, high: int | None = None) -> int:
    """``value`` as an int in ``[low, high]``; booleans and non-integral numbers are errors."""
    if isinstance(value, bool | np.bool_):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    try:
        number = operator.index(value)  # int, numpy or 0-d JAX integers; not 2.0, not "2"
    except TypeError:
        raise ValueError(f"{name} must be an integer, got {value!r}") from None
    if number < low or (high is not None and number > high):
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be {bound}, got {number}")
    return number


def _check_finite(name: str, array: np.ndarray | jax.Array) -> None:
    """Refuse inf/nan in concrete data (traced arrays inside ``jit`` are not checked)."""
    if isinstance(array, jax.core.Tracer):
        return
    if not bool(np.all(np.isfinite(np.asarray(array)))):
        raise ValueError(f"{name} must be finite (no inf or nan)")


def _coefficients(reduction: str, m: int) -> tuple[float, float]:
    """(loss coefficient c, gradient coefficient 2c) for ``c * Σ r_i^2``."""
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if m < 1:
        raise ValueError(f"the loss needs at least one observation, got {m}")
    c = {"mean": 1.0 / m, "half_mean": 0.5 / m, "half_sum": 0.5}[reduction]
    return c, 2.0 * c


class Problem(eqx.Module):
    """Base class: a loss ``l(W)`` on ``(d_N, d_0)`` matrices with its gradient."""

    def value_and_grad(self, W: jax.Array) -> tuple[jax.Array, jax.Array]:
        raise NotImplementedError

    def loss(self, W: jax.Array) -> jax.Array:
        return self.value_and_grad(W)[0]

    def grad(self, W: jax.Array) -> jax.Array:
        return self.value_and_grad(W)[1]

    @property
    def shape(self) -> tuple[int, int]:
        raise NotImplementedError


class WhitenedSquare(Problem):
    """``l(W) = ½ ||W - Φ||_F^2`` (whitened square loss, §2.11; α = 1 strongly convex)."""

    target: jax.Array

    def __init__(self, target: jax.Array):
        target = jnp.asarray(target, dtype=jnp.float64)
        if target.ndim != 2:
            raise ValueError(f"target must be a matrix, got shape {target.shape}")
        self.target = target

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.target.shape)

    def value_and_grad(self, W):
        R = W - self.target
        return 0.5 * jnp.sum(R * R, axis=(-2, -1)), R


class LpRegression(Problem):
    """``l(W) = (1/p) mean_i Σ_k ((W x_i)_k - y_ik)^p`` for even ``p`` (§2.10, §E1).

    ``X`` is ``(m, d_0)``; ``y`` is ``(m,)`` (scalar output, ``d_N = 1``) or ``(m, d_N)``.
    """

    X: jax.Array
    Y: jax.Array
    p: int = eqx.field(static=True)

    def __init__(self, X: jax.Array, y: jax.Array, p: int = 2):
        X = jnp.asarray(X, dtype=jnp.float64)
        y = jnp.asarray(y, dtype=jnp.float64)
        if X.ndim != 2:
            raise ValueError(f"X must be (examples, features), got shape {X.shape}")
        Y = y[:, None] if y.ndim == 1 else y
        if Y.ndim != 2 or Y.shape[0] != X.shape[0]:
            raise ValueError(f"y must have {X.shape[0]} rows like X, got shape {y.shape}")
        if X.shape[0] < 1:
            raise ValueError("X and y must hold at least one example, got 0")
        _check_finite("X", X)
        _check_finite("y", Y)
        if _check_int("p", p, 2) % 2:
            raise ValueError(f"p must be an even integer >= 2, got {p!r}")
        self.X, self.Y, self.p = X, Y, int(p)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.Y.shape[1], self.X.shape[1])

    def value_and_grad(self, W):
        R = self.X @ jnp.swapaxes(W, -1, -2) - self.Y  # (..., m, d_N)
        m = self.X.shape[0]
        loss = jnp.sum(R**self.p, axis=(-2, -1)) / (self.p * m)
        grad = jnp.swapaxes(R ** (self.p - 1), -1, -2) @ self.X / m
        return loss, grad


class MatrixSensing(Problem):
    """``l(W) = c Σ_i (<A_i, W> - y_i)^2`` with ``c`` set by ``reduction`` (§2.12).

    ``A`` is ``(m, d_N, d_0)``; measurements are applied with one ``tensordot``, no Python loop.
    """

    A: jax.Array
    y: jax.Array
    reduction: str = eqx.field(static=True)

    def __init__(self, A: jax.Array, y: jax.Array, reduction: Reduction = "mean"):
        A = jnp.asarray(A, dtype=jnp.float64)
        y = jnp.asarray(y, dtype=jnp.float64)
        if A.ndim != 3 or y.shape != (A.shape[0],):
            raise ValueError(f"A must be (m, d_N, d_0) and y (m,), got {A.shape} and {y.shape}")
        if A.shape[0] < 1:
            raise ValueError("MatrixSensing needs at least one measurement (A and y are empty)")
        _check_finite("A", A)
        _check_finite("y", y)
        _coefficients(reduction, A.shape[0])
        self.A, self.y, self.reduction = A, y, reduction

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.A.shape[1:])

    def value_and_grad(self, W):
        c, g = _coefficients(self.reduction, self.A.shape[0])
        r = jnp.einsum("mij,...ij->...m", self.A, W) - self.y
        return c * jnp.sum(r * r, axis=-1), g * jnp.einsum("...m,mij->...ij", r, self.A)


class MatrixCompletion(Problem):
    """Matrix completion: sensing with ``A_i = e_{a_i} e_{b_i}^T`` stored as index arrays (§2.12).

    ``l(W) = c Σ_{(a,b) ∈ Ω} (W_ab - M_ab)^2``; the gradient is scattered back into a dense matrix.
    """

    rows: jax.Array
    cols: jax.Array
    values: jax.Array
    dims: tuple[int, int] = eqx.field(static=True)
    reduction: str = eqx.field(static=True)

    def __init__(self, rows, cols, values, shape: tuple[int, int], reduction: Reduction = "mean"):
        rows = np.asarray(rows)
        cols = np.asarray(cols)
        values = np.asarray(values, dtype=np.float64)
        if not (rows.shape == cols.shape == values.shape and rows.ndim == 1):
            raise ValueError(
                f"rows, cols and values must be 1-D of equal length, got {rows.shape}, "
                f"{cols.shape}, {values.shape}"
            )
        if rows.size == 0:
            raise ValueError("MatrixCompletion needs at least one observation "
                             "(rows, cols and values are empty)")
        if len(shape) != 2:
            raise ValueError(f"shape must be (d_N, d_0) with positive sizes, got {shape!r}")
        shape = (_check_int("shape[0]", shape[0], 1), _check_int("shape[1]", shape[1], 1))
        if not (np.issubdtype(rows.dtype, np.integer) and np.issubdtype(cols.dtype, np.integer)):
            raise ValueError(f"rows and cols must be integer indices, got {rows.dtype} and "
                             f"{cols.dtype}")
        _check_finite("values", values)
        if rows.size and (rows.min() < 0 or rows.max() >= shape[0]):
            raise ValueError(f"rows must lie in [0, {shape[0]}), got range [{rows.min()}, {rows.max()}]")
        if cols.size and (cols.min() < 0 or cols.max() >= shape[1]):
            raise ValueError(f"cols must lie in [0, {shape[1]}), got range [{cols.min()}, {cols.max()}]")
        _coefficients(reduction, rows.size)
        self.rows = jnp.asarray(rows, dtype=jnp.int32)
        self.cols = jnp.asarray(cols, dtype=jnp.int32)
        self.values = jnp.asarray(values)
        self.dims = (int(shape[0]), int(shape[1]))
        self.reduction = reduction

    @property
    def shape(self) -> tuple[int, int]:
        return self.dims

    def value_and_grad(self, W):
        c, g = _coefficients(self.reduction, self.rows.shape[0])
        r = W[..., self.rows, self.cols] - self.values
        grad = jnp.zeros(W.shape, W.dtype).at[..., self.rows, self.cols].add(g * r)
        return c * jnp.sum(r * r, axis=-1), grad


class CustomLoss(Problem):
    """Any JAX function ``fn(W) -> scalar`` on ``(d_N, d_0)`` matrices; gradient by autodiff."""

    fn: Callable[[jax.Array], jax.Array] = eqx.field(static=True)
    dims: tuple[int, int] = eqx.field(static=True)

    def __init__(self, fn: Callable[[jax.Array], jax.Array], shape: tuple[int, int]):
        if not callable(fn):
            raise ValueError(f"fn must be a callable W -> scalar, got {type(fn).__name__}")
        self.fn, self.dims = fn, (int(shape[0]), int(shape[1]))

    @property
    def shape(self) -> tuple[int, int]:
        return self.dims

    def value_and_grad(self, W):
        f = jax.value_and_grad(self.fn)
        for _ in range(W.ndim - 2):
            f = jax.vmap(f)
        return f(W)


# --------------------------------------------------------------------------- data generators


def low_rank_ground_truth(
    key: jax.Array, shape: tuple[int, int], rank: int, fro_norm: float | None = None
) -> jax.Array:
    """``W* = U V^T / sqrt(r)`` with Gaussian ``U, V``, rescaled to ``||W*||_F = fro_norm``.

    The default ``fro_norm = sqrt(d_N d_0)`` (``= n`` for ``n x n``, §E3) makes the RMS entry 1, so
    the reconstruction error (mean over entries of (W - W*)^2) equals ``||W - W*||_F^2 / ||W*||_F^2``.
    """
    d, dp = _check_int("shape[0]", shape[0], 1), _check_int("shape[1]", shape[1], 1)
    _check_int("rank", rank, 1, min(d, dp))
    if fro_norm is not None and not (math.isfinite(fro_norm) and fro_norm > 0):
        raise ValueError(f"fro_norm must be a finite number > 0, got {fro_norm!r}")
    if not 1 <= rank <= min(d, dp):
        raise ValueError(f"rank must be in [1, {min(d, dp)}] for shape {shape}, got {rank}")
    ku, kv = jax.random.split(key)
    U = jax.random.normal(ku, (d, rank), dtype=jnp.float64)
    V = jax.random.normal(kv, (dp, rank), dtype=jnp.float64)
    W = U @ V.T / jnp.sqrt(rank)
    target = float(np.sqrt(d * dp)) if fro_norm is None else float(fro_norm)
    return W * (target / jnp.linalg.norm(W))


def sample_completion(
    key: jax.Array, W_star: jax.Array, m: int, reduction: Reduction = "mean"
) -> MatrixCompletion:
    """Observe ``m`` entries of ``W_star`` drawn uniformly without replacement (§E3)."""
    d, dp = W_star.shape
    _check_int("m (observations)", m, 1, d * dp)
    if not 1 <= m <= d * dp:
        raise ValueError(f"m (observations) must be in [1, {d * dp}] for a {d}x{dp} matrix, got {m}")
    idx = np.asarray(jax.random.choice(key, d * dp, (m,), replace=False))
    rows, cols = idx // dp, idx % dp
    return MatrixCompletion(rows, cols, np.asarray(W_star)[rows, cols], (d, dp), reduction)


def sample_sensing(
    key: jax.Array, W_star: jax.Array, m: int, reduction: Reduction = "mean"
) -> MatrixSensing:
    """Gaussian sensing: ``A_i`` i.i.d. ``N(0, 1/(d_N d_0))`` entries, ``y_i = <A_i, W*>`` (§E3)."""
    _check_int("m (measurements)", m, 1)
    d, dp = W_star.shape
    A = jax.random.normal(key, (m, d, dp), dtype=jnp.float64) / np.sqrt(d * dp)
    return MatrixSensing(A, jnp.einsum("mij,ij->m", A, W_star), reduction)


def completion_2x2() -> MatrixCompletion:
    """Complete ``[[*, 1], [1, 0]]`` with loss ``½ Σ_Ω (W_ij - b_ij)^2`` (§2.13, §E5)."""
    return MatrixCompletion([0, 1, 1], [1, 0, 1], [1.0, 1.0, 0.0], (2, 2), "half_sum")


def completion_dxd(d: int) -> MatrixCompletion:
    """The ``d x d`` generalization of §2.13: target ``M[0,1] = M[1,0] = 1``, ``M[i,i] = 1`` for
    ``i >= 2``, zero elsewhere; every entry observed except ``(0, 0)``."""
    _check_int("d", d, 2)
    M = np.zeros((d, d))
    M[0, 1] = M[1, 0] = 1.0
    M[np.arange(2, d), np.arange(2, d)] = 1.0
    rows, cols = np.nonzero(np.ones((d, d), dtype=bool))
    keep = (rows != 0) | (cols != 0)
    rows, cols = rows[keep], cols[keep]
    return MatrixCompletion(rows, cols, M[rows, cols], (d, d), "half_sum")
