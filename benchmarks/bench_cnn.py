"""The training step of fig1-cnn's paper network in JAX/equinox and in PyTorch, side by side.

The network is the TensorFlow MNIST tutorial's (two 5x5 convolutions with 32 and 64 channels,
2x2 max pooling, a 512-unit dense layer with dropout 0.5, 10 outputs; 1.66M parameters), on
28x28 images, float32, minibatch 64, momentum SGD: one step is the forward pass, the gradient
and the update. Contenders, each from the same weights:

- ``jax``: ``fig1_cnn.SmallCNN`` as the experiment trains it (per-image model under ``vmap``,
  convolutions as one matrix product of the image patches, ``fig1_cnn._conv_same``);
- ``jax, XLA conv``: the same model with ``eqx.nn.Conv2d``'s own convolution
  (``lax.conv_general_dilated``, what SmallCNN ran before);
- ``torch``: ``_fig1_cnn_torch.TorchCNN`` (``nn.Conv2d``, eager).

Per step: ``(min t(2S) - min t(S)) / S`` with ``S`` steps in one compiled ``lax.scan`` (JAX) or a
Python loop (PyTorch). On CPU ``t`` is the CPU time of the process, both frameworks on one thread
(XLA's Eigen pool off and intra-op parallelism 1, ``torch.set_num_threads(1)``); with
``--device gpu``, wall clock on the first CUDA device after a synchronize.

A short reproducer of where the JAX step lost its time (:data:`REPRODUCER`: XLA:CPU's
convolutions inside a compiled loop) is run, printed and written with the section.

Run: ``.venv/bin/python benchmarks/bench_cnn.py [--quick] [--device cpu|gpu]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time

if "--device" not in sys.argv or "cpu" in sys.argv[sys.argv.index("--device") + 1:][:1]:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_cpu_multi_thread_eigen=false"
                               " intra_op_parallelism_threads=1")

import equinox as eqx  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from _common import cpu_name, write_section  # noqa: E402

from deeplinear.experiments import fig1_cnn  # noqa: E402


def _clock():
    return time.perf_counter() if jax.default_backend() == "gpu" else time.process_time()


def per_step(run, steps, rounds) -> float:
    run(1)
    run(steps)
    run(2 * steps)
    short = long = np.inf
    for _ in range(rounds):
        t0 = _clock()
        run(steps)
        t1 = _clock()
        run(2 * steps)
        t2 = _clock()
        short, long = min(short, t1 - t0), min(long, t2 - t1)
    return max(long - short, 0.0) / steps


class XLAConvCNN(eqx.Module):
    """SmallCNN with eqx.nn.Conv2d's own convolution (channels first), for comparison."""

    model: fig1_cnn.SmallCNN

    def __call__(self, x, *, key=None):
        m = self.model

        def pool(v):
            c, h, w = v.shape
            return v.reshape(c, h // 2, 2, w // 2, 2).max(axis=(2, 4))

        x = pool(jax.nn.relu(m.conv1(x)))
        x = pool(jax.nn.relu(m.conv2(x)))
        x = jax.nn.relu(m.fc1(x.reshape(-1)))
        if key is not None and m.dropout > 0:
            keep = jax.random.bernoulli(key, 1.0 - m.dropout, x.shape)
            x = jnp.where(keep, x / (1.0 - m.dropout), 0.0)
        return m.fc2(x)


def jax_runner(model, X, Y, lr=0.01):
    """``run(steps)``: momentum SGD on one fixed minibatch in a compiled scan, fig1-cnn's step."""
    params, static = eqx.partition(model, eqx.is_inexact_array)
    opt = optax.sgd(lr, momentum=0.9)

    def loss_fn(p, key):
        m = eqx.combine(p, static)
        logits = jax.vmap(lambda xi, ki: m(xi, key=ki))(X, jax.random.split(key, X.shape[0]))
        return optax.softmax_cross_entropy_with_integer_labels(logits, Y).mean()

    @jax.jit
    def train(p, key, n):
        def body(_, c):
            p, s, key = c
            key, sub = jax.random.split(key)
            _, g = jax.value_and_grad(loss_fn)(p, sub)
            u, s = opt.update(g, s, p)
            return optax.apply_updates(p, u), s, key

        return jax.lax.fori_loop(0, n, body, (p, opt.init(p), key))[0]

    key = jax.random.key(0)
    return lambda n: jax.block_until_ready(train(params, key, n))


def torch_runner(model, X, Y, lr=0.01):
    import torch

    from deeplinear.experiments import _fig1_cnn_torch as side

    device = "cuda" if jax.default_backend() == "gpu" else "cpu"
    net = side.from_equinox(model, X.shape[1:], dropout=model.dropout).to(device)
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
    x = torch.as_tensor(np.array(X), device=device)
    y = torch.as_tensor(np.array(Y), dtype=torch.long, device=device)
    net.train()

    def run(n):
        for _ in range(n):
            loss = torch.nn.functional.cross_entropy(net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if device == "cuda":
            torch.cuda.synchronize()

    return run


REPRODUCER = '''\
import os; os.environ["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
import time, jax, jax.numpy as jnp
k = jax.random.split(jax.random.key(0), 5)
x, y = jax.random.normal(k[0], (64, 28, 28, 1)), jax.random.randint(k[1], (64,), 0, 10)
p = {"w1": jax.random.normal(k[2], (5, 5, 1, 32)) / 5, "w2": jax.random.normal(k[3], (5, 5, 32, 64)) / 28,
     "f1": jax.random.normal(k[4], (3136, 512)) / 56, "f2": jnp.zeros((512, 10))}
def xla_conv(x, w):  # XLA's convolution, NHWC
    return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
def patch_conv(x, w):  # the same convolution as one product of the 5x5 patches
    h, q = x.shape[1], jnp.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)))
    cols = jnp.concatenate([q[:, i:i + h, j:j + h] for i in range(5) for j in range(5)], -1)
    return cols @ w.reshape(-1, w.shape[-1])
def pool(x):
    b, h, w, c = x.shape; return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))
for conv in (xla_conv, patch_conv):
    def loss(p):
        h = pool(jax.nn.relu(conv(pool(jax.nn.relu(conv(x, p["w1"]))), p["w2"])))
        logits = jax.nn.relu(h.reshape(64, -1) @ p["f1"]) @ p["f2"]
        return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(64), y])
    step = jax.jit(lambda p: jax.tree.map(lambda a, b: a - 0.01 * b, p, jax.grad(loss)(p)))  # one SGD step
    loop = jax.jit(lambda p: jax.lax.fori_loop(0, 5, lambda _, p: step(p), p))  # 5 steps in one program
    for name, f, n in (("one step per call", step, 1), ("5 steps in a fori_loop", loop, 5)):
        jax.block_until_ready(f(p)); t = time.process_time(); jax.block_until_ready(f(p))
        print(f"{conv.__name__}, {name}: {(time.process_time() - t) / n * 1e3:.1f} ms per step")
'''


def reproducer() -> dict[str, float]:
    """Run :data:`REPRODUCER` in this process: ms per step of each line it prints."""
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        exec(compile(REPRODUCER, "reproducer", "exec"), {})  # noqa: S102 (our own text above)
    return {ln.split(": ")[0]: float(ln.split(": ")[1].split()[0])
            for ln in buf.getvalue().splitlines()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="a small network, printed only (BENCHMARKS.md untouched)")
    ap.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
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
                       "set_num_threads(1); XLA intra-op parallelism 1, Eigen single-threaded)")
    started = time.perf_counter()
    channels, hidden, batch, steps = ((4, 8), 32, 16, 2) if args.quick else ((32, 64), 512, 64, 4)
    model = fig1_cnn.SmallCNN((1, 28, 28), channels, 5, hidden, 10, key=jax.random.key(0),
                              dtype=jnp.float32, dropout=0.5)
    rng = np.random.default_rng(0)
    X = jnp.asarray(rng.random((batch, 1, 28, 28)), jnp.float32)
    Y = jnp.asarray(rng.integers(0, 10, batch))
    runs = {"jax (patch products)": jax_runner(model, X, Y),
            "jax (XLA convolution)": jax_runner(XLAConvCNN(model), X, Y),
            "torch": torch_runner(model, X, Y)}
    t = {}
    for name, run in runs.items():
        n = 1 if "XLA" in name else steps
        t[name] = per_step(run, n, 1 if "XLA" in name else args.rounds)
        print(f"{name}: {t[name] * 1e3:.1f} ms/step", flush=True)
    rep = {} if args.quick or args.device == "gpu" else reproducer()
    print(rep)
    torch_t = t["torch"]
    rows = "\n".join(f"| {name} | {v * 1e3:,.1f} ms | {v / torch_t:.2f}x |" for name, v in t.items())
    table = (f"| step of the CNN (batch {batch}, float32) | time per step | / PyTorch |\n"
             f"|---|---|---|\n{rows}")
    print(table)
    if args.quick:
        return
    load = os.getloadavg()
    slow = (rep.get("xla_conv, 5 steps in a fori_loop", np.nan)
            / rep.get("xla_conv, one step per call", np.nan))
    rep_lines = "; ".join(f"{k}: {v:,.1f} ms per step" for k, v in rep.items())
    section = (
        "## The CNN step: JAX against PyTorch (benchmarks/bench_cnn.py)\n\n"
        f"Date: {dt.date.today()}. Machine: {device_line}. JAX {jax.__version__}, equinox "
        f"{eqx.__version__}, PyTorch {torch.__version__}; load average {load[0]:.1f} / "
        f"{load[1]:.1f} / {load[2]:.1f} (1 / 5 / 15 min) at the end.\n"
        f"Command: `.venv/bin/python benchmarks/bench_cnn.py` ({time.perf_counter() - started:.0f}"
        " s). Momentum SGD steps on one minibatch of 64 28x28 images, the tutorial network "
        "(conv 5x5 32, pool, conv 5x5 64, pool, dense 512 with dropout 0.5, dense 10); per step "
        "`(min t(2S) - min t(S)) / S` (the XLA-convolution row: one step, one round).\n\n"
        f"{table}\n\n"
        "Where the time went: XLA:CPU's convolutions inside a loop. The experiment runs its "
        "minibatches in one compiled `lax.scan`; inside a loop body XLA:CPU's convolutions (and "
        f"their gradients) take {slow:.0f}x longer than the same step compiled alone, which is "
        "fast. "
        "The reproducer below (the same network, batch 64, float32, one thread) shows it; "
        f"measured in the same run: {rep_lines}. A product of the image patches "
        "(`fig1_cnn._conv_same`) costs the same in and out of a loop, so SmallCNN uses it: "
        "slower than XLA's convolution called step by step, but it keeps the whole run one "
        "compiled program.\n\n"
        f"```python\n{REPRODUCER}```\n")
    write_section("bench_cnn", section)


if __name__ == "__main__":
    main()
