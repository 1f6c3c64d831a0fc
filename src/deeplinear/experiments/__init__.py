"""Registered experiments, one module per figure of the notes (see ``base.REGISTRY``)."""

from deeplinear.experiments.base import (
    REGISTRY,
    Experiment,
    NullProgress,
    Progress,
    Results,
    register,
)

__all__ = ["REGISTRY", "Experiment", "NullProgress", "Progress", "Results", "register"]
