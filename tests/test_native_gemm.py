"""The BLAS kernel of deeplinear._native (``gemm``: SciPy's ?gemm as an XLA custom call): its
products against a float64 NumPy reference in every transpose combination, under vmap and
autodiff, its fallbacks, and the training steps that use it against XLA's dot."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deeplinear import _native
from deeplinear import network as nw
from deeplinear import problems as pb

needs_blas = pytest.mark.skipif(not _native.gemm_available(), reason=_native.gemm_status())
TOL = {np.float64: 1e-13, np.float32: 1e-5}  # relative to |op(a)| |op(b)| (summation order)


def _operands(m, k, n, trans_a, trans_b, dtype, batch=(), seed=0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(batch + ((k, m) if trans_a else (m, k))).astype(dtype)
    b = rng.standard_normal(batch + ((n, k) if trans_b else (k, n))).astype(dtype)
    return a, b


def _reference(a, b, trans_a, trans_b):
    """``op(a) @ op(b)`` and ``|op(a)| @ |op(b)|`` in float64 NumPy."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    a = np.swapaxes(a, -1, -2) if trans_a else a
    b = np.swapaxes(b, -1, -2) if trans_b else b
    return a @ b, np.abs(a) @ np.abs(b)


def _close(out, a, b, trans_a, trans_b, dtype):
    ref, scale = _reference(a, b, trans_a, trans_b)
    assert out.shape == ref.shape and out.dtype == dtype
    assert np.all(np.abs(np.asarray(out, np.float64) - ref) <= TOL[dtype] * scale + 1e-300)


def _uses_blas(fn, *args) -> bool:
    """Whether ``fn``, traced afresh (the size threshold is read at tracing), calls the kernel."""
    return "deeplinear_gemm" in jax.jit(lambda *a: fn(*a)).lower(*args).compile().as_text()


@needs_blas
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("mkn", [(7, 5, 3), (1, 9, 1), (33, 1, 17), (65, 130, 40)])
def test_gemm_matches_the_product(mkn, trans_a, trans_b, dtype):
    """Non-square shapes (rows, columns and inner size all different, 1 included) in all four
    transpose combinations, float32 and float64; the BLAS kernel is what ran."""
    a, b = _operands(*mkn, trans_a, trans_b, dtype)

    def f(x, y):
        return _native.gemm(x, y, trans_a, trans_b)

    _close(jax.jit(f)(a, b), a, b, trans_a, trans_b, dtype)
    assert _uses_blas(f, a, b)


@needs_blas
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_gemm_batches_broadcast_and_vmap(dtype):
    """Leading axes broadcast as in ``jnp.matmul``; ``vmap`` (one operand batched, both, nested
    with different axes) gives the per-member products."""
    a, b = _operands(6, 4, 5, True, False, dtype, batch=(3,))
    _close(_native.gemm(a, b, True), a, b, True, False, dtype)  # batched operands
    _close(_native.gemm(a, b[0], True), a, b[0][None], True, False, dtype)  # one broadcast
    out = jax.jit(jax.vmap(lambda x: _native.gemm(x, b[1], True)))(a)
    _close(out, a, b[1][None], True, False, dtype)
    c = _operands(6, 4, 5, False, True, dtype, batch=(2,), seed=1)[1]
    nested = jax.vmap(jax.vmap(lambda x, y: _native.gemm(x, y, True, True), in_axes=(None, 0)),
                      in_axes=(0, None))
    out = jax.jit(nested)(a, c)
    assert out.shape == (3, 2, 6, 5)
    for i in range(3):
        _close(out[i], a[i][None], c, True, True, dtype)


