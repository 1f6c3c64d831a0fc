"""Minimum-nuclear-norm baseline for matrix completion and sensing (§2.12 "Classic baseline", §E3).

Solves ``min ||X||_*  s.t.  |<A_i, X> - y_i| <= tol  for all i`` (``tol = 0``: equality), where
completion is the special case ``A_i = e_{a_i} e_{b_i}^T``. Two solvers:

* ``solver="cvxpy"``: the reference SDP, solved by SCS as in the roosephu repo
  (``use_indirect=False``), with the constraints built as one vectorized expression (§4 pitfall 12);
* ``solver="admm"``: a native JAX solver (ADMM with singular value thresholding, below), jitted into
  ``lax.while_loop`` s; at the same final constraint violation it is several times faster
  (BENCHMARKS.md, "Minimum nuclear norm").

ADMM splitting. ``min ||X||_* + I_C(Z)  s.t.  X = Z`` with ``C`` the feasible set. With the scaled
dual ``U``, penalty ``rho`` and over-relaxation ``alpha`` one iteration is

    X  <- SVT_{1/rho}(Z - U)                  (prox of the nuclear norm)
    Xh <- alpha X + (1 - alpha) Z
    Z  <- Pi_C(Xh + U)                        (completion: a clip on the observed entries;
                                               sensing: affine projection, cached Cholesky)
    U  <- U + Xh - Z

with residual balancing of ``rho`` (Boyd et al. 2011, sections 3.4.1 and 3.4.3). It stops when the
relative primal and dual residuals are below ``rtol`` (and, if asked, the constraint violation of
``X`` below ``feas_tol``). The SVT needs only the singular directions above ``1/rho``: after a few
exact iterations it runs on a tracked singular subspace slightly wider than the current rank
(one block power step and a Rayleigh-Ritz projection per iteration, ``O(n^2 k)`` instead of an
``O(n^3)`` eigendecomposition), and a final exact iteration checks the answer.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from deeplinear._dtype import in_float64
from deeplinear._optional import require
from deeplinear.observations import Observations

__all__ = [
    "hard_impute",
    "ImputeFit",
    "min_nuclear_norm",
    "min_nuclear_norm_completion",
    "min_nuclear_norm_sensing",
    "NuclearNormSolution",
    "select_hard_impute",
    "select_soft_impute",
    "soft_impute",
    "Solver",
]

Solver = Literal["admm", "cvxpy"]


@dataclass(frozen=True)
class NuclearNormSolution:
    """A minimum-nuclear-norm solution.

    Attributes:
        X: the solution matrix (numpy, float64).
        nuclear_norm: ``||X||_*``.
        max_violation: ``max_i (|<A_i, X> - y_i| - tol)^+``, how far ``X`` is from feasible.
        solver: "admm" or "cvxpy".
        status: solver status ("converged"/"max_iters" for ADMM, the cvxpy status otherwise).
        iterations: solver iterations.
        seconds: wall time of the solve (compilation included for ADMM's first call).
    """

    X: np.ndarray
    nuclear_norm: float
    max_violation: float
    solver: str
    status: str
    iterations: int
    seconds: float


# ---------------------------------------------------------------------------------------------
# Measurement operators A: R^{n1 x n2} -> R^m, as (forward, adjoint, solve (I + A^T A)^{-1})


def _check_completion(rows, cols, values, shape) -> Observations:
    """The observations, validated once by :class:`observations.Observations` (each entry
    observed once, finite values, indices inside ``shape``), at least one of them."""
    rows = np.asarray(rows).ravel()
    cols = np.asarray(cols).ravel()
    values = np.asarray(values, dtype=np.float64).ravel()
    if not (rows.shape == cols.shape == values.shape):
        raise ValueError(
            f"rows, cols and values must have one entry per observation, got lengths "
            f"{rows.size}, {cols.size}, {values.size}"
        )
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"shape must be (n1, n2) with positive sizes, got {shape!r}")
    if rows.size == 0:
        raise ValueError("rows/cols/values are empty: need at least one observed entry")
    try:
        return Observations(rows.astype(np.int64), cols.astype(np.int64), values,
                            (int(shape[0]), int(shape[1])))
    except ValueError as err:
        if "must lie in" in str(err):
            raise ValueError(f"rows/cols contain indices outside shape {tuple(shape)}") from None
        raise


def _check_tol(tol: float) -> float:
    tol = float(tol)
    if not np.isfinite(tol) or tol < 0:
        raise ValueError(f"tol must be a finite number >= 0 (0 means equality), got {tol}")
    return tol


class _Completion(NamedTuple):
    """Feasible set ``{Z : |Z_ij - y| <= tol on Omega}``: projection is a clip on Omega.

    The index arrays may be padded (to reuse a compiled solver for another number of
    observations) with the out-of-range row ``n1`` and ``y = 0``: reads there give 0 and writes
    are dropped, so padding changes nothing."""

    rows: jax.Array
    cols: jax.Array
    template: jax.Array  # zeros of shape (n1, n2): carries the static shape through jit

    def _get(self, X: jax.Array) -> jax.Array:
        return X.at[self.rows, self.cols].get(mode="fill", fill_value=0.0)

    def adjoint(self, w: jax.Array) -> jax.Array:
        return self.template.at[self.rows, self.cols].add(w, mode="drop")

    def project(self, Z: jax.Array, y: jax.Array, tol: jax.Array) -> jax.Array:
        obs = self._get(Z)
        return Z.at[self.rows, self.cols].set(jnp.clip(obs, y - tol, y + tol), mode="drop")

    def violation(self, X: jax.Array, y: jax.Array, tol: jax.Array) -> jax.Array:
        return jnp.max(jnp.maximum(jnp.abs(self._get(X) - y) - tol, 0.0))


class _DenseCompletion(NamedTuple):
    """:class:`_Completion` on a dense 0/1 ``mask`` of Omega, with ``y`` a dense matrix (zero off
    Omega): the same set and projection, with array shapes that depend on ``(n1, n2)`` only, so
    solves on one matrix shape share compiled code (used for small matrices)."""

    mask: jax.Array
    template: jax.Array

    def adjoint(self, w: jax.Array) -> jax.Array:
        return self.mask * w

    def project(self, Z: jax.Array, y: jax.Array, tol: jax.Array) -> jax.Array:
        return jnp.where(self.mask > 0, jnp.clip(Z, y - tol, y + tol), Z)

    def violation(self, X: jax.Array, y: jax.Array, tol: jax.Array) -> jax.Array:
        return jnp.max(self.mask * jnp.maximum(jnp.abs(X - y) - tol, 0.0))


class _Sensing(NamedTuple):
    """Feasible set ``{Z : A vec(Z) = y}``: affine projection with a cached Cholesky of A A^T."""

    A: jax.Array  # (m, n1 * n2), row-major vec
    chol: jax.Array  # lower Cholesky factor of A A^T
    template: jax.Array

    def adjoint(self, w: jax.Array) -> jax.Array:
        return (self.A.T @ w).reshape(self.template.shape)

    def project(self, Z: jax.Array, y: jax.Array, tol: jax.Array) -> jax.Array:
        r = self.A @ Z.reshape(-1) - y
        return Z - self.adjoint(jax.scipy.linalg.cho_solve((self.chol, True), r))

    def violation(self, X: jax.Array, y: jax.Array, tol: jax.Array) -> jax.Array:
        return jnp.max(jnp.maximum(jnp.abs(self.A @ X.reshape(-1) - y) - tol, 0.0))


# ---------------------------------------------------------------------------------------------
# ADMM


def _svt_full(M: jax.Array, tau: jax.Array, k: int) -> tuple:
    """Singular value thresholding, the prox of ``tau ||.||_*``: ``U max(S - tau, 0) V^T``.

    Computed as ``M V diag(max(1 - tau/s, 0)) V^T`` from the eigendecomposition of ``M^T M``
    (about twice as fast as an SVD on CPU); singular values below ``tau`` are zeroed, so the
    squaring only costs relative accuracy on values that are discarded anyway. Also returns the
    top-``k`` right singular vectors and the number of singular values above ``tau``.
    """
    lam, Q = jnp.linalg.eigh(M.T @ M)
    s = jnp.sqrt(jnp.maximum(lam, 0.0))
    f = jnp.where(s > tau, 1.0 - tau / jnp.maximum(s, tau), 0.0)
    return (M @ (Q * f)) @ Q.T, Q[:, Q.shape[1] - k:], jnp.sum(s > tau)


def _svt_partial(M: jax.Array, tau: jax.Array, V: jax.Array) -> tuple:
    """SVT on a tracked ``k``-dimensional right singular subspace ``V`` (``n2 x k``, orthonormal).

    One block power step with Rayleigh-Ritz: ``Q = orth(M V)``, ``B = Q^T M = P S Vb^T`` (from the
    ``k x k`` eigendecomposition of ``B B^T``), ``SVT ~ Q P diag(max(S - tau, 0)) Vb^T``; the next
    subspace is ``Vb = B^T P S^{-1}``, spanning ``M^T Q``. Exact once ``V`` holds the singular
    directions above ``tau``; the count of Ritz values above ``tau`` is ``k`` when the subspace is
    saturated (the caller then takes an exact step next).
    Cost ``O(n1 n2 k)`` instead of an ``O(n^3)`` eigendecomposition.
    """
    Q, _ = jnp.linalg.qr(M @ V)
    B = Q.T @ M
    lam, P = jnp.linalg.eigh(B @ B.T)
    s = jnp.sqrt(jnp.maximum(lam, 0.0))
    f = jnp.where(s > tau, 1.0 - tau / jnp.maximum(s, tau), 0.0)
    X = (Q @ (P * f)) @ (P.T @ B)
    V_next = (B.T @ P) / jnp.maximum(s, 1e-12 * s[-1])  # right singular vectors of B
    return X, V_next, jnp.sum(s > tau)


_ALPHA = 1.8  # over-relaxation (Boyd et al. 2011, section 3.4.3)
_RHO_SCALE = 5.0  # rho0 = _RHO_SCALE / ||A^T y||_2: calibrated on the §E3 instances
_K0 = 16  # narrowest tracked singular subspace
_SETTLE = 10  # iterations of one run before its subspace width is reconsidered


def _margin(rank):
    """Extra tracked directions beyond the current rank (the power step's spectral gap)."""
    return jnp.maximum(8, rank // 4) if isinstance(rank, jax.Array) else max(8, rank // 4)


def _width(rank: int) -> int:
    """Subspace width for a rank: ``rank + _margin`` rounded up to a multiple of ``_K0`` (few
    distinct widths, so few compilations)."""
    return -(-(rank + _margin(rank)) // _K0) * _K0


class _State(NamedTuple):
    """ADMM iterate: ``X`` (nuclear-norm block), ``Z`` (feasible block), scaled dual ``U``,
    penalty ``rho``, iteration count, relative primal/dual residuals, the tracked right singular
    subspace ``V`` of the partial SVT, the rank of the last SVT and the constraint violation
    ``max_i (|<A_i, X> - y_i| - tol)^+`` of ``X``."""

    X: jax.Array
    Z: jax.Array
    U: jax.Array
    rho: jax.Array
    it: jax.Array
    r_rel: jax.Array
    s_rel: jax.Array
    V: jax.Array
    rank: jax.Array
    viol: jax.Array


def _spectral_norm(D: jax.Array, iters: int = 30) -> jax.Array:
    """``||D||_2`` by power iteration on ``D^T D`` (it only scales the first penalty)."""
    v = jnp.ones((D.shape[1],), D.dtype) / jnp.sqrt(D.shape[1])

    def body(_, v):
        w = D.T @ (D @ v)
        return w / jnp.maximum(jnp.linalg.norm(w), 1e-300)

    v = jax.lax.fori_loop(0, iters, body, v)
    return jnp.linalg.norm(D @ v)


def _admm_init(op, y: jax.Array, k: int) -> _State:
    D = op.adjoint(y)
    d_norm = _spectral_norm(D)
    rho0 = _RHO_SCALE / d_norm
    Z0 = op.project(jnp.zeros_like(D), y, jnp.zeros((), D.dtype))
    U0 = -D / (d_norm * rho0)  # dual warm start Y0 = D / ||D||_2 (Lin, Chen & Ma 2010)
    inf = jnp.asarray(jnp.inf, D.dtype)
    V0 = jnp.zeros((D.shape[1], k), D.dtype)
    return _State(jnp.zeros_like(D), Z0, U0, rho0, jnp.asarray(0), inf, inf, V0,
                  jnp.asarray(min(D.shape)), inf)


def _admm(op, y: jax.Array, tol: jax.Array, rtol: jax.Array, feas_tol: jax.Array, state: _State,
          max_iters: jax.Array, k: int | None, fit_below: int | None = None) -> _State:
    """Run ADMM from ``state`` until the residuals are below ``rtol`` and the constraint violation
    of ``X`` below ``feas_tol``, or ``max_iters`` in all.

    ``k=None``: exact SVT (eigendecomposition) every iteration; with ``fit_below``, the run also
    stops once the rank plus ``_margin`` is ``<= fit_below``. ``k``:
    the partial SVT on the tracked subspace whenever the last rank plus ``_margin`` fits in ``k``
    (an exact step otherwise, which also resets the subspace); the run also stops after
    ``_SETTLE`` iterations if ``_width`` of the rank is no longer ``k`` (the caller re-runs with it).
    """
    start = state.it

    def svt(M, tau, s: _State):
        if k is None:
            return _svt_full(M, tau, s.V.shape[1])

        # a saturated partial step (rank == k) is followed by an exact one; the final exact
        # iterations make the answer exact in any case
        fits = s.rank + _margin(s.rank) <= k
        return jax.lax.cond(fits, lambda _: _svt_partial(M, tau, s.V),
                            lambda _: _svt_full(M, tau, k), None)

    def step(s: _State) -> _State:
        X, V, rank = svt(s.Z - s.U, 1.0 / s.rho, s)
        Xh = _ALPHA * X + (1.0 - _ALPHA) * s.Z
        Z = op.project(Xh + s.U, y, tol)
        U = s.U + Xh - Z
        r_rel = jnp.linalg.norm(X - Z) / jnp.maximum(
            jnp.maximum(jnp.linalg.norm(X), jnp.linalg.norm(Z)), 1e-300
        )
        s_rel = jnp.linalg.norm(Z - s.Z) / jnp.maximum(jnp.linalg.norm(U), 1e-300)
        # residual balancing every 20 iterations (Boyd et al. 2011, eq. 3.13)
        factor = jnp.where(r_rel > 10 * s_rel, 2.0, jnp.where(s_rel > 10 * r_rel, 0.5, 1.0))
        factor = jnp.where(s.it % 20 == 19, factor, 1.0)
        viol = op.violation(X, y, tol)
        return _State(X, Z, U / factor, s.rho * factor, s.it + 1, r_rel, s_rel, V, rank, viol)

    def cond(s: _State):
        going = (s.it < max_iters) & ((s.r_rel > rtol) | (s.s_rel > rtol) | (s.viol > feas_tol))
        need = s.rank + _margin(s.rank)
        if k is None:
            return going if fit_below is None else going & (need > fit_below)
        misfit = (need > k) | (need <= k - _K0)
        return going & ~((s.it - start >= _SETTLE) & misfit)

    inf = jnp.asarray(jnp.inf, state.X.dtype)
    return jax.lax.while_loop(cond, step, state._replace(r_rel=inf, s_rel=inf))


_admm_jit = jax.jit(_admm, static_argnames=("k", "fit_below"))
_admm_init_jit = jax.jit(_admm_init, static_argnames=("k",))


def _run_admm(op, y: np.ndarray, tol: float, rtol: float, max_iters: int, svd: str = "auto",
              feas_tol: float | None = None) -> tuple:
    """ADMM with the partial SVT on a subspace of width ``k = _width(rank)``, re-chosen while the
    rank moves (exact SVT while ``k`` would pass half of ``min(n1, n2)``), then exact-SVT
    iterations until the stopping test holds again, so that the answer is an exact ADMM iterate
    (a polish, typically 1-2 iterations). ``svd="full"``: exact SVT throughout."""
    if not (0 < rtol < 1):
        raise ValueError(f"rtol must be in (0, 1), got {rtol}")
    if max_iters < 1:
        raise ValueError(f"max_iters must be >= 1, got {max_iters}")
    if svd not in ("auto", "full"):
        raise ValueError(f"svd must be 'auto' or 'full', got {svd!r}")
    feas = np.inf if feas_tol is None else float(feas_tol)
    if not feas > 0:
        raise ValueError(f"feas_tol must be a number > 0 (or None), got {feas_tol}")
    n_min, n2 = min(op.template.shape), op.template.shape[1]
    t0 = time.perf_counter()
    with jax.enable_x64(True):
        y = jnp.asarray(y, dtype=jnp.float64)
        args = (op, y, *(jnp.asarray(v, jnp.float64) for v in (tol, rtol, feas)))

        def done(s: _State) -> bool:
            return max(float(s.r_rel), float(s.s_rel)) <= rtol and float(s.viol) <= feas

        state = _admm_init_jit(op, y, k=1)
        k_max = n_min // 2 // _K0 * _K0  # partial SVT up to half the full width
        if svd == "auto" and k_max > 0:
            while int(state.it) < max_iters and not done(state):
                k = _width(int(state.rank))
                if k > k_max:  # exact SVT until the rank fits the widest subspace
                    state = _admm_jit(*args, state, jnp.asarray(max_iters), k=None,
                                      fit_below=k_max)
                    continue
                # width k; an exact first step fills the subspace
                state = state._replace(V=jnp.zeros((n2, k), jnp.float64), rank=jnp.asarray(n_min))
                state = _admm_jit(*args, state, jnp.asarray(max_iters), k=k)
        # exact-SVT iterations: the rest of the solve (large ranks) or a polish
        state = _admm_jit(*args, state, jnp.asarray(max_iters), k=None)
        X = np.asarray(jax.block_until_ready(state.X))
        converged = done(state)
    seconds = time.perf_counter() - t0
    return X, int(state.it), "converged" if converged else "max_iters", seconds


# ---------------------------------------------------------------------------------------------
# cvxpy reference


def _run_cvxpy(X_var, measured, y: np.ndarray, tol: float, eps: float, max_iters: int) -> tuple:
    cp = require("cvxpy", "solver='cvxpy'")

    cons = [measured == y] if tol == 0 else [cp.abs(measured - y) <= tol]
    prob = cp.Problem(cp.Minimize(cp.normNuc(X_var)), cons)
    t0 = time.perf_counter()
    prob.solve(
        solver=cp.SCS, use_indirect=False, eps_abs=eps, eps_rel=eps, max_iters=max_iters
    )
    seconds = time.perf_counter() - t0
    if X_var.value is None:
        raise RuntimeError(f"SCS failed on the nuclear-norm problem: status {prob.status!r}")
    iters = int(prob.solver_stats.num_iters or 0)
    return np.asarray(X_var.value, dtype=np.float64), iters, str(prob.status), seconds


# ---------------------------------------------------------------------------------------------
# Public API


def _solution(X, forward, y, tol, solver, status, iters, seconds) -> NuclearNormSolution:
    viol = float(np.max(np.maximum(np.abs(forward(X) - y) - tol, 0.0)))
    nuc = float(np.sum(np.linalg.svd(X, compute_uv=False)))
    return NuclearNormSolution(X, nuc, viol, solver, status, iters, seconds)


@in_float64  # numpy float64 in and out; tolerances down to ~1e-7 need float64 (§4 pitfall 3)
def min_nuclear_norm_completion(
    rows,
    cols,
    values,
    shape: tuple[int, int],
    *,
    tol: float = 0.0,
    solver: Solver = "admm",
    rtol: float = 1e-5,
    max_iters: int = 20_000,
    scs_eps: float = 1e-6,
    svd: Literal["auto", "full"] = "auto",
    feas_tol: float | None = None,
) -> NuclearNormSolution:
    """``min ||X||_* s.t. |X_ij - M_ij| <= tol on the observed entries`` (§2.12, §E3 uses tol=1e-3).

    Args:
        rows, cols, values: observed entries ``M[rows[i], cols[i]] = values[i]`` (each entry once).
        shape: ``(n1, n2)`` of ``X``.
        tol: constraint tolerance; 0 means exact equality.
        solver: "admm" (native JAX, default) or "cvxpy" (SCS, the reference).
        rtol: ADMM relative primal/dual residual tolerance.
        max_iters: iteration cap (ADMM or SCS).
        scs_eps: SCS ``eps_abs = eps_rel`` (SCS's own default is 1e-4).
        svd: ADMM's singular value thresholding: "auto" (partial, on a tracked low-dimensional
            singular subspace, then polished with exact iterations) or "full" (an exact
            eigendecomposition every iteration).
        feas_tol: ADMM also runs until ``max_violation <= feas_tol`` (None: the residual test
            alone).

    Returns:
        NuclearNormSolution.
    """
    obs = _check_completion(rows, cols, values, shape)
    rows, cols, values = obs.rows, obs.cols, obs.values
    tol = _check_tol(tol)
    shape = obs.shape

    def forward(X):
        return X[rows, cols]

    if solver == "admm":
        with jax.enable_x64(True):
            if obs.dense_is_cheaper:  # one compiled solver per shape
                y = obs.dense(0.0)
                op = _DenseCompletion(jnp.asarray(obs.mask(), jnp.float64),
                                      jnp.zeros(shape, jnp.float64))
            else:  # padded: one compiled solver per power of two of observations
                r_pad, c_pad, y = obs.padded()
                op = _Completion(jnp.asarray(r_pad), jnp.asarray(c_pad),
                                 jnp.zeros(shape, jnp.float64))
            X, iters, status, secs = _run_admm(op, y, tol, rtol, max_iters, svd, feas_tol)
    elif solver == "cvxpy":
        cp = require("cvxpy", "solver='cvxpy'")

        X_var = cp.Variable(shape)
        measured = cp.vec(X_var, order="C")[rows * shape[1] + cols]
        X, iters, status, secs = _run_cvxpy(X_var, measured, values, tol, scs_eps, max_iters)
    else:
        raise ValueError(f"solver must be 'admm' or 'cvxpy', got {solver!r}")
    return _solution(X, forward, values, tol, solver, status, iters, secs)


@in_float64
def min_nuclear_norm_sensing(
    A,
    y,
    *,
    tol: float = 0.0,
    solver: Solver = "admm",
    rtol: float = 1e-5,
    max_iters: int = 20_000,
    scs_eps: float = 1e-6,
    svd: Literal["auto", "full"] = "auto",
    feas_tol: float | None = None,
) -> NuclearNormSolution:
    """``min ||X||_* s.t. |<A_i, X> - y_i| <= tol`` for sensing matrices ``A`` of shape (m, n1, n2).

    Arguments as in ``min_nuclear_norm_completion``.
    """
    A = np.asarray(A, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64).ravel()
    if A.ndim != 3:
        raise ValueError(f"A must have shape (m, n1, n2), got {A.shape}")
    if A.shape[0] != y.size:
        raise ValueError(f"A holds {A.shape[0]} measurements but y has {y.size} values")
    tol = _check_tol(tol)
    m, n1, n2 = A.shape
    A_flat = A.reshape(m, n1 * n2)

    def forward(X):
        return A_flat @ X.reshape(-1)

    if solver == "admm":
        if tol > 0:
            raise ValueError(
                "tol > 0 for sensing is supported by solver='cvxpy' only (the native ADMM projects "
                "on the affine set A vec(X) = y); pass tol=0 or solver='cvxpy'"
            )
        if m > n1 * n2:
            raise ValueError(f"A has m={m} > n1*n2={n1 * n2} measurements: the system is overdetermined")
        chol = np.linalg.cholesky(A_flat @ A_flat.T)
        with jax.enable_x64(True):
            op = _Sensing(jnp.asarray(A_flat), jnp.asarray(chol), jnp.zeros((n1, n2), jnp.float64))
            X, iters, status, secs = _run_admm(op, y, tol, rtol, max_iters, svd, feas_tol)
    elif solver == "cvxpy":
        cp = require("cvxpy", "solver='cvxpy'")

        X_var = cp.Variable((n1, n2))
        measured = A_flat @ cp.vec(X_var, order="C")
        X, iters, status, secs = _run_cvxpy(X_var, measured, y, tol, scs_eps, max_iters)
    else:
        raise ValueError(f"solver must be 'admm' or 'cvxpy', got {solver!r}")
    return _solution(X, forward, y, tol, solver, status, iters, secs)


def min_nuclear_norm(problem, *, tol: float = 0.0, solver: Solver = "admm", **kwargs) -> NuclearNormSolution:
    """Minimum-nuclear-norm solution consistent with a ``MatrixCompletion`` or ``MatrixSensing``."""
    if hasattr(problem, "rows") and hasattr(problem, "cols"):
        return min_nuclear_norm_completion(
            np.asarray(problem.rows), np.asarray(problem.cols), np.asarray(problem.values),
            tuple(problem.shape), tol=tol, solver=solver, **kwargs,
        )
    if hasattr(problem, "A") and hasattr(problem, "y"):
        return min_nuclear_norm_sensing(
            np.asarray(problem.A), np.asarray(problem.y), tol=tol, solver=solver, **kwargs
        )
    raise ValueError(
        f"problem must be a MatrixCompletion (rows, cols, values) or MatrixSensing (A, y), "
        f"got {type(problem).__name__}"
    )


# SoftImpute and hard-impute (Mazumder, Hastie & Tibshirani 2010) live in deeplinear._impute.
from deeplinear._impute import (  # noqa: E402
    ImputeFit,
    hard_impute,
    select_hard_impute,
    select_soft_impute,
    soft_impute,
)
