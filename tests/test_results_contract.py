"""The results contract: every experiment states its question, and every value the notes report
is in the headline of its runs (measured, or marked not comparable with the reason)."""

from __future__ import annotations

import pytest

from deeplinear.experiments import REGISTRY
from deeplinear.experiments.base import Headline, Reported, agreement

NAMES = sorted(REGISTRY)
# experiments with nothing the notes report numerically (completion-benchmark: the question is
# about users' data; init-balance: the source reports only which init converges)
NO_REPORTED_VALUES = {"completion-benchmark", "init-balance"}


def test_every_experiment_is_covered():
    assert {"fig1-regression", "fig1-cnn", "fig2", "fig3", "norms", "tensor-completion",
            "tensor-dynamics", "tensor-natural", "completion-benchmark"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_question_and_reported_values_are_typed(name):
    exp = REGISTRY[name]
    assert exp.question.endswith("?") and len(exp.question) < 250
    assert bool(exp.reported) is (name not in NO_REPORTED_VALUES)
    assert all(isinstance(r, Reported) and r.where for r in exp.reported.values())


@pytest.mark.parametrize("name", NAMES)
def test_quick_run_headline_pairs_every_reported_value(name, quick_runs):
    exp, res = REGISTRY[name], quick_runs[name]
    keys = [h.key for h in res.headline]
    assert len(keys) == len(set(keys)), "headline keys are unique"
    assert set(exp.reported) <= set(keys), set(exp.reported) - set(keys)
    for h in res.headline:
        assert isinstance(h, Headline) and h.description and h.measured_on
        assert h.value is not None or h.not_comparable or res.divergences, h
        if h.key in exp.reported:
            verdict, detail = agreement(exp.reported[h.key], h)
            assert verdict in ("within band", "differs", "shown only", "not comparable")
            assert detail


def test_agreement_verdicts():
    rep = Reported(1e-2, "somewhere", factor=2.0)
    h = Headline("k", 1.5e-2, "d", "synthetic")
    assert agreement(rep, h)[0] == "within band"
    assert agreement(rep, Headline("k", 3e-2, "d", "synthetic"))[0] == "differs"
    assert agreement(rep, Headline("k", 3e-2, "d", "digits", "stand-in"))[0] == "not comparable"
    assert agreement(rep, Headline("k", None, "d", "synthetic"))[0] == "no value"
    assert agreement(Reported(1.0, "fig"), h)[0] == "shown only"
    top = Reported((50.0, 40.0), "fig", factor=1.25)
    assert agreement(top, Headline("t", (55.0, 39.0), "d", "s"))[0] == "within band"
    assert agreement(top, Headline("t", (55.0, 20.0), "d", "s"))[0] == "differs"
