"""Checks of §2.2–§2.3 (non-convexity, saddles at the origin) and Exercises 5 and 8."""

from __future__ import annotations

from functools import cache

import jax
import jax.numpy as jnp
import numpy as np

from deeplinear.theory import _ref as ref
from deeplinear.theory._base import Comparison, Outcome, check

__all__ = [
    "nonconvexity",
    "origin_non_strict_saddle",
    "origin_strict_saddle",
    "symmetric_factorization",
    "width1_quadratic",
]


@check("nonconvexity", "§2.2 Proposition 1, Exercise 11",
       "If ℓ(0) > min ℓ and N >= 2, φ is non-convex: for a global minimizer (W_1*, W_2*, ...) and "
       "its sign flip (-W_1*, -W_2*, ...), the midpoint has φ = ℓ(0) > min; measured "
       "φ(midpoint) - max(φ(endpoints)) > tolerance")
def nonconvexity(seed: int = 0, dims: tuple = (3, 4, 4, 2), target_scale: float = 1.0,
                 tolerance: float = 1e-8):
    dims = ref.check_dims(dims, 2)
    r = ref.rng(seed)
    target = target_scale * r.standard_normal((dims[-1], dims[0]))
    loss = ref.square(target)
    a = ref.balanced(target, dims)
    b = (-a[0], -a[1]) + a[2:]
    mid = tuple(0.5 * (x + y) for x, y in zip(a, b, strict=True))
    ends = max(loss.value(ref.product(a)), loss.value(ref.product(b)))
    gap = loss.value(ref.product(mid)) - ends
    return Outcome(gap, 0.5 * float(np.sum(target**2)), tolerance,
                   {"phi_endpoints": ends, "phi_midpoint": loss.value(ref.product(mid))},
                   comparison=Comparison.ABOVE_TOLERANCE)


@cache
def _hessian_at_zero(dims: tuple) -> callable:
    """Autodiff gradient and Hessian of φ(θ) = ½‖W_N...W_1 - Φ‖² over the flattened factors."""
    shapes = [(dims[j + 1], dims[j]) for j in range(len(dims) - 1)]
    sizes = [a * b for a, b in shapes]

    def phi(theta, target):
        W, i = None, 0
        for (a, b), n in zip(shapes, sizes, strict=True):
            w = theta[i : i + n].reshape(a, b)
            W = w if W is None else w @ W
            i += n
        return 0.5 * jnp.sum((W - target) ** 2)

    n = sum(sizes)

    @jax.jit
    def at_zero(target):
        z = jnp.zeros(n)
        return jax.grad(phi)(z, target), jax.hessian(phi)(z, target)

    return at_zero


@check("origin_non_strict_saddle", "§2.3 Proposition (depth >= 3)",
       "For N >= 3 and ℓ(0) > min ℓ the origin is a saddle whose gradient AND Hessian vanish: "
       "max(|∇φ(0)|, |∇²φ(0)|) <= tolerance while φ decreases along t·(W_1*, ..., W_N*)")
def origin_non_strict_saddle(seed: int = 0, depth: int = 3, d0: int = 2, width: int = 3,
                             dN: int = 2, target_scale: float = 1.0, tolerance: float = 1e-12):
    dims = ref.check_dims((d0,) + (width,) * (depth - 1) + (dN,), 1)
    r = ref.rng(seed)
    target = target_scale * r.standard_normal((dims[-1], dims[0]))
    g, H = _hessian_at_zero(dims)(target)
    measured = max(float(jnp.max(jnp.abs(g))), float(jnp.max(jnp.abs(H))))
    loss = ref.square(target)
    star = ref.balanced(target, dims) if len(dims) > 2 else (target,)
    small = loss.value(ref.product(tuple(0.3 * w for w in star)))
    saddle = small < loss.value(np.zeros_like(target))  # not a local minimum
    return Outcome(measured, 0.0, tolerance,
                   {"phi_origin": loss.value(np.zeros_like(target)),
                    "phi_along_minimizer_ray": small, "is_saddle": bool(saddle)},
                   also="φ falls from the origin along t·(W_1*, ..., W_N*) (a saddle, not a "
                        "minimum)", also_holds=bool(saddle))


@check("origin_strict_saddle_depth2", "§2.3 (depth 2)",
       "For N = 2 the Hessian of φ at the origin has λ_min = -σ_max(∇ℓ(0)) < 0 (strict saddle): "
       "|λ_min - (-σ_max(∇ℓ(0)))| <= tolerance and λ_min < 0")
def origin_strict_saddle(seed: int = 0, depth: int = 2, d0: int = 2, width: int = 3, dN: int = 2,
                         target_scale: float = 1.0, tolerance: float = 1e-10):
    dims = ref.check_dims((d0,) + (width,) * (depth - 1) + (dN,), 1)
    r = ref.rng(seed)
    target = target_scale * r.standard_normal((dims[-1], dims[0]))
    _, H = _hessian_at_zero(dims)(target)
    lam = float(np.linalg.eigvalsh(np.asarray(H))[0])
    predicted = -float(np.linalg.svd(target, compute_uv=False)[0])  # ∇ℓ(0) = -Φ
    return Outcome(lam, predicted, tolerance, {},
                   comparison=Comparison.CLOSE_TO_NEGATIVE_PREDICTED)


