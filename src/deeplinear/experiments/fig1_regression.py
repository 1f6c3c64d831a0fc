"""Figure 1 (left): ℓ_p regression, linear model vs depth-N linear networks (§2.10, §E1).

For p = 2 and p = 4 the same regression problem ``L(w) = (1/p) mean (xᵀw - y)^p`` is trained

* as a linear model (depth 1) with gradient descent, AdaGrad and AdaDelta (optax), and
* as depth-N linear networks ``w = W_N ... W_1`` (hidden width configurable, 1 = the paper's
  "vector times scalar") with gradient descent from a near-zero balanced initialization, next to
  the explicit end-to-end update rule of §2.6 (``dynamics.end_to_end_update``) run from the same
  end-to-end matrix with the same learning rate.

Each method's learning rate comes from a grid search for the fastest convergence, the whole grid
in one compiled program (``train.train_replicas`` vmaps over learning rates). Losses are reported
as the excess ``L(w) - L*`` over the optimum ``L*``, which is computed independently by Newton's
method on the convex objective. Expected (§2.10): depth gives no speed-up for p = 2 and a large
one for p = 4.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from pydantic import Field, field_validator, model_validator

from deeplinear import data as datasets
from deeplinear.config import (
    ConfigModel,
    Depth,
    Finite,
    NonEmptyList,
    PathStr,
    PositiveFloat,
    Seed,
    Size,
    Steps,
)
from deeplinear.curves import crossing_step, first_reach
from deeplinear.experiments import summary_keys
from deeplinear.experiments._plotting import pyplot, save
from deeplinear.experiments.base import (
    Experiment,
    Headline,
    NullProgress,
    Progress,
    Reported,
    Results,
    register,
)
from deeplinear.network import balanced_init, end_to_end
from deeplinear.problems import LpRegression
from deeplinear.simulate import end_to_end_descent
from deeplinear.train import Schedule, Status, train_replicas

__all__ = ["Fig1RegressionConfig", "lp_optimum", "plot", "run"]

NAME = "fig1-regression"


class Fig1RegressionConfig(ConfigModel):
    """Configuration of Figure 1 (left); every field is validated, unknown fields are errors.

    Ranges come from the shared types of :mod:`deeplinear.config` (finite numbers, strict ints)."""

    dataset: Literal["breast-cancer-area", "diabetes", "gas-sensor"] = Field(
        "breast-cancer-area",
        description="offline scikit-learn data ('breast-cancer-area', 'diabetes') or the UCI gas "
        "sensor data of §E1 ('gas-sensor', needs data_path)",
    )
    data_path: PathStr | None = Field(None, description="directory or batchK.dat file (gas-sensor)")
    p_values: NonEmptyList[Annotated[int, Field(strict=True, ge=2, le=32, multiple_of=2)]] = Field(
        [2, 4], description="exponents p of the ℓ_p loss (even, 2..32)")
    depths: NonEmptyList[Depth] = Field([1, 2, 3], description="network depths N; 1 is the linear model")
    hidden_width: Size = Field(1, description="hidden width of the networks (1 = w_1 ω_2)")
    steps: Annotated[Steps, Field(ge=10)] = Field(20_000, description="iterations per run (>= 10)")
    lr_grid: NonEmptyList[PositiveFloat] = Field(
        [float(v) for v in np.geomspace(1e-3, 2.0, 12)],
        description="learning rates searched for gradient descent (every depth)",
    )
    adagrad_lr_grid: NonEmptyList[PositiveFloat] = Field(
        [float(v) for v in np.geomspace(1e-3, 1.0, 7)])
    adadelta_lr_grid: NonEmptyList[PositiveFloat] = Field(
        [float(v) for v in np.geomspace(1e-1, 100.0, 7)])
    adaptive: bool = Field(True, description="also run AdaGrad and AdaDelta on the linear model")
    end_to_end_rule: bool = Field(True, description="also run the explicit §2.6 update rule")
    init_scale: Annotated[Finite, Field(gt=0, lt=1)] = Field(
        1e-3, description="std of the near-zero end-to-end init, in (0, 1) (§2.5, §4 pitfall 2)")
    loss_levels: NonEmptyList[PositiveFloat] = Field(
        [1e-2, 1e-3, 1e-4], description="excess losses L - L* whose first-hit iteration is reported"
    )
    record_points: Annotated[Size, Field(ge=10)] = Field(
        120, description="log-spaced record steps per run (>= 10)")
    seed: Seed = 0

    @field_validator("depths")
    @classmethod
    def _depths(cls, v: list[int]) -> list[int]:
        if 1 not in v:
            raise ValueError(f"depths must include 1 (the linear model), got {v}")
        return sorted(set(v))

    @model_validator(mode="after")
    def _path(self) -> Fig1RegressionConfig:
        if self.dataset == "gas-sensor" and not self.data_path:
            raise ValueError(
                "data_path is required for dataset='gas-sensor' (the directory holding the UCI "
                "batch1.dat ... batch10.dat files)"
            )
        return self


# --------------------------------------------------------------------------------------------
# Numerics
# --------------------------------------------------------------------------------------------


def lp_optimum(X: np.ndarray, y: np.ndarray, p: int, *, iters: int = 200) -> tuple[float, np.ndarray]:
    """Minimum ``L* = min_w (1/p) mean (Xw - y)^p`` and a minimizer, by damped Newton (numpy).

    The objective is convex for even p; Newton with backtracking from the least-squares solution
    converges quadratically, independently of the gradient-descent code being measured.
    """
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    m = X.shape[0]
    w = np.linalg.lstsq(X, y, rcond=None)[0]

    def f(v: np.ndarray) -> float:
        return float(np.mean((X @ v - y) ** p) / p)

    for _ in range(iters if p > 2 else 0):
        r = X @ w - y
        g = X.T @ r ** (p - 1) / m
        H = (p - 1) * X.T @ (X * (r ** (p - 2))[:, None]) / m
        step = np.linalg.lstsq(H, g, rcond=None)[0]
        t, f0 = 1.0, f(w)
        while f(w - t * step) > f0 and t > 1e-12:
            t /= 2
        w = w - t * step
        if np.linalg.norm(g) < 1e-15:
            break
    return f(w), w


def _select(steps: np.ndarray, excess: np.ndarray, status: np.ndarray, floor: float) -> int | None:
    """Grid search rule "fastest convergence": among non-diverged runs, the one reaching
    ``max(2 × best final excess, floor)`` first (ties: lower final excess)."""
    ok = (status != Status.DIVERGED) & np.isfinite(excess[:, -1])
    if not ok.any():
        return None
    target = max(2.0 * float(np.min(excess[ok, -1])), floor)
    best, key = None, None
    for r in np.flatnonzero(ok):
        hit = first_reach(steps[r], excess[r], target)
        if hit is None:
            continue
        k = (hit, float(excess[r, -1]))
        if key is None or k < key:
            best, key = int(r), k
    return best


def _load(config: Fig1RegressionConfig) -> datasets.RegressionData:
    if config.dataset == "gas-sensor":
        return datasets.load_gas_sensor(config.data_path)
    if config.dataset == "diabetes":
        return datasets.diabetes_regression()
    return datasets.breast_cancer_area()


def _grid(factors: tuple[jax.Array, ...], problem: LpRegression, lrs: list[float], steps: int,
          schedule: Schedule, optimizer: str) -> Any:
    R = len(lrs)
    rep = tuple(jnp.broadcast_to(W, (R, *W.shape)) for W in factors)
    return train_replicas(rep, problem, lr=np.asarray(lrs), steps=steps, schedule=schedule,
                          optimizer=optimizer)


def run(config: Fig1RegressionConfig, progress: Progress | None = None) -> Results:
    """Train every method at every p, pick each learning rate by grid search, and measure
    excess-loss curves, first-hit iterations, speed-ups and crossings (§E1)."""
    progress = progress or NullProgress()
    data = _load(config)
    d0 = data.X.shape[1]
    schedule = Schedule.log(config.record_points)
    key = jax.random.key(config.seed)
    n_runs = len(config.p_values) * (
        len(config.depths) + 2 * config.adaptive
        + config.end_to_end_rule * (len(config.depths) - 1)
    )
    task = progress.task(f"{NAME} ({data.name}, {data.X.shape[0]}x{d0})", n_runs)
    res = Results(subruns=n_runs, notes=[
        f"data: {data.name}, {data.X.shape[0]} examples x {d0} features, standardized",
        "loss = (1/p) mean (x^T w - y)^p; curves show the excess L - L*, L* by Newton's method",
        f"learning rates: grid search, fastest convergence; {config.steps} iterations per run",
    ])
    methods_rows: list[dict[str, Any]] = []
    grid_rows: list[dict[str, Any]] = []

    for p in config.p_values:
        problem = LpRegression(data.X, data.y, p)
        lstar, _ = lp_optimum(data.X, data.y, p)
        res.summary[f"p{p}_lstar"] = lstar
        curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}

        def record(method: str, depth: int, optimizer: str, lr: float, steps: np.ndarray,
                   loss: np.ndarray, status: str, p: int = p, lstar: float = lstar,
                   curves: dict = curves) -> None:
            excess = loss - lstar
            curves[method] = (steps, excess)
            res.arrays[f"p{p}_{method}_steps"] = np.asarray(steps)
            res.arrays[f"p{p}_{method}_loss"] = np.asarray(loss)
            row = {"p": p, "method": method, "depth": depth, "optimizer": optimizer, "lr": lr,
                   "status": status, "final_loss": float(loss[-1]),
                   "final_excess": float(excess[-1])}
            for level in config.loss_levels:
                row[summary_keys.ITERS_TO.format(level=level)] = first_reach(steps, excess, level)
            methods_rows.append(row)
            res.summary[f"p{p}_{method}_lr"] = lr
            res.summary[summary_keys.FINAL_EXCESS.format(p=p, method=method)] = float(excess[-1])

        def search(method: str, depth: int, optimizer: str, factors: tuple[jax.Array, ...],
                   lrs: list[float], p: int = p, problem: LpRegression = problem,
                   lstar: float = lstar) -> float | None:
            out = _grid(factors, problem, lrs, config.steps, schedule, optimizer)
            excess = out.loss - lstar
            for r, lr in enumerate(lrs):
                grid_rows.append({"p": p, "method": method, "lr": lr, "status": str(out.status[r]),
                                  "final_excess": float(excess[r, -1])})
            floor = 1e-12 * max(float(excess[0, 0]), 1e-300)
            r = _select(out.steps, excess, out.status, floor)
            task.advance()
            if r is None:  # the figure lacks this method's curve
                res.diverged(f"p={p} {method}: every learning rate of the grid",
                             int(np.max(out.diverged_step)))
                return None
            if r in (0, len(lrs) - 1):
                res.notes.append(
                    f"p={p} {method}: chosen lr {lrs[r]:.3g} is at the edge of the grid")
            record(method, depth, optimizer, float(lrs[r]), out.steps[r], out.loss[r],
                   str(out.status[r]))
            return float(lrs[r])

        for depth in config.depths:
            dims = (d0,) + (config.hidden_width,) * (depth - 1) + (1,)
            factors = balanced_init(key, dims, config.init_scale)
            lr = search(f"gd_depth{depth}", depth, "gd", factors, config.lr_grid)
            if depth > 1 and config.end_to_end_rule:
                if lr is not None:
                    out = end_to_end_descent(end_to_end(factors), problem, lr=lr, depth=depth,
                                             steps=config.steps, schedule=schedule)
                    if out.status == Status.DIVERGED:
                        res.diverged(f"p={p} e2e_depth{depth} (lr {lr:.3g})", out.diverged_step)
                    else:
                        _compare_e2e(res, p, depth, lr, out, curves, lstar, record)
                task.advance()
        if config.adaptive:
            lin = (balanced_init(key, (d0, 1), config.init_scale)[0],)
            search("adagrad", 1, "adagrad", lin, config.adagrad_lr_grid)
            search("adadelta", 1, "adadelta", lin, config.adadelta_lr_grid)

        _speedups_and_crossings(res, p, curves, config)

    res.tables = {"methods": methods_rows, "lr_grid": grid_rows}
    res.headline = _headline(res.summary, config, data)
    return res


_HEADLINE = {  # the notes' key: (summary key, description)
    "gd_loss_at_1e6": ("p4_gd_depth1", "l4 loss of GD on the linear model at the end"),
    "adagrad_loss_at_1e6": ("p4_adagrad", "l4 loss of AdaGrad on the linear model at the end"),
    "adadelta_loss_at_1e6": ("p4_adadelta", "l4 loss of AdaDelta on the linear model at the end"),
    "overparameterized_gd_loss_at_1e6": (
        "p4_gd_depth2", "l4 loss of GD on the depth-2 network (w_1 times a scalar) at the end"),
    "crossing_overparameterized_vs_gd": (
        "p4_crossing_depth2_vs_gd", "iteration from which depth 2 stays below GD (linear), l4"),
    "crossing_overparameterized_vs_adadelta": (
        "p4_crossing_depth2_vs_adadelta", "iteration from which depth 2 stays below AdaDelta, l4"),
    "p2_speedup_depth2": (
        "p2_speedup_depth2", "iterations of the linear model / of depth 2 to the lowest common "
        "excess loss, l2 (1 = no speed-up)"),
    "p4_speedup_depth2": (
        "p4_speedup_depth2", "the same ratio for l4 (the notes: orders of magnitude on their data)"),
}


def _headline(summary: dict, config: Fig1RegressionConfig,
              data: datasets.RegressionData) -> list[Headline]:
    """The notes' l4 losses and crossings at the end of the run, and the l2/l4 speed-ups."""
    on = (f"{data.name} ({data.X.shape[0]} x {data.X.shape[1]}, standardized), "
          f"{config.steps:,} iterations, learning rates by grid search")
    if config.dataset != "gas-sensor":
        on = "stand-in dataset: " + on
    out = []
    for key, (name, description) in _HEADLINE.items():
        p = int(name[1])
        if key.endswith("_at_1e6") and f"{name}_final_excess" in summary:
            value = summary[f"{name}_final_excess"] + summary[f"p{p}_lstar"]
        else:
            value = summary.get(name)
        if p not in config.p_values:
            reason = f"this run has no p = {p}"
        elif config.dataset != "gas-sensor":
            reason = (f"another dataset ({data.name}); the notes use the UCI gas sensor ethanol "
                      "data (dataset = 'gas-sensor' with data_path)")
        elif config.steps != 1_000_000 and not key.startswith("p"):
            reason = f"{config.steps:,} iterations; the notes' values are at 10^6 (use --paper)"
        else:
            reason = None
        out.append(Headline(key, value, description, on, reason))
    return out


