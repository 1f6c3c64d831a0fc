"""Minimum nuclear norm at matched constraint violation: native ADMM vs cvxpy/SCS.

Both solvers run side by side in one process on the same instances (§E3 ground truth, entries
sampled uniformly): 100x100 rank 5 with 2,000 observed entries, the exact problem (tol = 0) and
§E3's tolerance-constrained one (|X_ij - y| <= 1e-3), then one 500x500 rank-5 instance with 10%
observed. SCS runs first (``use_indirect=False`` as in the roosephu repo; eps 1e-4 is SCS's
default, 1e-6 the library's); its final constraint violation ``v`` is measured, and the native
solver is then asked for ``feas_tol = v`` (it runs until its own violation is ``<= v`` and its
residuals are below the default rtol), so both answers are equally feasible. ADMM is timed with
the partial SVT (default) and with an exact eigendecomposition every iteration (``svd="full"``),
after a compiling call (compile time reported separately). The gap column is the nuclear norm's
relative excess over a tight reference (native, rtol 1e-10, exact SVT).

Times are CPU seconds of the process (``time.process_time``; for SCS that includes cvxpy's
canonicalization, as a user pays it), one thread each: BLAS threads are pinned to 1 before numpy
loads (both solvers use the same LAPACK) and XLA's products run single-threaded. On the shared
2-core machine the wall clock measured the other jobs (a process got ~20% of a core, and programs
of many small kernels lost most); wall times are printed too.

Run: ``.venv/bin/python benchmarks/bench_nuclear.py`` (writes its section of BENCHMARKS.md);
``--quick``: one 30x30 instance, printed only (the test suite runs it).
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
from _common import cpu_name, write_section  # noqa: E402

import deeplinear  # noqa: E402
from deeplinear.baselines import min_nuclear_norm_completion  # noqa: E402
from deeplinear.problems import low_rank_ground_truth, sample_completion  # noqa: E402


def _instance(seed: int, n: int, rank: int, m: int):
    with deeplinear.float64():
        k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
        W = low_rank_ground_truth(k1, (n, n), rank)
        p = sample_completion(k2, W, m)
        return np.asarray(p.rows), np.asarray(p.cols), np.asarray(p.values), np.asarray(W)


def _solve(inst, n, **kw):
    """(CPU seconds of this process, solution); the wall time is in ``sol.seconds``."""
    r, c, y, _ = inst
    t0 = time.process_time()
    sol = min_nuclear_norm_completion(r, c, y, (n, n), **kw)
    return time.process_time() - t0, sol


def _matched_rows(n, rank, m, seeds, cases, repeats):
    """One row per (tol, SCS eps, seed): best-of-``repeats`` times, the contenders alternating."""
    out = []
    for tol, eps in cases:
        for seed in seeds:
            inst = _instance(seed, n, rank, m)
            ref = _solve(inst, n, tol=tol, rtol=1e-10, svd="full")[1]
            t_scs, scs = _solve(inst, n, tol=tol, solver="cvxpy", scs_eps=eps)
            feas = max(scs.max_violation, 1e-12)
            kw = dict(tol=tol, feas_tol=feas)
            t_compile = _solve(inst, n, **kw)[0]
            best = {"scs": t_scs, "auto": np.inf, "full": np.inf}
            sols = {"scs": scs}
            for rep in range(repeats):
                if rep:  # SCS's first solve above is its first repeat
                    t, sols["scs"] = _solve(inst, n, tol=tol, solver="cvxpy", scs_eps=eps)
                    best["scs"] = min(best["scs"], t)
                for name in ("auto", "full"):
                    t, sols[name] = _solve(inst, n, svd=name, **kw)
                    best[name] = min(best[name], t)
            if "full" not in sols:  # repeats == 0
                sols["full"] = sols["auto"]
            gap = {k: s.nuclear_norm / ref.nuclear_norm - 1 for k, s in sols.items()}
            row = dict(tol=tol, eps=eps, seed=seed, best=best, compile=t_compile - best["auto"],
                       sols=sols, gap=gap)
            out.append(row)
            print(f"n={n} tol={tol:g} eps={eps:g} seed={seed} (CPU s; wall SCS "
                  f"{sols['scs'].seconds:.2f}, ADMM {sols['auto'].seconds:.3f}): SCS {best['scs']:.3f}s "
                  f"viol {scs.max_violation:.1e}; ADMM {best['auto']:.3f}s viol "
                  f"{sols['auto'].max_violation:.1e} ({best['scs'] / best['auto']:.1f}x); "
                  f"ADMM exact SVT {best['full']:.3f}s", flush=True)
    return out


def _large(n, rank, m, with_scs: bool):
    """One large instance: native (partial and exact SVT), then SCS if asked, each once after a
    compiling call for ADMM; peak RSS of this process after each."""
    inst = _instance(0, n, rank, m)
    res = {}
    _solve(inst, n)  # compile
    res["auto"] = _solve(inst, n)
    res["full"] = _solve(inst, n, svd="full")
    feas = max(res["auto"][1].max_violation, 1e-12)
    res["auto_matched"] = None
    if with_scs:
        res["scs"] = _solve(inst, n, solver="cvxpy", scs_eps=1e-4)
        feas = max(res["scs"][1].max_violation, 1e-12)
        res["auto_matched"] = _solve(inst, n, feas_tol=feas)
    W = inst[3]
    for k, v in res.items():
        if v is not None:
            print(f"n={n} {k}: {v[0]:.2f}s viol {v[1].max_violation:.1e} iters {v[1].iterations} "
                  f"nuc {v[1].nuclear_norm:.8g} mse {np.mean((v[1].X - W) ** 2):.1e}", flush=True)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return res, W, rss


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small instances, print only")
    ap.add_argument("--no-scs-large", action="store_true", help="skip SCS on the large instance")
    args = ap.parse_args(argv)
    if args.quick:
        n, rank, m, seeds, repeats = 30, 2, 300, (0,), 1
        cases = ((0.0, 1e-4),)
        large = None
    else:
        n, rank, m, seeds, repeats = 100, 5, 2000, (0, 1), 3
        cases = ((0.0, 1e-4), (0.0, 1e-6), (1e-3, 1e-4))
        large = (500, 5, 25_000)
    t_start = time.perf_counter()
    rows = _matched_rows(n, rank, m, seeds, cases, repeats)
    if args.quick:
        return
    big, W, rss = _large(*large, with_scs=not args.no_scs_large)
    lines = [
        "## Minimum nuclear norm at matched constraint violation (benchmarks/bench_nuclear.py)\n\n",
        f"Date: {dt.date.today().isoformat()}. Machine: {platform.machine()}, {cpu_name()}, shared "
        f"with other jobs (load average {os.getloadavg()[0]:.1f} at the end). JAX {jax.__version__}, "
        f"NumPy {np.__version__}, Python {sys.version.split()[0]}, float64, BLAS threads 1.\n",
        "Command: `.venv/bin/python benchmarks/bench_nuclear.py` (CPU seconds, one thread each; "
        f"best of {repeats}, the solvers alternating; ADMM after a compiling call; "
        f"{time.perf_counter() - t_start:.0f} s wall in all). Each row: SCS first; its final "
        "violation is then the native solver's `feas_tol`, so both answers are equally "
        "feasible. Gap: relative excess of the nuclear norm over a tight reference "
        "(native, rtol 1e-10).\n\n",
        f"### {n}x{n}, rank {rank}, m = {m:,}\n\n",
        "| tol | SCS eps | seed | cvxpy/SCS CPU s | SCS violation | ADMM CPU s | ADMM violation "
        "| speed-up | ADMM exact-SVT CPU s | partial-SVT gain | SCS gap | ADMM gap | SCS iters "
        "| ADMM iters | ADMM compile CPU s |\n",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    ]
    for r in rows:
        b, s = r["best"], r["sols"]
        lines.append(
            f"| {r['tol']:g} | {r['eps']:g} | {r['seed']} | {b['scs']:.2f} "
            f"| {s['scs'].max_violation:.1e} | {b['auto']:.3f} | {s['auto'].max_violation:.1e} "
            f"| **{b['scs'] / b['auto']:.1f}x** | {b['full']:.3f} | {b['full'] / b['auto']:.1f}x "
            f"| {r['gap']['scs']:.1e} | {r['gap']['auto']:.1e} | {s['scs'].iterations} "
            f"| {s['auto'].iterations} | {r['compile']:.1f} |\n")
    ln, lr, lm = large
    lines += [
        f"\n### {ln}x{ln}, rank {lr}, m = {lm:,} ({lm / ln**2:.0%} observed)\n\n",
        "| solver | CPU s | wall s | violation | iterations | nuclear norm | mean (X - W*)^2 |\n",
        "|---|---|---|---|---|---|---|\n",
    ]
    names = {"auto": "ADMM (default rtol 1e-5)", "full": "ADMM exact SVT (rtol 1e-5)",
             "scs": "cvxpy/SCS (eps 1e-4)", "auto_matched": "ADMM, feas_tol = SCS's violation"}
    for k in ("scs", "auto_matched", "auto", "full"):
        if big.get(k) is None:
            continue
        t, sol = big[k]
        lines.append(f"| {names[k]} | {t:.2f} | {sol.seconds:.2f} | {sol.max_violation:.1e} "
                     f"| {sol.iterations} "
                     f"| {sol.nuclear_norm:.8g} | {np.mean((sol.X - W) ** 2):.1e} |\n")
    lines.append(f"\nPeak RSS of the benchmark process: {rss:,.0f} MiB.\n")
    write_section("bench_nuclear", "".join(lines))


if __name__ == "__main__":
    main()
