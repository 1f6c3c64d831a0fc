"""dtype follows the data: ``import deeplinear`` leaves JAX's configuration alone, every function
computes in the dtype of its inputs (float32 runs inside ``jax.enable_x64(False)``, float64 under
the suite's default), and the precision-sensitive parts (experiments, theory checks) run in
float64 whatever the caller's setting.

Tolerances, relative to the largest entry of the float64 value (float32 eps = 1.2e-7): 1e-5 for
a product or metric of O(1) entries (80 eps, room for cancellation in the shapes hypothesis draws;
measured at most 1.5e-7), and 1e-5 for a float32 run against the float64 run from the same
(float32-representable) start or against a closed form (the problems contract, so rounding does
not grow along 200 steps; measured at most 1.4e-7 for GD, 8.4e-7 for the flows at rtol 1e-6).
A float16-sized error (1e-3) or a silent upcast (the dtype asserts) fails.
"""

from __future__ import annotations

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import deeplinear
from deeplinear import metrics, network, problems, simulate, train
from deeplinear.experiments import REGISTRY
from deeplinear.experiments.base import Experiment, Results
from deeplinear.theory import CHECKS

F32 = np.dtype("float32")
F64 = np.dtype("float64")
TRAJ_RTOL = 1e-5  # float32 runs vs float64 runs or closed forms (see the docstring)
ONE_RTOL = 1e-5  # one product / metric of O(1) entries


def _close(a32, a64, rtol):
    a32, a64 = np.asarray(a32), np.asarray(a64)
    assert a32.dtype == F32 and a64.dtype == F64, (a32.dtype, a64.dtype)
    scale = max(float(np.max(np.abs(a64))), 1e-30)
    assert np.max(np.abs(a32.astype(F64) - a64)) <= rtol * scale


def _down(tree):
    """float32 copies of float64 arrays (so both runs start from the same numbers)."""
    return jax.tree_util.tree_map(lambda a: np.asarray(a, dtype=F32), tree)


# --------------------------------------------------------------------------- import


