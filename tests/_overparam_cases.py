"""One specification of ``overparameterize`` / ``collapse``, run against both backends
(tests/test_overparam.py: equinox; tests/test_torch.py: PyTorch): the same cases, the same
tolerances, the same expected shapes and parameter counts, the same end-to-end check (§2.6)."""

from __future__ import annotations

import numpy as np

# float64 throughout: exact factorizations (SVD-based balanced factors, zero-padded identities)
# agree with the original layer to rounding, ~1e-15 relative.
ATOL = 1e-12
# float32 (the experiment's dtype): one SVD and one product in single precision
ATOL_FLOAT32 = 1e-5

INITS = ("balanced", "identity")  # the function-preserving initializations

# (n_in, n_out, depth, width); width None = the layer's output size (§E2's choice)
LINEAR_CASES = [(12, 7, 2, None), (5, 9, 4, 5), (6, 6, 1, None)]

# (c_in, c_out, kernel, depth, width) of a convolution on a 6x6 image
CONV_CASES = [(1, 4, 3, 2, None), (4, 6, 3, 3, 40)]

# hypothesis ranges (kept small: every draw builds a layer and factorizes it)
MAX_FEATURES = 6
MAX_EXTRA_WIDTH = 3
MAX_DEPTH = 4
HYPOTHESIS_EXAMPLES = 8


def hidden(n_in: int, n_out: int, width: int | None) -> int:
    return n_out if width is None else width


def factor_shapes(n_in: int, n_out: int, depth: int, width: int | None) -> list[tuple[int, int]]:
    """``[(d_1, d_0), ..., (d_N, d_{N-1})]`` with ``d_0 = in``, ``d_N = out``, hidden ``width``."""
    dims = [n_in] + [hidden(n_in, n_out, width)] * (depth - 1) + [n_out]
    return [(dims[j + 1], dims[j]) for j in range(depth)]


def extra_parameters(n_in: int, n_out: int, depth: int, width: int | None) -> int:
    """Parameters the factorization adds to an ``out x in`` weight (biases unchanged)."""
    return sum(r * c for r, c in factor_shapes(n_in, n_out, depth, width)) - n_in * n_out


# ---------------------------------------------------------------------- end-to-end dynamics
# A linear model x -> W x (no bias) on a fixed least-squares problem, ℓ(W) = ½ mean ‖W x - y‖².
# From balanced factors, K steps of gradient descent on the factors move W_{1:N} like K steps of
# the discrete end-to-end rule (ACH18 Eq. 10, `dynamics.end_to_end_update`) up to O(η²) per
# step: halving η divides the gap by ~4 (first-order agreement).
E2E_SHAPE = (5, 4)  # (n_in, n_out)
E2E_DEPTHS = (2, 3)
E2E_STEPS = 3
E2E_ETAS = (4e-3, 2e-3)
E2E_RATIO = (3.0, 5.0)  # gap(η) / gap(η/2) for an O(η²) gap
E2E_MAX_GAP = 1e-3  # at the larger η (the change of W itself is ~1e-2)


def e2e_problem() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(W0 (out, in), X (m, in), Y (m, out))``, float64, fixed."""
    rng = np.random.default_rng(0)
    n_in, n_out = E2E_SHAPE
    X = rng.standard_normal((20, n_in))
    Y = rng.standard_normal((20, n_out))
    W0 = 0.5 * rng.standard_normal((n_out, n_in))
    return W0, X, Y


def e2e_gradient(W: np.ndarray, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """∇ℓ(W) = mean (W x - y) xᵀ, computed independently of either framework's autodiff."""
    return (X @ W.T - Y).T @ X / X.shape[0]


def e2e_reference(depth: int, eta: float) -> np.ndarray:
    """``W_{1:N}`` after ``E2E_STEPS`` steps of ``dynamics.end_to_end_update`` from ``W0``."""
    import jax.numpy as jnp

    from deeplinear.dynamics import end_to_end_update

    W, X, Y = e2e_problem()
    for _ in range(E2E_STEPS):
        W = np.asarray(end_to_end_update(jnp.asarray(W), jnp.asarray(e2e_gradient(W, X, Y)),
                                         eta, depth))
    return W


def check_first_order(gaps: list[float]) -> None:
    """The gap at η is small and ~4x the gap at η/2."""
    assert gaps[0] < E2E_MAX_GAP, gaps
    assert E2E_RATIO[0] < gaps[0] / gaps[1] < E2E_RATIO[1], gaps
