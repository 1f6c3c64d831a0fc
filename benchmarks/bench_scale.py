"""Completion at scale: time per gradient step and peak memory vs n, dense vs sparse, float64 vs
float32, hidden width n and 128 (depth 3, rank 10, 10% observed).

Every configuration runs in its own subprocess (``--one``), so that its peak resident set size
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``: XLA's buffers live outside Python's allocator, so
tracemalloc would not see them) belongs to that configuration alone. Configurations are run in
rounds that alternate them; the time per step is the best over rounds of ``(t(2S) - t(S)) / S``
for ``train`` calls of ``S`` and ``2S`` steps that record only at their start and end (the
records cancel), with ``t`` the CPU time of the subprocess (``time.process_time``) and XLA's
matrix products single-threaded (``--xla_cpu_multi_thread_eigen=false``): on the shared 2-core
machine the wall clock measured the other jobs (a process got ~20% of a core), CPU time of one
thread does not. Wall-clock per step is kept in the JSON output. Observations: ``m`` distinct
entries drawn uniformly, values ``(U V^T)_ij / sqrt(r)`` computed from the factors (no dense
ground truth is formed, so n = 10,000 fits). float32 runs set ``jax_enable_x64`` off in their
subprocess (the library follows the dtype of its inputs; float64 runs turn it on).

Then the two runs the issue asks for: n = 2,000, 10% observed, depth 3, widths n and 128, trained
to a small error on all entries (``mean (W - W*)^2 / mean W*^2``); and n = 10,000, 1% observed,
width 128, float32, enough steps to show the loss decreasing.

Run: ``.venv/bin/python benchmarks/bench_scale.py`` (writes its section of BENCHMARKS.md and
benchmarks/scaling.png); ``--quick``: one n = 100 configuration, printed only (a test runs it).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RANK, FRAC, DEPTH = 10, 0.10, 3


# ---------------------------------------------------------------------------------------------
# one configuration, in a subprocess


def _one(cfg: dict) -> dict:
    import resource

    import jax

    jax.config.update("jax_enable_x64", cfg["dtype"] == "float64")  # a script may
    import jax.numpy as jnp
    import numpy as np

    from deeplinear import network as nw
    from deeplinear import problems as pb
    from deeplinear import train as tr

    n, width, frac = cfg["n"], cfg["width"], cfg.get("frac", FRAC)
    dtype = jnp.dtype(cfg["dtype"])
    m = int(round(frac * n * n))
    k_u, k_v, k_init = jax.random.split(jax.random.PRNGKey(cfg.get("seed", 0)), 3)
    U = jax.random.normal(k_u, (n, RANK), dtype)
    V = jax.random.normal(k_v, (n, RANK), dtype)
    idx = np.random.default_rng(cfg.get("seed", 0)).choice(n * n, m, replace=False)
    rows, cols = idx // n, idx % n
    vals = jnp.einsum("ir,ir->i", U[rows], V[cols]) / np.sqrt(RANK)
    prob = pb.MatrixCompletion(rows, cols, vals, (n, n), "mean", dtype=dtype)
    dims = (n,) + (width,) * (DEPTH - 1) + (n,)
    factors = nw.gaussian_init(k_init, dims, cfg.get("scale", 1e-2), per="product", dtype=dtype)
    lr = 30.0 * (n / 400) ** (2 / 3)  # the flow's time scale grows like n^(2/3) (mean loss)
    sparse = cfg["path"] == "sparse"
    out = {"m": m, "lr": lr}

    def run(s):
        res = tr.train(factors, prob, lr=lr, steps=s, schedule=tr.Schedule.every(s),
                       sparse=sparse)
        return res

    if cfg.get("train_steps"):  # a training run: loss and error on all entries
        steps = cfg["train_steps"]
        t0 = time.perf_counter()
        res = tr.train(factors, prob, lr=lr, steps=steps,
                       schedule=tr.Schedule.every(max(1, steps // 10)), sparse=sparse)
        out["seconds"] = time.perf_counter() - t0
        out["loss"] = [float(v) for v in res.loss]
        out["steps_recorded"] = [int(v) for v in res.steps]
        out["status"] = res.status
        W = np.asarray(res.W, dtype=np.float64)
        U64, V64 = np.asarray(U, np.float64), np.asarray(V, np.float64)
        if cfg.get("error", True):
            Ws = U64 @ V64.T / np.sqrt(RANK)
            out["rel_error"] = float(np.mean((W - Ws) ** 2) / np.mean(Ws**2))
        else:  # no dense ground truth: the same ratio on 200,000 random entries
            pick = np.random.default_rng(1).choice(n * n, 200_000, replace=False)
            sr, sc = pick // n, pick % n
            truth = np.einsum("ir,ir->i", U64[sr], V64[sc]) / np.sqrt(RANK)
            out["rel_error"] = float(np.mean((W[sr, sc] - truth) ** 2) / np.mean(truth**2))
        del W
    else:
        run(2)  # compile (two records: the same program serves every S)
        t0 = time.process_time()
        run(2)
        est = max((time.process_time() - t0) / 2, 1e-6)
        S = int(max(2, min(cfg.get("max_steps", 10_000), cfg.get("budget_s", 1.0) / est)))
        t_s = t_l = w_s = w_l = np.inf
        for _ in range(cfg.get("repeats", 2)):
            c0, t0 = time.process_time(), time.perf_counter()
            run(S)
            c1, t1 = time.process_time(), time.perf_counter()
            run(2 * S)
            c2, t2 = time.process_time(), time.perf_counter()
            t_s, t_l = min(t_s, c1 - c0), min(t_l, c2 - c1)
            w_s, w_l = min(w_s, t1 - t0), min(w_l, t2 - t1)
        out["step_s"] = max(t_l - t_s, 0.0) / S  # CPU time of the process
        out["wall_step_s"] = max(w_l - w_s, 0.0) / S
        out["S"] = S
    out["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def _spawn(cfg: dict, timeout: float) -> dict | None:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--one", json.dumps(cfg)]
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1",
               XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"))
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                           cwd=HERE)
    except subprocess.TimeoutExpired:
        print(f"  timeout: {cfg}", flush=True)
        return None
    if p.returncode != 0:
        tail = p.stderr.strip().splitlines()[-1:] or ["?"]
        print(f"  failed ({p.returncode}): {cfg}: {tail[0]}", flush=True)
        return None
    return json.loads(p.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------
# the grid


def _grid(ns, quick):
    cfgs = []
    for n in ns:
        for width in dict.fromkeys((n, 128)):
            for dtype in ("float64", "float32"):
                for path in ("dense", "sparse"):
                    if n >= 4000 and width == n:
                        continue  # a width-n step takes tens of seconds on 2 cores
                    cfgs.append(dict(n=n, width=width, dtype=dtype, path=path,
                                     budget_s=0.5, repeats=2))
    return cfgs


def _key(c):
    return (c["n"], c["width"], c["dtype"], c["path"])


def _fmt_t(s):
    if s is None:
        return "-"
    return f"{s * 1e6:,.0f} us" if s < 1e-3 else (f"{s * 1e3:,.1f} ms" if s < 1 else f"{s:,.2f} s")


def _plot(results, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(12, 4.8))
    styles = {("dense", "float64"): ("C0", "-"), ("sparse", "float64"): ("C1", "-"),
              ("dense", "float32"): ("C0", "--"), ("sparse", "float32"): ("C1", "--")}
    for wname, marker in (("n", "o"), ("128", "s")):
        for (path_, dtype), (color, ls) in styles.items():
            pts = sorted((k[0], v) for k, v in results.items()
                         if k[2] == dtype and k[3] == path_
                         and (k[1] == k[0] if wname == "n" else k[1] == 128)
                         and (wname == "n" or k[0] != 128) and v)
            if not pts:
                continue
            ns = [p[0] for p in pts]
            label = f"{path_}, {dtype}, width {wname}"
            ax_t.loglog(ns, [p[1]["step_s"] for p in pts], color=color, ls=ls, marker=marker,
                        label=label)
            ax_m.loglog(ns, [p[1]["maxrss_mb"] for p in pts], color=color, ls=ls, marker=marker,
                        label=label)
    ax_t.set(xlabel="n (n x n completion, 10% observed, rank 10, depth 3)",
             ylabel="CPU time per gradient step (s, one thread)", title="Time per step")
    ax_m.set(xlabel="n", ylabel="peak RSS of the process (MiB)", title="Peak memory")
    for ax in (ax_t, ax_m):
        ax.grid(True, which="both", alpha=0.3)
    ax_t.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


RESULTS = HERE / "scale_results.json"  # the measured numbers, merged across --part runs
LARGE = (
    ("2000, width 2000, float32", dict(n=2000, width=2000, dtype="float32", train_steps=600)),
    ("2000, width 2000, float32 (init scale 0.5)",  # the 1e-2 init is still on its plateau
     dict(n=2000, width=2000, dtype="float32", train_steps=100, scale=0.5)),
    ("2000, width 128, float32", dict(n=2000, width=128, dtype="float32", train_steps=300)),
    ("2000, width 128, float64", dict(n=2000, width=128, dtype="float64", train_steps=300)),
    ("10000, 1% observed, width 128, float32",
     dict(n=10_000, width=128, dtype="float32", frac=0.01, train_steps=1500, error=False)),
)


def _load() -> dict:
    return json.loads(RESULTS.read_text()) if RESULTS.exists() else {"grid": [], "large": {}}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one n = 100 run, print only")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--fresh", action="store_true", help="measure the grid again from scratch")
    ap.add_argument("--ns", default="100,300,1000,2000,4000")
    ap.add_argument("--part", choices=("grid", "large", "all", "write"), default="all",
                    help="grid, large runs, both, or only rewrite the section from saved numbers")
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(_one(json.loads(args.one))), flush=True)
        return
    t_start = time.perf_counter()
    ns = tuple(int(v) for v in args.ns.split(","))
    if args.quick:  # one subprocess
        cfgs = [dict(n=100, width=128, dtype="float32", path="sparse", budget_s=0.1, repeats=1)]
    elif args.part in ("grid", "all"):
        cfgs = _grid(ns, False)
    else:
        cfgs = []
    results: dict = {}
    if not args.quick and cfgs and not args.fresh:  # resume: keep what an earlier run measured
        results = {tuple(k): v for k, v in _load().get("grid", [])}
    for rnd in range(1 if args.quick else args.rounds):
        for cfg in cfgs:
            if _key(cfg) in results and (rnd == 0 or results[_key(cfg)] is None):
                continue  # measured (or failed) already
            r = _spawn(cfg, timeout=900)
            old = results.get(_key(cfg))
            if r is None:
                results.setdefault(_key(cfg), None)
            elif old is None or r["step_s"] < old["step_s"]:
                results[_key(cfg)] = r
            if r is not None:
                print(f"round {rnd}: {_key(cfg)}: {_fmt_t(r['step_s'])}/step, "
                      f"{r['maxrss_mb']:,.0f} MiB", flush=True)
            if not args.quick:  # saved after each configuration
                saved = _load()
                saved["grid"] = [[list(k), v] for k, v in results.items()]
                saved["grid_meta"] = dict(ns=list(ns), rounds=args.rounds,
                                          date=dt.date.today().isoformat(),
                                          seconds=time.perf_counter() - t_start,
                                          load=os.getloadavg()[0])
                atomic_json(saved)
    if args.quick:
        return
    if args.part in ("large", "all"):
        t_large = time.perf_counter()
        large = {}
        for name, cfg in LARGE:
            cfg = dict(cfg, path="sparse")
            r = _spawn(cfg, timeout=3000)
            large[name] = [cfg, r]
            print(name, r, flush=True)
        saved = _load()
        saved["large"] = large
        saved["large_meta"] = dict(date=dt.date.today().isoformat(),
                                   seconds=time.perf_counter() - t_large)
        atomic_json(saved)
    saved = _load()
    grid = {tuple(k): v for k, v in saved.get("grid", [])}
    _write(grid, saved.get("large", {}), saved.get("grid_meta", {}), saved.get("large_meta", {}))


def atomic_json(data: dict) -> None:
    from deeplinear.store import atomic_write

    atomic_write(RESULTS, json.dumps(data, indent=1))


def _write(results, large, meta, large_meta) -> None:
    import jax
    import numpy as np
    from _common import cpu_name, write_section

    ns = sorted(meta.get("ns", {k[0] for k in results}))
    png = HERE / "scaling.png"
    if results:
        _plot(results, png)
    lines = [
        "## Completion at scale (benchmarks/bench_scale.py)\n\n",
        f"Date: {dt.date.today().isoformat()}. Machine: {platform.machine()}, {cpu_name()}, "
        f"shared with other jobs (load average {meta.get('load', 0):.1f} at the end of the grid). JAX "
        f"{jax.__version__}, NumPy {np.__version__}, Python {sys.version.split()[0]}; CPU only.\n",
        "Command: `.venv/bin/python benchmarks/bench_scale.py` (one subprocess per "
        f"configuration, {meta.get('rounds', 1)} round(s), best of 2 CPU times per step, one "
        "thread for XLA's products; peak RSS of that subprocess, compilation and the dense "
        f"records included; grid {meta.get('seconds', 0) / 60:.0f} min, large runs "
        f"{large_meta.get('seconds', 0) / 60:.0f} min, run side by side). n x n, "
        f"rank {RANK}, {FRAC:.0%} observed, depth {DEPTH}, `train(..., sparse=True/False)`.\n\n",
        "![time per step and peak memory vs n](benchmarks/scaling.png)\n\n",
        "| n | width | dense f64 | sparse f64 | dense f32 | sparse f32 | dense/sparse f64 "
        "| dense/sparse f32 | f64/f32 dense | f64/f32 sparse | peak RSS (MiB) dense f64 / sparse f64 "
        "/ dense f32 / sparse f32 |\n",
        "|---|---|---|---|---|---|---|---|---|---|---|\n",
    ]

    def t(n, w, dt_, p):
        r = results.get((n, w, dt_, p))
        return r["step_s"] if r else None

    def ratio(a, b):
        return "-" if a is None or b is None or b <= 0 else f"{a / b:.2f}x"

    for n in ns:
        for w in dict.fromkeys((n, 128)):
            c = {(d, p): t(n, w, d, p) for d in ("float64", "float32") for p in ("dense", "sparse")}
            if all(v is None for v in c.values()):
                continue  # not measured (width n at n >= 4,000)
            rss = " / ".join("-" if r is None else f"{r['maxrss_mb']:,.0f}"
                             for r in (results.get((n, w, d, p)) for d in ("float64", "float32")
                                       for p in ("dense", "sparse")))
            lines.append(
                f"| {n:,} | {'n' if w == n else w} | {_fmt_t(c['float64', 'dense'])} "
                f"| {_fmt_t(c['float64', 'sparse'])} | {_fmt_t(c['float32', 'dense'])} "
                f"| {_fmt_t(c['float32', 'sparse'])} "
                f"| {ratio(c['float64', 'dense'], c['float64', 'sparse'])} "
                f"| {ratio(c['float32', 'dense'], c['float32', 'sparse'])} "
                f"| {ratio(c['float64', 'dense'], c['float32', 'dense'])} "
                f"| {ratio(c['float64', 'sparse'], c['float32', 'sparse'])} "
                f"| {rss} |\n")
    if large:
        lines += ["\nLarge runs (sparse path, one subprocess each, XLA products single-threaded; lr = 30 "
                  "(n/400)^(2/3), Gaussian init `per=\"product\"` of the stated scale; wall clock "
                  "on the shared machine):\n\n",
                  "| run | init scale | m | steps | wall s | wall s/step (incl. compile, records) "
                  "| loss first -> last | rel. error on all entries (n = 10,000: on 200,000 random "
                  "entries) | peak RSS (MiB) |\n",
                  "|---|---|---|---|---|---|---|---|---|\n"]
        for name, (cfg, r) in large.items():
            if r is None:
                lines.append(f"| {name} | - | - | - | - | - | failed or timed out | - | - |\n")
                continue
            err = r.get("rel_error")
            lines.append(
                f"| {name} | {cfg.get('scale', 1e-2):g} | {r['m']:,} | {cfg['train_steps']} "
                f"| {r['seconds']:.0f} "
                f"| {r['seconds'] / cfg['train_steps']:.3f} | {r['loss'][0]:.6g} -> "
                f"{r['loss'][-1]:.6g} | {'-' if err is None else f'{err:.1e}'} "
                f"| {r['maxrss_mb']:,.0f} |\n")
    write_section("bench_scale", "".join(lines))


if __name__ == "__main__":
    main()
