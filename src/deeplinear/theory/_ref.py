"""Independent numpy reference computations for the checks.

The checks compare the library's JAX dynamics (``deeplinear.dynamics``) with computations done
here in plain numpy (factor products and gradients, Procedure 1, simple losses) and integrated
with scipy's DOP853 at tight tolerances. Numpy also keeps the checks free of per-shape JIT
compilation, so ``run_checks()`` stays fast; the JAX functions under test are jitted once
(see :data:`jitted`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache

import jax
import jax.numpy as jnp
import numpy as np
from scipy.integrate import solve_ivp

from deeplinear import dynamics as dyn

Factors = tuple[np.ndarray, ...]


def rng(seed: int, stream: int = 0) -> np.random.Generator:
    """Independent reproducible streams: ``default_rng([seed, stream])``."""
    return np.random.default_rng([int(seed), int(stream)])


def check_dims(dims: Sequence[int], min_depth: int = 1) -> tuple[int, ...]:
    dims = tuple(int(d) for d in dims)
    if len(dims) < min_depth + 1 or min(dims) < 1:
        raise ValueError(f"dims {dims} must be (d_0, ..., d_N) with positive widths and depth "
                         f">= {min_depth}")
    return dims


# --------------------------------------------------------------------------- networks


def product(fs: Factors) -> np.ndarray:
    """``W_{1:N} = W_N ... W_1``."""
    W = fs[0]
    for w in fs[1:]:
        W = w @ W
    return W


def partial(fs: Factors, j: int, k: int) -> np.ndarray:
    """``W_{j:k}`` (1-indexed, identity if j > k)."""
    if j > k:
        n = fs[j - 1].shape[1] if j <= len(fs) else fs[-1].shape[0]
        return np.eye(n)
    return product(fs[j - 1 : k])


def factor_grads(fs: Factors, G: np.ndarray) -> Factors:
    """``∂φ/∂W_j = W_{j+1:N}ᵀ G W_{1:j-1}ᵀ`` (§2.1)."""
    n = len(fs)
    return tuple(partial(fs, j + 1, n).T @ G @ partial(fs, 1, j - 1).T for j in range(1, n + 1))


def balancedness(fs: Factors) -> list[np.ndarray]:
    """``C_{j,j+1} = W_{j+1}ᵀW_{j+1} - W_jW_jᵀ`` (§2.4)."""
    return [fs[j + 1].T @ fs[j + 1] - fs[j] @ fs[j].T for j in range(len(fs) - 1)]


def balanced(A: np.ndarray, dims: Sequence[int]) -> Factors:
    """Procedure 1 (§2.5): balanced factors with product ``A`` (zero-padded)."""
    dims = check_dims(dims)
    n = len(dims) - 1
    if n == 1:
        return (np.array(A, dtype=float),)
    U, s, Vt = np.linalg.svd(A, full_matrices=False)
    root = np.diag(s ** (1.0 / n))

    def pad(M, shape):
        out = np.zeros(shape)
        out[: M.shape[0], : M.shape[1]] = M
        return out

    layers = [pad(root @ Vt, (dims[1], dims[0]))]
    layers += [pad(root, (dims[j + 1], dims[j])) for j in range(1, n - 1)]
    layers.append(pad(U @ root, (dims[n], dims[n - 1])))
    return tuple(layers)


def gaussian(r: np.random.Generator, dims: Sequence[int], scale: float) -> Factors:
    """Independent layers with i.i.d. ``N(0, scale²)`` entries (only approximately balanced)."""
    return tuple(scale * r.standard_normal((dims[j + 1], dims[j])) for j in range(len(dims) - 1))


def init(r: np.random.Generator, A: np.ndarray, dims: Sequence[int], balanced_init: bool,
         scale: float) -> Factors:
    """Balanced factors of ``A`` or, when ``balanced_init`` is False, Gaussian layers rescaled so
    their product has the norm of ``A`` (same size of W, but unbalanced)."""
    if balanced_init:
        return balanced(A, dims)
    fs = gaussian(r, dims, scale)
    c = (np.linalg.norm(A) / np.linalg.norm(product(fs))) ** (1.0 / len(fs))
    return tuple(c * w for w in fs)


# --------------------------------------------------------------------------- losses


@dataclass(frozen=True)
class Loss:
    """A loss ``ℓ(W)`` with its gradient and its minimum value (numpy)."""

    value: Callable[[np.ndarray], float]
    grad: Callable[[np.ndarray], np.ndarray]
    minimum: float = 0.0


def square(target: np.ndarray) -> Loss:
    """Whitened square loss ``½‖W - Φ‖_F²`` (§2.11, α = 1)."""
    return Loss(lambda W: 0.5 * float(np.sum((W - target) ** 2)), lambda W: W - target)


def quartic(target: np.ndarray) -> Loss:
    """``½‖W-Φ‖² + 0.05 Σ (W-Φ)⁴``: a C¹ non-quadratic loss (Theorem 1 needs only C¹)."""
    return Loss(lambda W: 0.5 * float(np.sum((W - target) ** 2)) + 0.05 * float(np.sum((W - target) ** 4)),
                lambda W: (W - target) + 0.2 * (W - target) ** 3)


def completion(mask: np.ndarray, values: np.ndarray) -> Loss:
    """``½ Σ_Ω (W_ij - b_ij)²`` (§2.13)."""
    return Loss(lambda W: 0.5 * float(np.sum(mask * (W - values) ** 2)),
                lambda W: mask * (W - values))


# --------------------------------------------------------------------------- integrators


def solve(rhs: Callable[[np.ndarray], np.ndarray], y0: np.ndarray, ts: np.ndarray, *,
          rtol: float = 1e-11, atol: float = 1e-13, dense: bool = False, events=None,
          method: str = "DOP853"):
    """Integrate ``y' = rhs(y)`` over ``[0, ts[-1]]`` (DOP853; LSODA for stiff long runs),
    returning the scipy solution."""
    sol = solve_ivp(lambda t, y: rhs(y), (0.0, float(ts[-1])), np.asarray(y0, dtype=float),
                    method=method, t_eval=ts, rtol=rtol, atol=atol, dense_output=dense,
                    events=events)
    if sol.status == -1:
        raise RuntimeError(f"reference ODE solve failed: {sol.message}")
    return sol


def _flat(fs):
    return np.concatenate([w.ravel() for w in fs]), [w.shape for w in fs]


def _unflat(y, shapes) -> Factors:
    out, i = [], 0
    for s in shapes:
        n = s[0] * s[1]
        out.append(y[i : i + n].reshape(s))
        i += n
    return tuple(out)


def factor_flow(fs: Factors, loss: Loss, ts, *, weight_decay=0.0, rtol: float = 1e-11,
                atol: float = 1e-13, dense: bool = False, events=None, method: str = "DOP853"):
    """Gradient flow on the factors ``Ẇ_j = -∂φ/∂W_j - λ_j W_j`` (§2.4). Returns
    ``(factor tuples at ts, scipy solution, unflatten)``."""
    y0, shapes = _flat(fs)
    lam = np.broadcast_to(np.asarray(weight_decay, dtype=float), (len(fs),))

    def rhs(y):
        f = _unflat(y, shapes)
        gs = factor_grads(f, loss.grad(product(f)))
        return np.concatenate([(-g - lj * w).ravel() for g, w, lj in zip(gs, f, lam, strict=True)])

    sol = solve(rhs, y0, np.asarray(ts, dtype=float), rtol=rtol, atol=atol, dense=dense,
                events=events, method=method)
    traj = [_unflat(sol.y[:, i], shapes) for i in range(sol.y.shape[1])]
    return traj, sol, (lambda y: _unflat(y, shapes))


def e2e_flow(W0: np.ndarray, loss: Loss, depth: int, ts, *, weight_decay: float = 0.0,
             rtol: float = 1e-11, atol: float = 1e-13) -> np.ndarray:
    """The library's end-to-end flow (Theorem 1, jitted once per shape) integrated by DOP853;
    returns ``(len(ts), d_N, d_0)``."""
    shape = np.shape(W0)
    flow = jitted("end_to_end_flow", depth)
    lam = jnp.asarray(weight_decay, dtype=jnp.float64)

    def rhs(y):
        W = y.reshape(shape)
        return np.asarray(flow(W, loss.grad(W), lam)).ravel()

    sol = solve(rhs, np.ravel(W0), np.asarray(ts, dtype=float), rtol=rtol, atol=atol)
    return sol.y.T.reshape((-1,) + shape)


@cache
def jitted(name: str, depth: int) -> Callable:
    """``jax.jit`` of ``deeplinear.dynamics.<name>`` with ``depth`` bound (compiled once per shape)."""
    fn = getattr(dyn, name)
    if name in ("end_to_end_flow",):
        return jax.jit(lambda W, G, lam: fn(W, G, depth, lam))
    if name == "end_to_end_update":
        return jax.jit(lambda W, G, lr: fn(W, G, lr, depth))
    return jax.jit(lambda *args: fn(*args, depth))


def rel(a, b) -> float:
    """``‖a - b‖_F / max(1, ‖b‖_F)``."""
    a, b = np.asarray(a), np.asarray(b)
    return float(np.linalg.norm(a - b) / max(1.0, np.linalg.norm(b)))


def frac_power_np(A: np.ndarray, alpha: float) -> np.ndarray:
    """Reference ``[A]^alpha`` by numpy ``eigh`` (0^0 = 1; rounding-level eigenvalues -> 0)."""
    lam, Q = np.linalg.eigh(0.5 * (A + A.T))
    lam = np.where(lam > A.shape[0] * np.finfo(float).eps * max(lam.max(), 0.0), lam, 0.0)
    p = np.where(lam > 0, np.abs(lam) ** alpha, 1.0 if alpha == 0 else 0.0)
    return (Q * p) @ Q.T
