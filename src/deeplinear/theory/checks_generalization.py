"""Checks of §2.12–§2.13: singular value and vector dynamics, sign preservation, the 2×2
completion where norms go to infinity, and Exercises 4 and 15."""

from __future__ import annotations

from functools import cache

import jax
import numpy as np

from deeplinear import dynamics as dyn
from deeplinear.theory import _ref as ref
from deeplinear.theory._base import Comparison, Outcome, check

__all__ = [
    "completion_2x2_exercise",
    "norms_to_infinity_2x2",
    "sign_preservation",
    "singular_value_dynamics",
    "singular_vector_dynamics",
]

_track_triples = jax.jit(jax.vmap(dyn.track_signed_svd))
_track = jax.jit(dyn.track_signed_svd)


@cache
def _flows(depth: int):
    return (jax.jit(jax.vmap(lambda U, s, V, G: dyn.singular_value_flow(U, s, V, G, depth))),
            jax.jit(jax.vmap(lambda U, s, V, G: dyn.singular_vector_flow(U, s, V, G, depth))))


def _svd_fd(seed, dims, balanced, init_scale, times, h):
    """Factor GF (dense DOP853) and the tracked signed SVD at ``t - h, t, t + h`` for each t."""
    dims = ref.check_dims(dims, 1)
    r = ref.rng(seed)
    A = init_scale * r.standard_normal((dims[-1], dims[0]))
    fs = ref.init(r, A, dims, balanced, init_scale)
    loss = ref.quartic(r.standard_normal((dims[-1], dims[0])))
    times = np.asarray(times, dtype=float)
    _, sol, unflat = ref.factor_flow(fs, loss, np.array([0.0, times.max() + 2 * h]),
                                     rtol=1e-13, atol=1e-15, dense=True)
    grid = np.stack([times - h, times, times + h], axis=1)  # (n, 3)
    Ws = np.array([[ref.product(unflat(sol.sol(t))) for t in row] for row in grid])
    U, s, V = (np.asarray(x) for x in _track_triples(Ws))
    G = np.array([loss.grad(W) for W in Ws[:, 1]])
    return U, s, V, G, len(dims) - 1


@check("singular_value_dynamics", "§2.12 Theorem (ACHL19 Thm 3)",
       "Along GF from a balanced init the signed singular values obey σ̇_r = -N (σ_r²)^{1-1/N} "
       "⟨∇ℓ, u_r v_rᵀ⟩: max |central finite difference - formula| / max|σ̇| <= tolerance")
def singular_value_dynamics(seed: int = 0, dims: tuple = (3, 4, 4, 5), balanced: bool = True,
                            init_scale: float = 0.8, times: tuple = (0.1, 0.3, 0.6),
                            h: float = 1e-4, tolerance: float = 1e-5):
    U, s, V, G, depth = _svd_fd(seed, dims, balanced, init_scale, times, h)
    fd = (s[:, 2] - s[:, 0]) / (2 * h)
    pred = np.asarray(_flows(depth)[0](U[:, 1], s[:, 1], V[:, 1], G))
    measured = float(np.max(np.abs(fd - pred)) / np.max(np.abs(pred)))
    return Outcome(measured, 0.0, tolerance,
                   {"sigma_at_times": s[:, 1].tolist()})


@check("singular_vector_dynamics", "§2.12 Theorem (singular vectors)",
       "Along GF from a balanced init (distinct σ's) u̇_r, v̇_r follow the §2.12 formulas "
       "(coupling (σ_r G̃_{r'r} + σ_{r'} G̃_{rr'})/(σ_r^{2/N} - σ_{r'}^{2/N}) plus the "
       "out-of-span term): max |finite difference - formula| / max|formula| <= tolerance")
