"""Run store: one folder per run, written atomically, plus a SQLite index for sweeps.

A run folder holds ``config.toml``, one CSV per metric table, ``arrays.npz``, ``summary.json``,
``figures/*.png|pdf`` (the experiment's ``plot``) and ``status.json``. Every file is written to a
temporary name and moved into place with ``os.replace``; the whole folder is built under a
``<name>.partial-<token>`` sibling and renamed into place only after ``status.json`` says ``done``
(``partial``, ``diverged``). So a kill at any moment leaves either no run folder or a complete one,
and a half-written run is never marked done.

Values that do not exist (a diverged sub-run, a level never reached) are never written as NaN or
inf: JSON gets ``null``, CSV an empty cell, and a float array with missing entries is saved with
those entries zeroed plus a boolean ``<name>.missing`` mask (``load_results`` turns them back into
NaN in memory).

Output locations (:func:`check_output`): deeplinear only ever renames, replaces or deletes what it
made. An output path must be missing, an empty folder, or a folder deeplinear made (a run folder
with its ``status.json``, a sweep folder with its ``index.sqlite``, or any folder holding the
``.deeplinear`` marker); anything else is refused before the work starts.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import shutil
import sqlite3
import stat
import time
import traceback
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from deeplinear._format import jsonable
from deeplinear.config import ConfigError, config_dict, dump_toml, run_id, short_path
from deeplinear.experiments.base import (
    FINISHED,
    Divergence,
    Experiment,
    Headline,
    NullProgress,
    Progress,
    Reported,
    Results,
    Status,
)

__all__ = [
    "atomic_write",
    "check_output",
    "claim",
    "clean_partials",
    "clean_temp",
    "csv_cell",
    "divergence_lines",
    "execute_run",
    "is_finished",
    "is_ours",
    "jsonable",
    "load_arrays",
    "load_results",
    "MARKER",
    "OutputError",
    "PARTIAL",
    "read_json",
    "read_status",
    "read_table",
    "RunOutcome",
    "save_arrays",
    "STATUSES",
    "SweepIndex",
    "table_csv",
    "TERMINAL",
    "write_json",
]

TERMINAL = tuple(str(s) for s in FINISHED)
STATUSES = tuple(str(s) for s in Status)
PARTIAL = ".partial-"
MARKER = ".deeplinear"  # written into the top folders deeplinear makes (reproduce, sweep)
_PARTIAL_RE = re.compile(r"\.partial-(old-)?[0-9a-f]{8}$")
_TEMP_RE = re.compile(r"^\..+\.tmp-[0-9a-f]{8}$")


class OutputError(ConfigError):
    """An output path deeplinear refuses to write (one line naming the path and why)."""


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and ``os.replace``.

    The temporary file is removed if writing fails; one left by a kill is removed by
    :func:`clean_temp` on the next run."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "xb") as fh:
            fh.write(data.encode() if isinstance(data, str) else data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def clean_temp(folder: Path) -> int:
    """Delete our leftover temporary files (``.NAME.tmp-XXXXXXXX``) in ``folder``; returns count."""
    count = 0
    with contextlib.suppress(OSError):
        for p in Path(folder).iterdir():
            if _TEMP_RE.match(p.name) and p.is_file() and not p.is_symlink():
                p.unlink()
                count += 1
    return count


# ---------------------------------------------------------------- output locations


def _describe(mode: int) -> str:
    for test, name in ((stat.S_ISREG, "a file"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a folder"


def _is_run_folder(folder: Path) -> bool:
    status = folder / "status.json"
    if status.is_symlink() or not status.is_file():
        return False
    try:
        data = json.loads(status.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(data, dict) and "run_id" in data and "experiment" in data


def is_ours(folder: Path) -> bool:
    """True when ``folder`` is one deeplinear made: it holds the marker, a run's ``status.json``,
    a sweep's ``index.sqlite``, or (reproduce folders of older versions) a run folder child."""
    folder = Path(folder)
    if (folder / MARKER).is_file() or _is_run_folder(folder):
        return True
    index = folder / "index.sqlite"
    if index.is_file() and not index.is_symlink():
        return True
    try:
        return any(c.is_dir() and not c.is_symlink() and _is_run_folder(c)
                   for c in folder.iterdir())
    except OSError:
        return False


