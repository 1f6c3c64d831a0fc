"""overparameterize / collapse (equinox): same function, expected parameter counts, §2.6
dynamics. The shared cases and tolerances (tests/_overparam_cases.py) are also run against the
PyTorch version in tests/test_torch.py."""

from __future__ import annotations

import _overparam_cases as spec
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import deeplinear  # noqa: F401  (float64)
from deeplinear.dynamics import apply_preconditioner
from deeplinear.experiments.fig1_cnn import SmallCNN
from deeplinear.network import imbalance
from deeplinear.overparam import (
    FactorizedConv,
    FactorizedLinear,
    collapse,
    count_parameters,
    dense_l2,
    end_to_end_weights,
    overparameterize,
)

KEY = jax.random.key(0)


def _mlp():
    return eqx.nn.MLP(12, 3, width_size=7, depth=2, key=KEY)


def _perturb(model, key, scale=0.1):
    params, static = eqx.partition(model, eqx.is_inexact_array)
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(key, len(leaves))
    leaves = [x + scale * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys,
                                                                                 strict=True)]
    return eqx.combine(jax.tree_util.tree_unflatten(tree, leaves), static)


@pytest.mark.parametrize("init", spec.INITS)
@pytest.mark.parametrize("n_in,n_out,depth,width", spec.LINEAR_CASES)
def test_shared_linear_cases(n_in, n_out, depth, width, init):
    lin = eqx.nn.Linear(n_in, n_out, key=jax.random.key(n_in * 10 + n_out))
    x = jax.random.normal(jax.random.key(1), (5, n_in))
    deep = overparameterize(lin, depth, hidden_width=width, key=KEY, init=init)
    assert [f.shape for f in deep.factors] == spec.factor_shapes(n_in, n_out, depth, width)
    np.testing.assert_allclose(jax.vmap(deep)(x), jax.vmap(lin)(x), atol=spec.ATOL)
    assert count_parameters(deep) - count_parameters(lin) == spec.extra_parameters(
        n_in, n_out, depth, width)
    if init == "balanced":
        assert float(imbalance(deep.factors)) < spec.ATOL
    trained = _perturb(deep, jax.random.key(2))
    np.testing.assert_allclose(jax.vmap(collapse(trained))(x), jax.vmap(trained)(x),
                               atol=spec.ATOL)


@pytest.mark.parametrize("init", spec.INITS)
@pytest.mark.parametrize("c_in,c_out,kernel,depth,width", spec.CONV_CASES)
def test_shared_conv_cases(c_in, c_out, kernel, depth, width, init):
    conv = eqx.nn.Conv2d(c_in, c_out, kernel, padding="SAME", key=jax.random.key(c_in + c_out))
    x = jax.random.normal(jax.random.key(1), (c_in, 6, 6))
    deep = overparameterize(conv, depth, hidden_width=width, conv=True, key=KEY, init=init)
    n_in = c_in * kernel * kernel
    assert [f.shape for f in deep.factors] == spec.factor_shapes(n_in, c_out, depth, width)
    np.testing.assert_allclose(deep(x), conv(x), atol=spec.ATOL)
    assert count_parameters(deep) - count_parameters(conv) == spec.extra_parameters(
        n_in, c_out, depth, width)
    trained = _perturb(deep, jax.random.key(2))
    np.testing.assert_allclose(collapse(trained)(x), trained(x), atol=spec.ATOL)


@pytest.mark.parametrize("depth", spec.E2E_DEPTHS)
def test_shared_end_to_end_trajectory(depth):
    """Collapsed GD trajectory of balanced factors = `dynamics.end_to_end_update`'s, to O(η²)."""
    W0, X, Y = spec.e2e_problem()
    n_out, n_in = W0.shape
    lin = eqx.tree_at(lambda m: m.weight, eqx.nn.Linear(n_in, n_out, use_bias=False, key=KEY),
                      jnp.asarray(W0))

    def loss(m):
        return 0.5 * jnp.mean(jnp.sum((jax.vmap(m)(X) - Y) ** 2, -1))

    gaps = []
    for eta in spec.E2E_ETAS:
        deep = overparameterize(lin, depth, key=KEY)
        for _ in range(spec.E2E_STEPS):
            g = jax.grad(loss)(deep)
            deep = jax.tree_util.tree_map(lambda p, g, eta=eta: p - eta * g, deep, g)
        gaps.append(float(np.max(np.abs(np.asarray(deep.end_to_end())
                                        - spec.e2e_reference(depth, eta)))))
    spec.check_first_order(gaps)


