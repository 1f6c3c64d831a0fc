"""Run store: one folder per run, written atomically, plus a SQLite index for sweeps.

A run folder holds ``config.toml``, one CSV per metric table, ``arrays.npz``, ``summary.json``,
``figures/*.png|pdf`` (the experiment's ``plot``) and ``status.json``. Every file is written to a
temporary name and moved into place with ``os.replace``; the whole folder is built under a
``<name>.partial-<token>`` sibling and renamed into place only after ``status.json`` says ``done``
(or ``diverged``). So a kill at any moment leaves either no run folder or a complete one, and a
half-written run is never marked done.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
import sqlite3
import time
import traceback
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from deeplinear.config import config_dict, dump_toml, run_id
from deeplinear.experiments.base import Experiment, NullProgress, Progress, Results

TERMINAL = ("done", "diverged")
STATUSES = ("pending", "running", "done", "failed", "diverged")
PARTIAL = ".partial-"


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and ``os.replace``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    with open(tmp, "wb") as fh:
        fh.write(data.encode() if isinstance(data, str) else data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def jsonable(value: Any) -> Any:
    """A JSON-ready copy: arrays to lists, numpy scalars to Python, nan/inf to strings."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no nan/inf; keep them readable
    return value


def write_json(path: Path, value: Any) -> None:
    atomic_write(path, json.dumps(jsonable(value), indent=2) + "\n")


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
        writer.writerow({k: jsonable(v) for k, v in row.items()})
    return buf.getvalue()


def read_table(path: Path) -> list[dict[str, Any]]:
    """Read a CSV written by :func:`table_csv`, turning numeric cells back into floats/ints."""
    def cell(text: str) -> Any:
        for kind in (int, float):
            try:
                return kind(text)
            except ValueError:
                pass
        return text

    with open(path, newline="") as fh:
        return [{k: cell(v) for k, v in row.items()} for row in csv.DictReader(fh)]


def run_status(results: Results) -> str:
    """``diverged`` when the experiment says so (``summary["status"] == "diverged"`` or a truthy
    ``summary["diverged"]``), else ``done``."""
    s = results.summary
    if s.get("status") == "diverged" or (s.get("diverged") not in (None, 0, False, "", "false")):
        return "diverged"
    return "done"


def read_status(run_dir: Path) -> dict[str, Any] | None:
    """The run's ``status.json`` or ``None`` when the folder has none (never started / partial)."""
    try:
        return read_json(Path(run_dir) / "status.json")
    except (FileNotFoundError, json.JSONDecodeError, NotADirectoryError):
        return None


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
    buf = io.BytesIO()
    np.savez_compressed(buf, **{k: np.asarray(v) for k, v in results.arrays.items()})
    atomic_write(tmp / "arrays.npz", buf.getvalue())
    write_json(
        tmp / "summary.json",
        {
            "experiment": experiment.name,
            "summary": results.summary,
            "notes": results.notes,
            "reported": experiment.reported,
        },
    )
    fig_dir = tmp / "figures"
    fig_dir.mkdir(exist_ok=True)
    figures = experiment.plot(results, fig_dir)
    return [str(Path(f).resolve().relative_to(tmp.resolve())) for f in figures]


def _move_into_place(tmp: Path, run_dir: Path, rid: str, *, replace: bool) -> Path:
    """Rename the built folder ``tmp`` to ``run_dir``. An existing finished run with the same id
    is kept unless ``replace``; anything else there is moved aside first and deleted after."""
    if run_dir.exists():
        if not replace and is_finished(run_dir, rid):
            shutil.rmtree(tmp, ignore_errors=True)
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
    ``error.txt``; it is not re-raised, so one bad run does not stop a sweep.
    """
    run_dir = Path(run_dir)
    rid = run_id(experiment.name, config)
    if run_dir.is_dir() and any(run_dir.iterdir()) and read_status(run_dir) is None:
        raise ValueError(
            f"run folder {str(run_dir)!r} exists and is not a run folder (no status.json); "
            "choose another --out"
        )
    if not replace and is_finished(run_dir, rid):
        status = read_status(run_dir) or {}
        return RunOutcome(rid, experiment.name, status["status"], 0.0, str(run_dir), skipped=True)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = run_dir.with_name(f"{run_dir.name}{PARTIAL}{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    meta: dict[str, Any] = {
        "run_id": rid,
        "experiment": experiment.name,
        "config": config_dict(config),
        "started": time.time(),
        "pid": os.getpid(),
    }
    write_json(tmp / "status.json", {**meta, "status": "running"})
    t0 = time.perf_counter()
    error = None
    try:
        results = experiment.run(config, progress or NullProgress())
        figures = _save_results(tmp, experiment, config, results)
        status = run_status(results)
    except Exception as err:  # noqa: BLE001 - a failed run is recorded, not fatal
        status, figures = "failed", []
        error = f"{type(err).__name__}: {err}".splitlines()[0] if str(err) else type(err).__name__
        atomic_write(tmp / "error.txt", traceback.format_exc())
    seconds = time.perf_counter() - t0
    # status.json is the last file written; only then does the folder get its final name.
    write_json(
        tmp / "status.json",
        {**meta, "status": status, "finished": time.time(), "seconds": seconds,
         "figures": figures, "error": error},
    )
    _move_into_place(tmp, run_dir, rid, replace=replace)
    return RunOutcome(rid, experiment.name, status, seconds, str(run_dir), error)


def load_results(run_dir: str | Path) -> Results:
    """Rebuild the :class:`Results` of a stored run (so ``plot`` can redraw it)."""
    run_dir = Path(run_dir)
    summary = read_json(run_dir / "summary.json")
    tables = {p.stem: read_table(p) for p in sorted(run_dir.glob("*.csv"))}
    with np.load(run_dir / "arrays.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    return Results(tables=tables, arrays=arrays, summary=summary["summary"], notes=summary["notes"])


def clean_partials(root: Path) -> int:
    """Delete leftover ``*.partial-*`` folders under ``root`` (from killed runs); returns count."""
    count = 0
    if root.is_dir():
        for p in root.iterdir():
            if PARTIAL in p.name and p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
                count += 1
    return count


class SweepIndex:
    """SQLite index of a sweep (WAL journal): one row per run, keyed by its run id.

    Only the sweep's driver process writes it; workers write run folders. On resume the index is
    reconciled with the folders (a folder that says done is done, whatever the index says).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS runs ("
            " run_id TEXT PRIMARY KEY, experiment TEXT NOT NULL, config TEXT NOT NULL,"
            " status TEXT NOT NULL CHECK (status IN"
            " ('pending','running','done','failed','diverged')),"
            " attempts INTEGER NOT NULL DEFAULT 0, submitted REAL, finished REAL,"
            " seconds REAL, error TEXT)"
        )

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
        if status == "running":
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
