"""Layered TOML configs: defaults <- preset (--quick/--paper) <- files <- ``--set`` overrides.

Every layer is a nested dict; later layers win key by key (tables merge, values replace). The
merged dict is validated by the experiment's pydantic ``config_model`` (``extra="forbid"``), so
unknown keys, wrong types and impossible values are all reported as one :class:`ConfigError`
line naming the key.

The field constraints every experiment uses live here, once each: :class:`ConfigModel` (the base of
every experiment config: unknown keys, ``inf``/``nan`` and booleans-for-numbers are errors) and
the ``Annotated`` types below (:data:`Seed`, :data:`Steps`, :data:`Size`, :data:`PositiveFloat`,
...), each an allowed range stated once. Input files are read defensively: a missing, non-regular,
oversized, non-UTF-8 or too deeply nested file is a one-line :class:`ConfigError` naming it.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import reprlib
import stat
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, TypeVar

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from deeplinear._format import jsonable

__all__ = [
    "build_config",
    "config_dict",
    "ConfigError",
    "ConfigModel",
    "Depth",
    "dump_toml",
    "Entries",
    "expand_dotted",
    "Finite",
    "load_toml",
    "MatrixSide",
    "MAX_CONFIG_BYTES",
    "MAX_DEPTH",
    "MAX_ENTRIES",
    "MAX_FLOAT",
    "MAX_LIST",
    "MAX_MATRIX_SIDE",
    "MAX_MESSAGE",
    "MAX_NESTING",
    "MAX_PATH",
    "MAX_REPLICAS",
    "MAX_SEED",
    "MAX_SIZE",
    "MAX_STEPS",
    "merge",
    "NonEmptyList",
    "NonNegativeFloat",
    "one_line",
    "parse_override",
    "PathStr",
    "PositiveFloat",
    "Replicas",
    "run_id",
    "Seed",
    "set_path",
    "short",
    "short_key",
    "short_path",
    "Size",
    "Steps",
    "Tolerance",
    "validate",
]

# ---------------------------------------------------------------- limits

MAX_MESSAGE = 290
"""Characters of one error message (the CLI prefixes ``error: ``; the whole line stays <= 300)."""
MAX_NESTING = 16
"""Deepest nesting of tables/arrays a config, grid or ``--set`` value may have."""
MAX_CONFIG_BYTES = 16 * 2**20
"""Largest config or grid file read (bytes)."""
MAX_SEED = 2**32
MAX_STEPS = 10**9
MAX_SIZE = 100_000
MAX_MATRIX_SIDE = 10_000
MAX_ENTRIES = MAX_MATRIX_SIDE**2
MAX_DEPTH = 100
MAX_REPLICAS = 1_000
MAX_LIST = 1_000
MAX_FLOAT = 1e12
MAX_PATH = 4096


class ConfigError(ValueError):
    """A bad config: the message is one line naming the key (or file) and the reason.

    The message is normalized to one line of at most :data:`MAX_MESSAGE` characters.
    """

    def __init__(self, message: object = "") -> None:
        super().__init__(one_line(str(message)))


def one_line(text: str, limit: int = MAX_MESSAGE) -> str:
    """``text`` on one line (whitespace runs collapsed), cut to ``limit`` characters."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = _REPR.maxlong = 40
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 4
_REPR.maxlevel = 3


def short(value: Any, limit: int = 60) -> str:
    """A short ``repr`` of ``value`` for error messages: long strings, numbers and containers are
    abbreviated (never the whole of a 10 MB value), nesting is cut, the size is noted."""
    try:
        if isinstance(value, str) and len(value) > 40:
            text = f"{value[:30]!r}... ({len(value)} characters)"
        elif isinstance(value, list | tuple | dict) and len(value) > 4:
            text = f"{_REPR.repr(value)} ({len(value)} items)"
        else:
            text = _REPR.repr(value)
    except Exception:  # noqa: BLE001 - a repr must never raise inside an error message
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def short_path(path: str | Path, limit: int = 80) -> str:
    """A path for error messages, quoted; a long one keeps its end (the file name)."""
    text = str(path)
    if len(text) > limit:
        text = "..." + text[-(limit - 3) :]
    return repr(text)


