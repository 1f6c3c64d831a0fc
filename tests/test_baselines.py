"""Minimum nuclear norm baseline: native ADMM vs cvxpy/SCS, feasibility and input validation."""

import numpy as np
import pytest

import deeplinear  # noqa: F401  (float64)
from deeplinear.baselines import (
    min_nuclear_norm,
    min_nuclear_norm_completion,
    min_nuclear_norm_sensing,
)
from deeplinear.problems import MatrixCompletion, MatrixSensing


def _low_rank(rng, n1, n2, r):
    W = rng.standard_normal((n1, r)) @ rng.standard_normal((r, n2)) / np.sqrt(r)
    return W * np.sqrt(n1 * n2) / np.linalg.norm(W)


def _completion(seed=0, n=30, r=2, m=400):
    rng = np.random.default_rng(seed)
    W = _low_rank(rng, n, n, r)
    idx = rng.choice(n * n, m, replace=False)
    rows, cols = idx // n, idx % n
    return W, rows, cols, W[rows, cols]


# Tolerance: SCS runs at eps 1e-6 and ADMM at rtol 1e-6; both objectives are then within ~1e-6
# relative of the optimum, so 1e-4 (the spec's agreement) leaves a wide margin.
@pytest.mark.parametrize("tol", [0.0, 1e-3])
@pytest.mark.parametrize("seed", [0])
def test_completion_admm_matches_cvxpy(seed, tol):
    _, rows, cols, y = _completion(seed)
    ref = min_nuclear_norm_completion(rows, cols, y, (30, 30), tol=tol, solver="cvxpy")
    ours = min_nuclear_norm_completion(rows, cols, y, (30, 30), tol=tol, rtol=1e-6)
    assert ours.status == "converged"
    assert abs(ours.nuclear_norm / ref.nuclear_norm - 1) < 1e-4
    assert ours.max_violation < 1e-4
    assert np.linalg.norm(ours.X - ref.X) / np.linalg.norm(ref.X) < 1e-2


def test_tolerance_relaxes_the_objective():
    _, rows, cols, y = _completion(3)
    exact = min_nuclear_norm_completion(rows, cols, y, (30, 30), tol=0.0, rtol=1e-7)
    loose = min_nuclear_norm_completion(rows, cols, y, (30, 30), tol=1e-1, rtol=1e-7)
    assert loose.nuclear_norm < exact.nuclear_norm
    assert np.max(np.abs(loose.X[rows, cols] - y)) <= 1e-1 + 1e-4


def test_exact_recovery_with_many_observations():
    # rank 2, 30x30, 600 of 900 entries: far above r(2n) log(2n), nuclear norm recovers W*.
    W, rows, cols, y = _completion(4, m=600)
    sol = min_nuclear_norm_completion(rows, cols, y, (30, 30), rtol=1e-8)
    assert np.mean((sol.X - W) ** 2) < 1e-8


def test_sensing_admm_matches_cvxpy_and_problem_dispatch():
    rng = np.random.default_rng(5)
    n, m = 12, 100
    W = _low_rank(rng, n, n, 2)
    A = rng.standard_normal((m, n, n)) / n
    y = np.einsum("mij,ij->m", A, W)
    ref = min_nuclear_norm_sensing(A, y, solver="cvxpy")
    ours = min_nuclear_norm(MatrixSensing(A, y, "mean"), rtol=1e-7)
    assert abs(ours.nuclear_norm / ref.nuclear_norm - 1) < 1e-4
    assert ours.max_violation < 1e-5
    tol_ref = min_nuclear_norm_sensing(A, y, tol=1e-2, solver="cvxpy")
    assert tol_ref.nuclear_norm <= ref.nuclear_norm + 1e-6
    assert tol_ref.max_violation < 1e-5


def test_dispatch_on_completion_problem():
    _, rows, cols, y = _completion(6)
    sol = min_nuclear_norm(MatrixCompletion(rows, cols, y, (30, 30), "mean"))
    direct = min_nuclear_norm_completion(rows, cols, y, (30, 30))
    assert sol.nuclear_norm == pytest.approx(direct.nuclear_norm, rel=1e-10)


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        (dict(rows=[0, 0], cols=[1, 1], values=[1.0, 2.0], shape=(3, 3)), "repeated"),
        (dict(rows=[0, 5], cols=[1, 1], values=[1.0, 2.0], shape=(3, 3)), "outside shape"),
        (dict(rows=[0], cols=[1], values=[1.0, 2.0], shape=(3, 3)), "values"),
        (dict(rows=[0], cols=[1], values=[1.0], shape=(3, 3), tol=-1.0), "tol"),
        (dict(rows=[0], cols=[1], values=[1.0], shape=(3, 3), solver="bogus"), "solver"),
    ],
)
def test_bad_input_names_the_argument(kwargs, word):
    with pytest.raises(ValueError, match=word):
        min_nuclear_norm_completion(**kwargs)


