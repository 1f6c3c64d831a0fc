"""End-to-end dynamics of linear neural networks (§2.6–§2.8, §2.11, §2.12).

Everything here acts on the end-to-end matrix ``W = W_{1:N}`` of shape ``(d_N, d_0)`` and on the
loss gradient ``G = ∇ℓ(W)``; ``depth`` (N) is a static Python int. Functions take one matrix and
compose with ``jax.jit`` / ``jax.vmap`` (vmap over leading axes).

The preconditioner of Theorem 1 is diagonal in the singular basis of W (§2.7): with the full SVD
``W = U diag(σ) Vᵀ`` (σ padded with zeros to ``d_N`` and ``d_0``),

    Σ_j [WWᵀ]^{(j-1)/N} G [WᵀW]^{(N-j)/N} = U (K ∘ (Uᵀ G V)) Vᵀ,
    K[r, r'] = Σ_j σ_r^{2(j-1)/N} σ_{r'}^{2(N-j)/N}     (0^0 = 1, §4 pitfall 1),

so the vector field, the discrete rule and the spectrum all come from ONE SVD.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

__all__ = [
    "fractional_power",
    "end_to_end_flow",
    "end_to_end_update",
    "apply_preconditioner",
    "preconditioner",
    "preconditioner_eigenvalues",
    "single_output_flow",
    "singular_value_flow",
    "singular_vector_flow",
    "track_signed_svd",
    "deficiency_margin",
]

# Public functions are jitted (``depth`` static): eager callers compile once per shape instead of
# once per primitive, and jit/vmap users are unaffected.
_jit_depth = partial(jax.jit, static_argnames=("depth",))


def _check_depth(depth: int) -> int:
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth must be a Python int >= 1 (static), got {depth!r}")
    return depth


def _check_matrix(name: str, A: jax.Array) -> jax.Array:
    A = jnp.asarray(A)
    if A.ndim != 2:
        raise ValueError(
            f"{name} must be a matrix (2-d array); got shape {A.shape}. Use jax.vmap for batches"
        )
    return A


def _power0(x: jax.Array, alpha: float | jax.Array) -> jax.Array:
    """``x^alpha`` for ``x >= 0`` with ``0^0 = 1`` and ``0^alpha = 0`` for alpha > 0 (grad-safe)."""
    alpha = jnp.asarray(alpha, dtype=x.dtype)
    positive = x > 0
    safe = jnp.where(positive, x, 1.0)
    return jnp.where(positive, safe**alpha, jnp.where(alpha == 0, 1.0, 0.0))


def _relative_floor(values: jax.Array, size: int) -> jax.Array:
    """Zero the values below ``size * eps * max`` (rounding noise of a rank-deficient matrix).

    Without this, a noise eigenvalue ``1e-17`` raised to a small power (e.g. ``1e-17^{1/5} ≈ 4e-4``)
    would inject a spurious direction (§4 pitfall 1)."""
    top = jnp.max(jnp.abs(values))
    return jnp.where(values > size * jnp.finfo(values.dtype).eps * top, values, 0.0)


def fractional_power(A: jax.Array, alpha: float | jax.Array) -> jax.Array:
    """``[A]^alpha = Q Λ^alpha Qᵀ`` for PSD ``A`` (§2.0), with ``[A]^0 = I`` on the null space.

    Computed by ``eigh`` of the symmetrized matrix; negative (and rounding-level) eigenvalues are
    clipped to 0 (§4 pitfall 1). ``alpha`` must be >= 0 (a subnormal ``alpha`` counts as 0: XLA
    flushes subnormal numbers to zero on CPU).
    """
    if isinstance(alpha, int | float) and alpha < 0:
        raise ValueError(f"alpha must be >= 0 (fractional power of a PSD matrix), got {alpha!r}")
    A = _check_matrix("A", A)
    if A.shape[0] != A.shape[1]:
        raise ValueError(f"A must be square (a PSD matrix), got shape {A.shape}")
    return _fractional_power(A, alpha)


@jax.jit
def _fractional_power(A: jax.Array, alpha: float | jax.Array) -> jax.Array:
    lam, Q = jnp.linalg.eigh(0.5 * (A + A.T))
    lam = _relative_floor(jnp.clip(lam, 0.0), A.shape[0])
    return (Q * _power0(lam, alpha)) @ Q.T


def _full_svd(W: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Full SVD with σ padded by zeros: ``(U (m,m), s_left (m,), s_right (n,), V (n,n))``."""
    m, n = W.shape
    U, s, Vt = jnp.linalg.svd(W, full_matrices=True)
    s = _relative_floor(s, max(m, n))
    k = min(m, n)
    s_left = jnp.zeros(m, W.dtype).at[:k].set(s)
    s_right = jnp.zeros(n, W.dtype).at[:k].set(s)
    return U, s_left, s_right, Vt.T


