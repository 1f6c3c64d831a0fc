"""One dense matrix product, n x n times n x n, by each library in one process, one thread each.

Contenders: XLA's dot (``a @ b`` and the contractions ``a @ b^T``, ``a^T @ b`` as
``deeplinear.network`` wrote them before it used the BLAS), NumPy's ``matmul`` (its bundled
BLAS), SciPy's BLAS ``?gemm`` (its own bundled OpenBLAS; through the transpose trick, no
copies), PyTorch's ``torch.mm``, and ``deeplinear._native.gemm`` where built (SciPy's BLAS as
an XLA custom call).
Each is timed in CPU time of the process (``time.process_time``), the minimum of ``--repeats``
runs of ``--calls`` products after a warm-up; all BLAS libraries are fixed to one thread
(``OPENBLAS_NUM_THREADS``/``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` = 1, ``torch.set_num_threads(1)``)
and XLA to one thread (``--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1``).

``--xla-flags="..."`` appends flags to ``XLA_FLAGS`` (e.g. the CPU dot back end:
``--xla_cpu_experimental_ynn_fusion_type=``, ``--xla_cpu_use_onednn=true``), to compare XLA's
dot back ends; the other contenders are the yardstick of each run. Prints a table (GFLOP/s and
time per product); never writes BENCHMARKS.md.

Run: ``.venv/bin/python benchmarks/bench_gemm.py [--sizes 800 2000] [--xla-flags="..."]``
"""

from __future__ import annotations

import argparse
import os
import sys
import time

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"
_extra = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--xla-flags=")), "")
# (XLA stops parsing XLA_FLAGS at the first word without "--": the extra flags come first)
os.environ["XLA_FLAGS"] = (f"{_extra} {os.environ.get('XLA_FLAGS', '')}"
                           " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from deeplinear import _native  # noqa: E402

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_platforms", "cpu")


def timed(fn, calls: int, repeats: int) -> tuple[float, float]:
    """Seconds per call of CPU time (the minimum over ``repeats`` runs of ``calls`` calls) and
    of wall clock in that run (more CPU than wall: more than one thread ran)."""
    fn()
    best = (np.inf, np.inf)
    for _ in range(repeats):
        t0, w0 = time.process_time(), time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.process_time() - t0, time.perf_counter() - w0))
    return best[0] / calls, best[1] / calls


def contenders(n: int, dtype) -> dict:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(dtype)
    b = rng.standard_normal((n, n)).astype(dtype)
    ja, jb = jnp.asarray(a), jnp.asarray(b)
    out = {}
    for name, f in (("XLA a @ b", lambda x, y: x @ y),
                    ("XLA a @ b^T", lambda x, y: jnp.einsum("ij,kj->ik", x, y)),
                    ("XLA a^T @ b", lambda x, y: jnp.einsum("ji,jk->ik", x, y))):
        g = jax.jit(f)
        out[name] = lambda g=g: g(ja, jb).block_until_ready()
    if _native.gemm_available(dtype):
        for name, ta, tb in (("native gemm a @ b", False, False),
                             ("native gemm a @ b^T", False, True),
                             ("native gemm a^T @ b", True, False)):
            g = jax.jit(lambda x, y, ta=ta, tb=tb: _native.gemm(x, y, ta, tb))
            out[name] = lambda g=g: g(ja, jb).block_until_ready()
    out["numpy matmul"] = lambda: a @ b
    from scipy.linalg import blas

    gemm = blas.dgemm if dtype == np.float64 else blas.sgemm
    out["scipy ?gemm"] = lambda: gemm(1.0, b.T, a.T).T  # (b^T a^T)^T in column-major = a b
    try:
        import torch

        torch.set_num_threads(1)
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        out["torch mm"] = lambda: torch.mm(ta, tb)
    except ImportError:
        pass
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="*", default=[800, 2000])
    ap.add_argument("--dtypes", nargs="*", default=["float64", "float32"])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--xla-flags", default="",
                    help='added to XLA_FLAGS (read at import; write --xla-flags="...")')
    args = ap.parse_args()
    print(f"XLA_FLAGS: {os.environ['XLA_FLAGS'].strip()}; native gemm: "
          f"{_native.gemm_status()}; load average {os.getloadavg()[0]:.2f}", flush=True)
    print("| n | dtype | contender | ms per product (CPU) | GFLOP/s | wall / CPU |\n"
          "|---|---|---|---|---|---|")
    for n in args.sizes:
        for dtype in args.dtypes:
            calls = max(1, int(0.2 * 30e9 / (2 * n**3)))  # about 0.2 s per run
            for name, fn in contenders(n, np.dtype(dtype)).items():
                t, wall = timed(fn, calls, args.repeats)
                print(f"| {n} | {dtype} | {name} | {t * 1e3:.2f} | {2 * n**3 / t / 1e9:.1f} "
                      f"| {wall / t:.2f} |", flush=True)


if __name__ == "__main__":
    main()
