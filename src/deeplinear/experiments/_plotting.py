"""Shared matplotlib set-up for every experiment figure: one style, one way of saving.

Every experiment's ``plot`` gets pyplot from :func:`pyplot` (Agg backend, the figures' style) and
writes each figure with :func:`save` (PNG and PDF, same dpi, tight bounding box, figure closed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from deeplinear._optional import needs_extra

__all__ = ["DPI", "FORMATS", "finite", "pyplot", "save"]

DPI = 150
FORMATS = ("png", "pdf")

_STYLE = {
    "font.size": 10,
    "axes.titlesize": 10,
    "axes.labelsize": 10,
    "legend.fontsize": 8,
    "axes.grid": True,
    "grid.alpha": 0.3,
}


def pyplot():
    """matplotlib's pyplot on the Agg backend, with the style used by every figure."""
    with needs_extra("plotting"):
        import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update(_STYLE)
    return plt


def save(fig: Any, out_dir: Path, stem: str) -> list[Path]:
    """Write ``fig`` as ``<stem>.png`` and ``<stem>.pdf`` under ``out_dir``; close it."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in FORMATS:
        path = out_dir / f"{stem}.{ext}"
        fig.savefig(path, dpi=DPI, bbox_inches="tight")
        paths.append(path)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return paths


def finite(*arrays: Any) -> np.ndarray:
    """Mask of the positions where every one of ``arrays`` is finite (None counts as missing)."""
    mask = None
    for a in arrays:
        a = np.asarray(a, dtype=float) if a is not None else np.array(np.nan)
        m = np.isfinite(a)
        mask = m if mask is None else mask & m
    return mask
