"""Values as files and people see them: the one JSON-safe converter and the number formatters,
shared by the store, the config, the theory checks, the report, the CLI and the docs script.

Missing values: NaN and inf are never written. :func:`jsonable` turns them into ``None``
(JSON ``null``; a TOML config drops the key); the formatters show them as the ``missing`` text
("" in tables, "-" in the docs' prose).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["fmt", "jsonable", "number", "plain", "sci"]


def jsonable(value: Any) -> Any:
    """A JSON-ready copy of ``value``: mappings (keys as text), lists and tuples to lists, numpy
    and JAX arrays to nested lists, numpy scalars to Python numbers, enums to their values, and
    NaN or inf to ``None`` (a value that does not exist). Anything else is returned as is."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, np.generic):
        value = value.item()
    elif not isinstance(value, str | bytes | int | float | type(None)) and hasattr(value, "__array__"):
        value = np.asarray(value)
        value = value.item() if value.ndim == 0 else value.tolist()
        return jsonable(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return value


def _missing(x: Any) -> bool:
    return x is None or (isinstance(x, float) and not math.isfinite(x))


def number(x: float | int | None, digits: int = 4, *, missing: str = "") -> str:
    """A number in a table: ``digits`` significant digits in Python's ``g`` style (``0.0001``,
    ``2.58e-05``), integers in full, ``missing`` for None, NaN and inf."""
    if _missing(x):
        return missing
    if isinstance(x, int | np.integer):  # bool included
        return str(x)
    return f"{float(x):.{digits}g}"


def sci(x: float | None, digits: int = 3, *, missing: str = "-") -> str:
    """Scientific notation in prose, ``4.27e-2`` (no zero-padded exponent); ``missing`` for
    None, NaN and inf."""
    if _missing(x):
        return missing
    mant, exp = f"{x:.{digits - 1}e}".split("e")
    return f"{mant}e{int(exp)}"


def plain(x: float | None, digits: int = 3, *, missing: str = "-") -> str:
    """A number in prose: ``digits`` significant digits written out for values in [0.01, 1e5)
    (thousands separated from 10,000 on), :func:`sci` otherwise; ``missing`` for None, NaN, inf."""
    if _missing(x):
        return missing
    if x == 0:
        return "0"
    if 1e-2 <= abs(x) < 1e5:
        decimals = max(digits - 1 - math.floor(math.log10(abs(x))), 0)
        return f"{x:,.{decimals}f}" if abs(x) >= 1e4 else f"{x:.{decimals}f}"
    return sci(x, digits, missing=missing)


def fmt(value: Any, digits: int = 4) -> str:
    """Any value as table text: numbers by :func:`number` (non-finite ones as ``nan``/``inf``, so
    a table shows them rather than hiding them), lists as ``[a, b]``, None as "", the rest as
    ``str``."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, int | float):
        return number(value, digits)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(fmt(v, digits) for v in value) + "]"
    return str(value)
