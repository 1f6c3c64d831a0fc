"""Reading run folders for the report, defensively: a run whose files are damaged (truncated, not
JSON/CSV, the wrong JSON type, not UTF-8, unreadable, a folder or FIFO in place of a file, a figure
path that leaves the run folder) is set aside as :class:`Damaged` with a one-line reason naming
the file; the other runs are still reported.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deeplinear.experiments.base import Divergence, Status
from deeplinear.store import PARTIAL, csv_cell

VERIFY_FILE = "verify.json"
REPORT_FILES = ("report.html", "report.md")
MAX_TABLE_ROWS = 25
MAX_FILE_BYTES = 256 * 2**20  # a larger status/summary/CSV/figure file is treated as damaged
MAX_CELL_CHARS = 500  # longer values are shortened in table cells
RUN_STATUSES = tuple(str(s) for s in Status)
SHOWN = (Status.DONE, Status.PARTIAL)  # statuses whose measured values are results
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
            rows.append({h: csv_cell(v) for h, v in zip(header, row, strict=True)})
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
    question: str = ""
    headline: list[dict[str, Any]] = field(default_factory=list)

    @property
    def experiment(self) -> str:
        return str(self.status.get("experiment", "?"))

    @property
    def title(self) -> str:
        """The experiment's name, and the run folder's when it says something more."""
        name = self.experiment
        return name if self.path.name == name else f"{name} ({self.path.name})"

    @property
    def state(self) -> str:
        return str(self.status.get("status"))

    @property
    def has_divergences(self) -> bool:
        return bool(self.divergences) or self.state == Status.DIVERGED



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
    return str(Divergence(short(label, 120), step))


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


_HEADLINE_FIELDS = {"key": str, "description": str, "measured_on": str}


def _summary(run_dir: Path) -> dict[str, Any]:
    """``summary.json``'s parts (summary, notes, reported, question, headline), type-checked."""
    path = run_dir / "summary.json"
    if not os.path.lexists(path):
        return {"summary": {}, "notes": [], "reported": {}, "question": "", "headline": []}
    raw = _read_json(path, "summary.json", dict)
    parts: dict[str, Any] = {}
    for key, want in (("summary", dict), ("notes", list), ("reported", dict), ("question", str),
                      ("headline", list)):
        value = raw.get(key)
        if value is None:
            value = want()
        if not isinstance(value, want):
            expected = {dict: "an object", list: "a list", str: "a string"}[want]
            raise _DamageError(f"summary.json: '{key}' is {_kind(value)}, expected {expected}")
        parts[key] = value
    for note in parts["notes"]:
        if not isinstance(note, str):
            raise _DamageError(f"summary.json: a 'notes' entry is {_kind(note)}, expected a string")
    for item in parts["headline"]:
        if not isinstance(item, dict) or any(not isinstance(item.get(k), t)
                                             for k, t in _HEADLINE_FIELDS.items()):
            raise _DamageError("summary.json: a 'headline' entry is not an object with 'key', "
                               "'description' and 'measured_on' strings")
    return parts


def load_run(run_dir: Path) -> RunRecord:
    """Read one run folder; raises :class:`ValueError` with a one-line reason when damaged."""
    try:
        status = _read_json(run_dir / "status.json", "status.json", dict)
        divergences = _status(status)
        parts = _summary(run_dir)
        summary, reported = parts["summary"], parts["reported"]
        tables = {}
        for p in sorted(run_dir.glob("*.csv")):
            tables[p.stem] = _read_csv(p, short(p.name, 80))
        config_path = run_dir / "config.toml"
        config_text = (_read_text(config_path, "config.toml")
                       if os.path.lexists(config_path) else "")
        figure_data = _figures(run_dir, status.get("figures") or [])
        for tree, name in ((summary, "summary.json"), (reported, "summary.json"),
                           (parts["headline"], "summary.json"),
                           (status.get("config") or {}, "status.json")):
            if _depth(tree) > 32:
                raise _DamageError(f"{name} is nested too deeply (more than 32 levels)")
    except _DamageError as err:
        raise ValueError(str(err)) from None
    except OSError as err:  # e.g. the folder vanished or cannot be listed while reading
        raise ValueError(short(f"run folder cannot be read ({_oserror(err)})", 240)) from None
    return RunRecord(path=run_dir, status=status, summary=summary, notes=parts["notes"],
                     reported=reported, tables=tables, figures=list(figure_data),
                     config_text=config_text, divergences=divergences, figure_data=figure_data,
                     question=parts["question"], headline=parts["headline"])


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
