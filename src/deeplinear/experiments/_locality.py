"""What ``locality-pathfinder`` and ``locality-is-same`` share (§E8): the configuration, the
ResNets, training with and without the input-gradient-change regularizer, the separation-rank
proxy, the results and the figure. Each experiment supplies its data, one dataset per level
(path length, or distance between the two digits).

Needs PyTorch (the ``[torch]`` extra); imported only when one of the two experiments runs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional

from deeplinear.experiments._locality_config import LocalityConfig
from deeplinear.experiments.base import Headline, Progress, Results
from deeplinear.metrics import effective_rank
from deeplinear.torch_locality import (
    GradientChangeRegularizer,
    Patch,
    RandomPatches,
    gradient_change_penalty,
    separation_matrix,
)

__all__ = ["Data", "LocalityConfig", "run_grid", "small_resnet", "resnet18"]

# ------------------------------------------------------------------------------------- models

class _Block(nn.Module):
    """The ResNet basic block: two 3x3 convolutions with batch norm, plus a shortcut."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Identity() if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = functional.relu(self.bn1(self.conv1(x)))
        return functional.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


def _resnet(channels: int, widths: tuple[int, ...], blocks: tuple[int, ...], stem: nn.Module,
            outputs: int) -> nn.Sequential:
    layers: list[nn.Module] = [stem]
    cin = widths[0]
    for i, (w, n) in enumerate(zip(widths, blocks, strict=True)):
        for j in range(n):
            layers.append(_Block(cin, w, 2 if (i > 0 and j == 0) else 1))
            cin = w
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, outputs)]
    return nn.Sequential(*layers)


def small_resnet(channels: int, width: int, outputs: int = 1) -> nn.Sequential:
    """A 3x3 stem, then four stages of one basic block (``width`` to ``8 width`` channels,
    stride 2 from the second), global average pooling and a linear head. Its receptive field
    is 49 pixels wide: on inputs up to about that size some units see the whole input, so the
    network can relate any two regions (a narrower one could not: global average pooling and a
    linear head make the output a sum of functions of windows of the receptive field's size)."""
    stem = nn.Sequential(nn.Conv2d(channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width),
                         nn.ReLU())
    return _resnet(channels, (width, 2 * width, 4 * width, 8 * width), (1, 1, 1, 1), stem, outputs)


def resnet18(channels: int, outputs: int = 1) -> nn.Sequential:
    """ResNet-18 (He et al. 2016): 7x7/2 stem and 3x3/2 max pool, four stages of two basic
    blocks with 64-512 channels, global average pooling, a linear head."""
    stem = nn.Sequential(nn.Conv2d(channels, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64),
                         nn.ReLU(), nn.MaxPool2d(3, 2, 1))
    return _resnet(channels, (64, 128, 256, 512), (2, 2, 2, 2), stem, outputs)


# ----------------------------------------------------------------------------------- training

