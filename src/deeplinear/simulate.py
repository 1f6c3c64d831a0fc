"""Simulate the end-to-end dynamics directly on ``W = W_{1:N}`` (§2.6).

Both simulators reuse the recording machinery of :mod:`deeplinear.train`, so their results have
the same fields, schedules and metrics as factor training and can be laid side by side:

* :func:`end_to_end_descent`: the discrete end-to-end rule (ACH18 Eq. 10) as one compiled loop,
  the counterpart of ``train(factors, problem, lr=..., optimizer="gd")`` from a balanced init;
* :func:`end_to_end_gradient_flow`: the flow of Theorem 1 as an ODE (diffrax), the counterpart of
  ``train.gradient_flow(factors, ...)`` from a balanced init.

For N >= 2 the origin is a fixed point (§4 pitfall 2): start from ``W0 != 0``. Near rank
deficiency the vector field is not Lipschitz (powers < ½), so prefer tight tolerances there.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax

from deeplinear._dtype import as_float, common_dtype
from deeplinear.dynamics import end_to_end_flow, end_to_end_update
from deeplinear.problems import Problem
from deeplinear.train import FlowResult, MetricFn, Schedule, TrainResult, integrate, iterate

__all__ = [
    "end_to_end_descent",
    "end_to_end_gradient_flow",
]


def _validate(W0: jax.Array, problem: Problem, depth: int) -> jax.Array:
    if not isinstance(problem, Problem):
        raise ValueError(f"problem must be a deeplinear.problems.Problem, got {type(problem).__name__}")
    W0 = as_float(W0)
    W0 = W0.astype(common_dtype(W0, problem))  # the run's dtype: W0's and the problem's, promoted
    if W0.shape != tuple(problem.shape):
        raise ValueError(f"W0 has shape {W0.shape} but problem.shape is {tuple(problem.shape)}")
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth must be a Python int >= 1, got {depth!r}")
    return W0


def end_to_end_descent(
    W0: jax.Array,
    problem: Problem,
    *,
    lr: float,
    depth: int,
    steps: int,
    weight_decay: float = 0.0,
    schedule: Schedule | None = None,
    stop_loss: float | None = None,
    metrics: Mapping[str, MetricFn] | None = None,
    divergence_factor: float = 1e8,
    progress: Callable[[int], None] | None = None,
) -> TrainResult:
    """Iterate the discrete end-to-end rule (§2.6, ACH18 Eq. 10)
    ``W ← (1 - ηλN) W - η Σ_j [WWᵀ]^{(j-1)/N} ∇ℓ(W) [WᵀW]^{(N-j)/N}``.

    Returns a :class:`~deeplinear.train.TrainResult` whose ``state`` and ``W`` are the final
    end-to-end matrix; ``status`` is a :class:`~deeplinear.train.Status` (``CONVERGED``: ``stop_loss``
    reached, ``MAX_STEPS`` or ``DIVERGED`` with ``diverged_step``), exactly as for factor training.
    """
    W0 = _validate(W0, problem, depth)
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")

    def update(W):
        loss, G = problem.value_and_grad(W)
        return end_to_end_update(W, G, lr, depth, weight_decay), loss

    return iterate(
        update, W0, problem, steps=steps, to_matrix=lambda W: W, schedule=schedule,
        stop_loss=stop_loss, metrics=metrics, divergence_factor=divergence_factor,
        progress=progress,
    )


def end_to_end_gradient_flow(
    W0: jax.Array,
    problem: Problem,
    t1: float,
    *,
    depth: int,
    ts=None,
    weight_decay: float = 0.0,
    rtol: float = 1e-8,
    atol: float = 1e-10,
    solver: str = "tsit5",
    metrics: Mapping[str, MetricFn] | None = None,
    max_steps: int = 1_000_000,
) -> FlowResult:
    """Solve the end-to-end flow of Theorem 1 (with weight decay λ),
    ``dW/dt = -Σ_j [WWᵀ]^{(j-1)/N} ∇ℓ(W) [WᵀW]^{(N-j)/N} - NλW``, on ``[0, t1]`` with diffrax.

    Returns a :class:`~deeplinear.train.FlowResult` recorded at ``ts`` (default 101 even times).
    """
    W0 = _validate(W0, problem, depth)

    def field(W):
        return end_to_end_flow(W, problem.grad(W), depth, weight_decay)

    return integrate(
        field, W0, problem, t1, to_matrix=lambda W: W, ts=ts, rtol=rtol, atol=atol,
        solver=solver, metrics=metrics, max_steps=max_steps,
    )
