"""Tensor factorizations, the step beyond linear networks (§2.15, §E6-§E8).

* :mod:`~deeplinear.tensor.cp`: CP factorization ``W = Σ_r w_r^1 ⊗ ... ⊗ w_r^N`` (a shallow
  convolutional arithmetic circuit), component norms, Gaussian and per-component balanced inits;
* :mod:`~deeplinear.tensor.ht`: hierarchical tensor factorization on a binary mode tree (a deep
  convolutional arithmetic circuit), local components and their norms;
* :mod:`~deeplinear.tensor.problems`: tensor completion and sensing losses and their data;
* :mod:`~deeplinear.tensor.rank`: tensor rank estimated by CP-ALS (tensorly);
* :func:`compare`: deep matrix, CP and HT factorization trained on one problem in one call.

Each factorization is a ``train.Parameterization``, so ``train``, ``train_replicas`` and
``gradient_flow`` train it like a linear network (same optimizers, schedules, divergence handling).
"""

from deeplinear.tensor import cp, ht, problems, rank
from deeplinear.tensor.compare import compare
from deeplinear.tensor.cp import CPEntries, CPFactorization
from deeplinear.tensor.ht import HTFactorization
from deeplinear.tensor.problems import (
    ObservedEntries,
    TensorCompletion,
    TensorSensing,
    cp_ground_truth,
    sample_tensor_completion,
    sample_tensor_sensing,
)
from deeplinear.tensor.rank import cp_rank

__all__ = [
    "CPEntries",
    "CPFactorization",
    "HTFactorization",
    "ObservedEntries",
    "TensorCompletion",
    "TensorSensing",
    "compare",
    "cp",
    "cp_ground_truth",
    "cp_rank",
    "ht",
    "problems",
    "rank",
    "sample_tensor_completion",
    "sample_tensor_sensing",
]
