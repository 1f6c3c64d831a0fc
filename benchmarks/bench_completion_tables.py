"""The completion estimator's defaults on standardized data tables against SoftImpute.

scikit-learn's breast cancer (569 x 30), wine (178 x 13) and diabetes (442 x 10) tables, each
column standardized, 50% of the entries missing at random (three patterns, seeds 0-2). Every
method sees the same split of the observed entries (``completion.validation_split``, the
estimator's own): ``DeepMatrixCompletion()`` with its defaults (depth 3) and with depth 2, and
SoftImpute with ``λ`` chosen on the split (``_impute.select_soft_impute``, on the observed
column means removed and one global scale, as in completion-benchmark). Error: RMSE on the
missing entries / their standard deviation. NumPy's BLAS runs on one thread.

Run: ``.venv/bin/python benchmarks/bench_completion_tables.py`` (a few minutes on 2 cores).
"""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine
from threadpoolctl import threadpool_limits

from deeplinear._impute import select_soft_impute
from deeplinear.completion import DeepMatrixCompletion, validation_split

TABLES = {"breast cancer": load_breast_cancer, "wine": load_wine, "diabetes": load_diabetes}


def errors(M: np.ndarray, seed: int) -> dict[str, float]:
    missing = np.random.default_rng(seed).random(M.shape) < 0.5
    observed = ~missing
    r, c = np.nonzero(observed)
    val = validation_split(r.size, 0.1, np.random.default_rng(seed))
    val_mask = np.zeros(M.shape, bool)
    val_mask[r[val], c[val]] = True
    train_mask = observed & ~val_mask
    mu = np.where(train_mask, M, 0.0).sum(axis=0) / train_mask.sum(axis=0)
    sd = float(np.std((M - mu)[train_mask]))

    def nrmse(P):
        return float(np.sqrt(np.mean((P - M)[missing] ** 2)) / np.std(M[missing]))

    out = {"softimpute": nrmse(mu + sd * select_soft_impute((M - mu) / sd, train_mask,
                                                             val_mask).fit.Z)}
    X = np.where(observed, M, np.nan)
    out["depth3 (default)"] = nrmse(DeepMatrixCompletion(random_state=seed).fit(X).completion())
    out["depth2"] = nrmse(DeepMatrixCompletion(depth=2, random_state=seed).fit(X).completion())
    return out


def main() -> None:
    print("| table | seed | SoftImpute | depth 3 (default) | ratio | depth 2 | ratio |")
    print("|---|---|---|---|---|---|---|")
    with threadpool_limits(limits=1, user_api="blas"):
        for name, load in TABLES.items():
            X = load().data
            M = (X - X.mean(axis=0)) / X.std(axis=0)
            for seed in (0, 1, 2):
                e = errors(M, seed)
                s = e["softimpute"]
                print(f"| {name} | {seed} | {s:.3f} | {e['depth3 (default)']:.3f} | "
                      f"{e['depth3 (default)'] / s:.3f} | {e['depth2']:.3f} | "
                      f"{e['depth2'] / s:.3f} |", flush=True)


if __name__ == "__main__":
    main()
