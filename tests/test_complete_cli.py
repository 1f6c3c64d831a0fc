"""`deeplinear complete`: a file round trip for each format, the --out rules, what it prints."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io
import scipy.sparse as sp
from typer.testing import CliRunner

from deeplinear.cli import app
from deeplinear.completion import read_matrix, write_matrix

runner = CliRunner()
ARGS = ["--max-steps", "300", "--seed", "0", "--seeds", "1"]


def _matrix(seed=0, shape=(14, 9), rank=2, observed=0.6):
    rng = np.random.default_rng(seed)
    M = np.round(rng.standard_normal((shape[0], rank)) @ rng.standard_normal((rank, shape[1])), 3)
    missing = rng.random(shape) > observed
    missing[:, 0] = False  # every row observed
    missing[0, :] = False  # every column observed
    return M, missing


def _write_input(path, M, missing):
    X = np.where(missing, np.nan, M)
    if path.suffix == ".csv":
        text = "\n".join(",".join("" if np.isnan(v) else repr(float(v)) for v in row) for row in X)
        path.write_text(text + "\n")
    elif path.suffix == ".npy":
        np.save(path, X)
    elif path.suffix == ".npz":
        np.savez(path, X=X)
    else:  # coordinate MatrixMarket: the stored entries are the observations
        r, c = np.nonzero(~missing)
        scipy.io.mmwrite(path, sp.coo_array((M[r, c], (r, c)), shape=M.shape), precision=17)


@pytest.mark.parametrize("fmt", [".csv", ".npy", ".npz", ".mtx"])
def test_round_trip_keeps_observed_entries_and_fills_the_rest(tmp_path, fmt):
    # 20 x 12: ~14 validation entries (at 14 x 9, ~7 of them chose a step at random for some seeds)
    M, missing = _matrix(shape=(20, 12))
    src, out = tmp_path / f"in{fmt}", tmp_path / f"out{fmt}"
    _write_input(src, M, missing)
    res = runner.invoke(app, ["complete", str(src), "--out", str(out), *ARGS])
    assert res.exit_code == 0, res.output
    assert "validation RMSE:" in res.stdout and "effective rank:" in res.stdout
    got = np.asarray(read_matrix(out) if fmt != ".mtx" else scipy.io.mmread(out))
    assert got.shape == M.shape and np.all(np.isfinite(got))
    np.testing.assert_allclose(got[~missing], M[~missing], rtol=1e-12)
    assert np.sqrt(np.mean((got - M)[missing] ** 2)) < np.std(M)  # better than the mean


def test_formats_give_the_same_completion(tmp_path):
    M, missing = _matrix(1)
    outs = []
    for fmt in (".csv", ".mtx"):
        _write_input(tmp_path / f"in{fmt}", M, missing)
        out = tmp_path / f"out{fmt}.npy"
        assert runner.invoke(app, ["complete", str(tmp_path / f"in{fmt}"), "--out", str(out),
                                   *ARGS]).exit_code == 0
        outs.append(np.load(out))
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-6, atol=1e-6)


def test_an_existing_out_file_is_never_replaced(tmp_path):
    M, missing = _matrix(2)
    src = tmp_path / "in.npy"
    _write_input(src, M, missing)
    out = tmp_path / "out.csv"
    out.write_text("mine\n")
    res = runner.invoke(app, ["complete", str(src), "--out", str(out), *ARGS])
    assert res.exit_code == 2 and res.stderr.startswith("error: --out")
    assert out.read_text() == "mine\n"
    link = tmp_path / "link.npy"
    link.symlink_to(tmp_path / "nowhere.npy")
    res = runner.invoke(app, ["complete", str(src), "--out", str(link), *ARGS])
    assert res.exit_code == 2 and "symlink" in res.stderr and not (tmp_path / "nowhere.npy").exists()


def test_write_and_read_are_exact(tmp_path):
    X = np.random.default_rng(0).standard_normal((4, 3)) * 1e5
    for fmt in (".csv", ".npy", ".npz", ".mtx"):
        path = tmp_path / f"x{fmt}"
        path.write_bytes(write_matrix(path, X))
        np.testing.assert_array_equal(np.asarray(read_matrix(path)), X)


def test_csv_missing_cells(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("1,,3\nNaN,5,nan\n\n7,8,NA\n")
    X = read_matrix(path)
    np.testing.assert_array_equal(np.isnan(X), [[0, 1, 0], [1, 0, 1], [0, 0, 1]])


def test_tiny_matrix_says_why_there_is_no_validation_error(tmp_path):
    src, out = tmp_path / "a.csv", tmp_path / "b.csv"
    src.write_text("1,2,\n,4,5\n7,,9\n")  # 6 observed: 10% of them rounds down to none
    res = runner.invoke(app, ["complete", str(src), "--out", str(out), "--max-steps", "50"])
    assert res.exit_code == 0, res.output
    assert "validation RMSE: - (too few observations to hold any out)" in res.stdout
    assert "nan" not in res.stdout.lower()
