"""Checks of §2.4–§2.9: balancedness, Theorem 1, the key lemma, the preconditioner, the
single-output form, the non-gradient-field statement, the discrete rule and Exercise 10."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from deeplinear import dynamics as dyn
from deeplinear.theory import _ref as ref
from deeplinear.theory._base import Comparison, Outcome, check

__all__ = [
    "balancedness_conserved",
    "balancedness_decay",
    "discrete_rule",
    "key_lemma",
    "not_a_gradient_field",
    "preconditioner_spectrum",
    "scalar_network",
    "single_output_depth2",
    "single_output_form",
    "theorem1",
]

_fractional_power = jax.jit(dyn.fractional_power)


@check("balancedness_conserved", "§2.4 Lemma 1",
       "Under gradient flow (no weight decay) every C_{j,j+1} = W_{j+1}ᵀW_{j+1} - W_jW_jᵀ is "
       "constant in time, from any (here unbalanced) init: max_{j,t} ‖C(t) - C(0)‖_F / ‖C(0)‖_F "
       "<= tolerance")
def balancedness_conserved(seed: int = 0, dims: tuple = (3, 4, 5, 2), init_scale: float = 0.7,
                           t1: float = 2.0, weight_decay: float = 0.0, tolerance: float = 1e-7):
    dims = ref.check_dims(dims, 2)
    r = ref.rng(seed)
    fs = ref.gaussian(r, dims, init_scale)
    loss = ref.quartic(r.standard_normal((dims[-1], dims[0])))
    traj, _, _ = ref.factor_flow(fs, loss, np.linspace(0.0, t1, 9), weight_decay=weight_decay)
    c0 = ref.balancedness(fs)
    scale = max(np.linalg.norm(c) for c in c0)
    drift = max(np.linalg.norm(c - c_0) for f in traj
                for c, c_0 in zip(ref.balancedness(f), c0, strict=True))
    measured = drift / scale
    return Outcome(measured, 0.0, tolerance,
                   {"C0_norm": scale, "loss_t0": loss.value(ref.product(fs)),
                    "loss_t1": loss.value(ref.product(traj[-1]))})


@check("balancedness_decay_weight_decay", "§2.4 weight decay, Exercise 12",
       "Under gradient flow with the same weight decay λ on every layer, C_{j,j+1}(t) = "
       "e^{-2λt} C_{j,j+1}(0): max_t ‖C(t) - e^{-2λt}C(0)‖_F / ‖C(0)‖_F <= tolerance")
def balancedness_decay(seed: int = 0, dims: tuple = (3, 4, 5, 2), init_scale: float = 0.7,
                       t1: float = 2.0, weight_decay: float = 0.4, uniform: bool = True,
                       tolerance: float = 1e-7):
    dims = ref.check_dims(dims, 2)
    depth = len(dims) - 1
    r = ref.rng(seed)
    fs = ref.gaussian(r, dims, init_scale)
    loss = ref.quartic(r.standard_normal((dims[-1], dims[0])))
    lam = [weight_decay] * depth if uniform else [weight_decay] + [0.0] * (depth - 1)
    ts = np.linspace(0.0, t1, 9)
    traj, _, _ = ref.factor_flow(fs, loss, ts, weight_decay=lam)
    c0 = ref.balancedness(fs)
    scale = max(np.linalg.norm(c) for c in c0)
    err = max(np.linalg.norm(c - np.exp(-2 * weight_decay * t) * c_0)
              for t, f in zip(ts, traj, strict=True)
              for c, c_0 in zip(ref.balancedness(f), c0, strict=True))
    final = max(np.linalg.norm(c) for c in ref.balancedness(traj[-1])) / scale
    return Outcome(err / scale, 0.0, tolerance,
                   {"relative_C_at_t1": final,
                    "exp_minus_2_lambda_t1": float(np.exp(-2 * weight_decay * t1))})


@check("theorem1_end_to_end", "§2.6 Theorem 1",
       "Gradient flow on the factors from a balanced init gives the same W_{1:N}(t) as the "
       "end-to-end flow dW/dt = -Σ_j [WWᵀ]^{(j-1)/N} ∇ℓ [WᵀW]^{(N-j)/N} - NλW (depths 1-4, "
       "rectangular and rank-deficient W, non-quadratic ℓ, weight decay λ): max relative gap "
       "<= tolerance (1e-6: near rank deficiency the end-to-end ODE amplifies integration error)")
def theorem1(seed: int = 0,
             cases: tuple = ((3, 2), (2, 4, 3), (3, 5, 5, 2), (4, 4, 6, 4, 1), (3, 3, 3)),
             rank_deficient_case: int = 4, balanced: bool = True, init_scale: float = 0.6,
             weight_decay: float = 0.1, t1: float = 1.5, tolerance: float = 1e-6):
    gaps = []
    ts = np.linspace(0.0, t1, 6)
    for i, dims in enumerate(cases):
        dims = ref.check_dims(dims, 1)
        r = ref.rng(seed, i)
        A = init_scale * r.standard_normal((dims[-1], dims[0]))
        if i == rank_deficient_case:  # rank one: exercises [A]^0 = I on the null space
            A = init_scale * np.outer(r.standard_normal(dims[-1]), r.standard_normal(dims[0]))
        fs = ref.init(r, A, dims, balanced, init_scale)
        loss = ref.quartic(r.standard_normal((dims[-1], dims[0])))
        traj, _, _ = ref.factor_flow(fs, loss, ts, weight_decay=weight_decay)
        Ws = ref.e2e_flow(ref.product(fs), loss, len(dims) - 1, ts, weight_decay=weight_decay)
        gaps.append(max(ref.rel(ref.product(f), W) for f, W in zip(traj, Ws, strict=True)))
    measured = max(gaps)
    return Outcome(measured, 0.0, tolerance, {"gap_per_case": gaps})


@check("key_lemma_partial_products", "§2.6 key lemma, Exercise 1",
       "For balanced factors (at init and along gradient flow): W_{j:N}W_{j:N}ᵀ = "
       "[WWᵀ]^{(N-j+1)/N} and W_{1:j}ᵀW_{1:j} = [WᵀW]^{j/N} for all j: max relative error <= tol")
def key_lemma(seed: int = 0, dims: tuple = (3, 5, 4, 6, 2), balanced: bool = True,
              init_scale: float = 0.8, t1: float = 1.0, tolerance: float = 1e-8):
    dims = ref.check_dims(dims, 2)
    depth = len(dims) - 1
    r = ref.rng(seed)
    fs = ref.init(r, init_scale * r.standard_normal((dims[-1], dims[0])), dims, balanced, init_scale)
    loss = ref.square(r.standard_normal((dims[-1], dims[0])))
    traj, _, _ = ref.factor_flow(fs, loss, np.array([0.0, t1]))
    errs = []
    for f in traj:
        W = ref.product(f)
        for j in range(1, depth + 1):
            top, bot = ref.partial(f, j, depth), ref.partial(f, 1, j)
            errs.append(ref.rel(top @ top.T, _fractional_power(W @ W.T, (depth - j + 1) / depth)))
            errs.append(ref.rel(bot.T @ bot, _fractional_power(W.T @ W, j / depth)))
    measured = max(errs)
    return Outcome(measured, 0.0, tolerance, {"n_identities": len(errs)})


@check("preconditioner_spectrum", "§2.7 Claim 1, Exercise 13",
       "P_W = Σ_j [WᵀW]^{(N-j)/N} ⊗ [WWᵀ]^{(j-1)/N} (column-major vec) satisfies vec(Ẇ) = "
       "-P_W vec(∇ℓ), is symmetric, has eigenvalues Σ_j σ_r^{2(j-1)/N} σ_{r'}^{2(N-j)/N} "
       "(0^0 = 1) and λ_min >= σ_min^{2(N-1)/N}: max error over full-rank and rank-deficient W "
       "<= tolerance")
def preconditioner_spectrum(seed: int = 0, shapes: tuple = ((3, 2), (2, 3)),
                            depth: int = 3, vec_order: str = "F", tolerance: float = 1e-10):
    if vec_order not in ("F", "C"):
        raise ValueError(f"vec_order must be 'F' (column-major, the notes) or 'C', got {vec_order!r}")
    P_of, op_of = ref.jitted("preconditioner", depth), ref.jitted("apply_preconditioner", depth)
    eig_of = ref.jitted("preconditioner_eigenvalues", depth)
    errs = {"operator": 0.0, "eigenvalues": 0.0, "symmetry": 0.0, "corollary": 0.0,
            "kronecker_reference": 0.0}
    for i, shape in enumerate(shapes):
        r = ref.rng(seed, i)
        for W in (r.standard_normal(shape),
                  np.outer(r.standard_normal(shape[0]), r.standard_normal(shape[1]))):
            G = r.standard_normal(shape)
            P = np.asarray(P_of(W))
            kron_ref = sum(np.kron(ref.frac_power_np(W.T @ W, (depth - j) / depth),
                              ref.frac_power_np(W @ W.T, (j - 1) / depth))
                      for j in range(1, depth + 1))
            errs["kronecker_reference"] = max(errs["kronecker_reference"], ref.rel(P, kron_ref))
            op = np.asarray(op_of(W, G))
            errs["operator"] = max(errs["operator"],
                                   ref.rel(P @ G.ravel(order=vec_order), op.ravel(order=vec_order)))
            errs["symmetry"] = max(errs["symmetry"], ref.rel(P, P.T))
            eig = np.sort(np.linalg.eigvalsh(0.5 * (P + P.T)))
            closed = np.sort(np.asarray(eig_of(W)).ravel())
            errs["eigenvalues"] = max(errs["eigenvalues"], ref.rel(eig, closed))
            smin = np.linalg.svd(W, compute_uv=False)[-1]
            bound = smin ** (2 * (depth - 1) / depth)
            errs["corollary"] = max(errs["corollary"], max(0.0, bound - eig[0] - 1e-12))
    measured = max(errs.values())
    return Outcome(measured, 0.0, tolerance, errs)


@check("single_output_form", "§2.8 Claim 2, Exercise 3",
       "For d_N = 1 the end-to-end flow equals ẇ = -‖w‖^{2-2/N}(∇ℓ + (N-1)⟨w,∇ℓ⟩w/‖w‖²): max "
       "relative gap over random (w, ∇ℓ) and depths <= tolerance")
def single_output_form(seed: int = 0, d0: int = 4, depths: tuple = (1, 2, 3, 5),
                       output_dim: int = 1, n_points: int = 4, tolerance: float = 1e-10):
    gaps = []
    r = ref.rng(seed)
    zero = jnp.zeros(())
    for depth in depths:
        flow = ref.jitted("end_to_end_flow", depth)
        for _ in range(n_points):
            w, G = r.standard_normal((output_dim, d0)), r.standard_normal((output_dim, d0))
            nw2 = np.sum(w * w)  # the §2.8 formula, in numpy (‖·‖ = Frobenius for output_dim > 1)
            formula = -nw2 ** (1 - 1 / depth) * (G + (depth - 1) * np.sum(w * G) / nw2 * w)
            gaps.append(ref.rel(formula, flow(w, G, zero)))
    measured = max(gaps)
    return Outcome(measured, 0.0, tolerance, {"n_cases": len(gaps)})


def _jacobian_asymmetry(W, G, depth, h):
    """``‖J - Jᵀ‖_F / ‖J‖_F`` for the central finite-difference Jacobian of ``W ↦ P_W(G)``."""
    shape = W.shape
    op = ref.jitted("apply_preconditioner", depth)
    steps = h * np.eye(W.size)
    cols = [(np.asarray(op(W + e.reshape(shape), G)) - np.asarray(op(W - e.reshape(shape), G)))
            .ravel() / (2 * h) for e in steps]
    J = np.stack(cols, axis=1)
    return float(np.linalg.norm(J - J.T) / np.linalg.norm(J))


@check("not_a_gradient_field", "§2.9 ACH18 Theorem 2",
       "For N >= 3 (and for matrix shapes) the end-to-end field F(W) = P_W(G) with constant "
       "G = ∇ℓ is not a gradient field: its Jacobian is not symmetric; min over shapes of the "
       "relative asymmetry ‖J - Jᵀ‖/‖J‖ > tolerance (finite-difference noise is ~1e-9)")
def not_a_gradient_field(seed: int = 0, shapes: tuple = ((1, 3), (2, 2), (3, 2)), depth: int = 3,
                         h: float = 1e-5, tolerance: float = 1e-4):
    asym = []
    for i, shape in enumerate(shapes):
        r = ref.rng(seed, i)
        asym.append(_jacobian_asymmetry(r.standard_normal(shape), r.standard_normal(shape),
                                        depth, h))
    measured = min(asym)
    return Outcome(measured, tolerance, tolerance, {"asymmetry": asym},
                   comparison=Comparison.ABOVE_TOLERANCE)


@check("single_output_depth2_is_gradient", "§2.9, Exercise 14",
       "For d_N = 1, N = 2 and linear ℓ (constant G) the field is conservative, F = ∇(‖w‖⟨G,w⟩), "
       "so its Jacobian is symmetric: max(asymmetry, ‖F - ∇g‖/‖F‖) <= tolerance")
def single_output_depth2(seed: int = 0, d0: int = 3, depth: int = 2, h: float = 1e-5,
                         tolerance: float = 1e-6):
    r = ref.rng(seed)
    w, G = r.standard_normal((1, d0)), r.standard_normal((1, d0))
    asym = _jacobian_asymmetry(w, G, depth, h)
    nw = np.linalg.norm(w)
    potential_grad = nw * G + np.sum(G * w) * w / nw  # ∇(‖w‖⟨G,w⟩)
    gap = ref.rel(ref.jitted("apply_preconditioner", depth)(w, G), potential_grad)
    measured = max(asym, gap)
    return Outcome(measured, 0.0, tolerance,
                   {"asymmetry": asym, "potential_gap": gap})


@check("discrete_rule_matches_gd", "§2.6 discrete rule, Exercise 6",
       "GD on the factors from a balanced init and the discrete end-to-end rule (ACH18 Eq. 10) "
       "stay O(η)-close: max entrywise gap of W_{1:N} over the run <= tolerance")
def discrete_rule(seed: int = 0, dims: tuple = (4, 4, 4, 3), balanced: bool = True,
                  init_scale: float = 0.3, lr: float = 1e-3, steps: int = 2000,
                  tolerance: float = 5e-3):
    dims = ref.check_dims(dims, 1)
    depth = len(dims) - 1
    r = ref.rng(seed)
    fs = ref.init(r, init_scale * r.standard_normal((dims[-1], dims[0])), dims, balanced, init_scale)
    loss = ref.square(r.standard_normal((dims[-1], dims[0])))
    update = ref.jitted("end_to_end_update", depth)
    W = ref.product(fs)
    gap = 0.0
    for _ in range(steps):
        gs = ref.factor_grads(fs, loss.grad(ref.product(fs)))
        fs = tuple(w - lr * g for w, g in zip(fs, gs, strict=True))
        W = np.asarray(update(W, loss.grad(W), lr))
        gap = max(gap, float(np.max(np.abs(ref.product(fs) - W))))
    return Outcome(gap, 0.0, tolerance,
                   {"final_loss_gd": loss.value(ref.product(fs)), "final_loss_e2e": loss.value(W)})


@check("scalar_network", "Exercise 10",
       "Depth-N width-1 network on ½(w-y)² from a balanced positive init: w = Π w_j follows "
       "ẇ = -N w^{2-2/N}(w-y) and L(t) <= L(0) exp(-2N c^{2-2/N} t) with c = min_t w(t): "
       "max(trajectory gap, bound violation) <= tolerance")
def scalar_network(depth: int = 3, y: float = 2.0, w0: float = 0.3, balanced: bool = True,
                   t1: float = 3.0, tolerance: float = 1e-8):
    root = w0 ** (1.0 / depth)
    ws = [root] * depth if balanced else [2 * root, root / 2] + [root] * (depth - 2)
    fs = tuple(np.full((1, 1), v) for v in ws)
    loss = ref.square(np.full((1, 1), y))
    ts = np.linspace(0.0, t1, 31)
    traj, _, _ = ref.factor_flow(fs, loss, ts)
    w_fac = np.array([ref.product(f)[0, 0] for f in traj])
    w_ode = ref.solve(lambda v: -depth * np.abs(v) ** (2 - 2 / depth) * (v - y),
                    np.array([w0]), ts).y[0]
    gap = float(np.max(np.abs(w_fac - w_ode)))
    c = float(np.min(w_fac))
    L = 0.5 * (w_fac - y) ** 2
    violation = float(np.max(L - L[0] * np.exp(-2 * depth * c ** (2 - 2 / depth) * ts)))
    measured = max(gap, violation)
    return Outcome(measured, 0.0, tolerance,
                   {"trajectory_gap": gap, "bound_violation": violation, "c": c})