def _compare_e2e(res: Results, p: int, depth: int, lr: float, out: Any, curves: dict,
                 lstar: float, record: Any) -> None:
    """Record the end-to-end rule's curve and its gap to GD on the depth-``depth`` network."""
    record(f"e2e_depth{depth}", depth, "end-to-end rule", lr, out.steps, out.loss, str(out.status))
    net = curves[f"gd_depth{depth}"][1] + lstar
    e2e = out.loss
    n = min(len(net), len(e2e))
    res.summary[f"p{p}_e2e_depth{depth}_max_rel_gap"] = float(
        np.max(np.abs(e2e[:n] - net[:n]) / np.abs(net[:n])))
    res.summary[summary_keys.E2E_EXCESS_RATIO.format(p=p, depth=depth)] = float(
        (e2e[-1] - lstar) / (net[-1] - lstar))


def _speedups_and_crossings(res: Results, p: int, curves: dict[str, tuple[np.ndarray, np.ndarray]],
              config: Fig1RegressionConfig) -> None:
    """Speed-ups of depth N over the linear model and crossing iterations (§E1)."""
    if "gd_depth1" not in curves:
        return
    s1, e1 = curves["gd_depth1"]
    for depth in config.depths[1:]:
        name = f"gd_depth{depth}"
        if name not in curves:
            continue
        s, e = curves[name]
        # lowest excess both reach (never below rounding of L*): compare iterations there
        level = max(float(e1[-1]), float(e[-1]), 1e-12 * float(e1[0])) * 1.0001
        a, b = first_reach(s1, e1, level), first_reach(s, e, level)
        res.summary[summary_keys.SPEEDUP.format(p=p, depth=depth)] = (
            None if a is None or b is None else a / max(b, 1.0))
        res.summary[f"p{p}_speedup_depth{depth}_level"] = level
        if len(s) == len(s1):
            res.summary[summary_keys.CROSSING.format(p=p, depth=depth, other="gd")] = crossing_step(s, e, e1)
        for other in ("adagrad", "adadelta"):
            if other in curves and len(curves[other][0]) == len(s):
                res.summary[summary_keys.CROSSING.format(p=p, depth=depth, other=other)] = crossing_step(
                    s, e, curves[other][1])


