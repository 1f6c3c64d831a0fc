"""Training loops: gradient descent (optax) on the factors and gradient flow (diffrax).

Every loop is one compiled program: an outer ``lax.scan`` over the recording points and an inner
``lax.while_loop`` over the steps between them, which stops early at a loss threshold or on
divergence. Public surface:

* :func:`train` / :func:`train_replicas`: (optax) gradient descent on the factors of ``phi``;
* :func:`gradient_flow`: ``dW_j/dt = -dphi/dW_j`` (§2.4) with an adaptive diffrax solver;
* :func:`iterate` / :func:`integrate`: the same machinery for any state (e.g. the end-to-end rule);
* :func:`group_rmsprop` and :func:`make_optimizer` (§4 pitfall 8).

Divergence (a non-finite loss, or the loss exceeding ``divergence_factor`` times its initial
value) stops the run: ``status == "diverged"``, ``diverged_step`` is the iterate whose loss blew
up, and the state rolls back to the last recorded (finite) one. No NaN is ever recorded.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from deeplinear.network import Factors, end_to_end, factor_gradients
from deeplinear.problems import Problem

MetricFn = Callable[[jax.Array], jax.Array]
_RUNNING, _CONVERGED, _DIVERGED = 0, 1, 2
_STATUS = {_RUNNING: "max_steps", _CONVERGED: "converged", _DIVERGED: "diverged"}


# --------------------------------------------------------------------------- schedules


@dataclass(frozen=True)
class Schedule:
    """When metrics are recorded: every ``k`` steps, or at ``n`` log-spaced steps (always
    including step 0 and the last step)."""

    kind: str
    value: int

    @classmethod
    def every(cls, k: int) -> Schedule:
        if k < 1:
            raise ValueError(f"Schedule.every: k must be >= 1, got {k}")
        return cls("every", int(k))

    @classmethod
    def log(cls, n_points: int, steps: int | None = None) -> Schedule:
        del steps  # resolved against the run length in `points`
        if n_points < 2:
            raise ValueError(f"Schedule.log: n_points must be >= 2, got {n_points}")
        return cls("log", int(n_points))

    def points(self, steps: int) -> np.ndarray:
        """Sorted unique record steps in ``[0, steps]``."""
        if self.kind == "every":
            pts = np.arange(0, steps + 1, self.value)
        else:
            pts = np.unique(np.round(np.geomspace(1, max(steps, 1), self.value - 1)).astype(int))
            pts = np.concatenate([[0], pts])
        return np.unique(np.concatenate([pts, [steps]])).astype(np.int64)


# --------------------------------------------------------------------------- optimizers


class GroupRMSpropState(NamedTuple):
    count: jax.Array
    square_avg: jax.Array


def group_rmsprop(
    learning_rate: float, alpha: float = 0.99, eps: float = 1e-4
) -> optax.GradientTransformation:
    """RMSprop with ONE adaptive rate for all parameters (roosephu ``opt.py``, §4 pitfall 8).

    ``v_t = alpha v_{t-1} + (1 - alpha) Σ_params ||g||^2``, ``v̂_t = v_t / (1 - alpha^t)``,
    update ``= -lr g / (sqrt(v̂_t) + eps)``.
    """

    def init(params):
        del params
        return GroupRMSpropState(jnp.zeros([], jnp.int32), jnp.zeros([], jnp.float64))

    def update(updates, state, params=None):
        del params
        sq = sum(jnp.sum(g * g) for g in jax.tree_util.tree_leaves(updates))
        count = state.count + 1
        avg = alpha * state.square_avg + (1 - alpha) * sq
        denom = jnp.sqrt(avg / (1 - alpha ** count.astype(avg.dtype))) + eps
        scaled = jax.tree_util.tree_map(lambda g: -learning_rate * g / denom, updates)
        return scaled, GroupRMSpropState(count, avg)

    return optax.GradientTransformation(init, update)


_OPTIMIZERS: dict[str, Callable[..., optax.GradientTransformation]] = {
    "gd": optax.sgd,
    "momentum": lambda lr, momentum=0.9, nesterov=False: optax.sgd(lr, momentum, nesterov),
    "adam": optax.adam,
    "adagrad": optax.adagrad,
    "adadelta": optax.adadelta,
    "rmsprop": optax.rmsprop,
    "group_rmsprop": group_rmsprop,
}
OPTIMIZERS = tuple(_OPTIMIZERS)


def make_optimizer(name: str, lr: float | jax.Array, **kwargs: Any) -> optax.GradientTransformation:
    """An optax optimizer by name: one of :data:`OPTIMIZERS`."""
    if name not in _OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")
    return _OPTIMIZERS[name](lr, **kwargs)


# --------------------------------------------------------------------------- results


@dataclass
class TrainResult:
    """A recorded trajectory (numpy arrays; a leading replica axis for :func:`train_replicas`).

    ``steps``/``loss``/``metrics[name]`` are aligned (records up to the stop step);
    ``state`` is the final state (the factors for :func:`train`), ``W`` its end-to-end matrix.
    """

    steps: np.ndarray
    loss: np.ndarray
    metrics: dict[str, np.ndarray]
    state: Any
    W: np.ndarray
    status: str | np.ndarray
    stop_step: int | np.ndarray
    diverged_step: int | None | np.ndarray = None

    @property
    def factors(self) -> Any:
        return self.state


# --------------------------------------------------------------------------- generic loop


def _finite(tree) -> jax.Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)]))


def _record(state, to_matrix, problem, metrics, state_metrics):
    W = to_matrix(state)
    out = {"loss": problem.loss(W)}
    out.update({k: f(W) for k, f in metrics.items()})
    out.update({k: f(state) for k, f in state_metrics.items()})
    return out


def _loop(step_fn, state, problem, to_matrix, deltas, stop_loss, divergence_factor,
          metrics, state_metrics, progress):
    """Run ``step_fn`` (state -> (state, loss at the old state)) with records after each delta.

    The per-step body does no selection and no reduction over the state (that is what keeps
    tiny problems fast): the loss it already computes decides. A step whose starting loss is
    at or below ``stop_loss`` is the last one taken (status "converged"); a non-finite or
    exploding starting loss marks "diverged", and the chunk then rolls back to its (finite)
    starting state, the last recorded one.
    """
    loss0 = problem.loss(to_matrix(state))
    ceiling = divergence_factor * jnp.maximum(jnp.abs(loss0), 1.0)
    threshold = -jnp.inf if stop_loss is None else stop_loss

    def body(c):
        i, n, state, step, status = c
        new_state, loss = step_fn(state)
        bad = ~jnp.isfinite(loss) | (loss > ceiling)
        status = jnp.where(bad, _DIVERGED, jnp.where(loss <= threshold, _CONVERGED, _RUNNING))
        return i + 1, n, new_state, step + 1, status

    def cond(c):
        i, n, _, _, status = c
        return (i < n) & (status == _RUNNING)

    def outer(carry, delta):
        state, step, status = carry
        _, _, new, new_step, new_status = jax.lax.while_loop(
            cond, body, (jnp.int64(0), delta, state, step, status)
        )
        diverged = (new_status == _DIVERGED) & (status != _DIVERGED)
        state = jax.tree_util.tree_map(lambda a, b: jnp.where(diverged, a, b), state, new)
        stop = jnp.where(diverged, new_step - 1, -1)  # the iterate whose loss blew up
        step = jnp.where(diverged, step, new_step)
        if progress is not None:
            jax.debug.callback(progress, step)
        rec = _record(state, to_matrix, problem, metrics, state_metrics)
        return (state, step, new_status), (step, stop, rec)

    zero = jnp.int64(0)
    status0 = jnp.where(loss0 <= threshold, _CONVERGED, _RUNNING)
    carry, (steps, stops, recs) = jax.lax.scan(outer, (state, zero, status0), deltas)
    first = _record(state, to_matrix, problem, metrics, state_metrics)
    steps = jnp.concatenate([zero[None], steps])
    recs = jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a[None], b]), first, recs)
    state, step, status = carry
    return state, steps, recs, status, step, jnp.max(stops)


def _pack(state, steps, recs, status, stop, diverged, to_matrix) -> TrainResult:
    steps = np.asarray(steps)
    recs = {k: np.asarray(v) for k, v in recs.items()}
    status, stop, diverged = np.asarray(status), np.asarray(stop), np.asarray(diverged)
    W = np.asarray(to_matrix(state))
    state = jax.tree_util.tree_map(np.asarray, state)
    if steps.ndim == 1:  # single run: drop the repeated records after the stop
        keep = np.concatenate([[True], np.diff(steps) > 0])
        steps = steps[keep]
        recs = {k: v[keep] for k, v in recs.items()}
        code = int(status)
        return TrainResult(steps, recs.pop("loss"), recs, state, W, _STATUS[code], int(stop),
                           int(diverged) if code == _DIVERGED else None)
    names = np.vectorize(_STATUS.get)(status)
    return TrainResult(steps, recs.pop("loss"), recs, state, W, names, stop, diverged)


def iterate(
    update: Callable[[Any], tuple[Any, jax.Array]],
    state: Any,
    problem: Problem,
    *,
    steps: int,
    to_matrix: Callable[[Any], jax.Array],
    schedule: Schedule | None = None,
    stop_loss: float | None = None,
    metrics: Mapping[str, MetricFn] | None = None,
    state_metrics: Mapping[str, Callable[[Any], jax.Array]] | None = None,
    divergence_factor: float = 1e8,
    progress: Callable[[int], None] | None = None,
) -> TrainResult:
    """Iterate ``state <- update(state)`` for ``steps`` steps in one compiled program.

    ``update(state)`` returns ``(new_state, loss of to_matrix(state))``. The same loop as
    :func:`train` for any state (``deeplinear.simulate`` runs the end-to-end rule with it);
    ``update`` usually closes over its data, so this form compiles on every call.
    """
    _check_run(steps, stop_loss, divergence_factor)
    deltas = _deltas(schedule, steps)
    fn = jax.jit(
        lambda s: _loop(update, s, problem, to_matrix, deltas, stop_loss, divergence_factor,
                        dict(metrics or {}), dict(state_metrics or {}), _host(progress))
    )
    with _reporting(progress):
        out = fn(state)
    _finish_progress(progress, steps)
    return _pack(*out, to_matrix)


def _deltas(schedule: Schedule | None, steps: int) -> jax.Array:
    """Steps between consecutive record points (default: 50 log-spaced records)."""
    return jnp.asarray(np.diff((schedule or Schedule.log(50)).points(steps)), dtype=jnp.int64)


def _check_run(steps, stop_loss, divergence_factor):
    if int(steps) != steps or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
    if stop_loss is not None and not np.isfinite(stop_loss):
        raise ValueError(f"stop_loss must be finite or None, got {stop_loss!r}")
    if not divergence_factor > 1:
        raise ValueError(f"divergence_factor must be > 1, got {divergence_factor!r}")


_PROGRESS = threading.local()  # the host callback of the call in flight (set by `_reporting`)


def _report_progress(step) -> None:
    callback = getattr(_PROGRESS, "callback", None)
    if callback is not None:
        callback(int(np.max(step)))


@contextlib.contextmanager
def _reporting(callback):
    """Route the compiled loop's progress callbacks to ``callback`` for the duration of a call,
    so compiled programs do not depend on (and are not recompiled for) the callback object."""
    previous = getattr(_PROGRESS, "callback", None)
    _PROGRESS.callback = callback
    try:
        yield
    finally:
        _PROGRESS.callback = previous


def _finish_progress(progress, steps) -> None:
    """A run that stopped early skipped its remaining steps: report them as done."""
    if progress is not None:
        progress(int(steps))


def _host(progress):
    return None if progress is None else _report_progress


# --------------------------------------------------------------------------- gradient descent


def _factor_update(problem, optimizer, weight_decay):
    def update(state):
        factors, opt_state = state
        loss, G = problem.value_and_grad(end_to_end(factors))
        grads = factor_gradients(factors, G)
        grads = tuple(g + weight_decay * w for g, w in zip(grads, factors, strict=True))
        updates, opt_state = optimizer.update(grads, opt_state, factors)
        return (optax.apply_updates(factors, updates), opt_state), loss

    return update


class _Static(NamedTuple):
    """The hashable, compile-time part of a training call (the cache key of its program)."""

    optimizer: str | optax.GradientTransformation
    optimizer_kwargs: tuple
    metrics: tuple
    state_metrics: tuple
    progress: bool


def _e2e_of_state(state):
    return end_to_end(state[0])


def _train_core(factors, problem, lr, weight_decay, deltas, threshold, divergence_factor, static):
    if isinstance(static.optimizer, str):
        opt = make_optimizer(static.optimizer, lr, **dict(static.optimizer_kwargs))
    else:
        opt = static.optimizer
    state = (factors, opt.init(factors))
    state_metrics = {k: (lambda s, f=f: f(s[0])) for k, f in static.state_metrics}
    return _loop(_factor_update(problem, opt, weight_decay), state, problem, _e2e_of_state, deltas,
                 threshold, divergence_factor, dict(static.metrics), state_metrics,
                 _report_progress if static.progress else None)


_train_program = jax.jit(_train_core, static_argnames=("static",))


@functools.partial(jax.jit, static_argnames=("static",))
def _replicas_program(factors, problem, lrs, weight_decay, deltas, threshold, divergence_factor, static):
    return jax.vmap(
        lambda f, lr: _train_core(f, problem, lr, weight_decay, deltas, threshold, divergence_factor,
                                  static)
    )(factors, lrs)


def _execute(program, factors, problem, lr, optimizer, optimizer_kwargs, weight_decay, schedule,
             stop_loss, metrics, state_metrics, divergence_factor, progress, steps) -> TrainResult:
    """Shared by :func:`train` and :func:`train_replicas`: build the static part (the program's
    cache key), run ``program``, report progress and pack the result."""
    _check_run(steps, stop_loss, divergence_factor)
    if isinstance(optimizer, str) and optimizer not in _OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    static = _Static(optimizer, tuple(sorted((optimizer_kwargs or {}).items())),
                     tuple((metrics or {}).items()), tuple((state_metrics or {}).items()),
                     progress is not None)
    threshold = -np.inf if stop_loss is None else float(stop_loss)
    factors = tuple(jnp.asarray(w, dtype=jnp.float64) for w in factors)
    with _reporting(progress):
        out = program(factors, problem, lr, jnp.float64(weight_decay), _deltas(schedule, steps),
                      threshold, float(divergence_factor), static=static)
    _finish_progress(progress, steps)
    res = _pack(*out, _e2e_of_state)
    res.state = res.state[0]
    return res


def _validate_train(factors, problem, lr):
    if not isinstance(factors, tuple) or not factors:
        raise ValueError("factors must be a non-empty tuple of arrays (W_1, ..., W_N)")
    if not isinstance(problem, Problem):
        raise ValueError(f"problem must be a deeplinear.problems.Problem, got {type(problem).__name__}")
    shape = (factors[-1].shape[-2], factors[0].shape[-1])
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
) -> TrainResult:
    """Optimize ``phi(W_1..W_N) = l(W_N...W_1)`` over the factors (Def 2).

    Plain GD is ``W_j <- W_j - lr (dphi/dW_j + weight_decay W_j)`` with the analytic layer
    gradients of §2.1. ``metrics`` map the end-to-end matrix to a value; ``state_metrics`` map the
    factors (e.g. ``network.imbalance``). The returned ``state`` is the final tuple of factors.
    ``progress(step)`` is called on the host at every record point, and with ``steps`` at the end.

    The compiled program is cached: calls that differ only in data, ``lr``, ``weight_decay``,
    ``stop_loss`` or a schedule with the same number of records reuse it (pass the same metric
    functions, not new lambdas, to benefit).
    """
    _validate_train(factors, problem, lr)
    return _execute(_train_program, factors, problem, jnp.float64(lr), optimizer, optimizer_kwargs,
                    weight_decay, schedule, stop_loss, metrics, state_metrics, divergence_factor,
                    progress, steps)


def train_replicas(
    factors: Factors,
    problem: Problem,
    *,
    lr: float | jax.Array,
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
) -> TrainResult:
    """:func:`train` for R replicas in one compiled program (``vmap``).

    ``factors`` carry a leading replica axis of size R (e.g. ``jax.vmap(init)(keys)``); ``lr``
    is a scalar or an array of R learning rates (a grid search in one program). Each replica
    stops on its own; results carry the replica axis first (``status`` is an array of strings,
    ``diverged_step`` is -1 where a replica did not diverge).
    """
    n_rep = factors[0].shape[0]
    lrs = jnp.broadcast_to(jnp.asarray(lr, dtype=jnp.float64), (n_rep,))
    _validate_train(tuple(w[0] for w in factors), problem, np.asarray(lrs))
    return _execute(_replicas_program, factors, problem, lrs, optimizer, optimizer_kwargs,
                    weight_decay, schedule, stop_loss, metrics, state_metrics, divergence_factor,
                    progress, steps)


# --------------------------------------------------------------------------- gradient flow


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
    status: str
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
        status = "converged"
    elif result == diffrax.RESULTS.max_steps_reached:
        status = "max_steps"
    else:
        status = "diverged"
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

    A failed solve (non-finite state, step budget exhausted) gives ``status="diverged"`` or
    ``"max_steps"`` and records only the times reached with finite values (``W`` is then NaN
    and ``state`` None: never use them as a result).
    """
    ts = _check_flow(t1, ts, solver, rtol, atol)
    mets, smets = dict(metrics or {}), dict(state_metrics or {})
    solve = jax.jit(lambda y: _solve(vector_field, y, problem, float(t1), ts, to_matrix, solver,
                                     rtol, atol, mets, smets, max_steps))
    return _finish_flow(solve(y0), ts, problem, to_matrix)


