"""The sparse completion step: the same trajectories as the dense step, the
automatic rule, divergence handling.

Tolerances: both paths compute the same sums of products in a different order (the sparse one
sums over observations row by row in a CSR kernel and splits the product chain at a hidden
layer; the dense one scatters into a dense gradient and multiplies full matrices), so one step
differs by a few ulps. Over the 150 steps run here (a contracting GD or Adam) the differences stay
below 1e-13 relative in practice; the assertions allow 1e-9 (relative to the largest value) to be
independent of BLAS and of the machine, far below any difference a wrong product would make.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deeplinear import _native
from deeplinear import network as nw
from deeplinear import problems as pb
from deeplinear import train as tr
from deeplinear.train.descent import _step_problem

RTOL = 1e-9
# the ways of computing the observed entries; "native" where the kernel builds (a C++ compiler)
FORWARDS = ["gather", "dense"] + (["native"] if _native.available() else [])


def _completion(shape, m, reduction, seed=0):
    W_star = pb.low_rank_ground_truth(jax.random.PRNGKey(seed), shape, 1)
    return pb.sample_completion(jax.random.PRNGKey(seed + 1), W_star, m, reduction)


def _close(a, b, rtol=RTOL):
    a, b = np.asarray(a), np.asarray(b)
    scale = max(np.abs(b).max(), 1e-300)
    assert np.abs(a - b).max() <= rtol * scale, np.abs(a - b).max() / scale


def _assert_same_run(a, b):
    assert np.array_equal(a.steps, b.steps)
    assert np.all(a.status == b.status)
    _close(a.loss, b.loss)
    for x, y in zip(a.factors, b.factors, strict=True):
        _close(x, y)


# (d_0, ..., d_N): end-to-end (d_N x d_0) square 8x8 or rectangular 7x11; hidden widths below
# and above the outer ones; depth 1 to 4
DIMS = [
    (11, 7),
    (11, 4, 7),
    (11, 15, 7),
    (8, 8, 8, 8),
    (11, 5, 9, 7),
    (8, 20, 20, 8),
    (11, 20, 3, 6, 7),
    (6, 6, 6, 6, 6),
]


@pytest.mark.parametrize("dims", DIMS, ids=lambda d: "x".join(map(str, d)))
@pytest.mark.parametrize("reduction", ["mean", "half_sum"])
@pytest.mark.parametrize("optimizer", ["gd", "adam"])
def test_sparse_and_dense_train_agree(dims, reduction, optimizer):
    prob = _completion((dims[-1], dims[0]), 30, reduction)
    fs = nw.gaussian_init(jax.random.PRNGKey(2), dims, 0.5)
    lr = 0.02 if optimizer == "adam" else (0.1 if reduction == "mean" else 0.01)
    kw = dict(lr=lr, steps=150, optimizer=optimizer, schedule=tr.Schedule.every(10))
    dense = tr.train(fs, prob, sparse=False, **kw)
    sparse = tr.train(fs, prob, sparse=True, **kw)
    assert dense.loss[-1] < dense.loss[0]  # a real run, not a stuck one
    _assert_same_run(sparse, dense)


@pytest.mark.parametrize("dims", [(11, 6, 9, 7), (7, 3, 11), (8, 8, 8, 8, 8)],
                         ids=lambda d: "x".join(map(str, d)))
@pytest.mark.parametrize("optimizer", ["gd", "adam"])
def test_sparse_and_dense_train_replicas_agree(dims, optimizer):
    prob = _completion((dims[-1], dims[0]), 40, "mean")
    keys = jax.random.split(jax.random.PRNGKey(3), 3)
    fs = jax.vmap(lambda k: nw.gaussian_init(k, dims, 0.5))(keys)
    lrs = jnp.array([0.01, 0.03, 0.05])
    kw = dict(lr=lrs, steps=150, optimizer=optimizer, schedule=tr.Schedule.every(10))
    _assert_same_run(tr.train_replicas(fs, prob, sparse=True, **kw),
                     tr.train_replicas(fs, prob, sparse=False, **kw))


@pytest.mark.parametrize("forward", FORWARDS)
def test_every_split_layer_and_forward_agree(forward):
    dims = (11, 20, 3, 6, 7)
    prob = _completion((7, 11), 30, "half_mean")
    fs = nw.gaussian_init(jax.random.PRNGKey(4), dims, 0.6)
    dense = tr.train(fs, prob, lr=0.05, steps=100, sparse=False)
    for k in (1, 2, 3):
        sp = pb.SparseCompletion(prob, dims, split=k, forward=forward)
        assert (sp.split, sp.forward) == (k, forward)
        _assert_same_run(tr.train(fs, sp, lr=0.05, steps=100), dense)


def test_gather_forward_in_chunks(monkeypatch):
    """The observed entries are gathered in chunks when there are many: same values."""
    monkeypatch.setattr(pb, "_CHUNK_ELEMENTS", 64)  # chunks of 64 // width observations
    dims = (11, 5, 8, 7)
    prob = _completion((7, 11), 50, "mean")  # 50 is not a multiple of the chunk: padding
    fs = nw.gaussian_init(jax.random.PRNGKey(5), dims, 0.6)
    sp = pb.SparseCompletion(prob, dims, split=1, forward="gather")
    loss, grads = sp.value_and_factor_grads(fs)
    W = nw.end_to_end(fs)
    ref_loss, G = prob.value_and_grad(W)
    _close(loss, ref_loss)
    for g, h in zip(grads, nw.factor_gradients(fs, G), strict=True):
        _close(g, h)


def test_wide_operand_in_column_blocks(monkeypatch):
    """Sparse-dense products split a wide dense operand into column blocks: same product."""
    monkeypatch.setattr(pb, "_SPMM_BLOCK_ELEMENTS", 50)
    rng = np.random.default_rng(0)
    prob = _completion((9, 12), 40, "mean")
    sp = pb.SparseCompletion(prob, (12, 10, 9))
    data = jnp.asarray(rng.standard_normal(40))
    X = jnp.asarray(rng.standard_normal((12, 23)))
    G = np.zeros((9, 12))
    np.add.at(G, (np.asarray(sp.rows), np.asarray(sp.cols)), np.asarray(data))
    _close(pb._csr_matmul(data, sp.cols, sp.indptr, X), G @ np.asarray(X), rtol=1e-12)


def test_csr_matmul_under_vmap():
    """Both batching cases (shared residual / one per replica) give the dense products."""
    rng = np.random.default_rng(1)
    prob = _completion((9, 12), 40, "mean")
    sp = pb.SparseCompletion(prob, (12, 10, 9))
    rows, cols = np.asarray(sp.rows), np.asarray(sp.cols)

    def dense(d):
        G = np.zeros((9, 12))
        np.add.at(G, (rows, cols), np.asarray(d))
        return G

    X = jnp.asarray(rng.standard_normal((3, 12, 5)))
    data = jnp.asarray(rng.standard_normal(40))
    out = jax.vmap(pb._csr_matmul, in_axes=(None, None, None, 0))(data, sp.cols, sp.indptr, X)
    _close(out, dense(data) @ np.asarray(X), rtol=1e-12)
    batch = jnp.asarray(rng.standard_normal((3, 40)))
    out = jax.jit(jax.vmap(pb._csr_matmul, in_axes=(0, None, None, 0)))(batch, sp.cols,
                                                                        sp.indptr, X)
    ref = np.stack([dense(b) @ np.asarray(x) for b, x in zip(batch, X, strict=True)])
    _close(out, ref, rtol=1e-12)
    out = jax.vmap(pb._csr_matmul, in_axes=(0, None, None, None))(batch, sp.cols, sp.indptr, X[0])
    _close(out, np.stack([dense(b) @ np.asarray(X[0]) for b in batch]), rtol=1e-12)


def test_duplicate_observations_count_twice_like_the_dense_path():
    prob = pb.MatrixCompletion([0, 2, 2, 1, 0], [1, 3, 3, 0, 1], [1.0, 2.0, 0.5, -1.0, 3.0],
                               (3, 4), "half_sum")
    dims = (4, 5, 2, 3)
    fs = nw.gaussian_init(jax.random.PRNGKey(6), dims, 0.7)
    loss, grads = pb.SparseCompletion(prob, dims).value_and_factor_grads(fs)
    ref_loss, G = prob.value_and_grad(nw.end_to_end(fs))
    _close(loss, ref_loss)
    for g, h in zip(grads, nw.factor_gradients(fs, G), strict=True):
        _close(g, h)


@settings(max_examples=25, deadline=None)
@given(
    widths=st.lists(st.integers(1, 6), min_size=2, max_size=5),
    frac=st.floats(0.05, 1.0),
    reduction=st.sampled_from(["mean", "half_mean", "half_sum"]),
    seed=st.integers(0, 2**16),
)
def test_property_sparse_step_is_the_dense_gradient(widths, frac, reduction, seed):
    """For any widths (depth 1-4) and any split: loss and layer gradients of the sparse step
    equal ``factor_gradients`` of the dense gradient."""
    d_out, d_in = widths[-1], widths[0]
    rng = np.random.default_rng(seed)
    m = max(1, int(frac * d_out * d_in))
    idx = rng.choice(d_out * d_in, m, replace=False)
    prob = pb.MatrixCompletion(idx // d_in, idx % d_in, rng.standard_normal(m), (d_out, d_in),
                               reduction)
    fs = nw.gaussian_init(jax.random.PRNGKey(seed), widths, 0.8)
    ref_loss, G = prob.value_and_grad(nw.end_to_end(fs))
    ref = nw.factor_gradients(fs, G)
    splits = range(1, len(widths) - 1) if len(widths) > 2 else [None]
    for k in splits:
        for forward in FORWARDS:
            sp = pb.SparseCompletion(prob, widths, split=k, forward=forward)
            loss, grads = sp.value_and_factor_grads(fs)
            _close(loss, ref_loss, rtol=1e-12)
            for g, h in zip(grads, ref, strict=True):
                assert g.shape == h.shape
                np.testing.assert_allclose(g, h, rtol=1e-10, atol=1e-12 * (1 + np.abs(h).max()))


def test_rule_picks_dense_for_2x2_and_sparse_for_a_large_sparse_problem():
    two = pb.completion_2x2()
    for dims in [(2, 2, 2, 2), (2, 2, 2), (2, 2)]:
        assert not pb.sparse_is_cheaper(two, dims)
        assert _step_problem(two, dims, None) is two
    n, m = 2000, 40_000
    rng = np.random.default_rng(0)
    idx = rng.choice(n * n, m, replace=False)
    big = pb.MatrixCompletion(idx // n, idx % n, rng.standard_normal(m), (n, n))
    for dims in [(n, 128, 128, n), (n, n, n, n)]:
        assert pb.sparse_is_cheaper(big, dims)
        chosen = _step_problem(big, dims, None)
        assert isinstance(chosen, pb.SparseCompletion) and chosen.problem is big
    # 1% observed: the entries are sampled (by the native kernel where it is built)
    sampled = "native" if _native.available(big.values.dtype) else "gather"
    assert pb.SparseCompletion(big, (n, 128, 128, n)).forward == sampled
    assert not pb.sparse_is_cheaper(big, (n, n))  # depth 1: nothing to save
    # overrides
    assert _step_problem(big, (n, 128, 128, n), False) is big
    assert isinstance(_step_problem(two, (2, 2, 2, 2), True), pb.SparseCompletion)


def test_rule_keeps_other_problems_dense_and_refuses_sparse_for_them():
    sensing = pb.sample_sensing(jax.random.PRNGKey(0), jnp.eye(3), 5)
    assert not pb.sparse_is_cheaper(sensing, (3, 3, 3))
    fs = nw.gaussian_init(jax.random.PRNGKey(1), (3, 3, 3), 0.5)
    with pytest.raises(ValueError, match="MatrixCompletion"):
        tr.train(fs, sensing, lr=0.1, steps=2, sparse=True)
    with pytest.raises(ValueError, match="sparse must be"):
        tr.train(fs, sensing, lr=0.1, steps=2, sparse="yes")


def test_sparse_completion_validation_and_overrides():
    prob = _completion((7, 11), 30, "mean")
    with pytest.raises(ValueError, match="end-to-end shape"):
        pb.SparseCompletion(prob, (7, 4, 11))
    with pytest.raises(ValueError, match="split"):
        pb.SparseCompletion(prob, (11, 4, 7), split=2)
    with pytest.raises(ValueError, match="forward"):
        pb.SparseCompletion(prob, (11, 4, 7), forward="scatter")
    with pytest.raises(ValueError, match="MatrixCompletion"):
        pb.SparseCompletion(pb.WhitenedSquare(jnp.eye(2)), (2, 2))
    sp = pb.SparseCompletion(prob, (11, 4, 7))
    with pytest.raises(ValueError, match="built for"):
        sp.value_and_factor_grads(nw.gaussian_init(jax.random.PRNGKey(0), (11, 5, 7), 0.5))
    # a SparseCompletion is the same loss; train rebuilds it for other widths, or goes dense
    W = jnp.ones((7, 11))
    assert float(sp.loss(W)) == float(prob.loss(W)) and sp.shape == prob.shape
    fs = nw.gaussian_init(jax.random.PRNGKey(0), (11, 5, 5, 7), 0.5)
    assert _step_problem(sp, (11, 5, 5, 7), None).dims == (11, 5, 5, 7)
    assert _step_problem(sp, (11, 4, 7), None) is sp
    assert _step_problem(sp, (11, 4, 7), False) is prob
    _assert_same_run(tr.train(fs, sp, lr=0.1, steps=20), tr.train(fs, prob, lr=0.1, steps=20,
                                                                   sparse=False))


def test_divergence_on_the_sparse_path_records_no_nan():
    dims = (11, 6, 6, 7)
    prob = _completion((7, 11), 40, "half_sum")
    fs = nw.gaussian_init(jax.random.PRNGKey(7), dims, 1.0)
    kw = dict(lr=5.0, steps=200, schedule=tr.Schedule.every(1),
              metrics={"fro": lambda W: jnp.linalg.norm(W)})
    sparse = tr.train(fs, prob, sparse=True, **kw)
    dense = tr.train(fs, prob, sparse=False, **kw)
    assert sparse.status == dense.status == "diverged"
    assert sparse.diverged_step == dense.diverged_step
    assert np.all(np.isfinite(sparse.loss)) and np.all(np.isfinite(sparse.metrics["fro"]))
    assert all(np.all(np.isfinite(w)) for w in sparse.factors)
    # replicas: only the diverging one stops, the others run on
    fs3 = jax.vmap(lambda k: nw.gaussian_init(k, dims, 1.0))(jax.random.split(jax.random.PRNGKey(7), 3))
    res = tr.train_replicas(fs3, prob, lr=jnp.array([1e-3, 5.0, 2e-3]), steps=100, sparse=True)
    assert list(res.status) == ["max_steps", "diverged", "max_steps"]
    assert np.all(np.isfinite(res.loss))
