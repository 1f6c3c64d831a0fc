"""Every theory check passes at its (small) default size and FAILS when its assumption is
broken on purpose, so no check can pass vacuously."""

from __future__ import annotations

import json
import math
from functools import cache

import pytest

from deeplinear.theory import CHECKS, CheckResult, run_checks
from deeplinear.theory._base import ALSO, RELATIONS

# name -> parameters that break the statement's assumption (the check must then fail)
BREAKS = {
    "nonconvexity": dict(target_scale=0.0),  # ℓ(0) = min ℓ
    "origin_non_strict_saddle": dict(depth=2),  # Hessian ≠ 0
    "origin_strict_saddle_depth2": dict(depth=3),  # Hessian = 0
    "symmetric_factorization": dict(symmetric=False),  # W = UVᵀ, not UUᵀ
    "width1_quadratic": dict(positive_definite=False),  # indefinite Q: critical ≠ global min
    "balancedness_conserved": dict(weight_decay=0.5),  # not plain gradient flow
    "balancedness_decay_weight_decay": dict(uniform=False),  # λ on one layer only
    "theorem1_end_to_end": dict(balanced=False),
    "key_lemma_partial_products": dict(balanced=False),
    "preconditioner_spectrum": dict(vec_order="C"),  # row-major vec
    "single_output_form": dict(output_dim=2),  # d_N > 1
    "not_a_gradient_field": dict(depth=2, shapes=((1, 3),)),  # the conservative case
    "single_output_depth2_is_gradient": dict(depth=3),
    "discrete_rule_matches_gd": dict(balanced=False),
    "scalar_network": dict(balanced=False),
    "deficiency_margin_distance": dict(surgery="max"),  # surgery on the wrong σ
    "gf_convergence_rate": dict(no_margin=True),  # det flipped: no deficiency margin
    "gd_convergence_constants": dict(no_margin=True),
    "failure_without_margin": dict(det_sign=1),  # a margin after all: converges
    "convex_gf_rate": dict(function="double_well"),  # non-convex f
    "gf_limit_is_critical": dict(t1=1.0),  # not yet converged
    "singular_value_dynamics": dict(balanced=False),
    "singular_vector_dynamics": dict(balanced=False),
    "sign_preservation": dict(dims=(3, 3)),  # depth 1: det crosses 0
    "norms_to_infinity_2x2": dict(det_sign=-1),  # converges to a finite solution
    "completion_2x2_exercise": dict(b22=0.5),  # a rank-1 solution exists
    "cp_component_norm_dynamics": dict(balanced=False),  # norms differ within a component
    "cp_balancedness_conserved": dict(weight_decay=0.4),  # not plain gradient flow
    "cp_zero_component_stays_zero": dict(zero_vectors=1),  # one zero vector is not enough
    "ht_local_component_dynamics": dict(balanced=False),
    "cp_order2_rank_equals_matrix_rank": dict(dims=(3, 3, 3)),  # order 3: rank 5 > unfolding 3
}


# What each relation of RELATIONS means, written out independently of the checks.
EVALUATE = {
    "measured <= tolerance": lambda m, p, t: m <= t,
    "measured > tolerance": lambda m, p, t: m > t,
    "measured <= predicted": lambda m, p, t: m <= p,
    "measured >= predicted": lambda m, p, t: m >= p,
    "measured >= predicted - tolerance": lambda m, p, t: m >= p - t,
    "|measured - predicted| <= tolerance": lambda m, p, t: abs(m - p) <= t,
    "|measured - predicted| <= tolerance and predicted < 0":
        lambda m, p, t: abs(m - p) <= t and p < 0,
}

# Checks whose `passed` needs, besides the relation on (measured, predicted, tolerance), a
# condition those three numbers do not carry (stated after "; also" in the comparison). For
# these, passed implies the relation, but a failed check may have failed on the extra condition.
NOT_FROM_NUMBERS = {
    "origin_non_strict_saddle": "also needs φ to fall along the minimizer ray (is_saddle)",
    "width1_quadratic": "also needs a negative Hessian eigenvalue (hessian_lambda_min < 0)",
    "deficiency_margin_distance": "also needs the sampled point to have margin c",
    "gd_convergence_constants": "an implication, verified only where its hypotheses hold "
                                "(assumptions_hold)",
    "norms_to_infinity_2x2": "also needs stop_loss reached, det > 0 throughout, |W11| monotone "
                             "and effective rank near 1",
    "completion_2x2_exercise": "also needs finite norm minimizers, divergence and rank 2",
}


@cache
def _default(name: str) -> CheckResult:
    return CHECKS[name].run()


