"""SoftImpute and hard-impute (iterative SVD) for matrix completion (Mazumder, Hastie & Tibshirani
2010), the spectral-regularization baselines a user compares deep matrix factorization with.

Both iterate on the current completion ``Z``: fill the missing entries of the data with ``Z`` and
take a spectral step of the filled matrix ``F = P_Ω(X) + P_Ω⊥(Z)``:

* SoftImpute (their Algorithm 1): ``Z <- S_λ(F) = U max(Σ - λ, 0) V^T``, the fixed point of which
  minimizes ``½ ||P_Ω(X - Z)||_F^2 + λ ||Z||_*``;
* hard-impute: ``Z <- H_r(F)``, the best rank-``r`` approximation of ``F`` (truncated SVD).

Each stops when ``||Z_new - Z||_F^2 / ||Z||_F^2 < tol``. Only the singular triplets that survive
are computed when they are few (a randomized SVD of the previous rank plus 5, redone in full when
all of them survive); otherwise, and on small matrices, the full thin SVD. Regularization (``λ``
or ``r``) is chosen on a validation split of the observed entries along a warm-started path
(largest ``λ`` / smallest ``r`` first), then the chosen value is refitted on every observed entry.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from deeplinear.observations import Observations

__all__ = [
    "ImputeFit",
    "Selected",
    "hard_impute",
    "select_hard_impute",
    "select_soft_impute",
    "soft_impute",
]


@dataclass(frozen=True)
class ImputeFit:
    """A completion ``Z`` (dense), the iterations taken, its rank and whether it converged."""

    Z: np.ndarray
    n_iter: int
    rank: int
    converged: bool


def _svd(F: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Thin SVD ``F = U diag(s) V^T`` through the eigendecomposition of the smaller Gram matrix
    (faster than LAPACK's SVD on CPU; the squaring costs relative accuracy only on singular values
    far below the largest, which both thresholds discard). Singular values in decreasing order."""
    tall = F.shape[0] >= F.shape[1]
    G = F.T @ F if tall else F @ F.T
    lam, Q = np.linalg.eigh(G)
    lam, Q = lam[::-1], Q[:, ::-1]
    s = np.sqrt(np.maximum(lam, 0.0))
    keep = s > s[0] * 1e-7 if s.size and s[0] > 0 else np.zeros(s.shape, bool)
    s, Q = s[keep], Q[:, keep]
    other = (F @ Q if tall else F.T @ Q) / s
    return (other, s, Q) if tall else (Q, s, other)


