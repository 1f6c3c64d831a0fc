"""Layered TOML configs: defaults <- preset (--quick/--paper) <- files <- ``--set`` overrides.

Every layer is a nested dict; later layers win key by key (tables merge, values replace). The
merged dict is validated by the experiment's pydantic ``config_model`` (``extra="forbid"``), so
unknown keys, wrong types and impossible values are all reported as one :class:`ConfigError`
line naming the key.
"""

from __future__ import annotations

import hashlib
import json
import math
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import tomli_w
from pydantic import BaseModel, ValidationError


class ConfigError(ValueError):
    """A bad config: the message is one line naming the key (or file) and the reason."""


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read one TOML file; a missing file or bad TOML is a :class:`ConfigError`."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist") from None
    except OSError as err:
        raise ConfigError(f"config file {str(path)!r} cannot be read: {err.strerror}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {err}") from None


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
            raise ConfigError(f"{'.'.join(keys[: i + 1])}: is a value, not a table")
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
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. --set train.steps=1000")
    raw = raw.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    out: dict[str, Any] = {}
    set_path(out, key.split("."), value)
    return out


def _format_error(err: ValidationError) -> str:
    parts = []
    for item in err.errors():
        loc = ".".join(str(p) for p in item["loc"]) or "config"
        msg = item["msg"]
        if item["type"] == "extra_forbidden":
            msg = "unknown key"
        elif item["type"] == "missing":
            msg = "required key is missing"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        if item["type"] not in ("extra_forbidden", "missing") and "input" in item:
            got = item["input"]
            if not isinstance(got, dict) and "got" not in msg:  # validators often say it
                msg += f" (got {got!r})"
        parts.append(f"{loc}: {msg}")
    return "; ".join(" ".join(p.split()) for p in parts)


def validate(model: type[BaseModel], data: Mapping[str, Any]) -> BaseModel:
    """Validate ``data`` against ``model``; failures become one :class:`ConfigError` line."""
    try:
        return model.model_validate(dict(data))
    except ValidationError as err:
        raise ConfigError(_format_error(err)) from None


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
    """JSON/TOML-friendly copy: tuples to lists, ``None`` dropped (TOML has no null)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


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
