"""The §2.15 checks of theory/checks_tensor.py beyond their registered pass/break pair (which
tests/test_theory.py runs): the exponent is set by the local order, the root obeys the same law,
and the tensor-rank estimate is the matrix rank for other order-2 shapes."""

from __future__ import annotations

import pytest

from deeplinear.theory import CHECKS


def test_ht_exponent_is_set_by_the_local_order():
    assert not CHECKS["ht_local_component_dynamics"].run(local_order=2).passed


def test_ht_root_node_obeys_the_local_law():
    result = CHECKS["ht_local_component_dynamics"].run(node=2)  # ((0, 1), (2, 3)): the root
    assert result.passed and result.params["diagnostics"]["node"] == "((0, 1), (2, 3))"


@pytest.mark.parametrize("dims, inner", [((4, 7), 2), ((5, 5), 4)])
def test_order2_rank_for_other_shapes(dims, inner):
    result = CHECKS["cp_order2_rank_equals_matrix_rank"].run(dims=dims, inner_rank=inner)
    assert result.passed and result.predicted == inner


def test_zero_component_with_two_zero_vectors_stays_zero():
    assert CHECKS["cp_zero_component_stays_zero"].run(zero_vectors=2).passed
