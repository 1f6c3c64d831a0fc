"""Checks of §2.15: CP component-norm dynamics, conservation of per-component balancedness, zero
components, the hierarchical (local component) analogue, and tensor rank = matrix rank at order 2.

Trajectories are gradient flows integrated by scipy's DOP853 at tight tolerances; the CP flow's
vector field is computed here in numpy (``_cp_grads``), the HT flow's by ``jax.grad`` of the
library's end-to-end tensor; the quantities under test come from ``deeplinear.tensor``.
"""

from __future__ import annotations

import string
from functools import cache

import jax
import jax.numpy as jnp
import numpy as np

from deeplinear.tensor import cp, ht, rank
from deeplinear.theory import _ref as ref
from deeplinear.theory._base import Outcome, check

__all__ = [
    "cp_balancedness_conserved",
    "cp_component_norm_dynamics",
    "cp_order2_rank",
    "cp_zero_component",
    "ht_local_component_dynamics",
]


def _cp_np(fs) -> np.ndarray:
    letters = string.ascii_lowercase[: len(fs)]
    return np.einsum(",".join(f"{c}z" for c in letters) + f"->{letters}", *fs)


def _cp_grads(fs, G) -> list[np.ndarray]:
    """``dphi/dF_n[i, r] = Σ G[..i..] Π_{n' != n} F_{n'}[i_{n'}, r]``, by moving mode n first."""
    out = []
    for n in range(len(fs)):
        Gn = np.moveaxis(G, n, 0).reshape(G.shape[n], -1)
        others = [f for j, f in enumerate(fs) if j != n]
        kr = others[0]
        for f in others[1:]:  # Khatri-Rao product, row-major over the remaining modes
            kr = (kr[:, None, :] * f[None, :, :]).reshape(-1, f.shape[1])
        out.append(Gn @ kr)
    return out


def _cp_flow(fs, loss, ts, *, weight_decay=0.0, dense=False):
    shapes = [f.shape for f in fs]
    sizes = np.cumsum([0] + [int(np.prod(s)) for s in shapes])

    def unflat(y):
        return [y[sizes[i]:sizes[i + 1]].reshape(s) for i, s in enumerate(shapes)]

    def rhs(y):
        f = unflat(y)
        gs = _cp_grads(f, loss.grad(_cp_np(f)))
        return np.concatenate([(-g - weight_decay * w).ravel() for g, w in zip(gs, f, strict=True)])

    y0 = np.concatenate([f.ravel() for f in fs])
    sol = ref.solve(rhs, y0, np.asarray(ts, dtype=float), dense=dense, rtol=1e-12, atol=1e-14)
    return [unflat(sol.y[:, i]) for i in range(sol.y.shape[1])], sol, unflat


def _cp_init(r, dims, components, scale, balanced):
    fs = [scale * r.standard_normal((d, components)) for d in dims]
    if balanced:
        norms = np.stack([np.linalg.norm(f, axis=0) for f in fs])
        g = np.exp(np.mean(np.log(norms), axis=0))
        fs = [f * (g / n) for f, n in zip(fs, norms, strict=True)]
    return fs


def _unit_inner(factors, G) -> np.ndarray:
    """``<G, ŵ_r^1 ⊗ ... ⊗ ŵ_r^N>`` for every r (library unit vectors)."""
    unit = [np.asarray(u) for u in cp.normalized_components(tuple(jnp.asarray(f) for f in factors))]
    letters = string.ascii_lowercase[: len(unit)]
    return np.einsum(f"{letters}," + ",".join(f"{c}z" for c in letters) + "->z", G, *unit)


@check("cp_component_norm_dynamics", "§2.15 Theorem (component norms)",
       "Along gradient flow on a CP factorization from a per-component balanced init, every "
       "component norm obeys dσ_r/dt = N σ_r^{2-2/N} <-∇ℓ(W), ŵ_r^1 ⊗ ... ⊗ ŵ_r^N>: "
       "max |central finite difference - formula| / max |formula| <= tolerance")