@pytest.mark.parametrize("init", spec.INITS)
@pytest.mark.parametrize("depth,width", [(2, None), (3, 20)])
def test_mlp_same_function_at_init_and_after_collapse(init, depth, width):
    mlp = _mlp()
    x = jax.random.normal(jax.random.key(1), (5, 12))
    deep = overparameterize(mlp, depth, hidden_width=width, key=KEY, init=init)
    layers = [n for n in jax.tree_util.tree_leaves(
        deep, is_leaf=lambda n: isinstance(n, FactorizedLinear)) if isinstance(n, FactorizedLinear)]
    assert len(layers) == 3 and all(len(f.factors) == depth for f in layers)
    # float64: exact factorizations agree to rounding (SVD-based balanced factors: ~1e-15)
    np.testing.assert_allclose(jax.vmap(deep)(x), jax.vmap(mlp)(x), atol=1e-12)
    np.testing.assert_allclose(jax.vmap(collapse(deep))(x), jax.vmap(mlp)(x), atol=1e-12)
    if init == "balanced":
        assert all(float(imbalance(f.factors)) < 1e-12 for f in layers)
    # after "training" (arbitrary factors) collapse still reproduces the factorized model
    trained = _perturb(deep, jax.random.key(2))
    flat = collapse(trained)
    assert all(isinstance(layer, eqx.nn.Linear) for layer in flat.layers)
    np.testing.assert_allclose(jax.vmap(flat)(x), jax.vmap(trained)(x), atol=1e-12)
    assert count_parameters(flat) == count_parameters(mlp)


def test_parameter_counts_mlp():
    mlp = _mlp()  # layers 12->7, 7->7, 7->3
    base = count_parameters(mlp)
    assert base == 12 * 7 + 7 + 7 * 7 + 7 + 7 * 3 + 3
    # hidden width = out: each layer gains out*out per extra factor
    assert count_parameters(overparameterize(mlp, 2, key=KEY)) == base + 49 + 49 + 9
    assert count_parameters(overparameterize(mlp, 3, key=KEY)) == base + 2 * (49 + 49 + 9)
    # hidden width h: out x in -> (h x in) (h x h)^(N-2) (out x h)
    h = 10
    n = count_parameters(overparameterize(mlp, 3, hidden_width=h, key=KEY))
    weights = sum(h * i + h * h + o * h for i, o in [(12, 7), (7, 7), (7, 3)])
    assert n == weights + 7 + 7 + 3


def test_tutorial_cnn_gains_about_15_percent():
    """§E2: the TensorFlow MNIST tutorial CNN (1.663M parameters) gains 512² + 10² = 262,244."""
    cnn = SmallCNN((1, 28, 28), (32, 64), 5, 512, 10, key=KEY)
    base = count_parameters(cnn)
    assert base == 1_663_370
    deep = overparameterize(cnn, 2, key=KEY, init="identity")
    assert count_parameters(deep) - base == 512 * 512 + 10 * 10
    assert abs(count_parameters(deep) / base - 1 - 0.158) < 0.001


