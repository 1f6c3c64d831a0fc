"""The reproduction report: ``report.html`` (self-contained) and ``report.md`` for a runs folder.

For every run found under the folder: the question its figure answers, its status (done /
partial / diverged / failed) and divergences, the headline table (each value the notes report next
to ours, what ours was measured on, and whether they agree within the stated band), the figures,
then the details folded; sweeps with their grid values; damaged runs with the reason; the theory
checks with the comparison each makes. A value that does not exist is shown as "not reached" (or
"diverged"), never as NaN or inf.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deeplinear.report._read import (
    _TEMP_RE,
    REPORT_FILES,
    Damaged,
    RunRecord,
    Scan,
    _file_kind,
    _oserror,
    _q,
    find_runs,
    load_run,
    load_verify,
    scan_runs,
)
from deeplinear.report._render import render_html, render_markdown
from deeplinear.report._values import comparison, flatten, fmt, headline_rows, sweep_tables
from deeplinear.store import atomic_write, jsonable

__all__ = [
    "Damaged",
    "ReportResult",
    "RunRecord",
    "Scan",
    "comparison",
    "dumps_checks",
    "find_runs",
    "flatten",
    "fmt",
    "headline_rows",
    "load_run",
    "render_html",
    "render_markdown",
    "scan_runs",
    "sweep_tables",
    "write_report",
]



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
    """The verify results as JSON text (a non-finite number is null)."""
    return json.dumps(jsonable(list(checks)), indent=2)
