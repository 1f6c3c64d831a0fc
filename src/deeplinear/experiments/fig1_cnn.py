"""Figure 1 (right): a CNN and its overparameterized twin trained with momentum SGD (§E2).

The overparameterized model is :func:`deeplinear.overparam.overparameterize` applied to the
CNN: each dense layer ``W`` (out x in) becomes ``W_2 W_1`` with ``W_1`` out x in and ``W_2``
out x out (§E2: "+~15%" parameters on the tutorial network). It computes the same function
(``init="balanced"``: exact balanced factors of the original weights, §2.5) unless
``overparam_init="random"`` (fresh factors, the paper's setting), so with the default the two
curves start at the same loss and differ only through the optimization. Training is one
compiled program per model (``lax.scan`` over minibatches), run once per seed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from pydantic import Field, model_validator

from deeplinear import data as datasets
from deeplinear.config import (
    ConfigModel,
    Depth,
    Finite,
    NonEmptyList,
    NonNegativeFloat,
    PathStr,
    PositiveFloat,
    Replicas,
    Seed,
    Size,
    Steps,
)
from deeplinear.curves import crossing_step, first_reach
from deeplinear.experiments._plotting import pyplot, save
from deeplinear.experiments.base import (
    Experiment,
    Headline,
    NullProgress,
    Progress,
    Reported,
    Results,
    register,
)
from deeplinear.overparam import (
    FactorizedLinear,
    collapse,
    count_parameters,
    overparameterize,
)

__all__ = ["Fig1CNNConfig", "SmallCNN", "plot", "run"]

NAME = "fig1-cnn"


class SmallCNN(eqx.Module):
    """conv -> ReLU -> 2x2 max-pool, twice, then dense -> ReLU -> dense (the TensorFlow MNIST
    tutorial's layout, §E2; SAME padding). Input ``(channels, height, width)``, output logits;
    ``dtype`` None is JAX's default float (float64 under deeplinear; the experiment uses float32)."""

    conv1: eqx.nn.Conv2d
    conv2: eqx.nn.Conv2d
    fc1: eqx.Module
    fc2: eqx.Module

    def __init__(self, image_shape: tuple[int, int, int], channels: tuple[int, int], kernel: int,
                 hidden: int, num_classes: int, *, key: jax.Array, dtype: Any = None):
        c, h, w = image_shape
        if h % 4 or w % 4:
            raise ValueError(f"image height and width must be divisible by 4, got {h}x{w}")
        k1, k2, k3, k4 = jax.random.split(key, 4)
        self.conv1 = eqx.nn.Conv2d(c, channels[0], kernel, padding="SAME", dtype=dtype, key=k1)
        self.conv2 = eqx.nn.Conv2d(channels[0], channels[1], kernel, padding="SAME", dtype=dtype,
                                   key=k2)
        flat = channels[1] * (h // 4) * (w // 4)
        self.fc1 = eqx.nn.Linear(flat, hidden, dtype=dtype, key=k3)
        self.fc2 = eqx.nn.Linear(hidden, num_classes, dtype=dtype, key=k4)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = _max_pool(jax.nn.relu(self.conv1(x)))
        x = _max_pool(jax.nn.relu(self.conv2(x)))
        x = jax.nn.relu(self.fc1(x.reshape(-1)))
        return self.fc2(x)


def _max_pool(x: jax.Array) -> jax.Array:
    """2x2 max-pooling with stride 2 of ``(channels, height, width)`` (as a reshape: it
    compiles much faster on CPU than ``reduce_window``'s select-and-scatter gradient)."""
    c, h, w = x.shape
    return x.reshape(c, h // 2, 2, w // 2, 2).max(axis=(2, 4))


class Fig1CNNConfig(ConfigModel):
    """Configuration of Figure 1 (right); every field is validated, unknown fields are errors.

    Ranges come from the shared types of :mod:`deeplinear.config` (finite numbers, strict ints)."""

    dataset: Literal["digits", "mnist"] = Field(
        "digits", description="'digits' (scikit-learn's bundled 8x8 digits, offline) or 'mnist'"
    )
    data_path: PathStr | None = Field(None, description="directory with the MNIST IDX files")
    steps: Steps = Field(800, description="SGD iterations (minibatches)")
    batch_size: Size = 64
    lr: PositiveFloat = Field(0.02, description="learning rate (the MNIST tutorial used 0.01)")
    momentum: Annotated[Finite, Field(ge=0, lt=1)] = Field(
        0.9, description="heavy-ball momentum in [0, 1) (the tutorial's 0.9)")
    lr_decay: Annotated[Finite, Field(gt=0, le=1)] = Field(
        1.0, description="learning-rate factor per epoch, in (0, 1] (tutorial: 0.95)")
    weight_decay: NonNegativeFloat = Field(
        0.0, description="L2 on the dense layers' factors (tutorial 5e-4)")
    seeds: Replicas = Field(3, description="independent seeds (init and batch order)")
    depth: Annotated[Depth, Field(ge=2)] = Field(
        2, description="factors per dense layer of the overparameterized model (>= 2)")
    hidden_width: Size | None = Field(None, description="inserted width (None = layer output)")
    overparam_init: Literal["balanced", "identity", "random"] = "balanced"
    channels: Annotated[list[Size], Field(min_length=2, max_length=2)] = Field(
        [8, 16], description="output channels of the two conv layers")
    kernel_size: Size = 3
    dense_hidden: Size = Field(32, description="width of the first dense layer")
    loss_levels: NonEmptyList[PositiveFloat] = Field([0.5, 0.2, 0.1])
    smoothing: Size = Field(25, description="moving-average window of the plotted batch loss")
    seed: Seed = 0

    @model_validator(mode="after")
    def _path(self) -> Fig1CNNConfig:
        if self.dataset == "mnist" and not self.data_path:
            raise ValueError("data_path is required for dataset='mnist' (the directory holding "
                             "train-images-idx3-ubyte[.gz] and train-labels-idx1-ubyte[.gz])")
        return self


def _load(config: Fig1CNNConfig) -> datasets.ImageData:
    if config.dataset == "mnist":
        return datasets.load_mnist(config.data_path, split="train")
    return datasets.digits_images()


def _build(config: Fig1CNNConfig, data: datasets.ImageData, key: jax.Array,
           overparam: bool) -> eqx.Module:
    k_model, k_over = jax.random.split(key)
    model = SmallCNN(data.images.shape[1:], tuple(config.channels), config.kernel_size,
                     config.dense_hidden, data.num_classes, key=k_model, dtype=jnp.float32)
    if overparam:
        model = overparameterize(model, config.depth, hidden_width=config.hidden_width,
                                 key=k_over, init=config.overparam_init)
    return model


def _dense_mask(params: eqx.Module) -> Any:
    """True on the dense layers' weights (or factors), False elsewhere (tutorial: L2 on FC)."""

    def is_dense(n: object) -> bool:
        return isinstance(n, eqx.nn.Linear | FactorizedLinear)

    def mark(node: object) -> object:
        if isinstance(node, eqx.nn.Linear):
            return eqx.tree_at(lambda m: (m.weight, m.bias), node, (True, False),
                               is_leaf=lambda x: x is None)
        if isinstance(node, FactorizedLinear):
            bias = None if node.bias is None else False
            return FactorizedLinear(tuple(True for _ in node.factors), bias, node.in_features,
                                    node.out_features)
        return jax.tree_util.tree_map(lambda _: False, node)

    return jax.tree_util.tree_map(mark, params, is_leaf=is_dense)


def _optimizer(config: Fig1CNNConfig, steps_per_epoch: int, params: Any) -> Any:
    lr = config.lr if config.lr_decay == 1.0 else optax.exponential_decay(
        config.lr, steps_per_epoch, config.lr_decay, staircase=True)
    sgd = optax.sgd(lr, momentum=config.momentum)
    if config.weight_decay == 0.0:
        return sgd
    return optax.chain(optax.add_decayed_weights(config.weight_decay, mask=_dense_mask(params)),
                       sgd)


def _train(models: list[eqx.Module], X: jax.Array, Y: jax.Array, batches: np.ndarray,
           optimizer: Any) -> tuple[list[eqx.Module], np.ndarray]:
    """Momentum SGD on each model (one per seed) over its minibatch sequence ``batches[seed]``.

    One compiled program (``lax.scan`` over minibatches) is reused for every seed; a loop over
    seeds is faster on CPU than ``vmap``, which turns convolutions into batched-weight ones.
    Returns the final models and the batch losses ``(seeds, steps)``.
    """
    static = eqx.partition(models[0], eqx.is_inexact_array)[1]

    def loss_fn(params: Any, x: jax.Array, y: jax.Array) -> jax.Array:
        model = eqx.combine(params, static)
        logits = jax.vmap(model)(x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    # the data are arguments, not constants baked into the program (slow XLA constant folding)
    @jax.jit
    def train(params: Any, idx: jax.Array, X: jax.Array, Y: jax.Array) -> tuple[Any, jax.Array]:
        def step(carry: Any, b: jax.Array) -> tuple[Any, jax.Array]:
            p, s = carry
            loss, g = jax.value_and_grad(loss_fn)(p, X[b], Y[b])
            updates, s = optimizer.update(g, s, p)
            return (optax.apply_updates(p, updates), s), loss

        (p, _), losses = lax.scan(step, (params, optimizer.init(params)), idx)
        return p, losses

    finals, losses = [], []
    for model, idx in zip(models, batches, strict=True):
        p, loss = train(eqx.filter(model, eqx.is_inexact_array), jnp.asarray(idx), X, Y)
        finals.append(eqx.combine(p, static))
        losses.append(np.asarray(loss, dtype=np.float64))
    return finals, np.stack(losses)


def _smooth(x: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average along the last axis (the first points average what exists)."""
    c = np.cumsum(np.concatenate([np.zeros(x.shape[:-1] + (1,)), x], axis=-1), axis=-1)
    n = np.minimum(np.arange(1, x.shape[-1] + 1), window)
    return (c[..., 1:] - c[..., np.arange(x.shape[-1]) + 1 - n]) / n


def run(config: Fig1CNNConfig, progress: Progress | None = None) -> Results:
    """Train the original and the overparameterized CNN on the same batches for every seed."""
    progress = progress or NullProgress()
    data = _load(config)
    X = jnp.asarray(data.images, dtype=jnp.float32)
    Y = jnp.asarray(data.labels)
    m = X.shape[0]
    if config.batch_size > m:
        raise ValueError(f"batch_size {config.batch_size} exceeds the {m} training images")
    steps_per_epoch = m // config.batch_size
    rng = np.random.default_rng(config.seed)
    epochs = -(-config.steps // steps_per_epoch)
    batches = np.stack([
        np.concatenate([rng.permutation(m)[: steps_per_epoch * config.batch_size]
                        for _ in range(epochs)]).reshape(-1, config.batch_size)[: config.steps]
        for _ in range(config.seeds)
    ])
    keys = jax.random.split(jax.random.key(config.seed), config.seeds)
    task = progress.task(f"{NAME} ({data.name}, {config.seeds} seeds)", 2)
    res = Results(subruns=2 * config.seeds, notes=[
        f"data: {data.name}, {m} images {tuple(data.images.shape[1:])}, {data.num_classes} classes",
        f"momentum SGD lr {config.lr} momentum {config.momentum}, batch {config.batch_size}, "
        f"{config.steps} iterations, {config.seeds} seeds (same batches for both models)",
        f"overparameterized: each dense layer -> product of {config.depth} matrices, "
        f"init '{config.overparam_init}'",
    ])
    rows: list[dict[str, Any]] = []
    curves: dict[str, np.ndarray] = {}
    for name, over in (("original", False), ("overparameterized", True)):
        models = [_build(config, data, k, over) for k in keys]
        res.summary[f"params_{name}"] = count_parameters(models[0])
        opt = _optimizer(config, steps_per_epoch, eqx.filter(models[0], eqx.is_inexact_array))
        final, losses = _train(models, X, Y, batches, opt)
        task.advance()
        res.arrays[f"{name}_batch_loss"] = losses
        ok = np.all(np.isfinite(losses), axis=1)
        for s in np.flatnonzero(~ok):  # excluded from every mean and level below
            res.diverged(f"{name} seed {s}", int(np.flatnonzero(~np.isfinite(losses[s]))[0]))
        if not ok.any():
            continue
        curve = _smooth(losses[ok], config.smoothing).mean(axis=0)
        curves[name] = curve
        res.arrays[f"{name}_smoothed_mean"] = curve
        acc = []
        for s in np.flatnonzero(ok):
            model_s = final[s]
            logits = jax.vmap(model_s)(X)
            acc.append(float(jnp.mean(jnp.argmax(logits, -1) == Y)))
            if over and s == np.flatnonzero(ok)[0]:
                collapsed = jax.vmap(collapse(model_s))(X)
                scale = float(jnp.max(jnp.abs(logits)))
                res.summary["collapse_max_rel_diff"] = float(
                    jnp.max(jnp.abs(collapsed - logits))) / max(scale, 1e-30)
        row = {"model": name, "params": res.summary[f"params_{name}"],
               "seeds_ok": int(ok.sum()), "initial_loss": float(losses[ok, 0].mean()),
               "final_smoothed_loss": float(curve[-1]), "train_accuracy": float(np.mean(acc))}
        for level in config.loss_levels:
            row[f"iters_to_{level:g}"] = first_reach(np.arange(curve.size), curve, level,
                                                     interpolate=False)
        rows.append(row)
        res.summary[f"{name}_initial_loss"] = row["initial_loss"]
        res.summary[f"{name}_final_loss"] = row["final_smoothed_loss"]
        res.summary[f"{name}_train_accuracy"] = row["train_accuracy"]
        for level in config.loss_levels:
            res.summary[f"{name}_iters_to_{level:g}"] = row[f"iters_to_{level:g}"]
    if "original" in curves and "overparameterized" in curves:
        a, b = curves["overparameterized"], curves["original"]
        res.summary["crossing_iteration"] = crossing_step(np.arange(a.size), a, b)
        res.summary["param_increase"] = (
            res.summary["params_overparameterized"] / res.summary["params_original"] - 1.0)
        res.summary["final_loss_ratio"] = float(b[-1] / a[-1])
        half = len(a) // 2  # robust to minibatch noise: geometric-mean ratio, second half
        res.summary["second_half_loss_ratio"] = float(np.exp(np.mean(np.log(b[half:] / a[half:]))))
    res.tables = {"models": rows}
    res.headline = _headline(res.summary, curves, config, data, m)
    return res


_PAPER_NET = {"channels": [32, 64], "kernel_size": 5, "dense_hidden": 512}


def _headline(summary: dict, curves: dict[str, np.ndarray], config: Fig1CNNConfig,
              data: datasets.ImageData, m: int) -> list[Headline]:
    """The notes' batch losses, crossing and parameter increase, and our final loss ratio."""
    def at(name: str, it: int) -> float | None:
        curve = curves.get(name)
        return None if curve is None or curve.size <= it else float(curve[it])

    values = {
        "original_initial_loss": summary.get("original_initial_loss"),
        "original_final_loss_at_8600": summary.get("original_final_loss"),
        "overparameterized_initial_loss": summary.get("overparameterized_initial_loss"),
        "overparameterized_loss_at_2000": at("overparameterized", 2000),
        "overparameterized_final_loss_at_8600": summary.get("overparameterized_final_loss"),
        "crossing_iteration": summary.get("crossing_iteration"),
        "param_increase": summary.get("param_increase"),
        "final_loss_ratio": summary.get("final_loss_ratio"),
    }
    descriptions = {
        "original_initial_loss": "batch loss of the original CNN at iteration 0 (seed mean)",
        "original_final_loss_at_8600": "smoothed batch loss of the original CNN at the end",
        "overparameterized_initial_loss": "batch loss of the overparameterized CNN at iteration 0",
        "overparameterized_loss_at_2000": "smoothed batch loss of the overparameterized CNN at "
                                          "iteration 2000",
        "overparameterized_final_loss_at_8600": "smoothed batch loss of the overparameterized CNN "
                                                "at the end",
        "crossing_iteration": "iteration from which the overparameterized CNN stays below the "
                              "original (smoothed seed means)",
        "param_increase": "relative increase in parameters from overparameterizing",
        "final_loss_ratio": "original / overparameterized smoothed loss at the end (ours: > 1 "
                            "means faster)",
    }
    net = {"channels": list(config.channels), "kernel_size": config.kernel_size,
           "dense_hidden": config.dense_hidden}
    on = (f"{data.name} ({m} images), CNN conv {config.channels} k{config.kernel_size}, dense "
          f"{config.dense_hidden}, {config.steps:,} iterations of batch {config.batch_size}, "
          f"{config.seeds} seeds")
    if config.dataset != "mnist":
        on = "stand-in dataset: " + on
        reason = (f"another dataset ({data.name}); the notes train the TensorFlow tutorial CNN "
                  "on MNIST (dataset = 'mnist' with data_path, --paper)")
    elif net != _PAPER_NET:
        reason = "a smaller CNN than the notes' TensorFlow tutorial network (use --paper)"
    elif config.steps != 8600:
        reason = f"{config.steps:,} iterations; the notes' curves run to 8,600"
    else:
        reason = None
    return [Headline(key, value, descriptions[key], on, reason) for key, value in values.items()]


def plot(results: Results, out_dir: Path) -> list[Path]:
    """Batch loss vs iteration (log scale): per-seed curves faint, seed mean bold.

    A diverged seed is drawn up to its blow-up only and left out of the mean (as in ``run``)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    colors = {"original": "k", "overparameterized": "tab:blue"}
    for name, color in colors.items():
        if f"{name}_batch_loss" not in results.arrays:
            continue
        raw = np.atleast_2d(np.asarray(results.arrays[f"{name}_batch_loss"], dtype=float))
        raw = np.where(np.isfinite(raw) & (raw > 0), raw, np.nan)  # log axis; no blow-up values
        steps = np.arange(raw.shape[-1])
        for s in range(raw.shape[0]):
            ax.plot(steps, raw[s], color=color, alpha=0.15, lw=0.6)
        ok = int(np.sum(np.all(np.isfinite(raw), axis=1)))
        n = results.summary.get(f"params_{name}")
        params = "" if n is None else f"{int(n):,} params; "
        lost = raw.shape[0] - ok
        seeds = f"mean of {ok} seed{'s' if ok != 1 else ''}" + (f", {lost} diverged" if lost else "")
        if f"{name}_smoothed_mean" in results.arrays:
            mean = np.asarray(results.arrays[f"{name}_smoothed_mean"], dtype=float)
            ax.plot(np.arange(mean.size), np.where(mean > 0, mean, np.nan), color=color, lw=2,
                    label=f"{name} ({params}{seeds}, smoothed)")
        else:
            ax.plot([], [], color=color, lw=2, label=f"{name} ({params}every seed diverged)")
    ax.plot([], [], color="0.4", alpha=0.4, lw=0.6, label="single seeds (faint)")
    ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("batch loss (softmax cross-entropy)")
    on = next((h.measured_on for h in getattr(results, "headline", []) or []
               if getattr(h, "measured_on", None)), None)
    title = "Figure 1 (right): CNN vs overparameterized CNN"
    if on:  # the dataset (a stand-in is named as such)
        title += "\n" + str(on).split(", ")[0]
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save(fig, out_dir, "fig1_cnn")


EXPERIMENT = register(Experiment(
    name=NAME,
    description="Figure 1 right (§E2): small CNN vs the same CNN with every dense layer a "
                "product of 2 matrices, momentum SGD, batch loss vs iteration, several seeds",
    config_model=Fig1CNNConfig,
    run=run,
    plot=plot,
    quick={"steps": 300, "seeds": 2, "channels": [4, 8], "dense_hidden": 16},
    paper={"steps": 8600, "channels": [32, 64], "kernel_size": 5, "dense_hidden": 512,
           "lr": 0.01, "lr_decay": 0.95, "weight_decay": 5e-4, "seeds": 3},
    question="Does replacing each dense layer of a CNN by a product of two matrices (same function "
    "at initialization, about 15% more parameters) speed up its training?",
    reported={
        key: Reported(value, "§E2, blog 2018-03-02 figure (MNIST, TensorFlow tutorial CNN, "
                      f"batch 64, 8,600 iterations), read off the figure; {band}", factor)
        for key, value, band, factor in (
            ("original_initial_loss", 3.5, "band: within a factor 1.5", 1.5),
            ("original_final_loss_at_8600", 1.6, "band: within a factor 2 (noisy)", 2.0),
            ("overparameterized_initial_loss", 14.0, "band: within a factor 1.5", 1.5),
            ("overparameterized_loss_at_2000", 0.3, "band: within a factor 2 (noisy)", 2.0),
            ("overparameterized_final_loss_at_8600", 0.05, "band: within a factor 3 (0.04-0.15)",
             3.0),
            ("crossing_iteration", 500, "band: within a factor 2", 2.0),
            ("param_increase", 0.158, "band: within a factor 1.1", 1.1),
        )
    },
))
