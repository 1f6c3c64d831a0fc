"""The observed-entries type (deeplinear.observations) and the bias model (deeplinear.biases)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from deeplinear.biases import fit_biases
from deeplinear.observations import DUPLICATES_POLICY, Observations


@st.composite
def observations(draw):
    n1 = draw(st.integers(1, 7))
    n2 = draw(st.integers(1, 7))
    mask = np.asarray(draw(st.lists(st.booleans(), min_size=n1 * n2, max_size=n1 * n2)),
                      bool).reshape(n1, n2)
    values = np.asarray(draw(st.lists(st.floats(-1e6, 1e6), min_size=n1 * n2,
                                      max_size=n1 * n2))).reshape(n1, n2)
    r, c = np.nonzero(mask)
    perm = np.random.default_rng(draw(st.integers(0, 100))).permutation(r.size)
    return Observations(r[perm], c[perm], values[r, c][perm], (n1, n2)), mask, values


@settings(max_examples=60, deadline=None)
@given(observations())
def test_views_agree(case):
    """Every view holds the same entries: dense/mask, CSR, padded arrays, the matrix round trip;
    the constructor sorts row-major whatever the input order."""
    obs, mask, values = case
    np.testing.assert_array_equal(obs.mask(), mask)
    np.testing.assert_array_equal(obs.dense(0.0), np.where(mask, values, 0.0))
    order = np.lexsort((obs.cols, obs.rows))
    np.testing.assert_array_equal(order, np.arange(obs.size))
    csr = obs.csr()
    assert csr.nnz == obs.size
    np.testing.assert_array_equal(csr.toarray(), np.where(mask, values, 0.0))
    r, c, v = obs.padded()
    assert r.size >= obs.size and (r.size & (r.size - 1)) == 0
    assert np.all(r[obs.size:] == obs.shape[0]) and np.all(v[obs.size:] == 0)
    dense = np.zeros((obs.shape[0] + 1, obs.shape[1]))  # the pad row collects nothing
    np.add.at(dense, (r, c), v)
    np.testing.assert_array_equal(dense[:-1], obs.dense(0.0))
    back = Observations.from_matrix(obs.dense())
    for a, b in ((back.rows, obs.rows), (back.cols, obs.cols), (back.values, obs.values)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(obs.counts(0), mask.sum(axis=1))
    np.testing.assert_array_equal(obs.empty(1), np.flatnonzero(~mask.any(axis=0)))


def test_duplicates_are_refused_everywhere_with_the_policy():
    with pytest.raises(ValueError, match=r"entry \(1, 2\) is observed 2 times.*observed once"):
        Observations([1, 0, 1], [2, 0, 2], [1.0, 2.0, 3.0], (2, 3))
    coo = sp.coo_array((np.array([1.0, 5.0]), (np.array([0, 0]), np.array([1, 1]))), shape=(2, 2))
    with pytest.raises(ValueError, match="observed 2 times"):  # scipy would sum them
        Observations.from_matrix(coo)
    assert "average or drop" in DUPLICATES_POLICY


@pytest.mark.parametrize(("args", "match"), [
    (([0], [0], [np.nan], (1, 1)), "finite"),
    (([0], [3], [1.0], (1, 3)), r"cols must lie in \[0, 3\)"),
    (([-1], [0], [1.0], (1, 3)), "rows must lie"),
    (([0, 1], [0], [1.0], (2, 2)), "one length"),
    (([0.5], [0], [1.0], (2, 2)), "integer indices"),
    (([0], [0], [1.0], (0, 2)), "positive integers"),
    (([0], [0], ["x"], (1, 1)), "numbers"),
])
def test_bad_observations(args, match):
    with pytest.raises(ValueError, match=match):
        Observations(*args)


def test_arrays_are_read_only_and_take_keeps_the_shape():
    obs = Observations([0, 1, 2], [2, 1, 0], [1.0, 2.0, 3.0], (3, 4))
    with pytest.raises(ValueError):
        obs.values[0] = 9.0
    part = obs.take([2, 0])
    assert part.shape == (3, 4) and list(part.values) == [1.0, 3.0]
    assert obs.dense_is_cheaper
    assert Observations([0], [0], [1.0], (1024, 1024)).dense_is_cheaper is False


def test_matrix_completion_from_observations_is_the_same_loss():
    import jax.numpy as jnp

    from deeplinear.problems import MatrixCompletion

    obs = Observations([0, 1, 1], [1, 0, 2], [1.0, -2.0, 0.5], (2, 3))
    a = MatrixCompletion.from_observations(obs, reduction="half_mean")
    b = MatrixCompletion(obs.rows, obs.cols, obs.values, obs.shape, "half_mean")
    W = jnp.arange(6.0).reshape(2, 3)
    assert float(a.loss(W)) == float(b.loss(W))


# ------------------------------------------------------------------------ biases


def _als_loops(users, items, ratings, n_u, n_i, reg_u=15.0, reg_i=10.0, epochs=10):
    """Surprise's ``baseline_als`` written as its loops (an independent transcription)."""
    mu = float(np.mean(ratings))
    bu, bi = np.zeros(n_u), np.zeros(n_i)
    by_item = {j: [] for j in range(n_i)}
    by_user = {j: [] for j in range(n_u)}
    for u, i, r in zip(users, items, ratings, strict=True):
        by_item[i].append((u, r))
        by_user[u].append((i, r))
    for _ in range(epochs):
        for i in range(n_i):
            bi[i] = sum(r - mu - bu[u] for u, r in by_item[i]) / (reg_i + len(by_item[i]))
        for u in range(n_u):
            bu[u] = sum(r - mu - bi[i] for i, r in by_user[u]) / (reg_u + len(by_user[u]))
    return mu, bu, bi


def test_biases_are_surprises_als():
    rng = np.random.default_rng(1)
    n_u, n_i = 12, 9
    mask = rng.random((n_u, n_i)) < 0.4
    mask[5] = False  # a cold user: bias 0
    u, i = np.nonzero(mask)
    r = rng.integers(1, 6, u.size).astype(float)
    b = fit_biases(Observations(u, i, r, (n_u, n_i)))
    mu, bu, bi = _als_loops(u, i, r, n_u, n_i)
    assert b.mean == pytest.approx(mu, rel=1e-14)
    np.testing.assert_allclose(b.row, bu, atol=1e-12)
    np.testing.assert_allclose(b.col, bi, atol=1e-12)
    assert b.row[5] == 0.0
    np.testing.assert_allclose(b.matrix()[u, i], b.predict(u, i))


def test_biases_match_surprise_itself():
    surprise = pytest.importorskip("surprise")
    import pandas as pd

    rng = np.random.default_rng(2)
    mask = rng.random((15, 11)) < 0.5
    u, i = np.nonzero(mask)
    r = rng.integers(1, 6, u.size).astype(float)
    data = surprise.Dataset.load_from_df(pd.DataFrame({"u": u, "i": i, "r": r}),
                                         surprise.Reader(rating_scale=(1, 5)))
    algo = surprise.BaselineOnly(verbose=False).fit(data.build_full_trainset())
    b = fit_biases(Observations(u, i, r, mask.shape))
    ts = algo.trainset
    for k in range(0, u.size, 7):
        ours = b.predict(u[k], i[k])
        theirs = (ts.global_mean + algo.bu[ts.to_inner_uid(u[k])] + algo.bi[ts.to_inner_iid(i[k])])
        assert ours == pytest.approx(theirs, abs=1e-10)
