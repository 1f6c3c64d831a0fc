"""Losses: analytic gradients against autodiff, scalings, data generators and validation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deeplinear import metrics as mt
from deeplinear import problems as pb

KEY = jax.random.PRNGKey(0)


def _problems():
    Ws = pb.low_rank_ground_truth(KEY, (6, 4), 2)
    X = jax.random.normal(jax.random.PRNGKey(1), (30, 4))
    return {
        "whitened": pb.WhitenedSquare(Ws),
        "l2_vector": pb.LpRegression(X, X @ Ws.T, p=2),
        "l4_scalar": pb.LpRegression(X, X[:, 0] ** 3, p=4),
        "l6_vector": pb.LpRegression(X, jnp.sin(X @ Ws.T), p=6),
        "sensing_mean": pb.sample_sensing(KEY, Ws, 10, "mean"),
        "sensing_half_sum": pb.sample_sensing(KEY, Ws, 10, "half_sum"),
        "completion_mean": pb.sample_completion(KEY, Ws, 12, "mean"),
        "completion_half_mean": pb.sample_completion(KEY, Ws, 12, "half_mean"),
        "custom": pb.CustomLoss(lambda W: jnp.sum(jnp.cosh(W)), (6, 4)),
    }


@pytest.mark.parametrize("name", list(_problems()))
def test_analytic_gradient_equals_autodiff(name):
    prob = _problems()[name]
    W = jax.random.normal(jax.random.PRNGKey(3), prob.shape)
    loss, grad = prob.value_and_grad(W)
    np.testing.assert_allclose(loss, prob.loss(W), rtol=1e-14)
    np.testing.assert_allclose(grad, jax.grad(prob.loss)(W), rtol=1e-10, atol=1e-12)
    # replica axis: a batch of W gives a batch of losses and gradients
    Wb = jnp.stack([W, 2 * W])
    lb, gb = prob.value_and_grad(Wb)
    np.testing.assert_allclose(lb[1], prob.loss(2 * W), rtol=1e-12)
    np.testing.assert_allclose(gb[1], prob.grad(2 * W), rtol=1e-10, atol=1e-12)


def test_loss_scalings():
    # §4 pitfall 9: mean (no 1/2), (1/2m) sum, 1/2 sum
    W = jnp.zeros((2, 2))
    for reduction, expected in [("mean", 2 / 3), ("half_mean", 1 / 3), ("half_sum", 1.0)]:
        prob = pb.MatrixCompletion([0, 1, 1], [1, 0, 1], [1.0, 1.0, 0.0], (2, 2), reduction)
        assert float(prob.loss(W)) == pytest.approx(expected)
    assert float(pb.completion_2x2().loss(jnp.array([[5.0, 1.0], [1.0, 0.0]]))) == 0.0


def test_sensing_equals_completion_with_one_hot_measurements():
    Ws = pb.low_rank_ground_truth(KEY, (3, 3), 1)
    comp = pb.MatrixCompletion([0, 2], [1, 2], np.asarray(Ws)[[0, 2], [1, 2]], (3, 3))
    A = np.zeros((2, 3, 3))
    A[0, 0, 1] = A[1, 2, 2] = 1
    sens = pb.MatrixSensing(A, jnp.einsum("mij,ij->m", A, Ws))
    W = jax.random.normal(KEY, (3, 3))
    np.testing.assert_allclose(comp.value_and_grad(W)[1], sens.value_and_grad(W)[1], rtol=1e-13)
    np.testing.assert_allclose(comp.loss(W), sens.loss(W), rtol=1e-13)


def test_low_rank_ground_truth_normalization():
    Ws = pb.low_rank_ground_truth(KEY, (100, 100), 5)
    assert float(jnp.linalg.norm(Ws)) == pytest.approx(100.0)
    assert int(mt.rank(Ws)) == 5
    s = np.asarray(mt.singular_values(Ws))[:5]
    assert 20 < s[-1] < s[0] < 80  # §E3: about 56, 51, 43, 37, 33 for one seed
    # reconstruction error == normalized Frobenius error when ||W*||_F = n (pitfall 7)
    W = Ws + 0.1
    assert float(mt.reconstruction_error(W, Ws)) == pytest.approx(
        float(mt.normalized_reconstruction_error(W, Ws)))


def test_sample_completion_without_replacement():
    Ws = pb.low_rank_ground_truth(KEY, (10, 8), 2)
    prob = pb.sample_completion(KEY, Ws, 80)
    pairs = set(zip(np.asarray(prob.rows).tolist(), np.asarray(prob.cols).tolist(), strict=True))
    assert len(pairs) == 80
    assert float(prob.loss(Ws)) == 0.0
    with pytest.raises(ValueError, match="m \\(observations\\)"):
        pb.sample_completion(KEY, Ws, 81)


def test_completion_dxd():
    prob = pb.completion_dxd(4)
    assert prob.rows.shape == (15,)
    M = np.eye(4)
    M[:2, :2] = [[123.0, 1.0], [1.0, 0.0]]
    assert float(prob.loss(jnp.asarray(M))) == 0.0


def test_bad_arguments_name_the_argument():
    X = jnp.ones((5, 3))
    with pytest.raises(ValueError, match="p must be an even integer"):
        pb.LpRegression(X, jnp.ones(5), p=3)
    with pytest.raises(ValueError, match="y must have 5 rows"):
        pb.LpRegression(X, jnp.ones(4))
    with pytest.raises(ValueError, match="rows must lie"):
        pb.MatrixCompletion([0, 5], [0, 1], [1.0, 2.0], (3, 3))
    with pytest.raises(ValueError, match="reduction"):
        pb.MatrixCompletion([0], [0], [1.0], (3, 3), "sum")
    with pytest.raises(ValueError, match="rank"):
        pb.low_rank_ground_truth(KEY, (3, 3), 4)
