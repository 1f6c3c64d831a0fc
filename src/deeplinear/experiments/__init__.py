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

from deeplinear.experiments import fig2  # noqa: E402, F401, I001  (registers "fig2")
from deeplinear.experiments import fig3  # noqa: E402, F401  (registers "fig3")
from deeplinear.experiments import norms  # noqa: E402, F401  (registers "norms")
from deeplinear.experiments import fig1_regression  # noqa: E402, F401  (registers "fig1-regression")
from deeplinear.experiments import fig1_cnn  # noqa: E402, F401  (registers "fig1-cnn")
from deeplinear.experiments import tensor_completion  # noqa: E402, F401  (registers "tensor-completion")
from deeplinear.experiments import tensor_dynamics  # noqa: E402, F401  (registers "tensor-dynamics")
from deeplinear.experiments import tensor_natural  # noqa: E402, F401  (registers "tensor-natural")
from deeplinear.experiments import completion_benchmark  # noqa: E402, F401  (registers "completion-benchmark")
from deeplinear.experiments import init_balance  # noqa: E402, F401  (registers "init-balance")
from deeplinear.experiments import locality_pathfinder  # noqa: E402, F401  (registers "locality-pathfinder")
from deeplinear.experiments import locality_is_same  # noqa: E402, F401  (registers "locality-is-same")