def test_import_leaves_jax_config_alone():
    code = (
        "import importlib, pkgutil, jax, jax.numpy as jnp\n"
        "import deeplinear\n"
        "for m in pkgutil.walk_packages(deeplinear.__path__, 'deeplinear.'):\n"
        "    if not any(p.startswith('_') for p in m.name.split('.')):\n"
        "        importlib.import_module(m.name)\n"
        "print(jax.config.jax_enable_x64, jnp.ones(1).dtype, len(deeplinear.experiments.REGISTRY))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    x64, dtype, n_experiments = out.stdout.split()
    assert (x64, dtype) == ("False", "float32")
    assert int(n_experiments) >= 5


def test_float64_switches():
    assert jax.config.jax_enable_x64  # the suite's default (tests/conftest.py)
    with jax.enable_x64(False):
        assert jnp.ones(1).dtype == F32
        with deeplinear.float64():
            assert jnp.ones(1).dtype == F64
        assert jnp.ones(1).dtype == F32
    deeplinear.enable_x64(True)  # the suite's setting: a no-op here
    assert jax.config.jax_enable_x64


# --------------------------------------------------------------------------- initializers, data


INITS = {
    "gaussian": lambda dims, dtype=None: network.gaussian_init(jax.random.PRNGKey(0), dims, 0.5,
                                                               dtype=dtype),
    "gaussian_product": lambda dims, dtype=None: network.gaussian_init(
        jax.random.PRNGKey(0), dims, 0.5, per="product", dtype=dtype),
    "identity": lambda dims, dtype=None: network.identity_init(dims, 0.5, dtype=dtype),
    "orthogonal": lambda dims, dtype=None: network.orthogonal_init(jax.random.PRNGKey(0), dims, 0.5,
                                                                   dtype=dtype),
    "balanced": lambda dims, dtype=None: network.balanced_init(jax.random.PRNGKey(0), dims, 0.5,
                                                               dtype=dtype),
}


@pytest.mark.parametrize("name", sorted(INITS))
def test_initializers_take_a_dtype(name):
    dims = (3, 5, 4, 2)
    with jax.enable_x64(False):
        default32 = INITS[name](dims)
    explicit32 = INITS[name](dims, "float32")  # x64 on: float32 on request
    default64 = INITS[name](dims)
    for fs, dtype in ((default32, F32), (explicit32, F32), (default64, F64)):
        assert [w.dtype for w in fs] == [dtype] * 3
        assert [w.shape for w in fs] == [(5, 3), (4, 5), (2, 4)]
    if name == "identity":  # one rounding of scale^{1/N}
        _close(explicit32[1], INITS[name](dims, "float64")[1], 2.0**-24)
    if name in ("orthogonal", "balanced"):  # balanced by construction, in float32 too
        assert float(network.imbalance(explicit32)) <= 1e-5
    if name == "orthogonal":  # W_{1:N} = 0.5 Q with Q Q^T = I (d_N <= d_0)
        W = network.end_to_end(explicit32)
        assert W.dtype == F32
        np.testing.assert_allclose(W @ W.T, 0.25 * np.eye(2), atol=1e-6)
    with jax.enable_x64(False), pytest.raises(ValueError, match="float64 needs JAX's x64"):
        INITS[name](dims, "float64")


def test_bad_dtype_is_one_error():
    for bad in ("int32", "complex", "nonsense"):
        with pytest.raises(ValueError, match="dtype must be a float dtype"):
            network.identity_init((2, 2), 1.0, dtype=bad)


def test_generators_take_a_dtype():
    key = jax.random.PRNGKey(3)
    with jax.enable_x64(False):
        W32 = problems.low_rank_ground_truth(key, (6, 5), 2)
        assert W32.dtype == F32
        for p in (problems.sample_completion(key, W32, 10), problems.completion_2x2(),
                  problems.completion_dxd(3), problems.sample_sensing(key, W32, 4),
                  problems.WhitenedSquare(np.eye(2)), problems.LpRegression(np.ones((3, 2)), [1, 2, 3]),
                  problems.MatrixCompletion([0], [1], np.array([2.0]), (2, 2))):
            assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(p) if
                    jnp.issubdtype(leaf.dtype, jnp.floating)} == {F32}, type(p).__name__
    W64 = problems.low_rank_ground_truth(key, (6, 5), 2)
    assert W64.dtype == F64
    np.testing.assert_allclose(np.linalg.norm(W32), np.sqrt(30), rtol=1e-6)
    # the sampled entries follow W_star (float32 under x64 too), or the dtype asked for
    assert problems.sample_completion(key, W32, 10, dtype="float64").values.dtype == F64
    assert problems.sample_sensing(key, W64, 4, dtype=jnp.float32).A.dtype == F32
    assert problems.sample_sensing(key, W32, 4).y.dtype == F32  # follows W_star, not the default
    assert problems.completion_2x2(dtype="float32").values.dtype == F32
    assert problems.completion_dxd(3, dtype="float32").values.dtype == F32
    assert problems.low_rank_ground_truth(key, (6, 5), 2, dtype="float32").dtype == F32
    # LpRegression / MatrixSensing: one dtype per problem (the promotion of their data)
    lp = problems.LpRegression(np.ones((3, 2), np.float32), np.ones(3))
    assert lp.X.dtype == lp.Y.dtype == F64


# --------------------------------------------------------------------------- products and metrics


@settings(max_examples=4, deadline=None)
@given(dims=st.lists(st.integers(1, 4), min_size=2, max_size=4), seed=st.integers(0, 2**16))
def test_end_to_end_and_metrics_in_float32(dims, seed):
    """float32 factors give float32 products and metrics, equal to the float64 ones to ~1e-5."""
    f64 = network.gaussian_init(jax.random.PRNGKey(seed), dims, 1.0, per="product")
    f32 = _down(f64)
    with jax.enable_x64(False):
        W32 = network.end_to_end(tuple(jnp.asarray(w) for w in f32))
        nuc32 = metrics.nuclear_norm(W32)
        err32 = metrics.reconstruction_error(W32, jnp.ones_like(W32))
    W64 = network.end_to_end(tuple(jnp.asarray(w, F64) for w in f32))
    _close(W32, W64, ONE_RTOL)
    _close(nuc32, metrics.nuclear_norm(W64), ONE_RTOL)
    _close(err32, metrics.reconstruction_error(W64, jnp.ones_like(W64)), ONE_RTOL)


