"""Run folders (atomic, status last), result round trip, failure/divergence, the SQLite index."""

from __future__ import annotations

import json
import sqlite3
import tomllib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, Field

from deeplinear.config import run_id
from deeplinear.experiments.base import Experiment, Headline, Reported, Results
from deeplinear.store import (
    PARTIAL,
    OutputError,
    SweepIndex,
    atomic_write,
    clean_partials,
    execute_run,
    is_finished,
    load_results,
    read_status,
    read_table,
    table_csv,
)


class Cfg(BaseModel):
    model_config = ConfigDict(extra="forbid")
    steps: int = Field(5, ge=1)
    mode: str = "ok"  # ok | fail | diverge | kill-in-plot


class Killed(BaseException):
    """Stands in for a kill: not an Exception, so nothing catches it."""


def _run(config: Cfg, progress) -> Results:
    bar = progress.task("steps", config.steps)
    for _ in range(config.steps):
        bar.advance()
    if config.mode == "fail":
        raise RuntimeError("boom\nsecond line")
    loss = np.exp(-np.arange(config.steps, dtype=float))
    summary = {"final_loss": float(loss[-1]), "steps": config.steps, "label": "x"}
    res = Results(tables={"trajectory": [{"step": i, "loss": v} for i, v in enumerate(loss)],
                          "other": [{"a": 1, "b": "t"}, {"a": 2, "c": 0.5}]},
                  arrays={"loss": loss, "mat": np.eye(3)}, summary=summary, notes=["n1"],
                  headline=[Headline("final_loss", summary["final_loss"], "loss at the end",
                                     "fake")])
    if config.mode in ("diverge", "partial"):
        res.subruns = 2
        res.diverged("seed 0", 17)
        if config.mode == "diverge":
            res.diverged("seed 1", None)
        res.summary["final_loss"] = float("nan")
        res.arrays["loss"] = np.where(np.arange(config.steps) > 2, np.inf, loss)
        res.tables["trajectory"][-1]["loss"] = float("nan")
    return res


def _plot(results: Results, out_dir: Path) -> list[Path]:
    if results.summary.get("label") == "kill":
        raise Killed
    paths = [out_dir / "loss.png", out_dir / "loss.pdf"]
    for p in paths:
        p.write_bytes(b"\x89PNG fake" if p.suffix == ".png" else b"%PDF fake")
    return paths


EXP = Experiment("storefake", "store test", Cfg, _run, _plot,
                 reported={"final_loss": Reported(0.02, "notes", 2.0)},
                 question="Does the store keep everything?")


def test_run_folder_layout_and_roundtrip(tmp_path) -> None:
    cfg = Cfg(steps=4)
    out = execute_run(EXP, cfg, tmp_path / "r")
    run_dir = Path(out.path)
    assert out.status == "done" and out.run_id == run_id("storefake", cfg)
    names = {p.name for p in run_dir.iterdir()}
    assert names == {"config.toml", "trajectory.csv", "other.csv", "arrays.npz", "summary.json",
                     "figures", "status.json"}
    assert sorted(p.name for p in (run_dir / "figures").iterdir()) == ["loss.pdf", "loss.png"]
    assert tomllib.loads((run_dir / "config.toml").read_text()) == {"steps": 4, "mode": "ok"}
    status = read_status(run_dir)
    assert status["status"] == "done" and status["figures"] == ["figures/loss.png",
                                                                "figures/loss.pdf"]
    res = load_results(run_dir)
    np.testing.assert_array_equal(res.arrays["loss"], np.exp(-np.arange(4.0)))
    np.testing.assert_array_equal(res.arrays["mat"], np.eye(3))
    assert res.tables["trajectory"][3] == {"step": 3, "loss": np.exp(-3.0)}
    assert res.tables["other"] == [{"a": 1, "b": "t", "c": None}, {"a": 2, "b": None, "c": 0.5}]
    assert res.summary["steps"] == 4 and res.notes == ["n1"]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["reported"] == {"final_loss": {"value": 0.02, "where": "notes",
                                                  "factor": 2.0}}
    assert summary["question"] == "Does the store keep everything?"
    assert summary["headline"] == [{"key": "final_loss", "value": res.summary["final_loss"],
                                    "description": "loss at the end", "measured_on": "fake",
                                    "not_comparable": None}]
    assert res.headline[0].key == "final_loss"  # load_results rebuilds the headline too
    assert not [p for p in tmp_path.iterdir() if PARTIAL in p.name]


