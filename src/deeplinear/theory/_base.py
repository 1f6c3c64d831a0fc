"""Check registry: every statement of the notes becomes a named, parameterized numerical check.

Checks compute in float64 whatever the caller's JAX configuration (§4 pitfall 3): a registered
check function runs inside ``jax.enable_x64(True)``, through :meth:`Check.run`, :func:`run_checks`
or called directly.
"""

from __future__ import annotations

import inspect
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import jax

from deeplinear._dtype import in_float64
from deeplinear._format import jsonable


class Comparison(StrEnum):
    """The relation between a check's ``measured``, ``predicted`` and ``tolerance`` that its
    statement asserts; :meth:`holds` evaluates it, so a check states the relation and never
    computes ``passed`` itself. The value is the relation as written in results and tables."""

    AT_MOST_TOLERANCE = "measured <= tolerance"
    ABOVE_TOLERANCE = "measured > tolerance"
    AT_MOST_PREDICTED = "measured <= predicted"
    AT_LEAST_PREDICTED = "measured >= predicted"
    AT_LEAST_PREDICTED_MINUS_TOLERANCE = "measured >= predicted - tolerance"
    CLOSE_TO_PREDICTED = "|measured - predicted| <= tolerance"
    CLOSE_TO_NEGATIVE_PREDICTED = "|measured - predicted| <= tolerance and predicted < 0"

    def holds(self, measured: float, predicted: float, tolerance: float) -> bool:
        """Whether the relation holds (false whenever a number it reads is NaN)."""
        m, p, t = float(measured), float(predicted), float(tolerance)
        return bool(_RELATIONS[self](m, p, t))


_RELATIONS: dict[Comparison, Callable[[float, float, float], bool]] = {
    Comparison.AT_MOST_TOLERANCE: lambda m, p, t: m <= t,
    Comparison.ABOVE_TOLERANCE: lambda m, p, t: m > t,
    Comparison.AT_MOST_PREDICTED: lambda m, p, t: m <= p,
    Comparison.AT_LEAST_PREDICTED: lambda m, p, t: m >= p,
    Comparison.AT_LEAST_PREDICTED_MINUS_TOLERANCE: lambda m, p, t: m >= p - t,
    Comparison.CLOSE_TO_PREDICTED: lambda m, p, t: abs(m - p) <= t,
    Comparison.CLOSE_TO_NEGATIVE_PREDICTED: lambda m, p, t: abs(m - p) <= t and p < 0,
}

DEFAULT_COMPARISON = Comparison.AT_MOST_TOLERANCE
"""The relation most checks test (an error or gap that must be small); :class:`Outcome`'s default."""

RELATIONS: tuple[str, ...] = tuple(str(c) for c in Comparison)
"""The relations of :class:`Comparison` as written. A check's stated ``comparison`` is one of
these, or one of these followed by :data:`ALSO` and a condition the three numbers do not show
(its values are in ``params["diagnostics"]``); ``passed`` is then the relation AND that
condition."""

ALSO = "; also "


@dataclass
class CheckResult:
    """Outcome of one check: ``passed`` says whether ``comparison`` (e.g. ``measured <=
    tolerance``, one of :data:`RELATIONS`, maybe with an ``; also ...`` condition) held for
    ``measured``, ``predicted`` and ``tolerance``; ``statement`` is what the notes claim, and
    ``params`` records seed, sizes and diagnostics."""

    name: str
    statement: str
    measured: float
    predicted: float
    tolerance: float
    passed: bool
    params: dict[str, Any] = field(default_factory=dict)
    comparison: str = DEFAULT_COMPARISON

    def as_dict(self) -> dict[str, Any]:
        """Exactly the keys name, statement, measured, predicted, tolerance, comparison, passed,
        params."""
        out = {
            "name": self.name,
            "statement": self.statement,
            "measured": jsonable(float(self.measured)),
            "predicted": jsonable(float(self.predicted)),
            "tolerance": jsonable(float(self.tolerance)),
            "comparison": self.comparison,
            "passed": bool(self.passed),
            "params": jsonable(self.params),
        }
        return out


