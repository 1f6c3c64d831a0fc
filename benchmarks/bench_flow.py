"""Gradient flow cost: adaptive diffrax solvers vs small-step GD on the same trajectory.

Two problems (float64, depth 3, balanced init, §2.4-§2.5): the 2x2 completion of §2.13/§E5 (scale
1e-2, det > 0) and a 20x20 rank-2 completion from 120 entries (scale 1e-2). The reference
trajectory is gradient flow by Dopri8 at rtol 1e-12, atol 1e-14 (checked against Dopri8 at rtol
1e-11: the disagreement is reported; ``--quick``: Tsit5 at rtol 1e-10, no check). The error of a
method is the largest distance to it over RECORDS evenly spaced times of ``[0, T]``: ``max_t ||W(t)
- W_ref(t)||_F / max_t ||W_ref(t)||_F``. GD with step ``eta = T / K`` follows the flow to first
order (error ~ eta); ``K`` is doubled until each target error is reached. Each ODE solver runs
through ``deeplinear.train.gradient_flow`` over a ladder of tolerances (rtol, atol = rtol / 100);
for each target the cheapest rung that reaches it is reported. Vector-field evaluations are counted
in a separate, identical solve through ``deeplinear.train.integrate`` whose field increments a host
counter (``jax.debug.callback``; for the implicit Kvaerno5 a Jacobian, built by forward mode over a
batch of tangents, may count as one call, so its count is a lower bound); GD evaluates the field
once per step. Times: CPU seconds of the process (``time.process_time``, XLA's products
single-threaded; the shared machine's wall clock measured the other jobs), best of REPEATS after a
compiling call. Kvaerno5 runs on the 2x2 problem only (on the 20x20 its dense 1200 x 1200 Newton
solves took minutes per rung here).

Run: ``.venv/bin/python benchmarks/bench_flow.py`` (writes its section of BENCHMARKS.md);
``--quick``: the 2x2 problem on a short horizon, Tsit5 and GD only, printed only (the test suite
runs it).
"""

from __future__ import annotations

import os

os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from _common import cpu_name, write_section  # noqa: E402

import deeplinear  # noqa: E402
from deeplinear.network import (  # noqa: E402
    balanced_init,
    end_to_end,
    factor_gradients,
    with_det_sign,
)
from deeplinear.problems import (  # noqa: E402
    completion_2x2,
    low_rank_ground_truth,
    sample_completion,
)
from deeplinear.train import gradient_flow, integrate  # noqa: E402

RECORDS = 20
REPEATS = 2
SOLVERS = ("tsit5", "dopri5", "dopri8", "kvaerno5")
_IMPLICIT_MAX = 200  # parameters; above, the stiff solver's dense Newton solves take minutes here


def _problems(quick: bool):
    """(name, factors, problem, T): T puts the transition to a low loss inside [0, T]."""
    out = []
    f2 = with_det_sign(jax.random.PRNGKey(0),
                       lambda k: balanced_init(k, (2, 2, 2, 2), 1e-2), +1)
    out.append(("2x2 completion (§E5), depth 3", f2, completion_2x2(), 40.0 if quick else 400.0))
    if not quick:
        k1, k2, k3 = jax.random.split(jax.random.PRNGKey(1), 3)
        W = low_rank_ground_truth(k1, (20, 20), 2)
        prob = sample_completion(k2, W, 120)
        f20 = balanced_init(k3, (20,) * 4, 1e-2)
        out.append(("20x20 rank-2 completion, m = 120, depth 3", f20, prob, 60.0))
    return out


def _ts(T):
    return np.linspace(0.0, T, RECORDS + 1)


def _traj_error(Ws, ref):
    """``max_t ||W(t) - W_ref(t)||_F / max_t ||W_ref(t)||_F`` over the record times."""
    scale = np.max(np.linalg.norm(ref, axis=(1, 2)))
    return float(np.max(np.linalg.norm(Ws - ref, axis=(1, 2))) / scale)