def _top_svd(F: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The top ``k`` singular triplets: a randomized SVD (Halko et al. 2011; 4 power iterations)
    when ``k`` is below a third of ``min(F.shape)``, else the thin SVD of :func:`_svd`."""
    if 3 * k >= min(F.shape):
        return _svd(F)
    from sklearn.utils.extmath import randomized_svd

    U, s, Vt = randomized_svd(F, k, n_oversamples=10, n_iter=4, random_state=0)
    return U, s, Vt.T


def _check(X, mask) -> tuple[np.ndarray, np.ndarray]:
    """``(P_Ω(X), Ω)`` as dense arrays, validated once by :class:`observations.Observations`:
    ``X`` with a boolean ``mask`` of its shape, or an ``Observations`` (``mask=None``)."""
    obs = X if isinstance(X, Observations) and mask is None else Observations.from_mask(X, mask)
    if obs.size == 0:
        raise ValueError("mask has no observed entry")
    return obs.dense(0.0), obs.mask()


def _iterate(X, mask, step, Z0, max_iters, tol) -> ImputeFit:
    Z = np.zeros_like(X) if Z0 is None else np.array(Z0, dtype=X.dtype)
    rank, converged, k = 0, False, 0
    for k in range(1, max_iters + 1):  # noqa: B007 - k is the iteration count afterwards
        Z_new, rank = step(np.where(mask, X, Z))
        norm = np.sum(Z**2)
        change = np.sum((Z_new - Z) ** 2) / norm if norm > 0 else np.inf
        Z = Z_new
        if change < tol:
            converged = True
            break
    return ImputeFit(Z, k, rank, converged)


def soft_impute(X: np.ndarray | Observations, mask: np.ndarray | None, lam: float, *,
                Z0: np.ndarray | None = None,
                max_iters: int = 100, tol: float = 1e-5) -> ImputeFit:
    """SoftImpute (Mazumder et al. 2010, Algorithm 1): ``Z <- S_λ(P_Ω(X) + P_Ω⊥(Z))``.

    Args:
        X: data; only the entries where ``mask`` is true are read (or an
            :class:`observations.Observations`, with ``mask=None``).
        mask: observed entries ``Ω`` (boolean, the shape of ``X``).
        lam: the nuclear-norm weight ``λ >= 0``.
        Z0: warm start (default zeros).
        max_iters, tol: stop after ``max_iters`` or when the relative change is below ``tol``.
    """
    X, mask = _check(X, mask)
    if not lam >= 0:
        raise ValueError(f"lam must be >= 0, got {lam!r}")

    rank = [min(X.shape)]  # the previous iterate's rank guides how many triplets to compute

    def step(F):
        want = rank[0] + 5
        U, s, V = _top_svd(F, want)
        if s.size == want and s[-1] > lam:  # more singular values may exceed lam: all of them
            U, s, V = _svd(F)
        s = s - lam
        k = int(np.sum(s > 0))
        rank[0] = k
        return (U[:, :k] * s[:k]) @ V[:, :k].T, k

    return _iterate(X, mask, step, Z0, max_iters, tol)


def hard_impute(X: np.ndarray | Observations, mask: np.ndarray | None, rank: int, *,
                Z0: np.ndarray | None = None,
                max_iters: int = 100, tol: float = 1e-5) -> ImputeFit:
    """Hard-impute / iterative SVD: ``Z <- H_r(P_Ω(X) + P_Ω⊥(Z))``, the rank-``r`` truncated SVD."""
    X, mask = _check(X, mask)
    if int(rank) != rank or rank < 1:
        raise ValueError(f"rank must be a positive integer, got {rank!r}")

    def step(F):
        U, s, V = _top_svd(F, int(rank))
        k = min(int(rank), s.size)
        return (U[:, :k] * s[:k]) @ V[:, :k].T, k

    return _iterate(X, mask, step, Z0, max_iters, tol)


def _path_done(path: list[tuple[float, float]]) -> bool:
    """Stop a regularization path once the validation error has not improved by 0.1% for two
    values in a row (it rises, or has flattened out)."""
    if len(path) < 3:
        return False
    e = [p[1] for p in path[-3:]]
    return e[1] > (1 - 1e-3) * e[0] and e[2] > (1 - 1e-3) * min(e[:2])


def _rmse(Z, X, val_mask) -> float:
    return float(np.sqrt(np.mean((Z[val_mask] - X[val_mask]) ** 2)))


def _select(fit_one, values: list, X: np.ndarray, train_mask: np.ndarray, val_mask: np.ndarray,
            t0: float, **kw) -> Selected:
    """Fit ``fit_one(X, train_mask, value, Z0=...)`` along ``values`` (warm-started, stopped by
    :func:`_path_done`), keep the value with the lowest validation RMSE and refit it on
    ``train_mask | val_mask`` from its completion."""
    path, best, Z = [], (np.inf, values[0], None), None
    for value in values:
        Z = fit_one(X, train_mask, value, Z0=Z, **kw).Z
        err = _rmse(Z, X, val_mask)
        path.append((float(value), err))
        if err < best[0]:
            best = (err, value, Z)
        if _path_done(path):
            break
    fit = fit_one(X, train_mask | val_mask, best[1], Z0=best[2], **kw)
    return Selected(fit, float(best[1]), path, time.perf_counter() - t0)


@dataclass(frozen=True)
class Selected:
    """The refitted completion, the chosen value, the path of (value, validation RMSE) and the
    wall time of the whole selection and refit."""

    fit: ImputeFit
    value: float
    path: list[tuple[float, float]]
    seconds: float


def select_soft_impute(X: np.ndarray, train_mask: np.ndarray, val_mask: np.ndarray, *,
                       n_lambdas: int = 12, ratio: float = 1e-3, max_iters: int = 100,
                       tol: float = 1e-5) -> Selected:
    """SoftImpute with ``λ`` chosen on the validation entries: a geometric path of ``n_lambdas``
    values from ``λ_max = σ_1(P_Ω(X))`` (where the solution is 0) down to ``ratio λ_max``, each
    warm-started from the previous; it stops early once the validation error has not improved by
    0.1% for two values in a row. The best ``λ`` is refitted on ``train_mask | val_mask``."""
    t0 = time.perf_counter()
    Xf = np.where(train_mask, X, 0.0)
    lam_max = float(_svd(Xf)[1][0])
    values = [float(v) for v in lam_max * np.geomspace(1.0, ratio, n_lambdas)[1:]]
    return _select(soft_impute, values, X, train_mask, val_mask, t0, max_iters=max_iters,
                   tol=tol)


def select_hard_impute(X: np.ndarray, train_mask: np.ndarray, val_mask: np.ndarray, *,
                       ranks: list[int] | None = None, max_iters: int = 100,
                       tol: float = 1e-5) -> Selected:
    """Hard-impute with the rank chosen on the validation entries (ranks in increasing order,
    warm-started, stopping as :func:`select_soft_impute`'s path; default ranks
    1, 2, 3, 5, 8, ... up to the degrees-of-freedom bound ``|Ω| / (d_N + d_0)``), refitted on
    ``train_mask | val_mask``."""
    t0 = time.perf_counter()
    if ranks is None:
        limit = max(1, min(min(X.shape), int(train_mask.sum()) // sum(X.shape)))
        ranks = sorted({r for r in np.unique(np.round(np.geomspace(1, limit, 12)).astype(int))})
    return _select(hard_impute, [int(r) for r in ranks], X, train_mask, val_mask, t0,
                   max_iters=max_iters, tol=tol)