@dataclass(frozen=True)
class Outcome:
    """What a check function returns; the registry wraps it into a :class:`CheckResult`.

    ``comparison`` is the relation the statement asserts (default ``measured <= tolerance``);
    ``also`` a condition the three numbers do not show, with ``also_holds`` its truth (its
    values belong in ``diagnostics``). :attr:`passed` is the relation evaluated on the numbers,
    and ``also_holds``."""

    measured: float
    predicted: float
    tolerance: float
    diagnostics: dict[str, Any] = field(default_factory=dict)
    comparison: Comparison = DEFAULT_COMPARISON
    also: str | None = None
    also_holds: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.diagnostics, Mapping):
            raise TypeError("Outcome(measured, predicted, tolerance, diagnostics, comparison=...): "
                            "passed is computed from the comparison, not given")
        object.__setattr__(self, "comparison", Comparison(self.comparison))
        if self.also is None and self.also_holds is not True:
            raise ValueError("also_holds needs the condition it is the truth of (also=...)")

    @property
    def passed(self) -> bool:
        """The comparison on (measured, predicted, tolerance), and the ``also`` condition."""
        return self.comparison.holds(self.measured, self.predicted, self.tolerance) and \
            bool(self.also_holds)

    @property
    def stated(self) -> str:
        """The comparison as written in results: the relation, then ``; also <condition>``."""
        return str(self.comparison) + ("" if self.also is None else ALSO + self.also)


@dataclass(frozen=True)
class Check:
    """A named statement with its numerical test. ``run(**overrides)`` replaces default
    parameters (unknown names raise ``ValueError``)."""

    name: str
    statement: str
    section: str
    fn: Callable[..., Outcome]
    defaults: dict[str, Any]

    def run(self, **overrides: Any) -> CheckResult:
        unknown = set(overrides) - set(self.defaults)
        if unknown:
            raise ValueError(
                f"check {self.name!r} has no parameter(s) {sorted(unknown)}; "
                f"its parameters are {sorted(self.defaults)}"
            )
        params = {**self.defaults, **overrides}
        with jax.enable_x64(True):
            out = self.fn(**params)
        record = dict(params)
        record["diagnostics"] = out.diagnostics
        return CheckResult(
            name=self.name,
            statement=f"{self.statement} [{self.section}]",
            measured=float(out.measured),
            predicted=float(out.predicted),
            tolerance=float(out.tolerance),
            passed=out.passed,
            params=record,
            comparison=out.stated,
        )


CHECKS: OrderedDict[str, Check] = OrderedDict()


def check(name: str, section: str, statement: str) -> Callable[[Callable[..., Outcome]], Check]:
    """Register ``fn`` as a check; its keyword defaults are the check's parameters."""

    def deco(fn: Callable[..., Outcome]) -> Check:
        if name in CHECKS:
            raise ValueError(f"check {name!r} is already registered")
        sig = inspect.signature(fn)
        defaults = {k: p.default for k, p in sig.parameters.items()}
        missing = [k for k, v in defaults.items() if v is inspect.Parameter.empty]
        if missing:
            raise ValueError(f"check {name!r}: parameters {missing} need defaults")
        c = Check(name, statement, section, in_float64(fn), defaults)
        CHECKS[name] = c
        return c

    return deco


def run_checks(
    pattern: str | None = None, on_result: Callable[[CheckResult], None] | None = None,
    on_start: Callable[[str], None] | None = None,
) -> list[CheckResult]:
    """Run every registered check whose name contains ``pattern`` (``-k`` style; all if None),
    in registry order, calling ``on_start(name)`` before and ``on_result`` after each one."""
    selected = [c for n, c in CHECKS.items() if pattern is None or pattern in n]
    if pattern is not None and not selected:
        raise ValueError(f"no check name contains {pattern!r}; names are {list(CHECKS)}")
    results = []
    for c in selected:
        if on_start is not None:
            on_start(c.name)
        r = c.run()
        results.append(r)
        if on_result is not None:
            on_result(r)
    return results
