"""The report in a real browser (headless Chromium): no horizontal overflow on screen (1400 px)
or on an A4 page (700 px). Skipped where Chromium is not installed (.ci/run installs it)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from pydantic import BaseModel

from deeplinear.experiments.base import Experiment, Headline, Reported, Results
from deeplinear.report import write_report
from deeplinear.store import execute_run

_spec = importlib.util.spec_from_file_location(
    "check_report", Path(__file__).resolve().parents[1] / "scripts" / "check_report.py")
check_report = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check_report)

pytestmark = pytest.mark.skipif(check_report.chromium() is None, reason="chromium not installed")

LONG = "a_very_long_quantity_name_without_spaces_" * 4


def _run(config, progress) -> Results:
    res = Results(summary={LONG: 1.0, "x": 2.0},
                  tables={"per_seed": [{LONG: i, "value": 1.0 / (i + 1)} for i in range(30)]},
                  arrays={"a": np.ones(2)}, notes=["note " * 60])
    res.headline = [Headline(LONG, 0.5, "description " * 20, "measured on " * 15),
                    Headline("k", (1.0, 2.0, 3.0), "top values", "synthetic", "another size")]
    return res


def _plot(results, out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(14, 3))  # wider than any page: must be scaled down
    ax.plot([1, 2, 3])
    path = out_dir / "wide.png"
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return [path]


class Cfg(BaseModel):
    depth: int = 2


EXP = Experiment("browserfake", "browser test", Cfg, _run, _plot,
                 reported={LONG: Reported(0.4, "where " * 30, 2.0)}, question="Fits the page?")


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("browser") / "runs"
    execute_run(EXP, Cfg(), root / "r1")
    execute_run(EXP, Cfg(depth=3), root / "r2")
    checks = [{"name": "check_" + "x" * 60, "statement": "statement " * 80, "measured": 1e-12,
               "predicted": 0.0, "tolerance": 1e-9, "passed": True,
               "comparison": "|measured - predicted| <= tolerance", "params": {}}]
    (root / "verify.json").write_text(json.dumps(checks))
    return write_report(root).html


@pytest.mark.parametrize("width", [1400, 700])
def test_report_fits_the_page(report, width):
    result = check_report.overflow(report, width)
    assert result["bad"] == [] and result["page"] <= result["width"], result


def test_the_probe_sees_an_overflowing_element(report, tmp_path):
    wide = tmp_path / "wide.html"
    wide.write_text(report.read_text().replace(
        "<body>", "<body><div style='width:3000px'>too wide</div>", 1))
    result = check_report.overflow(wide, 1400)
    assert result["bad"] and result["page"] > 1400
