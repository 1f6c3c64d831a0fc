"""Diverged training is reported honestly: status, exit code, and no NaN/inf in any stored file."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from deeplinear.cli import app

runner = CliRunner()

CASES = {
    # every GD run diverges: no valid result at all
    "fig3": (["--quick", "--set", "lrs=[1e6,1e6,1e6]", "--set", "problems=['completion']"],
             "diverged"),
    "fig2": (["--quick", "--set", "optimizer='gd'", "--set", "lr=1e6",
              "--set", "observations=[200]"], "diverged"),
    # GD diverges, the gradient-flow runs are valid: a partial result
    "norms": (["--quick", "--set", "lr=10.0", "--set", "dxd=0"], "partial"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_diverged_runs_are_flagged_and_store_no_nan(name, tmp_path):
    args, want = CASES[name]
    out = tmp_path / "run"
    res = runner.invoke(app, ["run", name, *args, "--out", str(out)])
    assert res.exit_code == 1, res.output
    assert f"{name} {want}" in res.stderr and "diverged at step" in res.stderr
    status = json.loads((out / "status.json").read_text())
    assert status["status"] == want and status["divergences"]
    for path in out.rglob("*.json"):  # strict JSON: NaN/Infinity literals would not parse
        json.loads(path.read_text(), parse_constant=lambda c, p=path: pytest.fail(f"{c} in {p}"))
    for path in out.rglob("*.csv"):
        for row in csv.reader(path.read_text().splitlines()):
            assert not {c.strip().lower() for c in row} & {"nan", "inf", "-inf"}, path
    with np.load(out / "arrays.npz") as npz:
        for key in npz.files:
            if npz[key].dtype.kind == "f":
                assert np.all(np.isfinite(npz[key])), key
    summary = json.loads((out / "summary.json").read_text())["summary"]
    if name == "fig3":  # nothing is derived from a diverged run
        assert not [k for k in summary if k.startswith("rise_step")]
        assert summary["recon_error_completion_depth1"] is None