def cp_component_norm_dynamics(seed: int = 0, dims: tuple = (3, 4, 2), components: int = 3,
                               balanced: bool = True, init_scale: float = 0.8,
                               times: tuple = (0.1, 0.3, 0.6), h: float = 1e-4,
                               tolerance: float = 1e-5):
    dims = ref.check_dims(dims, 1)
    r = ref.rng(seed)
    fs = _cp_init(r, dims, components, init_scale, balanced)
    loss = ref.quartic(r.standard_normal(dims))
    times = np.asarray(times, dtype=float)
    _, sol, unflat = _cp_flow(fs, loss, [0.0, times.max() + 2 * h], dense=True)
    order = len(dims)
    fd, pred = [], []
    for t in times:
        sig = [np.asarray(cp.component_norms(tuple(jnp.asarray(f) for f in unflat(sol.sol(s)))))
               for s in (t - h, t + h)]
        f = unflat(sol.sol(t))
        sigma = np.asarray(cp.component_norms(tuple(jnp.asarray(x) for x in f)))
        fd.append((sig[1] - sig[0]) / (2 * h))
        pred.append(order * sigma ** (2 - 2 / order) * _unit_inner(f, -loss.grad(_cp_np(f))))
    fd, pred = np.array(fd), np.array(pred)
    measured = float(np.max(np.abs(fd - pred)) / np.max(np.abs(pred)))
    return Outcome(measured, 0.0, tolerance,
                   {"sigma_dot_formula": pred.tolist(), "sigma_dot_fd": fd.tolist()})


@check("cp_balancedness_conserved", "§2.15 (per-component balancedness)",
       "Under gradient flow on a CP factorization (no weight decay) ||w_r^n||² - ||w_r^{n'}||² is "
       "constant for every component r, from any init: max_t |D(t) - D(0)| / max |D(0)| <= "
       "tolerance")
def cp_balancedness_conserved(seed: int = 0, dims: tuple = (3, 4, 2), components: int = 3,
                              init_scale: float = 0.7, t1: float = 2.0, weight_decay: float = 0.0,
                              tolerance: float = 1e-7):
    dims = ref.check_dims(dims, 1)
    r = ref.rng(seed)
    fs = _cp_init(r, dims, components, init_scale, balanced=False)
    loss = ref.quartic(r.standard_normal(dims))
    traj, _, _ = _cp_flow(fs, loss, np.linspace(0.0, t1, 9), weight_decay=weight_decay)
    D = [np.asarray(cp.balancedness(tuple(jnp.asarray(f) for f in fac))) for fac in traj]
    scale = float(np.max(np.abs(D[0])))
    measured = max(float(np.max(np.abs(d - D[0]))) for d in D) / scale
    return Outcome(measured, 0.0, tolerance,
                   {"D0_max": scale, "loss_t0": loss.value(_cp_np(fs)),
                    "loss_t1": loss.value(_cp_np(traj[-1]))})


@check("cp_zero_component_stays_zero", "§2.15 (zero components)",
       "Under gradient flow on a CP factorization a component with at least two zero vectors "
       "(e.g. a zero component, σ_r = 0) stays zero: max_t σ_r(t) <= tolerance (one zero "
       "vector does not suffice)")
def cp_zero_component(seed: int = 0, dims: tuple = (3, 4, 2), components: int = 3,
                      zero_vectors: int = 3, init_scale: float = 0.7, t1: float = 2.0,
                      tolerance: float = 1e-12):
    dims = ref.check_dims(dims, 1)
    r = ref.rng(seed)
    fs = _cp_init(r, dims, components, init_scale, balanced=False)
    for n in range(min(int(zero_vectors), len(dims))):
        fs[n][:, 0] = 0.0
    loss = ref.quartic(r.standard_normal(dims))
    traj, _, _ = _cp_flow(fs, loss, np.linspace(0.0, t1, 9))
    sig = np.array([np.asarray(cp.component_norms(tuple(jnp.asarray(f) for f in fac)))
                    for fac in traj])
    measured = float(np.max(sig[:, 0]))
    return Outcome(measured, 0.0, tolerance,
                   {"sigma_0_at_t1": float(sig[-1, 0]), "other_sigmas_at_t1": sig[-1, 1:].tolist()})


@cache
def _ht_programs(param: ht.HTFactorization, target_shape: tuple):
    def loss(W, target):  # the quartic loss of theory._ref, in jax
        R = W - target
        return 0.5 * jnp.sum(R * R) + 0.05 * jnp.sum(R**4)

    def field(fs, target):
        return jax.grad(lambda f: loss(param.end_to_end(f), target))(fs)

    def local(fs, target, v):
        W = param.end_to_end(fs)
        G = jax.grad(loss)(W, target)
        return (ht.local_component_norms(param, fs, v),
                ht.local_tensor_gradient(param, fs, v, G),
                ht.local_component_vectors(param, fs, v))

    return jax.jit(field), jax.jit(local, static_argnums=2), jax.jit(ht.local_component_norms,
                                                                      static_argnums=(0, 2))


