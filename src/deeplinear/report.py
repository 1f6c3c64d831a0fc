"""The reproduction report: ``report.html`` (self-contained) and ``report.md`` for a runs folder.

For every finished run found under the folder it shows the run's status (done / partial /
diverged / failed) and its divergences, the figures (PNG, base64-embedded in the HTML), the notes'
reported values (``Experiment.reported``, saved in ``summary.json``) next to the measured ones
(``Results.summary``), the metric tables, the notes and the merged config; then the theory-check
table from ``verify.json`` when present.

Run folders are read defensively: a run whose files are damaged (truncated, not JSON/CSV, the
wrong JSON type, not UTF-8, unreadable, a folder or FIFO in place of a file, a figure path that
leaves the run folder) is left out and listed under "Damaged runs" with a one-line reason naming
the file; the other runs are still reported. A value that does not exist (``null`` in
``summary.json``, or a legacy ``"nan"``/``"inf"`` string) is shown as "not reached", or
"diverged" when the run recorded divergences; NaN or inf is never shown as a result.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import html
import io
import json
import math
import os
import re
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deeplinear.store import PARTIAL, atomic_write, jsonable

VERIFY_FILE = "verify.json"
REPORT_FILES = ("report.html", "report.md")
MAX_TABLE_ROWS = 25
MAX_FILE_BYTES = 256 * 2**20  # a larger status/summary/CSV/figure file is treated as damaged
MAX_CELL_CHARS = 500  # longer values are shortened in table cells
RUN_STATUSES = ("done", "partial", "diverged", "failed", "running", "pending")
SHOWN = ("done", "partial")  # statuses whose measured values are results
NOT_REACHED, DIVERGED = "not reached", "diverged"
_NONFINITE_TEXT = {"nan", "+nan", "-nan", "inf", "+inf", "-inf", "infinity", "+infinity",
                   "-infinity"}
_TEMP_RE = re.compile(r"\.(?:" + "|".join(map(re.escape, REPORT_FILES)) + r")\.tmp-[0-9a-f]{8}")


# ---------------------------------------------------------------- short, one-line messages


def short(value: Any, limit: int = 60) -> str:
    """``value`` as one line of at most ``limit`` characters (the middle elided)."""
    text = " ".join(str(value).split())
    if len(text) <= limit:
        return text
    head = (limit - 1) * 2 // 3
    return text[:head] + "…" + text[len(text) - (limit - 1 - head):]


def _q(value: Any, limit: int = 60) -> str:
    """A user value quoted for a message, shortened."""
    return repr(short(value, limit)) if isinstance(value, str) else short(value, limit)


def _kind(value: Any) -> str:
    """The JSON type of ``value`` in words."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _oserror(err: OSError) -> str:
    return err.strerror or type(err).__name__


@dataclass(frozen=True)
class Damaged:
    """A run folder (or root file) the report could not use, and why (one line naming the file)."""

    folder: Path
    reason: str

    def line(self, root: Path | None = None) -> str:
        """``<folder>: <reason>``, at most 300 characters."""
        where = self.folder
        if root is not None:
            with contextlib.suppress(ValueError):
                where = self.folder.relative_to(root) if self.folder != Path(root) else root
        return short(f"{short(where, 100)}: {self.reason}", 300)