def test_rank_metrics_use_the_dtype_resolution():
    """The default rank tolerance is sigma_1 max(shape) eps of the input's dtype: 1e-9 is noise in
    float32 and a direction in float64."""
    W = np.diag([1.0, 1e-9])
    with jax.enable_x64(False):
        assert int(metrics.rank(jnp.asarray(W))) == 1
        assert metrics.effective_rank(jnp.asarray(W)).dtype == F32
    assert int(metrics.rank(jnp.asarray(W))) == 2


# --------------------------------------------------------------------------- training


def _completion_setup(n=12, hidden=10, m=60):
    W_star = problems.low_rank_ground_truth(jax.random.PRNGKey(1), (n, n), 2)
    problem = problems.sample_completion(jax.random.PRNGKey(2), W_star, m)
    f64 = network.gaussian_init(jax.random.PRNGKey(3), (n, hidden, hidden, n), 0.3, per="product")
    return problem, f64


@pytest.mark.parametrize("sparse", [False, True])
def test_train_in_float32_matches_float64(sparse):
    problem64, f64 = _completion_setup()
    f32, values32 = _down(f64), _down(problem64.values)
    f64 = tuple(jnp.asarray(w, F64) for w in f32)  # the same starting numbers
    problem64 = problems.MatrixCompletion(problem64.rows, problem64.cols, values32.astype(F64),
                                          problem64.shape)
    kw = dict(lr=0.5, steps=200, sparse=sparse, metrics={"nuc": metrics.nuclear_norm},
              schedule=train.Schedule.every(50))
    with jax.enable_x64(False):
        problem32 = problems.MatrixCompletion(problem64.rows, problem64.cols, values32,
                                              problem64.shape)
        r32 = train.train(tuple(jnp.asarray(w) for w in f32), problem32, **kw)
    r64 = train.train(f64, problem64, **kw)
    assert r32.status == r64.status == "max_steps"
    assert [w.dtype for w in r32.state] == [F32] * 3 and r32.metrics["nuc"].dtype == F32
    _close(r32.W, r64.W, TRAJ_RTOL)
    _close(r32.loss, r64.loss, TRAJ_RTOL)
    assert r64.loss[-1] < 0.5 * r64.loss[0]  # it trained
    if sparse:
        return
    # float32 inputs under x64 stay float32 (lr, weight decay and records do not upcast)
    r32x = train.train(tuple(jnp.asarray(w) for w in f32), problem32, weight_decay=1e-4, **kw)
    assert r32x.W.dtype == r32x.loss.dtype == F32
    # mixed inputs run in their promotion, as in jax.numpy
    assert train.train(tuple(jnp.asarray(w) for w in f32), problem64, **kw).W.dtype == F64


def test_train_replicas_and_optimizers_in_float32():
    problem64, f64 = _completion_setup(n=6, hidden=6, m=20)
    with jax.enable_x64(False):
        problem = problems.MatrixCompletion(problem64.rows, problem64.cols, _down(problem64.values),
                                            problem64.shape)
        keys = jax.random.split(jax.random.PRNGKey(0), 3)
        fs = jax.vmap(lambda k: network.gaussian_init(k, (6, 6, 6, 6), 0.3, per="product"))(keys)
        r = train.train_replicas(fs, problem, lr=jnp.array([0.1, 0.2, 0.3]), steps=50)
        assert r.W.dtype == r.loss.dtype == F32 and r.W.shape == (3, 6, 6)
        assert np.all(r.loss[:, -1] < r.loss[:, 0])
        # GroupRMSprop's state (ours) in float32; optax's own states follow the parameters
        one = train.train(tuple(w[0] for w in fs), problem, lr=1e-2, steps=20,
                          optimizer="group_rmsprop")
        assert one.W.dtype == F32 and np.isfinite(one.loss).all()


