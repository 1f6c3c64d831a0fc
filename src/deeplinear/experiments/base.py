"""Experiment protocol: a validated config in, a ``Results`` object out, plotting kept separate."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
from pydantic import BaseModel

from deeplinear._dtype import in_float64

__all__ = [
    "agreement",
    "Divergence",
    "Experiment",
    "FINISHED",
    "Headline",
    "NullProgress",
    "Progress",
    "ProgressHandle",
    "register",
    "Reported",
    "Results",
    "Status",
    "step_bar",
]


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


Number = float | int
Value = Number | str | tuple[Number, ...] | None


@dataclass(frozen=True)
class Reported:
    """A value the notes report: the number, where it comes from and on what setup, and the band
    within which a measurement on the same setup agrees with it.

    ``factor``: agreement means ``value / factor <= measured <= value * factor`` (elementwise for
    a tuple); ``None`` where no band is meaningful (e.g. numbers read off a figure of another
    random draw): the pair is shown, not judged.
    """

    value: Number | tuple[Number, ...]
    where: str
    factor: float | None = None


@dataclass(frozen=True)
class Headline:
    """One of the few measured quantities that answer an experiment's question.

    ``key`` is the notes' key when the notes report the quantity (see ``Experiment.reported``);
    ``measured_on`` names the data and setup (a stand-in dataset is named as such);
    ``not_comparable`` says why the notes' value is not comparable with this measurement (a
    different dataset or size), or is ``None`` when it is. ``value`` is ``None`` when the
    quantity does not exist in this run (a level never reached, a diverged sub-run).
    """

    key: str
    value: Value
    description: str
    measured_on: str
    not_comparable: str | None = None


def agreement(reported: Reported, headline: Headline) -> tuple[str, str]:
    """``(verdict, detail)`` of a measured headline against the notes' reported value: verdict is
    "within band", "differs", "shown only", "not comparable" or "no value"."""
    if headline.not_comparable:
        return "not comparable", headline.not_comparable
    if headline.value is None:
        return "no value", "not measured in this run (not reached, or diverged)"
    if reported.factor is None:
        return "shown only", "no meaningful band (see where the notes' value comes from)"
    got = headline.value if isinstance(headline.value, tuple) else (headline.value,)
    want = reported.value if isinstance(reported.value, tuple) else (reported.value,)
    if len(got) != len(want) or not all(isinstance(v, int | float) for v in (*got, *want)):
        return "shown only", "values of different shapes or kinds"
    ratios = [g / w if w else float("inf") for g, w in zip(got, want, strict=True)]
    worst = max(ratios, key=lambda r: abs(np.log(r)) if r > 0 else np.inf)
    within = all(r > 0 and 1 / reported.factor <= r <= reported.factor for r in ratios)
    detail = f"measured/reported = {worst:.3g} (band: within a factor {reported.factor:g})"
    return ("within band" if within else "differs"), detail


@dataclass
class Results:
    """What an experiment returns.

    Attributes:
        tables: named metric tables, each a list of rows of scalars (saved as CSV).
        arrays: named arrays (saved into one ``.npz``).
        summary: every scalar the run measured (its details). A value that does not exist (a
            diverged sub-run, a level never reached) is ``None``.
        headline: the few quantities that answer the experiment's question (:class:`Headline`),
            compared with ``Experiment.reported`` in the report.
        notes: free-text remarks (e.g. detected sign flips).
        divergences: the training sub-runs that diverged (see :meth:`diverged`).
        subruns: how many training sub-runs the experiment made (0: not counted).
    """

    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    summary: dict[str, float | int | str | None] = field(default_factory=dict)
    headline: list[Headline] = field(default_factory=list)
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
    """A named, registered experiment (one per figure of the notes).

    ``question``: the question the figure answers, in one sentence (the report's first line);
    ``reported``: the notes' values by headline key (every key must appear in the headline of
    every run, measured or marked not comparable).
    ``precision``: ``"float64"`` (default) makes ``run`` compute inside ``jax.enable_x64(True)``
    whoever calls it (CLI, sweep workers, tests), so its numbers do not depend on the caller's
    JAX configuration; ``"caller"`` leaves the dtype to the caller (an experiment that sets
    the dtype of every array it creates).
    """

    name: str
    description: str
    config_model: type[BaseModel]
    run: Callable[[BaseModel, Progress], Results]
    plot: Callable[[Results, Path], list[Path]]
    quick: dict[str, Any] = field(default_factory=dict)
    paper: dict[str, Any] = field(default_factory=dict)
    reported: dict[str, Reported] = field(default_factory=dict)
    question: str = ""
    precision: Literal["float64", "caller"] = "float64"

    def __post_init__(self) -> None:
        if self.precision not in ("float64", "caller"):
            raise ValueError(f"precision must be 'float64' or 'caller', got {self.precision!r}")
        if self.precision == "float64":
            object.__setattr__(self, "run", in_float64(self.run))


REGISTRY: dict[str, Experiment] = {}


def register(experiment: Experiment) -> Experiment:
    """Add ``experiment`` to ``REGISTRY`` under its name (names are unique)."""
    if experiment.name in REGISTRY:
        raise ValueError(f"experiment {experiment.name!r} is already registered")
    REGISTRY[experiment.name] = experiment
    return experiment