class _DamageError(Exception):
    """Raised while reading a run; its message is the one-line reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(short(reason, 240))


# ---------------------------------------------------------------- reading files safely


def _read_bytes(path: Path, name: str, limit: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of the regular file ``path`` (``name`` in messages), or :class:`_DamageError`."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise _DamageError(f"{name} is missing (a dangling link?)") from None
    except (OSError, ValueError) as err:
        why = _oserror(err) if isinstance(err, OSError) else str(err)
        raise _DamageError(f"{name} cannot be read ({why})") from None
    if stat.S_ISDIR(st.st_mode):
        raise _DamageError(f"{name} is a folder, not a file")
    if not stat.S_ISREG(st.st_mode):
        raise _DamageError(f"{name} is not a regular file ({_file_kind(st.st_mode)})")
    if st.st_size > limit:
        raise _DamageError(f"{name} is too large ({st.st_size} bytes; limit {limit})")
    try:
        return path.read_bytes()
    except OSError as err:
        raise _DamageError(f"{name} cannot be read ({_oserror(err)})") from None


def _file_kind(mode: int) -> str:
    for test, kind in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind
    return "not a file"


def _read_text(path: Path, name: str) -> str:
    data = _read_bytes(path, name)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise _DamageError(f"{name} is not UTF-8 text (byte 0x{data[err.start]:02x} at offset "
                           f"{err.start})") from None
    if "\x00" in text:
        raise _DamageError(f"{name} contains NUL bytes (corrupt: zero-filled after a crash?)")
    return text.removeprefix("\ufeff")


def _read_json(path: Path, name: str, expect: type) -> Any:
    """Parse ``path`` as JSON holding an ``expect`` (dict or list)."""
    text = _read_text(path, name)
    if not text.strip():
        raise _DamageError(f"{name} is empty")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise _DamageError(f"{name} is not valid JSON, truncated or corrupt (line {err.lineno} "
                           f"column {err.colno}: {err.msg.removesuffix(' at')})") from None
    except RecursionError:
        raise _DamageError(f"{name} is nested too deeply to read") from None
    except ValueError as err:  # e.g. an integer with too many digits
        raise _DamageError(f"{name} is not valid JSON ({short(err, 80)})") from None
    if not isinstance(value, expect):
        want = "an object" if expect is dict else "a list"
        raise _DamageError(f"{name} holds {_kind(value)}, expected {want}")
    return value


def _cell_value(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _read_csv(path: Path, name: str) -> list[dict[str, Any]]:
    """A metric table written by the store: a header, then rows of as many cells."""
    text = _read_text(path, name)
    if not text.strip():
        raise _DamageError(f"{name} is empty (no header row)")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader)
        if not header or any(not h for h in header):
            raise _DamageError(f"{name} is not valid CSV (the header has an empty column name)")
        rows = []
        for row in reader:
            if not row:
                continue
            if len(row) != len(header):
                raise _DamageError(f"{name} is not valid CSV, truncated or corrupt (line "
                                   f"{reader.line_num} has {len(row)} cells, the header "
                                   f"{len(header)})")
            rows.append({h: _cell_value(v) for h, v in zip(header, row, strict=True)})
    except csv.Error as err:
        raise _DamageError(f"{name} is not valid CSV (line {reader.line_num}: "
                           f"{short(err, 80)})") from None
    return rows


# ---------------------------------------------------------------- runs


@dataclass
class RunRecord:
    """A stored run as the report sees it."""

    path: Path
    status: dict[str, Any]
    summary: dict[str, Any]
    notes: list[str]
    reported: dict[str, Any]
    tables: dict[str, list[dict[str, Any]]]
    figures: list[Path]
    config_text: str
    divergences: list[str] = field(default_factory=list)
    figure_data: dict[Path, bytes] = field(default_factory=dict, repr=False)

    @property
    def title(self) -> str:
        return f"{self.status.get('experiment', '?')} ({self.path.name})"

    @property
    def state(self) -> str:
        return str(self.status.get("status"))

    @property
    def has_divergences(self) -> bool:
        return bool(self.divergences) or self.state == "diverged"



@dataclass
class Scan:
    """What :func:`scan_runs` found under a folder: the healthy runs and the damaged ones."""

    runs: list[RunRecord]
    damaged: list[Damaged]


def _walk_run_dirs(root: Path, damaged: list[Damaged]) -> list[Path]:
    """Every folder under ``root`` with a ``status.json`` entry, partial folders excluded."""
    found: list[Path] = []

    def onerror(err: OSError) -> None:
        where = Path(err.filename) if err.filename else root
        damaged.append(Damaged(where, f"folder cannot be listed ({_oserror(err)})"))

    for dirpath, dirnames, filenames in os.walk(root, onerror=onerror):
        dirnames[:] = sorted(d for d in dirnames if PARTIAL not in d)
        if "status.json" in filenames or "status.json" in dirnames:
            found.append(Path(dirpath))
    return sorted(found, key=lambda p: p.relative_to(root).parts)


def _status(raw: dict[str, Any]) -> list[str]:
    """Check the fields of ``status.json`` the report uses; returns its divergences as lines
    ``"<label>: diverged at step k"``."""
    state = raw.get("status")
    if state not in RUN_STATUSES:
        got = "missing" if "status" not in raw else (
            _q(state) if isinstance(state, str) else _kind(state))
        raise _DamageError(f"status.json: 'status' is {got}, expected one of "
                           f"{', '.join(RUN_STATUSES)}")
    if not isinstance(raw.get("experiment"), str):
        raise _DamageError(f"status.json: 'experiment' is {_kind(raw.get('experiment'))}, "
                           "expected the experiment's name")
    for key, ok, want in (
        ("config", lambda v: isinstance(v, dict), "an object"),
        ("seconds", lambda v: isinstance(v, int | float) and not isinstance(v, bool), "a number"),
        ("error", lambda v: isinstance(v, str), "a string"),
        ("figures", lambda v: isinstance(v, list), "a list of paths"),
        ("divergences", lambda v: isinstance(v, list), "a list"),
    ):
        if raw.get(key) is not None and not ok(raw[key]):
            raise _DamageError(f"status.json: '{key}' is {_kind(raw[key])}, expected {want}")
    return [_divergence(item) for item in raw.get("divergences") or []]


def _divergence(item: Any) -> str:
    """One ``divergences`` entry, ``{"run": label, "step": k or null}`` (or an already written
    line ``"<label>: diverged at step k"``), as its line."""
    if isinstance(item, str):
        return short(item, 200)
    if not isinstance(item, dict):
        raise _DamageError(f"status.json: a 'divergences' entry is {_kind(item)}, expected an "
                           'object {"run": label, "step": step}')
    label, step = item.get("run"), item.get("step")
    if not isinstance(label, str | int) or isinstance(label, bool):
        raise _DamageError(f"status.json: a divergence's 'run' is {_kind(label)}, expected a "
                           "label")
    if step is not None and (not isinstance(step, int) or isinstance(step, bool)):
        raise _DamageError(f"status.json: a divergence's 'step' is {_kind(step)}, expected an "
                           "integer or null")
    return short(label, 120) + ": diverged" + ("" if step is None else f" at step {step}")


def _figures(run_dir: Path, entries: list[Any]) -> dict[Path, bytes]:
    """The run's PNG figures (path -> bytes); every entry must stay inside ``run_dir``."""
    base = run_dir.resolve()
    out: dict[Path, bytes] = {}
    for entry in entries:
        if not isinstance(entry, str) or not entry or "\x00" in entry:
            what = _kind(entry) if not isinstance(entry, str) else "empty or has a NUL"
            raise _DamageError(f"status.json: a 'figures' entry is {what}, expected a relative path")
        rel = Path(entry)
        if rel.is_absolute():
            raise _DamageError(f"status.json: figure {_q(entry)} is an absolute path; figures must be "
                               "inside the run folder")
        if ".." in rel.parts:
            raise _DamageError(f"status.json: figure {_q(entry)} contains '..'; figures must be inside "
                               "the run folder")
        full = run_dir / rel
        try:
            resolved = full.resolve(strict=True)
        except FileNotFoundError:
            if entry.endswith(".png"):
                raise _DamageError(f"figure {_q(entry)} listed in status.json is missing") from None
            continue
        except (OSError, RuntimeError) as err:  # RuntimeError: a symlink loop (Python < 3.13)
            why = _oserror(err) if isinstance(err, OSError) else "symlink loop"
            raise _DamageError(f"figure {_q(entry)} cannot be resolved ({why})") from None
        if not resolved.is_relative_to(base):
            raise _DamageError(f"figure {_q(entry)} is a symlink resolving outside the run folder")
        if entry.endswith(".png"):
            data = _read_bytes(full, f"figure {_q(entry)}")
            if not data.startswith(b"\x89PNG\r\n\x1a\n"):
                raise _DamageError(f"figure {_q(entry)} is not a PNG image")
            out[full] = data
    return out


