"""The report: self-contained HTML (parsed with html.parser), Markdown, reported vs measured."""

from __future__ import annotations

import base64
import json
import os
import shutil
from html.parser import HTMLParser
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from pydantic import BaseModel, ConfigDict
from typer.testing import CliRunner

from deeplinear.cli import app
from deeplinear.experiments.base import Experiment, Headline, Reported, Results
from deeplinear.report import comparison, find_runs, flatten, sweep_tables, write_report
from deeplinear.store import execute_run

matplotlib.use("Agg")


class Cfg(BaseModel):
    model_config = ConfigDict(extra="forbid")
    depth: int = 2
    mode: str = "ok"


def _run(config: Cfg, progress) -> Results:
    if config.mode == "fail":
        raise ValueError("bad things")
    err = 10.0 ** (-config.depth)
    summary = {"recon_error.depth_3": err, "depth": config.depth, "extra": "<b>x</b>"}
    rows = [{"step": i, "loss": 1.0 / (i + 1)} for i in range(40)]
    results = Results(tables={"loss": rows}, arrays={"loss": np.ones(3)}, summary=summary,
                      notes=["a note with <angle> brackets"])
    results.headline = [
        Headline("recon_error.depth_3", err, "reconstruction error, depth 3", "synthetic 5x5"),
        Headline("nuclear_norm", None, "nuclear norm", "synthetic 5x5", "another size"),
        Headline("ours_only", 1.5, "a quantity the notes do not report", "synthetic 5x5"),
    ]
    if config.mode == "diverge":
        results.diverged("seed=0", 7)
    return results


def _plot(results: Results, out_dir: Path) -> list[Path]:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([r["loss"] for r in results.tables["loss"]])
    paths = []
    for name in ("loss", "sigmas"):
        for ext in ("png", "pdf"):
            paths.append(out_dir / f"{name}.{ext}")
            fig.savefig(paths[-1])
    plt.close(fig)
    return paths


EXP = Experiment("reportfake", "report test", Cfg, _run, _plot,
                 reported={"recon_error.depth_3": Reported(2.58e-5, "§E3 Table 1", 10.0),
                           "nuclear_norm": Reported(220.0, "§E3 calibration")},
                 question="Does the fake experiment answer its question?")


class _Parser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.imgs: list[dict[str, str]] = []
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "img":
            self.imgs.append(dict(attrs))

    def handle_data(self, data):
        self.text.append(data)


def parse(html_text: str) -> _Parser:
    p = _Parser()
    p.feed(html_text)
    p.close()
    return p


@pytest.fixture
def runs_dir(tmp_path) -> Path:
    root = tmp_path / "runs"
    execute_run(EXP, Cfg(depth=3), root / "deep")
    execute_run(EXP, Cfg(depth=1, mode="diverge"), root / "diverged")
    execute_run(EXP, Cfg(mode="fail"), root / "failed")
    checks = [
        {"name": "balancedness_conserved", "statement": "C stays constant", "measured": 1e-12,
         "predicted": 0.0, "tolerance": 1e-9, "passed": True, "params": {"seed": 0}},
        {"name": "e2e_rule", "statement": "Theorem 1", "measured": 0.5, "predicted": 0.0,
         "tolerance": 1e-6, "passed": False, "params": {}},
    ]
    (root / "verify.json").write_text(json.dumps(checks))
    return root


