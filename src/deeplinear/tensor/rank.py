"""Tensor rank estimate by CP-ALS (§E6): the smallest r whose fit reaches MSE < tolerance.

Tensor rank is NP-hard to compute; RC20 estimate it as the smallest number of components r for
which CP alternating least squares (tensorly's ``parafac``, with random restarts) fits the tensor
with mean squared error below 1e-6, found by binary search. The estimate is an upper bound up to
ALS failures (an ALS run that misses a fit that exists gives a larger r), and is
nondeterministic across seeds (§4 pitfall 7). For order 2 it is the matrix rank.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deeplinear._optional import needs_extra

__all__ = ["RankEstimate", "cp_als_mse", "cp_rank"]


@dataclass(frozen=True)
class RankEstimate:
    """``rank``: the smallest r that fit (``None``: none up to ``max_rank``); ``mse``: the best
    fit's MSE at each r tried."""

    rank: int | None
    mse: dict[int, float]


def cp_als_mse(tensor: np.ndarray, rank: int, *, mask: np.ndarray | None = None, restarts: int = 2,
               n_iter_max: int = 500, seed: int = 0) -> float:
    """Best MSE over ``restarts`` random CP-ALS fits with ``rank`` components (tensorly's
    ``parafac``; with ``mask``, the masked ALS on the True entries and the MSE over them)."""
    with needs_extra("cp_als_mse (tensorly's CP-ALS)"):
        import tensorly as tl
        from tensorly.decomposition import parafac

    tensor = np.asarray(tensor, dtype=np.float64)
    weight = np.ones(tensor.shape, bool) if mask is None else np.asarray(mask, bool)
    best = np.inf
    for k in range(restarts):
        try:  # a tiny ridge keeps the normal equations solvable when r exceeds the rank
            cp_tensor = parafac(tl.tensor(tensor), int(rank), n_iter_max=n_iter_max,
                                init="random", tol=1e-12, random_state=seed * 1000 + k,
                                l2_reg=1e-12, mask=None if mask is None else
                                tl.tensor(weight.astype(float)))
        except np.linalg.LinAlgError:
            continue
        fit = np.asarray(tl.cp_to_tensor(cp_tensor))
        mse = float(np.mean((fit - tensor)[weight] ** 2))
        if np.isfinite(mse):
            best = min(best, mse)
    return best


def cp_rank(tensor: np.ndarray, *, tol: float = 1e-6, max_rank: int | None = None,
            mask: np.ndarray | None = None, restarts: int = 2, n_iter_max: int = 500,
            seed: int = 0) -> RankEstimate:
    """Smallest r in ``[1, max_rank]`` with :func:`cp_als_mse` ``< tol`` (binary search, RC20;
    ``max_rank`` defaults to the product of all mode sizes but the largest, an upper bound on the
    rank). A zero tensor has rank 0."""
    tensor = np.asarray(tensor, dtype=np.float64)
    if not np.all(np.isfinite(tensor)):
        raise ValueError("tensor must be finite (no inf or nan)")
    if not tol > 0:
        raise ValueError(f"tol must be > 0, got {tol!r}")
    if np.mean(tensor**2) < tol and not np.any(tensor):
        return RankEstimate(0, {})
    dims = sorted(tensor.shape)
    hi = int(max_rank) if max_rank is not None else int(np.prod(dims[:-1]))
    if hi < 1:
        raise ValueError(f"max_rank must be >= 1, got {max_rank!r}")
    mse: dict[int, float] = {}

    def fits(r: int) -> bool:
        if r not in mse:
            mse[r] = cp_als_mse(tensor, r, mask=mask, restarts=restarts, n_iter_max=n_iter_max,
                                seed=seed)
        return mse[r] < tol

    if fits(1):
        return RankEstimate(1, mse)
    if not fits(hi):
        return RankEstimate(None, mse)
    lo = 1  # lo fails, hi fits
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fits(mid):
            hi = mid
        else:
            lo = mid
    return RankEstimate(hi, mse)