@check("symmetric_factorization", "Exercise 5",
       "For φ(U) = ℓ(UUᵀ): ∇φ(U) = (∇ℓ + ∇ℓᵀ)U (vs autodiff), Ẇ = -[(∇ℓ+∇ℓᵀ)W + W(∇ℓ+∇ℓᵀ)] "
       "(vs the product rule) and λ̇_r = -2λ_r v_rᵀ(∇ℓ+∇ℓᵀ)v_r ∝ λ_r (vs finite differences): "
       "max relative error <= tolerance")
def symmetric_factorization(seed: int = 0, d: int = 3, k: int = 3, symmetric: bool = True,
                            h: float = 1e-5, tolerance: float = 1e-6):
    r = ref.rng(seed)
    M = r.standard_normal((d, d))  # non-symmetric target: ∇ℓ is not symmetric
    U = r.standard_normal((d, k))
    V = U if symmetric else r.standard_normal((d, k))

    def ell(W):
        return 0.5 * jnp.sum((W - M) ** 2) + 0.1 * jnp.sum(W**3 * M)

    grad_ell = jax.jit(jax.grad(ell))
    auto = np.asarray(jax.grad(lambda A: ell(A @ jnp.asarray(V).T if not symmetric else A @ A.T))(
        jnp.asarray(U)))
    W = U @ V.T
    Gs = np.asarray(grad_ell(W))
    S = Gs + Gs.T
    errs = {"gradient": ref.rel(auto, S @ U)}
    Udot = -S @ U
    Wdot = -(S @ W + W @ S)
    errs["end_to_end"] = ref.rel(Udot @ U.T + U @ Udot.T, Wdot)
    lam, Q = np.linalg.eigh(0.5 * (W + W.T))

    def eig_at(t):
        Ut = U + t * Udot  # one Euler step is enough for a central difference of λ(U(t))
        return np.linalg.eigvalsh(Ut @ Ut.T)

    fd = (eig_at(h) - eig_at(-h)) / (2 * h)
    pred = -2 * lam * np.einsum("ir,ij,jr->r", Q, S, Q)
    errs["eigenvalues"] = ref.rel(fd, pred)
    measured = max(errs.values())
    return Outcome(measured, 0.0, tolerance, errs)


@check("width1_quadratic", "Exercise 8",
       "φ(w, u) = (u²/2) wᵀQw with Q ≻ 0 is non-convex (its Hessian has a negative eigenvalue), "
       "yet every critical point is a global minimum: measured max over critical points found "
       "from random starts of φ(critical) - inf φ (estimated by sampling) <= tolerance")
def width1_quadratic(seed: int = 0, d: int = 3, positive_definite: bool = True,
                     n_starts: int = 20, n_samples: int = 2000, tolerance: float = 1e-8):
    from scipy.optimize import minimize

    r = ref.rng(seed)
    B = r.standard_normal((d, d))
    Q = B @ B.T + 0.1 * np.eye(d)
    if not positive_definite:  # an indefinite Q: φ is unbounded below
        Q = Q - 1.5 * np.linalg.eigvalsh(Q)[-1] * np.outer(B[:, 0], B[:, 0]) / (B[:, 0] @ B[:, 0])

    def phi(x):
        w, u = x[:d], x[d]
        return 0.5 * u**2 * w @ Q @ w

    def grad(x):
        w, u = x[:d], x[d]
        return np.concatenate([u**2 * Q @ w, [u * w @ Q @ w]])

    x0 = r.standard_normal(d + 1)
    h = 1e-6
    H = np.stack([(grad(x0 + h * e) - grad(x0 - h * e)) / (2 * h) for e in np.eye(d + 1)])
    lam_min = float(np.linalg.eigvalsh(0.5 * (H + H.T))[0])
    crit = []
    for _ in range(n_starts):
        res = minimize(lambda x: float(np.sum(grad(x) ** 2)), r.standard_normal(d + 1),
                       method="BFGS", options={"gtol": 1e-14})
        if np.linalg.norm(grad(res.x)) < 1e-6:
            crit.append(phi(res.x))
    inf_phi = min(0.0, min(phi(3 * r.standard_normal(d + 1)) for _ in range(n_samples)))
    measured = max(crit) - inf_phi if crit else np.inf
    return Outcome(measured, 0.0, tolerance,
                   {"hessian_lambda_min": lam_min, "n_critical_points": len(crit),
                    "sampled_inf_phi": inf_phi},
                   also="the Hessian at a random point has a negative eigenvalue (φ is "
                        "non-convex)", also_holds=bool(lam_min < 0))
