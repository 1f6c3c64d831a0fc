"""Metrics of an end-to-end matrix (all jax-traceable; leading batch axes broadcast)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = [
    "det_sign",
    "distance_to_rank",
    "effective_rank",
    "frobenius_norm",
    "normalized_reconstruction_error",
    "nuclear_norm",
    "rank",
    "reconstruction_error",
    "schatten_norm",
    "singular_values",
    "spectral_norm",
]


def singular_values(W: jax.Array) -> jax.Array:
    """Singular values in decreasing order."""
    return jnp.linalg.svd(W, compute_uv=False)


def _tolerance(s: jax.Array, W: jax.Array, tol: float | None) -> jax.Array:
    if tol is not None:
        return jnp.asarray(tol, s.dtype)
    eps = jnp.finfo(s.dtype).eps
    return s[..., :1] * max(W.shape[-2:]) * eps


def effective_rank(W: jax.Array, tol: float | None = None) -> jax.Array:
    """Effective rank ``exp(H(p))``, ``p_i = σ_i / Σ σ_j`` over the nonzero σ's (Roy & Vetterli
    2007, §2.13). "Nonzero" means above ``tol`` (default: ``σ_1 max(shape) eps``); 0 for W = 0."""
    s = singular_values(W)
    keep = s > _tolerance(s, W, tol)
    s = jnp.where(keep, s, 0.0)
    total = jnp.sum(s, axis=-1, keepdims=True)
    p = s / jnp.where(total > 0, total, 1.0)
    logs = jnp.where(keep, jnp.log(jnp.where(keep, p, 1.0)), 0.0)
    return jnp.where(jnp.any(keep, axis=-1), jnp.exp(-jnp.sum(p * logs, axis=-1)), 0.0)


def rank(W: jax.Array, tol: float | None = None) -> jax.Array:
    """Number of singular values above ``tol`` (default: ``σ_1 max(shape) eps``, as numpy)."""
    s = singular_values(W)
    return jnp.sum(s > _tolerance(s, W, tol), axis=-1)


def frobenius_norm(W: jax.Array) -> jax.Array:
    return jnp.linalg.norm(W, axis=(-2, -1))


def nuclear_norm(W: jax.Array) -> jax.Array:
    """``||W||_* = Σ σ_i``."""
    return jnp.sum(singular_values(W), axis=-1)


def spectral_norm(W: jax.Array) -> jax.Array:
    """``||W||_2 = σ_1``."""
    return singular_values(W)[..., 0]


def schatten_norm(W: jax.Array, p: float) -> jax.Array:
    """Schatten-p (quasi-)norm ``(Σ σ_i^p)^{1/p}``, p > 0 (p < 1 gives the quasi-norms of ACHL19)."""
    if not p > 0:
        raise ValueError(f"p must be > 0, got {p!r}")
    s = singular_values(W)
    return jnp.sum(s**p, axis=-1) ** (1.0 / p)


def reconstruction_error(W: jax.Array, W_star: jax.Array) -> jax.Array:
    """Mean over all entries of ``(W - W*)^2`` (the "reconstruction error" of §E3, pitfall 7)."""
    return jnp.mean((W - W_star) ** 2, axis=(-2, -1))


def normalized_reconstruction_error(W: jax.Array, W_star: jax.Array) -> jax.Array:
    """``||W - W*||_F^2 / ||W*||_F^2`` (equals :func:`reconstruction_error` when the RMS entry
    of ``W*`` is 1, as in §E3)."""
    return jnp.sum((W - W_star) ** 2, axis=(-2, -1)) / jnp.sum(W_star**2, axis=(-2, -1))


def det_sign(W: jax.Array) -> jax.Array:
    """Sign of ``det W`` (-1, 0 or 1) for square ``W``, from ``slogdet`` (no overflow)."""
    if W.shape[-1] != W.shape[-2]:
        raise ValueError(f"det_sign needs a square matrix, got shape {W.shape}")
    return jnp.linalg.slogdet(W)[0]


def distance_to_rank(W: jax.Array, k: int) -> jax.Array:
    """Frobenius distance to the nearest matrix of rank <= k (Eckart-Young): ``sqrt(Σ_{i>k} σ_i^2)``."""
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    s = singular_values(W)
    return jnp.sqrt(jnp.sum(s[..., k:] ** 2, axis=-1))
