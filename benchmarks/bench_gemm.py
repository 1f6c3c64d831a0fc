"""One dense matrix product, n x n times n x n, by each library in one process, one thread each.

Contenders: XLA's dot (``a @ b`` and the contractions ``a @ b^T``, ``a^T @ b`` as
``deeplinear.network`` wrote them before it used the BLAS), NumPy's ``matmul`` (its bundled
BLAS), SciPy's BLAS ``?gemm`` (its own bundled OpenBLAS; through the transpose trick, no
copies), PyTorch's ``torch.mm``, and ``deeplinear._native.gemm`` where built (SciPy's BLAS as
an XLA custom call).
Each is timed in CPU time of the process (``time.process_time``), the minimum of ``--repeats``
runs of about 0.2 s after a warm-up; all BLAS libraries are fixed to one thread
(``OPENBLAS_NUM_THREADS``/``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` = 1, ``torch.set_num_threads(1)``)
and XLA as benchmarks/bench_peer.py fixes it (``--xla_cpu_multi_thread_eigen=false``).

``--xla-flags="..."`` puts flags in front of ``XLA_FLAGS`` (XLA stops reading them at the first
word without ``--``), to compare XLA's dot back ends: with jaxlib 0.10 XLA:CPU runs its dots
through YNNPACK, ``--xla_cpu_experimental_ynn_fusion_type=invalid`` through Eigen (the oneDNN and
XNNPACK switches left the compiled dot unchanged). By default XLA's products are also timed with
the Eigen dot (a second process) and the table is written to its section of BENCHMARKS.md.

Run: ``.venv/bin/python benchmarks/bench_gemm.py [--sizes 400 800 1400 2000] [--quick]``
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
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
from _common import cpu_name, write_section  # noqa: E402

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
        for name, ta, tb in (("deeplinear gemm a @ b", False, False),
                             ("deeplinear gemm a @ b^T", False, True),
                             ("deeplinear gemm a^T @ b", True, False)):
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


EIGEN = "--xla_cpu_experimental_ynn_fusion_type=invalid"  # XLA:CPU's dots on Eigen, not YNNPACK


def measure(sizes, dtypes, repeats: int, xla_only: bool = False) -> list[dict]:
    """One row per (n, dtype): CPU seconds per product of each contender."""
    rows = []
    for n in sizes:
        for dtype in dtypes:
            calls = max(1, int(0.2 * 30e9 / (2 * n**3)))  # about 0.2 s per run
            row = {"n": n, "dtype": dtype}
            for name, fn in contenders(n, np.dtype(dtype)).items():
                if xla_only and not name.startswith("XLA"):
                    continue
                t, wall = timed(fn, calls, repeats)
                row[name] = t
                print(f"n={n} {dtype} {name}: {t * 1e3:.2f} ms CPU, {2 * n**3 / t / 1e9:.1f} "
                      f"GFLOP/s, wall / CPU {wall / t:.2f}", file=sys.stderr, flush=True)
            rows.append(row)
    return rows


def with_eigen(rows, args) -> list[dict]:
    """Add XLA's products with its Eigen dot (another process: XLA_FLAGS is read at import)."""
    cmd = [sys.executable, __file__, f"--xla-flags={EIGEN}", "--xla-only", "--json",
           "--repeats", str(args.repeats), "--sizes", *map(str, args.sizes),
           "--dtypes", *args.dtypes]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    eigen = json.loads(done.stdout.strip().splitlines()[-1])
    for row, other in zip(rows, eigen, strict=True):
        row.update({name.replace("XLA", "XLA (Eigen)"): t for name, t in other.items()
                    if name.startswith("XLA")})
    return rows


def render(rows) -> str:
    names = list(dict.fromkeys(k for r in rows for k in r if k not in ("n", "dtype")))
    lines = ["| n | dtype | " + " | ".join(names) + " | XLA / SciPy (a @ b, a^T @ b) |",
             "|---|---|" + "---|" * (len(names) + 1)]
    for r in rows:
        ratio = (f"{r['XLA a @ b'] / r['scipy ?gemm']:.2f}, {r['XLA a^T @ b'] / r['scipy ?gemm']:.2f}"
                 if "scipy ?gemm" in r else "-")
        lines.append(f"| {r['n']} | {r['dtype']} | "
                     + " | ".join(f"{r[k] * 1e3:.2f}" if k in r else "-" for k in names)
                     + f" | {ratio} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="*", default=[400, 800, 1400, 2000])
    ap.add_argument("--dtypes", nargs="*", default=["float64", "float32"])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--xla-flags", default="",
                    help='added to XLA_FLAGS (read at import; write --xla-flags="...")')
    ap.add_argument("--xla-only", action="store_true", help="XLA's products only")
    ap.add_argument("--json", action="store_true", help="print the rows as JSON, write nothing")
    ap.add_argument("--no-eigen", action="store_true",
                    help=f"skip XLA's products with {EIGEN}")
    ap.add_argument("--quick", action="store_true", help="n = 64 once, printed only")
    ap.add_argument("--no-write", action="store_true", help="do not touch BENCHMARKS.md")
    args = ap.parse_args()
    if args.quick:
        args.sizes, args.repeats, args.no_eigen, args.no_write = [64], 1, True, True
    started = time.perf_counter()
    rows = measure(args.sizes, args.dtypes, args.repeats, args.xla_only)
    if args.json:
        print(json.dumps(rows))
        return
    if not args.no_eigen:
        rows = with_eigen(rows, args)
    table = render(rows)
    print(table)
    if args.no_write:
        return
    import scipy

    load = os.getloadavg()
    write_section("bench_gemm", (
        "## One dense product per library (benchmarks/bench_gemm.py)\n\n"
        f"Date: {dt.date.today()}. Machine: {cpu_name()}, CPU time of the process, one thread each "
        f"(`time.process_time`), min of {args.repeats} runs. JAX {jax.__version__} (XLA:CPU's dot: "
        f"YNNPACK; \"XLA (Eigen)\": `{EIGEN}`, another process), NumPy {np.__version__}, SciPy "
        f"{scipy.__version__} (each its own OpenBLAS), PyTorch {_torch_version()} (MKL); "
        f"deeplinear's gemm: {_native.gemm_status()}. Load average {load[0]:.1f} / {load[1]:.1f}"
        f" / {load[2]:.1f} (1 / 5 / 15 min) at the end; {time.perf_counter() - started:.0f} s.\n"
        f"Command: `.venv/bin/python benchmarks/bench_gemm.py`. Milliseconds per n x n product "
        "(`a^T @ b`, `a @ b^T`: the transposed operand read in place).\n\n"
        f"{table}\n"))


def _torch_version() -> str:
    try:
        import torch

        return torch.__version__
    except ImportError:
        return "not installed"


if __name__ == "__main__":
    main()
