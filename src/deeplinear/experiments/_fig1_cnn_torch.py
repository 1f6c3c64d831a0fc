"""The PyTorch side of ``fig1-cnn`` (§E2): the same CNN, weights copied from the equinox model,
the same minibatches and optimizer, trained with ``torch.optim.SGD``; imported only when a run
asks for ``framework = "torch"`` or ``"both"``."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional

from deeplinear.torch import collapse, count_parameters, dense_l2, overparameterize

__all__ = ["TorchCNN", "build", "collapse_rel_diff", "count_parameters", "from_equinox", "predict",
           "train"]


class TorchCNN(nn.Module):
    """conv -> ReLU -> 2x2 max-pool, twice, then dense -> ReLU -> dropout -> dense: the layout
    of ``fig1_cnn.SmallCNN`` (SAME padding), input ``(batch, channels, height, width)``."""

    def __init__(self, image_shape: tuple[int, int, int], channels: tuple[int, int], kernel: int,
                 hidden: int, num_classes: int, dropout: float = 0.0,
                 dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        c, h, w = image_shape
        self.conv1 = nn.Conv2d(c, channels[0], kernel, padding="same", dtype=dtype)
        self.conv2 = nn.Conv2d(channels[0], channels[1], kernel, padding="same", dtype=dtype)
        self.fc1 = nn.Linear(channels[1] * (h // 4) * (w // 4), hidden, dtype=dtype)
        self.fc2 = nn.Linear(hidden, num_classes, dtype=dtype)
        self.dropout = dropout
        self.generator: torch.Generator | None = None  # dropout masks (None: torch's global)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = functional.max_pool2d(functional.relu(self.conv1(x)), 2)
        x = functional.max_pool2d(functional.relu(self.conv2(x)), 2)
        x = functional.relu(self.fc1(x.flatten(1)))
        if self.training and self.dropout > 0:  # inverted dropout from this model's generator
            keep = torch.empty_like(x).bernoulli_(1.0 - self.dropout, generator=self.generator)
            x = x * keep / (1.0 - self.dropout)
        return self.fc2(x)


def from_equinox(model: Any, image_shape: tuple[int, int, int], dropout: float = 0.0,
                 dtype: torch.dtype = torch.float32) -> nn.Module:
    """A :class:`TorchCNN` with the weights of an equinox ``SmallCNN``; when the dense layers of
    ``model`` are factorized (``deeplinear.overparam.FactorizedLinear``), the twin's are too
    (:func:`deeplinear.torch.overparameterize`), with the same factors."""
    from deeplinear.overparam import FactorizedLinear as EqxFactorized
    from deeplinear.overparam import collapse as eqx_collapse

    plain = eqx_collapse(model)
    net = TorchCNN(image_shape, (plain.conv1.out_channels, plain.conv2.out_channels),
                   plain.conv1.kernel_size[0], plain.fc1.out_features, plain.fc2.out_features,
                   dropout, dtype)
    with torch.no_grad():
        for name in ("conv1", "conv2", "fc1", "fc2"):
            src, dst = getattr(plain, name), getattr(net, name)
            dst.weight.copy_(torch.as_tensor(np.array(src.weight)))
            dst.bias.copy_(torch.as_tensor(np.array(src.bias)).reshape(-1))
    if not isinstance(model.fc1, EqxFactorized):
        return net
    with torch.no_grad():
        for name in ("fc1", "fc2"):
            fs = getattr(model, name).factors
            layer = overparameterize(getattr(net, name), len(fs), width=int(fs[0].shape[0]),
                                     init="identity")  # the structure; then the same factors
            for dst, src in zip(layer.factors, fs, strict=True):
                dst.copy_(torch.as_tensor(np.array(src)))
            setattr(net, name, layer)
    return net


def predict(model: nn.Module, X: torch.Tensor, chunk: int = 1000) -> torch.Tensor:
    """Logits of ``model`` (in eval mode: no dropout) on ``X``, ``chunk`` images at a time."""
    was = model.training
    model.eval()
    with torch.no_grad():
        out = torch.cat([model(X[i:i + chunk]) for i in range(0, X.shape[0], chunk)])
    model.train(was)
    return out


def train(model: nn.Module, X: torch.Tensor, Y: torch.Tensor, batches: np.ndarray, *, lr: float,
          momentum: float, lr_decay: float, decay_every: tuple[int, int], weight_decay: float,
          end_to_end: bool, seed: int) -> tuple[nn.Module, np.ndarray]:
    """Heavy-ball SGD (``v <- μ v + g``, ``θ <- θ - η_t v``, as ``optax.sgd``) on the batches
    ``batches[t]`` of the objective ``CE + weight_decay * dense_l2(model, end_to_end)`` (the
    TensorFlow tutorial's loss); ``η_t = lr * lr_decay^floor(t a / b)`` with
    ``(a, b) = decay_every`` (``(1, k)``: every k steps; ``(batch, m)``: every epoch of m images).

    Returns the model and ``(3, steps)``: the objective, the cross-entropy and the L2 term of
    each minibatch before its step (NaN from a blow-up on)."""
    model.generator = torch.Generator().manual_seed(seed)  # dropout masks, this model's own
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    curves = np.full((3, len(batches)), np.nan)
    model.train()
    for t, b in enumerate(batches):
        for group in opt.param_groups:
            group["lr"] = lr * lr_decay ** ((t * decay_every[0]) // decay_every[1])
        idx = torch.from_numpy(np.array(b))
        ce = functional.cross_entropy(model(X[idx]), Y[idx])
        l2 = weight_decay * dense_l2(model, end_to_end=end_to_end) if weight_decay else ce * 0
        loss = ce + l2
        curves[:, t] = float(loss.detach()), float(ce.detach()), float(l2.detach())
        if not np.isfinite(curves[0, t]):
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model, curves


def build(model_eqx: Any, image_shape: tuple[int, int, int], *, dropout: float) -> nn.Module:
    """The PyTorch twin of an equinox ``SmallCNN``, plain or overparameterized (same weights or
    factors)."""
    return from_equinox(model_eqx, image_shape, dropout)


def collapse_rel_diff(model: nn.Module, X: torch.Tensor) -> float:
    """Max |collapsed - factorized| logits over max |logits| (the collapse check)."""
    a, b = predict(model, X), predict(collapse(model), X)
    return float((a - b).abs().max() / a.abs().max().clamp_min(1e-30))
