"""Reading recorded trajectories: when a curve first reaches a level, the value of another
recorded quantity at that moment, and when one curve gets below another for good.

Curves are numpy arrays recorded at increasing ``steps`` (iterations or times). Between two
records a decreasing curve is interpolated linearly in ``(step, log value)``, the natural scale of
losses that fall over decades. A level never reached gives ``None``: a value that does not exist.
"""

from __future__ import annotations

import numpy as np

__all__ = ["crossing_step", "first_reach", "value_at_first_reach"]


def _first_index(values: np.ndarray, level: float) -> int | None:
    hit = np.flatnonzero(np.asarray(values, dtype=np.float64) <= level)
    return int(hit[0]) if hit.size else None


def _log_fraction(values: np.ndarray, k: int, level: float) -> float:
    """Where ``level`` falls between records ``k-1`` and ``k``, in log value (0 to 1)."""
    a, b = np.log(max(values[k - 1], 1e-300)), np.log(max(values[k], 1e-300))
    return 1.0 if a == b else float((a - np.log(level)) / (a - b))


def first_reach(steps: np.ndarray, values: np.ndarray, level: float, *,
                interpolate: bool = True) -> float | None:
    """First step at which ``values`` is at or below ``level``: interpolated in (step, log value)
    between the last record above and the first at or below it (``interpolate=False``: that
    record's step). ``None`` when the level is never reached."""
    values = np.asarray(values, dtype=np.float64)
    k = _first_index(values, level)
    if k is None:
        return None
    if k == 0 or not interpolate:
        return float(steps[k])
    return float(steps[k - 1] + _log_fraction(values, k, level) * (steps[k] - steps[k - 1]))


def value_at_first_reach(values: np.ndarray, other: np.ndarray, level: float) -> float | None:
    """``other`` at the moment ``values`` first reaches ``level`` (interpolated as in
    :func:`first_reach`), e.g. ``|W_11|`` when the loss first drops to 1e-4; ``None`` if never."""
    values, other = np.asarray(values, dtype=np.float64), np.asarray(other, dtype=np.float64)
    k = _first_index(values, level)
    if k is None:
        return None
    if k == 0:
        return float(other[0])
    return float(other[k - 1] + _log_fraction(values, k, level) * (other[k] - other[k - 1]))


def crossing_step(steps: np.ndarray, a: np.ndarray, b: np.ndarray) -> float | None:
    """First recorded step from which curve ``a`` stays strictly below curve ``b`` to the end
    (the first step when ``a`` is below throughout; ``None`` when ``a`` ends at or above ``b``)."""
    below = np.asarray(a) < np.asarray(b)
    if not below[-1]:
        return None
    above = np.flatnonzero(~below)
    return float(steps[0]) if above.size == 0 else float(steps[above[-1] + 1])
