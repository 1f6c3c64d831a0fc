"""Deep matrix factorization as a matrix-completion tool for a user's own data (§2.12, §E3).

:class:`DeepMatrixCompletion` fits ``W = W_N ... W_1`` by gradient descent from a small random
init on the observed entries of a matrix, with scikit-learn's estimator conventions. The implicit
bias of depth (§2.12: singular values are learned one after another, "greedy low-rank search")
is used as the regularizer, and the number of steps is chosen on a validation split of the
observed entries (early stopping). The defaults need no tuning:

* each column's observed mean is removed and the result scaled to unit variance
  (``Z_ij = (X_ij - mean_j) / scale_``), and predictions are mapped back (``mean_j + scale_ W_ij``):
  the column means are the part of a data table every imputer uses, and the network learns the
  low-rank structure around them;
* the step size comes from the end-to-end dynamics (§2.6-2.7): the preconditioner's largest
  eigenvalue is ``N σ_1(W)^{2 - 2/N}`` and, on the low-rank directions the network learns, the
  loss ``(1/2m) Σ_Ω (W_ij - Z_ij)^2`` has curvature ``≈ 1/(d_N d_0)`` (``P_Ω`` keeps a fraction
  ``p = m/(d_N d_0)`` of a spread-out direction). So ``lr = d_N d_0 / (N σ̂^{2 - 2/N})`` with
  ``σ̂ = σ_1(P_Ω(Z)) / p`` the unbiased estimate of the completed matrix's top singular value.
  For depth 1 every direction moves, and the worst case ``1/m`` is used: ``lr = m``. A step that
  diverges anyway is undone and the rate halved;
* the hidden width is ``min(d_N, d_0, 2 ⌈m / (d_N + d_0)⌉)``: twice the largest rank the ``m``
  observations can determine (a rank-r matrix has ``r (d_N + d_0 - r)`` degrees of freedom), so
  it never binds an identifiable answer and keeps each step cheap;
* early stopping: every ``check_every`` steps the validation RMSE is measured; training stops once
  the validation error has moved away from its start (improved on it, or risen 1% above it: the
  first, flat phase of small-init training is not a reason to stop) and then not improved by more
  than 0.1% for
  ``max(check_every * patience, s)`` steps after the last such improvement at step ``s``
  (checks come every ``max(check_every, step / 20)`` steps), or when the training loss reaches
  ``1e-8`` of its start (interpolation: nothing more to learn), or at ``max_steps``. With
  ``refit=True`` the model is then retrained on every observed entry for the chosen number of
  steps.

Matrices of at most ``2^18`` entries train on a dense 0/1 mask of the observations (the same
loss): the compiled training program then depends on the shape and widths only and is reused by
the early-stopping phase, the refit and later fits of the same shape; larger ones use the sparse
step (:class:`problems.SparseCompletion`) where it is cheaper.
"""

from __future__ import annotations

import numbers
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from deeplinear import network as nw
from deeplinear.problems import MatrixCompletion, Problem, SparseCompletion, sparse_is_cheaper
from deeplinear.train import Schedule, train
from deeplinear.train.optimizers import OPTIMIZERS

__all__ = [
    "DeepMatrixCompletion",
    "MATRIX_FORMATS",
    "check_matrix",
    "observed_entries",
    "read_matrix",
    "step_size",
    "validation_split",
    "write_matrix",
]

_INTERPOLATED = 1e-8  # training loss relative to its start at which nothing is left to learn
_MAX_HALVINGS = 20
_DENSE_ENTRIES = 2**18  # matrices up to this size train on a dense mask (see _MaskedCompletion)