def test_finished_run_is_skipped_unless_replace(tmp_path) -> None:
    first = execute_run(EXP, Cfg(), tmp_path / "r")
    again = execute_run(EXP, Cfg(), tmp_path / "r")
    assert again.skipped and again.status == "done" and not first.skipped
    before = read_status(tmp_path / "r")["finished"]
    replaced = execute_run(EXP, Cfg(), tmp_path / "r", replace=True)
    assert not replaced.skipped and read_status(tmp_path / "r")["finished"] > before
    # a different config in the same folder is a different run: it replaces the old one
    other = execute_run(EXP, Cfg(steps=6), tmp_path / "r")
    assert not other.skipped and read_status(tmp_path / "r")["config"]["steps"] == 6
    assert not is_finished(tmp_path / "r", first.run_id)


def test_failed_run_records_error_and_is_not_finished(tmp_path) -> None:
    out = execute_run(EXP, Cfg(mode="fail"), tmp_path / "r")
    assert out.status == "failed" and out.error == "RuntimeError: boom"
    assert "Traceback" in (tmp_path / "r" / "error.txt").read_text()
    assert not is_finished(tmp_path / "r")
    assert not (tmp_path / "r" / "summary.json").exists()


@pytest.mark.parametrize("mode", ["diverge", "partial"])
def test_diverged_run_has_its_own_status_and_stores_no_nan(tmp_path, mode) -> None:
    out = execute_run(EXP, Cfg(mode=mode), tmp_path / "r")
    want = {"diverge": "diverged", "partial": "partial"}[mode]
    status = read_status(tmp_path / "r")
    assert out.status == want and status["status"] == want
    assert status["divergences"][0] == {"run": "seed 0", "step": 17}
    assert out.divergences[0] == "seed 0: diverged at step 17"
    for name in ("status.json", "summary.json", "trajectory.csv"):
        text = (tmp_path / "r" / name).read_text().lower()
        assert "nan" not in text and "inf" not in text, name
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["summary"]["final_loss"] is None
    with np.load(tmp_path / "r" / "arrays.npz") as npz:
        assert all(np.all(np.isfinite(npz[k])) for k in npz.files if npz[k].dtype.kind == "f")
        assert npz["loss.missing"].tolist() == [False] * 3 + [True] * 2
    res = load_results(tmp_path / "r")  # missing entries come back as NaN in memory
    assert np.isnan(res.arrays["loss"][3:]).all() and np.isfinite(res.arrays["loss"][:3]).all()
    assert res.tables["trajectory"][-1]["loss"] is None


def test_kill_while_writing_leaves_no_run(tmp_path, monkeypatch) -> None:
    """A kill during the writing phase (here: inside plot) leaves only a partial folder, which is
    never taken for a run; the next attempt runs again and cleans up."""
    exp = Experiment("storefake", "x", Cfg, lambda c, p: Results(summary={"label": "kill"}),
                     _plot)
    with pytest.raises(Killed):
        execute_run(exp, Cfg(), tmp_path / "r")
    assert not (tmp_path / "r").exists()
    partials = [p for p in tmp_path.iterdir() if PARTIAL in p.name]
    assert len(partials) == 1 and read_status(partials[0])["status"] == "running"
    (tmp_path / ".x.tmp-0123abcd").write_text("killed atomic write")
    assert execute_run(EXP, Cfg(), tmp_path / "r").status == "done"  # cleans its own leftovers
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]
    partial = tmp_path / f"r{PARTIAL}deadbeef"
    partial.mkdir()
    (tmp_path / f"user{PARTIAL}notours").mkdir()  # not our pattern: kept
    assert clean_partials(tmp_path) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r", f"user{PARTIAL}notours"]


