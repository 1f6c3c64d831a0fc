"""Numerical checks of every statement of the notes (§2), one :class:`Check` per statement.

``CHECKS`` is an ordered registry ``name -> Check`` (in the order of the notes: landscape,
dynamics, convergence, generalization); ``run_checks(pattern)`` runs those whose name contains
``pattern``. Every check is seeded, records its parameters, and accepts parameters that break its
assumption (then it fails): see docs/theory.md.
"""

from deeplinear.theory import (  # noqa: F401  (importing registers the checks)
    checks_convergence,
    checks_dynamics,
    checks_generalization,
    checks_landscape,
    checks_tensor,
)
from deeplinear.theory._base import CHECKS, Check, CheckResult, Comparison, Outcome, run_checks

_MODULE_ORDER = (checks_landscape, checks_dynamics, checks_convergence, checks_generalization,
                 checks_tensor)


def _reorder() -> None:
    rank = {m.__name__: i for i, m in enumerate(_MODULE_ORDER)}
    items = sorted(CHECKS.items(), key=lambda kv: rank[kv[1].fn.__module__])  # stable sort
    CHECKS.clear()
    CHECKS.update(items)


_reorder()

__all__ = ["CHECKS", "Check", "CheckResult", "Comparison", "Outcome", "run_checks"]
