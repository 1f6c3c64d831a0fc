"""The report's two renderings, HTML (self-contained: figures embedded) and Markdown.

Layout: a table of contents; an overview (one line per run: status and how its headline compares
with the notes); then per run the question its figure answers, the headline table (the notes'
value, ours, measured on what, agreement), the figures, and the details folded (notes, every
measured value, the metric tables with per-seed rows, the config); then sweeps, damaged runs and
the theory checks with the comparison each one makes.
"""

from __future__ import annotations

import base64
import html
import os
import re
from pathlib import Path
from typing import Any

from deeplinear.experiments.base import Status
from deeplinear.report._read import MAX_TABLE_ROWS, RUN_STATUSES, SHOWN, Damaged, RunRecord, short
from deeplinear.report._values import (
    cell,
    comparison,
    flatten,
    headline_counts,
    headline_rows,
    shown,
    sweep_tables,
)

e = html.escape

_CSS = """
body{font-family:system-ui,-apple-system,sans-serif;max-width:74em;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
h1{font-size:1.7em;margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;
margin-top:2.2em}h3{margin:1.2em 0 .4em}
table{border-collapse:collapse;margin:.4em 0 1.2em;max-width:100%}
td,th{border:1px solid #ccc;padding:.3em .5em;font-size:.88em;text-align:left;vertical-align:top;
overflow-wrap:anywhere}
th{background:#f3f3f3}code{font-size:.92em}
.small{color:#555;font-size:.85em;display:block;margin-top:.15em}
.question{font-size:1.05em;background:#f3f7ff;border-left:4px solid #4a78c2;padding:.5em .9em}
.v-within{color:#060;font-weight:bold}.v-differs{color:#b00;font-weight:bold}
.v-other{color:#555;font-weight:bold}
.pass{color:#070}.fail{color:#b00;font-weight:bold}
.warn{background:#fff4d6;padding:.5em .8em}.damaged{background:#fdd;padding:.5em .8em}
.badge{display:inline-block;padding:.05em .6em;border-radius:.3em;font-weight:bold;
font-size:.8em;vertical-align:middle;margin-left:.4em}
.s-done{background:#dfd;color:#060}.s-partial{background:#fff4d6;color:#850}
.s-diverged,.s-failed,.s-running,.s-pending{background:#fdd;color:#a00}
nav.toc{background:#fafafa;border:1px solid #e3e3e3;padding:.3em 1.2em}
nav.toc li{margin:.15em 0}nav.toc h2{margin-top:.6em}
pre{background:#f7f7f7;padding:.5em;white-space:pre-wrap;overflow-wrap:anywhere}
figure{margin:1em 0}img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{color:#555;font-size:.85em}details{margin:.4em 0}summary{cursor:pointer}
table.headline{width:100%}table.headline td:nth-child(1){width:32%}
table.headline td:nth-child(3),table.headline th:nth-child(3){white-space:nowrap}
table.checks{width:100%;table-layout:fixed}table.checks th:nth-child(1){width:44%}
table.checks th:nth-child(2){width:7%}table.checks th:nth-child(3){width:16%}
table.checks th:nth-child(n+4){width:11%}table.checks th{overflow-wrap:normal}
@media print{body{max-width:none;margin:0;font-size:10pt}nav.toc{page-break-after:always}
section.run{page-break-before:always}figure,tr,.question{page-break-inside:avoid}
a{color:inherit;text-decoration:none}img{max-height:22cm}}
"""

_VERDICT_CLASS = {"within band": "v-within", "differs": "v-differs"}


def _slug(record: RunRecord, root: Path) -> str:
    try:
        rel = record.path.relative_to(root).as_posix()
    except ValueError:
        rel = record.path.name
    return "run-" + (re.sub(r"[^A-Za-z0-9_-]+", "-", rel).strip("-") or "root")


