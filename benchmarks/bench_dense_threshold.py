"""Where a completion should switch from the dense 0/1 mask to indexed observations.

The estimator (``completion.DeepMatrixCompletion``) and the nuclear-norm ADMM work on a dense mask
of the observations while the matrix has at most ``observations.DENSE_ENTRIES`` entries: the
compiled program then depends on the shape only. This script measures, for ``n x n`` matrices
with 10% observed, depth 3, the estimator's width rule and dtype (float32), the time of one
gradient step on the dense mask (``_completion_fit.MaskedCompletion``) and on the indexed
observations (``problems.MatrixCompletion``, ``train`` choosing the sparse step by its cost
model), and the time of the first call (compilation included) of each.

Time per step is ``(min t(2S) - min t(S)) / S`` over calls of ``S`` and ``2S`` steps that record
only at the end, ``t`` the CPU time of the process with XLA's products on one thread (other jobs
on the shared machine do not enter it).

Run: ``.venv/bin/python benchmarks/bench_dense_threshold.py`` (about a minute).
"""

from __future__ import annotations

import os
import time

os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from deeplinear import _completion_fit as cf  # noqa: E402
from deeplinear.observations import Observations  # noqa: E402
from deeplinear.problems import MatrixCompletion  # noqa: E402
from deeplinear.train import Schedule, train  # noqa: E402


def _time(fn, rounds=3) -> float:
    best = np.inf
    for _ in range(rounds):
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return best


def measure(n: int, fraction: float = 0.1, steps: int = 20) -> dict:
    rng = np.random.default_rng(0)
    mask = rng.random((n, n)) < fraction
    r, c = np.nonzero(mask)
    obs = Observations(r, c, rng.standard_normal(r.size).astype(np.float32), (n, n))
    width = max(1, min(n, 2 * -(-obs.size // (2 * n))))
    dims = (n, width, width, n)
    factors = cf.init_factors(0, dims, 1e-2, jnp.float32)
    out = {"n": n, "entries": n * n, "m": obs.size, "width": width}
    for name, problem in (("dense", cf.MaskedCompletion(jnp.asarray(obs.mask(), jnp.float32),
                                                        jnp.asarray(obs.dense(0.0), jnp.float32))),
                          ("sparse", MatrixCompletion.from_observations(
                              obs, "half_mean", dtype=jnp.float32))):
        def run(k, problem=problem):
            res = train(factors, problem, lr=1e-3, steps=k, schedule=Schedule.every(k))
            np.asarray(res.loss)

        t0 = time.process_time()
        run(steps)
        out[f"{name}_first_s"] = time.process_time() - t0
        out[f"{name}_step_ms"] = 1e3 * (_time(lambda: run(2 * steps)) - _time(lambda: run(steps))) / steps
    return out


def main() -> None:
    print("| n x n | entries | m (10%) | width | dense step (ms) | sparse step (ms) | "
          "dense first call (s) | sparse first call (s) |")
    print("|---|---|---|---|---|---|---|---|")
    for n in (128, 256, 362, 512, 724, 1024):
        m = measure(n)
        print(f"| {n} | 2^{np.log2(m['entries']):.0f} | {m['m']:,} | {m['width']} | "
              f"{m['dense_step_ms']:.2f} | {m['sparse_step_ms']:.2f} | {m['dense_first_s']:.2f} | "
              f"{m['sparse_first_s']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
