"""The reproduction report: ``report.html`` (self-contained) and ``report.md`` for a runs folder.

For every finished run found under the folder it shows the figures (PNG, base64-embedded in the
HTML), the notes' reported values (``Experiment.reported``, saved in ``summary.json``) next to the
measured ones (``Results.summary``), the metric tables, the notes and the merged config; then the
theory-check table from ``verify.json`` when present.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deeplinear.store import PARTIAL, atomic_write, jsonable, read_json, read_status, read_table

VERIFY_FILE = "verify.json"
MAX_TABLE_ROWS = 25


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

    @property
    def title(self) -> str:
        return f"{self.status.get('experiment', '?')} ({self.path.name})"


def find_runs(root: str | Path) -> list[RunRecord]:
    """Every run folder under ``root`` (by its ``status.json``), partial folders excluded."""
    root = Path(root)
    records = []
    for status_file in sorted(root.rglob("status.json")):
        run_dir = status_file.parent
        if any(PARTIAL in part for part in run_dir.relative_to(root).parts):
            continue
        status = read_status(run_dir)
        if status is None:
            continue
        summary = {}
        if (run_dir / "summary.json").exists():
            summary = read_json(run_dir / "summary.json")
        figures = [run_dir / f for f in status.get("figures") or [] if str(f).endswith(".png")]
        records.append(
            RunRecord(
                path=run_dir,
                status=status,
                summary=summary.get("summary", {}),
                notes=summary.get("notes", []),
                reported=summary.get("reported", {}),
                tables={p.stem: read_table(p) for p in sorted(run_dir.glob("*.csv"))},
                figures=[f for f in figures if f.exists()],
                config_text=(run_dir / "config.toml").read_text()
                if (run_dir / "config.toml").exists() else "",
            )
        )
    return records


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


def comparison(record: RunRecord) -> list[tuple[str, str, str, str]]:
    """Rows (key, reported, measured, measured/reported) over the union of keys, reported first."""
    reported, measured = flatten(record.reported), flatten(record.summary)
    rows = []
    for key in [*reported, *(k for k in measured if k not in reported)]:
        r, m = reported.get(key), measured.get(key)
        ratio = ""
        if _is_num(r) and _is_num(m) and r != 0:
            ratio = f"{m / r:.3g}"
        rows.append((key, fmt(r) if key in reported else "—", fmt(m) if key in measured else "—",
                     ratio))
    return rows


def sweep_tables(runs: list[RunRecord]) -> dict[str, tuple[list[str], list[list[Any]]]]:
    """Per experiment with several runs (a sweep): one row per run with the config keys that vary
    across its runs and the measured summary (blank for runs that are not ``done``)."""
    by_exp: dict[str, list[RunRecord]] = {}
    for r in runs:
        by_exp.setdefault(str(r.status.get("experiment")), []).append(r)
    out = {}
    for name, group in by_exp.items():
        if len(group) < 2:
            continue
        configs = [flatten(r.status.get("config") or {}) for r in group]
        keys = list(dict.fromkeys(k for c in configs for k in c))
        varying = [k for k in keys if len({json.dumps(c.get(k), sort_keys=True)
                                           for c in configs}) > 1]
        measured = list(dict.fromkeys(k for r in group for k in flatten(r.summary)))
        rows = []
        for r, c in zip(group, configs, strict=True):
            done = r.status.get("status") == "done"
            summ = flatten(r.summary) if done else {}
            rows.append([r.path.name, r.status.get("status"), *(c.get(k) for k in varying),
                         *(summ.get(k) for k in measured)])
        out[name] = (["run", "status", *varying, *measured], rows)
    return out


def _is_num(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def load_verify(root: Path) -> list[dict[str, Any]] | None:
    path = Path(root) / VERIFY_FILE
    return read_json(path) if path.exists() else None


# ---------------------------------------------------------------- HTML

_CSS = """
body{font-family:system-ui,sans-serif;max-width:70em;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.2em .5em;
font-size:.9em;text-align:left}th{background:#f3f3f3}.pass{color:#070}.fail{color:#b00;
font-weight:bold}.warn{background:#fff4d6;padding:.5em}pre{background:#f7f7f7;padding:.5em;
overflow-x:auto}img{max-width:100%;border:1px solid #eee}details{margin:.5em 0}
"""


def _table(header: list[str], rows: list[list[Any]], classes: list[str] | None = None) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{classes[i]}"' if classes and classes[i] else ""
        cells = "".join(f"<td>{html.escape(fmt(c))}</td>" for c in row)
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return (f'<figure><img alt="{html.escape(path.name)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(path.name)}</figcaption></figure>")


def _verify_rows(checks: list[dict[str, Any]]) -> tuple[list[list[Any]], list[str]]:
    rows = [[c.get("name"), "PASS" if c.get("passed") else "FAIL", c.get("measured"),
             c.get("predicted"), c.get("tolerance"), c.get("statement")] for c in checks]
    return rows, ["pass" if c.get("passed") else "fail" for c in checks]


def render_html(root: Path, runs: list[RunRecord], checks: list[dict[str, Any]] | None) -> str:
    e = html.escape
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>deeplinear report</title>"
             f"<style>{_CSS}</style></head><body><h1>deeplinear reproduction report</h1>",
             f"<p>Runs folder: <code>{e(str(root))}</code></p><h2>Overview</h2>"]
    parts.append(_table(
        ["experiment", "run", "status", "seconds", "figures"],
        [[r.status.get("experiment"), r.path.name, r.status.get("status"),
          r.status.get("seconds"), len(r.figures)] for r in runs],
        ["" if r.status.get("status") == "done" else "fail" for r in runs],
    ))
    if checks is not None:
        n_fail = sum(not c.get("passed") for c in checks)
        parts.append(f"<p>Theory checks: {len(checks) - n_fail} passed, {n_fail} failed.</p>")
    for name, (header, rows) in sweep_tables(runs).items():
        parts.append(f"<h2>Sweep: {e(name)} ({len(rows)} runs)</h2>")
        parts.append(_table(header, rows))
    for r in runs:
        state = r.status.get("status")
        parts.append(f"<h2 id='{e(r.path.name)}'>{e(r.title)}</h2>")
        if state != "done":
            why = r.status.get("error") or ""
            parts.append(f"<p class='warn'>Status <b>{e(str(state))}</b>: these numbers are not "
                         f"a result. {e(str(why))}</p>")
        if state == "done":
            parts.append("<h3>Reported (notes) vs measured</h3>")
            parts.append(_table(["quantity", "reported", "measured", "measured / reported"],
                                [list(row) for row in comparison(r)]))
        for fig in r.figures:
            parts.append(_img(fig))
        if r.notes:
            parts.append("<h3>Notes</h3><ul>" + "".join(f"<li>{e(n)}</li>" for n in r.notes)
                         + "</ul>")
        for name, rows in r.tables.items():
            header = list(dict.fromkeys(k for row in rows for k in row))
            shown = rows[:MAX_TABLE_ROWS]
            more = f" (first {len(shown)} of {len(rows)} rows)" if len(rows) > len(shown) else ""
            parts.append(f"<details><summary>Table <code>{e(name)}</code>{more}</summary>")
            parts.append(_table(header, [[row.get(h) for h in header] for row in shown]))
            parts.append("</details>")
        parts.append(f"<details><summary>config.toml</summary><pre>{e(r.config_text)}</pre>"
                     "</details>")
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
        return fmt(x).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def render_markdown(root: Path, runs: list[RunRecord], checks: list[dict[str, Any]] | None,
                    out_dir: Path) -> str:
    parts = ["# deeplinear reproduction report\n", f"Runs folder: `{root}`\n", "## Overview\n",
             _md_table(["experiment", "run", "status", "seconds"],
                       [[r.status.get("experiment"), r.path.name, r.status.get("status"),
                         r.status.get("seconds")] for r in runs])]
    for name, (header, rows) in sweep_tables(runs).items():
        parts.append(f"## Sweep: {name} ({len(rows)} runs)\n")
        parts.append(_md_table(header, rows))
    for r in runs:
        state = r.status.get("status")
        parts.append(f"## {r.title}\n")
        if state != "done":
            parts.append(f"> **Status {state}**: not a result. {r.status.get('error') or ''}\n")
        else:
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
    if checks is not None:
        parts.append("## Theory checks (deeplinear verify)\n")
        parts.append(_md_table(["check", "result", "measured", "predicted", "tolerance",
                                "statement"], _verify_rows(checks)[0]))
    return "\n".join(parts)


def _relpath(path: Path, start: Path) -> str:
    return os.path.relpath(path.resolve(), start.resolve())


def write_report(root: str | Path, out_dir: str | Path | None = None) -> tuple[Path, Path]:
    """Write ``report.html`` and ``report.md`` for the runs under ``root`` (into ``out_dir``,
    default ``root``); returns their paths."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"report: runs folder {str(root)!r} does not exist")
    out = Path(out_dir) if out_dir is not None else root
    out.mkdir(parents=True, exist_ok=True)
    runs, checks = find_runs(root), load_verify(root)
    html_path, md_path = out / "report.html", out / "report.md"
    atomic_write(html_path, render_html(root, runs, checks))
    atomic_write(md_path, render_markdown(root, runs, checks, out))
    return html_path, md_path


def dumps_checks(checks: list[Mapping[str, Any]]) -> str:
    """The verify results as JSON text (non-finite floats as strings)."""
    return json.dumps(jsonable(list(checks)), indent=2)