def _probe_writable(folder: Path, label: str, path: Path) -> None:
    probe = folder / f".deeplinear-probe-{uuid.uuid4().hex[:8]}"
    try:
        fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise OutputError(f"{label} {short_path(path)}: cannot write in {short_path(folder)} "
                          f"({err.strerror}); choose a writable folder") from None


def check_output(path: str | Path, *, label: str = "--out", create: bool = True,
                 run: bool = False) -> Path:
    """Check that deeplinear may write its folder at ``path``, before any work starts.

    Allowed: a missing path (created when ``create``; its parent must be a writable folder), an
    empty folder, or a folder deeplinear made (:func:`is_ours`; with ``run``, only a run folder,
    which a new run replaces). Refused with an
    :class:`OutputError` naming ``label`` and the path: a symlink (to anything), a file, a device,
    a FIFO or socket, a foreign folder, a location that cannot be created or written. The
    refusal happens before anything is renamed, replaced or deleted.
    """
    path = Path(path)
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):  # missing (perhaps under a file: see below)
        st = None
    except OSError as err:
        raise OutputError(f"{label} {short_path(path)}: cannot be used ({err.strerror}); "
                          "choose another path") from None
    if st is not None:
        if stat.S_ISLNK(st.st_mode):
            raise OutputError(f"{label} {short_path(path)}: is a symlink; deeplinear does not write "
                              "through links, give the real folder or a new path")
        if not stat.S_ISDIR(st.st_mode):
            raise OutputError(f"{label} {short_path(path)}: is {_describe(st.st_mode)}, not a folder; "
                              "deeplinear will not replace it, choose a new path")
        try:
            empty = not any(path.iterdir())
        except OSError as err:
            raise OutputError(f"{label} {short_path(path)}: cannot be read ({err.strerror})") from None
        if not empty and run and not _is_run_folder(path):
            raise OutputError(f"{label} {short_path(path)}: is not a run folder (no status.json of "
                              "deeplinear's); choose a new or empty folder")
        if not empty and not is_ours(path):
            raise OutputError(f"{label} {short_path(path)}: is a folder deeplinear did not make (no "
                              "status.json, index.sqlite or .deeplinear); choose a new or empty "
                              "folder")
        _probe_writable(path, label, path)
        return path
    # a missing path: every existing ancestor must be a folder we can create in
    ancestor = path.parent
    while not os.path.lexists(ancestor) and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputError(f"{label} {short_path(path)}: cannot be created, {short_path(ancestor)} is not "
                          "a folder; choose another path")
    if create:
        try:
            path.mkdir(parents=True)
        except OSError as err:
            raise OutputError(f"{label} {short_path(path)}: cannot be created ({err.strerror}); "
                              "choose a writable location") from None
        _probe_writable(path, label, path)
    else:
        _probe_writable(ancestor, label, path)
    return path


def claim(folder: Path, kind: str) -> None:
    """Mark ``folder`` (already passed :func:`check_output`) as deeplinear's own ``kind``."""
    marker = Path(folder) / MARKER
    if not marker.exists():
        atomic_write(marker, json.dumps({"kind": kind, "created": time.time()}) + "\n")
    clean_temp(Path(folder))


# ---------------------------------------------------------------- values


def write_json(path: Path, value: Any) -> None:
    atomic_write(path, json.dumps(jsonable(value), indent=2, allow_nan=False) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def table_csv(rows: list[Mapping[str, Any]]) -> str:
    """Rows of scalars as CSV text; the header is the union of keys in first-seen order."""
    fields: dict[str, None] = {}
    for row in rows:
        fields.update(dict.fromkeys(row))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fields), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if (v := jsonable(value)) is None else v
                         for k, value in row.items()})
    return buf.getvalue()