def short_key(key: object, limit: int = 40) -> str:
    """A config key for error messages: as is when short and plain, else a short repr."""
    text = str(key)
    if text and len(text) <= limit and text.isprintable() and not any(c.isspace() for c in text):
        return text
    return short(text, limit + 20)


# ---------------------------------------------------------------- shared field constraints
#
# Each constraint is stated once, here; experiment configs compose them (``Annotated[Size,
# Field(ge=2)]`` narrows a range). Integers are strict (``true`` is not 1), floats are finite.

T = TypeVar("T")

Seed = Annotated[int, Field(strict=True, ge=0, lt=MAX_SEED)]
"""A random seed: an integer in [0, 2**32)."""
Steps = Annotated[int, Field(strict=True, ge=1, le=MAX_STEPS)]
"""An iteration count in [1, 10**9]."""
Size = Annotated[int, Field(strict=True, ge=1, le=MAX_SIZE)]
"""A width, rank, batch size, window or number of record points, in [1, 100_000]."""
MatrixSide = Annotated[int, Field(strict=True, ge=2, le=MAX_MATRIX_SIDE)]
"""The side n of an n x n matrix problem, in [2, 10_000]."""
Entries = Annotated[int, Field(strict=True, ge=1, le=MAX_ENTRIES)]
"""A number of observed entries or measurements, in [1, 10**8] (and at most n*n, per model)."""
Depth = Annotated[int, Field(strict=True, ge=1, le=MAX_DEPTH)]
"""A network depth N (number of factors), in [1, 100]."""
Replicas = Annotated[int, Field(strict=True, ge=1, le=MAX_REPLICAS)]
"""A number of independent seeds/replicas run inside one experiment, in [1, 1000]."""
_FiniteFloat = Annotated[float, Field(strict=True, allow_inf_nan=False)]
Finite = Annotated[_FiniteFloat, Field(ge=-MAX_FLOAT, le=MAX_FLOAT)]
"""A finite number in [-1e12, 1e12] (integers are accepted, booleans and strings are not);
narrow it per field, e.g. ``Annotated[Finite, Field(ge=0, lt=1)]`` for a momentum."""
PositiveFloat = Annotated[_FiniteFloat, Field(gt=0, le=MAX_FLOAT)]
"""A finite number in (0, 1e12]: learning rates, scales, loss levels, horizons."""
NonNegativeFloat = Annotated[_FiniteFloat, Field(ge=0, le=MAX_FLOAT)]
"""A finite number in [0, 1e12]: penalties and tolerances where 0 means "off"/"exact"."""
Tolerance = Annotated[_FiniteFloat, Field(gt=0, lt=1)]
"""A relative or absolute solver tolerance in (0, 1)."""
PathStr = Annotated[str, Field(strict=True, min_length=1, max_length=MAX_PATH)]
"""A file or folder path (1 to 4096 characters)."""
NonEmptyList = Annotated[list[T], Field(min_length=1, max_length=MAX_LIST)]
"""``NonEmptyList[X]``: a list of 1 to 1000 items of type X."""


