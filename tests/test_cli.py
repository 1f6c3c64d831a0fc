"""The CLI end to end: CliRunner and subprocess, verify (faked and real), reproduce -> report."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import json
import os
import shlex
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
from deeplinear.store import RunOutcome
from deeplinear.sweep import PLUGIN_ENV, SweepResult, load_experiments

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
        partial: bool = False
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
        if config.partial:  # one of two sub-runs diverged: the other is a valid result
            res.subruns = 2
            res.diverged("depth 3, seed 1", 7)
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
                "comparison": "|measured - predicted| <= tolerance",
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
    assert saved == {"depth": 3, "diverge": False, "partial": False, "train": {"steps": 30, "lr": 0.2}}
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


def _wide_stdout(monkeypatch) -> None:
    """Tables as on a 200-column terminal (cli.out_console is made once, at import)."""
    from rich.console import Console

    monkeypatch.setattr(cli, "out_console", Console(width=200))


def test_verify_table_json_and_exit_codes(monkeypatch) -> None:
    theory = fake_theory()
    monkeypatch.setattr(cli, "_theory", lambda: theory)
    _wide_stdout(monkeypatch)
    res = runner.invoke(app, ["verify"])
    assert res.exit_code == 0, res.output
    assert "theorem1_end_to_end" in res.stdout and "3 passed, 0 failed" in res.stdout
    assert "|measured - predicted| <= tolerance" in res.stdout  # the relation tested, stated
    res = runner.invoke(app, ["verify", "-k", "theorem", "--json"])
    assert res.exit_code == 0 and theory.calls[-1] == "theorem"
    data = json.loads(res.stdout)
    assert [d["name"] for d in data] == ["theorem1_end_to_end"]
    assert set(data[0]) == {"name", "statement", "measured", "predicted", "tolerance",
                            "comparison", "passed", "params"}
    failing = fake_theory(fail=("scalar_network",))
    monkeypatch.setattr(cli, "_theory", lambda: failing)
    res = runner.invoke(app, ["verify", "--json"])
    assert res.exit_code == 1 and [d["passed"] for d in json.loads(res.stdout)] == [True, True,
                                                                                    False]
    res = runner.invoke(app, ["verify", "-k", "nothing-matches"])
    assert res.exit_code == 2 and "no check name contains" in res.stderr


def test_verify_real_checks_json(monkeypatch) -> None:
    """Integration with the real deeplinear.theory (one cheap check) when it exists."""
    theory = pytest.importorskip("deeplinear.theory")
    name = "balancedness_decay_weight_decay"
    if name not in theory.CHECKS:
        pytest.skip(f"{name} is not registered")
    res = runner.invoke(app, ["verify", "-k", name, "--json"])
    data = json.loads(res.stdout)
    assert data and all(name in d["name"] for d in data)
    assert res.exit_code == (0 if all(d["passed"] for d in data) else 1)
    assert all(d["comparison"] == "measured <= tolerance" for d in data)
    _wide_stdout(monkeypatch)
    table = runner.invoke(app, ["verify", "-k", name])
    header = next(line for line in table.stdout.splitlines() if "measured" in line)
    assert "test" in header and "measured <= tolerance" in table.stdout


def test_verify_table_marks_conditions_beyond_the_numbers(monkeypatch) -> None:
    _wide_stdout(monkeypatch)
    checks = [{"name": "a_check", "measured": 70.7, "predicted": 68.7, "tolerance": 0.0,
               "passed": True, "comparison": "measured >= predicted; also det > 0 throughout"},
              {"name": "old_record", "measured": 1.0, "predicted": 0.0, "tolerance": 2.0,
               "passed": True}]  # a verify.json written before `comparison` existed
    from rich.console import Console

    console = Console(width=200, record=True)
    console.print(cli._checks_table(checks))
    text = console.export_text()
    assert "measured >= predicted *" in text and "* a_check: also det > 0 throughout" in text
    assert "old_record" in text
    from deeplinear.theory._base import ALSO

    assert cli.ALSO == ALSO


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


def test_reproduce_names_a_partial_experiment_and_exits_0(fakes, tmp_path) -> None:
    res = runner.invoke(app, ["run", "clifake-a", "--quick", "--set", "partial=true", "--out",
                              str(tmp_path / "r")])
    assert res.exit_code == 1 and "clifake-a partial" in res.stderr  # run: not done -> 1
    # reproduce: the report is the job; a partial experiment is named with its sub-run and step
    REGISTRY["clifake-a"] = dataclasses.replace(
        REGISTRY["clifake-a"], quick={**REGISTRY["clifake-a"].quick, "partial": True})
    res = runner.invoke(app, ["reproduce", "--quick", "--only", "clifake-a", "--no-verify",
                              "--out", str(tmp_path / "d")])
    assert res.exit_code == 0, res.output
    assert "note: clifake-a partial" in res.stderr
    assert "depth 3, seed 1: diverged at step 7" in res.stderr
    assert json.loads((tmp_path / "d" / "clifake-a" / "status.json").read_text())["status"] \
        == "partial"
    # diverged (no valid result) is still a failure of the main job
    REGISTRY["clifake-a"] = dataclasses.replace(
        REGISTRY["clifake-a"], quick={**REGISTRY["clifake-a"].quick, "diverge": True,
                                      "partial": False})
    res = runner.invoke(app, ["reproduce", "--quick", "--only", "clifake-a", "--no-verify",
                              "--out", str(tmp_path / "e")])
    assert res.exit_code == 1 and "1 experiment(s) not done" in res.stderr


def test_reproduce_continues_past_a_failing_experiment(fakes, tmp_path, monkeypatch) -> None:
    def broken(config, progress):
        raise RuntimeError("experiment crashed")

    # the fakes fixture restores the registry (monkeypatch.setitem would re-add clifake-a after it)
    REGISTRY["clifake-a"] = dataclasses.replace(REGISTRY["clifake-a"], run=broken)
    res = runner.invoke(app, ["reproduce", "--quick", "--only", "clifake-a", "--only",
                              "clifake-b", "--no-verify", "--out", str(tmp_path / "d")])
    assert res.exit_code == 1 and "1 experiment(s) not done" in res.stderr
    assert json.loads((tmp_path / "d" / "clifake-b" / "status.json").read_text())["status"] \
        == "done"
    html_text = (tmp_path / "d" / "report.html").read_text()
    assert "RuntimeError: experiment crashed" in html_text and "curve_b.png" in html_text


# ---------------------------------------------------------------- help examples, --version, hints


COMMANDS = [c.name for c in app.registered_commands]
EXAMPLE_LINES = [(cmd, line) for cmd, lines in cli.EXAMPLES.items() for line in lines]


def test_every_help_page_has_examples() -> None:
    assert set(cli.EXAMPLES) == {"", *COMMANDS}
    assert all(cli.EXAMPLES[c] for c in cli.EXAMPLES)
    for cmd, line in EXAMPLE_LINES:
        assert line.startswith("deeplinear ") and line.split()[1] in (cmd or line.split()[1])


@pytest.mark.parametrize("command", list(cli.EXAMPLES))
def test_help_shows_its_examples_verbatim(command, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    res = runner.invoke(app, [*([command] if command else []), "--help"])
    assert res.exit_code == 0, res.output
    assert "Examples:" in res.stdout
    for line in cli.EXAMPLES[command]:
        assert line in res.stdout  # TOML lists survive rich markup


class _Written:
    def __init__(self, out: Path) -> None:
        self.html, self.md, self.damaged = Path(out) / "report.html", Path(out) / "report.md", []

    def __iter__(self):
        return iter((self.html, self.md))


@pytest.fixture
def example_env(tmp_path, monkeypatch):
    """The examples' relative paths (examples/..., runs/...) resolve in a scratch folder; what
    would take minutes (training, a sweep's runs, the checks without -k, writing a report) is
    stubbed, everything before it (option parsing, experiment names, presets, config files,
    --set values, grid files, output folders, -k patterns) is the real CLI."""
    repo = Path(__file__).resolve().parents[1]
    (tmp_path / "examples").symlink_to(repo / "examples")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.delenv(PLUGIN_ENV, raising=False)
    real = importlib.import_module("deeplinear.theory")

    def run_checks(pattern=None, on_result=None, on_start=None):
        if pattern is not None:  # cheap: the checks whose name contains the pattern, for real
            return real.run_checks(pattern, on_result=on_result, on_start=on_start)
        result = FakeResult(next(iter(real.CHECKS)), True)
        if on_result:
            on_result(result)
        return [result]

    monkeypatch.setattr(cli, "_theory",
                        lambda: SimpleNamespace(CHECKS=real.CHECKS, run_checks=run_checks))
    monkeypatch.setattr(cli, "execute_run", lambda exp, cfg, run_dir, **kw: RunOutcome(
        "0" * 12, exp.name, "done", 0.0, str(run_dir)))
    monkeypatch.setattr(cli, "_run_sweep", lambda specs, out_dir, **kw: SweepResult(
        [], len(specs), {"done": len(specs)}))
    monkeypatch.setattr(cli, "write_report", lambda root, *a, **kw: _Written(root))
    return tmp_path


@pytest.mark.parametrize(("command", "line"), EXAMPLE_LINES,
                         ids=[f"{c or 'deeplinear'}:{line}" for c, line in EXAMPLE_LINES])
def test_every_help_example_works(command, line, example_env) -> None:
    """Each example a --help page shows runs as written (`run` examples with --print-config
    added: the merged config is validated, nothing is trained)."""
    args = shlex.split(line)[1:]
    if args[0] == "run" and "--print-config" not in args:
        args.append("--print-config")
    res = runner.invoke(app, args)
    assert res.exit_code == 0, f"{line}: {res.output}"
    assert "error:" not in res.stderr and "Usage:" not in res.stderr


def test_version() -> None:
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0, res.output
    assert res.stdout == f"deeplinear {importlib.metadata.version('deeplinear')}\n"
    assert cli.main(["--version"]) == 0


def test_version_falls_back_to_the_package_attribute(monkeypatch) -> None:
    import deeplinear

    def missing(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    monkeypatch.setattr(deeplinear, "__version__", "9.9.9", raising=False)
    assert cli.package_version() == "9.9.9"


@pytest.mark.parametrize(("args", "typo", "meant"), [
    (["run", "Fig3"], "Fig3", "fig3"),
    (["run", "FIG1-CNN", "--print-config"], "FIG1-CNN", "fig1-cnn"),
    (["run", "fig1regression"], "fig1regression", "fig1-regression"),
    (["run", "norm", "--quick"], "norm", "norms"),
    (["reproduce", "--only", "fig3", "--only", "Fig2", "--out", "{tmp}/r"], "Fig2", "fig2"),
    (["sweep", "{tmp}/grid.toml", "--out", "{tmp}/s"], "FIG3", "fig3"),
])
def test_did_you_mean_experiment(args, typo, meant, tmp_path, monkeypatch) -> None:
    monkeypatch.delenv(PLUGIN_ENV, raising=False)
    (tmp_path / "grid.toml").write_text('experiment = "FIG3"\n[grid]\nseed = [0, 1]\n')
    res = runner.invoke(app, [a.replace("{tmp}", str(tmp_path)) for a in args])
    assert res.exit_code == 2, res.output
    assert res.stderr.splitlines() == [
        f"error: experiment {typo!r} is not registered; did you mean {meant!r}? "
        "(see `deeplinear list`)"]
    assert not (tmp_path / "r").exists() and not (tmp_path / "s").exists()


def test_no_suggestion_for_a_name_like_none(monkeypatch) -> None:
    monkeypatch.delenv(PLUGIN_ENV, raising=False)
    res = runner.invoke(app, ["run", "zzzz"])
    assert res.exit_code == 2 and "did you mean" not in res.stderr
    assert res.stderr.startswith("error: experiment 'zzzz' is not registered (known: ")


def test_did_you_mean_config_key(monkeypatch) -> None:
    monkeypatch.delenv(PLUGIN_ENV, raising=False)
    res = runner.invoke(app, ["run", "fig2", "--quick", "--set", "max_step=10", "--print-config"])
    assert res.exit_code == 2
    assert res.stderr.splitlines() == ["error: max_step: unknown key (did you mean 'max_steps'?)"]
    res = runner.invoke(app, ["run", "fig3", "--set", "lrs"])  # no `=`: a real key is suggested
    assert res.exit_code == 2 and "e.g. --set max_steps=2000" in res.stderr
    assert "train.steps" not in res.stderr


def test_outcomes_table_has_a_column_per_grid_value() -> None:
    from rich.console import Console

    outcomes = [RunOutcome("aaa", "fig2", "done", 1.0, "p"), RunOutcome("bbb", "fig2", "done", 2.0, "p")]
    values = {"aaa": {"depths": [2], "init.scale": 1e-3}, "bbb": {"depths": [3], "init.scale": 1e-4}}
    console = Console(width=200, record=True)
    console.print(cli._outcomes_table(outcomes, values))
    text = console.export_text()
    header = next(line for line in text.splitlines() if "run id" in line)
    assert header.index("run id") < header.index("depths") < header.index("init.scale") \
        < header.index("status")
    row = next(line for line in text.splitlines() if "bbb" in line)
    assert "[3]" in row and "0.0001" in row
