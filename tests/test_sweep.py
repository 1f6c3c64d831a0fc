"""Sweeps: grid expansion, seeds, resume, process pool, Dask LocalCluster, kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from deeplinear.config import ConfigError
from deeplinear.experiments.base import REGISTRY
from deeplinear.store import SweepIndex, read_status
from deeplinear.sweep import PLUGIN_ENV, expand, load_grid, run_sweep

# A fake experiment module, written to a temporary folder so that spawned workers and CLI
# subprocesses can import it (it registers itself like the real experiment modules do).
FAKE_MODULE = "dl_sweep_fakes"
FAKE_SOURCE = textwrap.dedent('''
    import os, time
    from pathlib import Path
    import numpy as np
    from pydantic import BaseModel, ConfigDict, Field
    from deeplinear.experiments.base import REGISTRY, Experiment, Results, register

    class Cfg(BaseModel):
        model_config = ConfigDict(extra="forbid")
        depth: int = Field(1, ge=1)
        seed: int = 0
        sleep: float = Field(0.0, ge=0)
        fail: bool = False

    def run(config, progress):
        time.sleep(config.sleep)
        if config.fail:
            raise RuntimeError("asked to fail")
        rng = np.random.default_rng(config.seed)
        return Results(arrays={"x": rng.normal(size=3)},
                       summary={"depth": config.depth, "seed": config.seed, "pid": os.getpid()})

    def plot(results, out_dir):
        p = Path(out_dir) / "x.png"
        p.write_bytes(b"png")
        return [p]

    for exp in (Experiment("sweepfake", "sweep test", Cfg, run, plot),):
        if exp.name not in REGISTRY:
            register(exp)
''')


@pytest.fixture
def fakes(tmp_path_factory, monkeypatch):
    """Register the fake experiments here, and make them importable by workers/subprocesses."""
    folder = tmp_path_factory.mktemp("fakes")
    (folder / f"{FAKE_MODULE}.py").write_text(FAKE_SOURCE)
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(folder), *sys.path]))
    monkeypatch.setenv(PLUGIN_ENV, FAKE_MODULE)
    saved = dict(REGISTRY)
    sys.modules.pop(FAKE_MODULE, None)
    __import__(FAKE_MODULE)
    yield folder
    REGISTRY.clear()
    REGISTRY.update(saved)
    sys.modules.pop(FAKE_MODULE, None)


def _grid(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "grid.toml"
    path.write_text(textwrap.dedent(text))
    return path


def test_expand_grid_times_seeds(fakes, tmp_path) -> None:
    base = tmp_path / "base.toml"
    base.write_text("sleep = 0.0\n")
    grid = load_grid(_grid(tmp_path, """
        experiment = "sweepfake"
        configs = ["base.toml"]
        seeds = [0, 1, 2]
        [set]
        fail = false
        [grid]
        depth = [1, 2, 3, 1]
    """))
    specs = expand(grid)
    # depth 1 appears twice in the grid: identical configs collapse onto one run id
    assert len(specs) == 3 * 3
    assert {(s.config["depth"], s.config["seed"]) for s in specs} == {
        (d, s) for d in (1, 2, 3) for s in (0, 1, 2)}
    assert len({s.run_id for s in specs}) == 9
    assert all(s.module == FAKE_MODULE for s in specs)
    assert len(expand(grid, sets=["depth=2"])) == 9  # --set is overridden by the grid point


@pytest.mark.parametrize("name", ["fig1-regression", "fig1-cnn", "fig2", "fig3", "norms"])
def test_grid_seeds_work_for_every_experiment(tmp_path, name) -> None:
    """One seed convention: every experiment takes a base seed, a grid's seeds make one run each."""
    grid = load_grid(_grid(tmp_path, f'experiment = "{name}"\npreset = "quick"\nseeds = [0, 7]\n'))
    specs = expand(grid)
    assert [s.config["seed"] for s in specs] == [0, 7] and len({s.run_id for s in specs}) == 2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('experiment = "sweepfake"\nbogus = 1\n', "bogus: unknown key"),
        ("[grid]\ndepth = [1]\n", "experiment: required"),
        ('experiment = "sweepfake"\n[grid]\ndepth = 2\n', "grid.depth: must be a non-empty list"),
        ('experiment = "sweepfake"\nseeds = [1.5]\n', "seeds: must be a non-empty list"),
        ('experiment = "nope"\n', "'nope' is not registered"),
        ('experiment = "sweepfake"\n[grid]\ndepth = [0]\n', "depth: Input should be greater"),
    ],
)
def test_bad_grid(fakes, tmp_path, text, message) -> None:
    with pytest.raises(ConfigError, match=message):
        expand(load_grid(_grid(tmp_path, text)))


