"""Experiment protocol: a validated config in, a ``Results`` object out, plotting kept separate."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
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


class Status(StrEnum):
    """The outcome of a run, shared by results, run folders (``status.json``) and sweep indexes.

    ``partial``: some training sub-runs diverged, the rest are valid results; ``diverged``: no
    valid result remains; ``failed``: the experiment raised.
    """

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    PARTIAL = "partial"
    DIVERGED = "diverged"
    FAILED = "failed"


FINISHED = (Status.DONE, Status.PARTIAL, Status.DIVERGED)  # a run folder that holds results


@dataclass(frozen=True)
class Divergence:
    """A training sub-run that diverged: its label and the step whose loss blew up."""

    run: str
    step: int | None

    def __str__(self) -> str:
        at = "" if self.step is None else f" at step {self.step}"
        return f"{self.run}: diverged{at}"


@dataclass
class Results:
    """What an experiment returns.

    Attributes:
        tables: named metric tables, each a list of rows of scalars (saved as CSV).
        arrays: named arrays (saved into one ``.npz``).
        summary: headline numbers, compared with ``Experiment.reported`` in the report. A value
            that does not exist (a diverged sub-run, a level never reached) is ``None``.
        notes: free-text remarks (e.g. detected sign flips).
        divergences: the training sub-runs that diverged (see :meth:`diverged`).
        subruns: how many training sub-runs the experiment made (0: not counted).
    """

    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    summary: dict[str, float | int | str | None] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    divergences: list[Divergence] = field(default_factory=list)
    subruns: int = 0

    def diverged(self, run: str, step: int | None) -> None:
        """Record that the training sub-run ``run`` diverged at ``step`` (its values are then
        left out: the experiment must not derive quantities from it)."""
        self.divergences.append(Divergence(run, None if step is None else int(step)))

    @property
    def status(self) -> Status:
        """``done`` with no divergence; ``diverged`` when every counted sub-run diverged (or the
        experiment did not count them); else ``partial``."""
        if not self.divergences:
            return Status.DONE
        if self.subruns and len({d.run for d in self.divergences}) < self.subruns:
            return Status.PARTIAL
        return Status.DIVERGED


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
