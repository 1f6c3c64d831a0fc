"""Product order, partial products, layer gradients, balancedness and initializations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deeplinear import network as nw

dims_strategy = st.lists(st.integers(1, 5), min_size=2, max_size=6)  # depth 1-5, rectangular


def _random_factors(seed, dims):
    return nw.gaussian_init(jax.random.PRNGKey(seed), dims, 0.7)


@settings(max_examples=10, deadline=None)
@given(dims=dims_strategy, seed=st.integers(0, 2**16))
def test_end_to_end_order_and_shapes(dims, seed):
    fs = _random_factors(seed, dims)
    assert [w.shape for w in fs] == [(dims[j + 1], dims[j]) for j in range(len(dims) - 1)]
    assert nw.dims_of(fs) == tuple(dims)
    expected = np.eye(dims[0])
    for w in fs:  # layer j maps d_{j-1} -> d_j: apply W_1 first
        expected = np.asarray(w) @ expected
    np.testing.assert_allclose(nw.end_to_end(fs), expected, rtol=1e-12, atol=1e-14)
    x = np.arange(dims[0], dtype=float)
    h = x
    for w in fs:
        h = np.asarray(w) @ h
    np.testing.assert_allclose(nw.end_to_end(fs) @ x, h, rtol=1e-12, atol=1e-13)


def test_partial_product_conventions():
    fs = _random_factors(0, (2, 3, 4, 5))
    W1, W2, W3 = (np.asarray(w) for w in fs)
    np.testing.assert_allclose(nw.partial_product(fs, 2, 3), W3 @ W2)
    np.testing.assert_allclose(nw.partial_product(fs, 1, 1), W1)
    np.testing.assert_array_equal(nw.partial_product(fs, 3, 2), np.eye(4))  # identity of size d_2
    np.testing.assert_array_equal(nw.partial_product(fs, 1, 0), np.eye(2))  # identity of size d_0
    np.testing.assert_array_equal(nw.partial_product(fs, 4, 3), np.eye(5))  # identity of size d_N
    with pytest.raises(ValueError, match="partial_product"):
        nw.partial_product(fs, 0, 2)


@settings(max_examples=10, deadline=None)
@given(dims=dims_strategy, seed=st.integers(0, 2**16))
def test_factor_gradients_equal_autodiff(dims, seed):
    fs = _random_factors(seed, dims)
    target = jax.random.normal(jax.random.PRNGKey(seed + 1), (dims[-1], dims[0]))
    loss = lambda W: jnp.sum(jnp.sin(W - target) ** 2)  # noqa: E731 (a non-quadratic loss)
    auto = jax.grad(lambda f: loss(nw.end_to_end(f)))(fs)
    analytic = nw.factor_gradients(fs, jax.grad(loss)(nw.end_to_end(fs)))
    for a, b in zip(auto, analytic, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_factor_gradients_with_replica_axis():
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    fs = jax.vmap(lambda k: nw.gaussian_init(k, (3, 4, 2), 1.0))(keys)
    G = jnp.ones((3, 2, 3))
    batched = nw.factor_gradients(fs, G)
    for r in range(3):
        single = nw.factor_gradients(tuple(w[r] for w in fs), G[r])
        for a, b in zip(batched, single, strict=True):
            np.testing.assert_allclose(a[r], b, rtol=1e-13)
    assert nw.end_to_end(fs).shape == (3, 2, 3)
    assert nw.imbalance(fs).shape == (3,)


@settings(max_examples=10, deadline=None)
@given(
    d0=st.integers(1, 5), dN=st.integers(1, 5), extra=st.lists(st.integers(0, 3), max_size=4),
    seed=st.integers(0, 2**16), scale=st.floats(1e-3, 10.0),
)
def test_balanced_init_is_balanced_and_reproduces_product(d0, dN, extra, seed, scale):
    k = min(d0, dN)
    dims = (d0, *[k + e for e in extra], dN)  # any widths without a bottleneck
    key = jax.random.PRNGKey(seed)
    A = scale * jax.random.normal(key, (dN, d0), dtype=jnp.float64)
    fs = nw.balanced_init(key, dims, scale)
    np.testing.assert_allclose(nw.end_to_end(fs), A, rtol=1e-12, atol=1e-12 * scale)
    assert float(nw.imbalance(fs)) < 1e-12 * max(1.0, scale**2)


def test_balanced_init_rejects_bottleneck():
    with pytest.raises(ValueError, match="bottleneck"):
        nw.balanced_init(jax.random.PRNGKey(0), (3, 1, 3), 1.0)


def test_identity_and_orthogonal_inits_are_balanced():
    fs = nw.identity_init((4, 4, 4, 4), 1e-3)
    np.testing.assert_allclose(nw.end_to_end(fs), 1e-3 * np.eye(4), rtol=1e-12)
    assert float(nw.imbalance(fs)) < 1e-15
    fs = nw.orthogonal_init(jax.random.PRNGKey(1), (3, 5, 4), 2.0)
    W = np.asarray(nw.end_to_end(fs))
    np.testing.assert_allclose(W.T @ W, 4.0 * np.eye(3), atol=1e-12)  # 2 x a semi-orthogonal map
    assert float(nw.imbalance(fs)) < 1e-12


def test_gaussian_init_scales():
    n, depth = 100, 3
    fs = nw.gaussian_init(jax.random.PRNGKey(0), (n,) * (depth + 1), 1e-3, per="product")
    ratio = float(jnp.linalg.norm(nw.end_to_end(fs))) / (1e-3 * np.sqrt(n))
    assert 0.8 < ratio < 1.2  # roosephu asserts this window (§E3)
    fs = nw.gaussian_init(jax.random.PRNGKey(0), (200, 200), 8e-3, per="layer")
    assert abs(float(jnp.std(fs[0])) / 8e-3 - 1) < 0.02
    # independent layers are only approximately balanced: imbalance O(s^2) >> product O(s^N)
    fs = nw.gaussian_init(jax.random.PRNGKey(0), (2, 2, 2, 2), 8e-3)
    assert float(nw.imbalance(fs)) > 50 * float(jnp.linalg.norm(nw.end_to_end(fs)))


@pytest.mark.parametrize("method", ["resample", "flip"])
@pytest.mark.parametrize("sign", [1, -1])
def test_with_det_sign(method, sign):
    for seed in range(5):
        fs = nw.with_det_sign(
            jax.random.PRNGKey(seed), lambda k: nw.balanced_init(k, (2, 2, 2), 0.1), sign, method=method
        )
        assert np.sign(np.linalg.det(nw.end_to_end(fs))) == sign
        assert float(nw.imbalance(fs)) < 1e-12  # flipping keeps balancedness


def test_bad_arguments_name_the_argument():
    with pytest.raises(ValueError, match="scale"):
        nw.gaussian_init(jax.random.PRNGKey(0), (2, 2), -1.0)
    with pytest.raises(ValueError, match="dims"):
        nw.identity_init((3, 0, 3), 1.0)
    with pytest.raises(ValueError, match="sign"):
        nw.with_det_sign(jax.random.PRNGKey(0), lambda k: nw.identity_init((2, 2), 1.0), 0)
    with pytest.raises(ValueError, match="factors"):
        nw.dims_of((jnp.ones((2, 3)), jnp.ones((2, 3))))


def test_balancedness_definition():
    # §4 pitfall 13: W_{j+1}^T W_{j+1} - W_j W_j^T, not the transposed form
    fs = (jnp.array([[1.0, 0.0], [0.0, 2.0]]), jnp.array([[3.0, 0.0], [4.0, 0.0]]))
    (C,) = nw.balancedness(fs)
    np.testing.assert_allclose(C, np.array([[25.0, 0], [0, 0]]) - np.diag([1.0, 4.0]))
