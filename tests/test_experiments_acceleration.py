"""Figure 1 experiments (§E1, §E2): configs, numerics helpers, quick runs and their claims."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from pydantic import ValidationError

import deeplinear.experiments  # noqa: F401  (registers the experiments)
from deeplinear.data import breast_cancer_area
from deeplinear.experiments import REGISTRY
from deeplinear.experiments import fig1_cnn as cnn
from deeplinear.experiments import fig1_regression as reg
from deeplinear.network import balanced_init, end_to_end
from deeplinear.problems import LpRegression
from deeplinear.simulate import end_to_end_descent
from deeplinear.train import Schedule, train


def test_registered():
    assert REGISTRY["fig1-regression"].config_model is reg.Fig1RegressionConfig
    assert REGISTRY["fig1-cnn"].config_model is cnn.Fig1CNNConfig
    for name in ("fig1-regression", "fig1-cnn"):
        exp = REGISTRY[name]
        exp.config_model(**exp.quick)
        exp.config_model(**exp.paper)
        assert exp.reported


@pytest.mark.parametrize("field,value", [
    ("p_values", [3]), ("depths", [2, 3]), ("depths", [0, 1]), ("lr_grid", [0.1, -1.0]),
    ("steps", 5), ("init_scale", 0.0), ("hidden_width", 0), ("dataset", "mnist"),
    ("loss_levels", []), ("bogus", 1),
])
def test_regression_config_rejects(field, value):
    with pytest.raises(ValidationError, match=field):
        reg.Fig1RegressionConfig(**{field: value})


def test_regression_config_needs_path_for_gas_sensor():
    with pytest.raises(ValidationError, match="data_path"):
        reg.Fig1RegressionConfig(dataset="gas-sensor")


@pytest.mark.parametrize("field,value", [
    ("lr", 0.0), ("momentum", 1.0), ("depth", 1), ("seeds", 0), ("channels", [8]),
    ("lr_decay", 1.5), ("weight_decay", -1.0), ("overparam_init", "zeros"), ("extra", 1),
    ("framework", "tensorflow"), ("dropout", 1.0), ("lr_decay_steps", 0), ("dataset", "mnist5k"),
    ("weight_decay_on", "both"), ("init", "xavier"), ("pixels", "raw"), ("holdout", -1),
    ("batch_order", "random"),
])
def test_cnn_config_rejects(field, value):
    with pytest.raises(ValidationError, match=field):
        cnn.Fig1CNNConfig(**{field: value})
    with pytest.raises(ValidationError, match="data_path"):
        cnn.Fig1CNNConfig(dataset="digits", data_path="somewhere")


def test_cnn_paper_preset_is_the_tensorflow_tutorial():
    """--paper: the tutorial's data split, pixels, init, loop, schedule and L2 (§E2)."""
    exp = REGISTRY["fig1-cnn"]
    cfg = exp.config_model(**exp.paper)
    assert (cfg.dataset, cfg.data_path, cfg.holdout, cfg.pixels) == ("mnist", None, 5000,
                                                                     "centered")
    assert (cfg.init, cfg.overparam_init, cfg.batch_order, cfg.batch_size) == (
        "tutorial", "random", "sequential", 64)
    assert (cfg.lr, cfg.momentum, cfg.lr_decay, cfg.lr_decay_steps) == (0.01, 0.9, 0.95, None)
    assert (cfg.weight_decay, cfg.weight_decay_on, cfg.dropout) == (5e-4, "end-to-end", 0.5)
    assert (cfg.steps, cfg.seed, cfg.channels, cfg.kernel_size, cfg.dense_hidden) == (
        8600, 66478, [32, 64], 5, 512)
    # the tutorial's staircase: lr 0.01 * 0.95^floor(t * 64 / 55,000)
    a, b = cnn._decay_every(cfg, 55_000)
    lr = cnn._optimizer(cfg, (a, b))
    assert (a, b) == (64, 55_000)
    params = {"w": jnp.zeros(())}
    state = lr.init(params)
    seen = []
    for _ in range(1720):
        upd, state = lr.update({"w": jnp.ones(())}, state, params)
        seen.append(float(upd["w"]))
    # with gradient 1 the update is -lr_t * sum_{k <= t} 0.9^k
    trace = (1 - 0.9 ** np.arange(1, 1721)) / (1 - 0.9)
    lrs = -np.asarray(seen) / trace
    expect = 0.01 * 0.95 ** ((np.arange(1720) * 64) // 55_000)
    np.testing.assert_allclose(lrs, expect, rtol=1e-5)
    assert expect[859] == 0.01 and expect[860] < 0.01  # 860 * 64 > 55,000 > 859 * 64
    # sequential batches: offset (t * 64) mod (55,000 - 64), the same for every seed
    bat = cnn._batches(cfg.model_copy(update={"steps": 900, "seeds": 2}), 55_000)
    assert bat.shape == (2, 900, 64) and np.array_equal(bat[0], bat[1])
    assert bat[0, 1, 0] == 64 and bat[0, 858, 0] == (858 * 64) % 54_936


def test_cnn_tutorial_init_statistics():
    """truncated_normal(stddev=0.1): std 0.1 * 0.8796 (normal cut at 2 std), nothing beyond
    0.2, mean 0; biases 0 (conv1) and 0.1; the L2 term at the start ≈ 5e-4 * 0.1² * 0.7737 / 2
    * (dense weights) + biases ≈ 3.12 for the tutorial network."""
    net = cnn.SmallCNN((1, 28, 28), (32, 64), 5, 512, 10, key=jax.random.key(0),
                       dtype=jnp.float32)
    net = cnn.tutorial_init(net, jax.random.key(1))
    w = np.concatenate([np.asarray(getattr(net, n).weight).ravel()
                        for n in ("conv1", "conv2", "fc1", "fc2")])
    assert w.size == 5 * 5 * 32 + 5 * 5 * 32 * 64 + 3136 * 512 + 512 * 10
    assert abs(w.std() / 0.1 - 0.87962) < 2e-3 and abs(w.mean()) < 2e-4
    assert np.abs(w).max() <= 0.2
    assert np.all(np.asarray(net.conv1.bias) == 0)
    for n in ("conv2", "fc1", "fc2"):
        np.testing.assert_array_equal(np.asarray(getattr(net, n).bias), np.float32(0.1))
    from deeplinear.overparam import dense_l2

    l2 = 5e-4 * float(dense_l2(net))
    dense = 3136 * 512 + 512 * 10
    assert abs(l2 - 5e-4 * (dense * 0.01 * 0.87962**2 + 522 * 0.01) / 2) < 0.01
    assert 3.0 < l2 < 3.25
    # fresh factors at the tutorial init: the end-to-end L2 term starts 4x higher (≈ 12.3)
    cfg = cnn.Fig1CNNConfig(init="tutorial", overparam_init="random")
    twin = cnn._twin(cfg, net, jax.random.key(2))
    assert twin.fc1.factors[1].shape == (512, 512)
    f = np.asarray(twin.fc1.factors[1]).ravel()
    assert abs(f.std() / 0.1 - 0.87962) < 1e-2 and np.abs(f).max() <= 0.2
    np.testing.assert_array_equal(np.asarray(twin.fc1.bias), np.float32(0.1))
    assert 11.5 < 5e-4 * float(dense_l2(twin)) < 13.2


def test_lp_optimum_is_stationary():
    d = breast_cancer_area()
    l2, w2 = reg.lp_optimum(d.X, d.y, 2)
    np.testing.assert_allclose(w2, np.linalg.lstsq(d.X, d.y, rcond=None)[0])
    l4, w4 = reg.lp_optimum(d.X, d.y, 4)
    grad = d.X.T @ (d.X @ w4 - d.y) ** 3 / len(d.y)
    assert np.max(np.abs(grad)) < 1e-12
    # no other point does better (convexity: check random perturbations)
    rng = np.random.default_rng(0)
    for _ in range(20):
        v = w4 + 1e-3 * rng.standard_normal(w4.shape)
        assert np.mean((d.X @ v - d.y) ** 4) / 4 >= l4
    assert l2 > 0 and l4 > 0


def test_end_to_end_rule_matches_network_gd_and_single_output_form():
    """Small η: network GD ≈ the §2.6 rule (O(η²) per step); d_N = 1: the rule equals §2.8's
    ``w ← w - η‖w‖^{2-2/N}(∇ + (N-1) Pr_w ∇)`` computed here in numpy."""
    d = breast_cancer_area()
    problem = LpRegression(d.X, d.y, 4)
    depth, lr, steps = 2, 0.02, 3000
    factors = balanced_init(jax.random.key(0), (9, 3, 1), 1e-2)
    net = train(factors, problem, lr=lr, steps=steps, schedule=Schedule.every(300))
    rule = end_to_end_descent(end_to_end(factors), problem, lr=lr, depth=depth, steps=steps,
                              schedule=Schedule.every(300))
    np.testing.assert_allclose(rule.loss, net.loss, rtol=2e-2)
    assert np.max(np.abs(rule.W - net.W)) < 2e-2 * np.max(np.abs(net.W))
    # §2.8 single-output form, 200 steps from the same start
    w = np.asarray(end_to_end(factors))[0]
    for _ in range(200):
        g = d.X.T @ (d.X @ w - d.y) ** 3 / len(d.y)
        n2 = w @ w
        w = w - lr * n2 ** (1 - 1 / depth) * (g + (depth - 1) * (w @ g) / n2 * w)
    short = end_to_end_descent(end_to_end(factors), problem, lr=lr, depth=depth, steps=200,
                               schedule=Schedule.every(200))
    np.testing.assert_allclose(short.W[0], w, rtol=1e-9, atol=1e-12)


@pytest.fixture
def regression_quick(quick_runs):
    return quick_runs["fig1-regression"]


def test_regression_quick_depth_accelerates_l4_not_l2(regression_quick, tmp_path):
    r = regression_quick
    # §2.10: depth 2 reaches the linear model's best loss several times sooner for p = 4 ...
    assert r.summary["p4_speedup_depth2"] > 2.0
    # ... and gains at most a small factor for p = 2 (measured ≈ 1.2-1.4)
    assert r.summary["p2_speedup_depth2"] < 2.0
    lin = next(row for row in r.tables["methods"] if row["p"] == 4 and row["method"] == "gd_depth1")
    deep = next(row for row in r.tables["methods"] if row["p"] == 4 and row["method"] == "gd_depth2")
    assert deep["iters_to_0.001"] < lin["iters_to_0.001"]
    for key, arr in r.arrays.items():
        assert np.all(np.isfinite(arr)), key
    assert {row["status"] for row in r.tables["methods"]} <= {"max_steps", "converged"}
    paths = reg.plot(r, tmp_path)
    assert [p.suffix for p in paths] == [".png", ".pdf"] and all(p.stat().st_size > 0 for p in paths)


def test_cnn_quick(tmp_path, quick_runs):
    exp = REGISTRY["fig1-cnn"]
    cfg = exp.config_model(**exp.quick)
    r = quick_runs["fig1-cnn"]
    lo, hi = r.arrays["original_batch_loss"], r.arrays["overparameterized_batch_loss"]
    assert lo.shape == hi.shape == (cfg.seeds, cfg.steps)
    # the three curves: objective = cross-entropy + L2 term, the L2 term is λ dense_l2 of the
    # initial model (checked against the model rebuilt here) and, with balanced factors and the
    # term on the end-to-end matrices, the same for both models at the start
    for name in cnn.MODELS:
        np.testing.assert_allclose(r.arrays[f"{name}_batch_loss"],
                                   r.arrays[f"{name}_cross_entropy"] + r.arrays[f"{name}_l2"],
                                   rtol=1e-6)
        assert np.all(r.arrays[f"{name}_l2"] > 0)
    from deeplinear.data import digits_images
    from deeplinear.overparam import dense_l2

    first = cnn._build(cfg, digits_images(), jax.random.split(jax.random.key(cfg.seed),
                                                              cfg.seeds)[0])
    np.testing.assert_allclose(r.arrays["original_l2"][0, 0],
                               cfg.weight_decay * float(dense_l2(first)), rtol=1e-5)
    np.testing.assert_allclose(r.arrays["overparameterized_l2"][:, 0],
                               r.arrays["original_l2"][:, 0], rtol=1e-5)
    rows = {(row["framework"], row["model"], row["iteration"]): row for row in r.tables["curves"]}
    assert rows["jax", "original", 0]["l2"] == pytest.approx(r.arrays["original_l2"][:, 0].mean())
    # balanced factorization keeps the function: same first batch loss (float32 rounding)
    np.testing.assert_allclose(lo[:, 0], hi[:, 0], rtol=1e-5)
    assert r.summary["collapse_max_rel_diff"] < 1e-5
    # both train: the smoothed loss falls well below log(10) ≈ 2.30
    assert r.summary["original_final_loss"] < 1.5 and r.summary["overparameterized_final_loss"] < 1.5
    h, n = cfg.dense_hidden, 10
    assert r.summary["params_overparameterized"] - r.summary["params_original"] == h * h + n * n
    paths = cnn.plot(r, tmp_path)
    assert all(p.exists() for p in paths)


def test_small_cnn_shapes():
    m = cnn.SmallCNN((1, 8, 8), (4, 8), 3, 16, 10, key=jax.random.key(0))
    assert m(jnp.ones((1, 8, 8))).shape == (10,)
    with pytest.raises(ValueError, match="divisible by 4"):
        cnn.SmallCNN((1, 6, 6), (4, 8), 3, 16, 10, key=jax.random.key(0))


def test_regression_divergence_is_reported_not_plotted():
    cfg = reg.Fig1RegressionConfig(p_values=[4], depths=[1], adaptive=False, steps=50,
                                   lr_grid=[100.0], record_points=10)
    r = reg.run(cfg)
    assert r.status == "diverged"  # its only method has no curve: no valid result
    assert "p=4 gd_depth1: every learning rate of the grid: diverged at step" in str(
        r.divergences[0])
    assert "p4_gd_depth1_loss" not in r.arrays
    assert r.tables["lr_grid"][0]["status"] == "diverged"


def test_cnn_data_preparation_holdout_and_pixels():
    """holdout: the first images are held out (the tutorial's validation set); 'centered' pixels
    are (v - 127.5) / 255; a holdout that leaves no minibatch is a one-line error."""
    from deeplinear.data import ImageData

    images = np.arange(20 * 16, dtype=np.float64).reshape(20, 1, 4, 4) / (20 * 16)
    data = ImageData(images, np.arange(20) % 10, "toy", 10)
    cfg = cnn.Fig1CNNConfig(holdout=5, pixels="centered", batch_size=4)
    p = cnn._prepare(cfg, data)
    assert p["X"].shape == (15, 1, 4, 4) and p["X_held"].shape == (5, 1, 4, 4)
    np.testing.assert_allclose(p["X"], images[5:] - 0.5, atol=1e-7)
    np.testing.assert_array_equal(p["Y_held"], np.arange(5))
    with pytest.raises(ValueError, match="holdout: 16 held-out images"):
        cnn._prepare(cfg.model_copy(update={"holdout": 16}), data)


@pytest.mark.parametrize("kernel", [1, 2, 3, 4, 5])
def test_cnn_conv_as_patch_product_equals_the_convolution(kernel):
    """SmallCNN's im2col convolution gives eqx.nn.Conv2d's numbers (SAME padding, odd and even
    kernels, a rectangular image, float64), for a plain and a factorized layer."""
    import equinox as eqx

    from deeplinear.overparam import overparameterize

    layer = eqx.nn.Conv2d(3, 5, kernel, padding="SAME", key=jax.random.key(kernel))
    x = jax.random.normal(jax.random.key(9), (3, 6, 10))
    want = layer(x)
    got = jnp.moveaxis(cnn._conv_same(layer, jnp.moveaxis(x, 0, -1)), -1, 0)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    deep = overparameterize(layer, 2, conv=True, key=jax.random.key(1), init="random")
    got = jnp.moveaxis(cnn._conv_same(deep, jnp.moveaxis(x, 0, -1)), -1, 0)
    np.testing.assert_allclose(got, deep(x), rtol=1e-12, atol=1e-12)
    assert not np.allclose(deep(x), want)  # the factorized layer is another convolution
