"""The configuration shared by ``locality-pathfinder`` and ``locality-is-same`` (§E8), kept free
of PyTorch so that the experiments register (and validate configs) without the extra."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from deeplinear.config import (
    ConfigModel,
    NonEmptyList,
    NonNegativeFloat,
    PositiveFloat,
    Replicas,
    Seed,
)

__all__ = ["Count", "LocalityConfig"]

Count = Annotated[int, Field(strict=True, ge=2, le=100_000)]


class LocalityConfig(ConfigModel):
    """Training and measurement settings common to both locality experiments."""

    coefficients: NonEmptyList[NonNegativeFloat] = Field(
        [0.0, 1.0], description="regularization coefficients; 0 (no regularizer) must be one")
    seeds: Replicas = Field(2, description="independent seeds (init, batch order, patches)")
    seed: Seed = Field(0, description="first seed")
    train_samples: Count = Field(1000, description="training images per level")
    test_samples: Count = Field(500, description="held-out images per level")
    model: Literal["small", "resnet18"] = Field(
        "small", description="'small': a 3-stage ResNet of one basic block per stage; "
        "'resnet18': ResNet-18 (RMC22)")
    width: Annotated[int, Field(strict=True, ge=1, le=256)] = Field(
        8, description="channels of the small ResNet's first stage (doubled at each stage)")
    epochs: Annotated[int, Field(strict=True, ge=1, le=1000)] = Field(
        4, description="maximum training epochs (RMC22: 150)")
    patience: Annotated[int, Field(strict=True, ge=0, le=1000)] | None = Field(
        None, description="stop this many epochs after the first epoch at 100% train accuracy "
        "(RMC22: 20); None trains all epochs")
    batch_size: Annotated[int, Field(strict=True, ge=2, le=4096)] = Field(64)
    lr: PositiveFloat = Field(1e-2, description="SGD learning rate (RMC22: 1e-2)")
    momentum: Annotated[float, Field(ge=0, lt=1)] = Field(0.9)
    patch_size: Annotated[int, Field(strict=True, ge=1, le=256)] = Field(
        4, description="side of the regularizer's patches I and J")
    reg_distance: Annotated[int, Field(strict=True, ge=0, le=512)] = Field(
        0, description="minimum gap in pixels between I and J")
    adjacent: bool = Field(False, description="draw J exactly reg_distance pixels from I")
    reg_samples: Annotated[int, Field(strict=True, ge=0, le=4096)] = Field(
        16, description="compute the penalty on the first reg_samples of each batch, to make CPU "
        "runs affordable (0: the whole batch, as RMC22)")
    proxy_images: Annotated[int, Field(strict=True, ge=1, le=1000)] = Field(
        4, description="held-out images on which the separation-rank proxy is measured")
    proxy_grid: Annotated[int, Field(strict=True, ge=2, le=256)] = Field(
        8, description="replacements of x_I and of x_J in the proxy's output matrix")
    threads: Annotated[int, Field(strict=True, ge=1, le=256)] = Field(
        1, description="torch CPU threads (torch.set_num_threads); 1 by default: on a busy "
        "2-core machine a second thread mostly waits for the first")
    device: Literal["cpu", "cuda"] = Field("cpu")

    @field_validator("reg_samples")
    @classmethod
    def _reg_samples(cls, v: int) -> int:
        if v == 1:
            raise ValueError("reg_samples must be 0 (the whole batch) or at least 2 (the penalty "
                             "swaps patches between samples)")
        return v

    @field_validator("coefficients")
    @classmethod
    def _with_zero(cls, v: list[float]) -> list[float]:
        if 0.0 not in v:
            raise ValueError(f"coefficients must include 0 (training without the regularizer), got {v}")
        if len(set(v)) != len(v):
            raise ValueError(f"coefficients must not repeat a value, got {v}")
        return sorted(v)
