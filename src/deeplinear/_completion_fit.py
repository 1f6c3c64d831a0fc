"""The fitting loop of :class:`completion.DeepMatrixCompletion`: the training problem, the init,
the step-size rule, gradient descent that survives divergence, and early stopping.

Everything here works on standardized residuals ``Z_Ω`` (what the estimator's offsets and scale
leave of the observations) and on the factors ``(W_1, ..., W_N)``; the estimator maps to and from
the user's units.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from deeplinear import network as nw
from deeplinear.observations import Observations
from deeplinear.problems import MatrixCompletion, Problem, SparseCompletion, sparse_is_cheaper
from deeplinear.train import Schedule, train

__all__ = ["Fit", "FitState", "Trajectory", "advance", "build_problem", "early_stopped",
           "entries", "fit_one", "init_factors", "step_size"]

INTERPOLATED = 1e-8  # training loss relative to its start at which nothing is left to learn
MAX_HALVINGS = 20
DIVERGENCE = 1e3  # a loss this many times the fit's starting loss (or 1) is divergence: from a
# small init gradient descent only lowers the loss, and a few short calls must not creep up to the
# engine's own 1e8 per call unnoticed


class MaskedCompletion(Problem):
    """``l(W) = (1/2m) Σ_Ω (W_ij - Z_ij)^2`` as a dense 0/1 ``mask`` of ``Ω`` and the target ``Z``
    (zero off ``Ω``), ``m = Σ mask``: the ``half_mean`` :class:`problems.MatrixCompletion` loss and
    gradient, with array shapes that depend on the matrix shape only. Fits of one matrix shape
    (the training split, the refit on all observations, another missing rate) therefore reuse one
    compiled training program; on small matrices compiling is what a fit costs most."""

    mask: jax.Array
    target: jax.Array

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.mask.shape)

    def value_and_grad(self, W):
        r = self.mask * (W - self.target)
        m = jnp.sum(self.mask)
        return 0.5 * jnp.sum(r * r, axis=(-2, -1)) / m, r / m


def build_problem(obs: Observations, dims: tuple[int, ...], dtype) -> Problem:
    """The ``half_mean`` completion loss of ``obs``: on a dense mask when the matrix is small
    (:attr:`Observations.dense_is_cheaper`: one compiled program per shape and width), else
    :class:`problems.MatrixCompletion`, indexed for the sparse step when that is cheaper."""
    if obs.dense_is_cheaper:
        return MaskedCompletion(jnp.asarray(obs.mask(), dtype), jnp.asarray(obs.dense(0.0), dtype))
    problem = MatrixCompletion.from_observations(obs, reduction="half_mean", dtype=dtype)
    # built once here: the step rule's sparse structure is reused by every check's call
    return SparseCompletion(problem, dims) if sparse_is_cheaper(problem, dims) else problem


def init_factors(seed: int, dims: tuple[int, ...], scale: float, dtype) -> tuple[jax.Array, ...]:
    """``network.gaussian_init(..., per="product")``'s layers, ``N(0, scale^{2/N} / d_{j-1})``,
    drawn by NumPy (JAX's sampler compiles anew for every layer shape)."""
    rng = np.random.default_rng(seed)
    n = len(dims) - 1
    return tuple(jnp.asarray(scale ** (1.0 / n) / np.sqrt(dims[j])
                             * rng.standard_normal((dims[j + 1], dims[j])), dtype=dtype)
                 for j in range(n))


@jax.jit
def entries(factors, rows, cols):
    """Entries ``(W_N ... W_1)[rows, cols]`` without forming the product: row ``i`` of
    ``W_N ... W_2`` times column ``j`` of ``W_1``."""
    left = factors[-1]
    for w in reversed(factors[1:-1]):
        left = left @ w
    if len(factors) == 1:
        return factors[0][rows, cols]
    return jnp.sum(left[rows] * factors[0][:, cols].T, axis=-1)


def entries_np(factors, rows, cols) -> np.ndarray:
    """:func:`entries` in NumPy float64 (predictions, no compilation)."""
    fs = tuple(np.asarray(w, dtype=np.float64) for w in factors)
    if len(fs) == 1:
        return fs[0][rows, cols]
    left = fs[-1]
    for w in reversed(fs[1:-1]):
        left = left @ w
    return np.sum(left[rows] * fs[0][:, cols].T, axis=-1)


def step_size(rows, cols, values, shape: tuple[int, int], depth: int) -> float:
    """The default learning rate for ``½ mean_Ω``: ``d_N d_0 / (N σ̂^{2-2/N})`` with
    ``σ̂ = σ_1(P_Ω(Z)) / p`` for depth ``N >= 2`` (``σ̂ = 1`` when every observed value is
    0: nothing to fit, and any finite rate will do), and ``m`` for depth 1."""
    m = len(values)
    if depth == 1:
        return float(m)
    A = sp.csr_array((values, (rows, cols)), shape=shape)
    if not np.any(values):
        sigma = 0.0
    elif min(shape) > 1:
        sigma = float(sp.linalg.svds(A, k=1, return_singular_vectors=False, random_state=0)[0])
    else:
        sigma = float(np.linalg.norm(values))
    p = m / (shape[0] * shape[1])
    sigma = sigma / p if sigma > 0 else 1.0
    return float(shape[0] * shape[1] / (depth * sigma ** (2.0 - 2.0 / depth)))


@dataclass(frozen=True)
class FitState:
    """Where gradient descent is: the factors after ``step`` steps at rate ``lr`` (halved
    ``halvings`` times so far, each after a divergence), with the training loss there and at
    the start (a run of short calls counts divergence from the start, :data:`DIVERGENCE`)."""

    factors: tuple
    lr: float
    step: int = 0
    halvings: int = 0
    loss: float = float("nan")  # the training loss at ``factors`` (nan: not known yet)
    start_loss: float = float("nan")  # and at the fit's start: divergence is measured from it


@dataclass
class Trajectory:
    """What early stopping saw: the steps of its checks, the training loss and the validation
    error there, and the chosen step with its factors."""

    steps: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    errors: list[float] = field(default_factory=list)
    best_step: int = 0
    best_factors: tuple = ()


def _offset(progress, done):
    if progress is None:
        return None
    return lambda step: progress(done + step)


def advance(state: FitState, problem: Problem, steps: int, *, optimizer: str,
            records: int = 1, progress: Callable[[int], None] | None = None,
            ) -> tuple[FitState, list[int], list[float]]:
    """``steps`` gradient steps from ``state``; the one place divergence is handled: the engine
    stops at the first non-finite loss and returns the last finite record, the rate is halved
    and the remaining steps are run from there (at most :data:`MAX_HALVINGS` times in a fit,
    then ``RuntimeError``). ``records`` loss records are kept (one: at the end, so every call
    with one record reuses one compiled program; more: ``Schedule.log``). Returns the new
    state, the absolute steps of the records and the losses there."""
    done, recs, losses = 0, [], []
    factors, lr, halvings = state.factors, state.lr, state.halvings
    start, here = state.start_loss, state.loss
    if not np.isfinite(start):
        start = here = float(problem.loss(nw.end_to_end(factors)))
    while done < steps:
        left = steps - done
        schedule = Schedule.every(left) if records <= 1 else Schedule.log(records)
        # the engine compares with the loss at the call's start; the fit's start is the reference
        # (its ceiling is factor * max(|loss|, 1))
        factor = DIVERGENCE * max(start, 1.0) / max(here, 1.0)
        res = train(factors, problem, lr=lr, steps=left, optimizer=optimizer, schedule=schedule,
                    divergence_factor=max(factor, 1.0 + 1e-6),
                    progress=_offset(progress, state.step + done))
        factors = res.state
        finite = np.isfinite(np.asarray(res.loss, dtype=np.float64))
        recs += [state.step + done + int(s) for s in np.asarray(res.steps)[finite]]
        losses += [float(v) for v in np.asarray(res.loss)[finite]]
        if losses:
            here = losses[-1]
        if res.status != "diverged":
            done = steps
            break
        halvings += 1
        if halvings > MAX_HALVINGS:
            raise RuntimeError(f"training diverged {MAX_HALVINGS} times; last at step "
                               f"{state.step + done + int(res.diverged_step)}")
        done += int(np.asarray(res.steps)[finite][-1]) if finite.any() else 0
        lr /= 2
    return FitState(factors, lr, state.step + steps, halvings, here, start), recs, losses


def early_stopped(state: FitState, problem: Problem, val_error: Callable[[tuple], float], *,
                  max_steps: int, check_every: int, patience: int, optimizer: str,
                  progress: Callable[[int], None] | None = None) -> tuple[FitState, Trajectory]:
    """Gradient descent checked on held-out entries: every ``max(check_every, step / 20)``
    steps ``val_error(factors)`` is measured; training stops once the error has moved away from
    its start (improved on it by 0.1%, or risen 1% above it: the flat first phase of small-init
    training is not a reason to stop) and then not improved by 0.1% for
    ``max(check_every * patience, s)`` steps after the last such improvement at step ``s``, or
    once it is above its start again after having improved on it (worse than the offsets
    alone: the directions learned since are noise), or when the training loss reaches
    :data:`INTERPOLATED` of its start, or at ``max_steps``.
    Returns the last state and the trajectory (its ``best_step`` has the lowest error)."""
    traj = Trajectory()
    err = val_error(state.factors)
    traj.steps.append(state.step)
    traj.errors.append(err)
    traj.losses.append(float(problem.loss(nw.end_to_end(state.factors))))
    traj.best_step, traj.best_factors = state.step, state.factors
    best, start_loss = err, traj.losses[0]
    significant = (np.inf, 0)  # the last improvement by more than 0.1%
    while state.step < max_steps:
        # checks every `check_every` steps, or every 5% of the steps taken: the staircase of
        # singular values slows down geometrically, so fixed-size checks would only cost
        n = min(max(check_every, state.step // 20), max_steps - state.step)
        state, _, losses = advance(state, problem, n, optimizer=optimizer)
        if progress is not None:
            progress(state.step)
        err = val_error(state.factors)
        traj.steps.append(state.step)
        traj.errors.append(err)
        traj.losses.append(losses[-1] if losses else float("nan"))
        if err < best:
            best, traj.best_step, traj.best_factors = err, state.step, state.factors
        if err < (1 - 1e-3) * significant[0]:
            significant = (err, state.step)
        moved = best < (1 - 1e-3) * traj.errors[0] or err > (1 + 1e-2) * traj.errors[0]
        wait = max(check_every * patience, significant[1])
        # worse than the offsets alone after having improved on them: what follows is noise
        overfit = best < (1 - 1e-3) * traj.errors[0] and err > traj.errors[0]
        if ((moved and state.step - significant[1] >= wait) or overfit
                or traj.losses[-1] <= INTERPOLATED * start_loss):
            break
    return state, traj


@dataclass(frozen=True)
class Fit:
    """One fit from one init: the factors returned, the rate used, the chosen step, and the
    curve it was chosen on (steps, training losses, validation errors; no errors without a
    split), with the validation error at the chosen step (``nan`` without a split)."""

    factors: tuple
    lr: float
    best_step: int
    steps: list[int]
    losses: list[float]
    errors: list[float]
    validation_error: float


def fit_one(start: FitState, train_problem: Problem | None, all_problem: Problem | None,
            val_error: Callable[[tuple], float] | None, *, max_steps: int, check_every: int,
            patience: int, refit: bool, optimizer: str,
            progress: Callable[[int], None] | None = None) -> Fit:
    """From ``start``: :func:`early_stopped` on ``train_problem`` checked by ``val_error``,
    then (``refit``) the chosen number of steps again from ``start`` on ``all_problem`` (every
    observed entry); without ``val_error``, ``max_steps`` steps on ``all_problem``."""
    if val_error is None:
        state, recs, losses = advance(start, all_problem, max_steps, optimizer=optimizer,
                                      records=50, progress=progress)
        return Fit(tuple(np.asarray(w) for w in state.factors), state.lr, max_steps, recs,
                   losses, [], float("nan"))
    state, traj = early_stopped(start, train_problem, val_error, max_steps=max_steps,
                                check_every=check_every, patience=patience,
                                optimizer=optimizer, progress=progress)
    factors, lr = traj.best_factors, state.lr
    if refit:
        again, _, _ = advance(FitState(start.factors, lr), all_problem, traj.best_step,
                              optimizer=optimizer)
        factors, lr = again.factors, again.lr
    return Fit(tuple(np.asarray(w) for w in factors), lr, traj.best_step, traj.steps,
               traj.losses, traj.errors, float(min(traj.errors)))