# --------------------------------------------------------------------------------------------
# Plot
# --------------------------------------------------------------------------------------------

_STYLE = {"gd_depth1": ("GD, linear model (depth 1)", "k", "-"),
          "adagrad": ("AdaGrad, linear model", "tab:orange", "-"),
          "adadelta": ("AdaDelta, linear model", "tab:green", "-")}


def _label(method: str) -> tuple[str, str | None, str]:
    if method in _STYLE:
        return _STYLE[method]
    kind, depth = method.split("_depth")
    colors = {"2": "tab:blue", "3": "tab:red", "4": "tab:purple"}
    if kind == "gd":
        return f"GD, depth-{depth} network", colors.get(depth), "-"
    return f"end-to-end rule (§2.6), N={depth}", colors.get(depth), ":"


def plot(results: Results, out_dir: Path) -> list[Path]:
    """Excess loss vs iteration (log-log), one panel per p, one curve per method.

    Iteration 0 has no place on the log axis, nor has an excess loss <= 0 (a loss at L* up to
    rounding) or a missing one (NaN after a blow-up): those records are left out, not clipped."""
    plt = pyplot()
    ps = sorted({int(k.split("_")[0][1:]) for k in results.arrays
                 if k.endswith("_loss") and k.split("_")[0][1:].isdigit()})
    fig, axes = plt.subplots(1, len(ps), figsize=(5.2 * len(ps), 4.2), squeeze=False)
    for ax, p in zip(axes[0], ps, strict=True):
        lstar = results.summary.get(f"p{p}_lstar")
        lstar = float(lstar) if lstar is not None and np.isfinite(float(lstar)) else None
        methods = [k[len(f"p{p}_"):-len("_loss")] for k in results.arrays
                   if k.startswith(f"p{p}_") and k.endswith("_loss")]
        for method in methods:
            steps = np.asarray(results.arrays.get(f"p{p}_{method}_steps", []), dtype=float)
            loss = np.asarray(results.arrays[f"p{p}_{method}_loss"], dtype=float)
            n = min(steps.size, loss.size)
            steps, excess = steps[:n], loss[:n] - (lstar or 0.0)
            keep = (steps > 0) & np.isfinite(excess) & (excess > 0)
            label, color, ls = _label(method)
            lr = results.summary.get(f"p{p}_{method}_lr")
            if lr is not None:
                label += f" (lr {float(lr):.2g})"
            ax.plot(steps[keep], excess[keep], ls, color=color, label=label, lw=1.6)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("iteration")
        ax.set_ylabel(f"ℓ{p} excess loss  L(w) − L*  (L* = {lstar:.3g})" if lstar is not None
                      else f"ℓ{p} loss L(w)  (L* not available)")
        ax.set_title(f"p = {p}")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Figure 1 (left): ℓp regression, linear model vs deep linear networks")
    fig.tight_layout()
    return save(fig, out_dir, "fig1_regression")