def test_seeds_need_a_seed_field(fakes, tmp_path, monkeypatch) -> None:
    from pydantic import BaseModel, ConfigDict

    from deeplinear.experiments.base import Experiment, Results

    class NoSeed(BaseModel):
        model_config = ConfigDict(extra="forbid")
        depth: int = 1
        seeds: int = 3  # a count of replicas, not a list: cannot take a grid's seeds

    exp = Experiment("noseed", "", NoSeed, lambda c, p: Results(), lambda r, d: [])
    monkeypatch.setitem(REGISTRY, "noseed", exp)
    grid = load_grid(_grid(tmp_path, 'experiment = "noseed"\nseeds = [1, 2]\n'))
    with pytest.raises(ConfigError, match="has no 'seed' field"):
        expand(grid)


def test_resume_runs_only_missing_and_retries_failed(fakes, tmp_path) -> None:
    grid = load_grid(_grid(tmp_path, """
        experiment = "sweepfake"
        seeds = [0, 1]
        [grid]
        depth = [1, 2]
    """))
    specs = expand(grid)
    out = tmp_path / "sw"
    first = run_sweep(specs, out, workers=0)
    assert first.skipped == 0 and first.counts["done"] == 4
    # second call: nothing to do
    again = run_sweep(specs, out, workers=0)
    assert again.skipped == 4 and again.outcomes == []
    # lose one folder and fake a stale 'running' row: exactly that run is redone
    import shutil

    shutil.rmtree(out / "runs" / specs[2].run_id)
    with SweepIndex(out / "index.sqlite") as idx:
        idx.set_status(specs[2].run_id, "running")
    third = run_sweep(specs, out, workers=0)
    assert [o.run_id for o in third.outcomes] == [specs[2].run_id]
    # a failing run is recorded as failed and retried on the next call
    bad = expand(grid, sets=["fail=true"])[:1]
    r = run_sweep(bad, out, workers=0)
    assert r.outcomes[0].status == "failed" and "asked to fail" in r.outcomes[0].error
    assert run_sweep(bad, out, workers=0).outcomes[0].status == "failed"
    with SweepIndex(out / "index.sqlite") as idx:
        row = {x["run_id"]: x for x in idx.rows()}[bad[0].run_id]
        assert row["status"] == "failed" and row["attempts"] == 2


def test_local_process_pool(fakes, tmp_path) -> None:
    """Runs land in spawned worker processes (not this one) and all finish."""
    grid = load_grid(_grid(tmp_path, 'experiment = "sweepfake"\nseeds = [0, 1, 2]\n'))
    specs = expand(grid)
    result = run_sweep(specs, tmp_path / "sw", workers=2)
    assert sorted(o.status for o in result.outcomes) == ["done"] * 3
    pids = {read_status(tmp_path / "sw" / "runs" / s.run_id)["pid"] for s in specs}
    assert os.getpid() not in pids and 1 <= len(pids) <= 2


def test_dask_local_cluster(fakes, tmp_path) -> None:
    distributed = pytest.importorskip("distributed")
    grid = load_grid(_grid(tmp_path, """
        experiment = "sweepfake"
        seeds = [0, 1]
        [grid]
        depth = [1, 2]
    """))
    specs = expand(grid)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  protocol="tcp://", host="127.0.0.1",
                                  dashboard_address=None) as cluster:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        result = run_sweep(specs, tmp_path / "sw", scheduler=cluster.scheduler_address)
        assert sorted(o.status for o in result.outcomes) == ["done"] * 4
        # resuming through Dask submits nothing
        assert run_sweep(specs, tmp_path / "sw", scheduler=cluster.scheduler_address).skipped == 4
    with SweepIndex(tmp_path / "sw" / "index.sqlite") as idx:
        assert idx.counts()["done"] == 4


def _finished(runs: Path) -> dict[str, float]:
    out = {}
    for d in runs.iterdir() if runs.exists() else []:
        st = read_status(d)
        if st and st["status"] == "done":
            out[d.name] = st["finished"]
    return out