def csv_cell(text: str) -> Any:
    """A cell of :func:`table_csv` back as an int, float, ``None`` (empty) or text."""
    if text == "":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def read_table(path: Path) -> list[dict[str, Any]]:
    """Read a CSV written by :func:`table_csv` (cells through :func:`csv_cell`)."""
    with open(path, newline="") as fh:
        return [{k: csv_cell(v) for k, v in row.items()} for row in csv.DictReader(fh)]


def save_arrays(arrays: Mapping[str, Any]) -> bytes:
    """``arrays`` as compressed ``.npz`` bytes; non-finite float entries are zeroed and listed in a
    ``<name>.missing`` mask, so no NaN or inf is ever stored."""
    out: dict[str, np.ndarray] = {}
    for key, value in arrays.items():
        arr = np.asarray(value)
        if arr.dtype.kind in "fc":
            bad = ~np.isfinite(arr)
            if bad.any():
                arr = np.where(bad, 0, arr)
                out[f"{key}.missing"] = bad
        out[key] = arr
    buf = io.BytesIO()
    np.savez_compressed(buf, **out)
    return buf.getvalue()


def load_arrays(path: Path) -> dict[str, np.ndarray]:
    """Read an ``arrays.npz`` of :func:`save_arrays`; missing entries come back as NaN."""
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    for key in [k for k in arrays if k.endswith(".missing")]:
        mask = arrays.pop(key)
        name = key[: -len(".missing")]
        if name in arrays:
            arrays[name] = np.where(mask, np.nan, arrays[name])
    return arrays


def read_status(run_dir: Path) -> dict[str, Any] | None:
    """The run's ``status.json`` or ``None`` when the folder has none (never started / partial)."""
    try:
        status = read_json(Path(run_dir) / "status.json")
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return status if isinstance(status, dict) else None


def is_finished(run_dir: Path, expected_id: str | None = None) -> bool:
    """True when the folder holds a complete run (status ``done``/``diverged``, matching id)."""
    status = read_status(run_dir)
    if status is None or status.get("status") not in TERMINAL:
        return False
    return expected_id is None or status.get("run_id") == expected_id


def _save_results(
    tmp: Path, experiment: Experiment, config: BaseModel, results: Results
) -> list[str]:
    atomic_write(tmp / "config.toml", dump_toml(config))
    for name, rows in results.tables.items():
        atomic_write(tmp / f"{name}.csv", table_csv(rows))
    atomic_write(tmp / "arrays.npz", save_arrays(results.arrays))
    write_json(
        tmp / "summary.json",
        {
            "experiment": experiment.name,
            "question": experiment.question,
            "headline": [asdict(h) for h in results.headline],
            "reported": {k: asdict(r) if isinstance(r, Reported) else {"value": r, "where": ""}
                         for k, r in experiment.reported.items()},
            "summary": results.summary,
            "notes": results.notes,
            "divergences": [asdict(d) for d in results.divergences],
        },
    )
    fig_dir = tmp / "figures"
    fig_dir.mkdir(exist_ok=True)
    figures = experiment.plot(results, fig_dir)
    return [str(Path(f).resolve().relative_to(tmp.resolve())) for f in figures]


def _move_into_place(tmp: Path, run_dir: Path, rid: str, *, replace: bool) -> Path:
    """Rename the built folder ``tmp`` to ``run_dir``. An existing finished run with the same id
    is kept unless ``replace``; an empty folder is replaced; an older run folder of ours is moved
    aside first and deleted after. Anything else there (it appeared while the run worked) is left
    alone: the results stay in ``tmp`` and an :class:`OutputError` says where."""
    if os.path.lexists(run_dir):
        if not replace and is_finished(run_dir, rid):
            shutil.rmtree(tmp, ignore_errors=True)
            return run_dir
        if run_dir.is_symlink() or not run_dir.is_dir() or (
                any(run_dir.iterdir()) and not _is_run_folder(run_dir)):
            raise OutputError(f"{short_path(run_dir)} was replaced by something deeplinear did not make "
                              f"while the run worked; its results are in {short_path(tmp)}")
        if not any(run_dir.iterdir()):
            os.replace(tmp, run_dir)  # rename(2) replaces an empty folder
            return run_dir
        trash = run_dir.with_name(f"{run_dir.name}{PARTIAL}old-{uuid.uuid4().hex[:8]}")
        os.replace(run_dir, trash)
        os.replace(tmp, run_dir)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, run_dir)
    return run_dir