def _table(header: list[str], rows: list[list[Any]], *, css: str = "",
           row_classes: list[str] | None = None, raw: bool = False) -> str:
    """An HTML table; cells are escaped unless ``raw`` (then they are trusted HTML)."""
    head = "".join(f"<th>{e(cell(h))}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{row_classes[i]}"' if row_classes and row_classes[i] else ""
        cells = "".join(f"<td>{c if raw else e(cell(c))}</td>" for c in row)
        body.append(f"<tr{cls}>{cells}</tr>")
    cls = f' class="{css}"' if css else ""
    return f"<table{cls}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _img(path: Path, data: bytes | None = None) -> str:
    encoded = base64.b64encode(path.read_bytes() if data is None else data).decode()
    return (f'<figure><img alt="{e(path.name)}" src="data:image/png;base64,{encoded}">'
            f"<figcaption>{e(path.name)}</figcaption></figure>")


def _badge(state: str) -> str:
    cls = state if state in RUN_STATUSES else Status.FAILED
    return f"<span class='badge s-{cls}'>{e(state)}</span>"


def _status_note(r: RunRecord) -> str | None:
    """The warning for a run whose numbers are not (all) results."""
    if r.state == Status.DONE:
        return None
    if r.state == Status.PARTIAL:
        return ("some training sub-runs diverged; the values below come from the others, and "
                "values that depend on a diverged sub-run are not shown.")
    why = r.status.get("error") or ""
    return f"these numbers are not a result. {short(why, 300)}".strip()


def _counts_text(r: RunRecord) -> str:
    if r.state not in SHOWN:
        return "no result"
    counts = headline_counts(r)
    order = ("within band", "differs", "shown only", "not comparable", "no value")
    return ", ".join(f"{counts[k]} {k}" for k in order if counts.get(k)) or "—"


def _damaged_intro(n: int) -> str:
    return (f"{n} damaged run folder(s) or file(s) could not be read and are left out of this "
            "report (each reason names the file); re-run those runs or remove their folders.")


def _rel(path: Path, root: Path) -> str:
    try:
        rel = path.relative_to(root)
    except ValueError:
        return short(path, 120)
    return short(rel.as_posix() if rel.parts else ".", 120)


def _verify_rows(checks: list[dict[str, Any]]) -> list[list[Any]]:
    return [[c.get("name"), "PASS" if c.get("passed") else "FAIL",
             c.get("comparison") or "see statement", c.get("measured"), c.get("predicted"),
             c.get("tolerance"), c.get("statement")] for c in checks]


def _verify_html_rows(checks: list[dict[str, Any]]) -> list[list[str]]:
    """The check's name with its statement below it, then the numbers (a narrow page keeps every
    column readable)."""
    out = []
    for row in _verify_rows(checks):
        name, result, comparison_text, *numbers, statement = (e(cell(x)) for x in row)
        out.append([f"<b>{name}</b><span class='small'>{statement}</span>", result,
                    comparison_text, *numbers])
    return out


_VERIFY_HEADER = ["check", "result", "comparison (passes when true)", "measured", "predicted",
                  "tolerance", "statement"]


def _details(summary: str, body: str) -> str:
    return f"<details><summary>{summary}</summary>{body}</details>"


# ---------------------------------------------------------------- HTML


def _shared(rows: list[dict[str, Any]], key: str) -> str | None:
    """The value of ``key`` when every row has the same one (then it is stated once)."""
    values = {row[key] for row in rows}
    return values.pop() if len(values) == 1 and len(rows) > 1 else None


def _headline_html(r: RunRecord) -> str:
    rows = headline_rows(r)
    on = _shared(rows, "measured_on")
    why = _shared([h for h in rows if h["verdict"] == "not comparable"], "detail")
    intro = f"<p><b>Measured on:</b> {e(on)}</p>" if on else ""
    if why and all(h["verdict"] in ("not comparable", "") for h in rows):
        intro += f"<p class='warn'><b>Not comparable with the notes' values:</b> {e(why)}</p>"
    else:
        why = None
    body = []
    for h in rows:
        verdict = h["verdict"]
        css = _VERDICT_CLASS.get(verdict, "v-other")
        detail = "" if why and verdict == "not comparable" else h["detail"]
        body.append([
            f"{e(h['description'])}<span class='small'><code>{e(h['key'])}</code></span>",
            (f"{e(cell(h['reported']))}<span class='small'>{e(h['where'])}</span>"
             if h["where"] or h["reported"] != "" else "—"),
            e(cell(h["measured"])),
            *([] if on else [e(h["measured_on"])]),
            (f"<span class='{css}'>{e(verdict)}</span><span class='small'>{e(detail)}</span>"
             if verdict else f"<span class='small'>{e(detail)}</span>"),
        ])
    header = ["quantity", "the notes report", "measured here", *([] if on else ["measured on"]),
              "agreement"]
    return intro + _table(header, body, css="headline" if not on else "headline short", raw=True)


def _run_html(r: RunRecord, root: Path) -> list[str]:
    parts = [f"<section class='run' id='{_slug(r, root)}'>",
             f"<h2>{e(r.title)}{_badge(r.state)}</h2>"]
    if r.question:
        parts.append(f"<p class='question'><b>Question.</b> {e(r.question)}</p>")
    note = _status_note(r)
    if note:
        parts.append(f"<p class='warn'>Status <b>{e(r.state)}</b>: {e(note)}</p>")
    if r.divergences:
        parts.append("<p><b>Diverged training runs</b></p><ul>"
                     + "".join(f"<li>{e(line)}</li>" for line in r.divergences) + "</ul>")
    if r.state in SHOWN and r.headline:
        parts.append("<h3>Headline</h3>" + _headline_html(r))
    elif r.state in SHOWN:  # a run stored before headlines existed
        parts.append("<h3>Reported (notes) vs measured</h3>" + _table(
            ["quantity", "reported", "measured", "measured / reported"],
            [list(row) for row in comparison(r)]))
    for fig in r.figures:
        parts.append(_img(fig, r.figure_data.get(fig)))
    if r.notes:
        parts.append(_details(f"Notes ({len(r.notes)})",
                              "<ul>" + "".join(f"<li>{e(n)}</li>" for n in r.notes) + "</ul>"))
    if r.state in SHOWN and r.summary:
        values = flatten(r.summary)
        parts.append(_details(f"All measured values ({len(values)})", _table(
            ["quantity", "value"], [[k, shown(v, r.has_divergences)] for k, v in values.items()])))
    for name, rows in r.tables.items():
        header = list(dict.fromkeys(k for row in rows for k in row))
        first = rows[:MAX_TABLE_ROWS]
        more = f", first {len(first)} shown" if len(rows) > len(first) else ""
        body = [[shown(v, r.has_divergences) if (v := row.get(k)) is not None else None
                 for k in header] for row in first]
        parts.append(_details(f"Table <code>{e(name)}</code> ({len(rows)} rows{more})",
                              _table(header, body)))
    parts.append(_details("config.toml", f"<pre>{e(r.config_text)}</pre>"))
    parts.append("</section>")
    return parts


def render_html(root: Path, runs: list[RunRecord], checks: list[dict[str, Any]] | None,
                damaged: list[Damaged] | None = None) -> str:
    """The whole report as one self-contained HTML page."""
    damaged = damaged or []
    sweeps = sweep_tables(runs)
    toc = ["<li><a href='#overview'>Overview</a></li>"]
    toc += [f"<li><a href='#{_slug(r, root)}'>{e(r.title)}</a>{_badge(r.state)}"
            + (f" <span class='small'>{e(r.question)}</span>" if r.question else "")
            + "</li>" for r in runs]
    if sweeps:
        toc.append("<li><a href='#sweeps'>Sweeps</a></li>")
    if damaged:
        toc.append("<li><a href='#damaged'>Damaged runs</a></li>")
    if checks is not None:
        toc.append("<li><a href='#verify'>Theory checks</a></li>")
    parts = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
             "<meta name='viewport' content='width=device-width, initial-scale=1'>"
             f"<title>deeplinear report</title><style>{_CSS}</style></head><body>",
             "<h1>deeplinear reproduction report</h1>",
             f"<p class='small'>Runs folder: <code>{e(str(root))}</code></p>",
             f"<nav class='toc'><h2>Contents</h2><ol>{''.join(toc)}</ol></nav>",
             "<h2 id='overview'>Overview</h2>"]
    parts.append(_table(
        ["experiment", "status", "headline vs the notes", "seconds", "figures"],
        [[f"<a href='#{_slug(r, root)}'>{e(r.title)}</a>", _badge(r.state),
          e(_counts_text(r)), e(cell(r.status.get("seconds"))), str(len(r.figures))]
         for r in runs], raw=True))
    if damaged:
        parts.append(f"<p class='damaged'>{e(_damaged_intro(len(damaged)))} "
                     "<a href='#damaged'>Damaged runs</a></p>")
    if checks is not None:
        n_fail = sum(not c.get("passed") for c in checks)
        parts.append(f"<p>Theory checks: {len(checks) - n_fail} passed, {n_fail} failed "
                     "(<a href='#verify'>table</a>).</p>")
    for r in runs:
        parts += _run_html(r, root)
    if sweeps:
        parts.append("<h2 id='sweeps'>Sweeps</h2>")
        for name, (header, rows) in sweeps.items():
            parts.append(f"<h3>{e(name)} ({len(rows)} runs)</h3>" + _table(header, rows))
    if damaged:
        parts.append("<h2 id='damaged'>Damaged runs</h2>")
        parts.append(f"<p class='damaged'>{e(_damaged_intro(len(damaged)))}</p><ul>")
        parts += [f"<li><code>{e(_rel(d.folder, root))}</code>: {e(d.reason)}</li>"
                  for d in damaged]
        parts.append("</ul>")
    if checks is not None:
        parts.append("<h2 id='verify'>Theory checks (deeplinear verify)</h2>")
        parts.append("<p>Each check computes <i>measured</i> (and, where it applies, "
                     "<i>predicted</i>) numerically and passes when the stated comparison holds.</p>")
        parts.append(_table(["check and statement", *_VERIFY_HEADER[1:-1]],
                            _verify_html_rows(checks), css="checks", raw=True,
                            row_classes=["pass" if c.get("passed") else "fail" for c in checks]))
    parts.append("</body></html>\n")
    return "\n".join(parts)


