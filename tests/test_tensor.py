"""deeplinear.tensor: CP and HT factorizations, tensor losses, rank estimate, and training them
through the generic engine (train, train_replicas, gradient_flow, compare)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deeplinear import network as nw
from deeplinear.problems import MatrixCompletion
from deeplinear.tensor import (
    CPEntries,
    CPFactorization,
    HTFactorization,
    ObservedEntries,
    TensorCompletion,
    compare,
    cp,
    cp_ground_truth,
    cp_rank,
    ht,
    sample_tensor_completion,
    sample_tensor_sensing,
)
from deeplinear.train import MatricizedFactorization, Schedule, gradient_flow, train, train_replicas

KEY = jax.random.PRNGKey(0)


def _max(a, b) -> float:
    return float(jnp.max(jnp.abs(jnp.asarray(a) - jnp.asarray(b))))


# --------------------------------------------------------------------------- CP


def test_cp_tensor_is_the_sum_of_outer_products():
    fs = cp.gaussian_init(KEY, (3, 4, 2), 3, 1.0)
    brute = sum(np.multiply.outer(np.multiply.outer(f0, f1), f2)
                for f0, f1, f2 in zip(*(np.asarray(f).T for f in fs), strict=True))
    assert _max(cp.cp_tensor(fs), brute) < 1e-12
    idx = jnp.array([[0, 1, 1], [2, 3, 0]])
    assert _max(cp.entries(fs, idx), brute[(idx[:, 0], idx[:, 1], idx[:, 2])]) < 1e-12


def test_cp_order2_is_a_depth2_matrix_factorization():
    A, B = cp.gaussian_init(KEY, (5, 4), 3, 1.0)
    assert _max(cp.cp_tensor((A, B)), A @ B.T) < 1e-12


@pytest.mark.parametrize("dims", [(4, 3), (3, 4, 2), (2, 3, 2, 2)])
def test_cp_factor_gradients_match_autodiff(dims):
    fs = cp.gaussian_init(KEY, dims, 3, 0.7)
    target = cp_ground_truth(jax.random.PRNGKey(1), dims, 2)
    prob = sample_tensor_completion(jax.random.PRNGKey(2), target, 10)
    analytic = cp.cp_factor_gradients(fs, prob.grad(cp.cp_tensor(fs)))
    auto = jax.grad(lambda f: prob.loss(cp.cp_tensor(f)))(fs)
    assert max(_max(a, b) for a, b in zip(analytic, auto, strict=True)) < 1e-13


def test_component_norms_balanced_init_and_balancedness():
    fs = cp.balanced_init(KEY, (3, 5, 4), 4, 0.5)
    norms = np.stack([np.linalg.norm(np.asarray(f), axis=0) for f in fs])
    assert np.allclose(norms, norms[0], rtol=1e-12)
    assert _max(cp.component_norms(fs), np.prod(norms, axis=0)) < 1e-14
    assert float(jnp.max(jnp.abs(cp.balancedness(fs)))) < 1e-12
    # the unbalanced Gaussian init has the same tensor only after balancing
    g = cp.gaussian_init(KEY, (3, 5, 4), 4, 0.5)
    assert float(jnp.max(jnp.abs(cp.balancedness(g)))) > 1e-3
    assert _max(cp.cp_tensor(g), cp.cp_tensor(cp.balanced_init(KEY, (3, 5, 4), 4, 0.5))) < 1e-14


def test_initializers_follow_dtype_and_reject_bad_input():
    assert cp.gaussian_init(KEY, (2, 3), 2, 0.1, dtype="float32")[0].dtype == jnp.float32
    with pytest.raises(ValueError, match="rank"):
        cp.gaussian_init(KEY, (2, 3), 0, 0.1)
    with pytest.raises(ValueError, match="scale"):
        cp.gaussian_init(KEY, (2, 3), 2, 0.0)


# --------------------------------------------------------------------------- HT


def test_ht_end_to_end_matches_a_hand_written_contraction():
    param = HTFactorization((2, 3, 4), ranks=(3, 2))
    assert param.tree == ((0, 1), 2)
    B0, B1, B01, B2, Broot = ht.gaussian_init(KEY, param, 1.0)
    U01 = np.einsum("ir,jr,rs->ijs", B0, B1, B01)
    brute = np.einsum("ijs,ks,s->ijk", U01, B2, Broot[:, 0])
    assert _max(param.end_to_end((B0, B1, B01, B2, Broot)), brute) < 1e-12


def test_ht_custom_tree_puts_modes_back_in_order():
    param = HTFactorization((2, 3, 4), tree=((2, 0), 1), ranks=2)
    fs = ht.gaussian_init(KEY, param, 1.0)
    B2, B0, B20, B1, Broot = fs  # post-order: 2, 0, (2, 0), 1, root
    brute = np.einsum("kr,ir,rs,js,s->ijk", B2, B0, B20, B1, Broot[:, 0])
    assert _max(param.end_to_end(fs), brute) < 1e-12


def test_ht_local_tensor_and_its_gradient():
    param = HTFactorization((2, 3, 2, 2), ranks=3)
    fs = ht.gaussian_init(KEY, param, 0.8)
    W = param.end_to_end(fs)
    G = jax.random.normal(jax.random.PRNGKey(3), W.shape)
    @functools.partial(jax.jit, static_argnums=0)
    def at_node(v):
        L = ht.local_tensor(param, fs, v)
        E = jax.random.normal(jax.random.PRNGKey(4), L.shape)
        # W is linear in L: <G, W(L + E) - W(L)> = <G_v, E>
        lhs = jnp.vdot(G, param.end_to_end_with_local(fs, v, L + E) - W)
        return (param.end_to_end_with_local(fs, v, L), lhs,
                jnp.vdot(ht.local_tensor_gradient(param, fs, v, G), E),
                ht.local_component_vectors(param, fs, v), ht.local_component_norms(param, fs, v))

    for v in param.internal_nodes():
        W_again, lhs, rhs, vecs, got = at_node(v)
        assert _max(W_again, W) < 1e-12 and abs(float(lhs - rhs)) < 1e-10
        norms = np.prod([np.linalg.norm(np.asarray(M), axis=0) for M in vecs], axis=0)
        assert _max(got, norms) < 1e-13
    balanced = ht.balance_node(param, fs, param.tree)
    assert _max(param.end_to_end(balanced), W) < 1e-12
    vecs = ht.local_component_vectors(param, balanced, param.tree)
    norms = np.stack([np.linalg.norm(np.asarray(M), axis=0) for M in vecs])
    assert np.allclose(norms, norms[0], rtol=1e-12)


@pytest.mark.parametrize("bad", [dict(dims=(3,)), dict(dims=(2, 2), tree=(0, 0)),
                                 dict(dims=(2, 2, 2), ranks=(2,))])
def test_ht_rejects_bad_structure(bad):
    with pytest.raises(ValueError):
        HTFactorization(**bad)


# --------------------------------------------------------------------------- problems


def test_tensor_completion_order2_equals_matrix_completion():
    W_star = jax.random.normal(KEY, (4, 5))
    prob = sample_tensor_completion(jax.random.PRNGKey(1), W_star, 7)
    mc = MatrixCompletion(np.asarray(prob.index[:, 0]), np.asarray(prob.index[:, 1]),
                          np.asarray(prob.values), (4, 5))
    W = jax.random.normal(jax.random.PRNGKey(2), (4, 5))
    (l1, g1), (l2, g2) = prob.value_and_grad(W), mc.value_and_grad(W)
    assert abs(float(l1 - l2)) < 1e-14 and _max(g1, g2) < 1e-14
    assert prob.mask().sum() == 7


@pytest.mark.parametrize("reduction", ["mean", "half_mean", "half_sum"])
def test_tensor_losses_gradients_match_autodiff(reduction):
    target = cp_ground_truth(KEY, (3, 2, 4), 2)
    W = jax.random.normal(jax.random.PRNGKey(5), (3, 2, 4))
    for prob in (sample_tensor_completion(jax.random.PRNGKey(1), target, 9, reduction),
                 sample_tensor_sensing(jax.random.PRNGKey(1), target, 9, reduction)):
        assert _max(prob.grad(W), jax.grad(prob.loss)(W)) < 1e-13
        assert float(prob.loss(target)) < 1e-28
    obs = ObservedEntries(jnp.arange(4.0), reduction)
    p = jnp.array([0.5, 1.0, -1.0, 3.0])
    assert _max(obs.grad(p), jax.grad(obs.loss)(p)) < 1e-14


def test_ground_truth_has_unit_norm_and_rank():
    W = cp_ground_truth(KEY, (8, 8, 8), 1)
    assert abs(float(jnp.linalg.norm(W)) - 1) < 1e-12
    assert np.linalg.matrix_rank(np.asarray(W).reshape(8, 64)) == 1


@pytest.mark.parametrize("bad", [dict(index=[[0, 5]], values=[1.0], shape=(2, 2)),
                                 dict(index=[[0, 1]], values=[1.0, 2.0], shape=(2, 2)),
                                 dict(index=[[0.0, 1.0]], values=[1.0], shape=(2, 2)),
                                 dict(index=[[0, 1]], values=[np.nan], shape=(2, 2))])
def test_tensor_completion_rejects_bad_data(bad):
    with pytest.raises(ValueError):
        TensorCompletion(**bad)


def test_cp_rank_of_planted_tensors():
    assert cp_rank(np.asarray(cp_ground_truth(KEY, (4, 4, 4), 1))).rank == 1
    fs = [np.random.default_rng(0).standard_normal((d, 2)) for d in (4, 3, 3)]
    W = np.einsum("ir,jr,kr->ijk", *fs)
    assert cp_rank(W, restarts=3).rank == 2
    assert cp_rank(np.zeros((2, 2))).rank == 0


# --------------------------------------------------------------------------- training


def _rank1_problem(dims=(4, 4, 4), m=40):
    target = cp_ground_truth(KEY, dims, 1)
    return target, sample_tensor_completion(jax.random.PRNGKey(1), target, m)


def test_train_cp_matches_a_hand_written_gd_loop():
    _, prob = _rank1_problem()
    fs = cp.gaussian_init(jax.random.PRNGKey(7), (4, 4, 4), 3, 0.5)
    res = train(fs, prob, lr=0.1, steps=25, schedule=Schedule.every(5),
                parameterization=CPFactorization(),
                state_metrics={"sigma_max": lambda f: jnp.max(cp.component_norms(f))})
    ref = fs
    for _ in range(25):
        g = jax.grad(lambda f: prob.loss(cp.cp_tensor(f)))(ref)
        ref = tuple(w - 0.1 * gw for w, gw in zip(ref, g, strict=True))
    assert max(_max(a, b) for a, b in zip(res.state, ref, strict=True)) < 1e-12
    assert _max(res.W, cp.cp_tensor(ref)) < 1e-12
    assert res.metrics["sigma_max"].shape == res.loss.shape == (6,)


def test_train_replicas_and_divergence_with_ht():
    _, prob = _rank1_problem((2, 3, 2), m=8)
    param = HTFactorization((2, 3, 2), ranks=2)
    keys = jax.random.split(KEY, 3)
    fs = jax.vmap(lambda k: ht.gaussian_init(k, param, 0.5))(keys)
    res = train_replicas(fs, prob, lr=jnp.array([0.05, 0.05, 1e4]), steps=200,
                         parameterization=param)
    assert list(res.status[:2]) != ["diverged"] * 2 and res.status[2] == "diverged"
    assert res.W.shape == (3, 2, 3, 2) and np.all(np.isfinite(res.loss))
    single = train(tuple(w[0] for w in fs), prob, lr=0.05, steps=200, parameterization=param)
    assert np.allclose(single.loss[-1], res.loss[0][-1], rtol=1e-10)


def test_gradient_flow_with_cp_conserves_balancedness():
    _, prob = _rank1_problem(m=30)
    fs = cp.gaussian_init(jax.random.PRNGKey(3), (4, 4, 4), 2, 0.6)
    res = gradient_flow(fs, prob, 5.0, parameterization=CPFactorization(),
                        ts=np.linspace(0, 5.0, 6), rtol=1e-10, atol=1e-12,
                        state_metrics={"D": cp.balancedness})
    assert res.status == "converged" and res.loss[-1] < res.loss[0]
    assert float(np.max(np.abs(res.metrics["D"] - res.metrics["D"][0]))) < 1e-7


def test_matricized_order2_is_the_plain_deep_matrix_factorization():
    W_star = jax.random.normal(KEY, (4, 5))
    prob = sample_tensor_completion(jax.random.PRNGKey(1), W_star, 12)
    fs = nw.gaussian_init(jax.random.PRNGKey(2), (5, 5, 4), 0.3)
    a = train(fs, prob, lr=0.05, steps=50, parameterization=MatricizedFactorization((4, 5), 1))
    b = train(fs, prob, lr=0.05, steps=50)
    assert _max(a.W, b.W) < 1e-13


def test_cp_entries_trains_without_forming_the_tensor():
    rng = np.random.default_rng(0)
    index = jnp.asarray(rng.integers(0, 2, size=(30, 12)))
    values = jnp.asarray(2.0 * rng.integers(0, 2, size=30))
    param = CPEntries(index)
    fs = cp.stack(cp.gaussian_init(KEY, (2,) * 12, 2, 1e-3, mean=1.0))
    dense = cp.cp_tensor(cp.gaussian_init(KEY, (2,) * 12, 2, 1e-3, mean=1.0))
    assert _max(param.end_to_end(fs), dense[tuple(index.T)]) < 1e-12
    res = train(fs, ObservedEntries(values), lr=1e-2, steps=300, optimizer="adam",
                parameterization=param)
    assert res.loss[-1] < 0.5 * res.loss[0]


def test_compare_trains_the_three_factorizations_on_one_problem():
    target, prob = _rank1_problem((4, 4), m=12)
    out = compare(prob, KEY, lr=1e-2, steps=400, components=4, ht_ranks=4, init_scale=0.1,
                  metrics={"err": lambda W: jnp.linalg.norm(W - target)})
    assert set(out) == {"matrix", "cp", "ht"}
    for res in out.values():
        assert res.W.shape == (4, 4) and res.loss[-1] < 0.1 * res.loss[0]
    with pytest.raises(ValueError, match="methods"):
        compare(prob, KEY, lr=1e-2, steps=1, methods=("mlp",))


def test_train_rejects_a_shape_mismatch_and_sparse_for_tensors():
    _, prob = _rank1_problem()
    fs = cp.gaussian_init(KEY, (4, 4, 3), 2, 0.1)
    with pytest.raises(ValueError, match="shape"):
        train(fs, prob, lr=0.1, steps=1, parameterization=CPFactorization())
    fs = cp.gaussian_init(KEY, (4, 4, 4), 2, 0.1)
    with pytest.raises(ValueError, match="sparse"):
        train(fs, prob, lr=0.1, steps=1, parameterization=CPFactorization(), sparse=True)