def observed_entries(X) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int]]:
    """``(rows, cols, values, shape)`` of the observed entries of ``X``, sorted row-major.

    ``X`` is a dense array whose missing entries are NaN, a ``numpy.ma`` masked array (masked =
    missing) or a ``scipy.sparse`` matrix/array whose stored entries are the observations
    (explicit zeros included; duplicates are summed, as scipy does). Raises ``ValueError`` for a
    non-2-D input, a non-numeric one, or an observed value that is not finite.
    """
    if sp.issparse(X):
        coo = sp.coo_array(sp.csr_array(X))  # canonical: duplicates summed, sorted
        if coo.ndim != 2:
            raise ValueError(f"X must be a matrix (2-D), got {coo.ndim} dimensions")
        if coo.dtype.kind not in "biuf":
            raise ValueError(f"X must hold numbers, got dtype {coo.dtype}")
        rows, cols = coo.coords
        values = np.asarray(coo.data, dtype=np.float64)
        shape = coo.shape
        if not np.all(np.isfinite(values)):
            raise ValueError("X has a stored entry that is not finite (inf or nan): stored "
                             "entries are observations; leave missing entries unstored")
    else:
        if isinstance(X, np.ma.MaskedArray):
            mask = np.ma.getmaskarray(X)
            data = np.asarray(X.data)
        else:
            data = np.asarray(X)
            mask = None
        if data.dtype.kind == "c":
            raise ValueError("Complex data not supported: X must hold real numbers")
        if data.dtype.kind not in "biuf":
            if data.dtype.kind == "O":
                try:  # a TypeError (a dict, a list in a cell) propagates as numpy words it
                    data = data.astype(np.float64)
                except ValueError:
                    raise ValueError("X must hold numbers (NaN for missing entries)") from None
            else:
                raise ValueError(f"X must hold numbers (NaN for missing entries), got dtype "
                                 f"{data.dtype}")
        if data.ndim != 2:
            raise ValueError(f"X must be a matrix (2-D), got shape {data.shape} (Reshape your "
                             "data to rows x columns)")
        for size, what in ((data.shape[0], "sample"), (data.shape[1], "feature")):
            if size == 0:  # scikit-learn's wording for an empty input
                raise ValueError(f"Found array with 0 {what}(s) (shape={data.shape}) while a "
                                 "minimum of 1 is required: X has no observed entry")
        data = data.astype(np.float64)
        missing = np.isnan(data) if mask is None else mask
        if mask is not None and np.any(np.isnan(data) & ~mask):
            raise ValueError("X has an unmasked entry that is nan: mask it or give a number")
        if np.any(np.isinf(data) & ~missing):
            raise ValueError("X has an observed entry that is inf: give finite values "
                             "(NaN marks a missing entry)")
        rows, cols = np.nonzero(~missing)
        values = data[rows, cols]
        shape = data.shape
    order = np.lexsort((cols, rows))
    return (rows[order].astype(np.int64), cols[order].astype(np.int64), values[order],
            (int(shape[0]), int(shape[1])))


def check_matrix(X) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int]]:
    """:func:`observed_entries` of ``X``, refusing a matrix that cannot be completed: no observed
    entry, or a row or column with none (its entries would be the mean, a guess)."""
    rows, cols, values, shape = observed_entries(X)
    _check_coverage(rows, cols, shape)
    return rows, cols, values, shape


def _check_coverage(rows, cols, shape) -> None:
    if rows.size == 0:
        raise ValueError(f"X has no observed entry (shape {shape}): nothing to complete from")
    for axis, (idx, n) in enumerate(((rows, shape[0]), (cols, shape[1]))):
        seen = np.bincount(idx, minlength=n)
        empty = np.flatnonzero(seen == 0)
        if empty.size:
            name = ("row", "rows") if axis == 0 else ("column", "columns")
            listed = ", ".join(str(int(i)) for i in empty[:5]) + (", ..." if empty.size > 5 else "")
            raise ValueError(f"X has {empty.size} all-missing {name[0] if empty.size == 1 else name[1]} "
                             f"({listed}): each {name[0]} needs at least one observed entry (drop it "
                             f"or give a value)")