@dataclass(frozen=True)
class RunOutcome:
    """What happened to one run (returned by :func:`execute_run`, also across processes)."""

    run_id: str
    experiment: str
    status: str
    seconds: float
    path: str
    error: str | None = None
    skipped: bool = False
    divergences: tuple[str, ...] = ()


def execute_run(
    experiment: Experiment,
    config: BaseModel,
    run_dir: str | Path,
    *,
    progress: Progress | None = None,
    replace: bool = False,
) -> RunOutcome:
    """Run ``experiment`` on the validated ``config`` and store it in ``run_dir``.

    Skips the work when ``run_dir`` already holds a finished run with the same run id (unless
    ``replace``). An exception inside the experiment gives status ``failed`` with the traceback in
    ``error.txt``; it is not re-raised, so one bad run does not stop a sweep. A ``run_dir`` that
    deeplinear may not write (:func:`check_output`) raises :class:`OutputError` before any work.
    """
    run_dir = Path(run_dir)
    rid = run_id(experiment.name, config)
    check_output(run_dir, label="run folder", create=False, run=True)
    if not replace and is_finished(run_dir, rid):
        status = read_status(run_dir) or {}
        return RunOutcome(rid, experiment.name, status["status"], 0.0, str(run_dir), skipped=True,
                          divergences=divergence_lines(status.get("divergences")))
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    clean_partials(run_dir.parent, prefix=run_dir.name)
    tmp = run_dir.with_name(f"{run_dir.name}{PARTIAL}{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    meta: dict[str, Any] = {
        "run_id": rid,
        "experiment": experiment.name,
        "config": config_dict(config),
        "started": time.time(),
        "pid": os.getpid(),
    }
    write_json(tmp / "status.json", {**meta, "status": Status.RUNNING})
    t0 = time.perf_counter()
    error = None
    divergences: list[dict[str, Any]] = []
    try:
        results = experiment.run(config, progress or NullProgress())
        figures = _save_results(tmp, experiment, config, results)
        status = results.status
        divergences = [asdict(d) for d in results.divergences]
    except Exception as err:  # noqa: BLE001 - a failed run is recorded, not fatal
        status, figures = Status.FAILED, []
        error = f"{type(err).__name__}: {err}".splitlines()[0] if str(err) else type(err).__name__
        atomic_write(tmp / "error.txt", traceback.format_exc())
    seconds = time.perf_counter() - t0
    # status.json is the last file written; only then does the folder get its final name.
    write_json(
        tmp / "status.json",
        {**meta, "status": status, "finished": time.time(), "seconds": seconds,
         "figures": figures, "error": error, "divergences": divergences},
    )
    _move_into_place(tmp, run_dir, rid, replace=replace)
    return RunOutcome(rid, experiment.name, str(status), seconds, str(run_dir), error,
                      divergences=divergence_lines(divergences))


def divergence_lines(items: Any) -> tuple[str, ...]:
    """``status.json``'s ``divergences`` (``[{"run", "step"}]``) as "run: diverged at step k"."""
    out = []
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict) and isinstance(item.get("run"), str):
            step = item.get("step")
            out.append(str(Divergence(item["run"], step if isinstance(step, int) else None)))
    return tuple(out)


def load_results(run_dir: str | Path) -> Results:
    """Rebuild the :class:`Results` of a stored run (so ``plot`` can redraw it)."""
    run_dir = Path(run_dir)
    summary = read_json(run_dir / "summary.json")
    tables = {p.stem: read_table(p) for p in sorted(run_dir.glob("*.csv"))}
    arrays = load_arrays(run_dir / "arrays.npz")
    headline = [Headline(**{**h, "value": tuple(h["value"]) if isinstance(h["value"], list)
                            else h["value"]}) for h in summary.get("headline", [])]
    divergences = [Divergence(**d) for d in summary.get("divergences", [])]
    return Results(tables=tables, arrays=arrays, summary=summary["summary"], notes=summary["notes"],
                   headline=headline, divergences=divergences)


