"""CP tensor factorization (§2.15): ``W = Σ_{r=1}^R w_r^1 ⊗ ... ⊗ w_r^N``.

The factors are N matrices ``F_n`` of shape ``(d_n, R)``; column ``r`` of ``F_n`` is ``w_r^n``.
A CP factorization is a shallow convolutional arithmetic circuit; for N = 2 it is the depth-2
matrix factorization ``W = F_1 F_2^T``. Everything computes in the dtype of the factors.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp

from deeplinear._dtype import float_dtype
from deeplinear.train.parameterization import Parameterization

__all__ = [
    "CPEntries",
    "CPFactorization",
    "balanced_init",
    "balancedness",
    "component_norms",
    "cp_factor_gradients",
    "cp_tensor",
    "entries",
    "gaussian_init",
    "normalized_components",
    "stack",
]

CPFactors = tuple[jax.Array, ...]


def _check(dims: Sequence[int], rank: int, scale: float) -> tuple[int, ...]:
    dims = tuple(int(d) for d in dims)
    if len(dims) < 1 or min(dims) < 1:
        raise ValueError(f"dims must be positive mode sizes (d_1, ..., d_N), got {dims}")
    if int(rank) != rank or rank < 1:
        raise ValueError(f"rank (number of components R) must be an integer >= 1, got {rank!r}")
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale!r}")
    return dims


def cp_tensor(factors: CPFactors) -> jax.Array:
    """``W[i_1..i_N] = Σ_r Π_n F_n[i_n, r]`` (§2.15). A leading batch axis on every factor is
    carried through (replicas)."""
    n = len(factors)
    letters = string.ascii_lowercase[:n]
    spec = ",".join(f"...{c}z" for c in letters) + f"->...{letters}"
    return jnp.einsum(spec, *factors)


def entries(factors: CPFactors, index: jax.Array) -> jax.Array:
    """``W[index[k]]`` for ``index`` of shape ``(m, N)`` without forming ``W``:
    ``Σ_r Π_n F_n[index[k, n], r]`` (cost ``O(m N R)``)."""
    prod = factors[0][index[:, 0]]
    for n in range(1, len(factors)):
        prod = prod * factors[n][index[:, n]]
    return jnp.sum(prod, axis=-1)


def cp_factor_gradients(factors: CPFactors, G: jax.Array) -> CPFactors:
    """``dphi/dF_n[:, r] = G ×_{n' != n} w_r^{n'}``: the gradient tensor contracted with every
    other vector of component r (the chain rule through the multilinear map ``cp_tensor``)."""
    n = len(factors)
    letters = string.ascii_lowercase[:n]
    out = []
    for k in range(n):
        others = [f"{c}z" for j, c in enumerate(letters) if j != k]
        spec = f"{letters}," + ",".join(others) + f"->{letters[k]}z"
        out.append(jnp.einsum(spec, G, *[f for j, f in enumerate(factors) if j != k]))
    return tuple(out)


def component_norms(factors: CPFactors) -> jax.Array:
    """``σ_r = ||w_r^1 ⊗ ... ⊗ w_r^N|| = Π_n ||w_r^n||`` for every component, shape ``(..., R)``."""
    norms = jnp.stack([jnp.linalg.norm(f, axis=-2) for f in factors])
    return jnp.prod(norms, axis=0)


def normalized_components(factors: CPFactors) -> CPFactors:
    """The unit vectors ``ŵ_r^n = w_r^n / ||w_r^n||`` (a zero vector stays zero)."""
    out = []
    for f in factors:
        norm = jnp.linalg.norm(f, axis=-2, keepdims=True)
        out.append(jnp.where(norm > 0, f / jnp.where(norm > 0, norm, 1), 0))
    return tuple(out)


def balancedness(factors: CPFactors) -> jax.Array:
    """``||w_r^n||^2 - ||w_r^{n+1}||^2`` for n = 1..N-1 and every r, shape ``(N-1, R)``: constant
    along gradient flow (without weight decay), zero for a per-component balanced init."""
    sq = jnp.stack([jnp.sum(f * f, axis=-2) for f in factors])
    return sq[:-1] - sq[1:]


def gaussian_init(key: jax.Array, dims: Sequence[int], rank: int, scale: float, *,
                  mean: float = 0.0, dtype=None) -> CPFactors:
    """Factors with i.i.d. ``N(mean, scale^2)`` entries (the research code's ``init_std``,
    ``init_mean``): only approximately balanced."""
    dims = _check(dims, rank, scale)
    keys = jax.random.split(key, len(dims))
    dt = float_dtype(dtype)
    return tuple(mean + scale * jax.random.normal(k, (d, int(rank)), dt)
                 for k, d in zip(keys, dims, strict=True))


def balanced_init(key: jax.Array, dims: Sequence[int], rank: int, scale: float, *,
                  dtype=None) -> CPFactors:
    """Per-component balanced factors: Gaussian vectors, each rescaled so that
    ``||w_r^n||`` is the geometric mean over n of the component's norms (the tensor
    ``cp_tensor`` is unchanged, and ``balancedness`` is zero)."""
    fs = gaussian_init(key, dims, rank, scale, dtype=dtype)
    norms = jnp.stack([jnp.linalg.norm(f, axis=0) for f in fs])  # (N, R)
    target = jnp.exp(jnp.mean(jnp.log(norms), axis=0))
    return tuple(f * (target / nrm) for f, nrm in zip(fs, norms, strict=True))


@dataclass(frozen=True)
class CPFactorization(Parameterization):
    """The CP factorization as a training parameterization: ``end_to_end = cp_tensor`` with the
    analytic gradients :func:`cp_factor_gradients`."""

    name = "tensor factorization"

    def end_to_end(self, factors: CPFactors) -> jax.Array:
        return cp_tensor(factors)

    def shape(self, factors: CPFactors) -> tuple[int, ...]:
        return tuple(f.shape[-2] for f in factors)

    def factor_gradients(self, factors: CPFactors, G: jax.Array) -> CPFactors:
        return cp_factor_gradients(factors, G)


@dataclass(frozen=True, eq=False)
class CPEntries(Parameterization):
    """The CP factorization evaluated only at the index tuples ``index`` (``(m, N)`` integers),
    for tensors too large to form (order 784 for MNIST, §E7): ``end_to_end(factors)[k] =
    Σ_r Π_n F[n, index[k, n], r]``, a vector of m values (pair it with
    ``tensor.problems.ObservedEntries``). Equal mode sizes: ``factors = (F,)`` with the N factor
    matrices stacked, ``F`` of shape ``(N, d, R)`` (:func:`stack`). Gradients by autodiff.
    Hashed by identity (the compiled program is cached per instance)."""

    index: jax.Array

    name = "tensor factorization (observed entries)"

    def end_to_end(self, factors: CPFactors) -> jax.Array:
        (F,) = factors
        if F.ndim > 3:  # replicas
            return jax.vmap(self.end_to_end)(factors)
        # a one-hot contraction rather than a gather: its gradient is dense (no scatter-add)
        onehot = jax.nn.one_hot(self.index, F.shape[1], dtype=F.dtype)  # (m, N, d)
        rows = jnp.einsum("mnd,ndr->mnr", onehot, F)  # F[n, index[k, n], :]
        return jnp.sum(jnp.prod(rows, axis=1), axis=-1)

    def shape(self, factors: CPFactors) -> tuple[int, ...]:
        return (self.index.shape[0],)

    def __eq__(self, other: object) -> bool:  # identity (the base class compares fields)
        return self is other

    def __hash__(self) -> int:
        return id(self)


def stack(factors: CPFactors) -> CPFactors:
    """``(F_1, ..., F_N)`` of equal shapes ``(d, R)`` as ``(F,)``, ``F`` of shape ``(N, d, R)``."""
    return (jnp.stack(factors),)
