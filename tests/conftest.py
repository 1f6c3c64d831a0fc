"""Shared fixtures: each registered experiment's quick run, computed once per test session."""

from __future__ import annotations

import pytest

from deeplinear.experiments import REGISTRY, Results


class QuickRuns:
    """``quick_runs["fig2"]`` runs fig2 at its quick size the first time it is asked for."""

    def __init__(self) -> None:
        self._cache: dict[str, Results] = {}

    def __getitem__(self, name: str) -> Results:
        if name not in self._cache:
            exp = REGISTRY[name]
            self._cache[name] = exp.run(exp.config_model(**exp.quick), None)
        return self._cache[name]


@pytest.fixture(scope="session")
def quick_runs() -> QuickRuns:
    return QuickRuns()