@needs_blas
def test_gemm_gradients_match_xla():
    """Reverse and forward mode through the kernel equal those of XLA's product."""
    a, b = _operands(8, 6, 5, False, True, np.float64)
    w = np.random.default_rng(4).standard_normal((8, 5))

    def loss(prod):
        return lambda x, y: jnp.sum(w * jnp.sin(prod(x, y)))

    ours = jax.grad(loss(lambda x, y: _native.gemm(x, y, False, True)), argnums=(0, 1))(a, b)
    xla = jax.grad(loss(lambda x, y: x @ y.T), argnums=(0, 1))(a, b)
    for u, v in zip(ours, xla, strict=True):
        np.testing.assert_allclose(u, v, rtol=1e-12, atol=1e-12)
    ours = jax.jacfwd(lambda x: _native.gemm(x, b, False, True))(a)
    np.testing.assert_allclose(ours, jax.jacfwd(lambda x: x @ b.T)(a), rtol=1e-12, atol=1e-12)


@needs_blas
def test_gemm_empty_inner_size_and_non_finite_values():
    a, b = np.ones((4, 0)), np.ones((0, 3))
    np.testing.assert_array_equal(jax.jit(_native.gemm)(a, b), np.zeros((4, 3)))
    assert jax.jit(_native.gemm)(np.ones((0, 2)), np.ones((2, 3))).shape == (0, 3)
    a, b = _operands(5, 4, 3, False, False, np.float64)
    a[1, 2], a[3, 0] = np.nan, np.inf  # a diverging run's NaN/inf must reach the loss
    out = np.asarray(jax.jit(_native.gemm)(a, b))
    assert np.isnan(out[1]).all() and not np.isfinite(out[3]).any()
    assert np.isfinite(out[[0, 2, 4]]).all()


def test_gemm_falls_back_to_xla(monkeypatch):
    """Without SciPy's BLAS (or the compiled library), for other dtypes and mixed dtypes, gemm
    is XLA's product: the same numbers, no custom call."""
    monkeypatch.setattr(_native, "_state", {"ok": False, "why": "not built: test",
                                            "blas": False, "blas_why": "not built: test"})
    assert not _native.gemm_available() and _native.gemm_status() == "not built: test"
    for ta in (False, True):
        for tb in (False, True):
            a, b = _operands(7, 5, 3, ta, tb, np.float64)
            _close(_native.gemm(a, b, ta, tb), a, b, ta, tb, np.float64)
            assert not _uses_blas(lambda x, y, ta=ta, tb=tb: _native.gemm(x, y, ta, tb), a, b)
    monkeypatch.undo()
    a, b = _operands(7, 5, 3, False, False, np.float32)
    out = _native.gemm(a.astype(jnp.bfloat16), b.astype(jnp.bfloat16))
    assert out.dtype == jnp.bfloat16
    assert not _uses_blas(_native.gemm, a.astype(jnp.bfloat16), b.astype(jnp.bfloat16))
    assert not _uses_blas(_native.gemm, a, b.astype(np.float64))


def test_the_switch_turns_gemm_off(monkeypatch):
    monkeypatch.setattr(_native, "_state", {})
    monkeypatch.setenv("DEEPLINEAR_NATIVE", "0")
    assert not _native.gemm_available() and "DEEPLINEAR_NATIVE=0" in _native.gemm_status()


@needs_blas
def test_an_unexpected_blas_signature_turns_gemm_off(monkeypatch):
    """A SciPy whose ``cython_blas.dgemm`` has another C signature is never called."""
    monkeypatch.setattr(_native, "_state", {})
    monkeypatch.setattr(_native, "_GEMM_SIGNATURE", "void (int *{t})")
    assert _native.available() and not _native.gemm_available()
    assert _native.gemm_status() == "no BLAS: scipy.linalg.cython_blas.dgemm has an unexpected signature"


# --------------------------------------------------------------------------- in the steps


