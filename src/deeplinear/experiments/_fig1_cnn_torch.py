"""The PyTorch side of ``fig1-cnn`` (§E2): the same CNN, weights copied from the equinox model,
the same minibatches and optimizer, trained with ``torch.optim.SGD``; imported only when a run
asks for ``framework = "torch"`` or ``"both"``."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional

from deeplinear.torch import FactorizedLinear, collapse, count_parameters, overparameterize

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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = functional.max_pool2d(functional.relu(self.conv1(x)), 2)
        x = functional.max_pool2d(functional.relu(self.conv2(x)), 2)
        x = functional.relu(self.fc1(x.flatten(1)))
        x = functional.dropout(x, self.dropout, self.training)
        return self.fc2(x)


def from_equinox(model: Any, image_shape: tuple[int, int, int], dropout: float = 0.0,
                 dtype: torch.dtype = torch.float32) -> TorchCNN:
    """A :class:`TorchCNN` with the weights of an equinox ``SmallCNN`` (plain layers)."""
    net = TorchCNN(image_shape, (model.conv1.out_channels, model.conv2.out_channels),
                   model.conv1.kernel_size[0], model.fc1.out_features, model.fc2.out_features,
                   dropout, dtype)
    with torch.no_grad():
        for name in ("conv1", "conv2", "fc1", "fc2"):
            src, dst = getattr(model, name), getattr(net, name)
            dst.weight.copy_(torch.as_tensor(np.array(src.weight)))
            dst.bias.copy_(torch.as_tensor(np.array(src.bias)).reshape(-1))
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
          momentum: float, lr_decay: float, decay_steps: int, weight_decay: float,
          seed: int) -> tuple[nn.Module, np.ndarray]:
    """Heavy-ball SGD (``v <- μ v + g``, ``θ <- θ - η_t v``, as ``optax.sgd``) on the batches
    ``batches[t]``; ``η_t = lr * lr_decay^floor(t / decay_steps)``; L2 ``weight_decay`` on the
    dense weights (factors) only. Returns the model and the batch losses (NaN after a blow-up)."""
    torch.manual_seed(seed)  # dropout masks
    dense = [p for m in model.modules() if isinstance(m, nn.Linear | FactorizedLinear)
             for name, p in m.named_parameters() if name != "bias"]
    dense_ids = {id(p) for p in dense}
    rest = [p for p in model.parameters() if id(p) not in dense_ids]
    opt = torch.optim.SGD([{"params": dense, "weight_decay": weight_decay},
                           {"params": rest, "weight_decay": 0.0}], lr=lr, momentum=momentum)
    losses = np.full(len(batches), np.nan)
    model.train()
    for t, b in enumerate(batches):
        for group in opt.param_groups:
            group["lr"] = lr * lr_decay ** (t // decay_steps)
        idx = torch.as_tensor(b)
        loss = functional.cross_entropy(model(X[idx]), Y[idx])
        value = float(loss.detach())
        losses[t] = value
        if not np.isfinite(value):
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model, losses


def build(model_eqx: Any, image_shape: tuple[int, int, int], *, overparam: bool, depth: int,
          width: int | None, init: str, dropout: float, seed: int) -> nn.Module:
    """The PyTorch twin of an equinox ``SmallCNN`` (same weights), overparameterized by
    :func:`deeplinear.torch.overparameterize` when asked (dense layers only, as in JAX)."""
    net = from_equinox(model_eqx, image_shape, dropout)
    if overparam:
        gen = torch.Generator().manual_seed(seed)
        net = overparameterize(net, depth, width=width, init=init, generator=gen)
    return net


def collapse_rel_diff(model: nn.Module, X: torch.Tensor) -> float:
    """Max |collapsed - factorized| logits over max |logits| (the collapse check)."""
    a, b = predict(model, X), predict(collapse(model), X)
    return float((a - b).abs().max() / a.abs().max().clamp_min(1e-30))