@check("ht_local_component_dynamics", "§2.15 Hierarchical TF (RMC22)",
       "Along gradient flow on a hierarchical tensor factorization, a node's balanced local "
       "components obey dσ/dt = K σ^{2-2/K} <-dℓ/dL_ν, unit local component>, with K = 3 the "
       "order of the local tensor L_ν: max |finite difference - formula| / max |formula| <= tol")
def ht_local_component_dynamics(seed: int = 0, dims: tuple = (2, 3, 2, 2), ranks: int = 3,
                                node: int = 0, balanced: bool = True, local_order: int = 3,
                                init_scale: float = 0.8, times: tuple = (0.1, 0.3, 0.6),
                                h: float = 1e-4, tolerance: float = 1e-5):
    dims = ref.check_dims(dims, 1)
    param = ht.HTFactorization(dims, ranks=int(ranks))
    v = param.internal_nodes()[int(node)]
    r = ref.rng(seed)
    shapes = param.factor_shapes()
    fs = tuple(jnp.asarray(init_scale * r.standard_normal(s)) for s in shapes)
    if balanced:
        fs = ht.balance_node(param, fs, v)
    target = jnp.asarray(r.standard_normal(dims))
    field, local, norms = _ht_programs(param, dims)
    sizes = np.cumsum([0] + [a * b for a, b in shapes])

    def unflat(y):
        return tuple(jnp.asarray(y[sizes[i]:sizes[i + 1]].reshape(s)) for i, s in enumerate(shapes))

    def rhs(y):
        return -np.concatenate([np.asarray(g).ravel() for g in field(unflat(y), target)])

    times = np.asarray(times, dtype=float)
    y0 = np.concatenate([np.asarray(f).ravel() for f in fs])
    sol = ref.solve(rhs, y0, np.array([0.0, times.max() + 2 * h]), dense=True, rtol=1e-12,
                    atol=1e-14)
    K = int(local_order)
    fd, pred = [], []
    for t in times:
        lo, hi = (np.asarray(norms(param, unflat(sol.sol(s)), v)) for s in (t - h, t + h))
        sigma, Gv, vecs = local(unflat(sol.sol(t)), target, v)
        unit = [np.asarray(M) / np.linalg.norm(np.asarray(M), axis=0) for M in vecs]
        inner = np.einsum("pqs,pr,qr,sr->r", -np.asarray(Gv), *unit)
        fd.append((hi - lo) / (2 * h))
        pred.append(K * np.asarray(sigma) ** (2 - 2 / K) * inner)
    fd, pred = np.array(fd), np.array(pred)
    measured = float(np.max(np.abs(fd - pred)) / np.max(np.abs(pred)))
    return Outcome(measured, 0.0, tolerance,
                   {"node": str(v), "local_order_of_tree": ht.LOCAL_ORDER,
                    "sigma_dot_formula": pred.tolist(), "sigma_dot_fd": fd.tolist()})


@check("cp_order2_rank_equals_matrix_rank", "§2.15 (tensor rank, N = 2)",
       "For an order-2 CP factorization the tensor rank (smallest r whose CP-ALS fit reaches "
       "MSE < 1e-6) equals the matrix rank (here below the number of components): "
       "|estimated tensor rank - rank of the mode-1 unfolding| <= tolerance")
def cp_order2_rank(seed: int = 0, dims: tuple = (6, 5), components: int = 5, inner_rank: int = 3,
                   tolerance: float = 0.0):
    dims = ref.check_dims(dims, 1)
    r = ref.rng(seed)
    fs = [r.standard_normal((d, components)) for d in dims]
    fs[0] = r.standard_normal((dims[0], inner_rank)) @ r.standard_normal((inner_rank, components))
    W = _cp_np(fs)
    W = W / np.sqrt(np.mean(W**2))  # entries of unit mean square: the 1e-6 MSE is relative
    unfolding = np.linalg.matrix_rank(W.reshape(dims[0], -1))
    est = rank.cp_rank(W, restarts=2, n_iter_max=1000, seed=seed)
    measured = float("inf") if est.rank is None else float(abs(est.rank - unfolding))
    return Outcome(measured, float(unfolding), tolerance,
                   {"estimated_tensor_rank": est.rank, "unfolding_rank": int(unfolding),
                    "als_mse": {str(k): v for k, v in est.mse.items()}})
