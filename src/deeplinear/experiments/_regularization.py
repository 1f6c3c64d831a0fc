"""Shared pieces of the implicit-regularization experiments (fig2, fig3, norms; §2.12-2.13)."""

from __future__ import annotations

from collections.abc import Sequence


def check_depths(name: str, depths: Sequence[int], minimum: int = 1) -> list[int]:
    """``depths`` sorted, checked: a non-empty list of distinct integers >= ``minimum``.

    (Config models get the per-item range from :data:`deeplinear.config.Depth`; this adds the
    "no repeats" rule and the ordering.)"""
    depths = list(depths)
    if not depths or any(isinstance(d, bool) or not isinstance(d, int) or d < minimum
                         for d in depths):
        raise ValueError(f"{name} must be a non-empty list of depths >= {minimum}, got {depths}")
    if len(set(depths)) != len(depths):
        raise ValueError(f"{name} must not repeat a depth, got {depths}")
    return sorted(depths)
