"""Steps per second of depth-3 gradient descent, measured side by side in one run.

(a) 2x2 completion ([[*, 1], [1, 0]]) and (b) 100x100 rank-5 completion with 2000 observations,
float64. For each: ``deeplinear.train`` (one jitted scan/while program), a reference-style eager
loop in plain NumPy (what the research repos do, one Python iteration per step), and the matmul
floor: a jitted loop doing only the six dependent matrix products one step needs
(forward W2 W1, W3 (W2 W1); backward G (W2 W1)^T, W3^T G, (W3^T G) W1^T, W2^T (W3^T G)).

Run: ``.venv/bin/python benchmarks/bench_train.py`` (writes its section of BENCHMARKS.md).
"""

from __future__ import annotations

import datetime as dt
import platform
import sys
import time

import jax
import numpy as np
from _common import cpu_name, dense_floor_loop, write_section

from deeplinear import network as nw
from deeplinear import problems as pb
from deeplinear import train as tr

jax.config.update("jax_enable_x64", True)  # this benchmark measures float64 (a script may)

REPEATS = 5


def best_time(fn, repeats=REPEATS) -> float:
    """Minimum wall time over ``repeats`` calls (after a warm-up call that also compiles)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def numpy_eager(factors, rows, cols, values, lr, steps):
    """Reference-style loop: one Python iteration per step, NumPy products, mean-squared loss."""
    W1, W2, W3 = (np.array(w) for w in factors)
    m = len(values)
    for _ in range(steps):
        P = W2 @ W1
        W = W3 @ P
        r = W[rows, cols] - values
        G = np.zeros_like(W)
        np.add.at(G, (rows, cols), 2.0 * r / m)
        L = W3.T @ G
        g3, g2, g1 = G @ P.T, L @ W1.T, W2.T @ L
        W1, W2, W3 = W1 - lr * g1, W2 - lr * g2, W3 - lr * g3
    return W3 @ W2 @ W1


def matmul_floor(factors, steps):
    """Only the six dependent matrix products of one step, in a jitted loop of ``steps``."""
    return lambda: jax.block_until_ready(dense_floor_loop(tuple(factors), steps))


def case(name, prob, factors, lr, steps, numpy_steps):
    sched = tr.Schedule.every(steps)  # record only at start and end, as a timing run would
    t_dl = best_time(lambda: tr.train(factors, prob, lr=lr, steps=steps, schedule=sched))
    rows, cols, values = (np.asarray(a) for a in (prob.rows, prob.cols, prob.values))
    t_np = best_time(lambda: numpy_eager(factors, rows, cols, values, lr, numpy_steps), repeats=3)
    t_floor = best_time(matmul_floor(factors, steps))
    # sanity: the three loops compute the same GD (same iterate after numpy_steps)
    ref = numpy_eager(factors, rows, cols, values, lr, numpy_steps)
    got = tr.train(factors, prob, lr=lr, steps=numpy_steps, schedule=tr.Schedule.every(numpy_steps)).W
    assert np.allclose(ref, got, rtol=1e-8, atol=1e-12), "numpy reference and deeplinear disagree"
    return {
        "case": name,
        "deeplinear": steps / t_dl,
        "numpy": numpy_steps / t_np,
        "floor": steps / t_floor,
    }


def main() -> None:
    key = jax.random.PRNGKey(0)
    two = pb.completion_2x2()
    two = pb.MatrixCompletion(two.rows, two.cols, two.values, (2, 2), "mean")
    fs2 = nw.balanced_init(key, (2, 2, 2, 2), 0.5)
    W_star = pb.low_rank_ground_truth(key, (100, 100), 5)
    big = pb.sample_completion(jax.random.PRNGKey(1), W_star, 2000)
    fs100 = nw.gaussian_init(jax.random.PRNGKey(2), (100,) * 4, 1e-3, per="product")
    rows = [
        case("(a) 2x2 completion, depth 3", two, fs2, 1e-3, 200_000, 20_000),
        case("(b) 100x100 completion, 2000 obs, depth 3", big, fs100, 5.0, 4_000, 1_000),
    ]
    lines = [
        "| case | deeplinear steps/s | NumPy eager steps/s | matmul floor steps/s "
        "| deeplinear / NumPy | floor / deeplinear |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['case']} | {r['deeplinear']:,.0f} | {r['numpy']:,.0f} | {r['floor']:,.0f} "
            f"| {r['deeplinear'] / r['numpy']:.1f}x | {r['floor'] / r['deeplinear']:.2f}x |"
        )
    table = "\n".join(lines)
    print(table)
    section = (
        "## Training loop (benchmarks/bench_train.py)\n\n"
        f"Date: {dt.date.today()}. Machine: {platform.processor() or platform.machine()}, "
        f"{jax.device_count()} {jax.default_backend()} device(s), {cpu_name()}. "
        f"JAX {jax.__version__}, NumPy {np.__version__}, Python {sys.version.split()[0]}, float64.\n"
        "Command: `.venv/bin/python benchmarks/bench_train.py` (best of "
        f"{REPEATS} repeats after a compiling warm-up; all three loops measured in the same run).\n\n"
        f"{table}\n\n"
        "Targets: (a) deeplinear / NumPy >= 100x; (b) floor / deeplinear <= 1.3x.\n"
    )
    write_section("bench_train", section)


if __name__ == "__main__":
    main()
