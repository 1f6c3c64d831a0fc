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
    Seed,
    Size,
    Steps,
    Tolerance,
)
from deeplinear.curves import value_at_first_reach
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
from deeplinear.metrics import (
    distance_to_rank,
    effective_rank,
    frobenius_norm,
    nuclear_norm,
    spectral_norm,
)
from deeplinear.network import balanced_init, gaussian_init, with_det_sign
from deeplinear.problems import completion_2x2, completion_dxd
from deeplinear.train import Schedule, Status, gradient_flow, train_replicas

__all__ = ["NormsConfig", "count_sign_flips", "plot", "run"]

NAME = "norms"
INITS = ("balanced", "random")


class NormsConfig(ConfigModel):
    """Configuration of the norms experiment; unknown fields are errors.

    Ranges come from the shared types of :mod:`deeplinear.config` (finite numbers, strict ints)."""

    depths: NonEmptyList[Annotated[Depth, Field(ge=2)]] = Field(
        [2, 3, 4], description="depths N >= 2 of the factorizations")
    seed: Seed = Field(0, description="base seed (inits of every run)")
    seeds: Replicas = Field(3, description="GD replicas per (depth, init), vmapped")
    random_scale: PositiveFloat = Field(8e-3, description="std of each factor's entries (repo init)")
    balanced_scale: PositiveFloat = Field(
        1e-2, description="std of the balanced init's product entries")
    lr: PositiveFloat = Field(3e-3, description="GD learning rate (repo: 3e-3)")
    max_steps: Steps = Field(300_000, description="GD iteration cap")
    stop_loss: PositiveFloat = Field(1e-3, description="stop when the loss is below this (repo: 1e-4)")
    records: Annotated[Size, Field(ge=10)] = Field(400, description="log-spaced record points per run")
    flow_t1: PositiveFloat = Field(
        5000.0, description="gradient-flow horizon (time units = lr x steps)")
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
        row[summary_keys.ABS_W11_AT_LOSS.format(level=f"{level:.0e}")] = value_at_first_reach(
            loss, metrics["abs_w11"], level)
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
        if res.status == Status.DIVERGED:  # nothing is derived from a diverged solve
            out.diverged(f"{tag} (gradient flow)", None)
            rows.append(dict(run=tag, **extra, status=res.status))
            task.advance()
            return
        _run_summary(tag, res.loss, res.metrics, summary, rows, dict(extra, status=res.status))
        if tag == f"gf_balanced_depth{max(config.depths)}":  # the notes' figure: GF, balanced
            for level, name in ((1e-2, "1e-2"), (1e-3, "1e-3"), (1e-4, "1e-4")):
                summary[summary_keys.ABS_W11_AT_LOSS.format(level=name)] = rows[-1][
                    summary_keys.ABS_W11_AT_LOSS.format(level=f"{level:.0e}")]
        if res.status != Status.CONVERGED:
            notes.append(f"{tag}: gradient flow ended with status {res.status!r}")
        task.advance()

    for depth in config.depths:
        key = jax.random.fold_in(jax.random.PRNGKey(config.seed), depth)
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
                if status == Status.DIVERGED:  # its records up to the blow-up are kept, not summarized
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
        f0 = with_det_sign(jax.random.fold_in(jax.random.PRNGKey(config.seed), 100 + d),
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
        summary[summary_keys.GF_DEPTH3PLUS_SIGN_FLIPS] = int(sum(r["sign_flips"] for r in deep_gf))
    for r in rows:
        if r["method"] == "gradient flow" and r.get("sign_flips"):
            notes.append(f"{r['run']}: det changed sign under gradient flow at |det| = "
                         f"{r['abs_det_at_first_flip']:.1e} (float64 resolution: depth-2 det decays "
                         "exponentially, so rounding, not the flow, flips it)")
    out.tables, out.arrays, out.summary, out.notes = {"runs": rows}, arrays, summary, notes
    out.headline = _headline(config, summary)
    return out


def _headline(config: NormsConfig, summary: dict) -> list[Headline]:
    """|W_11| at the notes' loss levels (gradient flow, balanced, deepest depth) and the number of
    det sign changes along gradient flow at depth >= 3 (theory: none)."""
    depth = max(config.depths)
    on = (f"the 2x2 completion [[*, 1], [1, 0]], gradient flow from a balanced init (det > 0), "
          f"depth {depth}, up to t = {config.flow_t1:g}")
    out = []
    for level, name in ((1e-2, "1e-2"), (1e-3, "1e-3"), (1e-4, "1e-4")):
        key = summary_keys.ABS_W11_AT_LOSS.format(level=name)
        value = summary.get(key)
        reason = None
        if value is None:
            reason = (f"the gradient flow at depth {depth} diverged"
                      if f"final_loss_gf_balanced_depth{depth}" not in summary
                      else f"the loss does not reach {name} by t = {config.flow_t1:g} "
                           "(raise flow_t1)")
        out.append(Headline(key, value, f"|W_11| when the loss first reaches {name} (theory: "
                            f"1/sqrt(2 loss) = {1 / np.sqrt(2 * level):.3g})", on, reason))
    flips = summary.get(summary_keys.GF_DEPTH3PLUS_SIGN_FLIPS)
    out.append(Headline(summary_keys.GF_DEPTH3PLUS_SIGN_FLIPS, flips, "det(W) sign changes along gradient "
                        "flow at depth >= 3 (theory: 0, the sign is preserved)",
                        "the 2x2 completion, gradient flow, every depth >= 3 of this run",
                        None if flips is not None or any(d >= 3 for d in config.depths)
                        else "this run has no depth >= 3"))
    return out


_NORMS = (  # (array name, label, colour, marker, line style): each norm differs in all three
    ("abs_w11", "$|W_{11}|$ (unobserved entry)", "C0", "o", "-"),
    ("frobenius", "Frobenius", "C1", "s", "--"),
    ("nuclear", "nuclear", "C2", "^", "-."),
    ("spectral", "spectral", "C3", "D", ":"),
)
_GD_MARKERS = {"balanced": "o", "random": "^"}
_RUN_STYLES = ("-", "--", "-.", ":")


def _missing(v: object) -> bool:
    """A table cell that holds no value (absent, None, empty, NaN)."""
    return v is None or v == "" or (isinstance(v, float) and not np.isfinite(v))


def _curve(results: Results, tag: str, name: str, *extra: str, positive: bool = True):
    """``loss``, ``values`` (and the ``extra`` arrays) of run ``tag``, at the records where all
    are finite (and the loss and, if ``positive``, the values > 0: log axes). Empty if absent."""
    keys = [f"loss_{tag}", f"{name}_{tag}", *(f"{e}_{tag}" for e in extra)]
    if any(k not in results.arrays for k in keys):
        return tuple(np.zeros(0) for _ in keys)
    arrs = [np.asarray(results.arrays[k], dtype=float).reshape(-1) for k in keys]
    n = min(a.size for a in arrs)
    arrs = [a[:n] for a in arrs]
    keep = np.all([np.isfinite(a) for a in arrs], axis=0) & (arrs[0] > 0)
    if positive:
        keep &= arrs[1] > 0
    return tuple(a[keep] for a in arrs)


def _log_range(values: list[np.ndarray], pad: float = 1.6) -> tuple[float, float] | None:
    """(low, high) limits of a log axis around every finite positive value, or None."""
    v = np.concatenate([np.asarray(a, dtype=float).reshape(-1) for a in values] or [np.zeros(0)])
    v = v[np.isfinite(v) & (v > 0)]
    return (float(v.min()) / pad, float(v.max()) * pad) if v.size else None


def _loss_axis(ax, lim: tuple[float, float] | None) -> None:
    """Log loss axis, decreasing to the right, limited to the losses actually plotted."""
    ax.set_xscale("log")
    if lim is not None:
        ax.set_xlim(lim[1], lim[0])
    ax.set_xlabel("loss $\\ell$ (decreasing $\\rightarrow$)")


def _flip_note(r: dict) -> str:
    """A gradient-flow run's det sign change (float64 rounding at depth 2), told in a title."""
    flips = r.get("sign_flips")
    if _missing(flips) or not flips:
        return ""
    at = r.get("abs_det_at_first_flip")
    return "\nflow det flipped by rounding" + ("" if _missing(at) else f" (|det| {float(at):.0e})")


def _run_label(r: dict) -> str:
    d = r.get("d")
    size = "2$\\times$2" if _missing(d) else f"{int(d)}$\\times${int(d)}"
    return f"{size} completion, depth {r.get('depth')}"


def _plot_w11(plt, results: Results, rows: list[dict], depths: list[int]):
    """|W11| vs loss, one panel per depth: GF line, GD scatter coloured by iteration."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import LogNorm
    from matplotlib.lines import Line2D

    fig, axes = plt.subplots(1, len(depths), figsize=(3.2 * len(depths) + 1.4, 3.9), sharey=True,
                             squeeze=False, layout="constrained")
    pair = [r for r in rows if _missing(r.get("d")) and f"loss_{r.get('run')}" in results.arrays]
    gd = [r for r in pair if r.get("method") == "GD" and r.get("status") != Status.DIVERGED]
    max_step = max([float(np.nanmax(results.arrays[f"steps_{r['run']}"], initial=1.0))
                    for r in gd if f"steps_{r['run']}" in results.arrays] or [2.0])
    cnorm = LogNorm(vmin=1, vmax=max(2.0, max_step))
    cmap = "viridis"
    values, inits = [], set()
    for ax, depth in zip(axes[0], depths, strict=True):
        here = [r for r in pair if r.get("depth") == depth]
        losses = []
        for r in here:
            if r.get("status") == Status.DIVERGED:  # counted in the title, not drawn
                continue
            if r.get("method") == "gradient flow":
                loss, w11 = _curve(results, r["run"], "abs_w11")
                ax.plot(loss, w11, color="k", lw=1.5, zorder=2)
            elif r in gd:
                loss, w11, steps = _curve(results, r["run"], "abs_w11", "steps")
                inits.add(r.get("init"))
                ax.scatter(loss, w11, c=np.maximum(steps, 1), s=9, cmap=cmap, norm=cnorm,
                           marker=_GD_MARKERS.get(r.get("init"), "s"), alpha=0.8, lw=0, zorder=3)
            else:
                continue
            losses.append(loss)
            values.append(w11)
        flips = results.summary.get(f"sign_flips_gd_depth{depth}")
        lost = sum(1 for r in here if r.get("status") == Status.DIVERGED)
        ax.set_title(f"depth {depth}: GD det sign flips: {'n/a' if flips is None else flips}"
                     + "".join(_flip_note(r) for r in here if r.get("method") == "gradient flow")
                     + (f"\n({lost} diverged run(s) not shown)" if lost else ""))
        xlim = _log_range(losses, pad=1.3)  # this panel's losses: depth 2 flows go far lower
        if xlim is not None and xlim[0] < 0.5:  # the asymptote 1/sqrt(2 l), where 2 l < 1
            grid = np.geomspace(xlim[0], min(xlim[1], 0.5), 100)
            ax.plot(grid, 1 / np.sqrt(2 * grid), "r--", lw=1, zorder=1)
        _loss_axis(ax, xlim)
        ax.set_yscale("log")
    if (ylim := _log_range(values, pad=2.0)) is not None:
        axes[0, 0].set_ylim(*ylim)
    axes[0, 0].set_ylabel("$|W_{11}|$ (unobserved entry)")
    handles = [Line2D([], [], color="k", lw=1.5, label="gradient flow (balanced init)")]
    for init, marker in _GD_MARKERS.items():
        if init in inits:
            handles.append(Line2D([], [], ls="none", marker=marker, color="0.45", ms=5,
                                  label=f"GD, {init} init (colour: iteration)"))
    handles.append(Line2D([], [], color="r", ls="--", lw=1, label="$1/\\sqrt{2\\ell}$"))
    fig.legend(handles=handles, loc="outside upper center", frameon=False,
               ncol=len(handles) if len(depths) > 1 else 2)
    if gd:
        fig.colorbar(ScalarMappable(norm=cnorm, cmap=cmap), ax=axes[0].tolist(),
                     label="GD iteration", pad=0.01)
    return fig


def _plot_all(plt, results: Results, rows: list[dict]):
    """Gradient-flow runs, one column each: every norm, the effective rank (linear) and the
    distance to rank 1 (log) vs loss; each column's loss axis spans that run's losses."""
    gf = [r for r in rows if r.get("method") == "gradient flow" and r.get("status") != Status.DIVERGED
          and f"loss_{r.get('run')}" in results.arrays]
    n = max(len(gf), 1)
    fig, axes = plt.subplots(3, n, figsize=(max(3.4 * n, 7.0), 7.6), squeeze=False,
                             sharey="row", layout="constrained")
    norm_vals, ranks, dists = [], [], []
    for j, r in enumerate(gf):
        tag = r["run"]
        top, mid, bottom = axes[:, j]
        losses = []
        for k, (name, label, color, marker, ls) in enumerate(_NORMS):
            loss, vals = _curve(results, tag, name)
            top.plot(loss, vals, color=color, ls=ls, marker=marker, ms=4, lw=1.4,
                     markevery=(0.025 * k, 0.1), label=label)
            losses.append(loss)
            norm_vals.append(vals)
        loss, rank = _curve(results, tag, "effective_rank", positive=False)
        mid.plot(loss, rank, color="k", lw=1.5)
        mid.axhline(1.0, color="0.5", lw=0.8, ls=":")
        losses.append(loss)
        ranks.append(rank)
        loss, dist = _curve(results, tag, "distance_to_rank1")
        bottom.plot(loss, dist, color="C4", lw=1.5)
        losses.append(loss)
        dists.append(dist)
        top.set_title(f"gradient flow, {_run_label(r)}{_flip_note(r)}")
        xlim = _log_range(losses, pad=1.3)
        for ax in (top, mid):
            _loss_axis(ax, xlim)
            ax.set_xlabel("")
        _loss_axis(bottom, xlim)
    if not gf:
        axes[0, 0].text(0.5, 0.5, "no gradient-flow run to show", ha="center", va="center",
                        transform=axes[0, 0].transAxes)
    axes[0, 0].set_yscale("log")
    if (ylim := _log_range(norm_vals, pad=1.6)) is not None:
        axes[0, 0].set_ylim(*ylim)
    axes[0, 0].set_ylabel("norm of $W_{1:N}$")
    if gf:
        axes[0, 0].legend(loc="lower right", fontsize=7)
    r = np.concatenate(ranks or [np.zeros(0)])
    if r.size:  # linear, around [1, 2] (2x2) or up to d (d x d)
        lo, hi = min(0.95, float(r.min())), max(2.05, float(r.max()))
        axes[1, 0].set_ylim(lo - 0.03 * (hi - lo), hi + 0.03 * (hi - lo))
    axes[1, 0].set_ylabel("effective rank\n(rank 1: dotted)")
    axes[2, 0].set_yscale("log")
    if (ylim := _log_range(dists, pad=2.0)) is not None:
        axes[2, 0].set_ylim(*ylim)
    axes[2, 0].set_ylabel("distance to the\nnearest rank-1 matrix")
    return fig


def plot(results: Results, out_dir: Path) -> list[Path]:
    """``norms_w11``: |W_11| vs loss per depth (gradient flow line, GD points coloured by
    iteration); ``norms_all``: the gradient-flow runs' norms, effective rank and distance to
    rank 1 vs loss. Loss axes decrease to the right and span the losses actually plotted; missing
    values (NaN, diverged runs) are left out."""
    plt = pyplot()
    rows = list(results.tables.get("runs", []))
    depths = [int(d) for d in np.asarray(results.arrays.get("depths", []))]
    if not depths:
        depths = sorted({int(r["depth"]) for r in rows if not _missing(r.get("depth"))}) or [2]
    paths = save(_plot_w11(plt, results, rows, depths), out_dir, f"{NAME}_w11")
    paths += save(_plot_all(plt, results, rows), out_dir, f"{NAME}_all")
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
        question="On the 2x2 completion, does gradient flow drive the unobserved entry |W_11| (and "
        "with it every norm) to infinity as the loss goes to 0, while keeping the sign of det W?",
        reported={
            summary_keys.ABS_W11_AT_LOSS.format(level=name): Reported(
                value, "§E5, blog Figure 1 read off the figure (depth probably 3, GD lr 3e-3); "
                "band: within a factor 1.25", 1.25)
            for name, value in (("1e-2", 7.0), ("1e-3", 20.0), ("1e-4", 70.0))
        },
    )
)

