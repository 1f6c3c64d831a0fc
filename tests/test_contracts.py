"""Contracts carried by types, not strings: a run's outcome is an enum, a theory check's
comparison evaluates itself, one JSON converter and one number formatter serve every writer, and
``train_replicas`` takes exactly ``train``'s options."""

from __future__ import annotations

import json

import jax
import numpy as np

from deeplinear import network, problems, train


def _problem():
    W_star = problems.low_rank_ground_truth(jax.random.PRNGKey(0), (6, 6), rank=2)
    return problems.sample_completion(jax.random.PRNGKey(1), W_star, m=30)


def test_status_is_the_enum_and_compares_as_its_value():
    factors = network.gaussian_init(jax.random.PRNGKey(2), (6, 6, 6), 0.3)
    problem = _problem()
    ok = train.train(factors, problem, lr=0.05, steps=50)
    bad = train.train(factors, problem, lr=1e4, steps=50)
    assert isinstance(ok.status, train.Status) and ok.status is train.Status.MAX_STEPS
    assert bad.status is train.Status.DIVERGED and bad.status == "diverged"
    assert json.dumps({"status": bad.status}) == '{"status": "diverged"}'
    stacked = tuple(np.stack([f, f]) for f in factors)
    reps = train.train_replicas(stacked, problem, lr=np.array([0.05, 1e4]), steps=50)
    assert list(reps.status) == [train.Status.MAX_STEPS, train.Status.DIVERGED]


def test_a_comparison_evaluates_itself():
    """``Comparison.holds`` is the relation its value writes, NaN never passes, and an Outcome's
    ``passed`` is that relation and the ``also`` condition (never given by hand)."""
    import itertools
    import math

    import pytest

    from deeplinear.theory import Comparison, Outcome

    numbers = (-2.0, -0.5, 0.0, 0.5, 1.0, 3.0, math.nan)
    for c in Comparison:
        relation = str(c).replace("|measured - predicted|", "abs(measured - predicted)")
        for m, p, t in itertools.product(numbers, repeat=3):
            expected = eval(relation, {"abs": abs}, {"measured": m, "predicted": p,  # noqa: S307
                                                     "tolerance": t})
            assert c.holds(m, p, t) == bool(expected), (c, m, p, t)
    assert not Comparison.AT_MOST_TOLERANCE.holds(math.nan, 0.0, 1.0)
    assert Outcome(0.1, 0.0, 1.0).passed and not Outcome(2.0, 0.0, 1.0).passed
    held = Outcome(0.1, 0.0, 1.0, {}, also="a condition", also_holds=False)
    assert not held.passed and held.stated == "measured <= tolerance; also a condition"
    assert Outcome(0.1, 0.0, 1.0, comparison="measured > tolerance").comparison \
        is Comparison.ABOVE_TOLERANCE
    with pytest.raises(TypeError, match="passed is computed"):
        Outcome(0.1, 0.0, 1.0, True)  # the old signature, with passed by hand
    with pytest.raises(ValueError):
        Outcome(0.1, 0.0, 1.0, comparison="measured < tolerance")


def test_one_json_converter_with_nan_as_null():
    """Store, config and theory write through one converter: NaN and inf become null (a TOML
    config drops the key), arrays and numpy scalars become plain JSON, enums their values."""
    import math

    import jax.numpy as jnp

    from deeplinear import config, store
    from deeplinear._format import jsonable
    from deeplinear.experiments.base import Status
    from deeplinear.theory import CheckResult

    value = {"a": math.nan, "b": [np.float32(1.5), np.inf], "c": np.arange(2), "d": Status.DONE,
             "e": jnp.asarray(2.0), 3: (np.bool_(True), None)}
    expected = {"a": None, "b": [1.5, None], "c": [0, 1], "d": "done", "e": 2.0,
                "3": [True, None]}
    assert jsonable(value) == expected
    assert json.loads(json.dumps(jsonable(value), allow_nan=False)) == expected
    assert store.jsonable is jsonable
    assert config.dump_toml({"x": math.nan, "y": 1.0}).strip() == "y = 1.0"
    result = CheckResult("c", "s", math.inf, 0.0, 1.0, False, {"gap": math.nan})
    assert result.as_dict()["measured"] is None
    assert result.as_dict()["params"] == {"gap": None}


def test_one_number_formatter():
    from deeplinear import report
    from deeplinear._format import fmt, number, plain, sci

    assert report.fmt is fmt
    assert [fmt(v) for v in (2.58e-5, 1e-4, 3, None, True, [1.0, math_nan()])] == \
        ["2.58e-05", "0.0001", "3", "", "True", "[1, nan]"]
    assert number(float("nan"), 3, missing="n/a") == "n/a" and number(0.12345, 3) == "0.123"
    assert [sci(0.0427), sci(12345.0, 2), sci(None)] == ["4.27e-2", "1.2e4", "-"]
    assert [plain(0.5), plain(12345.6), plain(0.001), plain(0)] == ["0.500", "12,346", "1.00e-3",
                                                                      "0"]


def math_nan() -> float:
    return float("nan")


def test_train_replicas_takes_exactly_trains_arguments():
    import inspect

    import pytest

    one, many = inspect.signature(train.train), inspect.signature(train.train_replicas)
    assert list(one.parameters) == list(many.parameters)
    assert all(one.parameters[k].default == many.parameters[k].default
               and one.parameters[k].kind == many.parameters[k].kind for k in one.parameters)
    factors = tuple(np.stack([w, w]) for w in network.gaussian_init(jax.random.PRNGKey(2),
                                                                    (6, 6, 6), 0.3))
    with pytest.raises(TypeError, match="no_such_option"):
        train.train_replicas(factors, _problem(), lr=0.1, steps=5, no_such_option=1)
    with pytest.raises(TypeError, match="steps"):
        train.train_replicas(factors, _problem(), lr=0.1)


def test_the_sparse_cost_models_docstring_states_the_constants_the_code_uses():
    """The formula is written once (problems.sparse_is_cheaper) with the fitted constants; the
    numbers it states are the ones the rule computes with."""
    from deeplinear import problems

    doc = problems.sparse_is_cheaper.__doc__
    formula = doc[doc.index("sparse  iff"):doc.index("(nanoseconds)")]
    c = problems
    for value in (c._NS_GEMM, c._NS_SPMM, c._NS_ENTRY, 2 * c._NS_CALL):
        assert f"{value:g}" in formula, (value, formula)
    assert f"s = {c._NS_NATIVE:g}" in doc and f"s = {c._NS_SDDMM:g}" in doc
    assert "0.025" not in train.train.__doc__ and "sparse_is_cheaper" in train.train.__doc__


def test_summary_key_templates_match_the_saved_results():
    """Every named key template (deeplinear.experiments.keys) matches keys of the saved default
    runs that the docs quote, so the constants and what the experiments write agree."""
    import re
    from pathlib import Path

    from deeplinear.experiments import summary_keys as keys

    results = Path(__file__).resolve().parents[1] / "docs" / "results" / "default"
    written = set()
    for path in results.glob("*/summary.json"):
        saved = json.loads(path.read_text(encoding="utf-8"))
        written |= set(saved["summary"]) | set(saved["reported"])
    for path in results.glob("*/*.csv"):
        written |= set(path.read_text(encoding="utf-8").splitlines()[0].split(","))
    for name in keys.__all__:
        template = getattr(keys, name)
        pattern = re.sub(r"\\\{[a-z]+(?::g)?\\\}", "[^_]+?", re.escape(template))
        assert any(re.fullmatch(pattern, k) for k in written), (name, template, pattern)