def _summary(run_dir: Path) -> tuple[dict[str, Any], list[str], dict[str, Any]]:
    path = run_dir / "summary.json"
    if not os.path.lexists(path):
        return {}, [], {}
    raw = _read_json(path, "summary.json", dict)
    parts = []
    for key, want in (("summary", dict), ("notes", list), ("reported", dict)):
        value = raw.get(key)
        if value is None:
            value = want()
        if not isinstance(value, want):
            raise _DamageError(f"summary.json: '{key}' is {_kind(value)}, expected "
                               f"{'an object' if want is dict else 'a list'}")
        parts.append(value)
    summary, notes, reported = parts
    for note in notes:
        if not isinstance(note, str):
            raise _DamageError(f"summary.json: a 'notes' entry is {_kind(note)}, expected a string")
    return summary, notes, reported


def load_run(run_dir: Path) -> RunRecord:
    """Read one run folder; raises :class:`ValueError` with a one-line reason when damaged."""
    try:
        status = _read_json(run_dir / "status.json", "status.json", dict)
        divergences = _status(status)
        summary, notes, reported = _summary(run_dir)
        tables = {}
        for p in sorted(run_dir.glob("*.csv")):
            tables[p.stem] = _read_csv(p, short(p.name, 80))
        config_path = run_dir / "config.toml"
        config_text = (_read_text(config_path, "config.toml")
                       if os.path.lexists(config_path) else "")
        figure_data = _figures(run_dir, status.get("figures") or [])
        for tree, name in ((summary, "summary.json"), (reported, "summary.json"),
                           (status.get("config") or {}, "status.json")):
            if _depth(tree) > 32:
                raise _DamageError(f"{name} is nested too deeply (more than 32 levels)")
    except _DamageError as err:
        raise ValueError(str(err)) from None
    except OSError as err:  # e.g. the folder vanished or cannot be listed while reading
        raise ValueError(short(f"run folder cannot be read ({_oserror(err)})", 240)) from None
    return RunRecord(path=run_dir, status=status, summary=summary, notes=notes,
                     reported=reported, tables=tables, figures=list(figure_data),
                     config_text=config_text, divergences=divergences, figure_data=figure_data)