@functools.partial(jax.jit, static_argnames=("static",))
def _flow_program(factors, problem, weight_decay, t1, ts, static):
    solver, rtol, atol, metrics, state_metrics, max_steps = static

    def field(fs):
        grads = factor_gradients(fs, problem.grad(end_to_end(fs)))
        return tuple(-g - weight_decay * w for g, w in zip(grads, fs, strict=True))

    return _solve(field, factors, problem, t1, ts, end_to_end, solver, rtol, atol, dict(metrics),
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
) -> FlowResult:
    """Gradient flow on the factors, ``dW_j/dt = -dphi/dW_j - lambda W_j`` (§2.4), by diffrax.

    The compiled program is cached across calls that differ only in data, ``t1``, ``ts`` values
    or ``weight_decay`` (see :func:`integrate` for the recording and failure semantics).
    """
    _validate_train(factors, problem, 1.0)
    ts = _check_flow(t1, ts, solver, rtol, atol)
    factors = tuple(jnp.asarray(w, dtype=jnp.float64) for w in factors)
    static = (solver, float(rtol), float(atol), tuple((metrics or {}).items()),
              tuple((state_metrics or {}).items()), int(max_steps))
    out = _flow_program(factors, problem, jnp.float64(weight_decay), jnp.float64(t1),
                        jnp.asarray(ts), static=static)
    return _finish_flow(out, ts, problem, end_to_end)
