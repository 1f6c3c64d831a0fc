"""Checks of §2.11 (deficiency margin, GF and GD convergence, necessity of the margin) and
Exercise 7."""

from __future__ import annotations

from functools import cache

import jax
import jax.numpy as jnp
import numpy as np

from deeplinear import dynamics as dyn
from deeplinear.theory import _ref as ref
from deeplinear.theory._base import Comparison, Outcome, check

__all__ = [
    "convex_gf_rate",
    "deficiency_margin_distance",
    "failure_without_margin",
    "gd_convergence_constants",
    "gf_convergence_rate",
    "gf_limit_is_critical",
]


def _sigma_min(A):
    return float(np.linalg.svd(A, compute_uv=False)[-1])


def _random_orthogonal(r, d):
    q, s = np.linalg.qr(r.standard_normal((d, d)))
    return q * np.sign(np.diag(s))


def _target(r, d, spectrum):
    """``Φ = Q diag(spectrum) Rᵀ`` with random rotations: known σ's, non-trivial vectors."""
    return _random_orthogonal(r, d) @ np.diag(spectrum) @ _random_orthogonal(r, d).T


def _init_with_margin(r, target, margin):
    """``W0 = Φ + E`` with ``‖E‖_F = σ_min(Φ) - margin`` (deficiency margin exactly ``margin``)."""
    E = r.standard_normal(target.shape)
    return target + (_sigma_min(target) - margin) * E / np.linalg.norm(E)


def _flip_smallest(target):
    """``Φ`` with its smallest singular value negated: det < 0, no deficiency margin."""
    U, s, Vt = np.linalg.svd(target)
    s = s.copy()
    s[-1] = -s[-1]
    return U @ np.diag(s) @ Vt


@check("deficiency_margin_distance", "§2.11 Lemma, Exercise 2",
       "min{‖W - Λ‖_F : σ_min(W) <= c} = max(0, σ_min(Λ) - c), attained by SVD surgery (σ_min -> c), "
       "and W with margin c (deficiency_margin >= c) has ℓ(W) < ℓ(W') for sampled W' with "
       "σ_min(W') <= c: max(|surgery - formula|, sampled shortfall, violations) <= tolerance")
def deficiency_margin_distance(seed: int = 0, shape: tuple = (3, 3), c: float = 0.3,
                               n_samples: int = 2000, surgery: str = "min",
                               tolerance: float = 1e-10):
    if surgery not in ("min", "max"):
        raise ValueError(f"surgery must be 'min' (the lemma) or 'max', got {surgery!r}")
    r = ref.rng(seed)
    Lam = _target(r, shape[0], 1.0 + np.arange(shape[0])) if shape[0] == shape[1] else \
        r.standard_normal(shape)
    formula = max(0.0, _sigma_min(Lam) - c)
    U, s, Vt = np.linalg.svd(Lam, full_matrices=False)
    s2 = s.copy()
    s2[-1 if surgery == "min" else 0] = c
    W_star = U @ np.diag(s2) @ Vt
    in_set = _sigma_min(W_star) <= c + 1e-12
    surgery_gap = abs(np.linalg.norm(W_star - Lam) - formula) if in_set else np.inf
    # random members of the set {σ_min <= c}: perturb Λ, then push σ_min below c
    shortfall = 0.0
    violations = 0
    margin_W = Lam + (_sigma_min(Lam) - c) * 0.999 * r.standard_normal(shape) / np.sqrt(np.prod(shape) * 4)
    has_margin = float(dyn.deficiency_margin(margin_W, Lam)) >= c
    for _ in range(n_samples):
        P = Lam + r.uniform(0, 2) * r.standard_normal(shape)
        Up, sp, Vpt = np.linalg.svd(P, full_matrices=False)
        sp[-1] = c * r.uniform(-1, 1)
        Wp = Up @ np.diag(sp) @ Vpt
        shortfall = max(shortfall, formula - np.linalg.norm(Wp - Lam))
        violations += int(np.sum((margin_W - Lam) ** 2) >= np.sum((Wp - Lam) ** 2))
    measured = max(surgery_gap, shortfall, float(violations))
    return Outcome(measured, formula, tolerance,
                   {"surgery_distance_gap": surgery_gap, "sampled_shortfall": shortfall,
                    "margin_violations": violations, "margin_point_has_margin": bool(has_margin)},
                   also="the sampled W with margin c has deficiency_margin >= c (predicted: the "
                        "formula's distance)", also_holds=bool(has_margin))


@check("gf_convergence_rate", "§2.11 Theorem (GF, arbitrary depth)",
       "GF from a balanced init with deficiency margin c on the whitened square loss (α = 1): "
       "φ(t) - ℓ* <= (φ(0) - ℓ*) exp(-c^{2(N-1)/N} t) along an accurate ODE solution; measured "
       "max_t [log(φ(t)-ℓ*) - log(bound(t))] <= tolerance")
