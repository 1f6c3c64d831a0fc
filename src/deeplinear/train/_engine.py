"""The recording engine: one compiled program per run (``lax.scan`` over record points, an inner
``lax.while_loop`` over the steps between them), early stop and divergence detection.

Divergence (a non-finite loss, or the loss exceeding ``divergence_factor`` times its initial
value) stops the run: ``status`` is :attr:`Status.DIVERGED`, ``diverged_step`` is the iterate
whose loss blew up, and the state rolls back to the last recorded (finite) one. No NaN is ever
recorded.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from deeplinear.problems import Problem

MetricFn = Callable[[jax.Array], jax.Array]


class Status(StrEnum):
    """How a training run or a gradient-flow solve ended (:attr:`TrainResult.status`).

    A ``str`` enum: ``result.status == "diverged"`` and ``Status.DIVERGED`` are the same test, and
    the value is what JSON files and tables hold."""

    CONVERGED = "converged"
    """The loss reached ``stop_loss`` (gradient flow: the solve reached ``t1``)."""
    MAX_STEPS = "max_steps"
    """The step budget ran out first."""
    DIVERGED = "diverged"
    """A non-finite loss, or one above ``divergence_factor`` times the initial loss (gradient flow:
    a failed solve); ``diverged_step`` says where."""


_RUNNING, _CONVERGED, _DIVERGED = 0, 1, 2
_STATUS = {_RUNNING: Status.MAX_STEPS, _CONVERGED: Status.CONVERGED, _DIVERGED: Status.DIVERGED}


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


# --------------------------------------------------------------------------- results


@dataclass
class TrainResult:
    """A recorded trajectory (numpy arrays; a leading replica axis for :func:`train_replicas`).

    ``steps``/``loss``/``metrics[name]`` are aligned (records up to the stop step);
    ``state`` is the final state (the factors for :func:`train`), ``W`` its end-to-end matrix;
    ``status`` a :class:`Status` (for replicas, an array of their values).
    """

    steps: np.ndarray
    loss: np.ndarray
    metrics: dict[str, np.ndarray]
    state: Any
    W: np.ndarray
    status: Status | np.ndarray
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
          metrics, state_metrics, progress_id):
    """Run ``step_fn`` (state -> (state, loss at the old state)) with records after each delta.

    The per-step body does no selection and no reduction over the state (that is what keeps
    tiny problems fast): the loss it already computes decides. A step whose starting loss is
    at or below ``stop_loss`` is the last one taken (:attr:`Status.CONVERGED`); a non-finite or
    exploding starting loss marks :attr:`Status.DIVERGED`. A chunk's last iterate is checked through its
    record (the record computes its loss anyway). Either way the chunk rolls back to its
    starting state and record, the last finite ones, so a blown-up iterate is never recorded.
    """
    loss0 = problem.loss(to_matrix(state))
    ceiling = divergence_factor * jnp.maximum(jnp.abs(loss0), 1.0)
    threshold = -jnp.inf if stop_loss is None else stop_loss

    def blown_up(loss):
        return ~jnp.isfinite(loss) | (loss > ceiling)

    def body(c):
        i, n, state, step, status = c
        new_state, loss = step_fn(state)
        status = jnp.where(blown_up(loss), _DIVERGED,
                           jnp.where(loss <= threshold, _CONVERGED, _RUNNING))
        return i + 1, n, new_state, step + 1, status

    def cond(c):
        i, n, _, _, status = c
        return (i < n) & (status == _RUNNING)

    def outer(carry, delta):
        state, step, status, rec = carry
        _, _, new, new_step, new_status = jax.lax.while_loop(
            cond, body, (jnp.zeros_like(delta), delta, state, step, status)
        )
        new_rec = _record(new, to_matrix, problem, metrics, state_metrics)
        bad_end = blown_up(new_rec["loss"]) & (new_status != _DIVERGED)
        new_status = jnp.where(bad_end, _DIVERGED, new_status)
        diverged = (new_status == _DIVERGED) & (status != _DIVERGED)
        keep_old = lambda a, b: jnp.where(diverged, a, b)  # noqa: E731
        state = jax.tree_util.tree_map(keep_old, state, new)
        rec = jax.tree_util.tree_map(keep_old, rec, new_rec)
        # the iterate whose loss blew up: the chunk's last one, or the start of the failed step
        stop = jnp.where(diverged, jnp.where(bad_end, new_step, new_step - 1), -1)
        step = jnp.where(diverged, step, new_step)
        if progress_id is not None:
            jax.debug.callback(_report_progress, progress_id, step)
        return (state, step, new_status, rec), (step, stop, rec)

    zero = jnp.zeros((), deltas.dtype)
    status0 = jnp.where(loss0 <= threshold, _CONVERGED, _RUNNING)
    first = _record(state, to_matrix, problem, metrics, state_metrics)
    carry, (steps, stops, recs) = jax.lax.scan(outer, (state, zero, status0, first), deltas)
    steps = jnp.concatenate([zero[None], steps])
    recs = jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a[None], b]), first, recs)
    state, step, status, _ = carry
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
    names = np.vectorize(lambda c: str(_STATUS[int(c)]))(status)
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
    with _reporting(progress) as pid:
        fn = jax.jit(
            lambda s, p: _loop(update, s, problem, to_matrix, deltas, stop_loss, divergence_factor,
                               dict(metrics or {}), dict(state_metrics or {}), p)
        )
        out = fn(state, pid)
    _finish_progress(progress, steps)
    return _pack(*out, to_matrix)


def _deltas(schedule: Schedule | None, steps: int) -> jax.Array:
    """Steps between consecutive record points (default: 50 log-spaced records), as JAX's default
    integer (int64 under x64, else int32: 2^31 - 1 steps at most)."""
    dtype = jnp.result_type(int)
    if steps > jnp.iinfo(dtype).max:
        raise ValueError(f"steps must be at most {jnp.iinfo(dtype).max} ({dtype} step counters), "
                         f"got {steps}; enable x64 for more")
    deltas = np.diff((schedule or Schedule.log(50)).points(steps))
    return jnp.asarray(deltas, dtype=dtype)


def _check_run(steps, stop_loss, divergence_factor):
    if int(steps) != steps or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
    if stop_loss is not None and not np.isfinite(stop_loss):
        raise ValueError(f"stop_loss must be finite or None, got {stop_loss!r}")
    if not divergence_factor > 1:
        raise ValueError(f"divergence_factor must be > 1, got {divergence_factor!r}")


# Progress routing. ``jax.debug.callback`` runs on a runtime thread, not the caller's, so the
# callback of each call in flight is looked up in a lock-guarded table by an id that the compiled
# program receives as an ordinary (traced) argument: programs are not recompiled per callback, and
# concurrent calls from several threads each reach their own callback.
_CALLBACKS: dict[int, Callable[[int], None]] = {}
_CALLBACKS_LOCK = threading.Lock()
_CALLBACK_IDS = itertools.count(1)


def _report_progress(progress_id, step) -> None:
    with _CALLBACKS_LOCK:
        callback = _CALLBACKS.get(int(np.max(progress_id)))
    if callback is not None:
        callback(int(np.max(step)))


@contextlib.contextmanager
def _reporting(callback):
    """Register ``callback`` for the duration of a call; yields the id to pass to the program
    (``None`` when there is no callback, so the program has no host callback at all)."""
    if callback is None:
        yield None
        return
    pid = next(_CALLBACK_IDS) % 2**31
    with _CALLBACKS_LOCK:
        _CALLBACKS[pid] = callback
    try:
        yield jnp.int32(pid)
    finally:
        with _CALLBACKS_LOCK:
            _CALLBACKS.pop(pid, None)


def _finish_progress(progress, steps) -> None:
    """A run that stopped early skipped its remaining steps: report them as done."""
    if progress is not None:
        progress(int(steps))