def _depth(value: Any, limit: int = 33) -> int:
    """How deeply ``value`` nests (stops counting at ``limit``)."""
    depth, level = 0, [value]
    while level and depth < limit:
        nxt = []
        for v in level:
            if isinstance(v, Mapping):
                nxt.extend(v.values())
            elif isinstance(v, list | tuple):
                nxt.extend(v)
        if not nxt:
            break
        depth, level = depth + 1, nxt
    return depth


def scan_runs(root: str | Path) -> Scan:
    """Every run folder under ``root`` (by its ``status.json``, partial folders excluded), split
    into the healthy runs and the damaged ones."""
    root = Path(root)
    damaged: list[Damaged] = []
    runs = []
    for run_dir in _walk_run_dirs(root, damaged):
        try:
            runs.append(load_run(run_dir))
        except ValueError as err:
            damaged.append(Damaged(run_dir, str(err)))
    return Scan(runs, damaged)


def find_runs(root: str | Path) -> list[RunRecord]:
    """The healthy runs under ``root`` (see :func:`scan_runs` for the damaged ones)."""
    return scan_runs(root).runs


def load_verify(root: Path) -> list[dict[str, Any]] | None:
    """The theory checks in ``root/verify.json`` (``None`` when absent); raises
    :class:`ValueError` naming the file when it is damaged."""
    path = Path(root) / VERIFY_FILE
    if not os.path.lexists(path):
        return None
    try:
        checks = _read_json(path, VERIFY_FILE, list)
        for i, c in enumerate(checks):
            if not isinstance(c, dict):
                raise _DamageError(f"{VERIFY_FILE}: entry {i} is {_kind(c)}, expected an object")
            if not isinstance(c.get("name"), str):
                raise _DamageError(f"{VERIFY_FILE}: entry {i}'s 'name' is {_kind(c.get('name'))}, "
                                   "expected a string")
            if not isinstance(c.get("passed"), bool):
                raise _DamageError(f"{VERIFY_FILE}: check {_q(c['name'])}'s 'passed' is "
                                   f"{_kind(c.get('passed'))}, expected true or false")
            if _depth(c) > 32:
                raise _DamageError(f"{VERIFY_FILE}: check {_q(c['name'])} is nested too deeply")
    except _DamageError as err:
        raise ValueError(str(err)) from None
    return checks


