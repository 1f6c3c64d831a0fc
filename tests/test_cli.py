"""The CLI end to end: CliRunner and subprocess, verify (faked and real), reproduce -> report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import tomllib
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from typer.testing import CliRunner

import deeplinear.cli as cli
from deeplinear.cli import app
from deeplinear.experiments.base import REGISTRY
from deeplinear.sweep import PLUGIN_ENV, load_experiments

FAKE_MODULE = "dl_cli_fakes"
FAKE_SOURCE = textwrap.dedent('''
    from pathlib import Path
    import numpy as np
    from pydantic import BaseModel, ConfigDict, Field
    from deeplinear.experiments.base import REGISTRY, Experiment, Results, register

    class Train(BaseModel):
        model_config = ConfigDict(extra="forbid")
        steps: int = Field(50, ge=1)
        lr: float = Field(0.1, gt=0)

    class Cfg(BaseModel):
        model_config = ConfigDict(extra="forbid")
        depth: int = Field(2, ge=1)
        diverge: bool = False
        train: Train = Train()

    def run(config, progress):
        bar = progress.task("steps", config.train.steps)
        loss = np.exp(-config.train.lr * np.arange(config.train.steps))
        for _ in range(config.train.steps):
            bar.advance()
        summary = {"final_loss": float(loss[-1]), "steps": config.train.steps}
        res = Results(tables={"loss": [{"step": i, "loss": float(v)} for i, v in
                                       enumerate(loss)]},
                      arrays={"loss": loss}, summary=summary)
        if config.diverge:
            res.diverged("depth 3, seed 0", 12)
        return res

    def make_plot(stem):
        def plot(results, out_dir):
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
            fig, ax = plt.subplots(figsize=(2, 2))
            ax.semilogy(results.arrays["loss"])
            paths = [Path(out_dir) / f"{stem}.png", Path(out_dir) / f"{stem}.pdf"]
            for p in paths:
                fig.savefig(p)
            plt.close(fig)
            return paths
        return plot

    for name, stem in (("clifake-a", "curve_a"), ("clifake-b", "curve_b")):
        if name not in REGISTRY:
            register(Experiment(name, f"Fake experiment {stem}.\\nSecond line.", Cfg, run,
                                make_plot(stem), quick={"train.steps": 10},
                                paper={"train": {"steps": 500}},
                                reported={"final_loss": 1e-3}))
''')
FAKES = ("clifake-a", "clifake-b")


@pytest.fixture
def fakes(tmp_path_factory, monkeypatch):
    folder = tmp_path_factory.mktemp("clifakes")
    (folder / f"{FAKE_MODULE}.py").write_text(FAKE_SOURCE)
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(folder), *sys.path]))
    monkeypatch.setenv(PLUGIN_ENV, FAKE_MODULE)
    monkeypatch.setenv("COLUMNS", "200")
    saved = dict(REGISTRY)
    sys.modules.pop(FAKE_MODULE, None)
    load_experiments()
    yield folder
    REGISTRY.clear()
    REGISTRY.update(saved)
    sys.modules.pop(FAKE_MODULE, None)


@dataclass
class FakeResult:
    name: str
    passed: bool
    params: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "statement": f"statement of {self.name}", "measured": 1.0,
                "predicted": 1.0 if self.passed else 2.0, "tolerance": 1e-6,
                "passed": self.passed, "params": self.params}


def fake_theory(fail: tuple[str, ...] = ()) -> SimpleNamespace:
    names = ["balancedness_conserved", "theorem1_end_to_end", "scalar_network"]
    calls: list[str | None] = []

    def run_checks(pattern=None, on_result=None, on_start=None):
        calls.append(pattern)
        chosen = [n for n in names if pattern is None or pattern in n]
        if not chosen:
            raise ValueError(f"no check name contains {pattern!r}")
        out = []
        for n in chosen:
            if on_start:
                on_start(n)
            out.append(FakeResult(n, n not in fail, {"seed": 0}))
            if on_result:
                on_result(out[-1])
        return out

    return SimpleNamespace(CHECKS=dict.fromkeys(names), run_checks=run_checks, calls=calls)


runner = CliRunner()


@pytest.mark.parametrize("cmd", [[], ["run"], ["list"], ["sweep"], ["report"], ["verify"],
                                 ["reproduce"]])
def test_help_everywhere(cmd) -> None:
    res = runner.invoke(app, [*cmd, "--help"])
    assert res.exit_code == 0 and "Usage" in res.stdout


def test_list_shows_one_line_descriptions(fakes) -> None:
    res = runner.invoke(app, ["list"])
    assert res.exit_code == 0
    for name in [*FAKES, *REGISTRY]:
        assert name in res.stdout
    assert "Fake experiment curve_a." in res.stdout and "Second line" not in res.stdout


def test_run_end_to_end(fakes, tmp_path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("depth = 3\n[train]\nsteps = 30\n")
    out = tmp_path / "run"
    res = runner.invoke(app, ["run", "clifake-a", "-c", str(cfg), "--set", "train.lr=0.2",
                              "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "final_loss" in res.stdout
    saved = tomllib.loads((out / "config.toml").read_text())
    assert saved == {"depth": 3, "diverge": False, "train": {"steps": 30, "lr": 0.2}}
    assert json.loads((out / "status.json").read_text())["status"] == "done"
    assert (out / "figures" / "curve_a.png").exists() and (out / "figures" / "curve_a.pdf").exists()
    assert (out / "loss.csv").read_text().count("\n") == 31


def test_presets(fakes) -> None:
    def steps(*flags: str) -> int:
        res = runner.invoke(app, ["run", "clifake-a", *flags, "--print-config"])
        assert res.exit_code == 0, res.output
        return tomllib.loads(res.stdout)["train"]["steps"]

    assert (steps(), steps("--quick"), steps("--paper")) == (50, 10, 500)
    assert steps("--quick", "--set", "train.steps=7") == 7  # --set beats the preset


def test_diverged_run_exits_nonzero(fakes, tmp_path) -> None:
    res = runner.invoke(app, ["run", "clifake-a", "--quick", "--set", "diverge=true", "--out",
                              str(tmp_path / "r")])
    assert res.exit_code == 1 and "diverged" in res.stderr
    assert "depth 3, seed 0: diverged at step 12" in res.stderr


def test_subprocess_run_and_bad_config(fakes, tmp_path) -> None:
    out = tmp_path / "r"
    ok = subprocess.run([*_entry(), "run", "clifake-b", "--quick", "--out", str(out)],
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert json.loads((out / "status.json").read_text())["status"] == "done"
    bad = subprocess.run([sys.executable, "-m", "deeplinear.cli", "run", "clifake-b", "--set",
                          "train.steps=0"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "error: train.steps: Input should be greater than or equal to 1 (got 0)"]


def _entry() -> list[str]:
    """The installed console script when there is one, else ``python -m deeplinear.cli``."""
    script = Path(sys.executable).parent / "deeplinear"
    return [str(script)] if script.exists() else [sys.executable, "-m", "deeplinear.cli"]


def test_verify_table_json_and_exit_codes(monkeypatch) -> None:
    theory = fake_theory()
    monkeypatch.setattr(cli, "_theory", lambda: theory)
    res = runner.invoke(app, ["verify"])
    assert res.exit_code == 0, res.output
    assert "theorem1_end_to_end" in res.stdout and "3 passed, 0 failed" in res.stdout
    res = runner.invoke(app, ["verify", "-k", "theorem", "--json"])
    assert res.exit_code == 0 and theory.calls[-1] == "theorem"
    data = json.loads(res.stdout)
    assert [d["name"] for d in data] == ["theorem1_end_to_end"]
    assert set(data[0]) == {"name", "statement", "measured", "predicted", "tolerance", "passed",
                            "params"}
    failing = fake_theory(fail=("scalar_network",))
    monkeypatch.setattr(cli, "_theory", lambda: failing)
    res = runner.invoke(app, ["verify", "--json"])
    assert res.exit_code == 1 and [d["passed"] for d in json.loads(res.stdout)] == [True, True,
                                                                                    False]
    res = runner.invoke(app, ["verify", "-k", "nothing-matches"])
    assert res.exit_code == 2 and "no check name contains" in res.stderr


def test_verify_real_checks_json() -> None:
    """Integration with the real deeplinear.theory (one cheap check) when it exists."""
    theory = pytest.importorskip("deeplinear.theory")
    name = "balancedness_decay_weight_decay"
    if name not in theory.CHECKS:
        pytest.skip(f"{name} is not registered")
    res = runner.invoke(app, ["verify", "-k", name, "--json"])
    data = json.loads(res.stdout)
    assert data and all(name in d["name"] for d in data)
    assert res.exit_code == (0 if all(d["passed"] for d in data) else 1)


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.alts: list[str] = []
        self.srcs: list[str] = []
        self.text = ""

    def handle_data(self, data):
        self.text += data

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            a = dict(attrs)
            self.alts.append(a["alt"])
            self.srcs.append(a["src"])


REAL = [n for n in load_experiments() if n not in FAKES]


def _reproduce_and_check_report(tmp_path: Path, names: list[str]) -> Path:
    out = tmp_path / "demo"
    only = [arg for n in names for arg in ("--only", n)]
    res = runner.invoke(app, ["reproduce", "--quick", "--out", str(out), *only])
    assert res.exit_code == 0, res.output + res.stderr
    page = _Page()
    page.feed((out / "report.html").read_text())
    page.close()
    expected = []
    for name in names:
        status = json.loads((out / name / "status.json").read_text())
        assert status["status"] == "done", (name, status.get("error"))
        expected += [Path(f).name for f in status["figures"] if f.endswith(".png")]
    assert sorted(page.alts) == sorted(expected)
    assert all(s.startswith("data:image/png;base64,") for s in page.srcs)
    checks = json.loads((out / "verify.json").read_text())
    assert checks and all(c["passed"] for c in checks)
    assert all(c["name"] in page.text for c in checks)  # the verify table is in the report
    assert (out / "report.md").exists()
    return out


def test_reproduce_quick_report_has_every_figure(fakes, tmp_path, monkeypatch) -> None:
    """reproduce --quick over the fakes and the first real registered experiment (the slow test
    below takes them all), a faked theory module for speed; the HTML parses and embeds every PNG
    figure of every run."""
    monkeypatch.setattr(cli, "_theory", lambda: fake_theory())
    out = _reproduce_and_check_report(tmp_path, [*FAKES, *REAL[:1]])
    html_text = (out / "report.html").read_text()
    assert "curve_a.png" in html_text and "curve_b.png" in html_text
    # re-running keeps the finished runs (resumable `make demo`)
    before = json.loads((out / "clifake-a" / "status.json").read_text())["finished"]
    again = runner.invoke(app, ["reproduce", "--quick", "--out", str(out), "--only",
                                "clifake-a", "--no-verify"])
    assert again.exit_code == 0 and "already done" in again.stdout
    assert json.loads((out / "clifake-a" / "status.json").read_text())["finished"] == before


@pytest.mark.slow
def test_reproduce_quick_every_real_experiment(fakes, tmp_path) -> None:
    """The real thing at --quick size: every registered experiment and the real theory checks
    (minutes); the report embeds every figure and the verify table."""
    out = _reproduce_and_check_report(tmp_path, list(REGISTRY))
    assert set(REAL) <= {p.name for p in out.iterdir()}


def test_reproduce_fails_on_failed_check(fakes, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(cli, "_theory", lambda: fake_theory(fail=("theorem1_end_to_end",)))
    res = runner.invoke(app, ["reproduce", "--quick", "--only", "clifake-b", "--out",
                              str(tmp_path / "d")])
    assert res.exit_code == 1 and "1 check(s) failed" in res.stderr
    assert (tmp_path / "d" / "report.html").exists()  # the report is written anyway
    res = runner.invoke(app, ["reproduce", "--only", "nope", "--out", str(tmp_path / "e")])
    assert res.exit_code == 2 and "'nope' is not registered" in res.stderr


def test_run_refuses_foreign_out_dir(fakes, tmp_path) -> None:
    (tmp_path / "mine.txt").write_text("precious")
    res = runner.invoke(app, ["run", "clifake-a", "--quick", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "is not a run folder" in res.stderr
    assert (tmp_path / "mine.txt").read_text() == "precious"


def test_reproduce_continues_past_a_failing_experiment(fakes, tmp_path, monkeypatch) -> None:
    import dataclasses

    def broken(config, progress):
        raise RuntimeError("experiment crashed")

    monkeypatch.setitem(REGISTRY, "clifake-a",
                        dataclasses.replace(REGISTRY["clifake-a"], run=broken))
    res = runner.invoke(app, ["reproduce", "--quick", "--only", "clifake-a", "--only",
                              "clifake-b", "--no-verify", "--out", str(tmp_path / "d")])
    assert res.exit_code == 1 and "1 experiment(s) not done" in res.stderr
    assert json.loads((tmp_path / "d" / "clifake-b" / "status.json").read_text())["status"] \
        == "done"
    html_text = (tmp_path / "d" / "report.html").read_text()
    assert "RuntimeError: experiment crashed" in html_text and "curve_b.png" in html_text