def test_atomic_write_leaves_no_temp(tmp_path) -> None:
    atomic_write(tmp_path / "a.txt", "one")
    atomic_write(tmp_path / "a.txt", b"two")
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]
    assert (tmp_path / "a.txt").read_text() == "two"


def test_table_csv_union_header() -> None:
    text = table_csv([{"a": 1}, {"b": np.float64(2.5)}, {"a": float("nan")}])
    assert text.splitlines() == ["a,b", "1,", ",2.5", ","]  # NaN is never written: empty cell


def test_sweep_index(tmp_path) -> None:
    path = tmp_path / "index.sqlite"
    with SweepIndex(path) as idx:
        idx.add("r1", "e", {"x": 1})
        idx.add("r2", "e", {"x": 2})
        idx.add("r1", "e", {"x": 1})  # idempotent
        idx.set_status("r1", "running", submitted=1.0)
        idx.set_status("r1", "done", finished=2.0, seconds=1.0)
        idx.set_status("r2", "running")
        with pytest.raises(ValueError, match="status must be one of"):
            idx.set_status("r2", "finished")
        with pytest.raises(ValueError, match="unknown index fields"):
            idx.set_status("r2", "done", bogus=1)
        assert idx.counts() == {"pending": 0, "running": 1, "done": 1, "partial": 0,
                                "diverged": 0, "failed": 0}
    # a second connection (as after a restart) sees the committed rows; journal is WAL
    with SweepIndex(path) as idx:
        rows = {r["run_id"]: r for r in idx.rows()}
        assert rows["r1"]["status"] == "done" and rows["r1"]["attempts"] == 1
        assert json.loads(rows["r2"]["config"]) == {"x": 2}
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with pytest.raises(sqlite3.IntegrityError):
        con.execute("UPDATE runs SET status = 'weird' WHERE run_id = 'r1'")
    con.close()


def test_sweep_index_of_an_older_version_is_migrated(tmp_path) -> None:
    """Indexes written before 'partial' existed keep their rows and accept the new status."""
    path = tmp_path / "index.sqlite"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE runs (run_id TEXT PRIMARY KEY, experiment TEXT NOT NULL, config TEXT"
                " NOT NULL, status TEXT NOT NULL CHECK (status IN ('pending','running','done',"
                "'failed','diverged')), attempts INTEGER NOT NULL DEFAULT 0, submitted REAL,"
                " finished REAL, seconds REAL, error TEXT)")
    con.execute("INSERT INTO runs (run_id, experiment, config, status) VALUES ('r1','e','{}','done')")
    con.commit()
    con.close()
    with SweepIndex(path) as idx:
        idx.add("r2", "e", {})
        idx.set_status("r2", "partial")
        assert {r["run_id"]: r["status"] for r in idx.rows()} == {"r1": "done", "r2": "partial"}


def test_a_damaged_sweep_index_is_one_clear_error(tmp_path) -> None:
    path = tmp_path / "index.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(OutputError, match="index.sqlite.*move it away"):
        SweepIndex(path)


@given(st.lists(st.dictionaries(st.sampled_from(["step", "loss", "sigma_1"]),
                                st.one_of(st.integers(-(10**12), 10**12),
                                          st.floats(allow_nan=False, allow_infinity=False)),
                                min_size=1), min_size=1, max_size=20))
def test_csv_tables_roundtrip_exactly(rows) -> None:
    """Numbers written to a metrics CSV come back with their exact value and type (floats via
    repr), missing cells as None."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "t.csv"
        path.write_text(table_csv(rows))
        back = read_table(path)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    for row, got in zip(rows, back, strict=True):
        assert list(got) == keys
        for k in keys:
            if k in row:
                assert got[k] == row[k]
                # an integral float such as 2.0 is written "2.0" and must stay a float
                assert type(got[k]) is type(row[k])
            else:
                assert got[k] is None