def _completion(n, m, dtype, seed=0):
    rng = np.random.default_rng(seed)
    idx = rng.choice(n * n, m, replace=False)
    return pb.MatrixCompletion(idx // n, idx % n, rng.standard_normal(m), (n, n), dtype=dtype)


@needs_blas
@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-11), (np.float32, 2e-4)])
def test_sparse_and_dense_steps_on_the_blas_match_xla(monkeypatch, dtype, rtol):
    """With the size threshold lowered so that every product of a 60 x 60 problem goes to the
    BLAS: the sparse step's gradients equal those computed with XLA's dot and those of the dense
    step (``factor_gradients``), with and without replicas (vmap); the compiled steps call the
    kernel."""
    n, dims = 60, (60, 48, 40, 60)
    prob = _completion(n, 700, dtype)
    fs = nw.gaussian_init(jax.random.PRNGKey(1), dims, 0.5, dtype=dtype)
    sp = pb.SparseCompletion(prob, dims)

    def sparse(f):
        return sp.value_and_factor_grads(f)

    def dense(f):
        loss, G = prob.value_and_grad(nw.end_to_end(f))
        return loss, nw.factor_gradients(f, G)

    def replicas(f):
        return jax.vmap(sp.value_and_factor_grads)(tuple(jnp.stack([w, -w]) for w in f))

    monkeypatch.setattr(_native, "blas_threads", lambda: 1)  # as OPENBLAS_NUM_THREADS=1
    monkeypatch.setitem(_native.GEMM_MIN_FLOPS, np.dtype(dtype), 0)
    assert _uses_blas(sparse, fs) and _uses_blas(dense, fs) and _uses_blas(replicas, fs)
    on = [jax.jit(lambda f, fn=fn: fn(f))(fs) for fn in (sparse, dense, replicas)]
    monkeypatch.setitem(_native.GEMM_MIN_FLOPS, np.dtype(dtype), np.inf)
    assert not _uses_blas(sparse, fs) and not _uses_blas(dense, fs)
    off = [jax.jit(lambda f, fn=fn: fn(f))(fs) for fn in (sparse, dense, replicas)]
    for (loss, grads), (loss_ref, grads_ref) in zip(on + on[:1], off + off[1:2], strict=True):
        np.testing.assert_allclose(loss, loss_ref, rtol=rtol)
        for g, h in zip(grads, grads_ref, strict=True):
            assert g.dtype == dtype
            np.testing.assert_allclose(g, h, rtol=rtol, atol=rtol * float(jnp.max(jnp.abs(h))))


def test_products_below_the_threshold_stay_on_xla():
    """Small products never build or call the kernel (the threshold is per dtype)."""
    a = jnp.ones((100, 100))
    assert not _uses_blas(nw._mm, a, a) and not _uses_blas(nw._mm_t, a, a)
    assert not _uses_blas(nw._t_mm, a, a)
    assert not nw._blas(2000, 2000, 2000, jnp.bfloat16)


@needs_blas
def test_products_stay_on_xla_while_the_blas_runs_several_threads(monkeypatch):
    """Large products call the BLAS only while it runs one thread (its own pool would compete
    with XLA's); the count is read when a function is traced."""
    monkeypatch.setitem(_native.GEMM_MIN_FLOPS, np.dtype(np.float64), 0)
    a = jnp.ones((40, 30))
    for threads, expected in ((2, False), (None, False), (1, True)):
        monkeypatch.setattr(_native, "blas_threads", lambda t=threads: t)
        assert _native.gemm_preferred() is expected
        assert _uses_blas(nw._mm_t, a, a) is expected and _uses_blas(nw._t_mm, a, a) is expected


@needs_blas
def test_blas_threads_follow_threadpoolctl():
    """The count is SciPy's OpenBLAS's own, changed at run time by threadpoolctl (Linux wheels;
    None where the library cannot be asked)."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    before = _native.blas_threads()
    if before is None:
        pytest.skip("SciPy's BLAS cannot be asked for its threads here")
    with threadpoolctl.threadpool_limits(1, user_api="blas"):
        assert _native.blas_threads() == 1 and _native.gemm_preferred()
    assert _native.blas_threads() == before
    assert _native.gemm_status().startswith("SciPy's BLAS, ")
