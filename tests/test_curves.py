"""Reading trajectories: first reach (log interpolation), value at first reach, crossings."""

import numpy as np
import pytest

from deeplinear.curves import crossing_step, first_reach, value_at_first_reach


def test_first_reach_interpolates_in_log_value():
    steps = np.array([0, 10, 20, 30])
    vals = np.array([1.0, 1e-1, 1e-2, 1e-3])
    assert first_reach(steps, vals, 1.0) == 0
    assert first_reach(steps, vals, 10 ** -1.5) == pytest.approx(15.0)
    assert first_reach(steps, vals, 10 ** -1.5, interpolate=False) == 20
    assert first_reach(steps, vals, 1e-4) is None  # never reached: no value


def test_value_at_first_reach():
    loss = np.array([1.0, 1e-1, 1e-2, 1e-3])
    assert value_at_first_reach(loss, np.array([0.0, 1.0, 2.0, 3.0]), 10 ** -1.5) == \
        pytest.approx(1.5)
    assert value_at_first_reach(loss, np.array([5.0, 1.0, 2.0, 3.0]), 2.0) == 5.0
    assert value_at_first_reach(loss, np.zeros(4), 1e-5) is None


def test_crossing_step():
    steps = np.array([0, 10, 20, 30, 40])
    b = np.ones(5)
    a = np.array([2.0, 0.5, 2.0, 0.5, 0.5])  # below, back above, then below for good
    assert crossing_step(steps, a, b) == 30
    assert crossing_step(steps, b * 0.5, b) == 0
    assert crossing_step(steps, b * 2, b) is None
