"""Unit tests of deeplinear.dynamics against closed forms and independent computations."""

from __future__ import annotations

import jax
import numpy as np
import pytest
import scipy.linalg
from hypothesis import given, settings
from hypothesis import strategies as st

from deeplinear import dynamics as dyn
from deeplinear.theory import _ref as ref  # independent numpy products, gradients, Procedure 1


def _rng(seed=0):
    return np.random.default_rng(seed)


def _rank1(r, m, n):
    return np.outer(r.standard_normal(m), r.standard_normal(n))


# ------------------------------------------------------------------ fractional powers


@pytest.mark.parametrize("alpha", [0.0, 1 / 3, 0.5, 1.0, 1.7])
def test_fractional_power_matches_scipy(alpha):
    B = _rng().standard_normal((4, 4))
    A = B @ B.T + 0.1 * np.eye(4)
    expected = np.real(scipy.linalg.fractional_matrix_power(A, alpha))
    np.testing.assert_allclose(dyn.fractional_power(A, alpha), expected, atol=1e-12)


def test_fractional_power_zero_is_identity_on_null_space():
    """§4 pitfall 1: [A]^0 = I, not the projection onto range(A)."""
    v = _rng().standard_normal((3, 1))
    A = v @ v.T  # rank 1
    np.testing.assert_allclose(dyn.fractional_power(A, 0.0), np.eye(3), atol=1e-15)
    half = np.asarray(dyn.fractional_power(A, 0.5))
    np.testing.assert_allclose(half @ half, A, atol=1e-12)
    # no spurious directions from rounding-level eigenvalues: rank stays 1
    assert np.linalg.matrix_rank(np.asarray(dyn.fractional_power(A, 0.2)), tol=1e-10) == 1


def test_fractional_power_bad_input():
    with pytest.raises(ValueError, match="alpha"):
        dyn.fractional_power(np.eye(2), -0.5)
    with pytest.raises(ValueError, match="square"):
        dyn.fractional_power(np.ones((2, 3)), 0.5)


# ------------------------------------------------------------------ preconditioner (§2.7)

CASES = [((3, 2), 3, False), ((2, 4), 2, False), ((3, 3), 4, True), ((1, 3), 3, False),
         ((3, 1), 2, True), ((2, 2), 1, False)]


@pytest.mark.parametrize("shape,depth,deficient", CASES)
def test_preconditioner_matrix_operator_and_spectrum_agree(shape, depth, deficient):
    r = _rng(1)
    W = _rank1(r, *shape) if deficient else r.standard_normal(shape)
    G = r.standard_normal(shape)
    P = np.asarray(dyn.preconditioner(W, depth))
    assert P.shape == (shape[0] * shape[1],) * 2
    np.testing.assert_allclose(P, P.T, atol=1e-13)
    op = np.asarray(dyn.apply_preconditioner(W, G, depth))
    np.testing.assert_allclose(P @ G.ravel(order="F"), op.ravel(order="F"), atol=1e-12)
    eig = np.sort(np.linalg.eigvalsh(P))
    K = np.asarray(dyn.preconditioner_eigenvalues(W, depth))
    assert K.shape == shape
    np.testing.assert_allclose(np.sort(K.ravel()), eig, atol=1e-12)
    # closed form (σ_r² - σ_r'²)/(σ_r^{2/N} - σ_r'^{2/N}) for distinct σ's (§2.7)
    s = np.linalg.svd(W, compute_uv=False)
    if depth > 1 and len(s) > 1 and not deficient:
        a, b = s[0], s[1]
        closed = (a**2 - b**2) / (a ** (2 / depth) - b ** (2 / depth))
        assert np.min(np.abs(K - closed)) < 1e-12


def test_preconditioner_depth1_is_identity():
    W = _rng().standard_normal((2, 3))
    np.testing.assert_allclose(dyn.preconditioner(W, 1), np.eye(6), atol=1e-14)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), depth=st.sampled_from([2, 3]),
       shape=st.sampled_from([(2, 3), (3, 2)]), scale=st.floats(0.1, 3.0))
def test_preconditioner_is_psd_with_lambda_min_bound(seed, depth, shape, scale):
    """⟨G, P_W G⟩ >= σ_min(W)^{2(N-1)/N} ‖G‖² and P_W is linear in G (§2.7 Corollary)."""
    r = _rng(seed)
    W = scale * r.standard_normal(shape)
    G, H = r.standard_normal(shape), r.standard_normal(shape)
    op = _op(depth)
    PG = np.asarray(op(W, G))
    smin = np.linalg.svd(W, compute_uv=False)[-1]
    assert np.sum(G * PG) >= smin ** (2 * (depth - 1) / depth) * np.sum(G * G) * (1 - 1e-10)
    np.testing.assert_allclose(op(W, 2 * G - H), 2 * PG - np.asarray(op(W, H)), atol=1e-10)
    # symmetric operator: <H, P G> = <P H, G>
    assert abs(np.sum(H * PG) - np.sum(np.asarray(op(W, H)) * G)) < 1e-9 * (1 + scale**2)


