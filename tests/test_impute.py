"""SoftImpute and hard-impute (deeplinear._impute, re-exported by deeplinear.baselines) against a
direct dense NumPy reference of Mazumder, Hastie & Tibshirani (2010), Algorithm 1."""

from __future__ import annotations

import numpy as np
import pytest

from deeplinear import baselines
from deeplinear._impute import (
    hard_impute,
    select_hard_impute,
    select_soft_impute,
    soft_impute,
)


def _reference(X, mask, spectral, iters):
    """The algorithm written out with LAPACK's SVD: Z <- spectral(P_Ω(X) + P_Ω⊥(Z)), from 0."""
    Z = np.zeros_like(X)
    for _ in range(iters):
        U, s, Vt = np.linalg.svd(np.where(mask, X, Z), full_matrices=False)
        Z = (U * spectral(s)) @ Vt
    return Z


def _problem(seed, shape=(12, 9), rank=2, observed=0.6, noise=0.05):
    rng = np.random.default_rng(seed)
    M = rng.standard_normal((shape[0], rank)) @ rng.standard_normal((rank, shape[1]))
    M += noise * rng.standard_normal(shape)
    return M, rng.random(shape) < observed


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("lam", [0.3, 2.0])
def test_soft_impute_matches_the_dense_reference(seed, lam):
    M, mask = _problem(seed)
    fit = soft_impute(np.where(mask, M, np.nan), mask, lam, max_iters=40, tol=0.0)
    ref = _reference(M, mask, lambda s: np.maximum(s - lam, 0.0), 40)
    assert fit.n_iter == 40 and not fit.converged
    np.testing.assert_allclose(fit.Z, ref, atol=1e-8 * np.abs(ref).max())  # same iterates
    assert fit.rank == np.linalg.matrix_rank(ref, tol=1e-8)


@pytest.mark.parametrize("rank", [1, 2, 4])
def test_hard_impute_matches_the_dense_reference(rank):
    M, mask = _problem(3)
    fit = hard_impute(M, mask, rank, max_iters=30, tol=0.0)

    def truncate(s):
        return np.where(np.arange(s.size) < rank, s, 0.0)

    ref = _reference(M, mask, truncate, 30)
    np.testing.assert_allclose(fit.Z, ref, atol=1e-8 * np.abs(ref).max())
    assert fit.rank == rank


def test_soft_impute_fixed_point_is_the_optimum():
    """At convergence Z = S_λ(P_Ω(X) + P_Ω⊥(Z)) is the minimizer of ½||P_Ω(X - Z)||² + λ||Z||_*:
    its subgradient condition P_Ω(X - Z) = λ (U V^T + W), ||W|| <= 1, U^T W = 0, W V = 0."""
    M, mask = _problem(4, shape=(10, 8))
    lam = 0.5
    fit = soft_impute(M, mask, lam, max_iters=5000, tol=1e-16)
    R = np.where(mask, M - fit.Z, 0.0)
    U, s, Vt = np.linalg.svd(fit.Z)
    k = fit.rank
    U, Vt = U[:, :k], Vt[:k]
    Wres = R / lam - U @ Vt
    np.testing.assert_allclose(U.T @ Wres, 0.0, atol=1e-6)
    np.testing.assert_allclose(Wres @ Vt.T, 0.0, atol=1e-6)
    assert np.linalg.norm(Wres, 2) <= 1 + 1e-6


def test_selection_recovers_a_low_rank_matrix_and_refits():
    M, mask = _problem(5, shape=(40, 30), rank=2, observed=0.5, noise=0.01)
    rng = np.random.default_rng(0)
    val = mask & (rng.random(M.shape) < 0.15)
    train = mask & ~val
    # SoftImpute's shrinkage costs it accuracy; predicting 0 on the missing entries scores 1
    for sel, bound in ((select_soft_impute(M, train, val), 0.3),
                       (select_hard_impute(M, train, val), 0.12)):
        err = np.sqrt(np.mean((sel.fit.Z - M)[~mask] ** 2)) / np.std(M[~mask])
        assert err < bound, err
        assert sel.path and sel.seconds > 0
        assert sel.value == min(sel.path, key=lambda p: p[1])[0]  # the best validation error


def test_reexported_from_baselines():
    assert baselines.soft_impute is soft_impute
    assert baselines.hard_impute is hard_impute
    assert {"soft_impute", "hard_impute"} <= set(baselines.__all__)


@pytest.mark.parametrize(("args", "match"), [
    ((np.ones((3, 3)), np.zeros((3, 3), bool), 1.0), "no observed entry"),
    ((np.ones((3, 3)), np.ones((3, 2), bool), 1.0), "same shape"),
    ((np.full((2, 2), np.inf), np.ones((2, 2), bool), 1.0), "finite"),
    ((np.ones((2, 2)), np.ones((2, 2), bool), -1.0), "lam"),
])
def test_soft_impute_errors(args, match):
    with pytest.raises(ValueError, match=match):
        soft_impute(*args)


def test_hard_impute_rank_error():
    with pytest.raises(ValueError, match="rank"):
        hard_impute(np.ones((2, 2)), np.ones((2, 2), bool), 0)


@pytest.mark.parametrize("dense_entries", [0, 2**18])
def test_padded_and_dense_nuclear_norm_solves_equal_the_plain_one(dense_entries, monkeypatch):
    """min_nuclear_norm_completion pads its observations to a power of two with dropped
    out-of-range entries (large matrices) or uses a dense mask (small ones); the plain ADMM on
    the observed entries gives the same answer to rounding."""
    import jax
    import jax.numpy as jnp

    from deeplinear import observations
    from deeplinear.baselines import _Completion, _run_admm, min_nuclear_norm_completion

    monkeypatch.setattr(observations, "DENSE_ENTRIES", dense_entries)

    M, mask = _problem(7, shape=(14, 11), observed=0.45)
    r, c = np.nonzero(mask)
    assert r.size & (r.size - 1)  # not a power of two: the solve pads
    for tol in (0.0, 0.2):
        padded = min_nuclear_norm_completion(r, c, M[r, c], M.shape, tol=tol, rtol=1e-6,
                                             max_iters=3000, svd="full")
        with jax.enable_x64(True):
            op = _Completion(jnp.asarray(r), jnp.asarray(c), jnp.zeros(M.shape, jnp.float64))
            X = _run_admm(op, M[r, c], tol, 1e-6, 3000, "full")[0]
        np.testing.assert_allclose(padded.X, X, atol=1e-9)
        assert padded.max_violation < 1e-4


def test_observations_input_is_the_masked_input():
    from deeplinear.observations import Observations

    M, mask = _problem(3)
    obs = Observations.from_mask(M, mask)
    a = soft_impute(M, mask, 0.5, max_iters=20, tol=0.0)
    b = soft_impute(obs, None, 0.5, max_iters=20, tol=0.0)
    np.testing.assert_array_equal(a.Z, b.Z)
    c = hard_impute(obs, None, 2, max_iters=10, tol=0.0)
    np.testing.assert_array_equal(c.Z, hard_impute(M, mask, 2, max_iters=10, tol=0.0).Z)
