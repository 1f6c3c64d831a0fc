"""The report: self-contained HTML (parsed with html.parser), Markdown, reported vs measured."""

from __future__ import annotations

import base64
import json
from html.parser import HTMLParser
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from pydantic import BaseModel, ConfigDict
from typer.testing import CliRunner

from deeplinear.cli import app
from deeplinear.experiments.base import Experiment, Results
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
    if config.mode == "diverge":
        summary["status"] = "diverged"
    rows = [{"step": i, "loss": 1.0 / (i + 1)} for i in range(40)]
    return Results(tables={"loss": rows}, arrays={"loss": np.ones(3)}, summary=summary,
                   notes=["a note with <angle> brackets"])


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
                 reported={"recon_error": {"depth_3": 2.58e-5}, "nuclear_norm": 220.0})


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
    # reported next to measured (nested reported keys are flattened to match summary keys)
    assert "recon_error.depth_3" in text and "2.58e-05" in text and "0.001" in text
    assert "nuclear_norm" in text and "220" in text
    assert "<b>x</b>" in text  # user strings are escaped, not interpreted as markup
    assert "a note with <angle> brackets" in text
    # verify table and status warnings
    assert "balancedness_conserved" in text and "PASS" in text and "FAIL" in text
    assert "diverged" in text and "not a result" in text
    assert "ValueError: bad things" in text
    assert "depth = 3" in text  # the config is shown
    md = md_path.read_text()
    assert "| recon_error.depth_3 | 2.58e-05 | 0.001 | 38.8 |" in md
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
    assert "Sweep: reportfake (4 runs)" in (root / "report.html").read_text()