def _kernel(s_left: jax.Array, s_right: jax.Array, depth: int) -> jax.Array:
    """``K[r, r'] = Σ_{j=1}^N σ_r^{2(j-1)/N} σ_{r'}^{2(N-j)/N}`` with 0^0 = 1 (§2.7 spectrum)."""
    a, b = s_left**2, s_right**2
    K = jnp.zeros((a.shape[0], b.shape[0]), a.dtype)
    for j in range(1, depth + 1):
        K = K + jnp.outer(_power0(a, (j - 1) / depth), _power0(b, (depth - j) / depth))
    return K


@_jit_depth
def apply_preconditioner(W: jax.Array, G: jax.Array, depth: int) -> jax.Array:
    """``P_W(G) = Σ_{j=1}^N [WWᵀ]^{(j-1)/N} G [WᵀW]^{(N-j)/N}`` (Theorem 1, §2.7), from one SVD."""
    depth = _check_depth(depth)
    W, G = _check_matrix("W", W), _check_matrix("G", G)
    if G.shape != W.shape:
        raise ValueError(f"G must have the shape of W {W.shape}, got {G.shape}")
    if depth == 1:
        return G
    U, s_left, s_right, V = _full_svd(W)
    return U @ (_kernel(s_left, s_right, depth) * (U.T @ G @ V)) @ V.T


@_jit_depth
def end_to_end_flow(
    W: jax.Array, grad: jax.Array, depth: int, weight_decay: float | jax.Array = 0.0
) -> jax.Array:
    """``dW/dt = -Σ_j [WWᵀ]^{(j-1)/N} ∇ℓ(W) [WᵀW]^{(N-j)/N} - Nλ W`` (Theorem 1, with weight decay).

    Args:
        W: end-to-end matrix ``W_{1:N}`` ``(d_N, d_0)``; any shape and rank.
        grad: ``∇ℓ(W)`` (same shape).
        depth: N (static).
        weight_decay: λ, applied to every layer (ACH18 Thm 1).
    """
    return -apply_preconditioner(W, grad, depth) - depth * weight_decay * W


@_jit_depth
def end_to_end_update(
    W: jax.Array,
    grad: jax.Array,
    lr: float | jax.Array,
    depth: int,
    weight_decay: float | jax.Array = 0.0,
) -> jax.Array:
    """Discrete end-to-end rule (§2.6, ACH18 Eq. 10):
    ``W ← (1 - ηλN) W - η Σ_j [WWᵀ]^{(j-1)/N} ∇ℓ(W) [WᵀW]^{(N-j)/N}``."""
    return (1.0 - lr * weight_decay * depth) * W - lr * apply_preconditioner(W, grad, depth)


@_jit_depth
def preconditioner(W: jax.Array, depth: int) -> jax.Array:
    """Explicit ``P_W = Σ_j [WᵀW]^{(N-j)/N} ⊗ [WWᵀ]^{(j-1)/N}`` (§2.7), size ``d_N d_0``.

    Acts on column-major vec: ``vec(P_W(G)) = P_W @ G.ravel(order="F")``, since
    ``vec(AXB) = (Bᵀ⊗A) vec X``. Built from :func:`fractional_power`, independently of the SVD
    route of :func:`apply_preconditioner`.
    """
    depth = _check_depth(depth)
    W = _check_matrix("W", W)
    left, right = W @ W.T, W.T @ W
    return sum(
        jnp.kron(
            fractional_power(right, (depth - j) / depth), fractional_power(left, (j - 1) / depth)
        )
        for j in range(1, depth + 1)
    )


