"""Values as the report shows them: formatting, missing values, the headline rows (the notes'
reported value, ours, and their agreement) and the sweep tables."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from deeplinear._format import fmt, jsonable
from deeplinear.experiments.base import Headline, Reported, Status, agreement
from deeplinear.report._read import (
    _NONFINITE_TEXT,
    DIVERGED,
    MAX_CELL_CHARS,
    NOT_REACHED,
    SHOWN,
    RunRecord,
    short,
)


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


class NoValue(str):
    """A measured value that does not exist, shown as its reason ("not reached", "diverged")."""


def is_missing(value: Any) -> bool:
    """``null``, a non-finite float, or a legacy ``"nan"``/``"inf"`` string."""
    if value is None:
        return True
    if isinstance(value, float):
        return not math.isfinite(value)
    return isinstance(value, str) and not isinstance(value, NoValue) \
        and value.strip().lower() in _NONFINITE_TEXT


def shown(value: Any, diverged: bool) -> Any:
    """``value``, or a :class:`NoValue` saying why it does not exist."""
    if is_missing(value):
        return NoValue(DIVERGED if diverged else NOT_REACHED)
    return value


def cell(value: Any) -> str:
    """A table cell: like :func:`fmt`, but never NaN or inf, and shortened when long."""
    return short(_fmtcell(value, 0), MAX_CELL_CHARS) if not isinstance(value, str) \
        else short(value, MAX_CELL_CHARS)


def _fmtcell(value: Any, depth: int) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return "not finite"
    if isinstance(value, list | tuple):
        if depth > 4:
            return "[…]"
        items = [_fmtcell(v, depth + 1) for v in value[:50]]
        return "[" + ", ".join(items) + (", …" if len(value) > 50 else "") + "]"
    if isinstance(value, str) and is_missing(value):
        return "not finite"
    return fmt(value)


def comparison(record: RunRecord) -> list[tuple[str, str, str, str]]:
    """Rows (key, reported, measured, measured/reported) over the union of keys, reported first.

    A measured value that does not exist shows as "not reached" ("diverged" when the run
    recorded divergences)."""
    reported, measured = flatten(record.reported), flatten(record.summary)
    diverged = bool(getattr(record, "has_divergences", False))
    rows = []
    for key in [*reported, *(k for k in measured if k not in reported)]:
        r, m = reported.get(key), shown(measured.get(key), diverged)
        ratio = ""
        if _is_num(r) and _is_num(m) and r != 0:
            ratio = f"{m / r:.3g}"
        rows.append((key, cell(r) if key in reported else "—",
                     cell(m) if key in measured else "—", ratio))
    return rows


def sweep_tables(runs: list[RunRecord]) -> dict[str, tuple[list[str], list[list[Any]]]]:
    """Per experiment with several runs (a sweep): one row per run with the config values that
    tell its runs apart (the grid values and seed) and the measured headline (or, for runs stored
    without one, the summary); blank for runs that are not ``done``/``partial``."""
    by_exp: dict[str, list[RunRecord]] = {}
    for r in runs:
        by_exp.setdefault(r.experiment, []).append(r)
    out = {}
    for name, group in by_exp.items():
        if len(group) < 2:
            continue
        configs = [flatten(r.status.get("config") or {}) for r in group]
        keys = list(dict.fromkeys(k for c in configs for k in c))
        varying = [k for k in keys if len({json.dumps(jsonable(c.get(k)), sort_keys=True)
                                           for c in configs}) > 1]
        values = [_measured(r) for r in group]
        measured = list(dict.fromkeys(k for v in values for k in v))
        rows = []
        for r, c, v in zip(group, configs, values, strict=True):
            rows.append([r.path.name, r.status.get("status"), *(c.get(k) for k in varying),
                         *(v.get(k) for k in measured)])
        out[name] = (["run", "status", *varying, *measured], rows)
    return out


def _measured(r: RunRecord) -> dict[str, Any]:
    if r.state not in SHOWN:
        return {}
    if r.headline:
        return {h["key"]: shown(h.get("value"), r.has_divergences) for h in r.headline}
    return {k: shown(v, r.has_divergences) for k, v in flatten(r.summary).items()}


def _is_num(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _table_rows(r: RunRecord, rows: list[dict[str, Any]], header: list[str]) -> list[list[Any]]:
    div = r.has_divergences
    return [[shown(v, div) if (v := row.get(h)) is not None else None for h in header]
            for row in rows]


def _status_note(r: RunRecord) -> str | None:
    """The warning for a run whose numbers are not (all) results."""
    state = r.state
    if state == Status.DONE:
        return None
    if state == Status.PARTIAL:
        return ("some training sub-runs diverged; the values below come from the others, and "
                "values that depend on a diverged sub-run are not shown.")
    why = r.status.get("error") or ""
    return f"these numbers are not a result. {short(why, 300)}".strip()


def _as_reported(raw: Any) -> Reported | None:
    """A ``reported`` entry of summary.json: ``{"value", "where", "factor"}``, or a bare value
    (older runs: shown, not judged)."""
    if isinstance(raw, dict) and "value" in raw:
        value, factor = raw.get("value"), raw.get("factor")
        value = tuple(value) if isinstance(value, list) else value
        ok = isinstance(value, int | float | tuple) and (factor is None or _is_num(factor))
        return Reported(value, str(raw.get("where") or ""), factor) if ok else None
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        return Reported(raw, "")
    if isinstance(raw, list) and all(_is_num(x) for x in raw):
        return Reported(tuple(raw), "")
    return None


def headline_rows(record: RunRecord) -> list[dict[str, Any]]:
    """The run's headline as rows: quantity (description and key), the notes' value and where it
    comes from, ours, measured on what, and the agreement verdict with its detail."""
    rows = []
    diverged = record.has_divergences
    for item in record.headline:
        value = item.get("value")
        value = tuple(value) if isinstance(value, list) else value
        h = Headline(item["key"], None if is_missing(value) else value, item["description"],
                     item["measured_on"], item.get("not_comparable") or None)
        rep = _as_reported(record.reported.get(h.key))
        if rep is None:
            verdict, detail = "", "the notes report no number for this quantity"
        else:
            verdict, detail = agreement(rep, h)
        rows.append({"key": h.key, "description": h.description,
                     "reported": "" if rep is None else rep.value,
                     "where": "" if rep is None else rep.where,
                     "measured": shown(h.value, diverged), "measured_on": h.measured_on,
                     "verdict": verdict, "detail": detail})
    return rows


def headline_counts(record: RunRecord) -> dict[str, int]:
    """How many headline rows have each verdict (for the overview)."""
    counts: dict[str, int] = {}
    for row in headline_rows(record):
        if row["verdict"]:
            counts[row["verdict"]] = counts.get(row["verdict"], 0) + 1
    return counts

