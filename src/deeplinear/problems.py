"""Losses on the end-to-end matrix, with analytic gradients, and their data generators.

A problem is a frozen ``equinox.Module`` (a pytree, so it can be passed through ``jit``/``vmap``)
with ``shape = (d_N, d_0)``, ``loss(W)``, ``grad(W)`` and ``value_and_grad(W)``. The
overparameterized objective of Def 2 is ``phi(W_1, ..., W_N) = problem.loss(end_to_end(factors))``.

A problem keeps its data in the data's float dtype (``dtype=`` converts; integers and Python
numbers become JAX's default float); the generators take ``dtype`` (default: JAX's default float,
or the dtype of the ground truth they sample).

Loss scalings differ between the papers (§4 pitfall 9); ``reduction`` names them:

* ``"mean"``: mean over observations of the squared residual, no ½ (roosephu, §E3);
* ``"half_mean"``: ``(1/2m) Σ`` (the TAU notes);
* ``"half_sum"``: ``½ Σ`` (RC20, §E5).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import sparse as jsparse
from jax.typing import DTypeLike

from deeplinear import _native
from deeplinear import network as nw
from deeplinear._dtype import as_float, float_dtype

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
    "SparseCompletion",
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


def _same_float(*arrays: jax.Array) -> tuple[jax.Array, ...]:
    """The arrays in their common (promoted) float dtype: one problem, one dtype."""
    dtype = jnp.result_type(*arrays)
    return tuple(a.astype(dtype) for a in arrays)


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

    def __init__(self, target: jax.Array, *, dtype: DTypeLike | None = None):
        target = as_float(target, dtype)
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

    def __init__(self, X: jax.Array, y: jax.Array, p: int = 2, *, dtype: DTypeLike | None = None):
        X, y = _same_float(as_float(X, dtype), as_float(y, dtype))
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

    def __init__(self, A: jax.Array, y: jax.Array, reduction: Reduction = "mean", *,
                 dtype: DTypeLike | None = None):
        A, y = _same_float(as_float(A, dtype), as_float(y, dtype))
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

    def __init__(self, rows, cols, values, shape: tuple[int, int], reduction: Reduction = "mean",
                 *, dtype: DTypeLike | None = None):
        rows = np.asarray(rows)
        cols = np.asarray(cols)
        values = np.asarray(values)
        if values.dtype.kind not in "biuf":
            values = np.asarray(values, dtype=np.float64)  # strings etc.: numpy's own error
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
        self.values = as_float(values, dtype)
        self.dims = (int(shape[0]), int(shape[1]))
        self.reduction = reduction

    @classmethod
    def from_observations(cls, obs, reduction: Reduction = "mean", *,
                          dtype: DTypeLike | None = None) -> MatrixCompletion:
        """The loss on the entries of an :class:`observations.Observations` (validated there:
        each entry observed once, finite values, indices inside its shape)."""
        return cls(obs.rows, obs.cols, obs.values, obs.shape, reduction, dtype=dtype)

    @property
    def shape(self) -> tuple[int, int]:
        return self.dims

    def value_and_grad(self, W):
        c, g = _coefficients(self.reduction, self.rows.shape[0])
        r = W[..., self.rows, self.cols] - self.values
        grad = jnp.zeros(W.shape, W.dtype).at[..., self.rows, self.cols].add(g * r)
        return c * jnp.sum(r * r, axis=-1), grad


# --------------------------------------------------------------------------- sparse completion step

# The cost model of one gradient step (nanoseconds): its formula, where these constants were
# measured and what they mean are in sparse_is_cheaper's docstring (stated once, there).
_NS_GEMM = 0.025  # per multiply-add of a dense product
_NS_SPMM = 0.075  # per nonzero x column of a CSR sparse-dense product
_NS_SDDMM = 0.625  # per observed entry x width, gathering the rows of both factors
_NS_NATIVE = 0.12  # per observed entry x width, the native tiled SDDMM kernel
_NS_ENTRY = 1.0  # per entry of the dense step's d_N x d_0 gradient (fill, scatter)
_NS_CALL = 500.0  # per sparse kernel call (two per step)
_CHUNK_ELEMENTS = 2**19  # entries x width gathered at once by the gather forward
_SPMM_BLOCK_ELEMENTS = 2**19  # column block of the dense operand of a sparse-dense product


@jax.custom_batching.custom_vmap
def _csr_matmul(data, indices, indptr, X):
    """``A @ X`` for the CSR matrix ``A = (data, indices, indptr)`` of shape ``(len(indptr) - 1,
    len(X))``, with sorted column indices in each row (``jax.experimental.sparse.BCSR``; on CPU a
    native kernel, on GPU cuSPARSE)."""
    A = jsparse.BCSR((data, indices, indptr), shape=(indptr.shape[0] - 1, X.shape[0]),
                     indices_sorted=True)
    n_in, width = X.shape
    blocks = -(-n_in * width // _SPMM_BLOCK_ELEMENTS)
    if blocks < 2:
        return A @ X
    # a wide X does not stay in cache while the rows it gathers are random: column blocks do
    # (the product alone: about 2x faster for a 2000 x 2000 X and 10% observed, measured on
    # the benchmark machine)
    size = -(-width // blocks)
    pad = blocks * size - width
    Xb = jnp.moveaxis(jnp.pad(X, ((0, 0), (0, pad))).reshape(n_in, blocks, size), 1, 0)
    out = jax.lax.map(lambda x: A @ x, Xb)
    return jnp.moveaxis(out, 0, 1).reshape(A.shape[0], blocks * size)[:, :width]


@_csr_matmul.def_vmap
def _csr_matmul_vmap(axis_size, in_batched, data, indices, indptr, X):
    """Batched ``A @ X`` as one kernel call (BCSR's own batching rule falls back to gathers).

    Shared data, batched ``X``: the batch folds into the columns of ``X``. Batched data (one
    residual per replica): one block-diagonal CSR matrix of ``axis_size`` blocks.
    """
    data_b, indices_b, indptr_b, x_b = in_batched
    if indices_b or indptr_b:  # a batched sparsity pattern: one call per batch member
        f = jax.vmap(_csr_matmul, in_axes=tuple(0 if b else None for b in in_batched))
        return f(data, indices, indptr, X), True
    if not x_b:
        X = jnp.broadcast_to(X, (axis_size,) + X.shape)
    R, n_in, k = X.shape
    n_out = indptr.shape[0] - 1
    if not data_b:
        out = _csr_matmul(data, indices, indptr, jnp.moveaxis(X, 0, 1).reshape(n_in, R * k))
        return jnp.moveaxis(out.reshape(n_out, R, k), 1, 0), True
    nnz = indices.shape[0]
    offsets = jnp.arange(R, dtype=indices.dtype)
    block_indices = (indices[None, :] + n_in * offsets[:, None]).reshape(-1)
    block_indptr = jnp.concatenate([(indptr[None, :-1] + nnz * offsets[:, None]).reshape(-1),
                                    jnp.full((1,), R * nnz, indptr.dtype)])
    out = _csr_matmul(data.reshape(-1), block_indices, block_indptr, X.reshape(R * n_in, k))
    return out.reshape(R, n_out, k), True


def _sparse_plan(dims: tuple[int, ...], m: int,
                 native: bool = False) -> tuple[float, int, str]:
    """(estimated ns, split layer k, forward) of the cheapest sparse step for widths ``dims``.

    Split at ``k`` (:func:`network.split_gradients`): ``product_cost(dims, k)`` dense
    multiply-adds, two CSR sparse-dense products of width ``d_k`` (``2 m d_k``), and the
    observed entries of ``W_{k+1:N} W_{1:k}``: sampled (``m d_k``) by the native kernel of
    ``_native`` when ``native`` (forward ``"native"``) or by XLA's gathers (``"gather"``), or
    read off the dense product (``d_N d_k d_0`` multiply-adds, ``"dense"``).
    """
    n = len(dims) - 1
    if n == 1:  # W = W_1: the gradient of W_1 is itself a (scattered) d_1 x d_0 matrix
        return _NS_ENTRY * dims[0] * dims[1], 0, "gather"
    best = None
    for k in range(1, n):
        products = _NS_GEMM * nw.product_cost(dims, k)
        base = products + 2 * _NS_SPMM * m * dims[k] + 2 * _NS_CALL
        gather = _NS_SDDMM * m * dims[k]
        dense = _NS_GEMM * dims[n] * dims[k] * dims[0]
        plans = [(base + gather, k, "gather"), (base + dense, k, "dense")]
        if native:
            plans.append((base + _NS_NATIVE * m * dims[k], k, "native"))
        for plan in plans:
            best = plan if best is None or plan[0] < best[0] else best
    return best


def _plan(dims: tuple[int, ...], m: int, dtype) -> tuple[float, int, str]:
    """:func:`_sparse_plan`, asking for the native kernel (which builds it on first use) only
    when the kernel's plan would be chosen: small problems never start a compiler."""
    plan = _sparse_plan(dims, m, native=True)
    if plan[2] == "native" and not _native.available(dtype):
        plan = _sparse_plan(dims, m, native=False)
    return plan


def _dense_cost(dims: tuple[int, ...]) -> float:
    """Estimated ns of the dense step (:func:`network.factor_gradients` with a dense ``G``)."""
    return _NS_GEMM * nw.product_cost(dims) + _NS_ENTRY * dims[0] * dims[-1]


def sparse_is_cheaper(problem: Problem, dims: Sequence[int]) -> bool:
    """The automatic rule of ``train(..., sparse=None)``: the sparse step for a
    :class:`MatrixCompletion` (or :class:`SparseCompletion`) of depth >= 2 when its estimated
    time is below the dense step's.

    With ``m`` observations, widths ``d_0..d_N``, ``P = network.product_cost(dims)`` (dense
    step) and ``P_k = network.product_cost(dims, k)`` (sparse step split at layer ``k``)::

        sparse  iff  min_k [ 0.025 P_k + 0.075 * 2 m d_k + min(s m d_k, 0.025 d_N d_k d_0) ]
                     + 1000  <  0.025 P + 1.0 d_N d_0          (nanoseconds)

    with ``s = 0.12`` where the native sampling kernel is available (``deeplinear._native``:
    CPU, float32/float64, a C++ compiler) and ``s = 0.625`` (XLA's gathers) otherwise.

    The coefficients (``_NS_*`` in the source) were fitted to step times measured on the 2-core
    AMD EPYC (Zen 4) of BENCHMARKS.md, XLA:CPU, float64 (``benchmarks/bench_sparse.py`` and the
    grid in its section): depth 2-4, n = 2..2000, hidden widths 20..n, 1-100% observed. Relative
    to a multiply-add of a dense product (0.025 ns), a nonzero x column of the CSR sparse-dense
    product costs ~3 (2 at n = 100, 4-5 at n = 2000), an observed entry x width sampled by XLA's
    gathers ~25 (by the native kernel ~5), the dense step's zero-fill and scatter of its
    ``d_N x d_0`` gradient ~40 per entry, and each of the two sparse kernel calls of a step
    500 ns. Other machines move the crossover; ``train(..., sparse=True/False)`` overrides the
    rule.

    For depth 3 and width ``n``
    (``n x n``) the dense products drop from 6 n^3 to 3 n^3 multiply-adds (4 n^3 when the
    observed entries are read off a dense product) and the sparse work adds ``~11 m n``
    multiply-add equivalents: sparse below about 1/3 observed from n ~ 30
    up, dense when nearly fully observed and for tiny problems (2x2 at any depth: the fixed
    ~1 us of the sparse kernel calls is more than a whole dense step). The observed entries
    are sampled below ~20% observed with the native kernel (~4% with gathers) and read off a
    dense product above. Depth 1 has nothing to save.
    """
    if isinstance(problem, SparseCompletion):
        problem = problem.problem
    if not isinstance(problem, MatrixCompletion) or len(dims) < 3:
        return False
    dims = tuple(int(d) for d in dims)
    return _plan(dims, int(problem.rows.shape[0]), problem.values.dtype)[0] < _dense_cost(dims)


class SparseCompletion(Problem):
    """A :class:`MatrixCompletion` indexed for the sparse training step of factors of widths ``dims``.

    As a :class:`Problem` it is the same loss as ``problem`` (``loss(W)``, ``value_and_grad(W)``
    and the records of ``train`` use the dense end-to-end matrix). :meth:`value_and_factor_grads`
    is the sparse step: the observed entries of ``W_N ... W_1`` and the layer gradients from the
    sparse ``G = sum_i g r_i e_{a_i} e_{b_i}^T`` through two sparse-dense products (CSR, rows and
    columns), never a dense ``d_N x d_0`` gradient. The split layer ``k`` (the width the sparse
    products run at) and the way the observed entries are computed are chosen by a cost model
    (:func:`sparse_is_cheaper`). ``train`` builds one when its rule (or ``sparse=True``) says so.
    """

    problem: MatrixCompletion
    rows: jax.Array  # observations in row-major order
    cols: jax.Array
    values: jax.Array
    indptr: jax.Array  # CSR row pointer, (d_N + 1,)
    t_order: jax.Array  # column-major order of the observations (positions in the arrays above)
    t_rows: jax.Array  # their rows, in that order
    t_indptr: jax.Array  # CSR row pointer of the transpose, (d_0 + 1,)
    tile_rows: jax.Array | None  # the observations in the native kernel's order
    tile_cols: jax.Array | None  # (`_native.tiled_order`; forward "native" only)
    tile_pos: jax.Array | None  # their positions in the row-major arrays above
    dims: tuple[int, ...] = eqx.field(static=True)
    split: int = eqx.field(static=True)
    forward: str = eqx.field(static=True)

    def __init__(self, problem: MatrixCompletion, dims, *, split: int | None = None,
                 forward: Literal["gather", "dense", "native"] | None = None):
        if not isinstance(problem, MatrixCompletion):
            raise ValueError(f"the sparse step needs a MatrixCompletion, got {type(problem).__name__}")
        dims = nw._check_dims(dims)
        if (dims[-1], dims[0]) != tuple(problem.shape):
            raise ValueError(f"dims {dims} give end-to-end shape {(dims[-1], dims[0])} but the "
                             f"problem's shape is {problem.shape}")
        rows, cols = np.asarray(problem.rows), np.asarray(problem.cols)
        d_out, d_in = problem.shape
        order = np.lexsort((cols, rows))  # row-major
        t_order = np.lexsort((rows[order], cols[order]))  # column-major, as positions in `order`
        self.problem = problem
        self.rows = jnp.asarray(rows[order], dtype=jnp.int32)
        self.cols = jnp.asarray(cols[order], dtype=jnp.int32)
        self.values = jnp.asarray(problem.values)[order]
        self.indptr = jnp.asarray(np.searchsorted(rows[order], np.arange(d_out + 1)), jnp.int32)
        self.t_order = jnp.asarray(t_order, dtype=jnp.int32)
        self.t_rows = jnp.asarray(rows[order][t_order], dtype=jnp.int32)
        self.t_indptr = jnp.asarray(np.searchsorted(cols[order][t_order], np.arange(d_in + 1)),
                                    jnp.int32)
        _, k, fwd = _plan(dims, rows.size, self.values.dtype)
        n = len(dims) - 1
        if split is not None:
            if n == 1 or not 1 <= split <= n - 1:
                raise ValueError(f"split must be in [1, {n - 1}] for {n} layers, got {split}")
            k = int(split)
        if forward is not None:
            if forward not in ("gather", "dense", "native"):
                raise ValueError(f"forward must be 'gather', 'dense' or 'native', got {forward!r}")
            if forward == "native" and not _native.available(self.values.dtype):
                raise ValueError(f"forward='native' needs the native kernel for "
                                 f"{self.values.dtype}: {_native.status()}")
            fwd = forward
        self.tile_rows = self.tile_cols = self.tile_pos = None
        if fwd == "native":
            tiles = _native.tiled_order(rows[order], cols[order])
            self.tile_rows, self.tile_cols = self.rows[tiles], self.cols[tiles]
            self.tile_pos = jnp.asarray(tiles, dtype=jnp.int32)
        self.dims, self.split, self.forward = dims, k, fwd

    @property
    def shape(self) -> tuple[int, int]:
        return self.problem.shape

    @property
    def reduction(self) -> str:
        return self.problem.reduction

    def value_and_grad(self, W):
        return self.problem.value_and_grad(W)

    def _observed(self, left: jax.Array, right: jax.Array) -> jax.Array:
        """``(left @ right)[rows, cols]`` for ``left`` (d_N x k) and ``right`` (k x d_0)."""
        if self.forward == "dense":
            return nw._mm(left, right)[self.rows, self.cols]
        if self.forward == "native":
            return _native.sddmm(left, right.T, self.tile_rows, self.tile_cols, self.tile_pos)
        width = left.shape[-1]
        m = self.rows.shape[0]
        size = max(1, min(m, _CHUNK_ELEMENTS // width))
        if size == m:
            return jnp.einsum("id,id->i", left[self.rows], right.T[self.cols])
        pad = -m % size
        rows = jnp.pad(self.rows, (0, pad)).reshape(-1, size)
        cols = jnp.pad(self.cols, (0, pad)).reshape(-1, size)
        right_t = right.T
        chunks = jax.lax.map(lambda rc: jnp.einsum("id,id->i", left[rc[0]], right_t[rc[1]]),
                             (rows, cols))
        return chunks.reshape(-1)[:m]

    def value_and_factor_grads(self, factors: nw.Factors) -> tuple[jax.Array, nw.Factors]:
        """``(l(W_N ... W_1), (dphi/dW_1, ..., dphi/dW_N))`` with the sparse products only."""
        if nw.dims_of(factors) != self.dims:
            raise ValueError(f"factors have widths {nw.dims_of(factors)}, this SparseCompletion "
                             f"was built for {self.dims}")
        if factors[0].ndim > 2:  # leading replica axes
            return jax.vmap(self.value_and_factor_grads)(factors)
        c, g = _coefficients(self.problem.reduction, self.rows.shape[0])
        if len(factors) == 1:
            W = factors[0]
            r = W[self.rows, self.cols] - self.values
            grad = jnp.zeros(W.shape, W.dtype).at[self.rows, self.cols].add(g * r)
            return c * jnp.sum(r * r), (grad,)
        k = self.split
        prefix, suffix = nw.split_products(factors, k)
        left, right = suffix[k], prefix[k]  # W_{k+1:N} (d_N x d_k), W_{1:k} (d_k x d_0)
        r = self._observed(left, right) - self.values
        upper, lower = self._products((g * r).astype(left.dtype), left, right)
        return c * jnp.sum(r * r), nw.split_gradients(factors, k, prefix, suffix, upper, lower)

    def _products(self, w: jax.Array, left: jax.Array,
                  right: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``(G right^T, left^T G)`` for the sparse ``G = sum_i w_i e_{a_i} e_{b_i}^T`` (``w`` in
        the order of the observations): ``G W_{1:k}^T`` and ``W_{k+1:N}^T G``."""
        upper = _csr_matmul(w, self.cols, self.indptr, right.T)
        lower = _csr_matmul(w[self.t_order], self.t_rows, self.t_indptr, left).T
        return upper, lower


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
    key: jax.Array, shape: tuple[int, int], rank: int, fro_norm: float | None = None, *,
    dtype: DTypeLike | None = None,
) -> jax.Array:
    """``W* = U V^T / sqrt(r)`` with Gaussian ``U, V``, rescaled to ``||W*||_F = fro_norm``.

    The default ``fro_norm = sqrt(d_N d_0)`` (``= n`` for ``n x n``, §E3) makes the RMS entry 1, so
    the reconstruction error (mean over entries of (W - W*)^2) equals ``||W - W*||_F^2 / ||W*||_F^2``.
    ``dtype``: of ``W*`` (default JAX's default float).
    """
    d, dp = _check_int("shape[0]", shape[0], 1), _check_int("shape[1]", shape[1], 1)
    _check_int("rank", rank, 1, min(d, dp))
    if fro_norm is not None and not (math.isfinite(fro_norm) and fro_norm > 0):
        raise ValueError(f"fro_norm must be a finite number > 0, got {fro_norm!r}")
    if not 1 <= rank <= min(d, dp):
        raise ValueError(f"rank must be in [1, {min(d, dp)}] for shape {shape}, got {rank}")
    dtype = float_dtype(dtype)
    ku, kv = jax.random.split(key)
    U = jax.random.normal(ku, (d, rank), dtype=dtype)
    V = jax.random.normal(kv, (dp, rank), dtype=dtype)
    W = U @ V.T / jnp.sqrt(jnp.asarray(rank, dtype))
    target = float(np.sqrt(d * dp)) if fro_norm is None else float(fro_norm)
    return W * (target / jnp.linalg.norm(W))


def sample_completion(
    key: jax.Array, W_star: jax.Array, m: int, reduction: Reduction = "mean", *,
    dtype: DTypeLike | None = None,
) -> MatrixCompletion:
    """Observe ``m`` entries of ``W_star`` drawn uniformly without replacement (§E3).

    ``dtype``: of the observed values (default: that of ``W_star``)."""
    W_star = as_float(W_star, dtype)
    d, dp = W_star.shape
    _check_int("m (observations)", m, 1, d * dp)
    if not 1 <= m <= d * dp:
        raise ValueError(f"m (observations) must be in [1, {d * dp}] for a {d}x{dp} matrix, got {m}")
    idx = np.asarray(jax.random.choice(key, d * dp, (m,), replace=False))
    rows, cols = idx // dp, idx % dp
    return MatrixCompletion(rows, cols, W_star[rows, cols], (d, dp), reduction)


def sample_sensing(
    key: jax.Array, W_star: jax.Array, m: int, reduction: Reduction = "mean", *,
    dtype: DTypeLike | None = None,
) -> MatrixSensing:
    """Gaussian sensing: ``A_i`` i.i.d. ``N(0, 1/(d_N d_0))`` entries, ``y_i = <A_i, W*>`` (§E3).

    ``dtype``: of ``A`` and ``y`` (default: that of ``W_star``)."""
    _check_int("m (measurements)", m, 1)
    W_star = as_float(W_star, dtype)
    d, dp = W_star.shape
    A = jax.random.normal(key, (m, d, dp), dtype=W_star.dtype) / math.sqrt(d * dp)
    return MatrixSensing(A, jnp.einsum("mij,ij->m", A, W_star), reduction)


def completion_2x2(*, dtype: DTypeLike | None = None) -> MatrixCompletion:
    """Complete ``[[*, 1], [1, 0]]`` with loss ``½ Σ_Ω (W_ij - b_ij)^2`` (§2.13, §E5)."""
    return MatrixCompletion([0, 1, 1], [1, 0, 1], [1.0, 1.0, 0.0], (2, 2), "half_sum",
                            dtype=float_dtype(dtype))


def completion_dxd(d: int, *, dtype: DTypeLike | None = None) -> MatrixCompletion:
    """The ``d x d`` generalization of §2.13: target ``M[0,1] = M[1,0] = 1``, ``M[i,i] = 1`` for
    ``i >= 2``, zero elsewhere; every entry observed except ``(0, 0)``."""
    _check_int("d", d, 2)
    M = np.zeros((d, d))
    M[0, 1] = M[1, 0] = 1.0
    M[np.arange(2, d), np.arange(2, d)] = 1.0
    rows, cols = np.nonzero(np.ones((d, d), dtype=bool))
    keep = (rows != 0) | (cols != 0)
    rows, cols = rows[keep], cols[keep]
    return MatrixCompletion(rows, cols, M[rows, cols], (d, d), "half_sum", dtype=float_dtype(dtype))
