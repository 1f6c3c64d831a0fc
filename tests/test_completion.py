"""DeepMatrixCompletion (deeplinear.completion): inputs, defaults, recovery, scikit-learn's
estimator contract."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.base import clone
from sklearn.utils.estimator_checks import parametrize_with_checks

from deeplinear.completion import (
    DeepMatrixCompletion,
    check_matrix,
    observed_entries,
    step_size,
    validation_split,
)

FAST = dict(max_steps=3000, random_state=0, n_seeds=1)
SHORT = dict(max_steps=300, random_state=0, n_seeds=1)  # contract tests: any fit will do
# (they share one matrix shape and observation count: the compiled training program is reused)


def _low_rank(seed=0, shape=(30, 24), rank=2, observed=0.5, noise=0.0):
    rng = np.random.default_rng(seed)
    M = rng.standard_normal((shape[0], rank)) @ rng.standard_normal((rank, shape[1]))
    M += noise * rng.standard_normal(shape)
    missing = rng.random(shape) > observed
    missing[np.arange(shape[0]), rng.integers(0, shape[1], shape[0])] = False  # rows covered
    missing[rng.integers(0, shape[0], shape[1]), np.arange(shape[1])] = False  # columns covered
    return M, missing


def _nrmse(P, M, missing):
    return np.sqrt(np.mean((P - M)[missing] ** 2)) / np.std(M[missing])


# ------------------------------------------------------------------------- inputs


def test_the_three_input_kinds_give_the_same_observations():
    M, missing = _low_rank()
    dense = np.where(missing, np.nan, M)
    masked = np.ma.masked_array(M, mask=missing)
    r, c = np.nonzero(~missing)
    coo = sp.coo_array((M[r, c], (r, c)), shape=M.shape)
    ref = observed_entries(dense)
    for X in (masked, coo, sp.csr_matrix(coo), coo.tocsc()):
        got = observed_entries(X)
        for a, b in zip(got[:3], ref[:3], strict=True):
            np.testing.assert_array_equal(a, b)
        assert got[3] == ref[3] == M.shape


def test_sparse_explicit_zero_is_an_observation():
    X = sp.coo_array((np.array([0.0, 2.0]), (np.array([0, 1]), np.array([1, 0]))), shape=(2, 2))
    rows, cols, values, _ = observed_entries(X)
    assert list(zip(rows, cols, values, strict=True)) == [(0, 1, 0.0), (1, 0, 2.0)]


@pytest.mark.parametrize(("X", "match"), [
    (np.full((3, 3), np.nan), "no observed entry"),
    (np.array([[1.0, np.inf], [2.0, 3.0]]), "inf"),
    (np.ma.masked_array([[1.0, np.nan], [2.0, 3.0]], mask=[[0, 0], [0, 0]]), "unmasked entry"),
    (sp.coo_array((np.array([np.nan]), (np.array([0]), np.array([0]))), shape=(1, 1)),
     "not finite"),
    (np.ones(4), "2-D"),
    (np.ones((2, 2, 2)), "2-D"),
    (np.array([["a", "b"]]), "numbers"),
])
def test_bad_matrices_are_refused_with_a_clear_error(X, match):
    with pytest.raises(ValueError, match=match):
        check_matrix(X)
    with pytest.raises(ValueError, match=match):
        DeepMatrixCompletion(max_steps=10).fit(X)


@pytest.mark.parametrize(("params", "match"), [
    (dict(depth=0), "depth"), (dict(width=0), "width"), (dict(init_scale=-1.0), "init_scale"),
    (dict(optimizer="sgd2"), "optimizer"), (dict(lr=0.0), "lr"), (dict(lr="fast"), "lr"),
    (dict(max_steps=0), "max_steps"), (dict(validation_fraction=1.0), "validation_fraction"),
    (dict(early_stopping="yes"), "early_stopping"), (dict(dtype="int8"), "dtype"),
])
def test_bad_parameters_are_refused_in_fit(params, match):
    est = DeepMatrixCompletion(**params)  # __init__ only stores
    with pytest.raises(ValueError, match=match):
        est.fit(np.eye(3))


def test_validation_split_is_a_seeded_subset():
    a = validation_split(100, 0.1, np.random.default_rng(3))
    b = validation_split(100, 0.1, np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)
    assert a.size == 10 and np.unique(a).size == 10 and a.min() >= 0 and a.max() < 100


def test_step_size_is_the_theory_rule():
    """lr = d_N d_0 / (N σ̂^{2-2/N}), σ̂ = σ_1(P_Ω(Z)) / p (depth >= 2), m for depth 1."""
    M, missing = _low_rank(1)
    r, c = np.nonzero(~missing)
    v = M[r, c]
    p = v.size / M.size
    sigma = np.linalg.norm(np.where(missing, 0.0, M), 2) / p
    for depth in (2, 3, 4):
        want = M.size / (depth * sigma ** (2 - 2 / depth))
        assert step_size(r, c, v, M.shape, depth) == pytest.approx(want, rel=1e-6)
    assert step_size(r, c, v, M.shape, 1) == v.size
    # nothing to fit (every observed value 0): σ̂ = 1, a finite rate, not 1/0
    assert step_size(r, c, 0 * v, M.shape, 3) == pytest.approx(M.size / 3)


def test_a_single_row_fits_without_diverging():
    """One observation per column: centered, every value is 0 (scikit-learn's 1-sample check)."""
    X = 3 * np.random.default_rng(0).uniform(size=(1, 10))
    est = DeepMatrixCompletion(depth=2, max_steps=20, check_every=10, random_state=0).fit(X)
    assert np.isfinite(est.lr_) and np.allclose(est.transform(X), X)


# ------------------------------------------------------------------------- fitting


def test_depth3_recovers_a_low_rank_matrix_and_depth1_cannot():
    M, missing = _low_rank(2, shape=(40, 30), rank=2, observed=0.4)
    X = np.where(missing, np.nan, M)
    deep = DeepMatrixCompletion(depth=3, **FAST).fit(X)
    assert _nrmse(deep.transform(X), M, missing) < 0.05
    # rank 2 plus, at most, the (rank-1) column means removed by centering
    s = deep.singular_values_
    assert deep.effective_rank_ < 3.5 and s[3] < 3e-2 * s[0] and s[1] > 0.1 * s[0]
    # depth 1: gradient descent never moves an unobserved entry, which stays at its column mean
    shallow = DeepMatrixCompletion(depth=1, **FAST).fit(X)
    P = shallow.transform(X)
    np.testing.assert_allclose(P[missing], np.broadcast_to(shallow.mean_, M.shape)[missing],
                               atol=1e-2 * shallow.scale_)
    # the offsets are the column means of the training part (the validation entries left out)
    r, c = np.nonzero(~missing)
    val = validation_split(r.size, 0.1, np.random.default_rng(0))
    train = np.where(missing, np.nan, M)
    train[r[val], c[val]] = np.nan
    np.testing.assert_allclose(shallow.mean_, np.nanmean(train, axis=0), rtol=1e-12)
    # fitted attributes
    for est in (deep, shallow):
        assert est.n_iter_ == est.best_step_
        assert est.validation_steps_.shape == est.validation_curve_.shape == est.loss_curve_.shape
        assert np.isfinite(est.validation_error_) and est.lr_ > 0
    assert deep.validation_error_ == pytest.approx(deep.validation_curve_.min())
    assert deep.validation_steps_[np.argmin(deep.validation_curve_)] == deep.best_step_


def test_centering_and_scaling_are_undone():
    """Completing a * X + b gives a * (completion of X) + b: the model sees the same Z."""
    M, missing = _low_rank(0, noise=0.05)
    X = np.where(missing, np.nan, M)
    base = DeepMatrixCompletion(depth=2, **SHORT).fit(X)
    moved = DeepMatrixCompletion(depth=2, **SHORT).fit(3.0 * X + 100.0)
    assert moved.mean_ == pytest.approx(3 * base.mean_ + 100) and moved.scale_ == pytest.approx(
        3 * base.scale_)
    np.testing.assert_allclose(moved.completion(), 3.0 * base.completion() + 100.0,
                               rtol=1e-4, atol=1e-4 * moved.scale_)


def test_predict_transform_and_completion_agree():
    M, missing = _low_rank(0, noise=0.05)
    X = np.where(missing, np.nan, M)
    est = DeepMatrixCompletion(depth=2, **SHORT)
    T = est.fit_transform(X)
    np.testing.assert_array_equal(T[~missing], M[~missing])  # observed entries kept
    full = est.completion()
    r, c = np.nonzero(missing)
    np.testing.assert_allclose(est.predict(r, c), full[r, c], rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(T[missing], full[missing], rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(est.predict([[0, 1]], [[2, 3]]), full[[[0, 1]], [[2, 3]]])
    with pytest.raises(ValueError, match="fitted on a 30 x 24"):
        est.transform(X[:-1])
    with pytest.raises(ValueError, match="rows"):
        est.predict([30], [0])
    with pytest.raises(ValueError, match="same shape"):
        est.predict([0, 1], [0])


def test_sparse_and_masked_inputs_fit_like_dense():
    M, missing = _low_rank(0, noise=0.05)
    r, c = np.nonzero(~missing)
    dense = DeepMatrixCompletion(depth=2, **SHORT).fit(np.where(missing, np.nan, M))
    for X in (np.ma.masked_array(M, mask=missing), sp.csr_array((M[r, c], (r, c)), shape=M.shape)):
        other = DeepMatrixCompletion(depth=2, **SHORT).fit(X)
        np.testing.assert_allclose(other.completion(), dense.completion(), rtol=1e-6, atol=1e-6)


def test_dtype_float32_default_and_float64_on_request():
    M, missing = _low_rank(0, noise=0.05)
    X = np.where(missing, np.nan, M)
    assert DeepMatrixCompletion(depth=2, **SHORT).fit(X).factors_[0].dtype == np.float32
    assert DeepMatrixCompletion(depth=2, dtype="float64", **SHORT).fit(X).factors_[0].dtype == \
        np.float64


def test_a_diverging_rate_is_halved():
    M, missing = _low_rank(0, noise=0.05)
    est = DeepMatrixCompletion(depth=3, lr=1e6, max_steps=300, random_state=0)
    est.fit(np.where(missing, np.nan, M))
    assert est.lr_ < 1e6 and np.all(np.isfinite(est.completion()))


def test_without_early_stopping_all_steps_are_taken():
    M, missing = _low_rank(0, noise=0.05)
    est = DeepMatrixCompletion(depth=2, early_stopping=False, max_steps=200, random_state=0)
    est.fit(np.where(missing, np.nan, M))
    assert est.n_iter_ == 200 and est.validation_curve_.size == 0
    assert np.isnan(est.validation_error_) and est.validation_steps_[-1] == 200


def test_get_params_set_params_clone():
    est = DeepMatrixCompletion(depth=2, width=7, random_state=np.random.default_rng(1))
    params = est.get_params()
    assert params["depth"] == 2 and params["width"] == 7 and params["dtype"] == "float32"
    twin = clone(est)
    assert twin.get_params()["width"] == 7 and twin is not est
    assert est.set_params(depth=4).depth == 4


def test_seeded_fits_are_reproducible():
    M, missing = _low_rank(0, noise=0.05)
    X = np.where(missing, np.nan, M)
    a = DeepMatrixCompletion(depth=2, **SHORT).fit(X).completion()
    b = DeepMatrixCompletion(depth=2, **SHORT).fit(X).completion()
    np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------------- scikit-learn's checks


class _CheckedAsTransformer(DeepMatrixCompletion):
    """The estimator as scikit-learn's checks see a transformer: their ``predict(X)`` calls a
    sample matrix, while :meth:`DeepMatrixCompletion.predict` takes ``(rows, cols)`` index arrays
    (tested above), so predict is hidden here and every check runs through ``transform``."""

    @property
    def predict(self):  # hasattr(estimator, "predict") is False
        raise AttributeError("predict(rows, cols) is tested separately")


# Checks that do not apply to a matrix completer, with the reason (shown in the test report).
_TIED = ("a completion belongs to the rows of the matrix it was fitted on: transform of another "
         "matrix (a subset, a reordering, another width) is refused")
EXPECTED_FAILED = {
    "check_methods_subset_invariance": _TIED,
    "check_fit_idempotent": _TIED,
    "check_n_features_in_after_fitting": _TIED,
}


@pytest.mark.slow  # ~45 checks, each compiling small programs: minutes on the 2-core machine
@parametrize_with_checks([_CheckedAsTransformer(depth=2, max_steps=20, check_every=10, n_seeds=1,
                                                random_state=0)],
                         expected_failed_checks=lambda est: EXPECTED_FAILED)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


# ------------------------------------------------------------------------- benchmark pieces


def test_block_mask_and_sample_photo():
    from deeplinear.data import sample_photo
    from deeplinear.experiments.completion_benchmark import block_mask

    img = sample_photo("flower.jpg", size=40)
    assert img.shape == (40, 60) and img.min() >= 0 and img.max() <= 1
    with pytest.raises(ValueError, match="size"):
        sample_photo(size=1000)
    with pytest.raises(ValueError, match="name"):
        sample_photo("nope.jpg")
    mask = block_mask((40, 60), 0.9, 4, np.random.default_rng(0))
    assert abs(mask.mean() - 0.9) < 0.01
    # at least half of the missing entries lie in 4 x 4 all-missing squares
    blocks = np.lib.stride_tricks.sliding_window_view(mask, (4, 4)).all(axis=(2, 3))
    covered = np.zeros_like(mask)
    for i, j in zip(*np.nonzero(blocks), strict=True):
        covered[i:i + 4, j:j + 4] = True
    assert covered.sum() >= 0.5 * mask.sum()


def test_montage_rows_spread_over_the_classes():
    from deeplinear.experiments.completion_benchmark import _mnist, montage_rows

    images, labels = _mnist(200)
    rows = montage_rows(labels)
    assert rows.size == 8 and np.unique(labels[rows]).size == 8  # eight different digits
    assert labels[rows].min() == 0 and labels[rows].max() == 9  # from both ends of the classes
    assert images.shape == (200, 784)
    # fewer classes than images shown: every class, then further images, no row twice
    rows = montage_rows(np.array([0, 0, 0, 1, 1]))
    assert list(rows[:2]) == [0, 3] and sorted(rows) == [0, 1, 2, 3, 4]


# ------------------------------------------------------------------------- compiled-code reuse


def test_masked_step_is_the_half_mean_completion_loss():
    """The dense-mask problem of small matrices: MatrixCompletion's half_mean loss and gradient."""
    import jax.numpy as jnp

    from deeplinear.completion import _MaskedCompletion
    from deeplinear.problems import MatrixCompletion

    M, missing = _low_rank(3)
    r, c = np.nonzero(~missing)
    W = np.random.default_rng(4).standard_normal(M.shape)
    ref = MatrixCompletion(r, c, M[r, c], M.shape, reduction="half_mean")
    masked = _MaskedCompletion(jnp.asarray(~missing, float), jnp.asarray(np.where(missing, 0, M)))
    (l1, g1), (l2, g2) = ref.value_and_grad(jnp.asarray(W)), masked.value_and_grad(jnp.asarray(W))
    np.testing.assert_allclose(float(l2), float(l1), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(g2), np.asarray(g1), rtol=1e-12, atol=1e-15)
    assert masked.shape == M.shape


def test_init_has_the_product_scaling():
    """Layer j ~ N(0, scale^{2/N} / d_{j-1}) (network.gaussian_init's per="product")."""
    from deeplinear.completion import _init

    dims = (300, 40, 40, 200)
    fs = _init(0, dims, 1e-2, np.float64)
    for j, w in enumerate(fs):
        assert w.shape == (dims[j + 1], dims[j])
        want = 1e-2 ** (1 / 3) / np.sqrt(dims[j])
        assert abs(np.std(np.asarray(w)) / want - 1) < 0.05  # >= 1600 entries: ~2% sampling error


def test_fits_of_one_shape_reuse_the_compiled_program():
    """Another missing pattern with the same shape and width trains without compiling again."""
    from deeplinear.train.descent import _train_program

    M, missing = _low_rank(5, shape=(26, 22))
    est = DeepMatrixCompletion(depth=3, width=6, max_steps=200, random_state=0)
    est.fit(np.where(missing, np.nan, M))
    before = _train_program._cache_size()
    _, other = _low_rank(6, shape=(26, 22), observed=0.3)
    est.fit(np.where(other, np.nan, M))
    assert _train_program._cache_size() == before


# ------------------------------------------------------------------- offsets, cold start, ratings


@pytest.mark.parametrize("biases", [False, True])
def test_validation_entries_do_not_move_the_offsets_or_the_scale(biases):
    """mean_, row_bias_ and scale_ come from the training part of the split only: changing the
    values of the held-out entries (same positions, same seed) leaves them unchanged, while
    changing a training entry moves them."""
    M, missing = _low_rank(3, noise=0.1)
    r, c = np.nonzero(~missing)
    val = validation_split(r.size, 0.1, np.random.default_rng(0))
    X = np.where(missing, np.nan, M)
    moved = X.copy()
    moved[r[val], c[val]] += 50.0  # the validation entries only
    kw = dict(depth=2, max_steps=50, biases=biases, random_state=0)
    a = DeepMatrixCompletion(**kw).fit(X)
    b = DeepMatrixCompletion(**kw).fit(moved)
    np.testing.assert_array_equal(a.mean_, b.mean_)
    np.testing.assert_array_equal(a.row_bias_, b.row_bias_)
    assert a.scale_ == b.scale_
    assert b.validation_error_ > a.validation_error_ + 10  # the split did see the change
    train = np.setdiff1d(np.arange(r.size), val)[0]
    other = X.copy()
    other[r[train], c[train]] += 50.0
    o = DeepMatrixCompletion(**kw).fit(other)
    assert o.scale_ != a.scale_ and not np.array_equal(o.mean_, a.mean_)


@pytest.mark.parametrize("biases", [False, True])
def test_cold_rows_and_columns_are_predicted_by_the_offsets(biases):
    M, missing = _low_rank(4, shape=(30, 24), observed=0.6)
    missing[[3, 17], :] = True  # two users with no rating
    missing[:, 5] = True  # an item nobody rated
    X = np.where(missing, np.nan, M)
    est = DeepMatrixCompletion(depth=3, max_steps=500, biases=biases, random_state=0).fit(X)
    assert list(est.cold_rows_) == [3, 17] and list(est.cold_cols_) == [5]
    C = est.completion()
    assert np.all(np.isfinite(C))
    np.testing.assert_allclose(C[3], est.row_bias_[3] + est.mean_, rtol=1e-12)
    np.testing.assert_allclose(C[:, 5], est.row_bias_ + est.mean_[5], rtol=1e-12)
    if biases:  # no observation: bias 0, the global mean plus the other side's bias
        assert est.row_bias_[3] == 0.0
        assert est.mean_[5] == pytest.approx(est.global_mean_)
    else:
        assert est.mean_[5] == pytest.approx(est.global_mean_)
    np.testing.assert_allclose(est.predict(np.array([3, 0]), np.array([0, 5])),
                               [C[3, 0], C[0, 5]], rtol=1e-6)
    with pytest.raises(ValueError, match="no observed entry"):
        DeepMatrixCompletion().fit(np.full((3, 3), np.nan))


def test_biases_fit_on_the_residual_and_clip_to_the_range():
    """Ratings = biases + a rank-1 interaction: with biases the offsets hold the biases and the
    factorization the interaction; clipping keeps every prediction in the observed range."""
    rng = np.random.default_rng(5)
    n_u, n_i = 60, 40
    R = (3.5 + 0.6 * rng.standard_normal((n_u, 1)) + 0.4 * rng.standard_normal((1, n_i))
         + 0.8 * np.outer(rng.standard_normal(n_u), rng.standard_normal(n_i)))
    R = np.clip(np.round(R), 1, 5)
    missing = rng.random(R.shape) > 0.5
    X = np.where(missing, np.nan, R)
    est = DeepMatrixCompletion(depth=3, max_steps=2000, biases=True, clip=True,
                               random_state=0).fit(X)
    C = est.completion()
    assert est.clip_range_ == (1.0, 5.0) and C.min() >= 1.0 and C.max() <= 5.0
    plain = DeepMatrixCompletion(depth=3, max_steps=2000, biases=False, random_state=0).fit(X)
    err = lambda P: np.sqrt(np.mean((P - R)[missing] ** 2))  # noqa: E731
    from deeplinear.biases import fit_biases
    from deeplinear.observations import Observations

    b = fit_biases(Observations.from_matrix(X))
    assert err(C) < err(np.clip(b.matrix(), 1, 5))  # the factorization adds to the biases
    assert err(C) < 1.1 * err(plain.completion())


def test_fit_triplets_names_rows_and_columns_by_id():
    rng = np.random.default_rng(6)
    users = np.array([f"u{k}" for k in rng.integers(0, 25, 400)])
    items = rng.integers(100, 130, 400)
    keep = np.unique(np.char.add(users, items.astype(str)), return_index=True)[1]
    users, items = users[keep], items[keep]
    ratings = rng.integers(1, 6, users.size).astype(float)
    est = DeepMatrixCompletion(depth=2, max_steps=200, random_state=0).fit_triplets(
        users, items, ratings)
    assert est.biases_ and est.clip_range_ == (ratings.min(), ratings.max())
    assert list(est.users_) == sorted(set(users)) and list(est.items_) == sorted(set(items))
    got = est.predict_triplets(users[:5], items[:5])
    r = np.searchsorted(est.users_, users[:5])
    c = np.searchsorted(est.items_, items[:5])
    np.testing.assert_allclose(got, est.predict(r, c))
    # unknown ids: the biases of the known side
    new = est.predict_triplets(np.array(["nobody", users[0]]), np.array([items[0], 999]))
    assert new[0] == pytest.approx(np.clip(est.mean_[c[0]], *est.clip_range_))
    assert new[1] == pytest.approx(np.clip(est.global_mean_ + est.row_bias_[r[0]],
                                           *est.clip_range_))
    with pytest.raises(ValueError, match="rated item .* 2 times: an entry may be observed once"):
        DeepMatrixCompletion().fit_triplets(["a", "a"], [1, 1], [3.0, 4.0])


def test_seeds_average_the_residuals():
    M, missing = _low_rank(7, noise=0.1)
    X = np.where(missing, np.nan, M)
    est = DeepMatrixCompletion(depth=2, max_steps=300, n_seeds=3, random_state=0).fit(X)
    assert len(est.ensemble_) == 3
    from deeplinear.completion import _product

    W = np.mean([_product(f) for f in est.ensemble_], axis=0)
    np.testing.assert_allclose(est.completion(), est.mean_[None, :] + est.scale_ * W,
                               rtol=1e-10)
    assert not np.allclose(_product(est.ensemble_[0]), _product(est.ensemble_[1]))