def test_cnn_conv_and_dense_factorized_same_function():
    cnn = SmallCNN((1, 4, 4), (4, 6), 3, 16, 10, key=KEY)
    x = jax.random.uniform(jax.random.key(3), (2, 1, 4, 4))
    deep = overparameterize(cnn, 2, conv=True, key=KEY)
    assert isinstance(deep.conv1, FactorizedConv) and isinstance(deep.fc2, FactorizedLinear)
    np.testing.assert_allclose(jax.vmap(deep)(x), jax.vmap(cnn)(x), atol=1e-12)
    trained = _perturb(deep, jax.random.key(4), 0.05)
    flat = collapse(trained)
    assert isinstance(flat.conv1, eqx.nn.Conv2d) and isinstance(flat.fc1, eqx.nn.Linear)
    np.testing.assert_allclose(jax.vmap(flat)(x), jax.vmap(trained)(x), atol=1e-12)
    assert count_parameters(flat) == count_parameters(cnn)
    # 1x1 channel mixers on a 3x3 conv: out_channels^2 extra parameters per conv layer
    assert count_parameters(deep) - count_parameters(cnn) == 16 + 36 + 256 + 100
    assert [w.shape for w in end_to_end_weights(deep)][:2] == [(4, 1, 3, 3), (6, 4, 3, 3)]


def test_random_init_changes_function_but_not_shapes():
    mlp = _mlp()
    deep = overparameterize(mlp, 2, key=KEY, init="random")
    x = jnp.ones(12)
    assert deep(x).shape == (3,)
    assert float(jnp.max(jnp.abs(deep(x) - mlp(x)))) > 1e-3


def test_gd_on_factors_follows_end_to_end_rule():
    """One small GD step on balanced factors moves W_{1:N} by -η P_W(∇ℓ) + O(η²) (§2.6)."""
    lin = eqx.nn.Linear(5, 4, key=KEY)
    x = jax.random.normal(jax.random.key(5), (20, 5))
    y = jax.random.normal(jax.random.key(6), (20, 4))

    def loss(m):
        return 0.5 * jnp.mean(jnp.sum((jax.vmap(m)(x) - y) ** 2, -1))

    for depth in (2, 3):
        deep = overparameterize(lin, depth, key=KEY)
        W = deep.end_to_end()
        G = jax.grad(loss)(collapse(deep)).weight
        grads = jax.grad(loss)(deep)
        errs = []
        for eta in (1e-3, 1e-4):
            stepped = jax.tree_util.tree_map(lambda p, g, eta=eta: p - eta * g, deep, grads)
            dW = stepped.end_to_end() - W
            errs.append(float(jnp.max(jnp.abs(dW + eta * apply_preconditioner(W, G, depth)))))
        # O(η²): a 10x smaller step gives a ~100x smaller error
        assert errs[1] < errs[0] / 50 and errs[0] < 1e-4


def test_errors():
    with pytest.raises(ValueError, match="depth"):
        overparameterize(_mlp(), 0, key=KEY)
    with pytest.raises(ValueError, match="hidden_width=2 is below min"):
        overparameterize(_mlp(), 2, hidden_width=2, key=KEY)
    with pytest.raises(ValueError, match="init"):
        overparameterize(_mlp(), 2, key=KEY, init="orthogonal")
    with pytest.raises(ValueError, match="no eqx.nn.Linear"):
        overparameterize(eqx.nn.Conv2d(1, 2, 3, key=KEY), 2, key=KEY)


def test_refactorizing_starts_from_end_to_end():
    mlp = _mlp()
    x = jnp.ones(12)
    twice = overparameterize(overparameterize(mlp, 2, key=KEY), 3, key=KEY)
    assert all(len(f.factors) == 3 for f in end_to_end_weights(twice) and twice.layers)
    np.testing.assert_allclose(twice(x), mlp(x), atol=1e-12)