def test_kill_9_and_resume(fakes, tmp_path) -> None:
    """kill -9 the whole sweep (driver and workers) mid-way; the same command finishes the rest,
    never re-running finished runs and never leaving a half-written run marked done."""
    grid = _grid(tmp_path, """
        experiment = "sweepfake"
        seeds = [0, 1, 2, 3, 4, 5]
        [set]
        sleep = 0.4
    """)
    out = tmp_path / "sw"
    cmd = [sys.executable, "-m", "deeplinear.cli", "sweep", str(grid), "--out", str(out),
           "--workers", "1"]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    runs = out / "runs"
    deadline = time.time() + 120
    while len(_finished(runs)) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = _finished(runs)
    assert 2 <= len(before) < 6, "the kill should land mid-sweep"
    # every folder that looks like a run is a complete one; the rest are partial leftovers
    for d in runs.iterdir():
        if ".partial-" not in d.name:
            assert read_status(d)["status"] == "done"
            assert (d / "summary.json").exists() and (d / "arrays.npz").exists()
    with SweepIndex(out / "index.sqlite") as idx:
        assert sum(idx.counts().values()) == 6
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr
    after = _finished(runs)
    assert len(after) == 6
    assert all(after[k] == v for k, v in before.items())  # finished runs were not redone
    assert not [d for d in runs.iterdir() if ".partial-" in d.name]
    with SweepIndex(out / "index.sqlite") as idx:
        assert idx.counts()["done"] == 6


def test_cli_sweep_on_dask_and_unreachable_scheduler(fakes, tmp_path, monkeypatch) -> None:
    from typer.testing import CliRunner

    import deeplinear.sweep as sweep_mod
    from deeplinear.cli import app

    distributed = pytest.importorskip("distributed")
    grid = _grid(tmp_path, 'experiment = "sweepfake"\nseeds = [0, 1]\n')
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  protocol="tcp://", host="127.0.0.1",
                                  dashboard_address=None) as cluster:
        res = CliRunner().invoke(app, ["sweep", str(grid), "--out", str(tmp_path / "sw"),
                                       "--scheduler", cluster.scheduler_address])
    assert res.exit_code == 0, res.output
    assert "2 runs (done 2)" in res.stdout
    monkeypatch.setattr(sweep_mod, "DASK_CONNECT_TIMEOUT", "1s")
    res = CliRunner().invoke(app, ["sweep", str(grid), "--out", str(tmp_path / "sw2"),
                                   "--scheduler", "tcp://127.0.0.1:9"])
    assert res.exit_code == 2 and "--scheduler tcp://127.0.0.1:9: cannot connect" in res.stderr


def test_varying_values_are_what_tells_runs_apart() -> None:
    from deeplinear.sweep import varying_values

    configs = {"a": {"depth": 1, "seed": 0, "init": {"scale": 1e-3, "kind": "x"}, "ds": [2]},
               "b": {"depth": 1, "seed": 1, "init": {"scale": 1e-4, "kind": "x"}, "ds": [3]}}
    assert varying_values(configs) == {"a": {"seed": 0, "init.scale": 1e-3, "ds": [2]},
                                       "b": {"seed": 1, "init.scale": 1e-4, "ds": [3]}}
    assert varying_values({"a": configs["a"]}) == {"a": {}}
    assert varying_values({}) == {}


def test_cli_sweep_table_has_a_column_per_grid_value(fakes, tmp_path, monkeypatch) -> None:
    import re

    from rich.console import Console
    from typer.testing import CliRunner

    import deeplinear.cli as cli

    monkeypatch.setattr(cli, "out_console", Console(width=200))
    path = _grid(tmp_path, 'experiment = "sweepfake"\nseeds = [0, 1]\n[grid]\ndepth = [1, 3]\n')
    res = CliRunner().invoke(cli.app, ["sweep", str(path), "--out", str(tmp_path / "sw"),
                                       "--workers", "0"])
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()

    def cells(line: str) -> list[str]:
        return [c.strip() for c in re.split("[│┃]", line)[1:-1]]

    header = cells(next(line for line in lines if "run id" in line))
    assert header == ["experiment", "run id", "depth", "seed", "status", "seconds", "note"]
    for spec in expand(load_grid(path)):
        row = cells(next(line for line in lines if spec.run_id in line))
        assert row[2:4] == [str(spec.config["depth"]), str(spec.config["seed"])]


def test_grid_experiment_name_did_you_mean(fakes, tmp_path) -> None:
    grid = load_grid(_grid(tmp_path, 'experiment = "SweepFake"\n'))
    with pytest.raises(ConfigError, match=r"^experiment 'SweepFake' is not registered; "
                                          r"did you mean 'sweepfake'\? \(see `deeplinear list`\)$"):
        expand(grid)