class ConfigModel(BaseModel):
    """Base of every experiment config: unknown keys, ``inf``/``nan`` and wrong types (``true``
    for a number, ``"1"`` for an integer) are errors."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)


# ---------------------------------------------------------------- reading files


def _too_deep(value: Any, limit: int = MAX_NESTING) -> bool:
    """Whether ``value`` nests tables/arrays more than ``limit`` levels (iterative, no recursion)."""
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children = list(item.values())
        elif isinstance(item, list | tuple):
            children = list(item)
        else:
            continue
        if level > limit:
            return True
        stack.extend((child, level + 1) for child in children)
    return False


def _nesting_error(where: str) -> ConfigError:
    return ConfigError(f"{where}: nested more than {MAX_NESTING} levels deep; "
                       "use a flat table of keys and plain values")


def load_toml(path: str | Path, what: str = "config file") -> dict[str, Any]:
    """Read one TOML file; a missing, unreadable, non-regular, oversized, non-UTF-8, invalid or
    too deeply nested file is a :class:`ConfigError` naming it (``what`` says which kind)."""
    path = Path(path)
    name = f"{what} {short_path(path)}"
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ConfigError(f"{name} does not exist; check the path") from None
    except (OSError, ValueError) as err:
        reason = getattr(err, "strerror", None) or str(err)
        raise ConfigError(f"{name} cannot be read: {reason}") from None
    if stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"{name} is a folder; give the path of a TOML file")
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"{name} is not a regular file (a device, FIFO or socket); "
                          "give the path of a TOML file")
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as err:
        raise ConfigError(f"{name} cannot be read: {err.strerror or err}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{name} is larger than {MAX_CONFIG_BYTES // 2**20} MiB; "
                          "a config is a short TOML file")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        hint = " (it looks like UTF-16)" if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else ""
        raise ConfigError(
            f"{name} is not UTF-8 text{hint}: byte 0x{raw[err.start]:02x} at offset {err.start}; "
            "save it as UTF-8 TOML"
        ) from None
    try:
        data = tomllib.loads(text)
    except ValueError as err:  # TOMLDecodeError, or an integer of more than 4300 digits
        raise ConfigError(f"{name} is not valid TOML: {one_line(str(err), 120)}") from None
    except RecursionError:
        raise _nesting_error(name) from None
    if _too_deep(data):
        raise _nesting_error(name)
    return data


def expand_dotted(layer: Mapping[str, Any]) -> dict[str, Any]:
    """Turn ``{"a.b": 1}`` into ``{"a": {"b": 1}}`` (recursively); nested dicts pass through."""
    out: dict[str, Any] = {}
    for key, value in layer.items():
        if isinstance(value, Mapping):
            value = expand_dotted(value)
        set_path(out, key.split("."), value)
    return out


def set_path(tree: dict[str, Any], keys: list[str], value: Any) -> None:
    """Set ``tree[k0][k1]...[kn] = value``, creating tables; merges when both sides are tables."""
    node = tree
    for i, key in enumerate(keys[:-1]):
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{short_key('.'.join(keys[: i + 1]))}: is a value, not a table; "
                              "set the key itself, not a sub-key of it")
        node = child
    last = keys[-1]
    if isinstance(value, dict) and isinstance(node.get(last), dict):
        node[last] = merge(node[last], value)
    else:
        node[last] = value


def merge(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge ``layers`` left to right (tables merge key by key, anything else replaces)."""
    out: dict[str, Any] = {}
    for layer in layers:
        for key, value in expand_dotted(layer).items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = merge(out[key], value)
            else:
                out[key] = value
    return out


def parse_override(text: str) -> dict[str, Any]:
    """Parse one ``--set a.b=value`` into ``{"a": {"b": value}}``.

    The value is read as a TOML literal (``3``, ``1e-3``, ``true``, ``[1, 2]``, ``"x"``); anything
    that is not a TOML literal is kept as a plain string (so ``--set optimizer=gd`` works).
    """
    key, sep, raw = text.partition("=")
    key = key.strip()
    parts = key.split(".")
    if not sep or not key or any(not part.strip() for part in parts):
        raise ConfigError(f"--set {short(text)}: expected KEY=VALUE, e.g. --set max_steps=2000 "
                          "(`deeplinear run NAME --print-config` shows the keys)")
    if len(parts) > MAX_NESTING:
        raise _nesting_error(f"--set {short_key(key)}")
    raw = raw.strip()
    if "\n" in raw or "\r" in raw:
        raise ConfigError(f"--set {short_key(key)}: the value must be on one line; "
                          "use a config file (--config) for longer values")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except ValueError:  # not a TOML literal (TOMLDecodeError), or an integer of > 4300 digits
        value = raw
    except RecursionError:
        raise _nesting_error(f"--set {short_key(key)}") from None
    if _too_deep(value, MAX_NESTING - len(parts)):
        raise _nesting_error(f"--set {short_key(key)}")
    out: dict[str, Any] = {}
    set_path(out, [p.strip() for p in parts], value)
    return out


_SHOWN_ERRORS = 3


def _known_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The keys allowed at ``loc``'s table (nested models followed), for unknown-key hints."""
    current: Any = model
    for part in loc[:-1]:
        field = current.model_fields.get(part) if isinstance(part, str) else None
        annotation = field.annotation if field is not None else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        current = annotation
    return sorted(current.model_fields)


