"""deeplinear never renames, replaces or deletes a path it did not make (run, sweep, reproduce)."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deeplinear.cli import app
from deeplinear.store import OutputError, check_output

runner = CliRunner()


def _file(tmp: Path) -> Path:
    p = tmp / "precious.txt"
    p.write_bytes(b"user data \x00\x01 keep me")
    return p


def _device(tmp: Path) -> Path:
    p = tmp / "null-like"
    os.mknod(p, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # a character device, like /dev/null
    return p


def _fifo(tmp: Path) -> Path:
    p = tmp / "pipe"
    os.mkfifo(p)
    return p


def _link_to_dir(tmp: Path) -> Path:
    (tmp / "real").mkdir()
    (tmp / "real" / "keep.txt").write_text("keep")
    p = tmp / "link"
    p.symlink_to(tmp / "real")
    return p


def _link_to_empty_dir(tmp: Path) -> Path:
    (tmp / "empty").mkdir()
    p = tmp / "link"
    p.symlink_to(tmp / "empty")
    return p


def _dangling_link(tmp: Path) -> Path:
    p = tmp / "dangling"
    p.symlink_to(tmp / "nowhere")
    return p


def _foreign_dir(tmp: Path) -> Path:
    p = tmp / "photos"
    p.mkdir()
    (p / "img.jpg").write_bytes(b"\xff\xd8 jpeg")
    return p


def _under_file(tmp: Path) -> Path:
    return _file(tmp) / "sub" / "run"


KINDS = {
    "file": (_file, "is a file"),
    "device": (_device, "is a character device"),
    "fifo": (_fifo, "is a FIFO"),
    "symlink to folder": (_link_to_dir, "is a symlink"),
    "symlink to empty folder": (_link_to_empty_dir, "is a symlink"),
    "dangling symlink": (_dangling_link, "is a symlink"),
    "foreign folder": (_foreign_dir, "(did not make|not a run folder)"),
    "under a file": (_under_file, "is not a folder"),
}


def _snapshot(root: Path) -> dict[str, tuple]:
    """Every path under ``root`` with its type, link target and bytes (for regular files)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = os.lstat(p)
            data = p.read_bytes() if stat.S_ISREG(st.st_mode) else None
            target = os.readlink(p) if stat.S_ISLNK(st.st_mode) else None
            out[str(p.relative_to(root))] = (stat.S_IFMT(st.st_mode), st.st_ino, target, data)
    return out


COMMANDS = {
    "run": lambda out: ["run", "fig3", "--quick", "--out", str(out)],
    "reproduce": lambda out: ["reproduce", "--quick", "--only", "fig3", "--no-verify",
                              "--out", str(out)],
    "sweep": lambda out: ["sweep", "GRID", "--workers", "0", "--out", str(out)],
}


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("kind", list(KINDS))
def test_out_that_is_not_ours_is_refused_and_left_intact(tmp_path, kind, command):
    make, reason = KINDS[kind]
    area = tmp_path / "area"
    area.mkdir()
    out = make(area)
    grid = tmp_path / "grid.toml"
    grid.write_text('experiment = "fig3"\npreset = "quick"\n')
    before = _snapshot(area)
    args = [str(grid) if a == "GRID" else a for a in COMMANDS[command](out)]
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and re.search(reason, lines[0]) and len(lines[0]) <= 300, res.stderr
    assert "Traceback" not in res.output
    assert _snapshot(area) == before  # byte for byte, same inodes, nothing added or moved


def test_impossible_locations_are_found_before_work(tmp_path):
    for bad in (Path("/proc/deeplinear-test/run"), Path("/proc/self/status")):
        res = runner.invoke(app, ["run", "fig3", "--quick", "--out", str(bad)])
        assert res.exit_code == 2 and len(res.stderr.strip().splitlines()) == 1, res.output


def test_check_output_allows_missing_empty_and_own_folders(tmp_path):
    assert check_output(tmp_path / "new" / "deeper").is_dir()  # created
    (tmp_path / "empty").mkdir()
    assert check_output(tmp_path / "empty") == tmp_path / "empty"
    run = tmp_path / "run"
    run.mkdir()
    (run / "status.json").write_text('{"run_id": "abc", "experiment": "fig3", "status": "done"}')
    assert check_output(run, run=True) == run
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / ".deeplinear").write_text("{}")
    (sweep / "notes.txt").write_text("x")
    assert check_output(sweep) == sweep
    with pytest.raises(OutputError, match="not a run folder"):
        check_output(sweep, run=True)  # a sweep folder is not a run folder to replace
    # a status.json that is not ours (wrong content) does not make a folder ours
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "status.json").write_text('["not", "ours"]')
    with pytest.raises(OutputError, match="did not make"):
        check_output(fake)


def test_run_into_own_folder_replaces_only_that_run(tmp_path):
    out = tmp_path / "r"
    args = ["run", "norms", "--quick", "--set", "depths=[2]", "--set", "seeds=1",
            "--set", "dxd=0", "--set", "max_steps=200", "--out", str(out)]
    assert runner.invoke(app, args).exit_code == 0
    assert runner.invoke(app, args).exit_code == 0  # same folder again: ours, replaced
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]
