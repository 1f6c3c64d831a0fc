"""Linear neural networks: factors, the end-to-end matrix, balancedness and initializations.

Convention (§2.0, Def 1): layer ``j`` maps ``d_{j-1} -> d_j``, so ``W_j`` has shape
``(d_j, d_{j-1})``, ``dims = (d_0, d_1, ..., d_N)`` and the end-to-end matrix is
``W_{1:N} = W_N ... W_1`` of shape ``(d_N, d_0)``. Factors are a plain tuple of arrays (a pytree).
Every function here accepts leading replica axes on the factors (matmul broadcasts), and composes
with ``jax.vmap``.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import DTypeLike

from deeplinear import _native
from deeplinear._dtype import as_float, float_dtype

__all__ = [
    "balanced_from_matrix",
    "balanced_init",
    "balancedness",
    "dims_of",
    "end_to_end",
    "factor_gradients",
    "Factors",
    "gaussian_init",
    "identity_init",
    "imbalance",
    "orthogonal_init",
    "partial_product",
    "product_cost",
    "split_gradients",
    "split_products",
    "with_det_sign",
]

Factors = tuple[jax.Array, ...]


def _check_dims(dims: Sequence[int]) -> tuple[int, ...]:
    try:
        items = tuple(dims)
    except TypeError:
        raise ValueError(f"dims must be a sequence of positive integers, got {dims!r}") from None
    out = []
    for d in items:
        if isinstance(d, bool | np.bool_):
            raise ValueError(f"dims must be positive integers, got {items!r} (a boolean)")
        try:
            out.append(operator.index(d))  # ints and numpy ints; 2.5, "2" and True are errors
        except TypeError:
            raise ValueError(f"dims must be positive integers, got {items!r}") from None
    dims = tuple(out)
    if len(dims) < 2:
        raise ValueError(f"dims must list at least (d_0, d_1), got {dims!r}")
    if any(d < 1 for d in dims):
        raise ValueError(f"dims must be positive integers, got {dims!r}")
    return dims


def _check_scale(scale: float, name: str = "scale") -> float:
    """``scale`` as a finite float > 0 (an init of scale 0, < 0, inf or nan is meaningless)."""
    if isinstance(scale, bool | np.bool_ | str | bytes):
        raise ValueError(f"{name} must be a finite number > 0, got {scale!r}")
    try:
        value = float(scale)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a finite number > 0, got {scale!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {scale!r}")
    return value


def _check_no_bottleneck(dims: tuple[int, ...]) -> None:
    k = min(dims[0], dims[-1])
    if min(dims[1:-1], default=k) < k:
        raise ValueError(
            f"dims {dims!r} have a bottleneck: balanced initialization needs every hidden width "
            f">= min(d_0, d_N) = {k} (§2.1 no-bottleneck condition)"
        )


def dims_of(factors: Factors) -> tuple[int, ...]:
    """Widths ``(d_0, ..., d_N)`` of ``factors`` (checking consecutive shapes agree)."""
    if len(factors) == 0:
        raise ValueError("factors must hold at least one layer")
    dims = [factors[0].shape[-1]]
    for j, W in enumerate(factors, start=1):
        if W.shape[-1] != dims[-1]:
            raise ValueError(
                f"factors[{j - 1}] has shape {W.shape}: layer {j} must map d_{j - 1}={dims[-1]} inputs"
            )
        dims.append(W.shape[-2])
    return tuple(dims)


_SMALL = 64  # m*k*n at or below which a product is written as a fusible multiply-and-sum


def _blas(m: int, k: int, n: int, dtype) -> bool:
    """Whether an ``m x k`` times ``k x n`` product goes to the BLAS (``_native.gemm``: on CPU
    with a one-thread BLAS, faster than XLA's dot for large float32/float64 products; XLA's dot
    elsewhere)."""
    return (2 * m * k * n >= _native.GEMM_MIN_FLOPS.get(np.dtype(dtype), math.inf)
            and _native.gemm_preferred(dtype))


def _mm(a: jax.Array, b: jax.Array) -> jax.Array:
    """``a @ b``; for tiny matrices an elementwise multiply-and-sum that XLA fuses with the
    surrounding elementwise work (a separate dot kernel per 2x2 product costs more than the
    arithmetic; measured in benchmarks/bench_train.py); for large ones the BLAS
    (``_native.gemm``)."""
    if a.shape[-2] * a.shape[-1] * b.shape[-1] <= _SMALL:
        return jnp.sum(a[..., :, :, None] * b[..., None, :, :], axis=-2)
    if _blas(a.shape[-2], a.shape[-1], b.shape[-1], a.dtype):
        return _native.gemm(a, b)
    return a @ b


def _t(a: jax.Array) -> jax.Array:
    return jnp.swapaxes(a, -1, -2)


def _mm_t(a: jax.Array, b: jax.Array) -> jax.Array:
    """``a @ b^T`` as one contraction over the last axes (no transpose for XLA to move: it
    rewrites ``transpose(W_2 W_1)`` as a second product ``W_1^T W_2^T`` when ``W_2 W_1`` is
    used elsewhere, one dense product more per step)."""
    if a.shape[-2] * a.shape[-1] * b.shape[-2] <= _SMALL:
        return _mm(a, _t(b))
    if _blas(a.shape[-2], a.shape[-1], b.shape[-2], a.dtype):
        return _native.gemm(a, b, trans_b=True)
    return jnp.einsum("...ij,...kj->...ik", a, b)


def _t_mm(a: jax.Array, b: jax.Array) -> jax.Array:
    """``a^T @ b`` as one contraction over the first matrix axes (see :func:`_mm_t`)."""
    if a.shape[-2] * a.shape[-1] * b.shape[-1] <= _SMALL:
        return _mm(_t(a), b)
    if _blas(a.shape[-1], a.shape[-2], b.shape[-1], a.dtype):
        return _native.gemm(a, b, trans_a=True)
    return jnp.einsum("...ji,...jk->...ik", a, b)


def _eye_like(W: jax.Array, n: int) -> jax.Array:
    eye = jnp.eye(n, dtype=W.dtype)
    return jnp.broadcast_to(eye, W.shape[:-2] + (n, n))


def partial_product(factors: Factors, j: int, k: int) -> jax.Array:
    """``W_{j:k} = W_k W_{k-1} ... W_j`` (1-indexed, §2.0); the identity of size ``d_{j-1}`` if j > k."""
    n = len(factors)
    if not (1 <= j <= n + 1 and 0 <= k <= n):
        raise ValueError(f"partial_product indices must satisfy 1 <= j <= N+1, 0 <= k <= N; got {j}, {k}")
    if j > k:
        W = factors[min(j, n) - 1]
        size = W.shape[-1] if j <= n else W.shape[-2]
        return _eye_like(W, size)
    out = factors[j - 1]
    for W in factors[j:k]:
        out = _mm(W, out)
    return out


def end_to_end(factors: Factors) -> jax.Array:
    """The end-to-end matrix ``W_{1:N} = W_N ... W_1`` (Def 1)."""
    return partial_product(factors, 1, len(factors))


def factor_gradients(factors: Factors, grad_W: jax.Array) -> Factors:
    """Per-layer gradients ``dphi/dW_j = W_{j+1:N}^T grad_l(W) W_{1:j-1}^T`` (§2.1, Eq. gradient).

    Computed with prefix and suffix products, ``O(N)`` matrix products in total.
    """
    n = len(factors)
    prefix = [None] * (n + 1)  # prefix[j] = W_{1:j}, prefix[0] = identity (skipped)
    for j in range(1, n + 1):
        prefix[j] = factors[0] if j == 1 else _mm(factors[j - 1], prefix[j - 1])
    grads = [None] * n
    left = grad_W  # W_{j+1:N}^T G, built from the top layer down
    for j in range(n, 0, -1):
        grads[j - 1] = left if j == 1 else _mm_t(left, prefix[j - 1])
        if j > 1:
            left = _t_mm(factors[j - 1], left)
    return tuple(grads)


def split_products(factors: Factors, k: int) -> tuple[dict[int, jax.Array], dict[int, jax.Array]]:
    """The partial products a gradient step split at layer ``k`` needs (``1 <= k <= N - 1``).

    Returns ``(prefix, suffix)`` with ``prefix[j] = W_{1:j}`` for ``j = 1..k`` and
    ``suffix[j] = W_{j+1:N}`` for ``j = k..N-1``, so ``W_{1:N} = suffix[k] @ prefix[k]``.
    ``k - 1 + N - 1 - k = N - 2`` products in all (none for ``N = 2``).
    """
    n = len(factors)
    if not 1 <= k <= n - 1:
        raise ValueError(f"split layer k must be in [1, {n - 1}] for {n} layers, got {k}")
    prefix = {1: factors[0]}
    for j in range(2, k + 1):
        prefix[j] = _mm(factors[j - 1], prefix[j - 1])
    suffix = {n - 1: factors[n - 1]}
    for j in range(n - 2, k - 1, -1):
        suffix[j] = _mm(suffix[j + 1], factors[j])  # W_{j+1:N} = W_{j+2:N} W_{j+1}
    return prefix, suffix


def split_gradients(
    factors: Factors,
    k: int,
    prefix: dict[int, jax.Array],
    suffix: dict[int, jax.Array],
    upper: jax.Array,
    lower: jax.Array,
) -> Factors:
    """Per-layer gradients ``W_{j+1:N}^T G W_{1:j-1}^T`` from the two products of ``G`` at layer ``k``.

    ``upper = G W_{1:k}^T`` (``d_N x d_k``) and ``lower = W_{k+1:N}^T G`` (``d_k x d_0``) are the
    only products that touch ``G`` (for a sparse ``G``, two sparse-dense products of width
    ``d_k``); ``prefix``/``suffix`` come from :func:`split_products`. Layers ``j <= k`` are reached
    from ``lower`` (``L_{j-1} = W_j^T L_j``, gradient ``L_j W_{1:j-1}^T``), layers ``j > k`` from
    ``upper`` (``R_j = R_{j-1} W_j^T``, gradient ``W_{j+1:N}^T R_{j-1}``): ``3 (N - 2)`` dense
    products with the :func:`split_products` ones, none of size ``d_N x d_0``.
    """
    n = len(factors)
    grads: list[jax.Array | None] = [None] * n
    left = lower  # W_{j+1:N}^T G for j = k, k-1, ..., 1
    for j in range(k, 0, -1):
        grads[j - 1] = left if j == 1 else _mm_t(left, prefix[j - 1])
        if j > 1:
            left = _t_mm(factors[j - 1], left)
    right = upper  # G W_{1:j-1}^T for j = k+1, ..., N
    for j in range(k + 1, n + 1):
        grads[j - 1] = right if j == n else _t_mm(suffix[j], right)
        if j < n:
            right = _mm_t(right, factors[j - 1])
    return tuple(grads)


def product_cost(dims: Sequence[int], split: int | None = None) -> int:
    """Multiply-adds of the dense matrix products of one gradient step.

    ``split=None``: :func:`end_to_end` plus :func:`factor_gradients` with a dense ``G``,
    ``3 sum_{j=2..N} d_j d_{j-1} d_0``. ``split=k``: :func:`split_products` plus
    :func:`split_gradients`, ``3 sum_{j=2..k} d_j d_{j-1} d_0 + 3 sum_{j=k+1..N-1} d_N d_j d_{j-1}``
    (the products with ``G`` itself and the observed entries are counted by the caller).
    """
    d = _check_dims(dims)
    n = len(d) - 1
    if split is None:
        return 3 * sum(d[j] * d[j - 1] * d[0] for j in range(2, n + 1))
    if not 1 <= split <= n - 1:
        raise ValueError(f"split layer must be in [1, {n - 1}] for {n} layers, got {split}")
    return (3 * sum(d[j] * d[j - 1] * d[0] for j in range(2, split + 1))
            + 3 * sum(d[n] * d[j] * d[j - 1] for j in range(split + 1, n)))


def balancedness(factors: Factors) -> Factors:
    """``C_{j,j+1} = W_{j+1}^T W_{j+1} - W_j W_j^T`` for j = 1..N-1 (§2.4; zero when balanced)."""
    return tuple(
        _mm(_t(factors[j + 1]), factors[j + 1]) - _mm(factors[j], _t(factors[j]))
        for j in range(len(factors) - 1)
    )


def imbalance(factors: Factors) -> jax.Array:
    """``max_j ||C_{j,j+1}||_F`` (δ of δ-balancedness, ACGH19 Def 1); 0 for a single layer."""
    cs = balancedness(factors)
    if not cs:
        return jnp.zeros(factors[0].shape[:-2], dtype=factors[0].dtype)
    norms = jnp.stack([jnp.linalg.norm(c, axis=(-2, -1)) for c in cs])
    return jnp.max(norms, axis=0)


# --------------------------------------------------------------------------- initializations


def gaussian_init(
    key: jax.Array,
    dims: Sequence[int],
    scale: float,
    *,
    per: Literal["layer", "product"] = "layer",
    dtype: DTypeLike | None = None,
) -> Factors:
    """Independent Gaussian layers.

    ``per="layer"``: every entry of every layer is ``N(0, scale^2)`` (RC20's repo, §E5).
    ``per="product"``: layer entries are ``N(0, (scale^{1/N} / sqrt(d_{j-1}))^2)`` so that
    ``||W_{1:N}||_F ≈ scale * sqrt(d_N)`` (roosephu's default, §E3).
    ``dtype`` (here and in every initializer below): the layers' float dtype, default JAX's
    default float (float32, or float64 under x64).
    """
    dims = _check_dims(dims)
    scale = _check_scale(scale)
    dtype = float_dtype(dtype)
    if per not in ("layer", "product"):
        raise ValueError(f"per must be 'layer' or 'product', got {per!r}")
    n = len(dims) - 1
    keys = jax.random.split(key, n)
    out = []
    for j in range(n):
        std = scale if per == "layer" else scale ** (1.0 / n) / math.sqrt(dims[j])
        out.append(std * jax.random.normal(keys[j], (dims[j + 1], dims[j]), dtype=dtype))
    return tuple(out)


def identity_init(dims: Sequence[int], scale: float, *, dtype: DTypeLike | None = None) -> Factors:
    """``W_j = scale^{1/N} I`` (zero-padded if rectangular): balanced, product ``scale I`` (§2.5)."""
    dims = _check_dims(dims)
    n = len(dims) - 1
    s = _check_scale(scale) ** (1.0 / n)
    dtype = float_dtype(dtype)
    return tuple(s * jnp.eye(dims[j + 1], dims[j], dtype=dtype) for j in range(n))


def orthogonal_init(
    key: jax.Array, dims: Sequence[int], scale: float, *, dtype: DTypeLike | None = None
) -> Factors:
    """Scaled orthogonal layers chained so that they are balanced (§2.5, roosephu).

    A random (semi-)orthogonal ``Q`` of shape ``(d_N, d_0)`` is split by Procedure 1, so every
    layer is ``scale^{1/N}`` times a partial isometry and ``W_{1:N} = scale * Q``.
    """
    dims = _check_dims(dims)
    n = len(dims) - 1
    s = _check_scale(scale) ** (1.0 / n)
    A = jax.random.normal(key, (dims[-1], dims[0]), dtype=float_dtype(dtype))
    U, _, Vt = jnp.linalg.svd(A, full_matrices=False)
    return balanced_from_matrix(s**n * (U @ Vt), dims)


def balanced_from_matrix(A: jax.Array, dims: Sequence[int]) -> Factors:
    """Procedure 1 of ACGH19 (§2.5): balanced factors whose product is exactly ``A``.

    With the thin SVD ``A = U Σ V^T`` and ``k = min(d_0, d_N)``: ``W_1 ≃ Σ^{1/N} V^T``,
    ``W_j ≃ Σ^{1/N}`` (1 < j < N), ``W_N ≃ U Σ^{1/N}``, each zero-padded to its shape.
    The factors have the dtype of ``A`` (JAX's default float for an integer ``A``).
    """
    dims = _check_dims(dims)
    if A.shape != (dims[-1], dims[0]):
        raise ValueError(f"A has shape {A.shape}, expected (d_N, d_0) = {(dims[-1], dims[0])}")
    _check_no_bottleneck(dims)
    n = len(dims) - 1
    A = as_float(A)
    if n == 1:
        return (A,)
    U, s, Vt = jnp.linalg.svd(A, full_matrices=False)
    root = jnp.diag(s ** (1.0 / n))

    def pad(M: jax.Array, shape: tuple[int, int]) -> jax.Array:
        return jnp.zeros(shape, M.dtype).at[: M.shape[0], : M.shape[1]].set(M)

    layers = [pad(root @ Vt, (dims[1], dims[0]))]
    layers += [pad(root, (dims[j + 1], dims[j])) for j in range(1, n - 1)]
    layers.append(pad(U @ root, (dims[n], dims[n - 1])))
    return tuple(layers)


def balanced_init(
    key: jax.Array, dims: Sequence[int], scale: float, *, dtype: DTypeLike | None = None
) -> Factors:
    """Balanced initialization (§2.5): sample ``A`` with i.i.d. ``N(0, scale^2)`` entries, then
    :func:`balanced_from_matrix`. Imbalance is exactly zero up to rounding."""
    dims = _check_dims(dims)
    scale = _check_scale(scale)
    A = scale * jax.random.normal(key, (dims[-1], dims[0]), dtype=float_dtype(dtype))
    return balanced_from_matrix(A, dims)


def with_det_sign(
    key: jax.Array,
    init_fn: Callable[[jax.Array], Factors],
    sign: int,
    *,
    method: Literal["resample", "flip"] = "resample",
    max_tries: int = 1000,
) -> Factors:
    """Draw ``init_fn(key)`` so that ``det(W_{1:N})`` has the requested ``sign`` (±1), §E5.

    ``resample`` redraws with fresh keys (the repo's ``enforce_pos_det``); ``flip`` negates the
    first row of ``W_N`` (which flips the sign of det and keeps balancedness, since
    ``W_N^T W_N`` is unchanged). The end-to-end matrix must be square.
    """
    if isinstance(sign, bool | np.bool_) or sign not in (1, -1):
        raise ValueError(f"sign must be +1 or -1, got {sign!r}")
    if isinstance(max_tries, bool) or not isinstance(max_tries, int) or max_tries < 1:
        raise ValueError(f"max_tries must be an integer >= 1, got {max_tries!r}")
    if method not in ("resample", "flip"):
        raise ValueError(f"method must be 'resample' or 'flip', got {method!r}")
    for _ in range(max_tries):
        key, sub = jax.random.split(key)
        factors = init_fn(sub)
        W = end_to_end(factors)
        if W.shape[-1] != W.shape[-2]:
            raise ValueError(f"det sign needs a square end-to-end matrix, got shape {W.shape}")
        d = float(jnp.linalg.det(W))
        if d * sign > 0:
            return factors
        if method == "flip" and d != 0.0:
            top = factors[-1].at[0].multiply(-1.0)
            return factors[:-1] + (top,)
    raise ValueError(f"init_fn gave det(W) with sign {sign:+d} in none of {max_tries} tries")
