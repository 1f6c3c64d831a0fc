"""Optional dependencies: which extra of ``pip install deeplinear[...]`` brings each package, and
the one-line error a missing one gives.

The core (``pip install deeplinear``) holds the mathematics: jax, optax, equinox, diffrax, numpy,
scipy, and pydantic with tomli-w for the validated configs. Everything else is an extra:

* ``cli``: the ``deeplinear`` command, the report and the figures (typer, rich, matplotlib);
* ``experiments``: data sets, baselines, imputers and tensor rank (scikit-learn, mlxtend, tensorly,
  cvxpy, scs, pillow);
* ``dask``: sweeps on a Dask cluster (``dask[distributed]``);
* ``torch``: :mod:`deeplinear.torch` (PyTorch);
* ``docs`` (the API reference site), ``test``, and ``all`` (every extra above).

Code that needs an optional package imports it through :func:`require` (or, for a whole module,
inside :func:`needs_extra`), so a missing one is :class:`MissingExtraError`: one line naming the extra
to install.
"""

from __future__ import annotations

import contextlib
import importlib
import re
from collections.abc import Iterator
from types import ModuleType

__all__ = ["EXTRAS", "MissingExtraError", "extra_of", "needs_extra", "require"]

EXTRAS: dict[str, tuple[str, str]] = {
    # top-level module: (extra, distribution to install)
    "typer": ("cli", "typer"),
    "click": ("cli", "typer"),
    "rich": ("cli", "rich"),
    "matplotlib": ("cli", "matplotlib"),
    "sklearn": ("experiments", "scikit-learn"),
    "threadpoolctl": ("experiments", "scikit-learn"),
    "mlxtend": ("experiments", "mlxtend"),
    "tensorly": ("experiments", "tensorly"),
    "cvxpy": ("experiments", "cvxpy"),
    "scs": ("experiments", "scs"),
    "PIL": ("experiments", "pillow"),
    "dask": ("dask", "dask[distributed]"),
    "distributed": ("dask", "dask[distributed]"),
    "torch": ("torch", "torch"),
}
"""The optional packages by import name: the extra that brings each and its distribution name."""


class MissingExtraError(ImportError):
    """An optional package is not installed. The message is one line: what needs it, the package,
    and the ``pip install`` command of the extra that brings it."""


def extra_of(module: str) -> str | None:
    """The extra that brings ``module`` (a dotted import name), or ``None`` for a core package."""
    entry = EXTRAS.get(module.split(".")[0])
    return None if entry is None else entry[0]


def _message(module: str, purpose: str | None) -> str:
    extra, dist = EXTRAS[module.split(".")[0]]
    who = purpose or "this feature"
    return (f"{who} needs {dist}, which is not installed: "
            f"pip install 'deeplinear[{extra}]'")


def require(module: str, purpose: str | None = None) -> ModuleType:
    """``importlib.import_module(module)``; a missing optional package raises :class:`MissingExtraError`
    (one line naming ``purpose``, the package and its extra) instead of ``ModuleNotFoundError``."""
    with needs_extra(purpose):
        return importlib.import_module(module)


@contextlib.contextmanager
def needs_extra(purpose: str | None = None) -> Iterator[None]:
    """Imports inside the block that fail on a missing optional package (one of :data:`EXTRAS`)
    raise :class:`MissingExtraError` instead; any other error passes through unchanged."""
    try:
        yield
    except MissingExtraError:
        raise
    except ModuleNotFoundError as err:
        name = err.name or _named(str(err))
        if name.split(".")[0] not in EXTRAS:
            raise
        raise MissingExtraError(_message(name, purpose)) from None


def _named(text: str) -> str:
    """The module of a ``ModuleNotFoundError`` raised without ``name`` (its message)."""
    match = re.search(r"No module named '([^']+)'", text)
    return match.group(1) if match else text.strip()