def _flow_W(factors, prob, T, solver, rtol, atol):
    res = gradient_flow(factors, prob, T, ts=_ts(T), solver=solver, rtol=rtol, atol=atol,
                        state_metrics={"W": end_to_end})
    if res.status != "converged" or len(res.ts) != RECORDS + 1:
        return None, res
    return np.asarray(res.metrics["W"]), res


def _count_evals(factors, prob, T, solver, rtol, atol) -> int:
    count = [0]

    def bump():
        count[0] += 1

    def field(fs):
        jax.debug.callback(bump)
        return tuple(-g for g in factor_gradients(fs, prob.grad(end_to_end(fs))))

    integrate(field, factors, prob, T, to_matrix=end_to_end, ts=_ts(T), solver=solver,
              rtol=rtol, atol=atol)
    return count[0]


def _gd_program(K: int):
    @jax.jit
    def run(factors, prob, eta):
        per = K // RECORDS

        def step(fs, _):
            grads = factor_gradients(fs, prob.grad(end_to_end(fs)))
            return tuple(w - eta * g for w, g in zip(fs, grads, strict=True)), None

        def record(fs, _):
            fs = jax.lax.scan(step, fs, None, length=per)[0]
            return fs, end_to_end(fs)

        fs, Ws = jax.lax.scan(record, factors, None, length=RECORDS)
        return jnp.concatenate([end_to_end(factors)[None], Ws])

    return run


def _gd(factors, prob, T, K):
    run = _gd_program(K)
    eta = jnp.asarray(T / K, factors[0].dtype)
    Ws = np.asarray(jax.block_until_ready(run(factors, prob, eta)))
    best = np.inf
    for _ in range(REPEATS):
        t0 = time.process_time()
        jax.block_until_ready(run(factors, prob, eta))
        best = min(best, time.process_time() - t0)
    return Ws, best


def _timed_flow(factors, prob, T, solver, rtol, atol):
    _flow_W(factors, prob, T, solver, rtol, atol)  # compile
    best = np.inf
    for _ in range(REPEATS):
        t0 = time.process_time()
        Ws, res = _flow_W(factors, prob, T, solver, rtol, atol)
        best = min(best, time.process_time() - t0)
    return Ws, res, best