def singular_vector_dynamics(seed: int = 0, dims: tuple = (3, 4, 4, 5), balanced: bool = True,
                             init_scale: float = 0.8, times: tuple = (0.1, 0.3, 0.6),
                             h: float = 1e-4, tolerance: float = 1e-5):
    U, s, V, G, depth = _svd_fd(seed, dims, balanced, init_scale, times, h)
    Udot, Vdot = (np.asarray(x) for x in _flows(depth)[1](U[:, 1], s[:, 1], V[:, 1], G))
    fd_U = (U[:, 2] - U[:, 0]) / (2 * h)
    fd_V = (V[:, 2] - V[:, 0]) / (2 * h)
    scale = max(np.max(np.abs(Udot)), np.max(np.abs(Vdot)))
    errs = {"U": float(np.max(np.abs(fd_U - Udot)) / scale),
            "V": float(np.max(np.abs(fd_V - Vdot)) / scale)}
    measured = max(errs.values())
    return Outcome(measured, 0.0, tolerance, errs)


@check("sign_preservation", "§2.12 consequence, Exercise 15",
       "Along GF from a balanced init with N >= 2, no tracked signed singular value crosses 0 "
       "and det W keeps its sign, even when the target has det of the opposite sign: measured "
       "min_t min(sign(det W(0)) det W(t)/|det W(0)|, min_r σ_r(t)/σ_r(0)) > 0")
def sign_preservation(seed: int = 0, dims: tuple = (3, 3, 3, 3), init_scale: float = 0.6,
                      t1: float = 15.0, n_frames: int = 300):
    dims = ref.check_dims(dims, 1)
    d = dims[0]
    if dims[-1] != d:
        raise ValueError(f"dims {dims} must have d_0 = d_N (det needs a square W)")
    r = ref.rng(seed)
    A = init_scale * r.standard_normal((d, d))
    if np.linalg.det(A) < 0:
        A[0] = -A[0]
    spectrum = np.linspace(1.5, 0.5, d)
    spectrum[-1] = -spectrum[-1]  # target with det < 0: the loss pulls det across 0
    Q1, _ = np.linalg.qr(r.standard_normal((d, d)))
    Q2, _ = np.linalg.qr(r.standard_normal((d, d)))
    loss = ref.square(Q1 @ np.diag(spectrum) @ Q2.T)
    ts = np.linspace(0.0, t1, n_frames)
    traj, _, _ = ref.factor_flow(ref.balanced(A, dims), loss, ts)
    Ws = np.array([ref.product(f) for f in traj])
    dets = np.linalg.det(Ws)
    _, s, _ = _track(Ws)
    s = np.asarray(s)
    det_ratio = float(np.min(dets * np.sign(dets[0]) / abs(dets[0])))
    sigma_ratio = float(np.min(s / s[0]))
    measured = min(det_ratio, sigma_ratio)
    return Outcome(measured, 0.0, 0.0,
                   {"min_det_ratio": det_ratio, "min_sigma_ratio": sigma_ratio,
                    "final_loss": loss.value(Ws[-1]), "final_det": float(dets[-1])},
                   comparison=Comparison.ABOVE_TOLERANCE)


@check("norms_to_infinity_2x2", "§2.13 Proposition (RC20), E5",
       "2×2 completion [[*,1],[1,0]], GF from a balanced init with det > 0: det stays > 0, so as "
       "φ -> 0 the unobserved |W11| >= (1-√(2ℓ))²/√(2ℓ) -> ∞ and the effective rank -> 1; "
       "measured |W11| at ℓ = stop_loss >= predicted bound, det > 0 throughout")