def clean_partials(root: Path, prefix: str | None = None) -> int:
    """Delete our leftover ``NAME.partial-XXXXXXXX`` folders in ``root`` (from killed runs), only
    those of run folder ``prefix`` when given; also our temporary files. Returns the count."""
    count = 0
    if root.is_dir():
        for p in root.iterdir():
            m = _PARTIAL_RE.search(p.name)
            if m is None or (prefix is not None and p.name[: m.start()] != prefix):
                continue
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
                count += 1
        clean_temp(root)
    return count


class SweepIndex:
    """SQLite index of a sweep (WAL journal): one row per run, keyed by its run id.

    Only the sweep's driver process writes it; workers write run folders. On resume the index is
    reconciled with the folders (a folder that says done is done, whatever the index says).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._create_or_migrate()
        except sqlite3.DatabaseError as err:
            raise OutputError(f"sweep index {short_path(self.path)}: {err}; move it away to start the "
                              "sweep afresh (finished run folders are kept)") from None

    def _create_or_migrate(self) -> None:
        """Create the ``runs`` table; an index of an older version (fewer statuses allowed by
        its CHECK) is copied into the current schema in one transaction."""
        statuses = ",".join(f"'{s}'" for s in STATUSES)
        schema = (" run_id TEXT PRIMARY KEY, experiment TEXT NOT NULL, config TEXT NOT NULL,"
                  f" status TEXT NOT NULL CHECK (status IN ({statuses})),"
                  " attempts INTEGER NOT NULL DEFAULT 0, submitted REAL, finished REAL,"
                  " seconds REAL, error TEXT")
        row = self._db.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'runs'").fetchone()
        if row is None:
            self._db.execute(f"CREATE TABLE runs ({schema})")
        elif statuses not in row[0]:
            with self._tx() as db:
                db.execute("ALTER TABLE runs RENAME TO runs_old")
                db.execute(f"CREATE TABLE runs ({schema})")
                db.execute("INSERT INTO runs SELECT * FROM runs_old")
                db.execute("DROP TABLE runs_old")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> SweepIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def add(self, rid: str, experiment: str, config: Mapping[str, Any]) -> None:
        """Insert a pending row unless the run is already indexed."""
        with self._tx() as db:
            db.execute(
                "INSERT OR IGNORE INTO runs (run_id, experiment, config, status)"
                " VALUES (?, ?, ?, 'pending')",
                (rid, experiment, json.dumps(config, sort_keys=True)),
            )

    def set_status(self, rid: str, status: str, **fields: Any) -> None:
        """Set a run's status and any of ``submitted``, ``finished``, ``seconds``, ``error``."""
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        allowed = {"submitted", "finished", "seconds", "error"}
        bad = set(fields) - allowed
        if bad:
            raise ValueError(f"unknown index fields {sorted(bad)}; allowed: {sorted(allowed)}")
        cols = ", ".join(f"{k} = ?" for k in fields)
        sql = "UPDATE runs SET status = ?" + (f", {cols}" if cols else "")
        if status == Status.RUNNING:
            sql += ", attempts = attempts + 1"
        with self._tx() as db:
            db.execute(sql + " WHERE run_id = ?", (status, *fields.values(), rid))

    def status(self, rid: str) -> str | None:
        row = self._db.execute("SELECT status FROM runs WHERE run_id = ?", (rid,)).fetchone()
        return row[0] if row else None

    def rows(self) -> list[dict[str, Any]]:
        cur = self._db.execute("SELECT * FROM runs ORDER BY rowid")
        names = [c[0] for c in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(STATUSES, 0)
        for status, n in self._db.execute("SELECT status, COUNT(*) FROM runs GROUP BY status"):
            out[status] = n
        return out
