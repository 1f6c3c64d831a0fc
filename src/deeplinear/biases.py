"""The baseline model of a ratings matrix: a global mean plus regularized row and column biases.

``b_ij = μ + u_i + v_j``, fitted to observations ``X_Ω`` by alternating least squares on

    Σ_Ω (X_ij - μ - u_i - v_j)^2 + λ_col Σ_j v_j^2 + λ_row Σ_i u_i^2

with ``μ`` the mean of the observations, as Surprise's ``BaselineOnly`` (``method="als"``; Koren
2010, section 2.1) does it: ``n_epochs`` sweeps of

    v_j <- Σ_{i: (i,j) ∈ Ω} (X_ij - μ - u_i) / (λ_col + |Ω_j|)      (columns: items)
    u_i <- Σ_{j: (i,j) ∈ Ω} (X_ij - μ - v_j) / (λ_row + |Ω_i|)      (rows: users)

from ``u = v = 0``. Its defaults, ``λ_row = 15``, ``λ_col = 10``, 10 sweeps, are Surprise's: a
row or column with few observations is shrunk towards the global mean (``λ`` counts pseudo
observations at zero deviation, so they do not depend on the units), and one with none, cold
start, gets bias 0: the global mean plus the other side's bias.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deeplinear.observations import Observations

__all__ = ["Biases", "fit_biases"]


@dataclass(frozen=True)
class Biases:
    """``b_ij = mean + row[i] + col[j]`` (see the module docstring)."""

    mean: float
    row: np.ndarray
    col: np.ndarray

    def predict(self, rows, cols) -> np.ndarray:
        """``mean + row[rows] + col[cols]``."""
        return self.mean + self.row[np.asarray(rows)] + self.col[np.asarray(cols)]

    def matrix(self) -> np.ndarray:
        """The whole ``(n_rows, n_cols)`` matrix of ``b_ij``."""
        return self.mean + self.row[:, None] + self.col[None, :]


def fit_biases(obs: Observations, *, reg_row: float = 15.0, reg_col: float = 10.0,
               n_epochs: int = 10) -> Biases:
    """The global mean and the row and column biases of ``obs`` by ALS (module docstring)."""
    for name, value in (("reg_row", reg_row), ("reg_col", reg_col)):
        if not (np.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    if obs.size == 0:
        raise ValueError("no observed entry: the biases need at least one")
    mean = float(np.mean(obs.values))
    dev = obs.values - mean
    n_row, n_col = obs.counts(0), obs.counts(1)
    row = np.zeros(obs.shape[0])
    col = np.zeros(obs.shape[1])
    with np.errstate(invalid="ignore", divide="ignore"):
        for _ in range(int(n_epochs)):
            col = np.bincount(obs.cols, weights=dev - row[obs.rows], minlength=obs.shape[1])
            col = np.where(n_col + reg_col > 0, col / (reg_col + n_col), 0.0)
            row = np.bincount(obs.rows, weights=dev - col[obs.cols], minlength=obs.shape[0])
            row = np.where(n_row + reg_row > 0, row / (reg_row + n_row), 0.0)
    return Biases(mean, row, col)