def test_sensing_tolerance_needs_cvxpy():
    A = np.random.default_rng(0).standard_normal((5, 3, 3))
    with pytest.raises(ValueError, match="solver='cvxpy'"):
        min_nuclear_norm_sensing(A, np.zeros(5), tol=1e-3)


# --- matched accuracy: the partial SVT, the violation target, agreement with SCS at tight eps ---


def _partial_runs(monkeypatch):
    """Count the ADMM runs that used the partial SVT (``k`` not None)."""
    import deeplinear.baselines as bl

    widths = []
    orig = bl._admm_jit

    def spy(*args, k=None, **kw):
        widths.append(k)
        return orig(*args, k=k, **kw)

    monkeypatch.setattr(bl, "_admm_jit", spy)
    return widths


def test_partial_svt_matches_exact_svt(monkeypatch):
    # 60x60 rank 3: widths up to 16 (half of 60, in steps of 16), so the partial SVT runs.
    W, rows, cols, y = _completion(7, n=60, r=3, m=1500)
    exact = min_nuclear_norm_completion(rows, cols, y, (60, 60), rtol=1e-9, svd="full")
    widths = _partial_runs(monkeypatch)
    ours = min_nuclear_norm_completion(rows, cols, y, (60, 60), rtol=1e-9)
    assert 16 in widths  # the tracked-subspace SVT was used
    assert ours.status == exact.status == "converged"
    # both are within ~rtol of the same optimum (the iterates differ by rounding only)
    assert abs(ours.nuclear_norm / exact.nuclear_norm - 1) < 1e-9
    assert np.max(np.abs(ours.X - exact.X)) < 1e-6


def test_feas_tol_reaches_the_asked_violation():
    _, rows, cols, y = _completion(8, n=60, r=3, m=1500)
    loose = min_nuclear_norm_completion(rows, cols, y, (60, 60), rtol=1e-3)
    tight = min_nuclear_norm_completion(rows, cols, y, (60, 60), rtol=1e-3, feas_tol=1e-10)
    assert loose.max_violation > 1e-6  # the residual test alone stops early
    assert tight.status == "converged"
    assert tight.max_violation <= 1e-10
    assert tight.iterations > loose.iterations


@pytest.mark.parametrize("tol", [0.0, 1e-2])
def test_native_matches_scs_at_tight_tolerance(tol):
    # SCS at eps 1e-9 and the native solver at rtol 1e-10 both reach the optimum to ~1e-8;
    # 1e-6 relative in the nuclear norm and 1e-4 in X leave a margin for SCS's own accuracy.
    _, rows, cols, y = _completion(9, n=20, r=2, m=220)
    ref = min_nuclear_norm_completion(rows, cols, y, (20, 20), tol=tol, solver="cvxpy",
                                      scs_eps=1e-9, max_iters=100_000)
    ours = min_nuclear_norm_completion(rows, cols, y, (20, 20), tol=tol, rtol=1e-10,
                                       feas_tol=1e-9)
    assert ours.status == "converged" and ref.status == "optimal"
    assert abs(ours.nuclear_norm / ref.nuclear_norm - 1) < 1e-6
    assert np.linalg.norm(ours.X - ref.X) / np.linalg.norm(ref.X) < 1e-4
    assert ours.max_violation <= 1e-9


def test_exact_recovery_on_the_partial_path(monkeypatch):
    # 60x60 rank 2 from 42% of the entries: far above the r (2n) log(2n) threshold, so the
    # minimum nuclear norm solution is W* itself (same shape as above: one compilation).
    W, rows, cols, y = _completion(10, n=60, r=2, m=1500)
    widths = _partial_runs(monkeypatch)
    sol = min_nuclear_norm_completion(rows, cols, y, (60, 60), rtol=1e-9, feas_tol=1e-10)
    assert any(k is not None for k in widths)
    assert sol.max_violation <= 1e-10
    assert np.max(np.abs(sol.X - W)) < 1e-6


@pytest.mark.parametrize(("kwargs", "word"), [(dict(feas_tol=0.0), "feas_tol"),
                                              (dict(svd="lanczos"), "svd")])
def test_bad_solver_options_name_the_argument(kwargs, word):
    _, rows, cols, y = _completion(0)
    with pytest.raises(ValueError, match=word):
        min_nuclear_norm_completion(rows, cols, y, (30, 30), **kwargs)
