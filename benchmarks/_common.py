"""Shared by the benchmark scripts: the machine line and the BENCHMARKS.md section writer."""

from __future__ import annotations

import os
from pathlib import Path

import jax
import jax.numpy as jnp

from deeplinear._native import cpu_model
from deeplinear.store import atomic_write

BENCHMARKS_MD = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"


def cpu_name() -> str:
    """The CPU model and core count, for the machine line of a benchmark section."""
    return f"{cpu_model()} ({os.cpu_count()} cores)"


def write_section(name: str, body: str) -> None:
    """Replace (or append) the section between ``<!-- name:start/end -->`` in BENCHMARKS.md
    (atomically, via the run store's writer), leaving the other scripts' sections alone."""
    text = (BENCHMARKS_MD.read_text() if BENCHMARKS_MD.exists()
            else "# Benchmarks\n\nMeasured, never asserted in tests.\n")
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{body}{end}"
    if start in text and end in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    atomic_write(BENCHMARKS_MD, text)


@jax.jit
def dense_floor_loop(factors, n):
    """The matmul floor of a dense depth-3 GD step: only its six dependent matrix products
    (``P = W2 W1``, ``W = W3 P``, ``L = W3^T G``, ``G P^T``, ``L W1^T``, ``W2^T L``), ``n`` times in a
    jitted loop (``n`` is traced: one compilation serves every length)."""

    def body(_, c):
        W1, W2, W3, G = c
        P = W2 @ W1
        W = W3 @ P
        G = G + 1e-9 * W
        L = W3.T @ G
        a, b, d = G @ P.T, L @ W1.T, W2.T @ L
        return (W1 - 1e-9 * d, W2 - 1e-9 * b, W3 - 1e-9 * a, G)

    W1, _, W3 = factors
    return jax.lax.fori_loop(0, n, body, (*factors, jnp.zeros((W3.shape[0], W1.shape[1]),
                                                              W1.dtype)))