def gf_convergence_rate(seed: int = 0, dims: tuple = (3, 4, 4, 3), margin: float = 0.3,
                        no_margin: bool = False, t1: float = 8.0, tolerance: float = 1e-6):
    dims = ref.check_dims(dims, 1)
    if dims[0] != dims[-1]:
        raise ValueError(f"dims {dims} must have d_0 = d_N (square target)")
    depth = len(dims) - 1
    r = ref.rng(seed)
    target = _target(r, dims[0], np.linspace(1.0, 2.0, dims[0]))
    W0 = _flip_smallest(target) if no_margin else _init_with_margin(r, target, margin)
    loss = ref.square(target)
    ts = np.linspace(0.0, t1, 81)
    traj, _, _ = ref.factor_flow(ref.balanced(W0, dims), loss, ts)
    gap = np.array([loss.value(ref.product(f)) for f in traj])
    rate = margin ** (2 * (depth - 1) / depth)
    keep = (gap > 1e-13) & (ts > 0)  # below the ODE's accuracy the log is noise
    excess = np.log(gap[keep]) - (np.log(gap[0]) - rate * ts[keep])
    measured = float(np.max(excess))
    return Outcome(measured, 0.0, tolerance,
                   {"actual_margin": float(dyn.deficiency_margin(W0, target)), "rate": rate,
                    "final_loss": float(gap[-1])})


@cache
def _gd_program(shapes: tuple, n_chunks: int):
    """Jitted GD on factors for ``½‖W - Φ‖²`` recording the loss after each chunk of steps."""

    def prod(fs):
        W = fs[0]
        for w in fs[1:]:
            W = w @ W
        return W

    def step(fs, target, lr):
        G = prod(fs) - target
        n = len(fs)
        grads = []
        for j in range(n):
            left = jnp.eye(fs[j].shape[0]) if j == n - 1 else prod(fs[j + 1:])
            right = jnp.eye(fs[j].shape[1]) if j == 0 else prod(fs[:j])
            grads.append(left.T @ G @ right.T)
        return tuple(w - lr * g for w, g in zip(fs, grads, strict=True))

    @jax.jit
    def run(fs, target, lr, chunk):
        def body(fs, _):
            fs = jax.lax.fori_loop(0, chunk, lambda i, f: step(f, target, lr), fs)
            return fs, 0.5 * jnp.sum((prod(fs) - target) ** 2)

        return jax.lax.scan(body, fs, None, length=n_chunks)

    return run


@check("gd_convergence_constants", "§2.11 Theorem (GD, ACGH19 Thm 1)",
       "GD with δ <= c²/(256 N³ ‖Φ‖_F^{2(N-1)/N}) and η <= c^{(4N-2)/N}/(6144 N³ ‖Φ‖_F^{(6N-4)/N}) "
       "from an init with deficiency margin c reaches φ - ℓ* <= ε after T = log((φ(0)-ℓ*)/ε) / "
       "(η c^{2(N-1)/N}) steps: measured (φ(T) - ℓ*)/ε <= 1")
def gd_convergence_constants(seed: int = 0, dims: tuple = (2, 3, 2), margin: float = 0.9,
                             lr_factor: float = 1.0, no_margin: bool = False,
                             log_reduction: float = 2.0, n_records: int = 20):
    dims = ref.check_dims(dims, 1)
    depth = len(dims) - 1
    r = ref.rng(seed)
    target = _random_orthogonal(r, dims[0])  # σ_min = 1, ‖Φ‖_F = sqrt(d)
    W0 = _flip_smallest(target) if no_margin else _init_with_margin(r, target, margin)
    fs = ref.balanced(W0, dims)
    nf = np.linalg.norm(target)
    delta = max((np.linalg.norm(c) for c in ref.balancedness(fs)), default=0.0)
    delta_bound = margin**2 / (256 * depth**3 * nf ** (2 * (depth - 1) / depth))
    lr_bound = margin ** ((4 * depth - 2) / depth) / (6144 * depth**3 * nf ** ((6 * depth - 4) / depth))
    lr = lr_factor * lr_bound
    phi0 = 0.5 * float(np.sum((W0 - target) ** 2))
    eps = phi0 * np.exp(-log_reduction)
    T = int(np.ceil(log_reduction / (lr * margin ** (2 * (depth - 1) / depth))))
    chunk = int(np.ceil(T / n_records))
    run = _gd_program(tuple(w.shape for w in fs), n_records)
    _, losses = run(tuple(jnp.asarray(w) for w in fs), jnp.asarray(target), lr, chunk)
    losses = np.asarray(losses)
    final = float(losses[-1])
    measured = final / eps if np.isfinite(final) else np.inf
    actual_margin = float(dyn.deficiency_margin(W0, target))
    assumptions = bool(delta <= delta_bound and lr <= lr_bound * (1 + 1e-12)
                       and actual_margin >= margin - 1e-12)
    # the statement is an implication: it is verified only on an instance satisfying its hypotheses
    return Outcome(measured, 1.0, 0.0,
                   {"steps": chunk * n_records, "lr": lr, "lr_bound": lr_bound, "delta": delta,
                    "delta_bound": delta_bound, "actual_margin": actual_margin,
                    "assumptions_hold": assumptions,
                    "phi0": phi0, "eps": eps},
                   comparison=Comparison.AT_MOST_PREDICTED,
                   also="the theorem's hypotheses hold (δ, η and the margin within their bounds)",
                   also_holds=assumptions)


