"""Is Same Class (§E8): two images side by side at a chosen horizontal distance; is it the same
class?

A pair's input is a ``height x width`` canvas holding two ``h x w`` images, vertically centred,
with ``distance`` blank columns between them, the pair centred horizontally (RMC22's layout:
the first image starts at column ``width // 2 - w - distance // 2``). The label is 1 when both
images have the same class. Relating the two halves is a long-range dependency whose range the
distance sets, so a network biased towards locality should find larger distances harder.
"""

from __future__ import annotations

import numpy as np

__all__ = ["is_same_pairs", "max_distance", "place_pair"]


def max_distance(width: int, image_width: int) -> int:
    """The largest distance at which both images fit a canvas of ``width`` columns."""
    return width - 2 * image_width


def place_pair(first: np.ndarray, second: np.ndarray, distance: int, height: int,
               width: int) -> np.ndarray:
    """Canvases ``(n, C, height, width)`` holding ``first[i]`` and ``second[i]`` (``(n, C, h,
    w)``) ``distance`` columns apart."""
    n, c, h, w = first.shape
    if not 0 <= distance <= max_distance(width, w) or h > height:
        raise ValueError(f"two {h}x{w} images {distance} px apart do not fit a {height}x{width} "
                         f"canvas (distance at most {max_distance(width, w)})")
    top, left = height // 2 - h // 2, width // 2 - w - distance // 2
    out = np.zeros((n, c, height, width), dtype=first.dtype)
    out[..., top:top + h, left:left + w] = first
    out[..., top:top + h, left + w + distance:left + 2 * w + distance] = second
    return out


def is_same_pairs(images: np.ndarray, labels: np.ndarray, n: int, distance: int, *,
                  height: int, width: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` pairs drawn from ``images`` (``(m, C, h, w)``) with ``labels``, half of them
    (``n // 2``) of one class: the first image uniform, the second a different image of the same
    class (label 1) or an image of another class (label 0).

    Returns canvases ``(n, C, height, width)`` float32 (:func:`place_pair`) and labels ``(n,)``
    int64 in an order drawn from ``seed``; the pairs do not depend on ``distance``.
    """
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    same = np.arange(n) < n // 2
    first = rng.integers(0, len(labels), size=n)
    by_class = {k: np.flatnonzero(labels == k) for k in np.unique(labels)}
    second = np.empty(n, dtype=np.int64)
    for i in range(n):  # n is at most tens of thousands: a loop over pairs is fine
        k = labels[first[i]]
        if same[i]:
            pool = by_class[k]
            j = pool[rng.integers(0, len(pool))]
            while j == first[i] and len(pool) > 1:
                j = pool[rng.integers(0, len(pool))]
        else:
            j = rng.integers(0, len(labels))
            while labels[j] == k:
                j = rng.integers(0, len(labels))
        second[i] = j
    perm = rng.permutation(n)
    x = place_pair(images[first[perm]], images[second[perm]], distance, height, width)
    return x.astype(np.float32), same[perm].astype(np.int64)