def validation_split(n_observed: int, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Indices (sorted) of the ``floor(fraction n_observed)`` observed entries held out for
    validation, drawn without replacement from ``rng``."""
    n_val = int(np.floor(fraction * n_observed))
    return np.sort(rng.permutation(n_observed)[:n_val])


def step_size(rows, cols, values, shape: tuple[int, int], depth: int) -> float:
    """The default learning rate for ``½ mean_Ω`` (module docstring): ``d_N d_0 / (N σ̂^{2-2/N})``
    with ``σ̂ = σ_1(P_Ω(Z)) / p`` for depth ``N >= 2`` (``σ̂ = 1`` when every observed value is
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


def _check_params(est: DeepMatrixCompletion) -> None:
    def integer(name, value, low):
        if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Integral) \
                or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")

    def positive(name, value):
        if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real) \
                or not np.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be a finite number > 0, got {value!r}")

    integer("depth", est.depth, 1)
    if est.width is not None:
        integer("width", est.width, 1)
    positive("init_scale", est.init_scale)
    if est.optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {est.optimizer!r}")
    if not (isinstance(est.lr, str) and est.lr == "auto"):
        positive("lr", est.lr)
    integer("max_steps", est.max_steps, 1)
    integer("check_every", est.check_every, 1)
    integer("patience", est.patience, 1)
    vf = est.validation_fraction
    if isinstance(vf, bool | np.bool_) or not isinstance(vf, numbers.Real) or not 0 < vf < 1:
        raise ValueError(f"validation_fraction must be in (0, 1), got {vf!r}")
    for name in ("early_stopping", "refit"):
        if not isinstance(getattr(est, name), bool | np.bool_):
            raise ValueError(f"{name} must be True or False, got {getattr(est, name)!r}")
    if est.dtype not in ("float32", "float64", np.float32, np.float64):
        raise ValueError(f"dtype must be 'float32' or 'float64', got {est.dtype!r}")


class _MaskedCompletion(Problem):
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


def _init(seed: int, dims: tuple[int, ...], scale: float, dtype) -> tuple[jax.Array, ...]:
    """``network.gaussian_init(..., per="product")``'s layers, ``N(0, scale^{2/N} / d_{j-1})``,
    drawn by NumPy (JAX's sampler compiles anew for every layer shape)."""
    rng = np.random.default_rng(seed)
    n = len(dims) - 1
    return tuple(jnp.asarray(scale ** (1.0 / n) / np.sqrt(dims[j])
                             * rng.standard_normal((dims[j + 1], dims[j])), dtype=dtype)
                 for j in range(n))


@jax.jit
def _entries(factors, rows, cols):
    """Entries ``(W_N ... W_1)[rows, cols]`` without forming the product: row ``i`` of
    ``W_N ... W_2`` times column ``j`` of ``W_1``."""
    left = factors[-1]
    for w in reversed(factors[1:-1]):
        left = left @ w
    if len(factors) == 1:
        return factors[0][rows, cols]
    return jnp.sum(left[rows] * factors[0][:, cols].T, axis=-1)


