"""Numerical checks of every statement of the notes (§2), one :class:`Check` per statement.

``CHECKS`` is an ordered registry ``name -> Check``; ``run_checks(pattern)`` runs those whose name
contains ``pattern``. Every check is seeded, records its parameters, and accepts parameters that
break its assumption (then it fails): see docs/theory.md.
"""

from deeplinear.theory import (  # noqa: F401  (importing registers the checks, in this order)
    checks_convergence,
    checks_dynamics,
    checks_landscape,
)
from deeplinear.theory._base import CHECKS, Check, CheckResult, Outcome, run_checks

__all__ = ["CHECKS", "Check", "CheckResult", "Outcome", "run_checks"]
