"""Countering locality on Pathfinder (§E8): test accuracy vs path length, without and with the
input-gradient-change regularizer.

For each path length, a ResNet is trained on generated Pathfinder images
(:mod:`deeplinear.pathfinder`: are the two circles on the same dashed path?) by SGD with momentum
on the binary cross-entropy, once without the regularizer (coefficient 0) and once per positive
coefficient of ``deeplinear.torch.GradientChangeRegularizer`` (patches of side ``patch_size``
drawn at random at every step), over seeds. RMC22 (ResNet-18, 10,000 training images per length,
up to 150 epochs, 150-pixel images): without the regularizer the accuracy falls from 98.5% at
length 3 to chance at length 9; with it, it stays at 85.5% at length 9.

The separation-rank proxy is measured on held-out images across the far partition: I the
top-left quarter of the image, J the bottom-right quarter (``_locality._proxy``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
from pydantic import Field, field_validator

from deeplinear.config import NonEmptyList, NonNegativeFloat
from deeplinear.experiments._locality_config import Count, LocalityConfig
from deeplinear.experiments.base import Experiment, NullProgress, Progress, Reported, Results, register

__all__ = ["PathfinderLocalityConfig", "plot", "run"]

NAME = "locality-pathfinder"
REPORTED_LENGTHS = (3, 5, 7, 9)


class PathfinderLocalityConfig(LocalityConfig):
    """Pathfinder images and the training grid (see ``LocalityConfig`` for the training)."""

    coefficients: NonEmptyList[NonNegativeFloat] = Field(
        [0.0, 3.0], description="regularization coefficients; 0 (no regularizer) must be one "
        "(RMC22: 0, 3, 9)")
    lengths: NonEmptyList[Annotated[int, Field(strict=True, ge=1, le=30)]] = Field(
        [3, 9], description="path lengths in dashes (RMC22: 3, 5, 7, 9)")
    # the default is a check of the whole pipeline within make demo's minutes, not the effect:
    # at CPU sizes up to 3,000 images x 8 epochs the network stays near chance (docs/locality.md)
    train_samples: Count = Field(400, description="training images per level")
    test_samples: Count = Field(400, description="held-out images per level")
    epochs: Annotated[int, Field(strict=True, ge=1, le=1000)] = Field(
        2, description="maximum training epochs (RMC22: 150)")
    image_size: Annotated[int, Field(strict=True, ge=32, le=512)] = Field(
        48, description="image side in pixels; 150 draws RMC22's images (at the size the "
        "network sees)")

    @field_validator("lengths")
    @classmethod
    def _lengths(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError(f"lengths must not repeat a value, got {v}")
        return sorted(v)


def _spec(config: PathfinderLocalityConfig):
    from deeplinear.pathfinder import PAPER, PathfinderSpec

    return PAPER if config.image_size == PAPER.size else PathfinderSpec(size=config.image_size)


def _load(config: PathfinderLocalityConfig):
    from deeplinear.experiments._locality import Data
    from deeplinear.pathfinder import pathfinder
    from deeplinear.torch_locality import Patch

    spec = _spec(config)
    half = config.image_size // 2
    far = (Patch(0, 0, half, half), Patch(half, half, half, half))
    n = config.train_samples + config.test_samples

    def load(length: int) -> Data:
        x, y = pathfinder(n, length, spec=spec, seed=config.seed)
        t = config.train_samples
        return Data(x[:t], y[:t], x[t:], y[t:], far)

    return load


def run(config: PathfinderLocalityConfig, progress: Progress | None = None) -> Results:
    """Test accuracy vs path length, per regularization coefficient and seed (§E8)."""
    from deeplinear.experiments._locality import run_grid, summarize

    progress = progress or NullProgress()
    res = run_grid(config, progress, list(config.lengths), "length", _load(config), NAME)
    paper = (tuple(config.lengths) == REPORTED_LENGTHS and config.model == "resnet18"
             and config.image_size == 150 and config.train_samples == 10000)
    why = None if paper else (
        f"{config.model} ResNet on {config.image_size}-px images, {config.train_samples} training "
        f"images per length, {config.epochs} epochs, lengths {list(config.lengths)} (RMC22: "
        "ResNet-18, 150 px, 10,000 images, up to 150 epochs, lengths 3, 5, 7, 9)")
    on = (f"generated Pathfinder, {config.image_size} px, {config.train_samples} train / "
          f"{config.test_samples} test per length")
    summarize(res, config, "length", on, REPORTED_LENGTHS, why)
    from deeplinear.pathfinder import pathfinder

    samples = [pathfinder(config.train_samples + config.test_samples, L, spec=_spec(config),
                          seed=config.seed) for L in config.lengths]
    picks = [[int(np.argmax(y == 1)), int(np.argmax(y == 0))] for _, y in samples]
    gap = np.full((config.image_size, 2), 0.5, dtype=np.float32)  # a grey bar between the two
    res.arrays["samples"] = np.stack([np.concatenate([x[i, 0], gap, x[j, 0]], axis=1)
                                      for (x, _), (i, j) in zip(samples, picks, strict=True)])
    res.arrays["sample_labels"] = np.stack([y[p] for (_, y), p in zip(samples, picks, strict=True)])
    res.notes.append(why or "RMC22's sizes")
    return res


def plot(results: Results, out_dir: Path) -> list[Path]:
    """Accuracy vs path length (one curve per coefficient), the held-out interaction share, and
    two images of the longest paths."""
    from deeplinear.experiments._locality import plot_grid

    samples = np.asarray(results.arrays["samples"])[-1]
    labels = np.asarray(results.arrays["sample_labels"])[-1]
    length = int(np.asarray(results.arrays["levels"])[-1])
    titles = [f"length {length}: {'same path' if v else 'two paths'}" for v in labels]
    return plot_grid(results, out_dir, "locality_pathfinder", "path length (dashes)",
                     "Pathfinder", samples, titles)


EXPERIMENT = register(
    Experiment(
        name=NAME,
        description="Pathfinder: ResNet test accuracy vs path length without and with the "
        "input-gradient-change regularizer (§E8)",
        config_model=PathfinderLocalityConfig,
        run=run,
        plot=plot,
        quick={"lengths": [3, 9], "coefficients": [0.0, 1.0], "seeds": 1, "train_samples": 64,
               "test_samples": 32, "image_size": 48, "width": 4, "epochs": 1,
               "proxy_images": 1, "proxy_grid": 3, "reg_samples": 8},
        paper={"lengths": [3, 5, 7, 9], "coefficients": [0.0, 3.0, 9.0], "seeds": 3,
               "train_samples": 10000, "test_samples": 10000, "image_size": 150,
               "model": "resnet18", "epochs": 150, "patience": 20, "patch_size": 4,
               "reg_samples": 0, "device": "cuda", "threads": 16},
        question="Does a ResNet's Pathfinder accuracy fall with path length, and does the "
        "input-gradient-change regularizer recover it?",
        reported={
            "accuracy_without_reg": Reported(
                (98.5, 96.0, 69.0, 50.5), "§E8, RMC22 blog Fig. 6 (read off the figure, ±1): "
                "ResNet-18, lengths 3, 5, 7, 9"),
            "accuracy_with_reg": Reported(
                (98.5, 96.7, 91.7, 85.5), "§E8, RMC22 blog Fig. 6 (read off the figure, ±1): "
                "ResNet-18 with the regularizer, lengths 3, 5, 7, 9"),
        },
    )
)
