"""Hierarchical tensor (HT) factorization on a binary mode tree (§2.15, RMC22).

A mode tree is a nested tuple of mode indices, e.g. ``((0, 1), (2, 3))`` for order 4; every
internal node has two children. Node ``ν`` has a local rank ``R_ν`` (a leaf ``n``: ``R_n = d_n``).
Every non-root node carries a weight matrix ``B_ν`` of shape ``(R_ν, R_pa(ν))`` and the root
an output vector ``B_root`` of shape ``(R_root, 1)``. With ``T_leaf = I`` and, for an internal node
with children ``c_1, c_2``, ``T_ν[i_ν, r] = Π_c (T_c B_c)[i_c, r]``, the end-to-end tensor is
``W = T_root B_root``. A hierarchical tensor factorization is a deep convolutional arithmetic
circuit (product pooling over windows of two).

**Local components.** Node ``ν`` has the local tensor of order ``K = 3`` (children + parent)
``L_ν = Σ_{r ∈ [R_ν]} B_{c_1}[:, r] ⊗ B_{c_2}[:, r] ⊗ B_ν[r, :]``: ``W`` is linear in ``L_ν``
given the other weights, so ``L_ν`` is a CP factorization whose r-th component is the r-th local
component; its norm is ``||B_{c_1}[:, r]|| ||B_{c_2}[:, r]|| ||B_ν[r, :]||``. Under gradient flow
with the component balanced, ``dσ/dt = K σ^{2-2/K} <-dl/dL_ν, unit component>`` (RMC22).

Factors are a flat tuple: the matrices of the non-root nodes in post-order, then ``B_root``
(:func:`nodes` gives the order). Everything computes in the dtype of the factors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import jax
import jax.numpy as jnp

from deeplinear._dtype import float_dtype
from deeplinear.train.parameterization import Parameterization

__all__ = [
    "HTFactorization",
    "balance_node",
    "balanced_tree",
    "gaussian_init",
    "local_component_norms",
    "local_component_vectors",
    "local_tensor",
    "local_tensor_gradient",
    "nodes",
]

Tree = Any  # an int (leaf) or a pair of trees
HTFactors = tuple[jax.Array, ...]
LOCAL_ORDER = 3
"""K, the order of every local tensor of a binary mode tree (two children and the parent)."""


def balanced_tree(order: int) -> Tree:
    """The binary mode tree that pools adjacent modes first: ``((0, 1), (2, 3))`` for order 4,
    ``((0, 1), 2)`` for order 3 (RMC22's "checkerboard" pooling with windows of two)."""
    if int(order) != order or order < 2:
        raise ValueError(f"order must be an integer >= 2, got {order!r}")
    level: list[Tree] = list(range(order))
    while len(level) > 1:
        pairs = [(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        level = pairs + ([level[-1]] if len(level) % 2 else [])
    return level[0]


def _leaves(tree: Tree) -> list[int]:
    return [tree] if isinstance(tree, int) else _leaves(tree[0]) + _leaves(tree[1])


def nodes(tree: Tree) -> list[Tree]:
    """Every node of ``tree`` in post-order (children before parents; the root last)."""
    if isinstance(tree, int):
        return [tree]
    return nodes(tree[0]) + nodes(tree[1]) + [tree]


def _check_tree(tree: Tree) -> Tree:
    def norm(t):
        if isinstance(t, int):
            return int(t)
        if not (isinstance(t, tuple | list) and len(t) == 2):
            raise ValueError(f"a mode tree is an int or a pair of trees, got {t!r}")
        return (norm(t[0]), norm(t[1]))

    tree = norm(tree)
    if isinstance(tree, int):
        raise ValueError("the mode tree needs at least two modes")
    if sorted(_leaves(tree)) != list(range(len(_leaves(tree)))):
        raise ValueError(f"the tree's leaves must be the modes 0..N-1 once each, got {tree!r}")
    return tree


@dataclass(frozen=True)
class HTFactorization(Parameterization):
    """An HT factorization of a ``dims`` tensor on ``tree`` with local ranks ``ranks`` (one int
    for every internal node, or one per internal node in post-order)."""

    dims: tuple[int, ...]
    tree: Tree = None
    ranks: int | tuple[int, ...] = 8

    name = "hierarchical tensor factorization"

    def __post_init__(self) -> None:
        dims = tuple(int(d) for d in self.dims)
        if len(dims) < 2 or min(dims) < 1:
            raise ValueError(f"dims must be >= 2 positive mode sizes, got {self.dims}")
        tree = balanced_tree(len(dims)) if self.tree is None else _check_tree(self.tree)
        if len(_leaves(tree)) != len(dims):
            raise ValueError(f"the tree has {len(_leaves(tree))} modes but dims has {len(dims)}")
        n_internal = len(nodes(tree)) - len(dims)
        ranks = (self.ranks,) * n_internal if isinstance(self.ranks, int) else tuple(self.ranks)
        if len(ranks) != n_internal or min(int(r) for r in ranks) < 1:
            raise ValueError(f"ranks must be one positive int or {n_internal} of them, got "
                             f"{self.ranks!r}")
        object.__setattr__(self, "dims", dims)
        object.__setattr__(self, "tree", tree)
        object.__setattr__(self, "ranks", tuple(int(r) for r in ranks))

    # ------------------------------------------------------------------ structure

    @cached_property
    def _rank(self) -> dict[Tree, int]:
        inner = iter(self.ranks)
        return {v: (self.dims[v] if isinstance(v, int) else next(inner)) for v in nodes(self.tree)}

    @cached_property
    def _slot(self) -> dict[Tree, int]:
        """Position of each node's matrix in the factor tuple (the root's is the last)."""
        return {v: i for i, v in enumerate(nodes(self.tree))}

    def _parent_rank(self, v: Tree) -> int:
        for p in nodes(self.tree):
            if not isinstance(p, int) and v in p:
                return self._rank[p]
        return 1  # the root's output vector

    def factor_shapes(self) -> list[tuple[int, int]]:
        """``(R_ν, R_pa(ν))`` for every node in post-order (the root: ``(R_root, 1)``)."""
        return [(self._rank[v], self._parent_rank(v)) for v in nodes(self.tree)]

    def internal_nodes(self) -> list[Tree]:
        return [v for v in nodes(self.tree) if not isinstance(v, int)]

    # ------------------------------------------------------------------ end-to-end map

    def _up(self, factors: HTFactors, v: Tree, override: tuple[Tree, jax.Array] | None):
        """``(T_ν B_ν)`` as a ``(prod of ν's mode sizes, R_pa)`` matrix, modes in leaf order."""
        if isinstance(v, int):
            return factors[self._slot[v]]
        if override is not None and override[0] == v:
            L = override[1]
            T1, T2 = self._node_tensor(factors, v[0], override), self._node_tensor(factors, v[1], override)
            U = jnp.einsum("ap,bq,pqs->abs", T1, T2, L)
            return U.reshape(-1, U.shape[-1])
        return self._node_tensor(factors, v, override) @ factors[self._slot[v]]

    def _node_tensor(self, factors: HTFactors, v: Tree, override) -> jax.Array:
        """``T_ν`` as a ``(prod of ν's mode sizes, R_ν)`` matrix (a leaf: the identity)."""
        if isinstance(v, int):
            return jnp.eye(self.dims[v], dtype=factors[0].dtype)
        U1, U2 = self._up(factors, v[0], override), self._up(factors, v[1], override)
        return (U1[:, None, :] * U2[None, :, :]).reshape(-1, U1.shape[-1])

    def _assemble(self, flat: jax.Array) -> jax.Array:
        order = _leaves(self.tree)
        W = flat.reshape(tuple(self.dims[n] for n in order))
        return jnp.transpose(W, tuple(order.index(n) for n in range(len(order))))

    def end_to_end(self, factors: HTFactors) -> jax.Array:
        """``W = T_root B_root`` (the module docstring's recursion; a leading replica axis on
        every factor is mapped over)."""
        if factors[-1].ndim > 2:
            return jax.vmap(self.end_to_end)(factors)
        return self._assemble(self._up(factors, self.tree, None)[:, 0])

    def shape(self, factors: HTFactors) -> tuple[int, ...]:
        return self.dims

    def end_to_end_with_local(self, factors: HTFactors, v: Tree, L: jax.Array) -> jax.Array:
        """``W`` with node ``v``'s local tensor replaced by ``L`` (``W`` is linear in ``L``)."""
        return self._assemble(self._up(factors, self.tree, (v, L))[:, 0])


def local_tensor(ht: HTFactorization, factors: HTFactors, v: Tree) -> jax.Array:
    """``L_ν[p, q, s] = Σ_r B_{c_1}[p, r] B_{c_2}[q, r] B_ν[r, s]`` for an internal node ``v``."""
    B1, B2, Bv = (factors[ht._slot[u]] for u in (v[0], v[1], v))
    return jnp.einsum("pr,qr,rs->pqs", B1, B2, Bv)


def local_component_vectors(ht: HTFactorization, factors: HTFactors, v: Tree):
    """The three factor matrices of ``L_ν`` in CP form, each ``(size, R_ν)``."""
    return (factors[ht._slot[v[0]]], factors[ht._slot[v[1]]], factors[ht._slot[v]].T)


def local_component_norms(ht: HTFactorization, factors: HTFactors, v: Tree) -> jax.Array:
    """``||B_{c_1}[:, r]|| ||B_{c_2}[:, r]|| ||B_ν[r, :]||`` for r in ``[R_ν]``."""
    return math.prod(jnp.linalg.norm(M, axis=0) for M in local_component_vectors(ht, factors, v))


def local_tensor_gradient(ht: HTFactorization, factors: HTFactors, v: Tree,
                          G: jax.Array) -> jax.Array:
    """``dl/dL_ν`` given ``G = grad l(W)``: the adjoint of the linear map ``L_ν -> W``."""
    L = local_tensor(ht, factors, v)
    _, vjp = jax.vjp(lambda x: ht.end_to_end_with_local(factors, v, x), L)
    return vjp(G)[0]


def gaussian_init(key: jax.Array, ht: HTFactorization, scale: float, *, mean: float = 0.0,
                  dtype=None) -> HTFactors:
    """Every weight i.i.d. ``N(mean, scale^2)`` (RMC22's ``init_std``)."""
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale!r}")
    shapes = ht.factor_shapes()
    keys = jax.random.split(key, len(shapes))
    dt = float_dtype(dtype)
    return tuple(mean + scale * jax.random.normal(k, s, dt) for k, s in zip(keys, shapes, strict=True))


def balance_node(ht: HTFactorization, factors: HTFactors, v: Tree) -> HTFactors:
    """Rescale the three vectors of every local component of node ``v`` to the geometric mean of
    their norms: ``L_ν`` (hence ``W``) is unchanged and the local components are balanced."""
    mats = local_component_vectors(ht, factors, v)
    norms = jnp.stack([jnp.linalg.norm(M, axis=0) for M in mats])  # (3, R_ν)
    target = jnp.exp(jnp.mean(jnp.log(norms), axis=0))
    scaled = [M * (target / n) for M, n in zip(mats, norms, strict=True)]
    out = list(factors)
    out[ht._slot[v[0]]], out[ht._slot[v[1]]], out[ht._slot[v]] = scaled[0], scaled[1], scaled[2].T
    return tuple(out)

