"""Training loops: exact solutions, GD vs gradient flow, replicas, early stop and divergence."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from deeplinear import metrics as mt
from deeplinear import network as nw
from deeplinear import problems as pb
from deeplinear import train as tr


def _logistic(t, p0, y):
    """Depth-2 scalar balanced flow: p = a^2, dp/dt = -2 p (p - y) (§2.16 exercise 10, N = 2)."""
    return y / (1 + (y / p0 - 1) * np.exp(-2 * y * t))


@pytest.mark.parametrize("solver, tol", [("tsit5", 1e-7), ("dopri8", 1e-7), ("kvaerno5", 1e-6)])
def test_gradient_flow_matches_exact_solution(solver, tol):
    y, a0 = 2.0, 0.1
    prob = pb.WhitenedSquare(jnp.array([[y]]))
    fs = (jnp.array([[a0]]), jnp.array([[a0]]))
    ts = np.linspace(0, 4, 9)
    res = tr.gradient_flow(fs, prob, 4.0, ts=ts, solver=solver, rtol=1e-10, atol=1e-12,
                           metrics={"p": lambda W: W[0, 0]})
    assert res.status == "converged"
    # tolerance: a few times the solver tolerances over this horizon
    np.testing.assert_allclose(res.metrics["p"], _logistic(ts, a0**2, y), rtol=tol, atol=tol)


def test_small_step_gd_follows_gradient_flow_at_first_order():
    key = jax.random.PRNGKey(0)
    fs = nw.balanced_init(key, (2, 3, 3, 3), 0.5)
    prob = pb.WhitenedSquare(jax.random.normal(jax.random.PRNGKey(1), (3, 2)))
    T = 1.0
    flow = tr.gradient_flow(fs, prob, T, rtol=1e-11, atol=1e-12)
    errs = []
    for lr in (4e-3, 2e-3, 1e-3):
        gd = tr.train(fs, prob, lr=lr, steps=round(T / lr))
        errs.append(float(np.abs(gd.W - flow.W).max()))
    # GD is a first-order (Euler) discretization: the gap halves with the step (ratio ~2)
    assert errs[-1] < 2e-3
    assert 1.7 < errs[0] / errs[1] < 2.3 and 1.7 < errs[1] / errs[2] < 2.3


def test_balancedness_is_conserved_along_the_flow():
    fs = nw.balanced_init(jax.random.PRNGKey(2), (3, 4, 5, 2), 1.0)
    prob = pb.sample_sensing(jax.random.PRNGKey(3), pb.low_rank_ground_truth(
        jax.random.PRNGKey(4), (2, 3), 1), 4, "half_sum")
    res = tr.gradient_flow(fs, prob, 5.0, rtol=1e-10, atol=1e-12, state_metrics={"imb": nw.imbalance})
    assert res.loss[-1] < 0.5 * res.loss[0]
    assert res.metrics["imb"].max() < 1e-8  # Lemma 1, to solver tolerance
    # an unbalanced start keeps its (nonzero) imbalance C_{j,j+1} exactly constant
    fs = nw.gaussian_init(jax.random.PRNGKey(5), (3, 4, 5, 2), 0.6)
    c0 = np.asarray(nw.balancedness(fs)[1])
    res = tr.gradient_flow(fs, prob, 5.0, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(nw.balancedness(res.factors)[1], c0, atol=1e-8)


def test_replicas_equal_separate_runs():
    prob = pb.sample_completion(jax.random.PRNGKey(0), pb.low_rank_ground_truth(
        jax.random.PRNGKey(1), (8, 8), 2), 40)
    keys = jax.random.split(jax.random.PRNGKey(2), 3)
    fs = jax.vmap(lambda k: nw.gaussian_init(k, (8, 8, 8, 8), 0.1, per="product"))(keys)
    lrs = jnp.array([0.5, 1.0, 2.0])
    sched = tr.Schedule.every(100)
    rep = tr.train_replicas(fs, prob, lr=lrs, steps=600, schedule=sched, stop_loss=1e-3,
                            metrics={"nuc": mt.nuclear_norm})
    for r in range(3):
        one = tr.train(tuple(w[r] for w in fs), prob, lr=float(lrs[r]), steps=600, schedule=sched,
                       stop_loss=1e-3, metrics={"nuc": mt.nuclear_norm})
        n = len(one.steps)
        np.testing.assert_allclose(rep.loss[r, :n], one.loss, rtol=1e-10)
        np.testing.assert_allclose(rep.metrics["nuc"][r, :n], one.metrics["nuc"], rtol=1e-10)
        np.testing.assert_allclose(rep.W[r], one.W, rtol=1e-10, atol=1e-12)
        assert rep.status[r] == one.status and rep.stop_step[r] == one.stop_step


def test_early_stop_at_loss_threshold():
    prob = pb.WhitenedSquare(jnp.eye(2))
    fs = nw.identity_init((2, 2, 2), 0.5)
    res = tr.train(fs, prob, lr=0.1, steps=100_000, stop_loss=1e-8, schedule=tr.Schedule.every(10))
    assert res.status == "converged" and res.stop_step < 1000
    assert res.loss[-1] <= 1e-8 and res.loss[-2] > 1e-8 or res.steps[-1] == res.stop_step
    assert res.steps[-1] == res.stop_step and np.all(np.diff(res.steps) > 0)


def test_divergence_is_caught_and_no_nan_is_recorded():
    prob = pb.sample_completion(jax.random.PRNGKey(0), pb.low_rank_ground_truth(
        jax.random.PRNGKey(1), (10, 10), 2), 50)
    fs = nw.gaussian_init(jax.random.PRNGKey(2), (10, 10, 10), 0.5, per="product")
    res = tr.train(fs, prob, lr=1e3, steps=1000, schedule=tr.Schedule.every(1))
    assert res.status == "diverged"
    assert res.diverged_step is not None and res.diverged_step < 50
    assert np.all(np.isfinite(res.loss)) and np.all(np.isfinite(res.W))
    ok = tr.train(fs, prob, lr=0.1, steps=50)
    assert ok.status == "max_steps" and ok.diverged_step is None


def test_schedules():
    assert tr.Schedule.every(3).points(10).tolist() == [0, 3, 6, 9, 10]
    pts = tr.Schedule.log(20).points(100_000)
    assert pts[0] == 0 and pts[-1] == 100_000 and np.all(np.diff(pts) > 0)
    assert pts[1] == 1 and len(pts) <= 20
    with pytest.raises(ValueError, match="k must be >= 1"):
        tr.Schedule.every(0)


def test_group_rmsprop_matches_reference_formula():
    alpha, eps, lr = 0.99, 1e-4, 0.01
    opt = tr.group_rmsprop(lr, alpha, eps)
    params = (jnp.ones((2, 2)), jnp.ones(3))
    state = opt.init(params)
    v = 0.0
    rng = np.random.default_rng(0)
    for t in range(1, 4):
        grads = (jnp.asarray(rng.normal(size=(2, 2))), jnp.asarray(rng.normal(size=3)))
        updates, state = opt.update(grads, state)
        v = alpha * v + (1 - alpha) * sum(float(jnp.sum(g**2)) for g in grads)
        denom = np.sqrt(v / (1 - alpha**t)) + eps  # one global rate (roosephu opt.py)
        for u, g in zip(updates, grads, strict=True):
            np.testing.assert_allclose(u, -lr * np.asarray(g) / denom, rtol=1e-12)


@pytest.mark.parametrize("name", tr.OPTIMIZERS)
def test_every_named_optimizer_decreases_the_loss(name):
    prob = pb.WhitenedSquare(jnp.array([[1.0, 0.5], [0.0, 2.0]]))
    fs = nw.balanced_init(jax.random.PRNGKey(0), (2, 2, 2), 0.3)
    lr = 1.0 if name == "adadelta" else 0.05
    res = tr.train(fs, prob, lr=lr, steps=300, optimizer=name)
    assert res.loss[-1] < 0.5 * res.loss[0]
    res = tr.train(fs, prob, lr=0.05, steps=300, optimizer=optax.sgd(0.05, momentum=0.5))
    assert res.loss[-1] < 0.5 * res.loss[0]


def test_bad_arguments_name_the_argument():
    prob = pb.WhitenedSquare(jnp.eye(2))
    fs = nw.identity_init((2, 2, 2), 1.0)
    with pytest.raises(ValueError, match="lr must be > 0"):
        tr.train(fs, prob, lr=-1.0, steps=10)
    with pytest.raises(ValueError, match="steps"):
        tr.train(fs, prob, lr=0.1, steps=-3)
    with pytest.raises(ValueError, match="problem.shape"):
        tr.train(nw.identity_init((3, 2), 1.0), prob, lr=0.1, steps=3)
    with pytest.raises(ValueError, match="optimizer must be one of"):
        tr.train(fs, prob, lr=0.1, steps=3, optimizer="sgdd")
    with pytest.raises(ValueError, match="solver must be one of"):
        tr.gradient_flow(fs, prob, 1.0, solver="euler")


def test_progress_reports_record_steps_then_the_total():
    prob = pb.WhitenedSquare(jnp.eye(2))
    fs = nw.identity_init((2, 2, 2), 0.5)
    seen: list[int] = []
    res = tr.train(fs, prob, lr=0.1, steps=1000, stop_loss=1e-6, schedule=tr.Schedule.every(100),
                   progress=seen.append)
    assert res.status == "converged" and res.stop_step < 1000
    assert seen[0] == min(100, res.stop_step) and seen[-1] == 1000  # skipped steps count as done
    assert all(b >= a for a, b in zip(seen, seen[1:], strict=False))


@pytest.mark.parametrize("schedule", [tr.Schedule.every(1), tr.Schedule.every(7), tr.Schedule.log(20),
                                      None])
def test_a_blown_up_iterate_is_never_recorded_for_any_schedule(schedule):
    prob = pb.sample_completion(jax.random.PRNGKey(0), pb.low_rank_ground_truth(
        jax.random.PRNGKey(1), (10, 10), 2), 50)
    fs = nw.gaussian_init(jax.random.PRNGKey(2), (10, 10, 10), 0.5, per="product")
    res = tr.train(fs, prob, lr=1e3, steps=1000, schedule=schedule)
    assert res.status == "diverged" and res.diverged_step is not None
    ceiling = 1e8 * max(float(res.loss[0]), 1.0)  # the default divergence_factor
    assert np.all(np.isfinite(res.loss)) and res.loss.max() <= ceiling
    # the returned state is the last recorded (finite) iterate, and it is before the blow-up
    assert np.isclose(float(prob.loss(jnp.asarray(res.W))), res.loss[-1], rtol=1e-12)
    assert res.steps[-1] <= res.diverged_step


def test_progress_reaches_the_callback_at_depth_3_and_per_thread():
    """jax.debug.callback runs on a runtime thread: updates must still reach each caller."""
    import threading

    prob = pb.WhitenedSquare(jax.random.normal(jax.random.PRNGKey(0), (4, 4)))
    fs = nw.gaussian_init(jax.random.PRNGKey(1), (4, 4, 4, 4), 0.3)
    seen: dict[str, list[int]] = {"a": [], "b": []}

    def work(tag):
        tr.train(fs, prob, lr=1e-3, steps=400, schedule=tr.Schedule.every(50),
                 progress=seen[tag].append)

    threads = [threading.Thread(target=work, args=(t,)) for t in seen]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for values in seen.values():
        # one report per record point (8) plus the final total, in order, nothing crossed over
        assert values[:-1] == list(range(50, 401, 50)) and values[-1] == 400