@_jit_depth
def preconditioner_eigenvalues(W: jax.Array, depth: int) -> jax.Array:
    """Eigenvalues of ``P_W`` in closed form (§2.7): a ``(d_N, d_0)`` grid ``K`` whose entry
    ``K[r, r'] = Σ_j σ_r^{2(j-1)/N} σ_{r'}^{2(N-j)/N}`` belongs to the eigenvector
    ``vec(u_r v_{r'}ᵀ)`` (σ padded with zeros, 0^0 = 1).
    ``K.min() >= σ_min(W)^{2(N-1)/N}`` (Corollary, §2.7)."""
    depth = _check_depth(depth)
    _, s_left, s_right, _ = _full_svd(_check_matrix("W", W))
    return _kernel(s_left, s_right, depth)


@_jit_depth
def single_output_flow(w: jax.Array, grad: jax.Array, depth: int) -> jax.Array:
    """Single-output end-to-end flow (§2.8, ACH18 Claim 2), ``d_N = 1``:
    ``ẇ = -‖w‖^{2-2/N} (∇ℓ + (N-1) ⟨w,∇ℓ⟩ w / ‖w‖²)``. ``w`` is ``(d_0,)`` or ``(1, d_0)``; the
    result has the shape of ``w``; at ``w = 0`` it is ``-∇ℓ`` for N = 1 and 0 for N >= 2."""
    depth = _check_depth(depth)
    w, grad = jnp.asarray(w), jnp.asarray(grad)
    if not (w.ndim == 1 or (w.ndim == 2 and w.shape[0] == 1)):
        raise ValueError(f"w must be a row vector (d_0,) or (1, d_0) (d_N = 1); got {w.shape}")
    if grad.shape != w.shape:
        raise ValueError(f"grad must have the shape of w {w.shape}, got {grad.shape}")
    return _single_output_formula(w, grad, depth)


def _single_output_formula(w: jax.Array, grad: jax.Array, depth: int) -> jax.Array:
    """The §2.8 formula with ``‖·‖ = ‖·‖_F`` on an array of any shape (used by the checks)."""
    sq = jnp.sum(w * w)
    safe = jnp.where(sq > 0, sq, 1.0)
    along = jnp.where(sq > 0, jnp.sum(w * grad) / safe, 0.0) * w
    return -_power0(sq, 1.0 - 1.0 / depth) * (grad + (depth - 1) * along)


@_jit_depth
def singular_value_flow(
    U: jax.Array, s: jax.Array, V: jax.Array, G: jax.Array, depth: int
) -> jax.Array:
    """Signed singular-value dynamics (§2.12, ACHL19 Thm 3):
    ``σ̇_r = -N (σ_r²)^{1-1/N} ⟨G, u_r v_rᵀ⟩``.

    Args: a (thin, signed) SVD ``W = U diag(s) Vᵀ`` with ``U (d_N, k)``, ``V (d_0, k)``, and
    ``G = ∇ℓ(W)``. Returns ``σ̇`` of shape ``(k,)``.
    """
    depth = _check_depth(depth)
    g = jnp.einsum("ir,ij,jr->r", U, G, V)
    return -depth * _power0(s**2, 1.0 - 1.0 / depth) * g


@_jit_depth
def singular_vector_flow(
    U: jax.Array, s: jax.Array, V: jax.Array, G: jax.Array, depth: int
) -> tuple[jax.Array, jax.Array]:
    """Singular-vector dynamics (§2.12) for distinct nonzero ``|σ_r|``; returns ``(U̇, V̇)``.

    ``u̇_r = -Σ_{r'≠r} (σ_r G̃_{r'r} + σ_{r'} G̃_{rr'}) / (σ_r^{2/N} - σ_{r'}^{2/N}) u_{r'}
    - σ_r (σ_r²)^{-1/N} (I - UUᵀ) G v_r``, ``G̃ = UᵀGV``, ``σ^{2/N} := (σ²)^{1/N}``; ``v̇_r``
    symmetrically with ``Gᵀ``. For σ_r > 0 the last factor is the notes' ``(σ_r²)^{1/2-1/N}``; for a
    negative signed σ_r it carries the sign of σ_r (derived from ``(I-UUᵀ)Ẇ v_r / σ_r``).
    """
    depth = _check_depth(depth)
    Gt = U.T @ G @ V
    p = (s**2) ** (1.0 / depth)
    diff = p[:, None] - p[None, :]  # [r, r'] = σ_r^{2/N} - σ_{r'}^{2/N}
    k = s.shape[0]
    off = ~jnp.eye(k, dtype=bool)
    denom = jnp.where(off, diff, 1.0)
    # coefficient of u_{r'} in u̇_r: column r of A, A[r', r]
    A = -(s[None, :] * Gt + s[:, None] * Gt.T) / denom.T
    B = -(s[None, :] * Gt.T + s[:, None] * Gt) / denom.T
    A, B = jnp.where(off, A, 0.0), jnp.where(off, B, 0.0)
    scale = s * (s**2) ** (-1.0 / depth)
    proj_u = jnp.eye(U.shape[0], dtype=U.dtype) - U @ U.T
    proj_v = jnp.eye(V.shape[0], dtype=V.dtype) - V @ V.T
    Udot = U @ A - (proj_u @ G @ V) * scale[None, :]
    Vdot = V @ B - (proj_v @ G.T @ U) * scale[None, :]
    return Udot, Vdot