class DeepMatrixCompletion(TransformerMixin, BaseEstimator):
    """Matrix completion by a depth-``N`` linear network ``W_N ... W_1`` trained by gradient
    descent from a small init, stopped early on held-out observed entries (§2.12).

    Args:
        depth: ``N``, the number of factors (1: the matrix itself, 2: matrix factorization,
            3 and more: deep matrix factorization, whose low-rank bias is the strongest).
        width: hidden widths ``d_1 = ... = d_{N-1}``; ``None``: ``min(d_N, d_0, 2⌈m/(d_N+d_0)⌉)``.
        init_scale: ``||W(0)||_F ≈ init_scale sqrt(d_N)`` (Gaussian layers, roosephu's scaling,
            drawn by NumPy from ``random_state``).
        optimizer: a name of ``train.OPTIMIZERS`` (its state restarts at every validation check;
            for the default ``"gd"`` that changes nothing).
        lr: learning rate, or ``"auto"`` for the rule of the module docstring.
        max_steps: cap on the gradient steps.
        validation_fraction: fraction of the observed entries held out to choose the step.
        early_stopping: stop on the validation error; ``False``: train ``max_steps`` on every
            observed entry.
        check_every: steps between validation checks.
        patience: checks without improvement before stopping (at least; see module docstring).
        refit: after early stopping, retrain on all observed entries for the chosen steps.
        random_state: ``None``, an int or a ``numpy.random.Generator`` (split and init).
        dtype: ``"float32"`` (default) or ``"float64"`` (fitted inside ``jax.enable_x64``).

    Attributes (after ``fit``):
        mean_, scale_: the observed column means ``(d_0,)`` and the scale of the centered values.
        factors_: the fitted factors ``(W_1, ..., W_N)`` (on the standardized scale).
        n_iter_: gradient steps of the returned model.
        best_step_: the step chosen on the validation split (``n_iter_`` without early stopping).
        loss_curve_: training loss (``½ mean`` of squared standardized residuals) per check.
        validation_curve_: validation RMSE (original units) per check; empty without a split.
        validation_steps_: the steps of ``loss_curve_`` and ``validation_curve_``.
        validation_error_: the validation RMSE at ``best_step_`` (``nan`` without a split).
        lr_: the learning rate used (after any halving); width_: the hidden width.
        singular_values_: singular values of ``scale_ W`` (the completion minus column means).
        effective_rank_: their effective rank ``exp(H(σ/Σσ))`` (§2.13).
        shape_, n_features_in_: the fitted matrix's shape and its number of columns.
        fit_seconds_: wall time of ``fit``.
    """

    def __init__(self, depth: int = 3, width: int | None = None, init_scale: float = 1e-2,
                 optimizer: str = "gd", lr: float | str = "auto", max_steps: int = 20_000,
                 validation_fraction: float = 0.1, early_stopping: bool = True,
                 check_every: int = 25, patience: int = 10, refit: bool = True,
                 random_state: int | np.random.Generator | None = None, dtype: str = "float32"):
        self.depth = depth
        self.width = width
        self.init_scale = init_scale
        self.optimizer = optimizer
        self.lr = lr
        self.max_steps = max_steps
        self.validation_fraction = validation_fraction
        self.early_stopping = early_stopping
        self.check_every = check_every
        self.patience = patience
        self.refit = refit
        self.random_state = random_state
        self.dtype = dtype

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.input_tags.sparse = True
        tags.transformer_tags.preserves_dtype = []
        return tags

    # ------------------------------------------------------------------------------ fit

    def fit(self, X, y=None, *, progress: Callable[[int], None] | None = None):
        """Fit on the observed entries of ``X`` (``y`` is ignored). ``progress(step)`` is called
        as training advances (steps of the current phase)."""
        del y
        _check_params(self)
        t0 = time.perf_counter()
        rows, cols, values, shape = check_matrix(X)
        if jnp.dtype(self.dtype) == jnp.float64:
            with jax.enable_x64(True):
                self._fit(rows, cols, values, shape, jnp.float64, progress)
        else:
            self._fit(rows, cols, values, shape, jnp.float32, progress)
        self.fit_seconds_ = time.perf_counter() - t0
        return self

    def _fit(self, rows, cols, values, shape, dtype, progress) -> None:
        rng = np.random.default_rng(self.random_state)
        m = values.size
        val = (validation_split(m, self.validation_fraction, rng) if self.early_stopping
               else np.zeros(0, np.int64))
        seed = int(rng.integers(2**31 - 1))
        # column means of the observed values (every column has one), then one global scale
        sums = np.bincount(cols, weights=values, minlength=shape[1])
        self.mean_ = sums / np.bincount(cols, minlength=shape[1])
        std = float(np.std(values - self.mean_[cols]))
        self.scale_ = std if std > 0 else 1.0
        z = (values - self.mean_[cols]) / self.scale_
        train_idx = np.setdiff1d(np.arange(m), val, assume_unique=True)
        if train_idx.size == 0:  # a single observation: nothing to hold out
            train_idx, val = np.arange(m), np.zeros(0, np.int64)
        d_out, d_in = shape
        width = self.width
        if width is None:
            width = max(1, min(d_out, d_in, 2 * -(-m // (d_out + d_in))))
        self.width_ = int(width)
        dims = (d_in,) + (self.width_,) * (self.depth - 1) + (d_out,)
        rt, ct, zt = rows[train_idx], cols[train_idx], z[train_idx]
        lr = (step_size(rt, ct, zt, shape, self.depth) if self.lr == "auto" else float(self.lr))
        init = _init(seed, dims, float(self.init_scale), dtype)
        steps_curve, loss_curve, val_curve = [], [], []
        if val.size:
            best_step, lr, factors = self._early_stopped(
                init, (rt, ct, zt), (rows[val], cols[val], values[val]), shape, dims, dtype, lr,
                progress, steps_curve, loss_curve, val_curve)
            self.validation_error_ = float(min(val_curve))
            if self.refit:
                problem = self._problem(rows, cols, z, shape, dims, dtype)
                factors, lr = self._run(init, problem, lr, best_step, progress, curve=False)[:2]
        else:
            best_step = int(self.max_steps)
            problem = self._problem(rows, cols, z, shape, dims, dtype)
            factors, lr, losses, rec = self._run(init, problem, lr, best_step, progress)
            steps_curve, loss_curve = list(rec), list(losses)
            self.validation_error_ = float("nan")
        self.factors_ = tuple(np.asarray(w) for w in factors)
        self.lr_ = float(lr)
        self.best_step_ = int(best_step)
        self.n_iter_ = int(best_step)
        self.loss_curve_ = np.asarray(loss_curve, dtype=np.float64)
        self.validation_curve_ = np.asarray(val_curve, dtype=np.float64)
        self.validation_steps_ = np.asarray(steps_curve, dtype=np.int64)
        W = np.asarray(nw.end_to_end(tuple(jnp.asarray(w) for w in factors)), dtype=np.float64)
        s = np.linalg.svd(self.scale_ * W, compute_uv=False)
        self.singular_values_ = s
        keep = s > (s[0] * max(shape) * np.finfo(np.float32).eps if s.size else 0)
        p = s[keep] / np.sum(s[keep]) if keep.any() else np.zeros(0)
        self.effective_rank_ = float(np.exp(-np.sum(p * np.log(p)))) if p.size else 0.0
        self.shape_ = shape
        self.n_features_in_ = shape[1]

    @staticmethod
    def _problem(rows, cols, z, shape, dims, dtype):
        if shape[0] * shape[1] <= _DENSE_ENTRIES:  # one program per matrix shape and width
            mask = np.zeros(shape)
            mask[rows, cols] = 1.0
            target = np.zeros(shape)
            target[rows, cols] = z
            return _MaskedCompletion(jnp.asarray(mask, dtype), jnp.asarray(target, dtype))
        problem = MatrixCompletion(rows, cols, z, shape, reduction="half_mean", dtype=dtype)
        # built once here: the step rule's sparse structure is reused by every check's call
        return SparseCompletion(problem, dims) if sparse_is_cheaper(problem, dims) else problem

    def _run(self, factors, problem, lr, steps, progress, curve=True):
        """``steps`` steps; a divergence is undone (the engine rolls back) and the rate halved.
        Without ``curve`` or ``progress`` one record at the end (the early-stopping checks'
        compiled program, which has one record too, is reused)."""
        done, losses, recs = 0, [], []
        if steps == 0 and not curve:  # the validation error was best at the init
            return factors, lr, losses, recs
        for _ in range(_MAX_HALVINGS + 1):
            left = steps - done
            schedule = (Schedule.log(50) if curve or progress is not None
                        else Schedule.every(max(left, 1)))
            res = train(factors, problem, lr=lr, steps=left, optimizer=self.optimizer,
                        schedule=schedule, progress=_offset(progress, done))
            losses += list(res.loss)
            recs += list(np.asarray(res.steps) + done)
            factors = res.state
            if res.status != "diverged":
                return factors, lr, losses, recs
            done += int(res.steps[-1])
            lr /= 2
        raise RuntimeError(f"training diverged {_MAX_HALVINGS} times; last at step {done}")

    def _early_stopped(self, factors, train_obs, val_obs, shape, dims, dtype, lr, progress,
                       steps_curve, loss_curve, val_curve):
        problem = self._problem(*train_obs, shape, dims, dtype)
        vr, vc = jnp.asarray(val_obs[0]), jnp.asarray(val_obs[1])
        vv = val_obs[2]

        def val_rmse(fs):
            pred = self.mean_[val_obs[1]] + self.scale_ * np.asarray(_entries(fs, vr, vc),
                                                                     dtype=np.float64)
            return float(np.sqrt(np.mean((pred - vv) ** 2)))

        every = int(self.check_every)
        step, halvings = 0, 0
        err = val_rmse(factors)
        best = (err, 0, factors)
        steps_curve.append(0)
        val_curve.append(err)
        loss_curve.append(float(problem.loss(nw.end_to_end(factors))))
        start_loss = loss_curve[0]
        significant = (np.inf, 0)  # the last improvement by more than 0.1%
        while step < self.max_steps:
            # checks every `every` steps, or every 5% of the steps taken: the staircase of
            # singular values slows down geometrically, so fixed-size checks would only cost
            n = min(max(every, step // 20), int(self.max_steps) - step)
            res = train(factors, problem, lr=lr, steps=n, optimizer=self.optimizer,
                        schedule=Schedule.every(n))
            if res.status == "diverged":
                halvings += 1
                if halvings > _MAX_HALVINGS:
                    raise RuntimeError(f"training diverged {_MAX_HALVINGS} times; last at step "
                                       f"{step + int(res.diverged_step)}")
                lr /= 2
                factors = res.state  # rolled back to the last finite record
                continue
            factors = res.state
            step += n
            if progress is not None:
                progress(step)
            err = val_rmse(factors)
            steps_curve.append(step)
            val_curve.append(err)
            loss_curve.append(float(res.loss[-1]))
            if err < best[0]:
                best = (err, step, factors)
            if err < (1 - 1e-3) * significant[0]:
                significant = (err, step)
            # the model has left its start: the error improved on it, or rose 1% above it
            moved = (best[0] < (1 - 1e-3) * val_curve[0]) or err > (1 + 1e-2) * val_curve[0]
            wait = max(every * int(self.patience), significant[1])
            if ((moved and step - significant[1] >= wait)
                    or loss_curve[-1] <= _INTERPOLATED * start_loss):
                break
        return best[1], lr, best[2]

    # ------------------------------------------------------------------------------ use

    def _model(self) -> tuple[np.ndarray, ...]:
        check_is_fitted(self, "factors_")
        return self.factors_

    def predict(self, rows, cols=None) -> np.ndarray:
        """The completed matrix's entries ``mean_[cols] + scale_ (W_N ... W_1)[rows, cols]``."""
        factors = self._model()
        if cols is None:
            raise ValueError("predict takes two index arrays, predict(rows, cols); for the "
                             "completed matrix use transform(X) or completion()")
        rows = np.asarray(rows)
        cols = np.asarray(cols)
        if rows.shape != cols.shape:
            raise ValueError(f"rows and cols must have the same shape, got {rows.shape} and "
                             f"{cols.shape}")
        for name, idx, n in (("rows", rows, self.shape_[0]), ("cols", cols, self.shape_[1])):
            if idx.size and (idx.dtype.kind not in "iu" or idx.min() < -n or idx.max() >= n):
                raise ValueError(f"{name} must be integer indices in [0, {n}), got "
                                 f"{idx.dtype} values")
        fs = tuple(np.asarray(w, dtype=np.float64) for w in factors)
        left = fs[-1]
        for w in reversed(fs[1:-1]):
            left = left @ w
        flat_r, flat_c = rows.reshape(-1), cols.reshape(-1)
        vals = (fs[0][flat_r, flat_c] if len(fs) == 1
                else np.sum(left[flat_r] * fs[0][:, flat_c].T, axis=-1))
        return (self.mean_[flat_c] + self.scale_ * vals).reshape(rows.shape)

    def completion(self) -> np.ndarray:
        """The model's whole matrix ``mean_[None, :] + scale_ W_N ... W_1`` (float64)."""
        fs = tuple(np.asarray(w, dtype=np.float64) for w in self._model())
        W = fs[0]
        for w in fs[1:]:
            W = w @ W
        return self.mean_[None, :] + self.scale_ * W

    def transform(self, X) -> np.ndarray:
        """``X`` (the fitted matrix's shape) with its missing entries filled in by the model;
        observed entries are kept as given. Returns a dense float64 array."""
        self._model()
        rows, cols, values, shape = observed_entries(X)
        if shape != tuple(self.shape_):
            raise ValueError(f"X has shape {shape}, but {type(self).__name__} was fitted on a "
                             f"{self.shape_[0]} x {self.shape_[1]} matrix (a completion is tied "
                             f"to its rows and columns)")
        out = self.completion()
        out[rows, cols] = values
        return out

    def fit_transform(self, X, y=None, **fit_params) -> np.ndarray:
        """:meth:`fit` then :meth:`transform` on the same ``X``."""
        return self.fit(X, y, **fit_params).transform(X)


def _offset(progress, done):
    if progress is None:
        return None
    return lambda step: progress(done + step)


# ---------------------------------------------------------------------------------- files

MATRIX_FORMATS = (".csv", ".npy", ".npz", ".mtx")
"""File formats of :func:`read_matrix` and :func:`write_matrix`, by extension."""


def _format(path, what: str) -> str:
    from pathlib import Path

    suffix = Path(path).suffix.lower()
    if suffix not in MATRIX_FORMATS:
        raise ValueError(f"{what} {path}: unknown format {suffix or '(no extension)'!r}; use one "
                         f"of {', '.join(MATRIX_FORMATS)}")
    return suffix


def _read_csv(path) -> np.ndarray:
    import csv

    rows = []
    with open(path, newline="", encoding="utf-8") as fh:
        for i, line in enumerate(csv.reader(fh), start=1):
            if not line or all(not c.strip() for c in line) and len(line) <= 1:
                continue  # blank line
            row = []
            for j, cell in enumerate(line, start=1):
                text = cell.strip()
                if text == "" or text.lower() in ("nan", "na"):
                    row.append(np.nan)
                    continue
                try:
                    row.append(float(text))
                except ValueError:
                    raise ValueError(f"line {i}, column {j}: {text[:30]!r} is not a number (empty "
                                     "cells and NaN mark missing entries; no header line)") from None
            if rows and len(row) != len(rows[0]):
                raise ValueError(f"line {i} has {len(row)} cells, line 1 has {len(rows[0])}: every "
                                 "row needs the same number of columns")
            rows.append(row)
    if not rows:
        raise ValueError("the file holds no matrix (it is empty)")
    return np.asarray(rows, dtype=np.float64)


def read_matrix(path):
    """The incomplete matrix in ``path``: ``.csv`` (empty cells, ``NaN`` or ``NA`` are missing),
    ``.npy`` (NaN missing), ``.npz`` (the array ``X``, or its only array), ``.mtx`` (MatrixMarket:
    a coordinate file's stored entries are the observations, an array file's NaNs are missing).
    Raises ``ValueError`` naming what is wrong."""
    import zipfile

    import scipy.io

    suffix = _format(path, "INPUT")
    try:
        if suffix == ".csv":
            X = _read_csv(path)
        elif suffix == ".npy":
            X = np.load(path, allow_pickle=False)
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                names = list(z.files)
                if "X" in names:
                    X = z["X"]
                elif len(names) == 1:
                    X = z[names[0]]
                else:
                    raise ValueError(f"holds arrays {names[:5]}: name the matrix 'X' or store "
                                     "only one array")
        else:
            X = scipy.io.mmread(path)
    except (OSError, EOFError, zipfile.BadZipFile, UnicodeDecodeError) as err:
        raise ValueError(f"cannot be read as {suffix}: {' '.join(str(err).split())[:120]}") from None
    except ValueError as err:
        if str(err).startswith(("line ", "holds ", "the file")):
            raise
        raise ValueError(f"cannot be read as {suffix}: {' '.join(str(err).split())[:120]}") from None
    if not sp.issparse(X):
        X = np.asarray(X)
        if X.dtype.kind not in "biuf":
            raise ValueError(f"holds {X.dtype} data, not numbers")
        if X.ndim != 2:
            raise ValueError(f"holds an array of shape {X.shape}, not a matrix (2-D)")
    return X


def write_matrix(path, X: np.ndarray) -> bytes:
    """The bytes of the complete matrix ``X`` in ``path``'s format (``.npz``: array ``X``;
    ``.mtx``: a dense MatrixMarket array; ``.csv``: ``repr``-exact floats)."""
    import io

    import scipy.io

    suffix = _format(path, "--out")
    buf = io.BytesIO()
    if suffix == ".csv":
        text = "\n".join(",".join(repr(float(v)) for v in row) for row in X) + "\n"
        return text.encode()
    if suffix == ".npy":
        np.save(buf, X)
    elif suffix == ".npz":
        np.savez(buf, X=X)
    else:
        scipy.io.mmwrite(buf, X, precision=17)
    return buf.getvalue()
