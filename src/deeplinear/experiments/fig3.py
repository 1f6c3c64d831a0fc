"""Figure 3: singular values of the end-to-end matrix along gradient descent (§2.12, §E3 Fig. 2).

For each problem (matrix completion and/or Gaussian matrix sensing of a rank-r ``n x n`` ground
truth, §E3) and each depth N in {1, 2, 3}, plain GD runs from a small initialization (identity
``W_j = s^{1/N} I`` as roosephu's ``dynamics.toml``, or small Gaussian) and records the top-k
singular values of ``W_{1:N}``. Theory (§2.12, singular value dynamics
``σ̇_r = -N (σ_r^2)^{1-1/N} <∇L, u_r v_r^T>``): for N = 1 all σ's grow together; for N >= 2 they
are learned one after another, with sharper jumps and a cleaner gap for larger N.

The step at which ``σ_r`` first reaches half its final value (``rise_step``) quantifies
"one after another". Learning rates are for the loss "mean over observations" (§E3); the
defaults are the calibration run's stable rates (§E3: 200/20/5 on ½·mean).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import jax
import numpy as np
from pydantic import Field, field_validator, model_validator

from deeplinear._format import number
from deeplinear.config import (
    ConfigModel,
    Depth,
    Entries,
    MatrixSide,
    NonEmptyList,
    PositiveFloat,
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
from deeplinear.metrics import reconstruction_error, singular_values
from deeplinear.network import gaussian_init, identity_init
from deeplinear.problems import low_rank_ground_truth, sample_completion, sample_sensing
from deeplinear.train import Schedule, Status, train

__all__ = ["Fig3Config", "plot", "rise_steps", "run", "sensing_lr_factor"]

NAME = "fig3"
ProblemKind = Literal["completion", "sensing"]


class Fig3Config(ConfigModel):
    """Configuration of Figure 3; unknown fields are errors.

    Ranges come from the shared types of :mod:`deeplinear.config` (finite numbers, strict ints)."""

    problems: NonEmptyList[ProblemKind] = Field(["completion"], description="completion and/or sensing")
    n: MatrixSide = Field(100, description="matrix size (n x n)")
    rank: Size = Field(5, description="rank of the ground truth (1..n)")
    observations: Entries = Field(2000, description="observed entries / sensing measurements m")
    depths: NonEmptyList[Depth] = Field([1, 2, 3], description="depths N (one panel each)")
    init: Literal["identity", "gaussian"] = Field("identity", description="small init kind")
    init_scale: PositiveFloat = Field(1e-3, description="scale of W_{1:N}(0) (§E3)")
    lrs: NonEmptyList[PositiveFloat] = Field(
        [100.0, 10.0, 2.5], description="GD learning rate per depth (mean-over-observations loss)"
    )
    steps: NonEmptyList[Steps] = Field([3000, 6000, 12000], description="GD iterations per depth")
    top_k: Annotated[Size, Field(ge=2)] = Field(10, description="number of singular values recorded")
    records: Annotated[Size, Field(ge=2)] = Field(300, description="record points per run")
    seed: Seed = Field(0, description="seed of ground truth, observations and init")

    @field_validator("depths")
    @classmethod
    def _depths(cls, v: list[int]) -> list[int]:
        return check_depths("depths", v)

    @field_validator("problems")
    @classmethod
    def _problems(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"problems must not repeat a problem, got {v}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Fig3Config:
        if len(self.lrs) != len(self.depths) or len(self.steps) != len(self.depths):
            raise ValueError(
                f"lrs and steps must give one value per depth: depths={short(self.depths)}, "
                f"lrs={short(self.lrs)}, steps={short(self.steps)}"
            )
        if not 1 <= self.rank <= self.n:
            raise ValueError(f"rank must be in [1, n={self.n}], got {self.rank}")
        if not 1 <= self.observations <= self.n * self.n:
            raise ValueError(
                f"observations must be in [1, n^2={self.n**2}], got {self.observations}"
            )
        if self.top_k > self.n:
            raise ValueError(f"top_k must be <= n={self.n}, got {self.top_k}")
        return self


def rise_steps(steps: np.ndarray, sigmas: np.ndarray, fraction: float = 0.5) -> np.ndarray:
    """First recorded step at which each ``σ_r`` reaches ``fraction`` of its final value.

    ``sigmas`` has shape (records, k); returns k steps (NaN when never reached).
    """
    final = sigmas[-1]
    reached = sigmas >= fraction * final
    first = np.argmax(reached, axis=0)
    return np.where(np.any(reached, axis=0), steps[first], np.nan).astype(float)


def sensing_lr_factor(n: int, m: int) -> float:
    """Ratio of the top curvatures of the completion and sensing losses (mean over m).

    Completion: ``(2/m)`` on each observed entry. Gaussian sensing with ``N(0, 1/n^2)`` entries:
    ``(2/m) λ_max(A^T A) ≈ (2/m) (sqrt(m) + n)^2 / n^2`` (Marchenko-Pastur edge), so the same
    stability margin needs ``lr_sensing = lr_completion * n^2 / (sqrt(m) + n)^2``.
    """
    return n * n / (np.sqrt(m) + n) ** 2


def _problem(kind: str, key: jax.Array, W_star: jax.Array, m: int):
    if kind == "completion":
        return sample_completion(key, W_star, m, reduction="mean")
    return sample_sensing(key, W_star, m, reduction="mean")


def run(config: Fig3Config, progress: Progress | None = None) -> Results:
    """Top-k singular values of ``W_{1:N}`` along GD, per problem and depth (Figure 3)."""
    progress = progress or NullProgress()
    total = len(config.problems) * len(config.depths)
    task = progress.task(f"{NAME}: {total} GD runs", total)
    k_gt, k_obs, k_init = jax.random.split(jax.random.PRNGKey(config.seed), 3)
    W_star = low_rank_ground_truth(k_gt, (config.n, config.n), config.rank)
    k = config.top_k
    metrics = {
        "sigma": lambda W: singular_values(W)[..., :k],
        "recon_error": lambda W: reconstruction_error(W, W_star),
    }
    arrays: dict[str, np.ndarray] = {
        "ground_truth_sigma": np.asarray(singular_values(W_star))[:k],
        "depths": np.asarray(config.depths),
        "problems": np.asarray(config.problems),
    }
    rows, notes = [], []
    summary: dict[str, float | int | str | None] = {}
    out = Results(subruns=total)
    top5: tuple[float, ...] | None = None  # depth 3 completion: the notes' panel
    for kind in config.problems:
        problem = _problem(kind, k_obs, W_star, config.observations)
        for depth, lr, steps in zip(config.depths, config.lrs, config.steps, strict=True):
            dims = (config.n,) * (depth + 1)
            if config.init == "identity":
                factors = identity_init(dims, config.init_scale)
            else:
                factors = gaussian_init(k_init, dims, config.init_scale, per="product")
            lr_eff = lr * (sensing_lr_factor(config.n, config.observations) if kind == "sensing"
                           else 1.0)
            res = train(factors, problem, lr=lr_eff, steps=steps, optimizer="gd",
                        schedule=Schedule.every(max(1, steps // config.records)), metrics=metrics,
                        progress=step_bar(progress, f"{kind}, depth {depth}", steps))
            tag = f"{kind}_depth{depth}"
            sig = np.asarray(res.metrics["sigma"])
            arrays[f"steps_{tag}"] = np.asarray(res.steps)
            arrays[f"sigma_{tag}"] = sig
            arrays[f"loss_{tag}"] = np.asarray(res.loss)
            row = dict(problem=kind, depth=depth, lr=lr_eff, steps=int(res.stop_step),
                       status=str(res.status))
            if res.status == Status.DIVERGED:
                # the recorded trajectory (up to the last finite iterate) is kept for the plot;
                # nothing is derived from it: no final values, no rise steps
                out.diverged(f"{kind}, depth {depth} (lr {lr_eff:.3g})", res.diverged_step)
                summary[summary_keys.RECON_ERROR_AT_DEPTH.format(problem=kind, depth=depth)] = None
                summary[summary_keys.FINAL_LOSS_AT_DEPTH.format(problem=kind, depth=depth)] = None
                rows.append(row)
                task.advance()
                continue
            err = float(res.metrics["recon_error"][-1])
            rise = rise_steps(np.asarray(res.steps), sig) if sig.size else np.full(k, np.nan)
            arrays[f"rise_{tag}"] = rise
            summary[summary_keys.RECON_ERROR_AT_DEPTH.format(problem=kind, depth=depth)] = err
            summary[summary_keys.FINAL_LOSS_AT_DEPTH.format(problem=kind, depth=depth)] = float(res.loss[-1])
            for r in range(min(config.rank, k)):
                summary[summary_keys.RISE_STEP.format(problem=kind, depth=depth, r=r + 1)] = float(rise[r])
            if kind == "completion" and depth == 3 and sig.size:  # the notes' depth-3 panel
                top5 = tuple(round(float(v), 1) for v in sig[-1, :5])
                summary[summary_keys.FINAL_TOP5_DEPTH3] = ", ".join(f"{v:.1f}" for v in top5)
            rows.append(dict(row, final_loss=float(res.loss[-1]), recon_error=err,
                             **{f"sigma{r + 1}": float(sig[-1, r]) for r in range(k)}))
            task.advance()
    out.tables, out.arrays, out.summary, out.notes = {"runs": rows}, arrays, summary, notes
    out.headline = _headline(config, summary, arrays["ground_truth_sigma"], top5)
    return out


def _headline(config: Fig3Config, summary: dict, gt_sigma: np.ndarray,
              top5: tuple[float, ...] | None) -> list[Headline]:
    """Completion errors of depths 1-3 and depth 3's top-5 singular values (the notes' panel)."""
    same = (config.n, config.rank, config.observations) == (100, 5, 2000)
    on = (f"synthetic {config.n}x{config.n} rank-{config.rank} ground truth (top singular values "
          f"{', '.join(f'{v:.1f}' for v in gt_sigma[:5])}), m = {config.observations} observed "
          f"entries, GD from {config.init} init {config.init_scale:g}")
    size = None if same else ("another size: the notes use n = 100, rank 5, m = 2000; this run "
                              f"has n = {config.n}, rank {config.rank}, m = {config.observations}")
    out = []
    for depth in (1, 2, 3):
        key = summary_keys.RECON_ERROR_AT_DEPTH.format(problem="completion", depth=depth)
        missing = ("completion" not in config.problems or depth not in config.depths)
        reason = f"this run has no completion run at depth {depth}" if missing else size
        out.append(Headline(key, summary.get(key), f"reconstruction error mean_ij (W - W*)_ij^2 "
                            f"at the end of GD, depth {depth}", on, reason))
    missing = "completion" not in config.problems or 3 not in config.depths
    out.append(Headline(summary_keys.FINAL_TOP5_DEPTH3, top5, "top-5 singular values of W at the end of GD, "
                        "depth 3 (the rest stay near 0)", on,
                        "this run has no completion run at depth 3" if missing else size))
    return out


def plot(results: Results, out_dir: Path) -> list[Path]:
    """One row per problem, one panel per depth: top-k σ's vs iteration; error in each title.

    The σ legend sits outside the panels (right); a diverged run is drawn faded, up to its last
    finite record, and titled as diverged (no error is derived from it)."""
    plt = pyplot()
    from matplotlib.lines import Line2D
    from matplotlib.ticker import NullFormatter

    problems = [str(p) for p in results.arrays["problems"]]
    depths = [int(d) for d in results.arrays["depths"]]
    fig, axes = plt.subplots(len(problems), len(depths), figsize=(3.4 * len(depths) + 1.0,
                             2.9 * len(problems) + 0.3), squeeze=False, layout="constrained")
    gt = np.asarray(results.arrays.get("ground_truth_sigma", []), dtype=float).reshape(-1)
    gt = gt[np.isfinite(gt) & (gt > 1e-8 * (gt.max(initial=0.0) or 1.0))]  # its nonzero σ's
    k, faded = 0, False
    for i, kind in enumerate(problems):
        for j, depth in enumerate(depths):
            ax = axes[i, j]
            tag = f"{kind}_depth{depth}"
            steps = np.asarray(results.arrays.get(f"steps_{tag}", []), dtype=float).reshape(-1)
            sig = np.asarray(results.arrays.get(f"sigma_{tag}", np.zeros((0, 0))), dtype=float)
            err = results.summary.get(summary_keys.RECON_ERROR_AT_DEPTH.format(problem=kind, depth=depth))
            ax.set_title(f"{kind}, depth {depth}: " + ("diverged" if err is None
                                                       else f"error {number(float(err), 3, missing='n/a')}"))
            ax.set_xscale("log")
            ax.set_xlabel("iteration")
            if sig.ndim != 2 or not sig.size or not steps.size:
                ax.text(0.5, 0.5, "no records", ha="center", va="center", transform=ax.transAxes)
                continue
            n = min(steps.size, sig.shape[0])
            steps, sig = steps[:n], sig[:n]
            # log-scaled iteration axis (the rises are spread over decades); no non-finite records
            keep = (steps > 0) & np.all(np.isfinite(sig), axis=1)
            if np.any(steps > 0):  # the whole span of the run, even where records are missing
                ax.set_xlim(steps[steps > 0].min(), max(steps.max(), 10 * steps[steps > 0].min()))
            ax.xaxis.set_minor_formatter(NullFormatter())
            k = max(k, sig.shape[1])
            faded |= err is None
            colors = plt.cm.viridis(np.linspace(0, 0.9, sig.shape[1]))
            for r in range(sig.shape[1]):
                ax.plot(steps[keep], sig[keep, r], color=colors[r], lw=1.3,
                        alpha=0.45 if err is None else 1.0)
            for v in gt:
                ax.axhline(v, color="0.5", lw=0.7, ls=":", zorder=0)
        axes[i, 0].set_ylabel("singular values of $W_{1:N}$")
    colors = plt.cm.viridis(np.linspace(0, 0.9, max(k, 1)))
    handles = [Line2D([], [], color=colors[r], lw=1.3, label=f"$\\sigma_{{{r + 1}}}$")
               for r in range(min(k, 10))]
    if gt.size:
        handles.append(Line2D([], [], color="0.5", lw=0.7, ls=":", label="ground truth\n$\\sigma$'s"))
    if faded:
        handles.append(Line2D([], [], color=colors[0], alpha=0.45, lw=1.3,
                              label="faded: diverged\nrun, up to the\nblow-up"))
    fig.legend(handles=handles, loc="outside right center", fontsize=8)
    return save(fig, out_dir, NAME)


EXPERIMENT = register(
    Experiment(
        name=NAME,
        description="Singular values of the end-to-end matrix along GD for depths 1-3 (§2.12, §E3)",
        config_model=Fig3Config,
        run=run,
        plot=plot,
        quick={"problems": ["completion", "sensing"], "n": 20, "rank": 3, "observations": 200,
               "steps": [200, 600, 1500], "records": 60, "top_k": 6,
               "lrs": [20.0, 2.0, 1.0]},
        paper={"problems": ["completion", "sensing"], "steps": [30000, 15000, 20000]},
        question="Does gradient descent on a deeper factorization learn the singular values one "
        "after another, ending at a lower-rank, lower-error completion?",
        reported={
            **{summary_keys.RECON_ERROR_AT_DEPTH.format(problem="completion", depth=d): Reported(
                v, "§E3, blog Figure 2 titles (8e-1 / 6e-2 / 3e-5 in TAU lecture 8): n = 100, "
                f"rank 5, m = 2000; band: within a factor {f:g}", f)
               for d, v, f in ((1, 8.19e-1, 1.25), (2, 5.92e-2, 3.0), (3, 2.58e-5, 10.0))},
            summary_keys.FINAL_TOP5_DEPTH3: Reported(
                (53, 47, 44, 38.5, 33), "§E3, blog Figure 2 depth 3, read off the figure (±1) for "
                "another random ground truth: shown next to ours, not judged"),
        },
    )
)