# ---------------------------------------------------------------- Markdown


def _md_table(header: list[str], rows: list[list[Any]]) -> str:
    def md_cell(x: Any) -> str:
        return cell(x).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(md_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _run_md(r: RunRecord, out_dir: Path) -> list[str]:
    parts = [f"## {r.title}\n", f"**Status: {r.state}**\n"]
    if r.question:
        parts.append(f"**Question.** {r.question}\n")
    note = _status_note(r)
    if note:
        parts.append(f"> **Status {r.state}**: {note}\n")
    if r.divergences:
        parts.append("Diverged training runs:\n\n" + "\n".join(f"- {x}" for x in r.divergences)
                     + "\n")
    if r.state in SHOWN and r.headline:
        parts.append("### Headline\n")
        parts.append(_md_table(
            ["quantity", "the notes report", "measured here", "measured on", "agreement"],
            [[f"{h['description']} (`{h['key']}`)", f"{cell(h['reported'])} ({h['where']})"
              if h["where"] else cell(h["reported"]) or "—", h["measured"], h["measured_on"],
              f"{h['verdict']}: {h['detail']}" if h["verdict"] else h["detail"]]
             for h in headline_rows(r)]))
    elif r.state in SHOWN:
        parts.append("### Reported (notes) vs measured\n")
        parts.append(_md_table(["quantity", "reported", "measured", "measured / reported"],
                               [list(row) for row in comparison(r)]))
    for fig in r.figures:
        rel = os.path.relpath(fig.resolve(), out_dir.resolve())
        parts.append(f"![{fig.name}]({Path(rel).as_posix()})\n")
    if r.notes:
        parts.append("<details><summary>Notes</summary>\n\n"
                     + "\n".join(f"- {n}" for n in r.notes) + "\n\n</details>\n")
    if r.state in SHOWN and r.summary:
        values = flatten(r.summary)
        parts.append(f"<details><summary>All measured values ({len(values)})</summary>\n\n"
                     + _md_table(["quantity", "value"], [[k, shown(v, r.has_divergences)]
                                                        for k, v in values.items()])
                     + "\n</details>\n")
    parts.append(f"<details><summary>config.toml</summary>\n\n```toml\n{r.config_text}```\n"
                 "</details>\n")
    return parts


def render_markdown(root: Path, runs: list[RunRecord], checks: list[dict[str, Any]] | None,
                    out_dir: Path, damaged: list[Damaged] | None = None) -> str:
    """The report as Markdown (figures linked relative to ``out_dir``)."""
    damaged = damaged or []
    sweeps = sweep_tables(runs)
    parts = ["# deeplinear reproduction report\n", f"Runs folder: `{root}`\n", "Contents:\n",
             "\n".join(f"- {r.title} ({r.state})" for r in runs)
             + ("\n- Sweeps" if sweeps else "") + ("\n- Damaged runs" if damaged else "")
             + ("\n- Theory checks" if checks is not None else "") + "\n",
             "## Overview\n",
             _md_table(["experiment", "status", "headline vs the notes", "seconds"],
                       [[r.title, r.state, _counts_text(r), r.status.get("seconds")]
                        for r in runs])]
    if damaged:
        parts.append(f"**{_damaged_intro(len(damaged))}** See *Damaged runs* below.\n")
    for r in runs:
        parts += _run_md(r, out_dir)
    if sweeps:
        parts.append("## Sweeps\n")
        for name, (header, rows) in sweeps.items():
            parts.append(f"### {name} ({len(rows)} runs)\n" + _md_table(header, rows))
    if damaged:
        parts.append("## Damaged runs\n")
        parts.append(_damaged_intro(len(damaged)) + "\n")
        parts.append("\n".join(f"- `{_rel(d.folder, root)}`: {d.reason}" for d in damaged) + "\n")
    if checks is not None:
        parts.append("## Theory checks (deeplinear verify)\n")
        parts.append(_md_table(_VERIFY_HEADER, _verify_rows(checks)))
    return "\n".join(parts)
