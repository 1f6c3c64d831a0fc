"""Gradient flow (§2.4) and any autonomous ODE, solved by adaptive diffrax solvers."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

from deeplinear._dtype import common_dtype
from deeplinear.network import Factors, end_to_end, factor_gradients
from deeplinear.problems import Problem
from deeplinear.train._engine import MetricFn, Status, _finite, _record
from deeplinear.train.descent import _in_common_dtype, _matrix_as_none, _validate_train
from deeplinear.train.parameterization import Parameterization

__all__ = [
    "FlowResult",
    "gradient_flow",
    "integrate",
    "SOLVERS",
]

_SOLVERS: dict[str, Callable[[], diffrax.AbstractSolver]] = {
    "tsit5": diffrax.Tsit5,
    "dopri5": diffrax.Dopri5,
    "dopri8": diffrax.Dopri8,
    "kvaerno5": diffrax.Kvaerno5,  # stiff (implicit)
}
SOLVERS = tuple(_SOLVERS)


@dataclass
class FlowResult:
    """A gradient-flow trajectory recorded at times ``ts`` (numpy arrays)."""

    ts: np.ndarray
    loss: np.ndarray
    metrics: dict[str, np.ndarray]
    state: Any
    W: np.ndarray
    status: Status
    num_steps: int

    @property
    def factors(self) -> Any:
        return self.state


def _solve(vector_field, y0, problem, t1, ts, to_matrix, solver, rtol, atol, metrics, state_metrics,
           max_steps):
    """Traceable diffrax solve: records at ``ts`` plus the final state."""
    rec = lambda t, y, args: _record(y, to_matrix, problem, metrics, state_metrics)  # noqa: E731
    saveat = diffrax.SaveAt(subs=[diffrax.SubSaveAt(ts=ts, fn=rec), diffrax.SubSaveAt(t1=True)])
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(lambda t, y, args: vector_field(y)), _SOLVERS[solver](),
        t0=0.0, t1=t1, dt0=None, y0=y0, saveat=saveat,
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
        max_steps=max_steps, throw=False,
    )
    return sol.ys, sol.result, sol.stats["num_steps"]


def _check_flow(t1, ts, solver, rtol, atol):
    if not t1 > 0:
        raise ValueError(f"t1 must be > 0, got {t1!r}")
    if solver not in _SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    if not (rtol > 0 and atol > 0):
        raise ValueError(f"rtol and atol must be > 0, got {rtol!r}, {atol!r}")
    ts = np.linspace(0.0, t1, 101) if ts is None else np.asarray(ts, dtype=np.float64)
    if ts.ndim != 1 or ts[0] < 0 or ts[-1] > t1 or np.any(np.diff(ts) < 0):
        raise ValueError(f"ts must be sorted times in [0, t1={t1}]")
    return ts


def _finish_flow(out, ts, problem, to_matrix) -> FlowResult:
    (recs, final), result, nsteps = out
    recs = {k: np.asarray(v) for k, v in recs.items()}
    final = jax.tree_util.tree_map(lambda a: np.asarray(a)[0], final)
    ok = np.all(np.stack([np.all(np.isfinite(v.reshape(len(ts), -1)), axis=1)
                          for v in recs.values()]), axis=0)
    if result == diffrax.RESULTS.successful and ok.all():
        status = Status.CONVERGED
    elif result == diffrax.RESULTS.max_steps_reached:
        status = Status.MAX_STEPS
    else:
        status = Status.DIVERGED
    keep = np.cumprod(ok).astype(bool)
    recs = {k: v[keep] for k, v in recs.items()}
    final_ok = bool(_finite(final))
    W = np.asarray(to_matrix(final)) if final_ok else np.full(problem.shape, np.nan)
    return FlowResult(ts[keep], recs.pop("loss"), recs, final if final_ok else None, W,
                      status, int(nsteps))


def integrate(
    vector_field: Callable[[Any], Any],
    y0: Any,
    problem: Problem,
    t1: float,
    *,
    to_matrix: Callable[[Any], jax.Array],
    ts: np.ndarray | None = None,
    rtol: float = 1e-8,
    atol: float = 1e-10,
    solver: str = "tsit5",
    metrics: Mapping[str, MetricFn] | None = None,
    state_metrics: Mapping[str, Callable[[Any], jax.Array]] | None = None,
    max_steps: int = 1_000_000,
) -> FlowResult:
    """Solve the autonomous ODE ``dy/dt = vector_field(y)`` on ``[0, t1]`` with an adaptive
    diffrax solver (PID step control, tolerances ``rtol``/``atol``), recording metrics at ``ts``.

    A failed solve (non-finite state, step budget exhausted) gives ``status``
    :attr:`~deeplinear.train.Status.DIVERGED` or :attr:`~deeplinear.train.Status.MAX_STEPS` and
    records only the times reached with finite values (``W`` is then NaN
    and ``state`` None: never use them as a result).
    """
    ts = _check_flow(t1, ts, solver, rtol, atol)
    times = jnp.asarray(ts, common_dtype(y0))  # the state's float dtype
    mets, smets = dict(metrics or {}), dict(state_metrics or {})
    solve = jax.jit(lambda y: _solve(vector_field, y, problem, float(t1), times, to_matrix, solver,
                                     rtol, atol, mets, smets, max_steps))
    return _finish_flow(solve(y0), ts, problem, to_matrix)


@functools.partial(jax.jit, static_argnames=("static",))
def _flow_program(factors, problem, weight_decay, t1, ts, static):
    solver, rtol, atol, metrics, state_metrics, max_steps, param = static

    def field(fs):
        if param is None:
            grads = factor_gradients(fs, problem.grad(end_to_end(fs)))
        else:
            grads = param.value_and_grads(fs, problem)[1]
        return tuple(-g - weight_decay * w for g, w in zip(grads, fs, strict=True))

    e2e = end_to_end if param is None else param.end_to_end
    return _solve(field, factors, problem, t1, ts, e2e, solver, rtol, atol, dict(metrics),
                  dict(state_metrics), max_steps)


def gradient_flow(
    factors: Factors,
    problem: Problem,
    t1: float,
    *,
    ts: np.ndarray | None = None,
    rtol: float = 1e-8,
    atol: float = 1e-10,
    solver: str = "tsit5",
    weight_decay: float = 0.0,
    metrics: Mapping[str, MetricFn] | None = None,
    state_metrics: Mapping[str, Callable[[Factors], jax.Array]] | None = None,
    max_steps: int = 1_000_000,
    parameterization: Parameterization | None = None,
) -> FlowResult:
    """Gradient flow on the factors, ``dW_j/dt = -dphi/dW_j - lambda W_j`` (§2.4), by diffrax.

    The compiled program is cached across calls that differ only in data, ``t1``, ``ts`` values
    or ``weight_decay`` (see :func:`integrate` for the recording and failure semantics).
    ``parameterization`` as in :func:`train` (e.g. a CP factorization: ``dw_r^n/dt = -dphi/dw_r^n``).
    """
    param = _matrix_as_none(parameterization)
    _validate_train(factors, problem, 1.0, param)
    ts = _check_flow(t1, ts, solver, rtol, atol)
    factors, dtype = _in_common_dtype(factors, problem)
    static = (solver, float(rtol), float(atol), tuple((metrics or {}).items()),
              tuple((state_metrics or {}).items()), int(max_steps), param)
    out = _flow_program(factors, problem, jnp.asarray(weight_decay, dtype), jnp.asarray(t1, dtype),
                        jnp.asarray(ts, dtype), static=static)
    return _finish_flow(out, ts, problem, end_to_end if param is None else param.end_to_end)
