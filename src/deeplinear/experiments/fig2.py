"""Figure 2: matrix completion, minimum nuclear norm vs deep matrix factorization (§2.12, §E3).

A ``n x n`` rank-``r`` ground truth ``W*`` (§E3: ``UV^T/sqrt(r)`` rescaled to ``||W*||_F = n``) is
observed on ``m`` entries drawn uniformly without replacement, for a range of ``m``. Compared:

* the minimum-nuclear-norm solution with ``|X_ij - W*_ij| <= 1e-3`` on the observed entries
  (§E3's cvxpy baseline; solved by ``baselines.min_nuclear_norm_completion``, native ADMM by
  default), and
* depth-N matrix factorization ``W = W_N ... W_1`` (all widths n) trained on the mean squared error
  over the observed entries from a small Gaussian initialization (roosephu's
  ``per="product"`` init, ``||W(0)||_F ≈ init_scale sqrt(n)``), until the train loss is below
  ``stop_loss`` or ``max_steps``.

The optimizer is GroupRMSprop (``train.group_rmsprop``, what ACHL19 used, §4 pitfall 8) with a
larger learning rate than the repo's 1e-3 so that the default size runs in minutes; plain GD
(``optimizer="gd"``) is available for the theory's setting. Reported (§E3, m = 2000): nuclear norm
1.06e-1, depth 2 5.92e-2, depth 3 2.58e-5 reconstruction error (mean over all entries of
``(W - W*)^2``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import jax
import numpy as np
from pydantic import Field, field_validator, model_validator

from deeplinear.baselines import min_nuclear_norm_completion
from deeplinear.config import (
    ConfigModel,
    Depth,
    Entries,
    MatrixSide,
    NonEmptyList,
    NonNegativeFloat,
    PositiveFloat,
    Replicas,
    Seed,
    Size,
    Steps,
    short,
)
from deeplinear.experiments import summary_keys
from deeplinear.experiments._plotting import pyplot, save
from deeplinear.experiments._regularization import check_depths
from deeplinear.experiments.base import (
    Experiment,
    Headline,
    NullProgress,
    Progress,
    Reported,
    Results,
    register,
    step_bar,
)
from deeplinear.metrics import effective_rank, nuclear_norm, reconstruction_error
from deeplinear.network import gaussian_init
from deeplinear.problems import low_rank_ground_truth, sample_completion
from deeplinear.train import Schedule, Status, train

__all__ = ["Fig2Config", "plot", "run"]

NAME = "fig2"


class Fig2Config(ConfigModel):
    """Configuration of Figure 2; unknown fields are errors.

    Ranges come from the shared types of :mod:`deeplinear.config` (finite numbers, strict ints)."""

    n: MatrixSide = Field(100, description="matrix size (n x n)")
    rank: Size = Field(5, description="rank of the ground truth (1..n)")
    observations: NonEmptyList[Entries] = Field(
        [1000, 2000, 4000, 8000], description="numbers m of observed entries (each 1..n^2)"
    )
    depths: NonEmptyList[Depth] = Field([2, 3], description="depths of the matrix factorizations")
    seed: Seed = Field(0, description="base seed; replica i uses seed + i")
    seeds: Replicas = Field(2, description="replicas (ground truth, observed set and init) per point")
    init_scale: PositiveFloat = Field(1e-3, description="||W(0)||_F / sqrt(n) (small init, §E3)")
    optimizer: Literal["group_rmsprop", "gd"] = Field("group_rmsprop")
    lr: PositiveFloat = Field(2e-2, description="learning rate (GroupRMSprop: parameter step length)")
    max_steps: Steps = Field(8000, description="iteration cap per run")
    stop_loss: PositiveFloat = Field(1e-6, description="stop when the train loss is below this (§E3)")
    nuclear_tol: NonNegativeFloat = Field(
        1e-3, description="|X_ij - y| <= tol in the nuclear-norm baseline (0 = exact constraints)")
    nuclear_solver: Literal["admm", "cvxpy"] = Field("admm")

    @field_validator("depths")
    @classmethod
    def _depths(cls, v: list[int]) -> list[int]:
        return check_depths("depths", v)

    @model_validator(mode="after")
    def _sizes(self) -> Fig2Config:
        if not 1 <= self.rank <= self.n:
            raise ValueError(f"rank must be in [1, n={self.n}], got {self.rank}")
        obs = self.observations
        if any(not 1 <= m <= self.n * self.n for m in obs):
            raise ValueError(
                f"observations must be counts in [1, n^2={self.n**2}], got {short(obs)}"
            )
        self.observations = sorted(set(obs))
        return self


def _methods(config: Fig2Config) -> list[str]:
    return ["nuclear"] + [f"depth{d}" for d in config.depths]


def run(config: Fig2Config, progress: Progress | None = None) -> Results:
    """Reconstruction error and nuclear norm vs number of observations (Figure 2)."""
    progress = progress or NullProgress()
    methods = _methods(config)
    n_runs = config.seeds * len(config.observations) * len(methods)
    task = progress.task(f"{NAME}: {n_runs} solves", n_runs)
    shape = (len(methods), len(config.observations), config.seeds)
    err = np.full(shape, np.nan)
    nuc = np.full(shape, np.nan)
    erank = np.full(shape, np.nan)
    gt_nuc = np.zeros(config.seeds)
    rows: list[dict] = []
    notes: list[str] = []
    res_all = Results(subruns=config.seeds * len(config.observations) * len(config.depths))

    for s in range(config.seeds):
        k_gt, k_obs, k_init = jax.random.split(jax.random.PRNGKey(config.seed + s), 3)
        W_star = low_rank_ground_truth(k_gt, (config.n, config.n), config.rank)
        gt_nuc[s] = float(nuclear_norm(W_star))
        metrics = {
            "recon_error": lambda W, W_star=W_star: reconstruction_error(W, W_star),
            "nuclear_norm": nuclear_norm,
            "effective_rank": effective_rank,
        }
        for i, m in enumerate(config.observations):
            problem = sample_completion(jax.random.fold_in(k_obs, m), W_star, m, reduction="mean")
            sol = min_nuclear_norm_completion(
                np.asarray(problem.rows), np.asarray(problem.cols), np.asarray(problem.values),
                problem.shape, tol=config.nuclear_tol, solver=config.nuclear_solver,
            )
            X = sol.X
            err[0, i, s] = float(np.mean((X - np.asarray(W_star)) ** 2))
            nuc[0, i, s] = sol.nuclear_norm
            erank[0, i, s] = float(effective_rank(X))
            rows.append(dict(method="nuclear", depth=0, m=m, seed=s, recon_error=err[0, i, s],
                             nuclear_norm=nuc[0, i, s], effective_rank=erank[0, i, s],
                             train_loss=None, steps=sol.iterations, status=sol.status))
            task.advance()
            for j, depth in enumerate(config.depths, start=1):
                factors = gaussian_init(jax.random.fold_in(k_init, depth), (config.n,) * (depth + 1),
                                        config.init_scale, per="product")
                res = train(
                    factors, problem, lr=config.lr, steps=config.max_steps,
                    optimizer=config.optimizer, schedule=Schedule.every(max(1, config.max_steps // 40)),
                    stop_loss=config.stop_loss, metrics=metrics,
                    progress=step_bar(progress, f"depth {depth}, m={m}, seed {s}", config.max_steps),
                )
                row = dict(method=f"depth{depth}", depth=depth, m=m, seed=s,
                           recon_error=float(res.metrics["recon_error"][-1]),
                           nuclear_norm=float(res.metrics["nuclear_norm"][-1]),
                           effective_rank=float(res.metrics["effective_rank"][-1]),
                           train_loss=float(res.loss[-1]), steps=int(res.stop_step),
                           status=str(res.status))
                if res.status == Status.DIVERGED:  # no value of a diverged run is a result
                    res_all.diverged(f"depth {depth}, m={m}, seed {s}", res.diverged_step)
                    row.update(recon_error=None, nuclear_norm=None, effective_rank=None,
                               train_loss=None)
                else:
                    err[j, i, s] = row["recon_error"]
                    nuc[j, i, s] = row["nuclear_norm"]
                    erank[j, i, s] = row["effective_rank"]
                    if res.status == Status.MAX_STEPS:
                        notes.append(f"depth {depth}, m={m}, seed {s}: stopped at max_steps="
                                     f"{config.max_steps} with train loss {row['train_loss']:.2e}")
                rows.append(row)
                task.advance()

    summary_rows = []
    summary: dict[str, float | int | str] = {}
    for a, method in enumerate(methods):
        for i, m in enumerate(config.observations):
            e, v = err[a, i], nuc[a, i]
            summary_rows.append(dict(
                method=method, m=m, recon_error_mean=_nanmean(e), recon_error_min=_nanmin(e),
                recon_error_max=_nanmax(e), nuclear_norm_mean=_nanmean(v),
                effective_rank_mean=_nanmean(erank[a, i]), seeds_ok=int(np.sum(np.isfinite(e))),
            ))
            summary[summary_keys.RECON_ERROR_AT_M.format(method=method, m=m)] = _nanmean(e)
            summary[summary_keys.NUCLEAR_NORM_AT_M.format(method=method, m=m)] = _nanmean(v)
    summary["ground_truth_nuclear_norm"] = float(np.mean(gt_nuc))
    summary["optimizer"] = config.optimizer
    if res_all.divergences:
        notes.append(f"{len(res_all.divergences)} factorization run(s) diverged and are excluded "
                     "from the means (lower lr)")
    res_all.tables = {"runs": rows, "summary": summary_rows}
    res_all.summary, res_all.notes = summary, notes
    res_all.headline = _headline(config, methods, err)
    res_all.arrays = {
        "observations": np.asarray(config.observations),
        "methods": np.asarray(methods),
        "recon_error": err,
        "nuclear_norm": nuc,
        "effective_rank": erank,
        "ground_truth_nuclear_norm": gt_nuc,
    }
    return res_all


_NOTES_M = 2000  # the notes' "few observations" (§E3, blog Table 1)
_DESCRIPTION = {
    "nuclear": "reconstruction error mean_ij (W - W*)_ij^2 of the minimum nuclear norm completion",
    "depth2": "reconstruction error of depth-2 matrix factorization trained by {opt}",
    "depth3": "reconstruction error of depth-3 (deep) matrix factorization trained by {opt}",
}


def _headline(config: Fig2Config, methods: list[str], err: np.ndarray) -> list[Headline]:
    """Each method's reconstruction error at the notes' m = 2000 (or, on another size, at the
    fewest observations of this run, marked not comparable)."""
    same = config.n == 100 and config.rank == 5 and _NOTES_M in config.observations
    i = config.observations.index(_NOTES_M) if _NOTES_M in config.observations else 0
    m = config.observations[i]
    on = (f"synthetic {config.n}x{config.n} rank-{config.rank} ground truth, m = {m} observed "
          f"entries, mean of {config.seeds} seed(s)")
    differs = None if same else ("another size: the notes use n = 100, rank 5, m = 2000; this "
                                 f"run has n = {config.n}, rank {config.rank}, m = {m}")
    opt = "GroupRMSprop" if config.optimizer == "group_rmsprop" else "gradient descent"
    return [
        Headline(summary_keys.RECON_ERROR_AT_M.format(method=method, m=_NOTES_M), _nanmean(err[a, i]),
                 _DESCRIPTION.get(method, f"reconstruction error of {method} trained by {{opt}}")
                 .format(opt=opt), on, differs)
        for a, method in enumerate(methods)
    ]


def _nanmean(x: np.ndarray) -> float | None:
    """Mean over the valid (finite) entries; ``None`` when there is none (no result)."""
    return float(np.nanmean(x)) if np.any(np.isfinite(x)) else None


def _nanmin(x: np.ndarray) -> float | None:
    return float(np.nanmin(x)) if np.any(np.isfinite(x)) else None


def _nanmax(x: np.ndarray) -> float | None:
    return float(np.nanmax(x)) if np.any(np.isfinite(x)) else None


_LABELS = {"nuclear": "minimum nuclear norm"}
_STYLE = {"nuclear": ("k", "s", "--"), "depth2": ("C0", "o", "-"), "depth3": ("C3", "^", "-"),
          "depth4": ("C2", "v", "-")}


def plot(results: Results, out_dir: Path) -> list[Path]:
    """Two panels vs number of observations: reconstruction error (log) and nuclear norm.

    Markers are the mean over the seeds that finished; bars span their min and max. An ``m``
    where every seed diverged is a gap in the line; a hollow marker means some seeds are missing.
    """
    plt = pyplot()
    obs = np.asarray(results.arrays["observations"], dtype=float)
    methods = [str(m) for m in results.arrays["methods"]]
    fig, axes = plt.subplots(1, 2, figsize=(9.6, 3.8), layout="constrained")
    partial = False
    for key, ax, ylabel in (
        ("recon_error", axes[0], "reconstruction error  mean$_{ij}(W - W^*)_{ij}^2$"),
        ("nuclear_norm", axes[1], "nuclear norm $\\|W\\|_*$"),
    ):
        data = np.asarray(results.arrays[key], dtype=float)
        for a, method in enumerate(methods):
            vals = data[a].reshape(len(obs), -1)
            if key == "recon_error":  # log axis: a zero error has no place on it
                vals = np.where(vals > 0, vals, np.nan)
            count = np.sum(np.isfinite(vals), axis=1)
            color, marker, ls = _STYLE.get(method, ("C4", "x", "-"))
            label = _LABELS.get(method, method.replace("depth", "depth "))
            if not np.any(count):  # named, so that a missing method is not a silent omission
                ax.plot([], [], color=color, marker=marker, ls=ls, mfc="white",
                        label=f"{label} (no finished run)")
                continue
            safe = np.where(np.isfinite(vals), vals, 0.0)
            mean = np.where(count > 0, safe.sum(axis=1) / np.maximum(count, 1), np.nan)
            lo = np.where(count > 0, np.where(np.isfinite(vals), vals, np.inf).min(axis=1), np.nan)
            hi = np.where(count > 0, np.where(np.isfinite(vals), vals, -np.inf).max(axis=1), np.nan)
            ax.errorbar(obs, mean, yerr=[mean - lo, hi - mean], color=color, marker=marker,
                        ls=ls, capsize=3, label=label)
            few = (count > 0) & (count < vals.shape[1])
            if np.any(few):
                partial = True
                ax.plot(obs[few], mean[few], ls="none", marker=marker, color=color, mfc="white",
                        zorder=5)
        ax.set_xlabel("number of observed entries $m$")
        ax.set_ylabel(ylabel)
    axes[0].set_yscale("log")
    gt = np.asarray(results.arrays.get("ground_truth_nuclear_norm", []), dtype=float)
    if np.any(np.isfinite(gt)):
        axes[1].axhline(float(np.nanmean(gt)), color="gray", ls=":",
                        label="ground truth $\\|W^*\\|_*$")
    axes[0].set_title("matrix completion: reconstruction error")
    axes[1].set_title("nuclear norm of the solution")
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    if partial:
        fig.supxlabel("hollow marker: some seeds diverged at that $m$ (mean of the others)",
                      fontsize=8)
    return save(fig, out_dir, NAME)


EXPERIMENT = register(
    Experiment(
        name=NAME,
        description="Matrix completion: min nuclear norm vs depth-2/3 factorization vs observations "
        "(§2.12, §E3)",
        config_model=Fig2Config,
        run=run,
        plot=plot,
        quick={"n": 30, "rank": 2, "observations": [200, 600], "seeds": 1,
               "max_steps": 2500, "lr": 1e-2},
        paper={"observations": [1000, 2000, 3000, 4000, 5000, 6000, 7000, 8000], "seeds": 5,
               "max_steps": 30000},
        question="With few observed entries, does gradient descent on a deep matrix factorization "
        "complete a low-rank matrix with lower error than the minimum nuclear norm?",
        reported={
            summary_keys.RECON_ERROR_AT_M.format(method=method, m=2000): Reported(
                value, "§E3, blog Table 1: n = 100, rank 5, m = 2000, GroupRMSprop; "
                f"band: within a factor {factor:g} (seed and solver accuracy)", factor)
            for method, value, factor in (("nuclear", 1.06e-1, 3.0), ("depth2", 5.92e-2, 3.0),
                                          ("depth3", 2.58e-5, 10.0))
        },
    )
)