def _unknown_hint(model: type[BaseModel] | None, loc: tuple[Any, ...]) -> str:
    known = _known_keys(model, loc) if model is not None else []
    if not known:
        return "; remove it"
    close = difflib.get_close_matches(str(loc[-1])[:100], known, n=1)
    if close:
        return f" (did you mean {close[0]!r}?)"
    return "; known keys: " + one_line(", ".join(known), 100)


def _format_error(err: ValidationError, model: type[BaseModel] | None = None) -> str:
    """One line for all of ``err``: unknown keys grouped (with a hint), then the first few other
    errors as ``key: what is wrong (got value)``, then how many more there are."""
    items = err.errors(include_url=False)
    unknown = [item for item in items if item["type"] == "extra_forbidden"]
    others = [item for item in items if item["type"] != "extra_forbidden"]
    parts = []
    if unknown:
        names = [".".join(short_key(p, 30) for p in item["loc"]) for item in unknown]
        shown = ", ".join(names[:3])
        more = f" (and {len(names) - 3} more)" if len(names) > 3 else ""
        noun = "unknown key" if len(names) == 1 else "unknown keys"
        parts.append(f"{shown}: {noun}{more}{_unknown_hint(model, tuple(unknown[0]['loc']))}")
    for item in others[:_SHOWN_ERRORS]:
        loc = one_line(".".join(short_key(p, 30) for p in item["loc"]), 60)
        msg = item["msg"]
        if item["type"] == "missing":
            msg = "required key is missing"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        if item["type"] != "missing" and "input" in item:
            got = item["input"]
            if isinstance(got, dict):
                if loc:
                    msg += " (got a table)"
            elif "got" not in msg:  # validators often say it
                msg += f" (got {short(got)})"
        msg = one_line(msg, 200)
        parts.append(f"{loc}: {msg}" if loc else msg)  # a model-level check names its keys
    if len(others) > _SHOWN_ERRORS:
        parts.append(f"and {len(others) - _SHOWN_ERRORS} more errors")
    return "; ".join(parts)


def validate(model: type[BaseModel], data: Mapping[str, Any]) -> BaseModel:
    """Validate ``data`` against ``model``; failures become one :class:`ConfigError` line."""
    if _too_deep(data):
        raise _nesting_error("config")
    try:
        return model.model_validate(dict(data))
    except ValidationError as err:
        raise ConfigError(_format_error(err, model)) from None
    except RecursionError:
        raise _nesting_error("config") from None


def build_config(
    model: type[BaseModel],
    *,
    preset: Mapping[str, Any] | None = None,
    files: Iterable[str | Path] = (),
    sets: Iterable[str] = (),
) -> BaseModel:
    """Merge ``preset`` <- files <- ``--set`` overrides (left to right), validate against ``model``.

    Defaults come from the model itself, so only the keys a layer mentions change.
    """
    layers: list[Mapping[str, Any]] = [preset or {}]
    layers += [load_toml(f) for f in files]
    layers += [parse_override(s) for s in sets]
    return validate(model, merge(*layers))


def _plain(value: Any) -> Any:
    """JSON/TOML-friendly copy (:func:`deeplinear._format.jsonable`) with ``None`` keys dropped:
    TOML has no null, and NaN or inf (a value that does not exist) become ``None`` first."""
    value = jsonable(value)

    def drop(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: drop(x) for k, x in v.items() if x is not None}
        return [drop(x) for x in v] if isinstance(v, list) else v

    return drop(value)


def config_dict(config: BaseModel) -> dict[str, Any]:
    """The validated config as a plain nested dict (what ``config.toml`` holds)."""
    return _plain(config.model_dump(mode="json"))


def dump_toml(config: BaseModel | Mapping[str, Any]) -> str:
    """The config as TOML text (tomli_w); ``None`` fields are omitted."""
    data = config_dict(config) if isinstance(config, BaseModel) else _plain(config)
    return tomli_w.dumps(data)


def run_id(experiment: str, config: BaseModel | Mapping[str, Any]) -> str:
    """Stable id of a run: 12 hex digits of sha256 over the experiment name and merged config."""
    data = config_dict(config) if isinstance(config, BaseModel) else _plain(config)
    blob = json.dumps({"experiment": experiment, "config": data}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]