_OPS = {}


def _op(depth):
    if depth not in _OPS:
        _OPS[depth] = jax.jit(lambda W, G: dyn.apply_preconditioner(W, G, depth))
    return _OPS[depth]


# ------------------------------------------------------------------ Theorem 1


@pytest.mark.parametrize("dims,deficient", [((3, 4, 2), False), ((2, 5, 5, 3), False),
                                            ((3, 3, 3, 3), True), ((4, 4, 1), False)])
def test_end_to_end_flow_is_derivative_of_factor_flow(dims, deficient):
    """Theorem 1 at a point: central finite difference of W_{1:N} along the factor flow."""
    r = _rng(2)
    A = _rank1(r, dims[-1], dims[0]) if deficient else r.standard_normal((dims[-1], dims[0]))
    fs = ref.balanced(A, dims)
    G = r.standard_normal(A.shape)
    lam = 0.3
    vel = tuple(-g - lam * w for g, w in zip(ref.factor_grads(fs, G), fs, strict=True))
    h = 1e-5
    plus = ref.product(tuple(w + h * v for w, v in zip(fs, vel, strict=True)))
    minus = ref.product(tuple(w - h * v for w, v in zip(fs, vel, strict=True)))
    fd = (plus - minus) / (2 * h)
    flow = dyn.end_to_end_flow(ref.product(fs), G, len(dims) - 1, weight_decay=lam)
    np.testing.assert_allclose(flow, fd, atol=1e-8)


def test_key_lemma_on_balanced_init():
    dims = (3, 5, 4, 2)
    fs = ref.balanced(_rng(3).standard_normal((2, 3)), dims)
    W = ref.product(fs)
    for j in range(1, 4):
        top = ref.partial(fs, j, 3)
        np.testing.assert_allclose(top @ top.T, dyn.fractional_power(W @ W.T, (4 - j) / 3),
                                   atol=1e-12)


def test_flow_depth1_weight_decay_and_update_rule():
    r = _rng(4)
    W, G = r.standard_normal((2, 3)), r.standard_normal((2, 3))
    np.testing.assert_allclose(dyn.end_to_end_flow(W, G, 1, 0.2), -G - 0.2 * W, atol=1e-15)
    np.testing.assert_allclose(dyn.end_to_end_flow(W, 0 * G, 3, 0.2), -3 * 0.2 * W, atol=1e-15)
    upd = dyn.end_to_end_update(W, G, 0.01, 3, 0.2)
    np.testing.assert_allclose(upd, W + 0.01 * dyn.end_to_end_flow(W, G, 3, 0.2), atol=1e-14)


def test_origin_is_fixed_point_for_depth_at_least_2():
    G = _rng().standard_normal((2, 2))
    assert np.all(dyn.end_to_end_flow(np.zeros((2, 2)), G, 2) == 0)
    np.testing.assert_allclose(dyn.end_to_end_flow(np.zeros((2, 2)), G, 1), -G)


def test_jit_and_vmap():
    r = _rng(5)
    Ws, Gs = r.standard_normal((4, 3, 2)), r.standard_normal((4, 3, 2))
    batched = jax.jit(jax.vmap(lambda W, G: dyn.end_to_end_flow(W, G, 3)))(Ws, Gs)
    for i in range(4):
        np.testing.assert_allclose(batched[i], dyn.end_to_end_flow(Ws[i], Gs[i], 3), atol=1e-13)


def test_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match="depth"):
        dyn.end_to_end_flow(np.eye(2), np.eye(2), 0)
    with pytest.raises(ValueError, match="depth"):
        dyn.end_to_end_flow(np.eye(2), np.eye(2), 2.0)
    with pytest.raises(ValueError, match="G must have the shape"):
        dyn.apply_preconditioner(np.eye(2), np.ones((2, 3)), 2)
    with pytest.raises(ValueError, match="W must be a matrix"):
        dyn.apply_preconditioner(np.ones((2, 2, 2)), np.ones((2, 2, 2)), 2)
    with pytest.raises(ValueError, match="row vector"):
        dyn.single_output_flow(np.ones((2, 3)), np.ones((2, 3)), 2)


# ------------------------------------------------------------------ single output (§2.8)


@pytest.mark.parametrize("depth", [1, 2, 3, 6])
def test_single_output_flow_matches_matrix_flow(depth):
    r = _rng(depth)
    w, g = r.standard_normal(4), r.standard_normal(4)
    out = dyn.single_output_flow(w, g, depth)
    assert out.shape == (4,)
    np.testing.assert_allclose(out, dyn.end_to_end_flow(w[None], g[None], depth)[0], atol=1e-13)
    np.testing.assert_allclose(dyn.single_output_flow(w[None], g[None], depth)[0], out)


