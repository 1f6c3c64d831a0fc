"""Write docs/results/locality/pathfinder-samples.png: eight generated Pathfinder images per path
length (3, 5, 7, 9; default 48-pixel spec, seed 0), each titled with its label."""

from __future__ import annotations

import sys
from pathlib import Path

from deeplinear.experiments._plotting import pyplot
from deeplinear.pathfinder import pathfinder

OUT = Path(__file__).resolve().parents[1] / "docs" / "results" / "locality" / "pathfinder-samples.png"


def main() -> int:
    plt = pyplot()
    lengths, per_row = (3, 5, 7, 9), 8
    fig, axes = plt.subplots(len(lengths), per_row, figsize=(1.5 * per_row, 1.65 * len(lengths)),
                             layout="constrained")
    for r, length in enumerate(lengths):
        x, y = pathfinder(64, length, seed=0, cache=False)
        for c in range(per_row):
            ax = axes[r, c]
            ax.imshow(x[c, 0], cmap="gray", interpolation="nearest")
            ax.set_title(f"length {length}: {'same path' if y[c] else 'two paths'}", fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUT, dpi=110)
    print(OUT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