def test_html_is_self_contained_with_every_figure(runs_dir) -> None:
    html_path, md_path = write_report(runs_dir)
    page = parse(html_path.read_text())
    # the done run's two PNGs are embedded as base64 data, and nothing is linked externally
    pngs = {p.name for r in find_runs(runs_dir) if r.status["status"] == "done"
            for p in r.figures}
    assert pngs == {"loss.png", "sigmas.png"}
    embedded = [img for img in page.imgs if img["alt"] in pngs]
    assert len(embedded) >= 2
    for img in page.imgs:
        assert img["src"].startswith("data:image/png;base64,")
        assert base64.b64decode(img["src"].split(",", 1)[1])[:4] == b"\x89PNG"
    assert "script" not in page.tags and "link" not in page.tags
    text = " ".join(page.text)
    # the question first, then the headline: reported next to measured, with the verdict
    assert "Does the fake experiment answer its question?" in text
    assert "recon_error.depth_3" in text and "2.58e-05" in text and "0.001" in text
    assert "differs" in text and "not comparable" in text and "another size" in text
    assert "nuclear_norm" in text and "220" in text
    assert "<b>x</b>" in text  # user strings are escaped, not interpreted as markup
    assert "a note with <angle> brackets" in text
    # verify table and status warnings
    assert "balancedness_conserved" in text and "PASS" in text and "FAIL" in text
    assert "diverged" in text and "not a result" in text
    assert "ValueError: bad things" in text
    assert "depth = 3" in text  # the config is shown
    md = md_path.read_text()
    assert ("| reconstruction error, depth 3 (`recon_error.depth_3`) | 2.58e-05 (§E3 Table 1) "
            "| 0.001 | synthetic 5x5 | differs: measured/reported = 38.8") in md
    assert "| nuclear norm (`nuclear_norm`) | 220 (§E3 calibration) | not reached |" in md
    for link in ("deep/figures/loss.png", "deep/figures/sigmas.png"):
        assert f"]({link})" in md and (runs_dir / link).exists()
    assert "| e2e_rule | FAIL |" in md


def test_comparison_rows() -> None:
    class R:
        reported = {"a": {"b": 2.0}, "s": "text"}
        summary = {"a.b": 3.0, "c": 1}

    rows = comparison(R)  # type: ignore[arg-type]
    assert rows == [("a.b", "2", "3", "1.5"), ("s", "text", "—", ""), ("c", "—", "1", "")]
    assert flatten({"x": {"y": {"z": 1}}, "w": 2}) == {"x.y.z": 1, "w": 2}


def test_report_command(runs_dir) -> None:
    res = CliRunner().invoke(app, ["report", str(runs_dir)])
    assert res.exit_code == 0, res.output
    assert (runs_dir / "report.html").exists() and (runs_dir / "report.md").exists()


def test_report_missing_dir_is_exit_2(tmp_path) -> None:
    res = CliRunner().invoke(app, ["report", str(tmp_path / "nope")])
    assert res.exit_code == 2 and "does not exist" in res.stderr


def test_sweep_table_lists_varying_config_and_measured(tmp_path) -> None:
    root = tmp_path / "sw"
    for depth in (1, 2, 3):
        execute_run(EXP, Cfg(depth=depth), root / f"d{depth}")
    execute_run(EXP, Cfg(depth=4, mode="diverge"), root / "d4")
    header, rows = sweep_tables(find_runs(root))["reportfake"]
    assert header[:3] == ["run", "status", "depth"] and "recon_error.depth_3" in header
    assert "mode" in header  # varies because of the diverged run
    col = header.index("recon_error.depth_3")
    got = {row[0]: row[col] for row in rows}
    assert got == {"d1": 0.1, "d2": 0.01, "d3": 0.001, "d4": None}  # diverged: no number
    write_report(root)
    assert "reportfake (4 runs)" in (root / "report.html").read_text()


# ---------------------------------------------------------------- damaged runs


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """A runs folder with two healthy runs, ``good`` and ``bad`` (the tests damage ``bad``)."""
    root = tmp_path_factory.mktemp("template") / "runs"
    execute_run(EXP, Cfg(depth=3), root / "good")
    execute_run(EXP, Cfg(depth=2), root / "bad")
    return root


@pytest.fixture
def runs(template, tmp_path) -> Path:
    root = tmp_path / "runs"
    shutil.copytree(template, root, symlinks=True)
    return root


def _edit_json(path: Path, **changes) -> None:
    value = json.loads(path.read_text())
    value.update(changes)
    path.write_text(json.dumps(value))


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _make_dir(path: Path) -> None:
    path.unlink()
    path.mkdir()
    (path / "inner.txt").write_text("x")


def _make_fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