def test_gradient_flow_in_float32_matches_float64():
    f32 = _down(network.balanced_init(jax.random.PRNGKey(0), (3, 4, 3), 1.0))
    target = np.diag([2.0, 1.0, 0.5])
    kw = dict(ts=np.linspace(0.0, 5.0, 6), rtol=1e-6, atol=1e-8)
    with jax.enable_x64(False):
        r32 = train.gradient_flow(tuple(jnp.asarray(w) for w in f32),
                                  problems.WhitenedSquare(target), 5.0, **kw)
    r64 = train.gradient_flow(tuple(jnp.asarray(w, F64) for w in f32),
                              problems.WhitenedSquare(target), 5.0, **kw)
    assert r32.status == r64.status == "converged"
    _close(r32.W, r64.W, TRAJ_RTOL)
    _close(r32.loss, r64.loss, TRAJ_RTOL)


def test_end_to_end_rules_in_float32():
    """The discrete rule against its float64 run; the flow against its closed form: depth 2 and
    diagonal W0, target Y gives sigma' = -2 sigma (sigma - y), a logistic curve."""
    W0 = _down(network.end_to_end(network.balanced_init(jax.random.PRNGKey(4), (3, 4, 3), 0.8)))
    target = np.array([[1.0, 0.5, 0.0], [0.0, 1.0, 0.2], [0.3, 0.0, 0.7]])
    sigma0, y, ts = np.array([0.5, 0.2, 1.5]), np.array([2.0, 1.0, 0.5]), np.linspace(0.0, 3.0, 7)
    with jax.enable_x64(False):
        problem = problems.WhitenedSquare(target)
        d32 = simulate.end_to_end_descent(jnp.asarray(W0), problem, lr=0.05, depth=3, steps=200)
        g32 = simulate.end_to_end_gradient_flow(jnp.diag(sigma0), problems.WhitenedSquare(np.diag(y)),
                                                3.0, depth=2, ts=ts, rtol=1e-6, atol=1e-8)
    d64 = simulate.end_to_end_descent(jnp.asarray(W0, F64), problems.WhitenedSquare(target),
                                      lr=0.05, depth=3, steps=200)
    _close(d32.W, d64.W, TRAJ_RTOL)
    sigma = y / (1.0 + (y / sigma0 - 1.0) * np.exp(-2.0 * y * ts[:, None]))  # (t, i)
    assert g32.status == "converged"
    _close(g32.W, np.diag(sigma[-1]), TRAJ_RTOL)
    _close(g32.loss, 0.5 * np.sum((sigma - y) ** 2, axis=1), TRAJ_RTOL)


# --------------------------------------------------------------------------- float64 on request


def test_experiments_run_in_float64_with_x64_off():
    assert all(exp.precision in ("float64", "caller") for exp in REGISTRY.values())
    exp = REGISTRY["fig3"]
    assert exp.precision == "float64"
    config = exp.config_model(problems=["completion"], n=6, rank=2, observations=20, depths=[1, 2],
                              lrs=[1.0, 1.0], steps=[20, 20], top_k=2, records=3)
    with jax.enable_x64(False):
        res = exp.run(config, None)
    losses = {k: v for k, v in res.arrays.items() if k.startswith("loss_")}
    assert losses and all(v.dtype == F64 for v in losses.values())

    def probe(config, progress):  # what an experiment's own arrays default to
        return Results(arrays={"x": np.asarray(jnp.ones(1))})

    kw = dict(name="probe", description="d", config_model=type(config), plot=lambda r, p: [])
    with jax.enable_x64(False):
        assert Experiment(run=probe, **kw).run(config, None).arrays["x"].dtype == F64
        assert Experiment(run=probe, precision="caller", **kw).run(config, None).arrays["x"].dtype == F32
    with pytest.raises(ValueError, match="precision"):
        Experiment(run=probe, precision="float16", **kw)


def test_theory_checks_run_in_float64_with_x64_off():
    check = CHECKS["key_lemma_partial_products"]
    with jax.enable_x64(False):
        result = check.run()
        direct = check.fn(**check.defaults)  # the check function called directly
    assert result.passed and direct.passed
    assert result.measured < 1e-10  # a float64-sized error: float32 rounding is ~1e-7
    assert direct.measured == result.measured
