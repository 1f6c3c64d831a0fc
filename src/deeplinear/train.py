"""Training loops: gradient descent (optax) on the factors and gradient flow (diffrax).

Every loop is one compiled program: an outer ``lax.scan`` over the recording points and an inner
``lax.while_loop`` over the steps between them, which stops early at a loss threshold or on
divergence. Public surface:

* :func:`train` / :func:`train_replicas`: (optax) gradient descent on the factors of ``phi``;
* :func:`gradient_flow`: ``dW_j/dt = -dphi/dW_j`` (§2.4) with an adaptive diffrax solver;
* :func:`iterate` / :func:`integrate`: the same machinery for any state (e.g. the end-to-end rule);
* :func:`group_rmsprop` and :func:`make_optimizer` (§4 pitfall 8).

Divergence (a non-finite state or loss, or the loss exceeding ``divergence_factor`` times its
initial value) stops the run; the last finite state is kept and the status says ``"diverged"``
with the step where it happened. No NaN is ever recorded.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
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
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def factors(self) -> Any:
        return self.state

    @property
    def final_loss(self) -> float | np.ndarray:
        return self.loss[..., -1]


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
    """Run ``step_fn`` (state -> (state, loss at the old state)) with records after each delta."""
    loss0 = problem.loss(to_matrix(state))
    ceiling = divergence_factor * jnp.maximum(jnp.abs(loss0), 1.0)
    threshold = -jnp.inf if stop_loss is None else stop_loss

    def body(c):
        i, n, state, step, status, stop = c
        new_state, loss = step_fn(state)
        converged = loss <= threshold
        bad = ~jnp.isfinite(loss) | (loss > ceiling) | ~_finite(new_state)
        status = jnp.where(converged, _CONVERGED, jnp.where(bad, _DIVERGED, _RUNNING))
        accept = status == _RUNNING
        state = jax.tree_util.tree_map(lambda a, b: jnp.where(accept, a, b), new_state, state)
        step = step + accept.astype(step.dtype)
        stop = jnp.where(status == _DIVERGED, step + 1, step)
        return i + 1, n, state, step, status, stop

    def cond(c):
        i, n, _, _, status, _ = c
        return (i < n) & (status == _RUNNING)

    def outer(carry, delta):
        state, step, status, stop = carry
        _, _, state, step, status, stop = jax.lax.while_loop(
            cond, body, (jnp.int64(0), delta, state, step, status, stop)
        )
        if progress is not None:
            jax.debug.callback(progress, step)
        rec = _record(state, to_matrix, problem, metrics, state_metrics)
        return (state, step, status, stop), (step, rec)

    zero = jnp.int64(0)
    status0 = jnp.where(loss0 <= threshold, _CONVERGED, _RUNNING)
    carry, (steps, recs) = jax.lax.scan(outer, (state, zero, status0, zero), deltas)
    first = _record(state, to_matrix, problem, metrics, state_metrics)
    steps = jnp.concatenate([zero[None], steps])
    recs = jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a[None], b]), first, recs)
    state, step, status, stop = carry
    return state, steps, recs, status, stop


def _pack(state, steps, recs, status, stop, to_matrix, diverged_steps=True) -> TrainResult:
    steps = np.asarray(steps)
    recs = {k: np.asarray(v) for k, v in recs.items()}
    status = np.asarray(status)
    stop = np.asarray(stop)
    W = np.asarray(to_matrix(state))
    state = jax.tree_util.tree_map(np.asarray, state)
    if steps.ndim == 1:  # single run: drop the repeated records after the stop
        keep = np.concatenate([[True], np.diff(steps) > 0])
        steps = steps[keep]
        recs = {k: v[keep] for k, v in recs.items()}
        code = int(status)
        return TrainResult(
            steps, recs.pop("loss"), recs, state, W, _STATUS[code], int(stop),
            int(stop) if code == _DIVERGED else None,
        )
    names = np.vectorize(_STATUS.get)(status)
    div = np.where(status == _DIVERGED, stop, -1)
    return TrainResult(steps, recs.pop("loss"), recs, state, W, names, stop, div)


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

    ``update(state)`` returns ``(new_state, loss of to_matrix(state))``. Used by :func:`train`
    and by the end-to-end update rule (``deeplinear.simulate``).
    """
    _check_run(steps, stop_loss, divergence_factor)
    schedule = schedule or Schedule.log(50)
    deltas = jnp.asarray(np.diff(schedule.points(steps)), dtype=jnp.int64)
    fn = jax.jit(
        lambda s: _loop(update, s, problem, to_matrix, deltas, stop_loss, divergence_factor,
                        dict(metrics or {}), dict(state_metrics or {}), _host(progress))
    )
    return _pack(*fn(state), to_matrix)


def _check_run(steps, stop_loss, divergence_factor):
    if int(steps) != steps or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
    if stop_loss is not None and not np.isfinite(stop_loss):
        raise ValueError(f"stop_loss must be finite or None, got {stop_loss!r}")
    if not divergence_factor > 1:
        raise ValueError(f"divergence_factor must be > 1, got {divergence_factor!r}")