# ---------------------------------------------------------------- values


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


def fmt(value: Any) -> str:
    """Numbers to 4 significant digits; everything else as text."""
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(fmt(v) for v in value) + "]"
    return str(value)


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


def _cell(value: Any) -> str:
    """A table cell: like :func:`fmt`, but never NaN or inf, and shortened when long."""
    return short(_fmt_cell(value, 0), MAX_CELL_CHARS) if not isinstance(value, str) \
        else short(value, MAX_CELL_CHARS)


def _fmt_cell(value: Any, depth: int) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return "not finite"
    if isinstance(value, list | tuple):
        if depth > 4:
            return "[…]"
        items = [_fmt_cell(v, depth + 1) for v in value[:50]]
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
        rows.append((key, _cell(r) if key in reported else "—",
                     _cell(m) if key in measured else "—", ratio))
    return rows


def sweep_tables(runs: list[RunRecord]) -> dict[str, tuple[list[str], list[list[Any]]]]:
    """Per experiment with several runs (a sweep): one row per run with the config keys that vary
    across its runs and the measured summary (blank for runs that are not ``done`` or
    ``partial``; a :class:`NoValue` where a value does not exist)."""
    by_exp: dict[str, list[RunRecord]] = {}
    for r in runs:
        by_exp.setdefault(str(r.status.get("experiment")), []).append(r)
    out = {}
    for name, group in by_exp.items():
        if len(group) < 2:
            continue
        configs = [flatten(r.status.get("config") or {}) for r in group]
        keys = list(dict.fromkeys(k for c in configs for k in c))
        varying = [k for k in keys if len({json.dumps(jsonable(c.get(k)), sort_keys=True)
                                           for c in configs}) > 1]
        measured = list(dict.fromkeys(k for r in group for k in flatten(r.summary)))
        rows = []
        for r, c in zip(group, configs, strict=True):
            summ = flatten(r.summary) if r.state in SHOWN else {}
            diverged = r.has_divergences
            rows.append([r.path.name, r.status.get("status"), *(c.get(k) for k in varying),
                         *(shown(summ[k], diverged) if k in summ else None for k in measured)])
        out[name] = (["run", "status", *varying, *measured], rows)
    return out


