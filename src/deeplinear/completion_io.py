"""File input and output of ``deeplinear complete``: incomplete matrices and ratings files.

* Matrices (:func:`read_matrix`, :func:`write_matrix`): ``.csv`` (empty cells, ``NaN`` or ``NA``
  missing; numbers only, no header), ``.npy``, ``.npz``, MatrixMarket ``.mtx``.
* Ratings (:func:`read_ratings`, :func:`read_pairs`, :func:`ratings_csv`): text files of
  ``user, item, rating`` triplets, one per line, comma- or tab-separated (or ``::``, as
  MovieLens-1M's ``ratings.dat``); further columns (a timestamp) are ignored; a first line
  whose rating cell is not a number is a header (a ``.csv`` is a ratings file when that header
  names a user or rating column, e.g. ``userId,movieId,rating,timestamp``); ids are strings.
  An ``(user, item)`` pair may appear once (:data:`observations.DUPLICATES_POLICY`).

Every reader raises ``ValueError`` with one line naming the line and cell at fault.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from deeplinear.observations import DUPLICATES_POLICY

__all__ = ["MATRIX_FORMATS", "RATINGS_FORMATS", "Ratings", "looks_like_ratings", "parse_ids",
           "ratings_csv", "read_matrix", "read_pairs", "read_ratings", "write_matrix"]

MATRIX_FORMATS = (".csv", ".npy", ".npz", ".mtx")
"""File formats of :func:`read_matrix` and :func:`write_matrix`, by extension."""


def _format(path, what: str) -> str:
    from pathlib import Path

    suffix = Path(path).suffix.lower()
    if suffix not in MATRIX_FORMATS:
        raise ValueError(f"{what} {path}: unknown format {suffix or '(no extension)'!r}; use one "
                         f"of {', '.join(MATRIX_FORMATS)}")
    return suffix


def _read_csv(path) -> np.ndarray:
    import csv

    rows = []
    with open(path, newline="", encoding="utf-8") as fh:
        for i, line in enumerate(csv.reader(fh), start=1):
            if not line or all(not c.strip() for c in line) and len(line) <= 1:
                continue  # blank line
            row = []
            for j, cell in enumerate(line, start=1):
                text = cell.strip()
                if text == "" or text.lower() in ("nan", "na"):
                    row.append(np.nan)
                    continue
                try:
                    row.append(float(text))
                except ValueError:
                    raise ValueError(f"line {i}, column {j}: {text[:30]!r} is not a number (empty "
                                     "cells and NaN mark missing entries; no header line)") from None
            if rows and len(row) != len(rows[0]):
                raise ValueError(f"line {i} has {len(row)} cells, line 1 has {len(rows[0])}: every "
                                 "row needs the same number of columns")
            rows.append(row)
    if not rows:
        raise ValueError("the file holds no matrix (it is empty)")
    return np.asarray(rows, dtype=np.float64)


def read_matrix(path):
    """The incomplete matrix in ``path``: ``.csv`` (empty cells, ``NaN`` or ``NA`` are missing),
    ``.npy`` (NaN missing), ``.npz`` (the array ``X``, or its only array), ``.mtx`` (MatrixMarket:
    a coordinate file's stored entries are the observations, an array file's NaNs are missing).
    Raises ``ValueError`` naming what is wrong."""
    import zipfile

    import scipy.io

    suffix = _format(path, "INPUT")
    try:
        if suffix == ".csv":
            X = _read_csv(path)
        elif suffix == ".npy":
            X = np.load(path, allow_pickle=False)
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                names = list(z.files)
                if "X" in names:
                    X = z["X"]
                elif len(names) == 1:
                    X = z[names[0]]
                else:
                    raise ValueError(f"holds arrays {names[:5]}: name the matrix 'X' or store "
                                     "only one array")
        else:
            X = scipy.io.mmread(path)
    except (OSError, EOFError, zipfile.BadZipFile, UnicodeDecodeError) as err:
        raise ValueError(f"cannot be read as {suffix}: {' '.join(str(err).split())[:120]}") from None
    except ValueError as err:
        if str(err).startswith(("line ", "holds ", "the file")):
            raise
        raise ValueError(f"cannot be read as {suffix}: {' '.join(str(err).split())[:120]}") from None
    if not sp.issparse(X):
        X = np.asarray(X)
        if X.dtype.kind not in "biuf":
            raise ValueError(f"holds {X.dtype} data, not numbers")
        if X.ndim != 2:
            raise ValueError(f"holds an array of shape {X.shape}, not a matrix (2-D)")
    return X


def write_matrix(path, X: np.ndarray) -> bytes:
    """The bytes of the complete matrix ``X`` in ``path``'s format (``.npz``: array ``X``;
    ``.mtx``: a dense MatrixMarket array; ``.csv``: ``repr``-exact floats)."""
    import io

    import scipy.io

    suffix = _format(path, "--out")
    buf = io.BytesIO()
    if suffix == ".csv":
        text = "\n".join(",".join(repr(float(v)) for v in row) for row in X) + "\n"
        return text.encode()
    if suffix == ".npy":
        np.save(buf, X)
    elif suffix == ".npz":
        np.savez(buf, X=X)
    else:
        scipy.io.mmwrite(buf, X, precision=17)
    return buf.getvalue()


# ---------------------------------------------------------------------------------- ratings

RATINGS_FORMATS = (".csv", ".tsv", ".data", ".dat", ".txt")
"""Extensions of ratings files; ``.tsv``, ``.data``, ``.dat`` and ``.txt`` are always ratings, a
``.csv`` is one when its header names the columns or ``--ratings`` says so (:func:`looks_like_ratings`)."""


@dataclass(frozen=True)
class Ratings:
    """Triplets read from a file: ``user`` and ``item`` ids (strings, as written), ``rating``
    (float64), and the 1-based ``line`` each came from."""

    user: np.ndarray
    item: np.ndarray
    rating: np.ndarray
    line: np.ndarray

    def __len__(self) -> int:
        return int(self.rating.size)


def _split(line: str) -> list[str]:
    if "\t" in line:
        cells = line.split("\t")
    elif "::" in line:
        cells = line.split("::")
    elif "," in line:
        import csv

        cells = next(csv.reader([line]))
    elif ";" in line:
        cells = line.split(";")
    else:
        cells = line.split()
    return [c.strip() for c in cells]


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _lines(path):
    with open(path, encoding="utf-8-sig") as fh:
        for i, raw in enumerate(fh, start=1):
            line = raw.rstrip("\r\n")
            if line.strip():
                yield i, line


def looks_like_ratings(path) -> bool:
    """Whether ``path`` holds triplets rather than a matrix: a ratings extension other than
    ``.csv``, or a ``.csv`` whose first line is a ratings header (:func:`_is_header`; a matrix
    ``.csv`` has numbers only)."""
    from pathlib import Path

    suffix = Path(path).suffix.lower()
    if suffix in RATINGS_FORMATS and suffix != ".csv":
        return True
    if suffix != ".csv":
        return False
    try:
        for _, line in _lines(path):
            return _is_header([c.lower() for c in _split(line)])
    except (OSError, UnicodeDecodeError):
        return False
    return False


def _is_header(cells: list[str]) -> bool:
    """A ratings header: three or more cells, the third naming a rating (``rating``, ``score``,
    ``value``, ``stars``) or the first a user."""
    return len(cells) >= 3 and (any(w in cells[2] for w in ("rating", "score", "value", "star"))
                                or "user" in cells[0])


def _read_columns(path, n: int, what: str):
    """(lines, cells) of a delimited file of at least ``n`` columns, header skipped."""
    out_lines, cells_out = [], []
    header = None
    try:
        for i, line in _lines(path):
            cells = _split(line)
            if len(cells) < n:
                raise ValueError(f"line {i} has {len(cells)} column{'s' * (len(cells) != 1)}; "
                                 f"{what} needs {n} (user, item{', rating' if n == 3 else ''}), "
                                 "comma- or tab-separated")
            if header is None and not out_lines:
                header = n == 3 and _number(cells[2]) is None and not cells_out
                if header:
                    continue
            out_lines.append(i)
            cells_out.append(cells[:n])
    except UnicodeDecodeError:
        raise ValueError("is not UTF-8 text (a ratings file is text: user,item,rating per "
                         "line)") from None
    if not cells_out:
        raise ValueError(f"holds no {'ratings' if n == 3 else 'pairs'} (the file is empty"
                         f"{' but for its header' if header else ''})")
    return np.asarray(out_lines, dtype=np.int64), cells_out


def read_ratings(path) -> Ratings:
    """The ``user, item, rating`` triplets of ``path`` (module docstring). Raises ``ValueError``
    for an empty file, a line with fewer than three columns, an empty id, a rating that is not
    a finite number, or a repeated ``(user, item)`` pair."""
    lines, cells = _read_columns(path, 3, "a ratings file")
    user = np.asarray([c[0] for c in cells], dtype=object)
    item = np.asarray([c[1] for c in cells], dtype=object)
    rating = np.empty(len(cells))
    for k, c in enumerate(cells):
        if not c[0] or not c[1]:
            raise ValueError(f"line {lines[k]}: empty {'user' if not c[0] else 'item'} id")
        value = _number(c[2])
        if value is None or not np.isfinite(value):
            raise ValueError(f"line {lines[k]}: rating {c[2][:30]!r} is not a finite number "
                             "(columns: user, item, rating)")
        rating[k] = value
    uniq_items, icode = np.unique(item.astype(str), return_inverse=True)
    keys = np.unique(user.astype(str), return_inverse=True)[1] * uniq_items.size + icode
    _, first, counts = np.unique(keys, return_index=True, return_counts=True)
    if np.any(counts > 1):
        k = int(first[np.flatnonzero(counts > 1)[0]])
        again = int(np.flatnonzero(keys == keys[k])[1])
        raise ValueError(f"line {lines[again]}: user {user[k]!s:.30}, item {item[k]!s:.30} is "
                         f"rated again (first on line {lines[k]}); {DUPLICATES_POLICY}")
    return Ratings(user.astype(str), item.astype(str), rating, lines)


def read_pairs(path) -> tuple[np.ndarray, np.ndarray]:
    """The ``user, item`` pairs of a ``--predict`` file (further columns, a rating included,
    are ignored). Ids may be any strings, so a first line is a header only when it names the
    columns (``user``/``row`` then ``item``/``movie``/``col``)."""
    lines, cells = _read_columns(path, 2, "a pairs file")
    first = [c.lower() for c in cells[0]]
    if first and any(w in first[0] for w in ("user", "row")) and any(
            w in first[1] for w in ("item", "movie", "col")):
        cells = cells[1:]
        lines = lines[1:]
        if not cells:
            raise ValueError("holds no pairs (the file is empty but for its header)")
    for k, c in enumerate(cells):
        if not c[0] or not c[1]:
            raise ValueError(f"line {lines[k]}: empty {'user' if not c[0] else 'item'} id")
    return (np.asarray([c[0] for c in cells]).astype(str),
            np.asarray([c[1] for c in cells]).astype(str))


def parse_ids(ids: np.ndarray) -> np.ndarray:
    """Ids as read (strings) turned into int64 when every one is an integer, so that they sort
    numerically; else the strings."""
    ids = np.asarray(ids).astype(str)
    try:
        return np.asarray([int(v) for v in ids], dtype=np.int64)
    except (ValueError, OverflowError):
        return ids


def ratings_csv(user, item, rating) -> bytes:
    """``user,item,rating`` lines with a header (``repr``-exact floats)."""
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["user", "item", "rating"])
    for u, i, r in zip(user, item, rating, strict=True):
        writer.writerow([u, i, repr(float(r))])
    return buf.getvalue().encode()
