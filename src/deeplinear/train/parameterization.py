"""A parameterization: factors (a tuple of arrays) plus the end-to-end map the loss sees.

The training loops (:func:`train.train`, :func:`train.train_replicas`, :func:`train.gradient_flow`)
minimize ``phi(factors) = l(end_to_end(factors))`` for any parameterization: the deep matrix
factorization of Def 2 (``W_N ... W_1``, the default), a CP or hierarchical tensor factorization
(``deeplinear.tensor``), or a matricized deep factorization of a tensor. A parameterization is a
frozen, hashable dataclass (it keys the compiled program), with

* ``end_to_end(factors)``: the array the problem's loss takes;
* ``factor_gradients(factors, G)``: ``dphi/dfactors`` given ``G = grad l(end_to_end)``, analytic
  where the subclass gives one, else the vector-Jacobian product of ``end_to_end`` (autodiff);
* ``shape(factors)``: the shape of ``end_to_end(factors)`` without computing it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp

from deeplinear import network as nw

__all__ = [
    "DEEP_MATRIX",
    "DeepMatrixFactorization",
    "MatricizedFactorization",
    "Parameterization",
]

Factors = tuple[jax.Array, ...]


@dataclass(frozen=True)
class Parameterization:
    """Base class: ``phi(factors) = l(end_to_end(factors))``."""

    name = "parameterization"

    def end_to_end(self, factors: Factors) -> jax.Array:
        raise NotImplementedError

    def shape(self, factors: Factors) -> tuple[int, ...]:
        """Shape of ``end_to_end(factors)`` (``jax.eval_shape``; subclasses may do it directly)."""
        return tuple(jax.eval_shape(self.end_to_end, factors).shape)

    def factor_gradients(self, factors: Factors, G: jax.Array) -> Factors:
        """``dphi/dfactors = J_{end_to_end}(factors)^T G`` (chain rule; autodiff by default)."""
        _, vjp = jax.vjp(self.end_to_end, factors)
        return tuple(vjp(G)[0])

    def value_and_grads(self, factors: Factors, problem: Any) -> tuple[jax.Array, Factors]:
        """``(phi(factors), dphi/dfactors)`` for a ``problems.Problem``."""
        loss, G = problem.value_and_grad(self.end_to_end(factors))
        return loss, self.factor_gradients(factors, G)


@dataclass(frozen=True)
class DeepMatrixFactorization(Parameterization):
    """``W_{1:N} = W_N ... W_1`` with the analytic layer gradients of §2.1 (Def 2)."""

    name = "deep matrix factorization"

    def end_to_end(self, factors: Factors) -> jax.Array:
        return nw.end_to_end(factors)

    def shape(self, factors: Factors) -> tuple[int, ...]:
        return (factors[-1].shape[-2], factors[0].shape[-1])

    def factor_gradients(self, factors: Factors, G: jax.Array) -> Factors:
        return nw.factor_gradients(factors, G)


DEEP_MATRIX = DeepMatrixFactorization()
"""The default parameterization of the training loops (Def 2)."""


@dataclass(frozen=True)
class MatricizedFactorization(Parameterization):
    """A deep matrix factorization of the matricization of an order-K tensor: the first
    ``row_modes`` modes index the rows of ``W_N ... W_1`` (``d_N = prod`` of their sizes), the
    others its columns, and the end-to-end tensor is ``reshape(W_N ... W_1, tensor_shape)``
    (row-major). For an order-2 tensor with ``row_modes=1`` it is the deep matrix factorization
    itself, so matrix and tensor factorizations can be trained on one tensor problem."""

    tensor_shape: tuple[int, ...]
    row_modes: int

    name = "matricized deep matrix factorization"

    def __post_init__(self) -> None:
        if not 1 <= self.row_modes < len(self.tensor_shape):
            raise ValueError(f"row_modes must be in [1, {len(self.tensor_shape) - 1}], "
                             f"got {self.row_modes}")

    @property
    def matrix_shape(self) -> tuple[int, int]:
        """``(d_N, d_0)`` of the factorized matrix."""
        k = self.row_modes
        return (math.prod(self.tensor_shape[:k]), math.prod(self.tensor_shape[k:]))

    def end_to_end(self, factors: Factors) -> jax.Array:
        W = nw.end_to_end(factors)
        return jnp.reshape(W, W.shape[:-2] + tuple(self.tensor_shape))

    def shape(self, factors: Factors) -> tuple[int, ...]:
        return tuple(self.tensor_shape)

    def factor_gradients(self, factors: Factors, G: jax.Array) -> Factors:
        K = len(self.tensor_shape)
        return nw.factor_gradients(factors, jnp.reshape(G, G.shape[:G.ndim - K] + self.matrix_shape))