DAMAGE = {
    # status.json
    "status-truncated": ("status.json", _truncate),
    "status-not-json": ("status.json", lambda p: p.write_text("this is not json {")),
    "status-empty": ("status.json", lambda p: p.write_text("")),
    "status-list": ("status.json", lambda p: p.write_text("[1, 2]")),
    "status-number": ("status.json", lambda p: p.write_text("5")),
    "status-string": ("status.json", lambda p: p.write_text('"done"')),
    "status-figures-string": ("status.json", lambda p: _edit_json(p, figures="figures/loss.png")),
    "status-figures-numbers": ("status.json", lambda p: _edit_json(p, figures=[1, 2])),
    "status-status-number": ("status.json", lambda p: _edit_json(p, status=5)),
    "status-status-unknown": ("status.json", lambda p: _edit_json(p, status="banana")),
    "status-config-list": ("status.json", lambda p: _edit_json(p, config=[1])),
    "status-divergences-string": ("status.json", lambda p: _edit_json(p, divergences="x")),
    "status-divergence-number": ("status.json", lambda p: _edit_json(p, divergences=[5])),
    "status-divergence-step-string": (
        "status.json", lambda p: _edit_json(p, divergences=[{"run": "a", "step": "7"}])),
    "status-dir": ("status.json", _make_dir),
    "status-fifo": ("status.json", _make_fifo),
    "status-latin1": ("status.json", lambda p: p.write_bytes('{"status": "d\u00f6ne"}'
                                                             .encode("latin-1"))),
    "status-utf16": ("status.json", lambda p: p.write_bytes(p.read_text().encode("utf-16"))),
    "status-binary": ("status.json", lambda p: p.write_bytes(bytes(range(256)))),
    "status-deep": ("status.json", lambda p: p.write_text("[" * 5000 + "]" * 5000)),
    # summary.json
    "summary-truncated": ("summary.json", _truncate),
    "summary-not-json": ("summary.json", lambda p: p.write_text("{'single': 'quotes'}")),
    "summary-list": ("summary.json", lambda p: p.write_text("[]")),
    "summary-number": ("summary.json", lambda p: p.write_text("3.5")),
    "summary-summary-list": ("summary.json", lambda p: _edit_json(p, summary=[1, 2])),
    "summary-notes-string": ("summary.json", lambda p: _edit_json(p, notes="a note")),
    "summary-notes-numbers": ("summary.json", lambda p: _edit_json(p, notes=[1])),
    "summary-reported-number": ("summary.json", lambda p: _edit_json(p, reported=1)),
    "summary-deep": ("summary.json", lambda p: _edit_json(
        p, summary=json.loads('{"a":' * 100 + "1" + "}" * 100))),
    "summary-dir": ("summary.json", _make_dir),
    "summary-fifo": ("summary.json", _make_fifo),
    "summary-latin1": ("summary.json", lambda p: p.write_bytes(b'{"notes": ["\xe9"]}')),
    # a metric table
    "csv-truncated-row": ("loss.csv", lambda p: p.write_text("step,loss\n0,1.0\n1")),
    "csv-truncated-quote": ("loss.csv", lambda p: p.write_text('step,loss\n0,"1.0')),
    "csv-nul": ("loss.csv", lambda p: p.write_bytes(b"step,loss\n0,\x001\n")),
    "csv-empty": ("loss.csv", lambda p: p.write_text("")),
    "csv-dir": ("loss.csv", _make_dir),
    "csv-fifo": ("loss.csv", _make_fifo),
    "csv-latin1": ("loss.csv", lambda p: p.write_bytes(b"step,l\xf6ss\n0,1\n")),
    "csv-extra": ("extra.csv", lambda p: p.mkdir()),
    # config.toml (shown in the report)
    "config-latin1": ("config.toml", lambda p: p.write_bytes(b"mode = '\xe9'\n")),
    "config-dir": ("config.toml", _make_dir),
}


def _report(root: Path):
    res = CliRunner().invoke(app, ["report", str(root)])
    assert "Traceback" not in res.output + res.stderr
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    return res