@dataclass(frozen=True)
class Data:
    """One level's binary task: images ``(m, C, H, W)`` float32 and labels ``(m,)`` in {0, 1}."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    far: tuple[Patch, Patch]  # the partition (I, J) of the separation-rank proxy


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, chunk: int = 500) -> float:
    model.eval()
    with torch.no_grad():
        logits = torch.cat([model(x[i:i + chunk]).reshape(-1) for i in range(0, len(x), chunk)])
    model.train()
    return float(((logits > 0).long() == y).float().mean())


@dataclass
class _Fit:
    model: nn.Module
    train_accuracy: float
    epochs: int
    penalty: float | None  # mean penalty over the last epoch's steps (None without it)
    diverged_step: int | None


def _train(config: LocalityConfig, data: Data, coefficient: float, seed: int,
           tick: Callable[[], None]) -> _Fit:
    """SGD with momentum on the binary cross-entropy, plus ``coefficient`` times the penalty on
    random patches; the batch order, init and patches all follow ``seed``."""
    torch.manual_seed(seed)
    dev = torch.device(config.device)
    x = torch.as_tensor(data.train_x, device=dev)
    y = torch.as_tensor(data.train_y, device=dev)
    channels = x.shape[1]
    model = (small_resnet(channels, config.width) if config.model == "small"
             else resnet18(channels)).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum)
    reg = GradientChangeRegularizer(
        coefficient, RandomPatches(config.patch_size, config.reg_distance, config.adjacent),
        generator=torch.Generator().manual_seed(seed))
    order = np.random.default_rng(seed)
    k = config.reg_samples or config.batch_size  # 0: the whole batch
    step, perfect_since, penalties = 0, None, []
    for epoch in range(1, config.epochs + 1):
        correct, penalties = 0, []
        for idx in np.array_split(order.permutation(len(x)), math.ceil(len(x) / config.batch_size)):
            xb, yb = x[torch.as_tensor(idx, device=dev)], y[torch.as_tensor(idx, device=dev)]
            logits = model(xb).reshape(-1)
            loss = functional.binary_cross_entropy_with_logits(logits, yb.float())
            if coefficient > 0 and len(idx) >= 2:
                loss = loss + reg(model, xb[:k], yb[:k])
                penalties.append(reg.last_penalty)
            step += 1
            if not math.isfinite(float(loss.detach())):
                return _Fit(model, float("nan"), epoch, None, step)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            correct += int(((logits.detach() > 0).long() == yb).sum())
        tick()
        if correct == len(x) and perfect_since is None:
            perfect_since = epoch
        if (config.patience is not None and perfect_since is not None
                and epoch - perfect_since >= config.patience):
            break
    return _Fit(model, _accuracy(model, x, y), epoch,
                float(np.mean(penalties)) if penalties else None, None)


def _proxy(config: LocalityConfig, model: nn.Module, data: Data, seed: int) -> dict[str, float]:
    """Separation-rank proxies across the far partition (I, J), on held-out images.

    ``penalty``: the regularizer's value at (I, J) (1: the gradient on I ignores x_J);
    ``interaction``: for each image, the outputs ``M[a, b]`` over a grid of held-out x_I and x_J
    (:func:`separation_matrix`); its double-centred part (row and column means removed) is the
    part no sum ``u(x_I) + v(x_J)`` explains; ``interaction`` is that part's share of the
    variance of ``M``, and ``effective_rank`` its effective rank (0 for an additive model)."""
    dev = torch.device(config.device)
    gen = np.random.default_rng(seed + 7919)
    n, g = config.proxy_images, config.proxy_grid
    pick = gen.choice(len(data.test_x), size=min(len(data.test_x), n + 2 * g), replace=False)
    x = torch.as_tensor(data.test_x[pick], device=dev)
    first, second = data.far
    model.eval()  # batch statistics of a grid of one image's variants would not mean much
    pen = float(gradient_change_penalty(model, x[: max(2, n)], None, (first, second),
                                        create_graph=False).detach())
    shares, ranks = [], []
    for i in range(min(n, len(x))):
        M = separation_matrix(model, x[i], x[n:n + g], x[n + g:n + 2 * g], first, second)
        M = M.double().cpu().numpy()
        centred = M - M.mean(0, keepdims=True) - M.mean(1, keepdims=True) + M.mean()
        total = float(((M - M.mean()) ** 2).sum())
        shares.append(float((centred ** 2).sum()) / total if total > 0 else 0.0)
        ranks.append(float(effective_rank(np.asarray(centred), tol=1e-6 * max(1.0, np.abs(M).max()))))
    model.train()
    return {"penalty": pen, "interaction": float(np.mean(shares)),
            "effective_rank": float(np.mean(ranks))}


def _stats(values: np.ndarray) -> tuple[float | None, float | None]:
    ok = values[np.isfinite(values)]
    if ok.size == 0:
        return None, None
    return float(ok.mean()), float(ok.std())


def run_grid(config: LocalityConfig, progress: Progress, levels: list[int], level_name: str,
             load: Callable[[int], Data], name: str) -> Results:
    """Train every (level, coefficient, seed) and measure test accuracy and the proxies.

    Arrays: ``accuracy``, ``train_accuracy``, ``penalty``, ``interaction``, ``effective_rank``
    and ``epochs`` of shape ``(levels, coefficients, seeds)`` (NaN where a run diverged),
    ``levels`` and ``coefficients``."""
    if config.device == "cuda" and not torch.cuda.is_available():
        raise ValueError('device = "cuda" but PyTorch sees no CUDA device; use --set device="cpu"')
    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        return _grid(config, progress, levels, level_name, load, name)
    finally:
        torch.set_num_threads(threads)  # leave the caller's setting as it was


def _grid(config: LocalityConfig, progress: Progress, levels: list[int], level_name: str,
          load: Callable[[int], Data], name: str) -> Results:
    coefs, seeds = config.coefficients, [config.seed + s for s in range(config.seeds)]
    shape = (len(levels), len(coefs), len(seeds))
    arrays = {k: np.full(shape, np.nan) for k in ("accuracy", "train_accuracy", "train_penalty",
                                                  "penalty", "interaction", "effective_rank",
                                                  "epochs", "seconds")}
    res = Results(subruns=int(np.prod(shape)))
    task = progress.task(f"{name}: {len(levels)} {level_name}s x {len(coefs)} coefficients x "
                         f"{len(seeds)} seeds", int(np.prod(shape)) * config.epochs)
    rows = []
    for a, level in enumerate(levels):
        data = load(level)
        tx = torch.as_tensor(data.test_x, device=torch.device(config.device))
        ty = torch.as_tensor(data.test_y, device=torch.device(config.device))
        for b, coef in enumerate(coefs):
            for c, seed in enumerate(seeds):
                started = time.process_time()
                fit = _train(config, data, coef, seed, lambda: task.advance(1))
                label = f"{level_name} {level}, coefficient {coef:g}, seed {seed}"
                row = {level_name: level, "coefficient": coef, "seed": seed, "epochs": fit.epochs}
                if fit.diverged_step is not None:
                    res.diverged(label, fit.diverged_step)
                    rows.append(row | {"status": "diverged"})
                    continue
                proxy = _proxy(config, fit.model, data, seed)
                values = {"accuracy": _accuracy(fit.model, tx, ty),
                          "train_accuracy": fit.train_accuracy,
                          "train_penalty": np.nan if fit.penalty is None else fit.penalty,
                          **proxy, "epochs": fit.epochs,
                          "seconds": time.process_time() - started}
                for key, v in values.items():
                    arrays[key][a, b, c] = v
                rows.append(row | {"status": "done"} | {
                    k: (None if not np.isfinite(v) else float(v)) for k, v in values.items()
                    if k != "epochs"})
    res.tables = {"runs": rows}
    res.arrays = {**arrays, "levels": np.asarray(levels), "coefficients": np.asarray(coefs)}
    return res


def summarize(res: Results, config: LocalityConfig, level_name: str, on: str,
              reported_levels: tuple[int, ...], why: str | None) -> None:
    """Summary (mean and std over seeds of every measured array), and the headline: test
    accuracy per level without the regularizer and with the best coefficient (the one with the
    highest mean accuracy at the largest level), and the proxy at the largest level."""
    levels = [int(v) for v in res.arrays["levels"]]
    coefs = [float(v) for v in res.arrays["coefficients"]]
    acc = res.arrays["accuracy"]
    summary: dict[str, float | int | str | None] = {}
    for key in ("accuracy", "train_accuracy", "train_penalty", "penalty", "interaction",
                "effective_rank", "epochs"):
        for a, level in enumerate(levels):
            for b, coef in enumerate(coefs):
                m, s = _stats(res.arrays[key][a, b])
                summary[f"{key}_{level_name}{level}_c{coef:g}"] = m
                summary[f"{key}_{level_name}{level}_c{coef:g}_std"] = s
    last = np.nanmean(acc[-1], axis=1) if np.isfinite(acc[-1]).any() else np.zeros(len(coefs))
    best = 1 + int(np.nanargmax(np.where(np.isfinite(last[1:]), last[1:], -1))) if len(coefs) > 1 else 0
    summary["best_coefficient"] = coefs[best]
    res.summary = summary
    seeds = acc.shape[2]

    def pct(a: int, b: int) -> tuple[float | None, float | None]:
        m, s = _stats(acc[a, b])
        return (None if m is None else round(100 * m, 1)), (None if s is None else round(100 * s, 1))

    def row(b: int) -> tuple[float, ...] | None:
        vals = [pct(a, b)[0] for a in range(len(levels))]
        return None if any(v is None for v in vals) else tuple(vals)

    res.headline = [
        Headline("accuracy_without_reg", row(0),
                 f"test accuracy (%) without the regularizer at {level_name}s {levels}, mean over "
                 f"{seeds} seeds", on, why if tuple(levels) != reported_levels or why else None),
        Headline("accuracy_with_reg", row(best),
                 f"test accuracy (%) with the regularizer (coefficient {coefs[best]:g}) at "
                 f"{level_name}s {levels}, mean over {seeds} seeds", on,
                 why if tuple(levels) != reported_levels or why else None),
    ]
    for b, which in ((0, "without"), (best, "with")):
        stds = [pct(a, b)[1] for a in range(len(levels))]
        res.headline.append(Headline(
            f"accuracy_{which}_reg_std", None if None in stds else tuple(stds),
            f"std over {seeds} seeds of the test accuracy (%) {which} the regularizer "
            f"(coefficient {coefs[b]:g}) at {level_name}s {levels}", on))
    a = len(levels) - 1
    for key, what in (("penalty", "held-out penalty at the far patches (1: no interaction)"),
                      ("interaction", "share of the output variance over (x_I, x_J) not additive")):
        for b in sorted({0, best}):
            m, _ = _stats(res.arrays[key][a, b])
            res.headline.append(Headline(f"{key}_{level_name}{levels[a]}_c{coefs[b]:g}", m,
                                         f"{what}, {level_name} {levels[a]}, coefficient "
                                         f"{coefs[b]:g}", on))


def plot_grid(results: Results, out_dir, stem: str, level_name: str, title: str,
              samples: np.ndarray | None = None, sample_titles: list[str] | None = None):
    """Left: test accuracy vs level, one curve per coefficient (mean, error bars one std over
    seeds); middle: the held-out interaction share; right (optional): sample images."""
    from deeplinear.experiments._plotting import pyplot, save

    plt = pyplot()
    levels = np.asarray(results.arrays["levels"])
    coefs = np.asarray(results.arrays["coefficients"])
    panels = 3 if samples is not None else 2
    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 3.6), layout="constrained")
    for key, ax, scale in (("accuracy", axes[0], 100.0), ("interaction", axes[1], 1.0)):
        arr = np.asarray(results.arrays[key], dtype=float) * scale
        for b, coef in enumerate(coefs):
            with np.errstate(all="ignore"):
                mean, std = np.nanmean(arr[:, b], axis=1), np.nanstd(arr[:, b], axis=1)
            ok = np.isfinite(mean)
            label = "without regularizer" if coef == 0 else f"regularizer, coefficient {coef:g}"
            ax.errorbar(levels[ok], mean[ok], yerr=std[ok], marker="o", capsize=3, label=label)
        ax.set_xlabel(level_name)
        ax.set_xticks(levels)
    axes[0].axhline(50, color="gray", ls=":", label="chance")
    axes[0].set_ylabel("test accuracy (%)")
    axes[0].set_title(title)
    axes[0].legend(fontsize=7)
    inter = np.asarray(results.arrays["interaction"], dtype=float)
    if np.all(inter[np.isfinite(inter)] > 0):
        axes[1].set_yscale("log")
    axes[1].set_ylabel("non-additive share of output variance")
    axes[1].set_title("interaction across far patches (held out)")
    if samples is not None:
        axes[2].imshow(samples, cmap="gray", interpolation="nearest")
        axes[2].set_title(" | ".join(sample_titles or []), fontsize=8)
        axes[2].axis("off")
        axes[2].grid(False)
    return save(fig, out_dir, stem)