@check("failure_without_margin", "§2.11 necessity of the margin, E4b",
       "Target Φ = I, balanced init with det W(0) < 0 (no deficiency margin), N >= 2: GF never "
       "crosses det = 0, so inf_t φ(t) >= ½ σ_min(Φ)² = ½; measured min_t φ(t) >= ½ - tolerance")
def failure_without_margin(seed: int = 0, dims: tuple = (2, 2, 2, 2), det_sign: int = -1,
                           init_scale: float = 0.5, t1: float = 30.0, tolerance: float = 1e-9):
    dims = ref.check_dims(dims, 1)
    r = ref.rng(seed)
    A = init_scale * r.standard_normal((dims[-1], dims[0]))
    if np.sign(np.linalg.det(A)) != det_sign:
        A[0] = -A[0]
    loss = ref.square(np.eye(dims[0]))
    ts = np.linspace(0.0, t1, 61)
    traj, _, _ = ref.factor_flow(ref.balanced(A, dims), loss, ts)
    values = np.array([loss.value(ref.product(f)) for f in traj])
    measured = float(np.min(values))
    smin = _sigma_min(ref.product(traj[-1]))
    return Outcome(measured, 0.5, tolerance,
                   {"final_sigma_min": smin, "final_det": float(np.linalg.det(ref.product(traj[-1])))},
                   comparison=Comparison.AT_LEAST_PREDICTED_MINUS_TOLERANCE)


@check("convex_gf_rate", "Exercise 7",
       "Gradient flow on a convex f satisfies f(w(T)) - f* <= ‖w_0 - w*‖²/(2T) for all T: "
       "measured max_T [f(w(T)) - f* - ‖w_0-w*‖²/(2T)] <= tolerance (ℓ_4 regression, f* = 0)")
def convex_gf_rate(seed: int = 0, m: int = 4, d: int = 6, function: str = "l4_regression",
                   t1: float = 20.0, tolerance: float = 1e-10):
    r = ref.rng(seed)
    if function == "l4_regression":
        X = r.standard_normal((m, d))
        y = X @ r.standard_normal(d)
        w0 = np.zeros(d)
        w_star = np.linalg.lstsq(X, y, rcond=None)[0]  # a minimizer (f* = 0), closest to w0 = 0

        def f(w):
            return 0.25 * np.sum((X @ w - y) ** 4)

        def grad(w):
            return X.T @ (X @ w - y) ** 3
    elif function == "double_well":  # non-convex: Σ (w_i² - 1)², minimizers ±1
        w0 = np.full(d, 1e-2)
        w_star = np.ones(d)

        def f(w):
            return np.sum((w**2 - 1) ** 2)

        def grad(w):
            return 4 * w * (w**2 - 1)
    else:
        raise ValueError(f"function must be 'l4_regression' (convex) or 'double_well', got {function!r}")
    ts = np.linspace(0.0, t1, 201)[1:]
    sol = ref.solve(lambda w: -grad(w), w0, np.concatenate([[0.0], ts]))
    vals = np.array([f(sol.y[:, i + 1]) for i in range(len(ts))])
    bound = np.sum((w0 - w_star) ** 2) / (2 * ts)
    measured = float(np.max(vals - bound))
    return Outcome(measured, 0.0, tolerance,
                   {"final_value": float(vals[-1])})


@check("gf_limit_is_critical", "Exercise 9",
       "If a gradient-flow trajectory converges, its limit is a critical point: on a depth-N "
       "network with least-squares regression, once ‖θ(t1) - θ(t1/2)‖ is small, ‖∇φ(θ(t1))‖ <= tolerance")
def gf_limit_is_critical(seed: int = 0, dims: tuple = (3, 4, 1), t1: float = 200.0,
                         tolerance: float = 1e-5):
    dims = ref.check_dims(dims, 1)
    r = ref.rng(seed)
    X = r.standard_normal((8, dims[0]))
    y = X @ r.standard_normal(dims[0])

    def grad_ell(W):
        return (X.T @ (X @ W[0] - y) / len(y))[None, :]

    loss = ref.Loss(lambda W: float(np.mean((X @ W[0] - y) ** 2) / 2), grad_ell)
    fs = ref.balanced(0.5 * r.standard_normal((dims[-1], dims[0])), dims)
    traj, _, _ = ref.factor_flow(fs, loss, np.array([0.0, t1 / 2, t1]), rtol=1e-10, atol=1e-12)
    final = traj[-1]
    gnorm = float(np.sqrt(sum(np.sum(g**2) for g in ref.factor_grads(final, grad_ell(ref.product(final))))))
    movement = float(np.sqrt(sum(np.sum((a - b) ** 2) for a, b in zip(final, traj[1], strict=True))))
    return Outcome(gnorm, 0.0, tolerance,
                   {"late_movement": movement, "final_loss": loss.value(ref.product(traj[-1]))})
