"""Experiment protocol: a validated config in, a ``Results`` object out, plotting kept separate."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from pydantic import BaseModel


class ProgressHandle(Protocol):
    def advance(self, n: int = 1) -> None: ...


class Progress(Protocol):
    """What an experiment may report while it runs (the CLI passes a rich implementation)."""

    def task(self, description: str, total: int | None) -> ProgressHandle: ...


class _NullHandle:
    def advance(self, n: int = 1) -> None:
        return None


class NullProgress:
    """Progress that reports nothing (the default for library use)."""

    def task(self, description: str, total: int | None) -> ProgressHandle:
        return _NullHandle()


def step_bar(progress: Progress, description: str, steps: int) -> Callable[[int], None]:
    """A ``train(..., progress=...)`` callback that draws a bar of ``steps`` steps.

    The compiled loop reports the absolute step at each record point; this turns it into
    ``advance`` calls (a run that stops early simply leaves its bar short).
    """
    handle = progress.task(description, steps)
    done = [0]

    def report(step: int) -> None:
        if step > done[0]:
            handle.advance(step - done[0])
            done[0] = step

    return report


@dataclass
class Results:
    """What an experiment returns.

    Attributes:
        tables: named metric tables, each a list of rows of scalars (saved as CSV).
        arrays: named arrays (saved into one ``.npz``).
        summary: headline numbers, compared with ``Experiment.reported`` in the report.
        notes: free-text remarks (e.g. detected sign flips, divergences).
    """

    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    summary: dict[str, float | int | str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Experiment:
    """A named, registered experiment (one per figure of the notes)."""

    name: str
    description: str
    config_model: type[BaseModel]
    run: Callable[[BaseModel, Progress], Results]
    plot: Callable[[Results, Path], list[Path]]
    quick: dict[str, Any] = field(default_factory=dict)
    paper: dict[str, Any] = field(default_factory=dict)
    reported: dict[str, Any] = field(default_factory=dict)


REGISTRY: dict[str, Experiment] = {}


def register(experiment: Experiment) -> Experiment:
    """Add ``experiment`` to ``REGISTRY`` under its name (names are unique)."""
    if experiment.name in REGISTRY:
        raise ValueError(f"experiment {experiment.name!r} is already registered")
    REGISTRY[experiment.name] = experiment
    return experiment