@settings(max_examples=spec.HYPOTHESIS_EXAMPLES, deadline=None)
@given(
    n_in=st.integers(1, spec.MAX_FEATURES), n_out=st.integers(1, spec.MAX_FEATURES),
    extra=st.integers(0, spec.MAX_EXTRA_WIDTH), depth=st.integers(1, spec.MAX_DEPTH),
    init=st.sampled_from(spec.INITS), seed=st.integers(0, 2**16),
)
def test_property_linear_factorization_is_exact(n_in, n_out, extra, depth, init, seed):
    """Any hidden width >= min(in, out) (both branches of the identity init: width below and
    above the output size) gives exactly the original map, and collapse gives it back."""
    lin = eqx.nn.Linear(n_in, n_out, key=jax.random.key(seed))
    width = min(n_in, n_out) + extra
    deep = overparameterize(lin, depth, hidden_width=width, key=KEY, init=init)
    assert [f.shape for f in deep.factors][0] == ((width if depth > 1 else n_out), n_in)
    np.testing.assert_allclose(deep.end_to_end(), lin.weight, atol=spec.ATOL)
    np.testing.assert_allclose(collapse(deep).weight, lin.weight, atol=spec.ATOL)
    x = jax.random.normal(jax.random.key(seed + 1), (3, n_in))
    np.testing.assert_allclose(jax.vmap(deep)(x), jax.vmap(lin)(x), atol=spec.ATOL)


# ------------------------------------------------------------------- the L2 term (dense_l2)


def test_dense_l2_hand_computation():
    """Σ (‖W‖² + ‖b‖²)/2 over the Linear layers, summed by hand in numpy; bias=False drops the
    biases; a model without dense layers is an error."""
    mlp = _mlp()
    layers = mlp.layers
    hand = sum(np.sum(np.asarray(m.weight) ** 2) + np.sum(np.asarray(m.bias) ** 2)
               for m in layers) / 2
    np.testing.assert_allclose(float(dense_l2(mlp)), hand, rtol=1e-12)
    no_bias = sum(np.sum(np.asarray(m.weight) ** 2) for m in layers) / 2
    np.testing.assert_allclose(float(dense_l2(mlp, bias=False)), no_bias, rtol=1e-12)
    with pytest.raises(ValueError, match="no eqx.nn.Linear"):
        dense_l2(eqx.nn.Conv2d(1, 2, 3, key=KEY))


@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("init", ["balanced", "identity"])
def test_dense_l2_end_to_end_is_the_original_objective(depth, init):
    """With a function-preserving init the end-to-end L2 term equals the original model's (the
    same objective); on the factors it is, for balanced factors of W = U Σ Vᵀ,
    ``N/2 Σ σ_i^{2/N}`` per layer plus the biases (each factor has singular values σ^{1/N});
    at depth 1 the two readings coincide."""
    mlp = _mlp()
    deep = overparameterize(mlp, depth, key=KEY, init=init, hidden_width=9)
    np.testing.assert_allclose(float(dense_l2(deep)), float(dense_l2(mlp)), rtol=1e-10)
    biases = sum(float(jnp.sum(m.bias**2)) for m in mlp.layers) / 2
    factors = float(dense_l2(deep, end_to_end=False))
    if depth == 1:
        np.testing.assert_allclose(factors, float(dense_l2(mlp)), rtol=1e-10)
    if init == "balanced":
        closed = biases + sum(depth / 2 * np.sum(np.linalg.svd(np.asarray(m.weight),
                                                               compute_uv=False) ** (2 / depth))
                              for m in mlp.layers)
        np.testing.assert_allclose(factors, closed, rtol=1e-10)


def test_dense_l2_gradient_through_the_product():
    """d/dW_1 of ‖W_2 W_1‖²/2 is W_2ᵀ W_2 W_1 (and W_2 W_1 W_1ᵀ for W_2)."""
    lin = eqx.nn.Linear(5, 3, use_bias=False, key=KEY)
    deep = overparameterize(lin, 2, key=jax.random.key(3), init="random")
    g = eqx.filter_grad(lambda m: dense_l2(m))(deep)
    W1, W2 = (np.asarray(f) for f in deep.factors)
    np.testing.assert_allclose(np.asarray(g.factors[0]), W2.T @ W2 @ W1, rtol=1e-10)
    np.testing.assert_allclose(np.asarray(g.factors[1]), W2 @ W1 @ W1.T, rtol=1e-10)