EXPERIMENT = register(Experiment(
    name=NAME,
    description="Figure 1 left (§E1): ℓ2 vs ℓ4 regression, linear model vs depth-2/3 linear "
                "networks (GD, end-to-end rule), AdaGrad and AdaDelta; tuned learning rates",
    config_model=Fig1RegressionConfig,
    run=run,
    plot=plot,
    quick={"steps": 4000, "depths": [1, 2], "adaptive": False,
           "lr_grid": [float(v) for v in np.geomspace(1e-2, 1.0, 7)], "record_points": 60},
    paper={"steps": 1_000_000, "record_points": 300},
    question="Does making a linear model deeper (same function, one extra scalar) accelerate gradient "
    "descent on l4 regression, and not on l2?",
    reported={
        key: Reported(value, "§E1, blog 2018-03-02 figure (UCI gas sensor ethanol, 2565 x 128, "
                      "p = 4, 10^6 iterations), read off the figure; band: within a factor 1.5", 1.5)
        for key, value in (("gd_loss_at_1e6", 6e-2), ("adagrad_loss_at_1e6", 5.8e-2),
                           ("adadelta_loss_at_1e6", 2e-2), ("overparameterized_gd_loss_at_1e6", 8e-3),
                           ("crossing_overparameterized_vs_gd", 1.4e5),
                           ("crossing_overparameterized_vs_adadelta", 5.4e5))
    } | {
        "p2_speedup_depth2": Reported(1.0, "§E1 (ACH18): depth gives no speed-up for l2 regression "
                                      "(1 = none); band: within a factor 1.5", 1.5),
    },
))
