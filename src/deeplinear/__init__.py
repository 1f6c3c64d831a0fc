"""deeplinear: linear neural networks, their dynamics, theory checks and the notes' experiments.

The public API, in one place (each name is documented where it is defined):

* building a network: :func:`end_to_end`, :func:`balancedness`, :func:`imbalance`, and the
  initializations :func:`gaussian_init`, :func:`identity_init`, :func:`orthogonal_init`,
  :func:`balanced_init`, :func:`with_det_sign` (``deeplinear.network``);
* problems (a loss on the end-to-end matrix): :class:`WhitenedSquare`, :class:`LpRegression`,
  :class:`MatrixSensing`, :class:`MatrixCompletion`, :class:`CustomLoss` and the generators
  :func:`low_rank_ground_truth`, :func:`sample_completion`, :func:`sample_sensing`
  (``deeplinear.problems``);
* training: the module ``deeplinear.train`` (``train``, ``train_replicas``, ``gradient_flow``,
  ``Schedule``); the end-to-end dynamics: :func:`end_to_end_descent`,
  :func:`end_to_end_gradient_flow` (``deeplinear.simulate``) and the vector fields of
  ``deeplinear.dynamics``;
* measuring: ``deeplinear.metrics`` (norms, ranks, errors) and ``deeplinear.curves`` (reading
  trajectories);
* the rest, by module: ``baselines`` (minimum nuclear norm), ``completion`` (deep matrix
  factorization as a scikit-learn estimator; ``observations``, the observed-entries type,
  ``biases``, ``completion_io``, its files), ``tensor`` (CP and hierarchical tensor
  factorizations), ``theory`` (one numerical check per statement), ``experiments`` (one per
  figure), ``overparam`` (overparameterized equinox models), ``torch`` (the same for PyTorch),
  ``data``, ``store``, ``sweep``, ``report``, ``config``, ``cli``.

Installed alone (``pip install deeplinear``), the package has its mathematical core; the command
line, the experiments' data and baselines, Dask and PyTorch come with extras
(``pip install 'deeplinear[all]'``), and a module that needs a missing one says which in one line.

Precision: importing the package changes nothing in JAX's configuration. Every function computes
in the dtype of its inputs, initializers and data generators take ``dtype`` (default JAX's
default float: float32, or float64 under ``jax_enable_x64``). For float64 (§4 pitfall 3), call
:func:`enable_x64` once, or compute inside ``with deeplinear.float64():`` (``jax.enable_x64(True)``).
The notes' experiments and the theory checks always run in float64.
"""

import contextlib
import importlib
from typing import Any

import jax

from deeplinear._optional import needs_extra
from deeplinear.network import (
    balanced_init,
    balancedness,
    end_to_end,
    gaussian_init,
    identity_init,
    imbalance,
    orthogonal_init,
    with_det_sign,
)
from deeplinear.problems import (
    CustomLoss,
    LpRegression,
    MatrixCompletion,
    MatrixSensing,
    WhitenedSquare,
    low_rank_ground_truth,
    sample_completion,
    sample_sensing,
)
from deeplinear.simulate import end_to_end_descent, end_to_end_gradient_flow

__version__ = "0.1.0"

_SUBMODULES = ("baselines", "biases", "cli", "completion", "completion_io", "config", "curves",
               "data", "dynamics", "experiments", "is_same", "metrics", "network", "observations",
               "overparam", "pathfinder", "problems", "report", "simulate", "store", "sweep",
               "tensor", "theory", "torch", "torch_locality", "train")
"""The public modules: each loads on first use (``deeplinear.torch`` imports PyTorch only then)."""
_NEED_EXTRAS = ("cli", "completion", "torch", "torch_locality")
"""Modules that need an extra to import (``cli``; ``experiments``; ``torch``): left out of
``__all__``, so ``from deeplinear import *`` works with the core alone and never imports torch."""

__all__ = [
    "CustomLoss",
    "LpRegression",
    "MatrixCompletion",
    "MatrixSensing",
    "WhitenedSquare",
    "__version__",
    "balanced_init",
    "balancedness",
    "enable_x64",
    "end_to_end",
    "end_to_end_descent",
    "end_to_end_gradient_flow",
    "float64",
    "gaussian_init",
    "identity_init",
    "imbalance",
    "low_rank_ground_truth",
    "orthogonal_init",
    "sample_completion",
    "sample_sensing",
    "with_det_sign",
    *(m for m in _SUBMODULES if m not in _NEED_EXTRAS),
]


def enable_x64(enabled: bool = True) -> None:
    """Switch JAX to float64 (``enabled=True``) or back to float32 for the whole process: the
    same as ``jax.config.update("jax_enable_x64", enabled)``. Call it before creating arrays."""
    jax.config.update("jax_enable_x64", bool(enabled))


def float64() -> contextlib.AbstractContextManager:
    """``with deeplinear.float64(): ...`` computes in float64 inside the block only
    (``jax.enable_x64(True)``, local to the thread; how experiments and checks run)."""
    return jax.enable_x64(True)


def __getattr__(name: str) -> Any:
    """``deeplinear.theory`` and the other submodules load on first use (PEP 562); one that needs
    a missing extra raises :class:`deeplinear._optional.MissingExtraError`, one line naming it."""
    if name in _SUBMODULES:
        with needs_extra(f"deeplinear.{name}"):
            return importlib.import_module(f"deeplinear.{name}")
    raise AttributeError(f"module 'deeplinear' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_SUBMODULES})
