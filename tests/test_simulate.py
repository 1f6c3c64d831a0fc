"""The end-to-end simulators against factor training on the same recording machinery."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from deeplinear.network import balanced_from_matrix, end_to_end
from deeplinear.problems import WhitenedSquare
from deeplinear.simulate import end_to_end_descent, end_to_end_gradient_flow
from deeplinear.train import Schedule, gradient_flow, train

DIMS = (3, 4, 4, 2)


@pytest.fixture(scope="module")
def setup():
    r = np.random.default_rng(0)
    problem = WhitenedSquare(jnp.asarray(r.standard_normal((2, 3))))
    factors = balanced_from_matrix(jnp.asarray(0.5 * r.standard_normal((2, 3))), DIMS)
    return problem, factors


def test_discrete_rule_tracks_factor_gd(setup):
    """§2.6: from a balanced init the discrete rule stays O(η)-close to GD on the factors."""
    problem, factors = setup
    sched = Schedule.every(100)
    metrics = {"w00": lambda W: W[0, 0]}
    gd = train(factors, problem, lr=1e-3, steps=1000, schedule=sched, metrics=metrics)
    e2e = end_to_end_descent(end_to_end(factors), problem, lr=1e-3, depth=3, steps=1000,
                             schedule=sched, metrics=metrics)
    np.testing.assert_array_equal(gd.steps, e2e.steps)
    assert set(e2e.metrics) == set(gd.metrics)
    np.testing.assert_allclose(e2e.loss, gd.loss, rtol=2e-3)
    assert np.max(np.abs(e2e.W - gd.W)) < 2e-3
    assert e2e.status == "max_steps" and e2e.W.shape == (2, 3)


def test_discrete_rule_stops_and_reports_divergence(setup):
    problem, factors = setup
    W0 = end_to_end(factors)
    done = end_to_end_descent(W0, problem, lr=0.05, depth=3, steps=20_000, stop_loss=1e-6)
    assert done.status == "converged" and done.loss[-1] <= 1e-6 < done.loss[0]
    blown = end_to_end_descent(W0, problem, lr=50.0, depth=3, steps=200)
    assert blown.status == "diverged" and blown.diverged_step is not None
    assert np.all(np.isfinite(blown.loss)) and np.all(np.isfinite(blown.W))


def test_end_to_end_flow_matches_factor_flow(setup):
    """Theorem 1 through the library's diffrax machinery (same ts, same recorded metrics)."""
    problem, factors = setup
    ts = np.linspace(0.0, 1.0, 5)
    fac = gradient_flow(factors, problem, 1.0, ts=ts, rtol=1e-10, atol=1e-12)
    e2e = end_to_end_gradient_flow(end_to_end(factors), problem, 1.0, depth=3, ts=ts,
                                   rtol=1e-10, atol=1e-12)
    assert e2e.status == "converged"
    np.testing.assert_allclose(e2e.ts, fac.ts)
    np.testing.assert_allclose(e2e.loss, fac.loss, rtol=1e-8)
    np.testing.assert_allclose(e2e.W, fac.W, atol=1e-8)


def test_bad_inputs(setup):
    problem, _ = setup
    with pytest.raises(ValueError, match="W0 has shape"):
        end_to_end_descent(jnp.zeros((3, 3)), problem, lr=0.1, depth=2, steps=10)
    with pytest.raises(ValueError, match="depth"):
        end_to_end_gradient_flow(jnp.ones((2, 3)), problem, 1.0, depth=0)
    with pytest.raises(ValueError, match="lr"):
        end_to_end_descent(jnp.ones((2, 3)), problem, lr=0.0, depth=2, steps=10)