def norms_to_infinity_2x2(seed: int = 0, depth: int = 3, det_sign: int = 1,
                          init_scale: float = 0.5, stop_loss: float = 1e-4, t1: float = 5e4,
                          erank_tolerance: float = 0.01):
    r = ref.rng(seed)
    dims = (2,) * (depth + 1)
    A = init_scale * r.standard_normal((2, 2))
    if np.sign(np.linalg.det(A)) != det_sign:
        A[0] = -A[0]
    mask = np.array([[0.0, 1.0], [1.0, 1.0]])
    loss = ref.completion(mask, np.array([[0.0, 1.0], [1.0, 0.0]]))
    fs = ref.balanced(A, dims)
    shapes = [w.shape for w in fs]

    def reached(t, y):
        W = ref.product(ref._unflat(y, shapes))
        return loss.value(W) - stop_loss

    reached.terminal = True
    ts = np.geomspace(1e-2, t1, 200)
    # the flow stiffens as |W11| grows (preconditioner ~ σ_max^{2(N-1)/N}): LSODA switches to BDF
    traj, sol, unflat = ref.factor_flow(fs, loss, np.concatenate([[0.0], ts]), rtol=1e-9,
                                        atol=1e-11, events=reached, method="LSODA")
    W_end = ref.product(unflat(sol.y_events[0][0])) if sol.status == 1 else ref.product(traj[-1])
    Ws = np.array([ref.product(f) for f in traj] + [W_end])
    losses = np.array([loss.value(W) for W in Ws])
    ell = float(losses[-1])
    bound = (1 - np.sqrt(2 * ell)) ** 2 / np.sqrt(2 * ell)
    w11 = float(abs(W_end[0, 0]))
    s = np.linalg.svd(W_end, compute_uv=False)
    p = s / s.sum()
    erank = float(np.exp(-np.sum(p * np.log(p))))
    det_positive = bool(np.all(np.linalg.det(Ws) > 0))
    late = losses < 1e-2  # |W11| grows monotonically while the loss falls
    monotone = bool(np.all(np.diff(np.abs(Ws[late, 0, 0])) >= -1e-9))
    also = bool(sol.status == 1 and det_positive and monotone and erank <= 1 + erank_tolerance)
    return Outcome(w11, float(bound), 0.0,
                   {"reached_stop_loss": bool(sol.status == 1), "final_loss": ell,
                    "det_positive_throughout": det_positive, "w11_monotone": monotone,
                    "effective_rank": erank, "distance_to_rank1": float(s[-1]),
                    "time": float(sol.t_events[0][0]) if sol.status == 1 else float(t1)},
                   comparison=Comparison.AT_LEAST_PREDICTED,
                   also="ℓ reached stop_loss, det > 0 throughout, |W11| grew monotonically and "
                        "effective rank <= 1 + erank_tolerance", also_holds=also)


@check("completion_2x2_exercise", "§2.13 Exercise 4",
       "For the solutions W(x) = [[x,1],[1,b22]] with b22 = 0: every norm (Frobenius, nuclear, "
       "spectral, entrywise ℓ1, ℓ∞) is minimized at a finite x and diverges as |x| -> ∞, every "
       "solution has rank 2 (det = -1), and dist(W(x), rank 1) = σ_min -> 0: measured "
       "max_x |det + 1| + σ_min(W(x_max)) x_max - 1 stays <= tolerance")
def completion_2x2_exercise(b22: float = 0.0, x_max: float = 1e4, n_grid: int = 4001,
                            tolerance: float = 1e-6):
    xs = np.linspace(-x_max, x_max, n_grid)
    Ws = np.stack([np.array([[x, 1.0], [1.0, b22]]) for x in xs])
    s = np.linalg.svd(Ws, compute_uv=False)
    norms = {"frobenius": np.linalg.norm(Ws, axis=(1, 2)), "nuclear": s.sum(1), "spectral": s[:, 0],
             "l1": np.abs(Ws).sum((1, 2)), "linf": np.abs(Ws).max((1, 2))}
    finite_min = all(abs(xs[np.argmin(v)]) < 10 for v in norms.values())
    diverge = all(v[0] >= x_max and v[-1] >= x_max for v in norms.values())
    det_err = float(np.max(np.abs(np.linalg.det(Ws) + 1)))
    rank2 = bool(np.min(s[:, 1]) > 0.5 / x_max)
    dist_scaled = float(s[-1, 1] * x_max)  # σ_min(W(x)) ≈ 1/|x|
    measured = det_err + abs(dist_scaled - 1)
    return Outcome(measured, 0.0, tolerance,
                   {"norm_minimizers": {k: float(xs[np.argmin(v)]) for k, v in norms.items()},
                    "min_sigma_min_over_grid": float(np.min(s[:, 1])), "every_solution_rank2": rank2,
                    "sigma_min_at_x_max": float(s[-1, 1])},
                   also="every norm has a finite minimizer and diverges, and every W(x) has "
                        "rank 2", also_holds=bool(finite_min and diverge and rank2))
