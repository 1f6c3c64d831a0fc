"""Deep matrix, CP and hierarchical tensor factorization on one problem, in one call (§2.15).

A tensor problem (completion or sensing of an order-K tensor) is fitted by

* ``"matrix"``: a depth-``depth`` matrix factorization of the tensor's matricization (the first
  ``row_modes`` modes index rows; for K = 2 this is the deep matrix factorization itself);
* ``"cp"``: a CP factorization with ``components`` components;
* ``"ht"``: a hierarchical tensor factorization on the balanced binary mode tree (K >= 2) with
  local ranks ``ht_ranks``;

all from i.i.d. ``N(0, init_scale^2)`` weights, by the same optimizer, steps and stop rule.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax

from deeplinear import network as nw
from deeplinear.problems import Problem
from deeplinear.tensor import cp, ht
from deeplinear.train import MatricizedFactorization, Schedule, TrainResult, train
from deeplinear.train._engine import MetricFn

__all__ = ["METHODS", "compare"]

METHODS = ("matrix", "cp", "ht")


def compare(
    problem: Problem,
    key: jax.Array,
    *,
    lr: float,
    steps: int,
    methods: Sequence[str] = METHODS,
    depth: int = 2,
    row_modes: int | None = None,
    components: int | None = None,
    ht_ranks: int | None = None,
    init_scale: float = 1e-3,
    optimizer: str = "group_rmsprop",
    optimizer_kwargs: Mapping[str, float] | None = None,
    schedule: Schedule | None = None,
    stop_loss: float | None = None,
    metrics: Mapping[str, MetricFn] | None = None,
    state_metrics: Mapping[str, Mapping[str, MetricFn]] | None = None,
) -> dict[str, TrainResult]:
    """Train each of ``methods`` on ``problem`` (a tensor problem with ``problem.shape`` the
    tensor's mode sizes); returns ``{method: TrainResult}``, every ``W`` of the tensor's shape.

    ``components`` (CP) and ``ht_ranks`` default to the largest mode size times 2 (an
    unconstrained width); the matrix widths are ``min(d_N, d_0)`` (no bottleneck).
    ``metrics`` take the end-to-end tensor; ``state_metrics[method]`` the method's factors.
    """
    unknown = set(methods) - set(METHODS)
    if unknown or not methods:
        raise ValueError(f"methods must be a non-empty subset of {METHODS}, got {list(methods)}")
    shape = tuple(problem.shape)
    if len(shape) < 2:
        raise ValueError(f"compare needs a tensor problem of order >= 2, got shape {shape}")
    width = 2 * max(shape)
    keys = dict(zip(METHODS, jax.random.split(key, len(METHODS)), strict=True))
    out: dict[str, TrainResult] = {}
    for method in methods:
        if method == "matrix":
            param = MatricizedFactorization(shape, row_modes or len(shape) // 2)
            rows, cols = param.matrix_shape
            inner = min(rows, cols)
            factors = nw.gaussian_init(keys[method], (cols,) + (inner,) * (depth - 1) + (rows,),
                                       init_scale, dtype=problem_dtype(problem))
        elif method == "cp":
            param = cp.CPFactorization()
            factors = cp.gaussian_init(keys[method], shape, components or width, init_scale,
                                       dtype=problem_dtype(problem))
        else:
            param = ht.HTFactorization(shape, ranks=ht_ranks or width)
            factors = ht.gaussian_init(keys[method], param, init_scale, dtype=problem_dtype(problem))
        out[method] = train(factors, problem, lr=lr, steps=steps, optimizer=optimizer,
                            optimizer_kwargs=optimizer_kwargs,
                            schedule=schedule, stop_loss=stop_loss, metrics=metrics,
                            state_metrics=(state_metrics or {}).get(method),
                            parameterization=param)
    return out


def problem_dtype(problem: Problem):
    """The float dtype of ``problem``'s data (the factors are created in it)."""
    from deeplinear._dtype import common_dtype

    return common_dtype(problem)