@cache
def _broken(name: str) -> CheckResult:
    return CHECKS[name].run(**BREAKS[name])


def test_every_check_has_a_break():
    assert list(CHECKS) and set(BREAKS) == set(CHECKS)


@pytest.mark.parametrize("name", list(CHECKS))
def test_check_passes(name):
    result = _default(name)
    assert isinstance(result, CheckResult)
    assert result.passed, result.as_dict()
    assert "seed" in result.params or "depth" in result.params or "b22" in result.params


@pytest.mark.parametrize("name", list(BREAKS))
def test_check_fails_when_assumption_broken(name):
    result = _broken(name)
    assert not result.passed, result.as_dict()


def test_relations_have_a_meaning():
    assert set(RELATIONS) == set(EVALUATE)
    assert set(NOT_FROM_NUMBERS) <= set(CHECKS)


@pytest.mark.parametrize("name", list(CHECKS))
def test_comparison_is_a_known_relation(name):
    """Every check states the relation it tests: one of RELATIONS, plus "; also <condition>"
    exactly for the checks listed (with their reason) in NOT_FROM_NUMBERS."""
    for result in (_default(name), _broken(name)):
        relation, also, condition = result.comparison.partition(ALSO)
        assert relation in RELATIONS, result.comparison
        assert bool(also) == (name in NOT_FROM_NUMBERS), result.comparison
        assert not also or condition.strip()
        assert result.as_dict()["comparison"] == result.comparison


@pytest.mark.parametrize("variant", ["default", "broken"])
@pytest.mark.parametrize("name", list(CHECKS))
def test_passed_agrees_with_comparison(name, variant):
    """`passed` is the stated relation evaluated on measured, predicted and tolerance (for the
    checks of NOT_FROM_NUMBERS: passed implies the relation), at the default parameters, where
    the check passes, and with its assumption broken, where it fails."""
    result = _default(name) if variant == "default" else _broken(name)
    relation = result.comparison.partition(ALSO)[0]
    holds = EVALUATE[relation](result.measured, result.predicted, result.tolerance)
    if name in NOT_FROM_NUMBERS:
        assert holds or not result.passed, result.as_dict()
    else:
        assert holds == result.passed, result.as_dict()


def test_gd_theorem_fails_when_step_far_above_bound():
    result = CHECKS["gd_convergence_constants"].run(lr_factor=1e6)
    assert not result.passed
    assert not result.params["diagnostics"]["assumptions_hold"]
    assert result.as_dict()["measured"] is None  # divergence is reported (null), never inf


def test_gd_theorem_without_margin_fails_on_the_loss_itself():
    """Not only the hypothesis check: the loss stays above ε (det < 0 cannot reach Φ)."""
    result = CHECKS["gd_convergence_constants"].run(no_margin=True)
    assert result.measured > 1 and result.params["diagnostics"]["actual_margin"] < 0


def test_non_strict_saddle_depth4_and_strict_saddle_without_gradient_fail():
    assert CHECKS["origin_non_strict_saddle"].run(depth=4).passed
    assert not CHECKS["origin_strict_saddle_depth2"].run(target_scale=0.0).passed  # ∇ℓ(0) = 0


def test_matrix_fields_are_not_gradients_even_at_depth2():
    assert CHECKS["not_a_gradient_field"].run(depth=2, shapes=((2, 2), (3, 2))).passed


def test_as_dict_is_json_with_exact_keys():
    result = CHECKS["balancedness_conserved"].run()
    d = result.as_dict()
    assert list(d) == ["name", "statement", "measured", "predicted", "tolerance", "comparison",
                       "passed", "params"]
    assert d["comparison"] == "measured <= tolerance"
    text = json.dumps(d)
    back = json.loads(text)
    assert back["params"]["seed"] == 0 and back["params"]["dims"] == [3, 4, 5, 2]
    assert math.isfinite(back["measured"]) and back["passed"] is True


def test_run_checks_filters_and_reports():
    seen = []
    results = run_checks("2x2", on_result=seen.append)
    assert [r.name for r in results] == ["norms_to_infinity_2x2", "completion_2x2_exercise"]
    assert seen == results
    with pytest.raises(ValueError, match="no check name contains"):
        run_checks("no_such_check")


def test_unknown_parameter_is_a_value_error():
    with pytest.raises(ValueError, match="has no parameter"):
        CHECKS["nonconvexity"].run(depth=3)


def test_seed_changes_instance_but_not_verdict():
    a = CHECKS["key_lemma_partial_products"].run(seed=1)
    b = CHECKS["key_lemma_partial_products"].run(seed=2)
    assert a.passed and b.passed and a.measured != b.measured
