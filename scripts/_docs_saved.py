"""Saved results as the docs script reads them, and the prose formatting of its numbers (a part
of ``scripts/docs_numbers.py``)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from deeplinear._format import plain as num
from deeplinear._format import sci
from deeplinear.store import read_table

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"
DEFAULT = RESULTS / "default"
EXPERIMENTS = ("fig1-regression", "fig1-cnn", "fig2", "fig3", "norms", "tensor-completion", "tensor-dynamics",
               "tensor-natural", "completion-benchmark", "init-balance", "locality-pathfinder",
               "locality-is-same")


# --------------------------------------------------------------------------- saved results


class Saved:
    """Read-only access to the saved results under ``results`` (default: docs/results)."""

    def __init__(self, results: Path = RESULTS) -> None:
        self.results = results
        self.default = results / "default"

    def _json(self, path: Path) -> Any:
        return json.loads(path.read_text(encoding="utf-8"))

    def _dir(self, run: str) -> Path:
        """An experiment of the default run, or another saved run folder (docs/results/<run>)."""
        return self.default / run if run in EXPERIMENTS else self.results / run

    def summary(self, run: str) -> dict[str, Any]:
        return self._json(self._dir(run) / "summary.json")

    def status(self, run: str) -> dict[str, Any]:
        return self._json(self._dir(run) / "status.json")

    def table(self, run: str, name: str) -> list[dict[str, Any]]:
        return read_csv(self._dir(run) / f"{name}.csv")

    def verify(self) -> list[dict[str, Any]]:
        return self._json(self.default / "verify.json")

    def run(self) -> dict[str, Any]:
        return self._json(self.default / "run.json")

    def paper_csv(self, name: str) -> list[dict[str, Any]]:
        return read_csv(self.results / name)

    def measured(self, exp: str) -> dict[str, Any]:
        """Every measured value of a run: the summary, overridden by the headline values."""
        s = self.summary(exp)
        return {**s["summary"], **{h["key"]: h["value"] for h in s["headline"]}}

    def reported(self, exp: str, key: str) -> Any:
        return self.summary(exp)["reported"][key]["value"]


def read_csv(path: Path) -> list[dict[str, Any]]:
    """A metric table as the store writes it (cells back as int, float, None or text)."""
    return read_table(path)


# --------------------------------------------------------------------------- formatting


def err(x: float | None) -> str:
    """A reconstruction error: 3 significant digits, plain above 0.1."""
    return num(x) if x is not None and abs(x) >= 0.1 else sci(x)


def seconds(s: float) -> str:
    s = round(s)
    return f"{s} s" if s < 120 else f"{s // 60} min {s % 60:02d} s"


def table(header: list[str], rows: Iterable[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def span(values: Iterable[float | None], f: Callable[[float], str] = num) -> str:
    """``a`` when all values print the same, else ``lo-hi`` (missing values left out)."""
    vals = sorted(v for v in values if v is not None)
    if not vals:
        return "-"
    lo, hi = f(vals[0]), f(vals[-1])
    if lo == hi:
        return lo
    return f"{lo} to {hi}" if "e" in lo + hi else f"{lo}–{hi}"


def given(v: float | list[float]) -> str:
    """A value as the notes give it (``7``, ``38.5``, ``1.06e-1``)."""
    if isinstance(v, list):
        return ", ".join(given(x) for x in v)
    return f"{v:g}" if 1e-2 <= abs(v) < 1e5 else sci(v)


def level(text: str) -> str:
    """A loss level from a key suffix: ``0.001`` -> ``1e-3``."""
    return sci(float(text), 1).replace(".", "")


def load_text(run: dict[str, Any], what: str = "the run") -> str:
    """The load seen during a saved run, and what else ran, as recorded."""
    lo, hi = run["load_1min"]
    span = f"{lo:.1f}" if f"{lo:.1f}" == f"{hi:.1f}" else f"{lo:.1f}–{hi:.1f}"
    text = f"1-minute load average {span} during {what}, which it includes"
    return text + (f"; {run['note']}" if run.get("note") else "")


def machine_line(saved: Saved) -> str:
    """Where and when the default runs were measured, and how loaded the machine was."""
    run = saved.run()
    return f"{run['machine']}, {run['date']}, {load_text(run, 'the whole default run')}"