def _is_num(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _table_rows(r: RunRecord, rows: list[dict[str, Any]], header: list[str]) -> list[list[Any]]:
    div = r.has_divergences
    return [[shown(v, div) if (v := row.get(h)) is not None else None for h in header]
            for row in rows]


def _status_note(r: RunRecord) -> str | None:
    """The warning for a run whose numbers are not (all) results."""
    state = r.state
    if state == "done":
        return None
    if state == "partial":
        return ("some training sub-runs diverged; the values below come from the others, and "
                "values that depend on a diverged sub-run are not shown.")
    why = r.status.get("error") or ""
    return f"these numbers are not a result. {short(why, 300)}".strip()


# ---------------------------------------------------------------- HTML

_CSS = """
body{font-family:system-ui,sans-serif;max-width:70em;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.2em .5em;
font-size:.9em;text-align:left}th{background:#f3f3f3}.pass{color:#070}.fail{color:#b00;
font-weight:bold}.warn{background:#fff4d6;padding:.5em}pre{background:#f7f7f7;padding:.5em;
overflow-x:auto}img{max-width:100%;border:1px solid #eee}details{margin:.5em 0}
.badge{display:inline-block;padding:.1em .6em;border-radius:.3em;font-weight:bold}
.s-done{background:#dfd;color:#060}.s-partial{background:#fff4d6;color:#850}
.s-diverged,.s-failed,.s-running,.s-pending{background:#fdd;color:#a00}
.damaged{background:#fdd;padding:.5em}
"""


def _table(header: list[str], rows: list[list[Any]], classes: list[str] | None = None) -> str:
    head = "".join(f"<th>{html.escape(_cell(h))}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{classes[i]}"' if classes and classes[i] else ""
        cells = "".join(f"<td>{html.escape(_cell(c))}</td>" for c in row)
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _img(path: Path, data: bytes | None = None) -> str:
    encoded = base64.b64encode(path.read_bytes() if data is None else data).decode()
    return (f'<figure><img alt="{html.escape(path.name)}" src="data:image/png;base64,{encoded}">'
            f"<figcaption>{html.escape(path.name)}</figcaption></figure>")


def _badge(state: str) -> str:
    cls = state if state in RUN_STATUSES else "failed"
    return f"<span class='badge s-{cls}'>{html.escape(state)}</span>"


def _verify_rows(checks: list[dict[str, Any]]) -> tuple[list[list[Any]], list[str]]:
    rows = [[c.get("name"), "PASS" if c.get("passed") else "FAIL", c.get("measured"),
             c.get("predicted"), c.get("tolerance"), c.get("statement")] for c in checks]
    return rows, ["pass" if c.get("passed") else "fail" for c in checks]


def _damaged_intro(n: int) -> str:
    return (f"{n} damaged run folder(s) or file(s) could not be read and are left out of this "
            "report (each reason names the file); re-run those runs or remove their folders.")


def render_html(root: Path, runs: list[RunRecord], checks: list[dict[str, Any]] | None,
                damaged: list[Damaged] | None = None) -> str:
    e = html.escape
    damaged = damaged or []
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>deeplinear report</title>"
             f"<style>{_CSS}</style></head><body><h1>deeplinear reproduction report</h1>",
             f"<p>Runs folder: <code>{e(str(root))}</code></p><h2>Overview</h2>"]
    parts.append(_table(
        ["experiment", "run", "status", "seconds", "figures", "divergences"],
        [[r.status.get("experiment"), r.path.name, r.status.get("status"),
          r.status.get("seconds"), len(r.figures), len(r.divergences)] for r in runs],
        ["" if r.state == "done" else "fail" for r in runs],
    ))
    if damaged:
        parts.append(f"<p class='damaged'>{e(_damaged_intro(len(damaged)))} "
                     "<a href='#damaged'>Damaged runs</a></p>")
    if checks is not None:
        n_fail = sum(not c.get("passed") for c in checks)
        parts.append(f"<p>Theory checks: {len(checks) - n_fail} passed, {n_fail} failed.</p>")
    for name, (header, rows) in sweep_tables(runs).items():
        parts.append(f"<h2>Sweep: {e(name)} ({len(rows)} runs)</h2>")
        parts.append(_table(header, rows))
    for r in runs:
        parts.append(f"<h2 id='{e(r.path.name)}'>{e(r.title)}</h2>")
        parts.append(f"<p>Status: {_badge(r.state)}</p>")
        note = _status_note(r)
        if note:
            parts.append(f"<p class='warn'>Status <b>{e(r.state)}</b>: {e(note)}</p>")
        if r.divergences:
            parts.append("<h3>Divergences</h3><ul>"
                         + "".join(f"<li>{e(line)}</li>" for line in r.divergences)
                         + "</ul>")
        if r.state in SHOWN:
            parts.append("<h3>Reported (notes) vs measured</h3>")
            parts.append(_table(["quantity", "reported", "measured", "measured / reported"],
                                [list(row) for row in comparison(r)]))
        for fig in r.figures:
            parts.append(_img(fig, r.figure_data.get(fig)))
        if r.notes:
            parts.append("<h3>Notes</h3><ul>" + "".join(f"<li>{e(n)}</li>" for n in r.notes)
                         + "</ul>")
        for name, rows in r.tables.items():
            header = list(dict.fromkeys(k for row in rows for k in row))
            shown_rows = rows[:MAX_TABLE_ROWS]
            more = (f" (first {len(shown_rows)} of {len(rows)} rows)"
                    if len(rows) > len(shown_rows) else "")
            parts.append(f"<details><summary>Table <code>{e(name)}</code>{more}</summary>")
            parts.append(_table(header, _table_rows(r, shown_rows, header)))
            parts.append("</details>")
        parts.append(f"<details><summary>config.toml</summary><pre>{e(r.config_text)}</pre>"
                     "</details>")
    if damaged:
        parts.append("<h2 id='damaged'>Damaged runs</h2>")
        parts.append(f"<p class='damaged'>{e(_damaged_intro(len(damaged)))}</p><ul>")
        for d in damaged:
            parts.append(f"<li><code>{e(_rel(d.folder, root))}</code>: {e(d.reason)}</li>")
        parts.append("</ul>")
    if checks is not None:
        parts.append("<h2 id='verify'>Theory checks (deeplinear verify)</h2>")
        rows, classes = _verify_rows(checks)
        parts.append(_table(["check", "result", "measured", "predicted", "tolerance",
                             "statement"], rows, classes))
    parts.append("</body></html>\n")
    return "\n".join(parts)


# ---------------------------------------------------------------- Markdown

def _md_table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(x: Any) -> str:
        return _cell(x).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def render_markdown(root: Path, runs: list[RunRecord], checks: list[dict[str, Any]] | None,
                    out_dir: Path, damaged: list[Damaged] | None = None) -> str:
    damaged = damaged or []
    parts = ["# deeplinear reproduction report\n", f"Runs folder: `{root}`\n", "## Overview\n",
             _md_table(["experiment", "run", "status", "seconds", "divergences"],
                       [[r.status.get("experiment"), r.path.name, r.status.get("status"),
                         r.status.get("seconds"), len(r.divergences)] for r in runs])]
    if damaged:
        parts.append(f"**{_damaged_intro(len(damaged))}** See *Damaged runs* below.\n")
    for name, (header, rows) in sweep_tables(runs).items():
        parts.append(f"## Sweep: {name} ({len(rows)} runs)\n")
        parts.append(_md_table(header, rows))
    for r in runs:
        parts.append(f"## {r.title}\n")
        parts.append(f"**Status: {r.state}**\n")
        note = _status_note(r)
        if note:
            parts.append(f"> **Status {r.state}**: {note}\n")
        if r.divergences:
            parts.append("Divergences:\n\n" + "\n".join(f"- {line}"
                                                        for line in r.divergences) + "\n")
        if r.state in SHOWN:
            parts.append("### Reported (notes) vs measured\n")
            parts.append(_md_table(["quantity", "reported", "measured", "measured / reported"],
                                   [list(row) for row in comparison(r)]))
        for fig in r.figures:
            rel = Path(_relpath(fig, out_dir))
            parts.append(f"![{fig.name}]({rel.as_posix()})\n")
        if r.notes:
            parts.append("\n".join(f"- {n}" for n in r.notes) + "\n")
        parts.append(f"<details><summary>config.toml</summary>\n\n```toml\n{r.config_text}```\n"
                     "</details>\n")
    if damaged:
        parts.append("## Damaged runs\n")
        parts.append(_damaged_intro(len(damaged)) + "\n")
        parts.append("\n".join(f"- `{_rel(d.folder, root)}`: {d.reason}" for d in damaged) + "\n")
    if checks is not None:
        parts.append("## Theory checks (deeplinear verify)\n")
        parts.append(_md_table(["check", "result", "measured", "predicted", "tolerance",
                                "statement"], _verify_rows(checks)[0]))
    return "\n".join(parts)


def _relpath(path: Path, start: Path) -> str:
    return os.path.relpath(path.resolve(), start.resolve())


def _rel(path: Path, root: Path) -> str:
    try:
        rel = path.relative_to(root)
    except ValueError:
        return short(path, 120)
    return short(rel.as_posix() if rel.parts else ".", 120)


# ---------------------------------------------------------------- writing


@dataclass
class ReportResult:
    """The written report. Unpacks as ``html_path, md_path = write_report(...)``."""

    html: Path
    md: Path
    runs: list[RunRecord]
    damaged: list[Damaged]

    def __iter__(self) -> Iterator[Path]:
        return iter((self.html, self.md))


def clean_report_temp(out: Path) -> int:
    """Delete leftover ``.report.html.tmp-XXXXXXXX`` / ``.report.md.tmp-XXXXXXXX`` files in
    ``out`` (a killed report's temporaries); nothing else is touched. Returns the count."""
    count = 0
    try:
        names = os.listdir(out)
    except OSError:
        return 0
    for name in names:
        if not _TEMP_RE.fullmatch(name):
            continue
        path = out / name
        try:
            if stat.S_ISREG(os.lstat(path).st_mode):
                path.unlink()
                count += 1
        except OSError:
            pass
    return count


def _check_root(root: Path) -> None:
    if not root.exists():
        raise ValueError(f"report: runs folder {_q(str(root), 120)} does not exist")
    if not root.is_dir():
        raise ValueError(f"report: {_q(str(root), 120)} is not a folder; give the runs folder "
                         "(a reproduce or sweep output)")
    try:
        os.listdir(root)
    except OSError as err:
        raise ValueError(f"report: runs folder {_q(str(root), 120)} cannot be read "
                         f"({_oserror(err)})") from None


def _prepare_out(out: Path) -> None:
    """Create ``out`` and refuse report files that are not plain files (folders, links, FIFOs)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"report: cannot create the output folder {_q(str(out), 120)} "
                         f"({_oserror(err)})") from None
    if not out.is_dir():
        raise ValueError(f"report: output {_q(str(out), 120)} is not a folder")
    for name in REPORT_FILES:
        path = out / name
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            continue
        except OSError as err:
            raise ValueError(f"report: {_q(str(path), 120)} cannot be checked "
                             f"({_oserror(err)})") from None
        if not stat.S_ISREG(mode):
            what = ("a symlink" if stat.S_ISLNK(mode) else "a folder" if stat.S_ISDIR(mode)
                    else _file_kind(mode))
            raise ValueError(f"report: {_q(str(path), 120)} is {what}, not a report file; "
                             "remove or rename it")


def write_report(root: str | Path, out_dir: str | Path | None = None) -> ReportResult:
    """Write ``report.html`` and ``report.md`` for the runs under ``root`` (into ``out_dir``,
    default ``root``). Damaged runs (and a damaged ``verify.json``) are left out and listed in
    the report and in the result's ``damaged``. Raises :class:`ValueError` (one line) when
    ``root`` is not a readable folder or the report cannot be written."""
    root = Path(root)
    _check_root(root)
    out = Path(out_dir) if out_dir is not None else root
    _prepare_out(out)
    clean_report_temp(out)
    scan = scan_runs(root)
    damaged = list(scan.damaged)
    try:
        checks = load_verify(root)
    except ValueError as err:
        checks = None
        damaged.append(Damaged(root, str(err)))
    html_path, md_path = out / REPORT_FILES[0], out / REPORT_FILES[1]
    for path, text in ((html_path, render_html(root, scan.runs, checks, damaged)),
                       (md_path, render_markdown(root, scan.runs, checks, out, damaged))):
        try:
            atomic_write(path, text)
        except OSError as err:
            raise ValueError(f"report: cannot write {_q(str(path), 120)} "
                             f"({_oserror(err)})") from None
    return ReportResult(html_path, md_path, scan.runs, damaged)


def dumps_checks(checks: list[Mapping[str, Any]]) -> str:
    """The verify results as JSON text (non-finite floats as strings)."""
    return json.dumps(jsonable(list(checks)), indent=2)
