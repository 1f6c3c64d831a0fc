"""Training loops: gradient descent (optax) on the factors and gradient flow (diffrax).

Every loop is one compiled program: an outer ``lax.scan`` over the recording points and an inner
``lax.while_loop`` over the steps between them, which stops early at a loss threshold or on
divergence. Public surface:

* :func:`train` / :func:`train_replicas`: (optax) gradient descent on the factors of ``phi``;
* :func:`gradient_flow`: ``dW_j/dt = -dphi/dW_j`` (§2.4) with an adaptive diffrax solver;
* :func:`iterate` / :func:`integrate`: the same machinery for any state (e.g. the end-to-end rule);
* :func:`group_rmsprop` and :func:`make_optimizer` (§4 pitfall 8);
* :class:`Status`: how a run ended (converged, max_steps, diverged);
* :class:`Parameterization`: the end-to-end map the loops train through (default ``W_N ... W_1``;
  CP and hierarchical tensor factorizations in ``deeplinear.tensor``).

Modules: ``_engine`` (the compiled recording loop, schedules, progress routing), ``optimizers``,
``descent`` (GD on the factors) and ``flow`` (diffrax).

Divergence (a non-finite loss, or the loss exceeding ``divergence_factor`` times its initial
value) stops the run: ``status`` is :attr:`Status.DIVERGED` (a ``str`` enum, so it also equals
``"diverged"``), ``diverged_step`` is the iterate whose loss blew up, and the state rolls back to
the last recorded (finite) one. No NaN is ever recorded.
"""

from deeplinear.train._engine import MetricFn, Schedule, Status, TrainResult, iterate
from deeplinear.train.descent import train, train_replicas
from deeplinear.train.flow import SOLVERS, FlowResult, gradient_flow, integrate
from deeplinear.train.optimizers import OPTIMIZERS, group_rmsprop, make_optimizer
from deeplinear.train.parameterization import (
    DEEP_MATRIX,
    DeepMatrixFactorization,
    MatricizedFactorization,
    Parameterization,
)

__all__ = [
    "DEEP_MATRIX",
    "DeepMatrixFactorization",
    "MatricizedFactorization",
    "OPTIMIZERS",
    "Parameterization",
    "SOLVERS",
    "FlowResult",
    "MetricFn",
    "Schedule",
    "Status",
    "TrainResult",
    "gradient_flow",
    "group_rmsprop",
    "integrate",
    "iterate",
    "make_optimizer",
    "train",
    "train_replicas",
]