def _match(prev_U: jax.Array, prev_V: jax.Array, U: jax.Array, V: jax.Array) -> jax.Array:
    """Greedy assignment of new singular pairs to previous ones by max overlap (§4 pitfall 6)."""
    k = U.shape[1]
    score = jnp.abs(prev_U.T @ U) + jnp.abs(prev_V.T @ V)  # [old r, new r']
    perm = jnp.zeros(k, dtype=jnp.int32)

    def body(_, carry):
        score, perm = carry
        flat = jnp.argmax(score)
        r, rp = flat // k, flat % k
        perm = perm.at[r].set(rp.astype(jnp.int32))
        score = score.at[r, :].set(-jnp.inf).at[:, rp].set(-jnp.inf)
        return score, perm

    _, perm = lax.fori_loop(0, k, body, (score, perm))
    return perm


@jax.jit
def track_signed_svd(Ws: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Follow the signed SVD ``W(t) = U(t) diag(σ(t)) V(t)ᵀ`` through time (§2.12, §4 pitfall 6).

    Numerical SVDs return sorted non-negative σ's with arbitrary signs; here each frame's singular
    pairs are permuted to best match the previous frame (max ``|⟨u,u'⟩| + |⟨v,v'⟩|``) and their
    signs fixed so ``⟨u_r(t), u_r(t-1)⟩ > 0`` and ``⟨v_r(t), v_r(t-1)⟩ > 0``; σ_r absorbs the sign.
    The first frame is the ordinary SVD. Frames must be close enough for the overlaps to decide.

    Args: ``Ws`` of shape ``(T, d_N, d_0)``.
    Returns: ``U (T, d_N, k)``, ``s (T, k)``, ``V (T, d_0, k)`` with ``k = min(d_N, d_0)``.
    """
    Ws = jnp.asarray(Ws)
    if Ws.ndim != 3:
        raise ValueError(f"Ws must be a sequence of matrices (T, d_N, d_0), got shape {Ws.shape}")
    U0, s0, Vt0 = jnp.linalg.svd(Ws[0], full_matrices=False)

    def step(carry, W):
        prev_U, prev_V = carry
        U, s, Vt = jnp.linalg.svd(W, full_matrices=False)
        V = Vt.T
        perm = _match(prev_U, prev_V, U, V)
        U, s, V = U[:, perm], s[perm], V[:, perm]
        su = jnp.where(jnp.sum(prev_U * U, axis=0) < 0, -1.0, 1.0)
        sv = jnp.where(jnp.sum(prev_V * V, axis=0) < 0, -1.0, 1.0)
        U, V, s = U * su, V * sv, s * su * sv
        return (U, V), (U, s, V)

    _, (U, s, V) = lax.scan(step, (U0, Vt0.T), Ws)
    return U, s, V


@jax.jit
def deficiency_margin(W: jax.Array, target: jax.Array) -> jax.Array:
    """Deficiency margin of ``W`` w.r.t. ``Φ`` for the whitened square loss (§2.11, ACGH19 Def 2):
    ``c = σ_min(Φ) - ‖W - Φ‖_F``; W has margin c > 0 iff this is positive."""
    W, target = _check_matrix("W", W), _check_matrix("target", target)
    if W.shape != target.shape:
        raise ValueError(f"W {W.shape} and target {target.shape} must have the same shape")
    return jnp.linalg.svd(target, compute_uv=False)[-1] - jnp.linalg.norm(W - target)
