"""The observed entries of a partially observed matrix: one type for every completion method.

:class:`Observations` holds ``(rows, cols, values, shape)``: the observed set
``Ω = {(rows[k], cols[k])}`` of a ``shape[0] x shape[1]`` matrix and ``X_Ω = values``. It is
validated once, when it is built (integer indices inside ``shape``, finite values, 1-D arrays of
one length), and kept in row-major order. Every consumer reads one of its views instead of
keeping its own representation:

* :meth:`Observations.mask` / :meth:`Observations.dense`: a dense boolean mask of ``Ω`` and the
  matrix with the observations in place (NaN or a fill value elsewhere);
* :meth:`Observations.csr`: a ``scipy.sparse`` CSR array of the observations;
* :meth:`Observations.padded`: the index arrays padded to the next power of two with the
  out-of-range row ``shape[0]`` and value 0 (reads there give 0 under ``mode="fill"``, writes
  are dropped under ``mode="drop"``), so a compiled program is reused across observation counts;
* :attr:`Observations.dense_is_cheaper`: whether a matrix is small enough to be worked on as a
  dense mask (:data:`DENSE_ENTRIES`).

**Duplicates policy: an entry may be observed once.** Two observations of one ``(row, col)``
are an error everywhere (a ``scipy.sparse`` input that stores an entry twice included), naming
the entry: summing them (scipy's convention) or keeping either would change the data silently;
average or drop the repeats first.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

__all__ = ["DENSE_ENTRIES", "DUPLICATES_POLICY", "Observations"]

DENSE_ENTRIES = 2**18
"""Matrices of at most this many entries are worked on as a dense 0/1 mask (the deep
factorization's step, the nuclear-norm ADMM): the compiled program then depends on the shape
only and is reused across fits. Measured (``benchmarks/bench_dense_threshold.py``; depth 3, the
estimator's width rule, float32, 10% observed, CPU time of one XLA thread on the shared 2-core
AMD EPYC): a step on the dense mask costs the same as on the indexed observations within 10%
from 2^16 to 2^19 entries (0.31 / 0.29 ms at 2^16, 1.16 / 1.23 at 2^18, 3.71 / 3.85 at 2^19)
and twice as much at 2^20 (9.6 / 5.0 ms), while its first call compiles faster (0.5-0.7 s vs
0.7-1.0 s) and later fits of the shape compile nothing; 2^18 keeps the dense arrays small."""

DUPLICATES_POLICY = ("an entry may be observed once: average or drop repeated (row, column) "
                     "pairs first")
"""The one duplicates policy (module docstring), as error messages state it."""


@dataclass(frozen=True, eq=False)
class Observations:
    """The observed entries ``X_Ω`` of a ``shape`` matrix, row-major, validated at construction.

    Attributes:
        rows, cols: int64 indices of the observed entries, sorted row-major.
        values: their float64 values (finite).
        shape: ``(n_rows, n_cols)`` of the whole matrix.
    """

    rows: np.ndarray
    cols: np.ndarray
    values: np.ndarray
    shape: tuple[int, int]

    def __post_init__(self) -> None:
        rows = np.asarray(self.rows)
        cols = np.asarray(self.cols)
        values = np.asarray(self.values)
        shape = self.shape
        if not (isinstance(shape, tuple | list) and len(shape) == 2):
            raise ValueError(f"shape must be (n_rows, n_cols), got {shape!r}")
        for n in shape:
            if isinstance(n, bool | np.bool_) or not isinstance(n, int | np.integer) or n < 1:
                raise ValueError(f"shape must be two positive integers, got {tuple(shape)!r}")
        shape = (int(shape[0]), int(shape[1]))
        if not (rows.ndim == cols.ndim == values.ndim == 1
                and rows.shape == cols.shape == values.shape):
            raise ValueError(f"rows, cols and values must be 1-D of one length, got shapes "
                             f"{rows.shape}, {cols.shape}, {values.shape}")
        if rows.size and (rows.dtype.kind not in "iu" or cols.dtype.kind not in "iu"):
            raise ValueError(f"rows and cols must be integer indices, got {rows.dtype} and "
                             f"{cols.dtype}")
        if values.dtype.kind not in "biuf":
            try:
                values = values.astype(np.float64)
            except (TypeError, ValueError):
                raise ValueError(f"values must be numbers, got {values.dtype}") from None
        values = values.astype(np.float64)
        for name, idx, n in (("rows", rows, shape[0]), ("cols", cols, shape[1])):
            if idx.size and (idx.min() < 0 or idx.max() >= n):
                raise ValueError(f"{name} must lie in [0, {n}), got range [{idx.min()}, "
                                 f"{idx.max()}]")
        if not np.all(np.isfinite(values)):
            k = int(np.flatnonzero(~np.isfinite(values))[0])
            raise ValueError(f"the observed value at ({int(rows[k])}, {int(cols[k])}) is "
                             f"{values[k]}: observed values must be finite (leave a missing "
                             "entry out)")
        rows, cols = rows.astype(np.int64), cols.astype(np.int64)
        order = np.lexsort((cols, rows))
        rows, cols, values = rows[order], cols[order], values[order]
        same = (rows[1:] == rows[:-1]) & (cols[1:] == cols[:-1])
        if same.any():
            k = int(np.flatnonzero(same)[0])
            raise ValueError(f"entry ({int(rows[k])}, {int(cols[k])}) is observed "
                             f"{int(np.sum((rows == rows[k]) & (cols == cols[k])))} times: "
                             f"{DUPLICATES_POLICY}")
        for name, array in (("rows", rows), ("cols", cols), ("values", values)):
            array.flags.writeable = False
            object.__setattr__(self, name, array)
        object.__setattr__(self, "shape", shape)

    # ----------------------------------------------------------------------- constructors

    @classmethod
    def _trusted(cls, rows, cols, values, shape) -> Observations:
        """Already validated, row-major arrays (a subset of an :class:`Observations`)."""
        obs = object.__new__(cls)
        for name, array in (("rows", rows), ("cols", cols), ("values", values)):
            array = np.array(array)
            array.flags.writeable = False
            object.__setattr__(obs, name, array)
        object.__setattr__(obs, "shape", (int(shape[0]), int(shape[1])))
        return obs

    @classmethod
    def from_matrix(cls, X) -> Observations:
        """The observed entries of ``X``: a dense array with NaN for missing entries, a
        ``numpy.ma`` masked array (masked = missing) or a ``scipy.sparse`` matrix/array whose
        stored entries are the observations (explicit zeros included; an entry stored twice is
        an error, see the duplicates policy). Raises ``ValueError`` for a non-2-D or non-numeric
        input or an observed value that is not finite."""
        if isinstance(X, Observations):
            return X
        if sp.issparse(X):
            coo = sp.coo_array(X)
            if coo.ndim != 2:
                raise ValueError(f"X must be a matrix (2-D), got {coo.ndim} dimensions")
            if coo.dtype.kind not in "biuf":
                raise ValueError(f"X must hold numbers, got dtype {coo.dtype}")
            if not np.all(np.isfinite(coo.data)):
                raise ValueError("X has a stored entry that is not finite (inf or nan): stored "
                                 "entries are observations; leave missing entries unstored")
            rows, cols = coo.coords
            return cls(rows, cols, np.asarray(coo.data, dtype=np.float64), coo.shape)
        if isinstance(X, np.ma.MaskedArray):
            mask = np.ma.getmaskarray(X)
            data = np.asarray(X.data)
        else:
            data = np.asarray(X)
            mask = None
        if data.dtype.kind == "c":
            raise ValueError("Complex data not supported: X must hold real numbers")
        if data.dtype.kind not in "biuf":
            if data.dtype.kind == "O":
                try:  # a TypeError (a dict, a list in a cell) propagates as numpy words it
                    data = data.astype(np.float64)
                except ValueError:
                    raise ValueError("X must hold numbers (NaN for missing entries)") from None
            else:
                raise ValueError(f"X must hold numbers (NaN for missing entries), got dtype "
                                 f"{data.dtype}")
        if data.ndim != 2:
            raise ValueError(f"X must be a matrix (2-D), got shape {data.shape} (Reshape your "
                             "data to rows x columns)")
        for size, what in ((data.shape[0], "sample"), (data.shape[1], "feature")):
            if size == 0:  # scikit-learn's wording for an empty input
                raise ValueError(f"Found array with 0 {what}(s) (shape={data.shape}) while a "
                                 "minimum of 1 is required: X has no observed entry")
        data = data.astype(np.float64)
        missing = np.isnan(data) if mask is None else mask
        if mask is not None and np.any(np.isnan(data) & ~mask):
            raise ValueError("X has an unmasked entry that is nan: mask it or give a number")
        if np.any(np.isinf(data) & ~missing):
            raise ValueError("X has an observed entry that is inf: give finite values "
                             "(NaN marks a missing entry)")
        rows, cols = np.nonzero(~missing)  # row-major already, no duplicates
        return cls._trusted(rows.astype(np.int64), cols.astype(np.int64), data[rows, cols],
                            data.shape)

    @classmethod
    def from_mask(cls, X, mask) -> Observations:
        """The entries of ``X`` where the boolean ``mask`` (same shape) is true."""
        X = np.asarray(X)
        mask = np.asarray(mask, dtype=bool)
        if X.ndim != 2 or mask.shape != X.shape:
            raise ValueError(f"X must be a matrix and mask of the same shape, got {X.shape} and "
                             f"{mask.shape}")
        rows, cols = np.nonzero(mask)
        return cls(rows, cols, X[rows, cols], X.shape)

    # ----------------------------------------------------------------------- views

    @property
    def size(self) -> int:
        """``m = |Ω|``, the number of observations."""
        return int(self.rows.size)

    @property
    def dense_is_cheaper(self) -> bool:
        """Whether the matrix has at most :data:`DENSE_ENTRIES` entries (work on a dense mask)."""
        return self.shape[0] * self.shape[1] <= DENSE_ENTRIES

    def mask(self) -> np.ndarray:
        """The dense boolean mask of ``Ω``."""
        out = np.zeros(self.shape, dtype=bool)
        out[self.rows, self.cols] = True
        return out

    def dense(self, fill: float = np.nan) -> np.ndarray:
        """The ``shape`` matrix (float64) with the observed values in place and ``fill``
        elsewhere."""
        out = np.full(self.shape, fill, dtype=np.float64)
        out[self.rows, self.cols] = self.values
        return out

    def csr(self) -> sp.csr_array:
        """The observations as a CSR array (explicit zeros kept)."""
        indptr = np.searchsorted(self.rows, np.arange(self.shape[0] + 1))
        return sp.csr_array((self.values, self.cols, indptr), shape=self.shape)

    def padded(self, size: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(rows, cols, values)`` padded to ``size`` (default: the next power of two of
        ``m``) with ``(shape[0], 0, 0.0)`` entries: out of range, so gathers with
        ``mode="fill", fill_value=0`` read 0 there and scatters with ``mode="drop"`` skip them."""
        m = self.size
        if size is None:
            size = 1 << max(m - 1, 0).bit_length()
        if size < m:
            raise ValueError(f"size {size} is below the {m} observations")
        pad = size - m
        return (np.concatenate([self.rows, np.full(pad, self.shape[0], np.int64)]),
                np.concatenate([self.cols, np.zeros(pad, np.int64)]),
                np.concatenate([self.values, np.zeros(pad, np.float64)]))

    def counts(self, axis: int) -> np.ndarray:
        """Observations per row (``axis=0``: a ``(n_rows,)`` array) or per column (``axis=1``)."""
        idx = self.rows if axis == 0 else self.cols
        return np.bincount(idx, minlength=self.shape[axis])

    def empty(self, axis: int) -> np.ndarray:
        """Indices of the rows (``axis=0``) or columns (``axis=1``) with no observation."""
        return np.flatnonzero(self.counts(axis) == 0)

    def take(self, index) -> Observations:
        """The observations at ``index`` (positions or a boolean mask), same shape."""
        index = np.asarray(index)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        index = np.sort(index)
        return Observations._trusted(self.rows[index], self.cols[index], self.values[index],
                                     self.shape)

    def with_values(self, values) -> Observations:
        """The same entries with new (finite) values, e.g. residuals of a model."""
        values = np.asarray(values, dtype=np.float64)
        if values.shape != self.values.shape:
            raise ValueError(f"values must have shape {self.values.shape}, got {values.shape}")
        if not np.all(np.isfinite(values)):
            raise ValueError("values must be finite")
        return Observations._trusted(self.rows, self.cols, values, self.shape)

    def transpose(self) -> Observations:
        """The observations of the transposed matrix."""
        return Observations(self.cols, self.rows, self.values, self.shape[::-1])

    def __len__(self) -> int:
        return self.size

    def __repr__(self) -> str:
        return (f"Observations({self.size} of {self.shape[0]} x {self.shape[1]} entries)")