def _bench_problem(name, factors, prob, T, targets, rtols, k_max, solvers=SOLVERS, quick=False):
    if quick:  # one solver compiled: Tsit5 at rtol 1e-10 as the reference, no cross-check
        ref, ref_err = _flow_W(factors, prob, T, "tsit5", 1e-10, 1e-12)[0], float("nan")
    else:
        ref, _ = _flow_W(factors, prob, T, "dopri8", 1e-12, 1e-14)
        check, _ = _flow_W(factors, prob, T, "dopri8", 1e-11, 1e-13)
        ref_err = _traj_error(check, ref)
    print(f"{name}: reference Dopri8 vs Tsit5 at rtol 1e-12: {ref_err:.1e}", flush=True)
    rows = []
    # GD: double K until every target is reached (or k_max)
    gd = {}
    K = RECORDS * 8
    while k_max >= K:
        Ws, secs = _gd(factors, prob, T, K)
        err = _traj_error(Ws, ref)
        print(f"  GD K={K}: error {err:.1e}, {secs:.4f}s", flush=True)
        for tgt in targets:
            if tgt not in gd and err <= tgt:
                gd[tgt] = (K, err, secs)
        if all(t in gd for t in targets):
            break
        K *= 2
    size = sum(int(np.size(f)) for f in factors)
    if size > _IMPLICIT_MAX:  # Kvaerno5's Newton steps factor a dense size x size Jacobian
        solvers = tuple(s for s in solvers if s != "kvaerno5")
    flows = {s: {} for s in solvers}
    for solver in solvers:
        for rtol in rtols:
            if all(t in flows[solver] for t in targets):
                break
            Ws, res, secs = _timed_flow(factors, prob, T, solver, rtol, rtol / 100)
            if Ws is None:
                print(f"  {solver} rtol={rtol:g}: {res.status}", flush=True)
                continue
            err = _traj_error(Ws, ref)
            evals = _count_evals(factors, prob, T, solver, rtol, rtol / 100)
            print(f"  {solver} rtol={rtol:g}: error {err:.1e}, {evals} evals, {res.num_steps} "
                  f"steps, {secs:.4f}s", flush=True)
            for tgt in targets:
                if tgt not in flows[solver] and err <= tgt:
                    flows[solver][tgt] = (rtol, err, evals, secs)
    for tgt in targets:
        g = gd.get(tgt)
        solvers_run = tuple(flows)
        rows.append((name, tgt, "GD", g and f"eta = T/{g[0]}", g and g[1], g and g[0],
                     g and g[2], None, None))
        for solver in solvers_run:
            f = flows[solver].get(tgt)
            rows.append((name, tgt, solver, f and f"rtol {f[0]:g}", f and f[1], f and f[2],
                         f and f[3], g and f and g[0] / f[2], g and f and g[2] / f[3]))
    return rows, ref_err


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2x2 only, short ladders, print only")
    args = ap.parse_args(argv)
    global REPEATS
    if args.quick:
        REPEATS = 1
        targets, rtols, k_max, solvers = (1e-1,), (1e-6,), 2_000, ("tsit5",)
    else:
        targets, rtols, k_max = (1e-2, 1e-3, 1e-4), tuple(10.0 ** -e for e in range(3, 12)), 2**23
        solvers = SOLVERS
    t_start = time.perf_counter()
    rows, ref_errs = [], {}
    with deeplinear.float64():
        for name, factors, prob, T in _problems(args.quick):
            r, ref_errs[name] = _bench_problem(name, factors, prob, T, targets, rtols, k_max,
                                              solvers, args.quick)
            rows += r
    fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
    table = ["| problem | target error | method | setting | error reached | field evaluations "
             "| CPU s | GD evals / method | GD time / method |\n",
             "|---|---|---|---|---|---|---|---|---|\n"]
    for name, tgt, meth, setting, err, ev, secs, ev_ratio, t_ratio in rows:
        table.append(f"| {name} | {tgt:g} | {meth} | {setting or 'not reached'} | {fmt(err, '.1e')} "
                     f"| {fmt(ev, ',')} | {fmt(secs, '.4f')} | {fmt(ev_ratio, '.3g')} "
                     f"| {fmt(t_ratio, '.3g')} |\n")
    print("".join(table))
    if args.quick:
        return
    refs = "; ".join(f"{k}: {v:.0e}" for k, v in ref_errs.items())
    body = (
        "## Gradient flow cost (benchmarks/bench_flow.py)\n\n"
        f"Date: {dt.date.today().isoformat()}. Machine: {platform.machine()}, {cpu_name()}, shared "
        f"with other jobs (load average {os.getloadavg()[0]:.1f} at the end). JAX {jax.__version__}, "
        f"Python {sys.version.split()[0]}, float64.\n"
        "Command: `.venv/bin/python benchmarks/bench_flow.py` (CPU seconds, best of "
        f"{REPEATS} after a compiling call; {time.perf_counter() - t_start:.0f} s wall in all). Error: "
        f"largest distance of W(t) to the reference trajectory over {RECORDS} evenly spaced "
        "times, relative to max ||W_ref||_F. Reference: Dopri8 at rtol 1e-12 (its distance to "
        f"Dopri8 at rtol 1e-11: {refs}). GD: step T/K, one evaluation per step. Solvers: the "
        "loosest rtol of 1e-3, 1e-4, ..., 1e-11 (atol = rtol/100) that reaches the target. "
        f"GD doubled K up to {k_max:,}.\n\n"
        + "".join(table)
    )
    write_section("bench_flow", body)


if __name__ == "__main__":
    main()
