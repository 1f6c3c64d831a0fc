"""Saving results for the docs: a finished ``deeplinear reproduce`` folder or one run folder, and
the test suite's timing (a part of ``scripts/docs_numbers.py``, which runs it: ``--collect``,
``--collect-run``, ``--time-tests``)."""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import platform
import re
import shutil
import sys
from pathlib import Path
from typing import Any

from _docs_saved import DEFAULT, EXPERIMENTS, RESULTS, ROOT

# --------------------------------------------------------------------------- collect


def _strip_paths(value: Any, base: Path) -> Any:
    """Absolute paths inside ``base`` made relative to it (other values unchanged)."""
    if isinstance(value, dict):
        return {k: _strip_paths(v, base) for k, v in value.items()}
    if isinstance(value, list):
        return [_strip_paths(v, base) for v in value]
    if isinstance(value, str) and os.path.isabs(value):
        p = Path(value)
        return str(p.relative_to(base)) if p.is_relative_to(base) else p.name
    return value


def _load_range(log: Path | None, start: float, end: float) -> list[float]:
    """1-minute load averages logged as ``HH:MM:SS l1 l5 l15 ...`` lines (UTC) within the run."""
    if log is None:
        load = os.getloadavg()[0]
        return [load, load]
    day = dt.datetime.fromtimestamp(start, dt.UTC).date()
    vals = []
    for line in log.read_text().splitlines():
        parts = line.split()
        if len(parts) < 2:
            continue
        t = dt.datetime.combine(day, dt.time.fromisoformat(parts[0]), dt.UTC).timestamp()
        if start <= t <= end:
            vals.append(float(parts[1]))
    return [min(vals), max(vals)] if vals else [math.nan, math.nan]


def collect_run(src: Path, out: Path) -> dict[str, Any]:
    """Save one finished run folder's ``summary.json``, ``status.json`` and metric tables (CSV)
    into ``out`` (absolute paths made relative); returns its status."""
    src = src.resolve()
    status = json.loads((src / "status.json").read_text())
    if status["status"] not in ("done", "partial"):
        raise SystemExit(f"{src}: status {status['status']!r}; not saving it")
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for name in ("summary.json", "status.json"):
        data = _strip_paths(json.loads((src / name).read_text()), src)
        (out / name).write_text(json.dumps(data, indent=1) + "\n")
    for table_file in sorted(src.glob("*.csv")):
        shutil.copyfile(table_file, out / table_file.name)
    return status


def collect(run_dir: Path, dest: Path = DEFAULT, load_log: Path | None = None,
            note: str | None = None) -> None:
    """Copy a finished ``deeplinear reproduce`` output folder's results into ``dest``."""
    run_dir = run_dir.resolve()
    statuses = {exp: collect_run(run_dir / exp, dest / exp) for exp in EXPERIMENTS}
    verify = run_dir / "verify.json"
    shutil.copyfile(verify, dest / "verify.json")
    start = min(s["started"] for s in statuses.values())
    last = max(s["finished"] for s in statuses.values())
    verify_done = verify.stat().st_mtime
    end = max(verify_done, (run_dir / "report.html").stat().st_mtime)
    import jax
    import numpy as np

    from deeplinear._native import cpu_model

    cores = os.cpu_count() or 0
    info = {
        "command": "deeplinear reproduce --out runs/demo",
        "date": dt.datetime.fromtimestamp(start, dt.UTC).strftime("%Y-%m-%d"),
        "started_utc": dt.datetime.fromtimestamp(start, dt.UTC).strftime("%H:%M:%S"),
        "finished_utc": dt.datetime.fromtimestamp(end, dt.UTC).strftime("%H:%M:%S"),
        "wall_seconds": round(end - start, 1),
        "verify_seconds": round(verify_done - last, 1),
        "cores": cores,
        "machine": f"{cores}-core CPU machine ({cpu_model()}, {platform.machine()})",
        "load_1min": _load_range(load_log, start, end),
        "note": note,
        "versions": {"python": platform.python_version(), "jax": jax.__version__,
                     "numpy": np.__version__},
    }
    (dest / "run.json").write_text(json.dumps(info, indent=1) + "\n")


def time_tests(dest: Path = RESULTS / "test-suite.json", note: str | None = None) -> int:
    """Run the default test suite as `make test` does, and save its wall time, its counts and
    the load average seen while it ran (sampled every 10 s)."""
    import subprocess
    import threading
    import time

    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    loads: list[float] = []
    done = threading.Event()

    def sample() -> None:
        while not done.wait(10.0):
            loads.append(os.getloadavg()[0])

    sampler = threading.Thread(target=sample, daemon=True)
    start = time.time()
    sampler.start()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    wall = time.time() - start
    done.set()
    tail = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    from deeplinear._native import cpu_model

    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|deselected|errors?)",
                                                tail)}
    cores = os.cpu_count() or 0
    info = {
        "command": "python -m pytest -q",
        "date": dt.datetime.fromtimestamp(start, dt.UTC).strftime("%Y-%m-%d"),
        "wall_seconds": round(wall, 1),
        "counts": counts,
        "exit_status": proc.returncode,
        "failed_tests": [ln.split(" ", 1)[1].split(" - ")[0] for ln in proc.stdout.splitlines()
                         if ln.startswith(("FAILED ", "ERROR "))],
        "cores": cores,
        "machine": f"{cores}-core CPU machine ({cpu_model()}, {platform.machine()})",
        "load_1min": [min(loads), max(loads)] if loads else [os.getloadavg()[0]] * 2,
        "note": note,
    }
    dest.write_text(json.dumps(info, indent=1) + "\n")
    print(tail)
    return proc.returncode