def _host(progress):
    if progress is None:
        return None
    return lambda step: progress(int(np.max(step)))


# --------------------------------------------------------------------------- gradient descent


def _factor_update(problem, optimizer, weight_decay):
    def update(state):
        factors, opt_state = state
        loss, G = problem.value_and_grad(end_to_end(factors))
        grads = factor_gradients(factors, G)
        if weight_decay:
            grads = tuple(g + weight_decay * w for g, w in zip(grads, factors, strict=True))
        updates, opt_state = optimizer.update(grads, opt_state, factors)
        return (optax.apply_updates(factors, updates), opt_state), loss

    return update


def _resolve_optimizer(optimizer, lr, optimizer_kwargs):
    if isinstance(optimizer, optax.GradientTransformation):
        return optimizer
    return make_optimizer(optimizer, lr, **(optimizer_kwargs or {}))


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
    """
    _validate_train(factors, problem, lr)
    opt = _resolve_optimizer(optimizer, lr, optimizer_kwargs)
    factors = tuple(jnp.asarray(w) for w in factors)
    state = (factors, opt.init(factors))
    res = iterate(
        _factor_update(problem, opt, weight_decay), state, problem, steps=steps,
        to_matrix=lambda s: end_to_end(s[0]), schedule=schedule, stop_loss=stop_loss,
        metrics=metrics, state_metrics=_on_factors(state_metrics),
        divergence_factor=divergence_factor, progress=progress,
    )
    res.state = res.state[0]
    return res


def _on_factors(state_metrics):
    if not state_metrics:
        return None
    return {k: (lambda s, f=f: f(s[0])) for k, f in state_metrics.items()}


def train_replicas(
    factors: Factors,
    problem: Problem,
    *,
    lr: float | jax.Array,
    steps: int,
    optimizer: str = "gd",
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
    _check_run(steps, stop_loss, divergence_factor)
    schedule = schedule or Schedule.log(50)
    deltas = jnp.asarray(np.diff(schedule.points(steps)), dtype=jnp.int64)
    sm = _on_factors(state_metrics) or {}

    def one(fs, rate):
        opt = make_optimizer(optimizer, rate, **(optimizer_kwargs or {}))
        state = (fs, opt.init(fs))
        upd = _factor_update(problem, opt, weight_decay)
        return _loop(upd, state, problem, lambda s: end_to_end(s[0]), deltas, stop_loss,
                     divergence_factor, dict(metrics or {}), sm, _host(progress))

    state, steps_, recs, status, stop = jax.jit(jax.vmap(one))(tuple(factors), lrs)
    res = _pack(state, steps_, recs, status, stop, lambda s: end_to_end(s[0]))
    res.state = res.state[0]
    return res


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
    ``"max_steps"`` and records only the times reached with finite values.
    """
    if not t1 > 0:
        raise ValueError(f"t1 must be > 0, got {t1!r}")
    if solver not in _SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    if not (rtol > 0 and atol > 0):
        raise ValueError(f"rtol and atol must be > 0, got {rtol!r}, {atol!r}")
    ts = np.linspace(0.0, t1, 101) if ts is None else np.asarray(ts, dtype=np.float64)
    if ts.ndim != 1 or ts[0] < 0 or ts[-1] > t1 or np.any(np.diff(ts) < 0):
        raise ValueError(f"ts must be sorted times in [0, t1={t1}]")
    mets, smets = dict(metrics or {}), dict(state_metrics or {})

    @jax.jit
    def solve(y0):
        rec = lambda t, y, args: _record(y, to_matrix, problem, mets, smets)  # noqa: E731
        saveat = diffrax.SaveAt(subs=[diffrax.SubSaveAt(ts=ts, fn=rec), diffrax.SubSaveAt(t1=True)])
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(lambda t, y, args: vector_field(y)), _SOLVERS[solver](),
            t0=0.0, t1=float(t1), dt0=None, y0=y0, saveat=saveat,
            stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
            max_steps=max_steps, throw=False,
        )
        return sol.ys, sol.result, sol.stats["num_steps"]

    (recs, final), result, nsteps = solve(y0)
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
    final_ok = _finite(final)
    W = np.asarray(to_matrix(final)) if final_ok else np.full(problem.shape, np.nan)
    return FlowResult(ts[keep], recs.pop("loss"), recs, final if final_ok else None, W,
                      status, int(nsteps))


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
    """Gradient flow on the factors, ``dW_j/dt = -dphi/dW_j - lambda W_j`` (§2.4), by diffrax."""
    _validate_train(factors, problem, 1.0)
    factors = tuple(jnp.asarray(w, dtype=jnp.float64) for w in factors)

    def field(fs):
        grads = factor_gradients(fs, problem.grad(end_to_end(fs)))
        return tuple(-g - weight_decay * w for g, w in zip(grads, fs, strict=True))

    return integrate(field, factors, problem, t1, to_matrix=end_to_end, ts=ts, rtol=rtol,
                     atol=atol, solver=solver, metrics=metrics, state_metrics=state_metrics,
                     max_steps=max_steps)
