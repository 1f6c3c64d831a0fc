"""The summary keys that readers depend on, named once.

An experiment's ``summary.json`` maps keys to measured values; the report shows them all, and
``scripts/docs_numbers.py`` quotes some of them in the docs. Each key a reader builds is a
template here (``str.format`` fields in braces), used by the experiment that writes it and by
every reader, so a renamed key breaks loudly instead of leaving a reader with nothing::

    summary_keys.RECON_ERROR_AT_M.format(method="depth3", m=2000)  # "recon_error_depth3_m2000"
"""

from __future__ import annotations

__all__ = [
    "ABS_W11_AT_LOSS",
    "CROSSING",
    "E2E_EXCESS_RATIO",
    "FINAL_EXCESS",
    "FINAL_LOSS_AT_DEPTH",
    "FINAL_TOP5_DEPTH3",
    "GF_DEPTH3PLUS_SIGN_FLIPS",
    "ITERS_TO",
    "MOVIELENS",
    "MOVIELENS_DEPTH3_CPU_OVER_SVD",
    "MOVIELENS_FOLDS",
    "NUCLEAR_NORM_AT_M",
    "RECON_ERROR_AT_DEPTH",
    "RECON_ERROR_AT_M",
    "RISE_STEP",
    "SPEEDUP",
]

# Figure 2 and tensor completion: one value per method and number of observations m
RECON_ERROR_AT_M = "recon_error_{method}_m{m}"
"""Mean reconstruction error of ``method`` (``nuclear``, ``depth2``, ...) from ``m`` observations."""
NUCLEAR_NORM_AT_M = "nuclear_norm_{method}_m{m}"
"""Mean nuclear norm of the solution of ``method`` from ``m`` observations."""

# Figure 3: one value per problem (completion, sensing) and depth
RECON_ERROR_AT_DEPTH = "recon_error_{problem}_depth{depth}"
"""Reconstruction error at the end of GD."""
FINAL_LOSS_AT_DEPTH = "final_loss_{problem}_depth{depth}"
"""Training loss at the end of GD."""
RISE_STEP = "rise_step_{problem}_depth{depth}_sigma{r}"
"""The step at which the ``r``-th singular value (1-based) first reaches half its final value."""
FINAL_TOP5_DEPTH3 = "final_top5_depth3"
"""The top five singular values at the end of depth-3 GD on completion."""

# the 2x2 norms experiment
ABS_W11_AT_LOSS = "abs_w11_at_loss_{level}"
"""|W11| when the loss first reaches ``level`` (``1e-2`` in the summary, ``1e-02`` in its run
table)."""
GF_DEPTH3PLUS_SIGN_FLIPS = "gf_depth3plus_sign_flips"
"""Sign changes of det(W) along gradient flow at depth >= 3."""

# Figure 1 (regression and CNN)
SPEEDUP = "p{p}_speedup_depth{depth}"
"""Iterations of the linear model / of depth ``depth`` to the lowest excess loss both reach (l_p)."""
CROSSING = "p{p}_crossing_depth{depth}_vs_{other}"
"""The iteration from which the depth-``depth`` curve stays below ``other``'s."""
E2E_EXCESS_RATIO = "p{p}_e2e_depth{depth}_final_excess_ratio"
"""Final excess loss of the end-to-end rule / of GD on the network."""
FINAL_EXCESS = "p{p}_{method}_final_excess"
"""Final excess loss of ``method`` on l_p regression."""
ITERS_TO = "iters_to_{level:g}"
"""A run table's column: the first iteration whose loss (excess loss) is at most ``level``."""

# completion-benchmark on MovieLens-100K
MOVIELENS = "movielens_{metric}_{method}"
"""Mean over the folds of ``metric`` (``rmse``, ``mae``, ``seconds``, ``cpu_seconds``) of
``method`` (``baseline``, ``depth3``, ``svd``, ...)."""
MOVIELENS_FOLDS = "movielens_folds"
"""How many of the five folds were fitted."""
MOVIELENS_DEPTH3_CPU_OVER_SVD = "movielens_depth3_cpu_over_svd"
"""Depth 3's CPU time per fold over Surprise's SVD's (same folds, same process)."""
