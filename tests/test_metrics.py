"""Metrics against closed forms."""

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deeplinear import metrics as mt


def test_closed_forms_on_a_diagonal_matrix():
    W = jnp.diag(jnp.array([3.0, 2.0, 0.0]))
    np.testing.assert_allclose(mt.singular_values(W), [3, 2, 0])
    assert float(mt.nuclear_norm(W)) == pytest.approx(5)
    assert float(mt.spectral_norm(W)) == pytest.approx(3)
    assert float(mt.frobenius_norm(W)) == pytest.approx(np.sqrt(13))
    assert float(mt.schatten_norm(W, 2)) == pytest.approx(np.sqrt(13))
    assert float(mt.schatten_norm(W, 1)) == pytest.approx(5)
    assert int(mt.rank(W)) == 2
    p = np.array([0.6, 0.4])  # zero singular value excluded (Roy & Vetterli, pitfall 7)
    assert float(mt.effective_rank(W)) == pytest.approx(np.exp(-(p * np.log(p)).sum()))
    assert float(mt.distance_to_rank(W, 1)) == pytest.approx(2)
    assert float(mt.det_sign(W)) == 0
    assert float(mt.det_sign(jnp.array([[0.0, 1.0], [1.0, 0.0]]))) == -1


def test_effective_rank_bounds_and_rank_one():
    assert float(mt.effective_rank(jnp.outer(jnp.arange(1.0, 4), jnp.ones(5)))) == pytest.approx(1)
    assert float(mt.effective_rank(jnp.eye(4))) == pytest.approx(4)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(-50, 50), min_size=6, max_size=6))
def test_norm_inequalities(entries):
    W = jnp.asarray(entries).reshape(2, 3)
    s, f, n = mt.spectral_norm(W), mt.frobenius_norm(W), mt.nuclear_norm(W)
    assert s <= f * (1 + 1e-12) + 1e-12 and f <= n * (1 + 1e-12) + 1e-12
    er = float(mt.effective_rank(W))
    assert er <= int(mt.rank(W)) + 1e-9 and (er >= 1 - 1e-9 or int(mt.rank(W)) == 0)


def test_bad_arguments():
    with pytest.raises(ValueError, match="square"):
        mt.det_sign(jnp.ones((2, 3)))
    with pytest.raises(ValueError, match="p must be > 0"):
        mt.schatten_norm(jnp.eye(2), 0)
