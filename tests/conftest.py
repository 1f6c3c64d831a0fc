"""Shared fixtures: each registered experiment's quick run, computed once per test session.

The suite runs in float64 by default: ``deeplinear`` leaves JAX's configuration alone (its
experiments and theory checks ask for float64 themselves), so the tests of the library's
numerics switch x64 on here, as a user who wants float64 everywhere would. tests/test_dtype.py
runs float32 explicitly (``with jax.enable_x64(False)``) and checks the import in a fresh process.
"""

from __future__ import annotations

import jax
import pytest

jax.config.update("jax_enable_x64", True)

from deeplinear.experiments import REGISTRY, Results  # noqa: E402


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
