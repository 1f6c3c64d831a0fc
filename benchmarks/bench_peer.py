"""deeplinear against the plain PyTorch loop (the peer), side by side in one run.

The peer is the loop the reference implementations of deep matrix factorization run: a PyTorch
eager stack of bias-free ``nn.Linear`` layers whose weights are multiplied densely into the
end-to-end matrix ``W = W_3 W_2 W_1``, the mean squared error on the observed entries, autograd
and ``torch.optim.SGD`` (:func:`peer_loop`, float32 or float64). deeplinear is
``train.train(factors, problem, ...)`` with its automatic choice between the sparse and the dense
step (``sparse=None``). Both start from the same factors and data, depth 3.

Grid: the 2x2 completion (3 observed entries), n x n rank-10 completion for n = 100, 400, 800,
2,000 (and 4,000 with ``--large``), 10% and 20% observed, hidden widths n and 128, float32 and
float64. The headline is the peer's time per step over ours; the second column set is our own
floor: the pieces of the step deeplinear chose, each timed alone in a jitted loop in the same
process (sparse step: its three dense products, the observed entries, the two sparse-dense
products; dense step: its six dense products).

Time per step is ``(min t(2S) - min t(S)) / S`` for runs of ``S`` and ``2S`` steps (records and
dispatch cancel), alternating peer and deeplinear in each round. On CPU ``t`` is the CPU time of
the process, and both frameworks are fixed to one thread (``torch.set_num_threads(1)``, XLA's
``--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1``): on a shared machine the
wall clock measures the other jobs, and one thread each keeps the comparison fair. On a GPU
(``--device gpu``: both frameworks on the first CUDA device) ``t`` is wall clock after a
synchronize.

Run: ``.venv/bin/python benchmarks/bench_peer.py [--quick] [--large] [--device cpu|gpu]``
(writes its section of BENCHMARKS.md; ``--out FILE`` also writes the rows as JSON).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time

if "--device" not in sys.argv or "cpu" in sys.argv[sys.argv.index("--device") + 1:][:1]:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_cpu_multi_thread_eigen=false"
                               " intra_op_parallelism_threads=1")
    for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_var] = "1"  # SciPy's BLAS, which deeplinear's large products call, too

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from _common import cpu_name, dense_floor_loop, write_section  # noqa: E402

from deeplinear import _native  # noqa: E402
from deeplinear import network as nw  # noqa: E402
from deeplinear import problems as pb  # noqa: E402
from deeplinear import train as tr  # noqa: E402

jax.config.update("jax_enable_x64", True)  # float64 available (each case states its dtype)

TARGET_SECONDS = 0.25  # the short run of a measurement lasts about this long


# --------------------------------------------------------------------------- the peer


def peer_loop(weights, rows, cols, values, lr):
    """The peer: ``steps`` SGD steps of a bias-free ``nn.Linear`` stack on the observed entries.

    ``weights``: the factors ``W_1, ..., W_N`` (NumPy); returns ``run(steps)``, which trains in
    place and returns the loss at the final weights (a float: the caller waits for the device)."""
    import torch

    dtype = torch.float64 if weights[0].dtype == np.float64 else torch.float32
    device = "cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else "cpu"
    layers = torch.nn.Sequential(*[torch.nn.Linear(w.shape[1], w.shape[0], bias=False)
                                   for w in weights]).to(device=device, dtype=dtype)
    with torch.no_grad():
        for layer, w in zip(layers, weights, strict=True):
            layer.weight.copy_(torch.as_tensor(np.array(w)))
    r = torch.as_tensor(np.asarray(rows), dtype=torch.long, device=device)
    c = torch.as_tensor(np.asarray(cols), dtype=torch.long, device=device)
    y = torch.as_tensor(np.asarray(values), dtype=dtype, device=device)
    opt = torch.optim.SGD(layers.parameters(), lr=lr)

    def loss():
        W = layers[0].weight
        for layer in layers[1:]:
            W = layer.weight @ W  # the end-to-end matrix W_N ... W_1, dense
        return torch.mean((W[r, c] - y) ** 2)

    def run(steps):
        for _ in range(steps):
            value = loss()
            opt.zero_grad(set_to_none=True)
            value.backward()
            opt.step()
        with torch.no_grad():
            return float(loss())  # at the final weights; waits for the device

    return run


# --------------------------------------------------------------------------- timing


def _clock():
    return time.perf_counter() if jax.default_backend() == "gpu" else time.process_time()


def _timed(run, steps):
    t0 = _clock()
    run(steps)
    return _clock() - t0


def calibrate(run) -> int:
    """``S`` such that ``run(S)`` takes about TARGET_SECONDS (after a warm-up/compiling call)."""
    run(1)
    s = 1
    while True:
        t = _timed(run, s)
        if t >= TARGET_SECONDS / 4 or s >= 1 << 20:
            return max(1, int(s * TARGET_SECONDS / max(t, 1e-9)))
        s *= 8


def best_of(runs: dict, rounds: int) -> dict:
    """Time per step of each contender, ``(min t(2S) - min t(S)) / S``, contenders alternating."""
    steps = {k: calibrate(run) for k, run in runs.items()}  # one program serves every S
    short = dict.fromkeys(runs, np.inf)
    long = dict.fromkeys(runs, np.inf)
    for _ in range(rounds):
        for k, run in runs.items():
            short[k] = min(short[k], _timed(run, steps[k]))
            long[k] = min(long[k], _timed(run, 2 * steps[k]))
    return {k: max(long[k] - short[k], 0.0) / steps[k] for k in runs}


def ours_loop(factors, problem, lr):
    state = {"f": factors}

    def run(steps):
        res = tr.train(state["f"], problem, lr=lr, steps=steps, schedule=tr.Schedule.every(steps))
        return float(res.loss[-1])

    return run


def chained(fn, x):
    """``run(steps)``: ``x <- fn(x)`` ``steps`` times in one jitted loop (``steps`` traced)."""
    loop = jax.jit(lambda x, s: jax.lax.fori_loop(0, s, lambda _, c: fn(c), x))

    def run(steps):
        return jax.block_until_ready(loop(x, steps))

    return run


def floor_pieces(factors, problem: pb.MatrixCompletion) -> dict:
    """The pieces of the step ``train`` chooses, each as a chained jitted loop (see module doc).

    Every piece feeds a tiny multiple of its output back into its input, so XLA cannot hoist it
    out of the loop."""
    dims = nw.dims_of(factors)
    eps = 1e-30
    if not pb.sparse_is_cheaper(problem, dims):
        def six(steps):
            return jax.block_until_ready(dense_floor_loop(tuple(factors), steps))

        return {"dense: 6 products": six}
    sp = pb.SparseCompletion(problem, dims)
    k = sp.split
    prefix, suffix = nw.split_products(factors, k)
    left, right = suffix[k], prefix[k]

    def products(c):
        fs, left, right = c
        prefix, suffix = nw.split_products(fs, k)
        # stand-ins of the sparse products (their shapes) that use W_{k+1:N} and W_{1:k}, which
        # the step needs for the observed entries: else XLA drops their products as dead code
        upper, lower = suffix[k] * eps, prefix[k] * eps
        grads = nw.split_gradients(fs, k, prefix, suffix, upper, lower)
        return tuple(w - eps * g for w, g in zip(fs, grads, strict=True)), left, right

    def observed(c):
        s, left, right = c
        e = sp._observed(left * (1 + s * eps), right)
        return e[0] * eps + s, left, right

    w = jnp.ones(sp.rows.shape, left.dtype)

    def sparse_products(c):
        s, left, right = c
        upper, lower = sp._products(w, left * (1 + s * eps), right)
        return s + eps * (upper[0, 0] + lower[0, 0]), left, right

    zero = jnp.zeros((), left.dtype)
    return {"dense products":
            chained(products, (tuple(factors), left, right)),
            "observed entries": chained(observed, (zero, left, right)),
            "two sparse-dense products": chained(sparse_products, (zero, left, right))}


# --------------------------------------------------------------------------- the grid


def completion(n, m, dtype, seed=0):
    W_star = pb.low_rank_ground_truth(jax.random.PRNGKey(seed), (n, n), min(10, n), dtype=dtype)
    return pb.sample_completion(jax.random.PRNGKey(seed + 1), W_star, m)


def cases(quick: bool, large: bool):
    """(label, n, m, dims) of the grid."""
    out = [("2x2, 3 observed", 2, 3, (2, 2, 2, 2))]
    if quick:
        return out + [("100x100, 20%, width n", 100, 2000, (100, 100, 100, 100))]
    sizes = (100, 400, 800, 2000) + ((4000,) if large else ())
    for n in sizes:
        for frac in (0.1, 0.2):
            for width in (n, 128):
                if n == 4000 and width == n:
                    continue  # a step of either loop takes tens of seconds here
                out.append((f"{n}x{n}, {frac:.0%}, width {'n' if width == n else width}",
                            n, int(frac * n * n), (n, width, width, n)))
    return out


def fmt(seconds: float) -> str:
    if not np.isfinite(seconds):
        return "-"
    if seconds < 1e-6:
        return f"{seconds * 1e9:,.0f} ns"
    if seconds < 1e-3:
        return f"{seconds * 1e6:,.1f} us" if seconds < 1e-5 else f"{seconds * 1e6:,.0f} us"
    return f"{seconds * 1e3:,.1f} ms" if seconds < 1 else f"{seconds:,.2f} s"


def measure(label, n, m, dims, dtype, rounds, floor=True) -> dict:
    prob = (pb.completion_2x2(dtype=dtype) if n == 2 else completion(n, m, dtype))
    if n == 2:  # the notes' 2x2 problem: MSE on its 3 entries for both loops
        prob = pb.MatrixCompletion(prob.rows, prob.cols, prob.values, (2, 2), "mean", dtype=dtype)
    factors = nw.gaussian_init(jax.random.PRNGKey(2), dims, 1e-2, per="product", dtype=dtype)
    lr = 1e-3
    np_factors = [np.asarray(w) for w in factors]
    # the same problem: from the same factors both loops reach the same loss after 3 steps
    same = ((peer_loop(np_factors, prob.rows, prob.cols, prob.values, 0.1)(3),
             float(tr.train(factors, prob, lr=0.1, steps=3,
                            schedule=tr.Schedule.every(3)).loss[-1]))
            if n <= 800 else (np.nan, 1.0))  # (checked up to n = 800: the loops are size-blind)
    t = best_of({"peer": peer_loop(np_factors, prob.rows, prob.cols, prob.values, lr),
                 "ours": ours_loop(factors, prob, lr)}, rounds)
    pieces = ({} if not floor else
              {name: best_of({name: run}, max(1, rounds - 1))[name]
               for name, run in floor_pieces(factors, prob).items()})
    floor = sum(pieces.values()) or np.nan  # "-" in the table where not measured
    sparse = pb.sparse_is_cheaper(prob, dims)
    return {"case": label, "dtype": np.dtype(dtype).name, "n": n, "m": m, "dims": list(dims),
            "peer_s": t["peer"], "ours_s": t["ours"], "ratio": t["peer"] / t["ours"],
            "floor_s": floor, "pieces_s": pieces, "over_floor": t["ours"] / floor,
            "path": "sparse" if sparse else "dense",
            "loss_gap": abs(same[0] - same[1]) / abs(same[1])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="2x2 and 100x100 only, printed (BENCHMARKS.md untouched)")
    ap.add_argument("--large", action="store_true", help="add n = 4,000 (width 128)")
    ap.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", default="", help="run only cases whose label contains this")
    ap.add_argument("--dtype", choices=("float32", "float64"), help="one dtype only")
    ap.add_argument("--max-n", type=int, default=0, help="only n up to this")
    ap.add_argument("--rows", nargs="*", default=[],
                    help="write the section from these saved rows (JSON lines or lists from "
                         "--out, e.g. of one run per dtype side by side) instead of measuring")
    ap.add_argument("--out", default="", help="also write the rows as JSON to this file")
    ap.add_argument("--no-floor", action="store_true", help="skip the floor pieces")
    ap.add_argument("--no-write", action="store_true", help="do not touch BENCHMARKS.md")
    ap.add_argument("--xla-dot", action="store_true",
                    help="deeplinear's dense products on XLA's dot only (the BLAS kernel of "
                         "deeplinear._native off), for comparison")
    args = ap.parse_args()
    if args.xla_dot:
        _native.GEMM_MIN_FLOPS.clear()
    import torch

    if args.device == "gpu":
        if jax.default_backend() != "gpu" or not torch.cuda.is_available():
            sys.exit("--device gpu: JAX and PyTorch both need a CUDA device")
        device_line = f"{torch.cuda.get_device_name(0)} (both frameworks), wall clock"
    else:
        jax.config.update("jax_platforms", "cpu")
        torch.set_num_threads(1)
        torch.set_num_interop_threads(1)
        device_line = (f"{cpu_name()}, CPU time of the process, one thread each (torch "
                       "set_num_threads(1); XLA's Eigen single-threaded; BLAS threads 1)")
    started = time.perf_counter()
    rows = load_rows(args.rows)
    dtypes = [] if args.rows else [np.dtype(d) for d in ("float32", "float64")
                                   if args.dtype in (None, d)]
    for dtype in dtypes:
        for label, n, m, dims in cases(args.quick, args.large):
            if (args.only and args.only not in label) or (args.max_n and n > args.max_n):
                continue
            rounds = (1 if args.quick else args.rounds + 2 if n <= 100
                      else 2 if n >= 2000 else args.rounds)
            row = measure(label, n, m, dims, dtype, rounds, not args.no_floor)
            row["run"] = " ".join(sys.argv[1:])  # the options that measured it (for --rows)
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(rows, fh, indent=1)
    table = render(rows)
    print(table)
    if args.no_write or args.quick:
        return
    load = os.getloadavg()
    runs = list(dict.fromkeys(r.get("run") for r in rows))
    measured = (f"{time.perf_counter() - started:.0f} s of wall clock" if not args.rows else
                "the rows of " + " and ".join(f"`--dtype {d}`" for d in
                                               dict.fromkeys(r["dtype"] for r in rows))
                + " run side by side, then `--rows` to write this section"
                if None in runs else
                "the rows of the runs with " + "; ".join(f"`{r}`" for r in runs)
                + ", one after another, then `--rows` to write this section")
    section = (
        "## deeplinear against the plain PyTorch loop (benchmarks/bench_peer.py)\n\n"
        f"Date: {dt.date.today()}. Machine: {device_line}. JAX {jax.__version__}, "
        f"PyTorch {torch.__version__}, Python {sys.version.split()[0]}; native kernel: "
        f"{_native.status()}, dense products from {_gemm_sizes()} by {_native.gemm_status()}"
        f". Load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} "
        "(1 / 5 / 15 min) at the end.\n"
        f"Command: `.venv/bin/python benchmarks/bench_peer.py{' --large' if args.large else ''}`"
        f" ({measured}). Per step: "
        "`(min t(2S) - min t(S)) / S`, peer and deeplinear alternating in each round; depth 3, "
        "Gaussian init of scale 1e-2, lr 1e-3, the same factors and data for both.\n\n"
        f"{table}\n")
    write_section("bench_peer", section)


def _gemm_sizes() -> str:
    """The sizes from which deeplinear's products call the BLAS, for the section header."""
    sizes = [f"{round((v / 2) ** (1 / 3))}^3 in {d.name}"
             for d, v in sorted(_native.GEMM_MIN_FLOPS.items(), key=lambda kv: kv[0].name)]
    return "m k n = " + ", ".join(sizes) if sizes else "none (--xla-dot)"


def load_rows(paths) -> list[dict]:
    """Rows saved by ``--out`` (a JSON list) or printed by a run (one JSON object a line)."""
    rows = []
    for path in paths:
        with open(path) as fh:
            text = fh.read()
        if text.lstrip().startswith("["):
            rows += json.loads(text)
        else:
            rows += [json.loads(ln) for ln in text.splitlines() if ln.startswith("{")]
    return rows


def _ratio(x: float) -> str:
    return "-" if np.isnan(x) else f"{x:.2f}"


def _gap(x: float) -> str:
    return "-" if np.isnan(x) else f"{x:.0e}"


def render(rows) -> str:
    lines = ["| problem | dtype | peer (PyTorch eager) | deeplinear | **peer / deeplinear** "
             "| deeplinear's path | its floor | deeplinear / floor | loss gap after 3 steps |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['case']} | {r['dtype']} | {fmt(r['peer_s'])} | {fmt(r['ours_s'])} "
                     f"| **{r['ratio']:.2f}x** | {r['path']} | {fmt(r['floor_s'])} "
                     f"| {_ratio(r['over_floor'])} | {_gap(r.get('loss_gap', np.nan))} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