def _assert_damaged(res, root: Path, folder: str, file: str) -> str:
    """Exit 1, the healthy run reported, the damaged one listed with a reason naming ``file``
    (on stderr, in the HTML and in the Markdown); returns the reason line."""
    assert res.exit_code == 1, res.output + res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("damaged:")]
    assert len(lines) == 1, res.stderr
    line = lines[0]
    assert len(line) <= 300 and folder in line and file in line, line
    assert all(len(ln) <= 300 for ln in res.stderr.splitlines())
    page = (root / "report.html").read_text()
    text = " ".join(parse(page).text)
    assert "Damaged runs" in text and file in text.split("Damaged runs")[-1]
    assert "reportfake (good)" in text and f"reportfake ({folder})" not in text
    assert page.count("data:image/png;base64,") == 2  # the healthy run's figures only
    md = (root / "report.md").read_text()
    assert "## Damaged runs" in md and f"- `{folder}`: " in md and "## reportfake (good)" in md
    return line


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damaged_run_is_listed_and_the_rest_reported(runs, case) -> None:
    name, damage = DAMAGE[case]
    damage(runs / "bad" / name)
    _assert_damaged(_report(runs), runs, "bad", name)


def test_unreadable_file_is_a_damaged_run(runs, monkeypatch) -> None:
    """Tests run as root, which reads anything: simulate EACCES where the report reads."""
    real = Path.read_bytes

    def read_bytes(self: Path) -> bytes:
        if self.name == "summary.json" and self.parent.name == "bad":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    line = _assert_damaged(_report(runs), runs, "bad", "summary.json")
    assert "Permission denied" in line


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads mode-000 files")
def test_mode_000_file_is_a_damaged_run(runs) -> None:
    (runs / "bad" / "status.json").chmod(0)
    _assert_damaged(_report(runs), runs, "bad", "status.json")


def test_unlistable_subfolder_is_listed(runs, monkeypatch) -> None:
    real = os.scandir

    def scandir(path="."):
        if Path(path).name == "bad":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    res = _report(runs)
    assert res.exit_code == 1 and "bad: folder cannot be listed (Permission denied)" in res.stderr


@pytest.mark.parametrize("content", [
    "[{\"name\": \"x\", \"passed\": tr", "{\"checks\": []}", "[1, 2]", "\"text\"",
    "[{\"name\": 5, \"passed\": true}]", "[{\"name\": \"x\", \"passed\": \"yes\"}]", None,
])
def test_damaged_verify_json_is_listed(runs, content) -> None:
    path = runs / "verify.json"
    if content is None:
        path.mkdir()
    else:
        path.write_text(content)
    res = _report(runs)
    assert res.exit_code == 1
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("damaged:")]
    assert len(lines) == 1 and "verify.json" in lines[0] and len(lines[0]) <= 300
    text = " ".join(parse((runs / "report.html").read_text()).text)
    assert "Damaged runs" in text and "reportfake (good)" in text and "reportfake (bad)" in text
    assert "Theory checks" not in text


@pytest.mark.parametrize("kind", ["missing", "file", "fifo"])
def test_report_root_not_a_folder_is_one_line_exit_2(tmp_path, kind) -> None:
    root = tmp_path / "root"
    if kind == "file":
        root.write_text("precious")
    elif kind == "fifo":
        os.mkfifo(root)
    res = _report(root)
    assert res.exit_code == 2, res.output
    assert len(res.stderr.strip().splitlines()) == 1 and str(root) in res.stderr
    assert ("does not exist" if kind == "missing" else "is not a folder") in res.stderr
    if kind == "file":
        assert root.read_text() == "precious"


@pytest.mark.parametrize("kind", ["dir", "symlink", "fifo"])
def test_report_file_that_is_not_a_file_is_refused(runs, tmp_path, kind) -> None:
    target = runs / "report.html"
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me")
    if kind == "dir":
        target.mkdir()
        (target / "inside").write_text("keep me")
    elif kind == "symlink":
        target.symlink_to(precious)
    else:
        os.mkfifo(target)
    res = _report(runs)
    assert res.exit_code == 2 and len(res.stderr.strip().splitlines()) == 1
    assert "report.html" in res.stderr and "remove or rename it" in res.stderr
    assert precious.read_text() == "keep me"
    if kind == "dir":
        assert (target / "inside").read_text() == "keep me"


# ---------------------------------------------------------------- figures stay inside the run

PNG_OUTSIDE = b"\x89PNG\r\n\x1a\n" + b"SECRET-OUTSIDE-BYTES" * 10


