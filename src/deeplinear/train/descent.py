"""(Optax) gradient descent on the factors of ``phi(W_1..W_N) = l(W_N...W_1)`` (Def 2): one run or R
replicas (``vmap``) in one cached compiled program."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from deeplinear._dtype import as_float, common_dtype
from deeplinear.network import Factors, dims_of, end_to_end, factor_gradients
from deeplinear.problems import MatrixCompletion, Problem, SparseCompletion, sparse_is_cheaper
from deeplinear.train._engine import (
    MetricFn,
    Schedule,
    TrainResult,
    _check_run,
    _deltas,
    _finish_progress,
    _loop,
    _pack,
    _reporting,
)
from deeplinear.train.optimizers import _OPTIMIZERS, OPTIMIZERS, make_optimizer
from deeplinear.train.parameterization import DeepMatrixFactorization, Parameterization

__all__ = [
    "train",
    "train_replicas",
]


def _factor_update(problem, optimizer, weight_decay, parameterization=None):
    def update(state):
        factors, opt_state = state
        if parameterization is not None:  # CP, HT, matricized, ... (train/parameterization.py)
            loss, grads = parameterization.value_and_grads(factors, problem)
        elif isinstance(problem, SparseCompletion):
            loss, grads = problem.value_and_factor_grads(factors)
        else:
            loss, G = problem.value_and_grad(end_to_end(factors))
            grads = factor_gradients(factors, G)
        # in the factors' dtype (a CustomLoss may compute in a wider one)
        grads = tuple((g + weight_decay * w).astype(w.dtype)
                      for g, w in zip(grads, factors, strict=True))
        updates, opt_state = optimizer.update(grads, opt_state, factors)
        return (optax.apply_updates(factors, updates), opt_state), loss

    return update


class _Static(NamedTuple):
    """The hashable, compile-time part of a training call (the cache key of its program)."""

    optimizer: str | optax.GradientTransformation
    optimizer_kwargs: tuple
    metrics: tuple
    state_metrics: tuple
    parameterization: Parameterization | None = None  # None: W_N ... W_1 (Def 2)


def _e2e_of_state(state):
    return end_to_end(state[0])


def _e2e_of(parameterization):
    """The state's end-to-end map: ``W_N ... W_1`` or the parameterization's."""
    if parameterization is None:
        return _e2e_of_state
    return lambda state: parameterization.end_to_end(state[0])


def _train_core(factors, problem, lr, weight_decay, deltas, threshold, divergence_factor,
                progress_id, static):
    if isinstance(static.optimizer, str):
        opt = make_optimizer(static.optimizer, lr, **dict(static.optimizer_kwargs))
    else:
        opt = static.optimizer
    state = (factors, opt.init(factors))
    state_metrics = {k: (lambda s, f=f: f(s[0])) for k, f in static.state_metrics}
    return _loop(_factor_update(problem, opt, weight_decay, static.parameterization), state, problem,
                 _e2e_of(static.parameterization), deltas, threshold, divergence_factor,
                 dict(static.metrics), state_metrics, progress_id)


_train_program = jax.jit(_train_core, static_argnames=("static",))


@functools.partial(jax.jit, static_argnames=("static",))
def _replicas_program(factors, problem, lrs, weight_decay, deltas, threshold, divergence_factor,
                      progress_id, static):
    return jax.vmap(
        lambda f, lr: _train_core(f, problem, lr, weight_decay, deltas, threshold, divergence_factor,
                                  progress_id, static)
    )(factors, lrs)


def _step_problem(problem: Problem, dims: tuple[int, ...], sparse: bool | None) -> Problem:
    """The problem the step runs on: a :class:`SparseCompletion` where the sparse path is chosen
    (``sparse=True``, or ``None`` and :func:`problems.sparse_is_cheaper`), else the dense one."""
    if sparse is not None and not isinstance(sparse, bool | np.bool_):
        raise ValueError(f"sparse must be True, False or None (automatic), got {sparse!r}")
    if isinstance(problem, SparseCompletion):
        if sparse is False:
            return problem.problem
        return problem if problem.dims == dims else SparseCompletion(problem.problem, dims)
    if sparse and not isinstance(problem, MatrixCompletion):
        raise ValueError(f"sparse=True needs a MatrixCompletion, got {type(problem).__name__}")
    if sparse or (sparse is None and sparse_is_cheaper(problem, dims)):
        return SparseCompletion(problem, dims)
    return problem


def _execute(program, factors, problem, lr, optimizer, optimizer_kwargs, weight_decay, schedule,
             stop_loss, metrics, state_metrics, divergence_factor, progress, steps,
             sparse, parameterization=None) -> TrainResult:
    """Shared by :func:`train` and :func:`train_replicas`: build the static part (the program's
    cache key), run ``program``, report progress and pack the result."""
    _check_run(steps, stop_loss, divergence_factor)
    if parameterization is None:
        problem = _step_problem(problem, dims_of(factors), sparse)
    elif sparse:
        raise ValueError("sparse=True is for the deep matrix factorization only (parameterization=None)")
    if isinstance(optimizer, str) and optimizer not in _OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    static = _Static(optimizer, tuple(sorted((optimizer_kwargs or {}).items())),
                     tuple((metrics or {}).items()), tuple((state_metrics or {}).items()),
                     parameterization)
    threshold = -np.inf if stop_loss is None else float(stop_loss)
    factors, dtype = _in_common_dtype(factors, problem)
    with _reporting(progress) as pid:
        out = program(factors, problem, jnp.asarray(lr, dtype), jnp.asarray(weight_decay, dtype),
                      _deltas(schedule, steps), threshold, float(divergence_factor), pid,
                      static=static)
    _finish_progress(progress, steps)
    res = _pack(*out, _e2e_of(parameterization))
    res.state = res.state[0]
    return res


def _in_common_dtype(factors, problem) -> tuple[Factors, np.dtype]:
    """The factors as float arrays in the dtype the run computes in: the promotion of the
    factors' and the problem's float dtypes (float32 factors and data: float32 throughout)."""
    factors = jax.tree_util.tree_map(as_float, factors)
    dtype = common_dtype(factors, problem)
    return jax.tree_util.tree_map(lambda w: w.astype(dtype), factors), dtype


def _matrix_as_none(parameterization):
    """``None`` for the plain deep matrix factorization (it keeps the sparse completion step)."""
    return None if type(parameterization) is DeepMatrixFactorization else parameterization


def _validate_train(factors, problem, lr, parameterization=None):
    if not isinstance(factors, tuple) or not factors:
        raise ValueError("factors must be a non-empty tuple of arrays (W_1, ..., W_N)")
    if not isinstance(problem, Problem):
        raise ValueError(f"problem must be a deeplinear.problems.Problem, got {type(problem).__name__}")
    if parameterization is not None and not isinstance(parameterization, Parameterization):
        raise ValueError("parameterization must be a train.Parameterization or None, got "
                         f"{type(parameterization).__name__}")
    shape = ((factors[-1].shape[-2], factors[0].shape[-1]) if parameterization is None
             else parameterization.shape(factors))
    if shape != tuple(problem.shape):
        raise ValueError(f"factors give end-to-end shape {shape} but problem.shape is {problem.shape}")
    if not np.all(np.asarray(lr) > 0):
        raise ValueError(f"lr must be > 0, got {lr!r}")


def train(
    factors: Factors,
    problem: Problem,
    *,
    lr: float,
    steps: int,
    optimizer: str | optax.GradientTransformation = "gd",
    optimizer_kwargs: Mapping[str, Any] | None = None,
    weight_decay: float = 0.0,
    schedule: Schedule | None = None,
    stop_loss: float | None = None,
    metrics: Mapping[str, MetricFn] | None = None,
    state_metrics: Mapping[str, Callable[[Factors], jax.Array]] | None = None,
    divergence_factor: float = 1e8,
    progress: Callable[[int], None] | None = None,
    sparse: bool | None = None,
    parameterization: Parameterization | None = None,
) -> TrainResult:
    """Optimize ``phi(W_1..W_N) = l(W_N...W_1)`` over the factors (Def 2).

    Plain GD is ``W_j <- W_j - lr (dphi/dW_j + weight_decay W_j)`` with the analytic layer
    gradients of §2.1. ``metrics`` map the end-to-end matrix to a value; ``state_metrics`` map the
    factors (e.g. ``network.imbalance``). The returned ``state`` is the final tuple of factors.
    ``parameterization`` (:mod:`train.parameterization`; ``None``: ``W_N ... W_1``) replaces the
    end-to-end map, e.g. a CP or hierarchical tensor factorization (``deeplinear.tensor``):
    then ``phi = l(parameterization.end_to_end(factors))`` and metrics take that array.
    The run computes in the dtype of its inputs: the promotion of the factors' and the problem's
    float dtypes (``lr`` and ``weight_decay`` are cast to it).
    ``progress(step)`` is called on the host at every record point, and with ``steps`` at the end.

    The compiled program is cached: calls that differ only in data, ``lr``, ``weight_decay``,
    ``stop_loss`` or a schedule with the same number of records reuse it (pass the same metric
    functions, not new lambdas, to benefit).

    ``sparse`` (:class:`problems.MatrixCompletion` only): ``True`` runs each step on the
    observed entries (:class:`problems.SparseCompletion`: the ``m`` observed entries of
    ``W_N ... W_1``, the residual, and the layer gradients through two sparse-dense products
    at a split layer ``k``, never a dense ``d_N x d_0`` gradient); ``False`` runs the dense step
    (the full end-to-end matrix and a scattered dense gradient); ``None`` (default) picks the
    cheaper by the cost model of :func:`problems.sparse_is_cheaper` (its docstring states the
    formula, its measured constants and where each path wins). Both paths give the same
    trajectory up to rounding. Records and metrics always use the dense end-to-end matrix.
    """
    return _run(_train_program, **locals())


def train_replicas(factors: Factors, problem: Problem, **options: Any) -> TrainResult:
    """:func:`train` for R replicas in one compiled program (``vmap``); it takes exactly
    :func:`train`'s arguments (one signature, checked the same way).

    ``factors`` carry a leading replica axis of size R (e.g. ``jax.vmap(init)(keys)``); ``lr``
    is a scalar or an array of R learning rates (a grid search in one program). Each replica
    stops on its own; results carry the replica axis first (``status`` an array of
    :class:`~deeplinear.train.Status` values, ``diverged_step`` is -1 where a replica did not
    diverge). ``sparse`` as in :func:`train` (the rule looks at one replica's widths).
    """
    args = _TRAIN_SIGNATURE.bind(factors, problem, **options)  # a TypeError as train gives
    args.apply_defaults()
    return _run(_replicas_program, **args.arguments)


_TRAIN_SIGNATURE = inspect.signature(train)
train_replicas.__signature__ = _TRAIN_SIGNATURE.replace(  # type: ignore[attr-defined]
    parameters=[p.replace(annotation="float | jax.Array") if p.name == "lr" else p
                for p in _TRAIN_SIGNATURE.parameters.values()])


def _run(program, factors, problem, lr, steps, optimizer, optimizer_kwargs, weight_decay,
         schedule, stop_loss, metrics, state_metrics, divergence_factor, progress, sparse,
         parameterization) -> TrainResult:
    """Validate :func:`train`'s arguments (for replicas: on the first one, ``lr`` broadcast to
    R) and run ``program`` through :func:`_execute`."""
    parameterization = _matrix_as_none(parameterization)
    if program is _replicas_program:
        lr = np.broadcast_to(np.asarray(lr, dtype=np.float64), (factors[0].shape[0],))
        _validate_train(tuple(w[0] for w in factors), problem, lr, parameterization)
    else:
        _validate_train(factors, problem, lr, parameterization)
    return _execute(program, factors, problem, lr, optimizer, optimizer_kwargs, weight_decay,
                    schedule, stop_loss, metrics, state_metrics, divergence_factor, progress,
                    steps, sparse, parameterization)
