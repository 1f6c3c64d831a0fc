"""Implicit regularization is not norm minimization: the 2x2 completion (§2.13, §E5).

Complete ``[[*, 1], [1, 0]]`` (loss ``½ Σ_Ω (W_ij - b_ij)^2``) with depth-N factorizations.
Every norm is minimized at a finite ``*``, yet (§2.13, Prop. "no norm minimization") gradient
flow from a balanced init with ``det W(0) > 0`` keeps ``det > 0`` (signed singular values cannot
cross 0), which forces ``|W_11| > (1 - sqrt(2l))^2 / sqrt(2l)``, i.e. ``|W_11| ≈ 1/sqrt(2 l)``
as the loss ``l -> 0``: all norms diverge while the effective rank goes to 1.

Runs, for each depth:
* gradient flow (diffrax, ``train.gradient_flow``) from a balanced init with det > 0: the theory's
  setting; it must show no det sign flip and ``|W_11| sqrt(2 l) -> 1``;
* GD (repo hyperparameters: lr 3e-3) from the balanced init and from the repo's random init (each
  factor N(0, 8e-3^2), resampled until det > 0), several seeds (vmapped); det sign flips are
  counted at the record points and reported (GD can flip, §4 pitfall 4);
* the d x d generalization (``problems.completion_dxd``) under gradient flow.

Recorded along each run: the four entries, |W_11|, Frobenius, nuclear and spectral norms,
effective rank, distance to rank 1, det.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import jax
import jax.numpy as jnp
import numpy as np
from pydantic import Field, field_validator

from deeplinear.config import (
    ConfigModel,
    Depth,
    NonEmptyList,
    PositiveFloat,
    Replicas,
    Size,
    Steps,
    Tolerance,
)
from deeplinear.curves import value_at_first_reach
from deeplinear.experiments._regularization import check_depths, pyplot, save
from deeplinear.experiments.base import (
    Experiment,
    NullProgress,
    Progress,
    Results,
    register,
    step_bar,
)
from deeplinear.metrics import (
    distance_to_rank,
    effective_rank,
    frobenius_norm,
    nuclear_norm,
    spectral_norm,
)
from deeplinear.network import balanced_init, gaussian_init, with_det_sign
from deeplinear.problems import completion_2x2, completion_dxd
from deeplinear.train import Schedule, gradient_flow, train_replicas

__all__ = ["NormsConfig", "count_sign_flips", "plot", "run"]

NAME = "norms"
INITS = ("balanced", "random")


class NormsConfig(ConfigModel):
    """Configuration of the norms experiment; unknown fields are errors.

    Ranges come from the shared types of :mod:`deeplinear.config` (finite numbers, strict ints)."""

    depths: NonEmptyList[Annotated[Depth, Field(ge=2)]] = Field(
        [2, 3, 4], description="depths N >= 2 of the factorizations")
    seeds: Replicas = Field(3, description="GD seeds per (depth, init), vmapped")
    random_scale: PositiveFloat = Field(8e-3, description="std of each factor's entries (repo init)")
    balanced_scale: PositiveFloat = Field(
        1e-2, description="std of the balanced init's product entries")
    lr: PositiveFloat = Field(3e-3, description="GD learning rate (repo: 3e-3)")
    max_steps: Steps = Field(300_000, description="GD iteration cap")
    stop_loss: PositiveFloat = Field(1e-3, description="stop when the loss is below this (repo: 1e-4)")
    records: Annotated[Size, Field(ge=10)] = Field(400, description="log-spaced record points per run")
    flow_t1: PositiveFloat = Field(
        4000.0, description="gradient-flow horizon (time units = lr x steps)")
    flow_rtol: Tolerance = Field(1e-9, description="gradient-flow relative tolerance, in (0, 1)")
    flow_atol: Tolerance = Field(1e-12, description="gradient-flow absolute tolerance, in (0, 1)")
    dxd: Annotated[int, Field(strict=True, ge=0, le=100)] = Field(
        3, description="size d of the d x d generalization (0 = skip, else 2..100)")

    @field_validator("depths")
    @classmethod
    def _depths(cls, v: list[int]) -> list[int]:
        return check_depths("depths", v, minimum=2)

    @field_validator("dxd")
    @classmethod
    def _dxd(cls, v: int) -> int:
        if v == 1:
            raise ValueError(f"dxd must be 0 (skip) or >= 2, got {v}")
        return v


def _metrics() -> dict:
    return {
        "W": lambda W: W.reshape(W.shape[:-2] + (-1,)),
        "abs_w11": lambda W: jnp.abs(W[..., 0, 0]),
        "frobenius": frobenius_norm,
        "nuclear": nuclear_norm,
        "spectral": spectral_norm,
        "effective_rank": effective_rank,
        "distance_to_rank1": lambda W: distance_to_rank(W, 1),
        "det": jnp.linalg.det,
    }


_METRICS = _metrics()  # one dict of functions: the compiled programs are cached across calls


def count_sign_flips(det: np.ndarray) -> int:
    """Number of sign changes of ``det`` along a recorded trajectory (exact zeros skipped)."""
    s = np.sign(np.asarray(det))
    s = s[s != 0]
    return int(np.sum(s[1:] != s[:-1]))


def _balanced(depth: int, scale: float, dims=(2, 2)):
    n = dims[0]
    return lambda key: balanced_init(key, (n,) * (depth + 1), scale)


def _random(depth: int, scale: float):
    return lambda key: gaussian_init(key, (2,) * (depth + 1), scale, per="layer")


def _stack(factor_list):
    return tuple(jnp.stack(ws) for ws in zip(*factor_list, strict=True))


def _run_summary(tag: str, loss, metrics, summary, rows, extra) -> None:
    det = np.asarray(metrics["det"])
    flips = count_sign_flips(det)
    changed = np.nonzero(np.sign(det[1:]) * np.sign(det[:-1]) < 0)[0]
    at_flip = float(np.abs(det[changed[0]])) if changed.size else None
    final_loss = float(loss[-1])
    w11 = float(metrics["abs_w11"][-1])
    row = dict(run=tag, final_loss=final_loss, abs_w11=w11,
               w11_times_sqrt_2loss=w11 * np.sqrt(2 * final_loss), det=float(metrics["det"][-1]),
               sign_flips=flips, abs_det_at_first_flip=at_flip,
               effective_rank=float(metrics["effective_rank"][-1]),
               distance_to_rank1=float(metrics["distance_to_rank1"][-1]), **extra)
    for level in (1e-2, 1e-3, 1e-4):
        row[f"abs_w11_at_loss_{level:.0e}"] = value_at_first_reach(loss, metrics["abs_w11"], level)
    rows.append(row)
    summary[f"abs_w11_{tag}"] = w11
    summary[f"final_loss_{tag}"] = final_loss
    summary[f"sign_flips_{tag}"] = flips


def run(config: NormsConfig, progress: Progress | None = None) -> Results:
    """Gradient flow and GD on the 2x2 (and d x d) completion; norms and det signs (§2.13)."""
    progress = progress or NullProgress()
    total = len(config.depths) * (1 + len(INITS)) + (1 if config.dxd else 0)
    task = progress.task(f"{NAME}: {total} runs", total)
    out = Results(subruns=len(config.depths) * (1 + len(INITS) * config.seeds)
                  + (1 if config.dxd else 0))
    problem = completion_2x2()
    arrays: dict[str, np.ndarray] = {"depths": np.asarray(config.depths)}
    rows: list[dict] = []
    notes: list[str] = []
    summary: dict[str, float | int | str] = {}
    ts = np.concatenate([[0.0], np.geomspace(1e-2, config.flow_t1, config.records - 1)])

    def flow(tag, factors, prob, extra):
        res = gradient_flow(factors, prob, config.flow_t1, ts=ts, rtol=config.flow_rtol,
                            atol=config.flow_atol, metrics=_METRICS)
        arrays[f"t_{tag}"] = res.ts
        arrays[f"loss_{tag}"] = res.loss
        for name, vals in res.metrics.items():
            arrays[f"{name}_{tag}"] = vals
        if res.status == "diverged":  # nothing is derived from a diverged solve
            out.diverged(f"{tag} (gradient flow)", None)
            rows.append(dict(run=tag, **extra, status=res.status))
            task.advance()
            return
        _run_summary(tag, res.loss, res.metrics, summary, rows, dict(extra, status=res.status))
        if tag == f"gf_balanced_depth{max(config.depths)}":  # the notes' figure: GF, balanced
            for level, name in ((1e-2, "1e-2"), (1e-3, "1e-3"), (1e-4, "1e-4")):
                summary[f"abs_w11_at_loss_{name}"] = rows[-1][f"abs_w11_at_loss_{level:.0e}"]
        if res.status != "converged":
            notes.append(f"{tag}: gradient flow ended with status {res.status!r}")
        task.advance()

    for depth in config.depths:
        key = jax.random.PRNGKey(depth)
        k_flow, k_bal, k_rand = jax.random.split(key, 3)
        f0 = with_det_sign(k_flow, _balanced(depth, config.balanced_scale), +1)
        flow(f"gf_balanced_depth{depth}", f0, problem, dict(method="gradient flow",
                                                            init="balanced", depth=depth, seed=0))
        for init, k in zip(INITS, (k_bal, k_rand), strict=True):
            init_fn = (_balanced(depth, config.balanced_scale) if init == "balanced"
                       else _random(depth, config.random_scale))
            keys = jax.random.split(k, config.seeds)
            factors = _stack([with_det_sign(kk, init_fn, +1) for kk in keys])
            res = train_replicas(factors, problem, lr=config.lr, steps=config.max_steps,
                                 schedule=Schedule.log(config.records), stop_loss=config.stop_loss,
                                 metrics=_METRICS,
                                 progress=step_bar(progress, f"GD {init}, depth {depth}",
                                                   config.max_steps))
            for s in range(config.seeds):
                tag = f"gd_{init}_depth{depth}_seed{s}"
                n_rec = int(np.sum(res.steps[s] <= res.stop_step[s]))
                loss = np.asarray(res.loss[s][:n_rec])
                mets = {name: np.asarray(v[s][:n_rec]) for name, v in res.metrics.items()}
                arrays[f"steps_{tag}"] = np.asarray(res.steps[s][:n_rec])
                arrays[f"loss_{tag}"] = loss
                for name, vals in mets.items():
                    arrays[f"{name}_{tag}"] = vals
                status = str(res.status[s])
                extra = dict(method="GD", init=init, depth=depth, seed=s, status=status,
                             steps=int(res.stop_step[s]))
                if status == "diverged":  # its records up to the blow-up are kept, not summarized
                    out.diverged(f"{tag} (GD, lr {config.lr})", int(res.diverged_step[s]))
                    rows.append(dict(run=tag, **extra))
                    continue
                _run_summary(tag, loss, mets, summary, rows, extra)
                if rows[-1]["sign_flips"]:
                    notes.append(f"{tag}: det(W) changed sign {rows[-1]['sign_flips']} time(s) "
                                 f"under GD (lr {config.lr}); final det {rows[-1]['det']:.3g}, "
                                 f"|W11| {rows[-1]['abs_w11']:.3g}")
            task.advance()
        summary[f"sign_flips_gd_depth{depth}"] = int(sum(
            r.get("sign_flips", 0) for r in rows if r.get("depth") == depth and r["method"] == "GD"
        ))
    if config.dxd:
        d = config.dxd
        depth = max(config.depths)
        f0 = with_det_sign(jax.random.PRNGKey(100 + d),
                           lambda k: balanced_init(k, (d,) * (depth + 1), config.balanced_scale), +1)
        flow(f"gf_dxd{d}_depth{depth}", f0, completion_dxd(d),
             dict(method="gradient flow", init="balanced", depth=depth, seed=0, d=d))
    # Depth >= 3: det decays polynomially and stays representable; depth 2: det decays like
    # exp(-ct) and falls below float64 resolution (|det| ~ 1e-16 ||W||^2), where rounding flips it.
    deep_gf = [r for r in rows if r["method"] == "gradient flow" and r["depth"] >= 3
               and "sign_flips" in r]
    if deep_gf:
        ratio = np.array([r["w11_times_sqrt_2loss"] for r in deep_gf])
        summary["gf_depth3plus_max_abs_log_w11_sqrt_2loss"] = float(np.max(np.abs(np.log(ratio))))
        summary["gf_depth3plus_sign_flips"] = int(sum(r["sign_flips"] for r in deep_gf))
    for r in rows:
        if r["method"] == "gradient flow" and r.get("sign_flips"):
            notes.append(f"{r['run']}: det changed sign under gradient flow at |det| = "
                         f"{r['abs_det_at_first_flip']:.1e} (float64 resolution: depth-2 det decays "
                         "exponentially, so rounding, not the flow, flips it)")
    out.tables, out.arrays, out.summary, out.notes = {"runs": rows}, arrays, summary, notes
    return out


def plot(results: Results, out_dir: Path) -> list[Path]:
    """|W_11| and the norms vs loss (log-log, loss decreasing to the right), colored by iteration."""
    plt = pyplot()
    from matplotlib.colors import LogNorm

    rows = results.tables["runs"]
    depths = [int(d) for d in results.arrays["depths"]]
    paths: list[Path] = []
    # Figure 1: |W11| vs loss, one panel per depth: GF line, GD scatter colored by iteration.
    fig, axes = plt.subplots(1, len(depths), figsize=(3.8 * len(depths), 3.4), squeeze=False)
    sc = None
    for ax, depth in zip(axes[0], depths, strict=True):
        for r in rows:
            if r.get("depth") != depth or "d" in r:
                continue
            tag = r["run"]
            loss = results.arrays[f"loss_{tag}"]
            w11 = results.arrays[f"abs_w11_{tag}"]
            if r["method"] == "gradient flow":
                ax.plot(loss, w11, color="k", lw=1.5, label="gradient flow (balanced)", zorder=1)
            else:
                steps = np.maximum(results.arrays[f"steps_{tag}"], 1)
                marker = "o" if r["init"] == "balanced" else "^"
                sc = ax.scatter(loss, w11, c=steps, s=6, marker=marker, cmap="viridis",
                                norm=LogNorm(vmin=1, vmax=max(2, steps.max())),
                                label=f"GD {r['init']}" if r["seed"] == 0 else None)
        grid = np.geomspace(1e-5, 1.0, 50)
        ax.plot(grid, 1 / np.sqrt(2 * grid), "r--", lw=1, label="$1/\\sqrt{2\\ell}$")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(3.0, 1e-5)  # loss decreasing to the right (depth-2 flows go on to ~1e-17)
        ax.set_xlabel("loss $\\ell$")
        ax.set_ylabel("$|W_{11}|$ (unobserved entry)")
        flips = results.summary.get(f"sign_flips_gd_depth{depth}", 0)
        ax.set_title(f"depth {depth}: GD det sign flips {flips}")
        ax.set_ylim(1e-4, 1e3)
        ax.legend(fontsize=7, loc="upper left")
    if sc is not None:
        fig.colorbar(sc, ax=axes[0].tolist(), label="GD iteration")
    paths += save(fig, out_dir, f"{NAME}_w11")

    # Figure 2: every tracked norm and the effective rank vs loss, gradient-flow runs.
    names = [("abs_w11", "$|W_{11}|$"), ("frobenius", "Frobenius"), ("nuclear", "nuclear"),
             ("spectral", "spectral"), ("effective_rank", "effective rank"),
             ("distance_to_rank1", "distance to rank 1")]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    gf_rows = [r for r in rows if r["method"] == "gradient flow"]
    styles = ("-", "--", ":", "-.")
    for c, r in enumerate(gf_rows):
        tag = r["run"]
        loss = results.arrays[f"loss_{tag}"]
        label = tag.replace("gf_", "").replace("_", " ")
        for (name, _), ls in zip(names[:4], styles, strict=True):
            axes[0].plot(loss, results.arrays[f"{name}_{tag}"], ls=ls, color=f"C{c}")
        axes[0].plot([], [], color=f"C{c}", label=label)
        axes[1].plot(loss, results.arrays[f"effective_rank_{tag}"], color=f"C{c}", label=label)
        axes[1].plot(loss, results.arrays[f"distance_to_rank1_{tag}"], ls="--", color=f"C{c}")
    for (_, lab), ls in zip(names[:4], styles, strict=True):
        axes[0].plot([], [], color="gray", ls=ls, label=lab)
    axes[1].plot([], [], color="gray", label="effective rank")
    axes[1].plot([], [], color="gray", ls="--", label="distance to rank 1")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlim(3.0, 1e-5)
        ax.set_xlabel("loss $\\ell$")
    axes[0].set_yscale("log")
    axes[1].set_yscale("log")
    axes[0].set_ylabel("norm of $W_{1:N}$")
    axes[1].set_ylabel("effective rank / distance")
    axes[0].set_title("gradient flow: every norm grows")
    axes[1].set_title("...while the rank goes to 1")
    axes[0].legend(fontsize=6)
    axes[1].legend(fontsize=6)
    fig.tight_layout()
    paths += save(fig, out_dir, f"{NAME}_all")
    return paths


EXPERIMENT = register(
    Experiment(
        name=NAME,
        description="2x2 completion [[*,1],[1,0]]: |W11| -> inf as the loss -> 0, no det flip "
        "under gradient flow (§2.13, §E5)",
        config_model=NormsConfig,
        run=run,
        plot=plot,
        quick={"depths": [3], "seeds": 2, "max_steps": 30_000, "stop_loss": 1e-2,
               "records": 60, "flow_t1": 300.0, "flow_rtol": 1e-8, "flow_atol": 1e-11, "dxd": 3},
        paper={"seeds": 3, "max_steps": 5_000_000, "stop_loss": 1e-4, "records": 1000,
               "flow_t1": 20000.0},
        reported={"abs_w11_at_loss_1e-2": 7.0, "abs_w11_at_loss_1e-3": 20.0,
                  "abs_w11_at_loss_1e-4": 70.0},
    )
)