@pytest.mark.parametrize("kind", ["absolute", "dotdot", "symlink", "symlinked-folder"])
def test_figures_outside_the_run_folder_are_not_embedded(runs, tmp_path, kind) -> None:
    outside = tmp_path / "outside.png"
    outside.write_bytes(PNG_OUTSIDE)
    bad = runs / "bad"
    entry = {"absolute": str(outside), "dotdot": "../../outside.png",
             "symlink": "figures/evil.png", "symlinked-folder": "elsewhere/outside.png"}[kind]
    if kind == "symlink":
        (bad / "figures" / "evil.png").symlink_to(outside)
    elif kind == "symlinked-folder":
        (bad / "elsewhere").symlink_to(tmp_path)
    status = json.loads((bad / "status.json").read_text())
    _edit_json(bad / "status.json", figures=[*status["figures"], entry])
    res = _report(runs)
    line = _assert_damaged(res, runs, "bad", "figure")
    assert "outside" in line or ".." in line or "absolute" in line
    for out in ("report.html", "report.md"):
        text = (runs / out).read_text()
        assert base64.b64encode(PNG_OUTSIDE).decode()[:40] not in text
        assert "outside.png)" not in text  # not linked from the Markdown either


def test_figure_inside_via_symlink_is_fine(runs) -> None:
    bad = runs / "bad"
    (bad / "figures" / "alias.png").symlink_to(bad / "figures" / "loss.png")
    status = json.loads((bad / "status.json").read_text())
    _edit_json(bad / "status.json", figures=[*status["figures"], "figures/alias.png"])
    res = _report(runs)
    assert res.exit_code == 0, res.stderr
    assert (runs / "report.html").read_text().count("data:image/png;base64,") == 5


def test_missing_or_non_png_figure_is_damage(runs) -> None:
    (runs / "bad" / "figures" / "loss.png").unlink()
    _assert_damaged(_report(runs), runs, "bad", "figures/loss.png")
    (runs / "bad" / "figures" / "loss.png").write_text("not a png")
    line = _assert_damaged(_report(runs), runs, "bad", "figures/loss.png")
    assert "not a PNG" in line


# ---------------------------------------------------------------- temporary files


def test_leftover_report_temporaries_are_cleaned_and_nothing_else(runs) -> None:
    ours = [".report.html.tmp-0123abcd", ".report.md.tmp-deadbeef"]
    others = [".report.html.tmp-xyz", ".report.html.tmp-0123abcd.keep", ".loss.csv.tmp-0123abcd",
              "report.html.tmp-0123abcd", ".report.html.tmp-0123ABCD", ".report.html.tmp-012345678",
              ".notes.txt.tmp-0123abcd"]
    for name in ours + others:
        (runs / name).write_text("leftover")
    (runs / ".report.html.tmp-abcdef01").mkdir()  # a folder with our name: not ours to delete
    (runs / ".report.md.tmp-abcdef02").symlink_to(runs / "good" / "config.toml")
    res = _report(runs)
    assert res.exit_code == 0, res.stderr
    for name in ours:
        assert not (runs / name).exists()
    for name in others:
        assert (runs / name).read_text() == "leftover"
    assert (runs / ".report.html.tmp-abcdef01").is_dir()
    assert (runs / ".report.md.tmp-abcdef02").is_symlink()
    assert (runs / "good" / "config.toml").read_text()
    assert not [p for p in runs.iterdir() if p.name.startswith(".report") and p.name[-8:]
                in ("0123abcd", "deadbeef")]


# ---------------------------------------------------------------- statuses and missing values


def _set_run(run_dir: Path, status: str, divergences: list, summary: dict) -> None:
    _edit_json(run_dir / "status.json", status=status, divergences=divergences)
    _edit_json(run_dir / "summary.json", summary=summary)


