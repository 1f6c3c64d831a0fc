"""§E4(c) init-balance: the squared loss from sufficient statistics, the two initializations and
a quick run."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from pydantic import ValidationError

import deeplinear.experiments  # noqa: F401  (registers the experiments)
from deeplinear.experiments import REGISTRY
from deeplinear.experiments import init_balance as ib
from deeplinear.network import balanced_from_matrix, end_to_end, imbalance
from deeplinear.problems import LpRegression


def test_square_loss_stats_equals_the_direct_squared_loss():
    """½ tr(W S Wᵀ) − tr(W C) + c₀ is (1/2m)‖X Wᵀ − Y‖² (LpRegression with p = 2), value and
    gradient, also with a leading replica axis; L* is the least-squares minimum."""
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((40, 6)), np.eye(3)[rng.integers(0, 3, 40)]
    stats, direct = ib.SquareLossStats(X, Y), LpRegression(X, Y, 2)
    W = jnp.asarray(rng.standard_normal((2, 3, 6)))
    for a, b in zip(stats.value_and_grad(W), direct.value_and_grad(W), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-10, atol=1e-12)
    Wstar = np.linalg.lstsq(X, Y, rcond=None)[0].T
    assert stats.optimum() == pytest.approx(float(direct.loss(jnp.asarray(Wstar))), rel=1e-10)
    assert stats.shape == (3, 6)


def test_xavier_and_its_balanced_refactorization():
    """Xavier std c·sqrt(2/(fan_in + fan_out)) per layer; Procedure 1 on its product gives the
    same end-to-end matrix with zero imbalance, while the Xavier layers are unbalanced."""
    dims = (300, 40, 40, 10)
    fs = ib.xavier_init(jax.random.key(0), dims, 2.0)
    for j, W in enumerate(fs):
        assert W.shape == (dims[j + 1], dims[j])
        assert float(jnp.std(W)) == pytest.approx(2.0 * np.sqrt(2 / (dims[j] + dims[j + 1])),
                                                  rel=0.05)
    bal = balanced_from_matrix(end_to_end(fs), dims)
    np.testing.assert_allclose(np.asarray(end_to_end(bal)), np.asarray(end_to_end(fs)),
                               atol=1e-12)
    assert float(imbalance(bal)) < 1e-10 < 1.0 < float(imbalance(fs))


@pytest.mark.parametrize("field,value", [("depth", 1), ("scales", []), ("scales", [0.0]),
                                         ("lr", -1.0), ("dataset", "cifar"), ("records", 1),
                                         ("extra", 1)])
def test_config_rejects(field, value):
    with pytest.raises(ValidationError, match=field):
        ib.InitBalanceConfig(**{field: value})


def test_quick_run(quick_runs, tmp_path):
    """Both inits start from the same loss at every scale; converging runs end far below it;
    the headline counts add up; the figure is written."""
    exp = REGISTRY["init-balance"]
    cfg = exp.config_model(**exp.quick)
    r = quick_runs["init-balance"]
    rows = {(row["init"], row["scale"]): row for row in r.tables["runs"]}
    for scale in cfg.scales:
        lw, bal = rows["layerwise", scale], rows["balanced", scale]
        assert lw["initial_excess"] == pytest.approx(bal["initial_excess"], rel=1e-9)
        assert bal["imbalance_at_init"] < 1e-9 < lw["imbalance_at_init"]
        for row in (lw, bal):
            if row["seeds_ok"]:
                assert row["final_excess_mean"] < 0.5 * row["initial_excess"]
    heads = {h.key: h.value for h in r.headline}
    assert heads["balanced_runs_converged"] == sum(rows["balanced", s]["seeds_ok"]
                                                  for s in cfg.scales)
    assert len(r.divergences) == 2 * len(cfg.scales) * cfg.seeds - (
        heads["balanced_runs_converged"] + heads["layerwise_runs_converged"])
    paths = exp.plot(r, tmp_path)
    assert [p.suffix for p in paths] == [".png", ".pdf"]
