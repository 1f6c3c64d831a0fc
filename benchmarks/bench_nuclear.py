"""Minimum nuclear norm at 100x100, rank 5, 2000 observed entries: native ADMM vs cvxpy/SCS.

Both solvers run side by side in one process on the same instances (§E3 ground truth, entries
sampled uniformly), for the exact problem (tol = 0) and §E3's tolerance-constrained one
(|X_ij - y| <= 1e-3). SCS runs with its default accuracy (eps 1e-4, ``use_indirect=False`` as in
the roosephu repo); ADMM with its default rtol. The ADMM time excludes JIT compilation (measured
separately, once per shape). Reported: best of REPEATS wall times, the relative difference of
the nuclear norms, and the constraint violation of each solution.

BLAS threads are pinned to 1 before numpy loads (both solvers use the same LAPACK): on a shared
2-core machine OpenBLAS's default thread pool oversubscribes and makes 100x100 factorizations
10-30x slower, which would measure contention, not the solvers.

Run: ``.venv/bin/python benchmarks/bench_nuclear.py`` (writes its section of BENCHMARKS.md).
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import datetime as dt  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
from _common import cpu_name, write_section  # noqa: E402

import deeplinear  # noqa: E402, F401  (float64)
from deeplinear.baselines import min_nuclear_norm_completion  # noqa: E402
from deeplinear.problems import low_rank_ground_truth, sample_completion  # noqa: E402

REPEATS = 3
SEEDS = (0, 1)
N, RANK, M = 100, 5, 2000


def _instance(seed: int):
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    W = low_rank_ground_truth(k1, (N, N), RANK)
    p = sample_completion(k2, W, M)
    return np.asarray(p.rows), np.asarray(p.cols), np.asarray(p.values)


def _best(fn):
    best, out = float("inf"), None
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    rows_out = []
    for tol in (0.0, 1e-3):
        for seed in SEEDS:
            r, c, y = _instance(seed)
            t0 = time.perf_counter()
            min_nuclear_norm_completion(r, c, y, (N, N), tol=tol)  # compile (first call per shape)
            compile_s = time.perf_counter() - t0
            t_admm, admm = _best(lambda r=r, c=c, y=y, tol=tol: min_nuclear_norm_completion(
                r, c, y, (N, N), tol=tol))
            t_scs, scs = _best(lambda r=r, c=c, y=y, tol=tol: min_nuclear_norm_completion(
                r, c, y, (N, N), tol=tol, solver="cvxpy", scs_eps=1e-4))
            rel = abs(admm.nuclear_norm / scs.nuclear_norm - 1)
            rows_out.append((tol, seed, t_scs, t_admm, compile_s, t_scs / t_admm, rel,
                             admm.iterations, scs.iterations, admm.max_violation, scs.max_violation))
            print(rows_out[-1], flush=True)
    lines = [
        "## Minimum nuclear norm (benchmarks/bench_nuclear.py)\n\n",
        f"Date: {dt.date.today().isoformat()}. Machine: {platform.machine()}, {cpu_name()}. "
        f"JAX {jax.__version__}, NumPy {np.__version__}, Python {sys.version.split()[0]}, "
        "float64, BLAS threads 1.\n",
        "Command: `.venv/bin/python benchmarks/bench_nuclear.py` (100x100 rank-5 completion, "
        f"{M} observed entries; best of {REPEATS}; ADMM after a compiling call).\n\n",
        "| tol | seed | cvxpy/SCS s | ADMM s | ADMM compile s | speed-up | rel. diff. nuclear norm "
        "| ADMM iters | SCS iters | ADMM violation | SCS violation |\n",
        "|---|---|---|---|---|---|---|---|---|---|---|\n",
    ]
    for row in rows_out:
        tol, seed, ts, ta, tc, sp, rel, ia, isc, va, vs = row
        lines.append(f"| {tol:g} | {seed} | {ts:.2f} | {ta:.3f} | {tc:.2f} | {sp:.1f}x | {rel:.1e} "
                     f"| {ia} | {isc} | {va:.1e} | {vs:.1e} |\n")
    lines.append("\nTargets: speed-up >= 5x, nuclear norms agree to 1e-4 relative.\n")
    write_section("bench_nuclear", "".join(lines))


if __name__ == "__main__":
    main()