def _cells(html_text: str) -> list[str]:
    class Cells(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.cells: list[str] = []
            self._in = False

        def handle_starttag(self, tag, attrs):
            if tag == "td":
                self._in = True
                self.cells.append("")

        def handle_endtag(self, tag):
            self._in = self._in and tag != "td"

        def handle_data(self, data):
            if self._in:
                self.cells[-1] += data

    p = Cells()
    p.feed(html_text)
    return p.cells


def test_status_divergences_and_missing_values(runs) -> None:
    _set_run(runs / "bad", "partial",
             [{"run": "seed=1", "step": 120}, {"run": "seed=2", "step": None},
              "seed=3: diverged at step 9"],
             {"recon_error.depth_3": None, "kept": 0.5, "legacy": "nan"})
    _set_run(runs / "good", "done", [],
             {"recon_error.depth_3": None, "legacy_inf": "inf", "neg": "-Infinity", "ok": 1e-3})
    (runs / "good" / "loss.csv").write_text("step,loss\n0,1.0\n1,nan\n2,inf\n")
    res = _report(runs)
    assert res.exit_code == 0, res.stderr
    page = (runs / "report.html").read_text()
    text = " ".join(parse(page).text)
    for line in ("seed=1: diverged at step 120", "seed=2: diverged", "seed=3: diverged at step 9"):
        assert line in text
    assert "badge s-partial" in page and "badge s-done" in page
    cells = _cells(page)
    assert not {c.strip().lower() for c in cells} & {"nan", "inf", "-inf", "infinity",
                                                     "-infinity"}
    md = (runs / "report.md").read_text()
    assert "**Status: partial**" in md and "**Status: done**" in md
    assert "- seed=1: diverged at step 120" in md
    # partial run: a null measured value is "diverged"; done run: "not reached"
    assert "| recon_error.depth_3 | diverged |" in md
    assert "| recon_error.depth_3 | not reached |" in md
    assert "| legacy | diverged |" in md
    assert "| legacy_inf | not reached |" in md and "| neg | not reached |" in md
    assert "| kept | 0.5 |" in md and "| ok | 0.001 |" in md
    for cell in ("nan", "inf"):
        assert f"| {cell} |" not in md


@pytest.mark.parametrize("state", ["done", "partial", "diverged", "failed"])
def test_each_status_is_shown(runs, state) -> None:
    _set_run(runs / "bad", state, [{"run": "r", "step": 3}] if state != "done" else [],
             {"x": 1.0})
    res = _report(runs)
    assert res.exit_code == 0, res.stderr
    page = (runs / "report.html").read_text()
    assert f"<span class='badge s-{state}'>{state}</span>" in page
    md = (runs / "report.md").read_text()
    assert f"**Status: {state}**" in md
    assert ("not a result" in md) == (state in ("diverged", "failed"))


def test_sweep_table_shows_missing_values(tmp_path) -> None:
    root = tmp_path / "sw"
    for depth in (1, 2):
        execute_run(EXP, Cfg(depth=depth), root / f"d{depth}")
    _set_run(root / "d2", "partial", [{"run": "s", "step": 4}], {})
    for run, value in (("d1", "nan"), ("d2", None)):  # legacy NaN text, and a missing value
        _edit_json(root / run / "summary.json", headline=[
            {"key": "recon_error.depth_3", "value": value, "description": "d", "measured_on": "m"}])
    header, rows = sweep_tables(find_runs(root))["reportfake"]
    got = {row[0]: row[header.index("recon_error.depth_3")] for row in rows}
    assert got == {"d1": "not reached", "d2": "diverged"}


# ---------------------------------------------------------------- short messages


def test_long_values_are_shortened_in_messages(runs) -> None:
    _edit_json(runs / "bad" / "status.json", status="x" * 1_000_000)
    res = _report(runs)
    assert res.exit_code == 1 and max(len(ln) for ln in res.stderr.splitlines()) <= 300
    assert "…" in res.stderr and len(res.stderr) < 1000
    _edit_json(runs / "bad" / "status.json", status="done",
               figures=["/" + "y" * 100_000 + ".png"])
    res = _report(runs)
    assert res.exit_code == 1 and max(len(ln) for ln in res.stderr.splitlines()) <= 300
    md = (runs / "report.md").read_text()
    assert len(md) < 20_000


def test_long_folder_names_keep_lines_short(tmp_path, template) -> None:
    root = tmp_path / "runs"
    deep = root
    for _ in range(8):
        deep = deep / ("n" * 200)
    shutil.copytree(template / "bad", deep)
    (deep / "status.json").write_text("{")
    res = _report(root)
    assert res.exit_code == 1
    assert all(len(ln) <= 300 for ln in res.stderr.splitlines())
    assert "status.json" in res.stderr