def test_single_output_flow_at_zero():
    g = np.ones(3)
    np.testing.assert_allclose(dyn.single_output_flow(np.zeros(3), g, 1), -g)
    assert np.all(dyn.single_output_flow(np.zeros(3), g, 3) == 0)


# ------------------------------------------------------------------ singular values / vectors


def _perturbation_rates(U, s, V, Wdot):
    """First-order SVD perturbation theory (independent of §2.12's closed forms)."""
    M = U.T @ Wdot @ V
    k = len(s)
    sdot = np.diag(M).copy()
    Udot = np.zeros_like(U)
    Vdot = np.zeros_like(V)
    for r in range(k):
        for q in range(k):
            if q != r:
                den = s[r] ** 2 - s[q] ** 2
                Udot[:, r] += (s[r] * M[q, r] + s[q] * M[r, q]) / den * U[:, q]
                Vdot[:, r] += (s[q] * M[q, r] + s[r] * M[r, q]) / den * V[:, q]
        Udot[:, r] += (np.eye(U.shape[0]) - U @ U.T) @ Wdot @ V[:, r] / s[r]
        Vdot[:, r] += (np.eye(V.shape[0]) - V @ V.T) @ Wdot.T @ U[:, r] / s[r]
    return sdot, Udot, Vdot


@pytest.mark.parametrize("shape,depth,flip", [((5, 3), 3, False), ((3, 4), 2, False),
                                              ((4, 2), 4, True), ((3, 3), 1, True)])
def test_singular_flows_match_perturbation_theory(shape, depth, flip):
    r = _rng(6)
    W, G = r.standard_normal(shape), r.standard_normal(shape)
    U, s, Vt = np.linalg.svd(W, full_matrices=False)
    V = Vt.T
    if flip:  # a negative signed singular value (§2.12: signed SVD)
        s = s.copy()
        s[0], U = -s[0], U.copy()
        U[:, 0] = -U[:, 0]
    Wdot = np.asarray(dyn.end_to_end_flow(W, G, depth))
    sdot, Udot, Vdot = _perturbation_rates(U, s, V, Wdot)
    np.testing.assert_allclose(dyn.singular_value_flow(U, s, V, G, depth), sdot, atol=1e-11)
    got_U, got_V = dyn.singular_vector_flow(U, s, V, G, depth)
    np.testing.assert_allclose(got_U, Udot, atol=1e-10)
    np.testing.assert_allclose(got_V, Vdot, atol=1e-10)


def test_track_signed_svd_follows_crossings_and_sign_changes():
    """σ_1(t) = 2 - 3t passes |σ_2| = 1 (order swap) and 0 (sign change); σ_2 = 1."""
    r = _rng(7)
    U0, _ = np.linalg.qr(r.standard_normal((4, 2)))
    V0, _ = np.linalg.qr(r.standard_normal((2, 2)))
    ts = np.linspace(0.0, 0.99, 67)  # avoids the exact degeneracies t = 1/3, 2/3, 1
    truth = np.stack([2 - 3 * ts, np.ones_like(ts)], axis=1)
    Ws = np.stack([U0 @ np.diag(s) @ V0.T for s in truth])
    U, s, V = dyn.track_signed_svd(Ws)
    U, s, V = np.asarray(U), np.asarray(s), np.asarray(V)
    np.testing.assert_allclose(s, truth * np.sign(s[0]), atol=1e-12)  # first frame: σ >= 0
    np.testing.assert_allclose(np.einsum("tir,tr,tjr->tij", U, s, V), Ws, atol=1e-12)
    assert np.all(np.einsum("tir,tir->tr", U[1:], U[:-1]) > 0)  # continuous vectors


def test_deficiency_margin():
    Phi = np.diag([2.0, 1.0])
    assert float(dyn.deficiency_margin(Phi, Phi)) == pytest.approx(1.0)
    W = Phi + np.array([[0.0, 0.3], [0.4, 0.0]])
    assert float(dyn.deficiency_margin(W, Phi)) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="same shape"):
        dyn.deficiency_margin(np.eye(3), Phi)


_FP = jax.jit(dyn.fractional_power)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), a=st.floats(0.0, 2.0, allow_subnormal=False),
       b=st.floats(0.0, 2.0, allow_subnormal=False), rank=st.integers(1, 3))
def test_fractional_power_semigroup_and_psd(seed, a, b, rank):
    """[A]^a [A]^b = [A]^{a+b} and [A]^a is PSD, also for singular A (null space: 0^0 = 1).

    Subnormal exponents are excluded: XLA on CPU flushes them to 0, so [A]^{1e-308} is [A]^0."""
    B = _rng(seed).standard_normal((3, rank))
    A = B @ B.T
    Pa, Pb, Pab = (np.asarray(_FP(A, x)) for x in (a, b, a + b))
    scale = max(1.0, np.abs(Pab).max())
    np.testing.assert_allclose(Pa @ Pb, Pab, atol=1e-9 * scale)
    assert np.linalg.eigvalsh(Pa).min() >= -1e-9 * max(1.0, np.abs(Pa).max())
