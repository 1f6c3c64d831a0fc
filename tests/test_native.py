"""The native SDDMM kernel (deeplinear._native): its entries against a dense NumPy product, its
fallbacks, and its on-demand build."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deeplinear import _native
from deeplinear import network as nw
from deeplinear import problems as pb

needs_kernel = pytest.mark.skipif(not _native.available(), reason=_native.status())


def _case(d_out, d_in, k, m, dtype, seed=0):
    rng = np.random.default_rng(seed)
    flat = np.sort(rng.choice(d_out * d_in, m, replace=False))
    rows, cols = (flat // d_in).astype(np.int32), (flat % d_in).astype(np.int32)
    L = rng.standard_normal((d_out, k)).astype(dtype)
    R = rng.standard_normal((k, d_in)).astype(dtype)
    tiles = _native.tiled_order(rows, cols)
    args = (jnp.asarray(rows[tiles]), jnp.asarray(cols[tiles]), jnp.asarray(tiles, jnp.int32))
    return L, R, rows, cols, args


def test_tiled_order_is_a_permutation_in_tiles():
    rng = np.random.default_rng(3)
    flat = rng.choice(700 * 300, 5000, replace=False)
    rows, cols = flat // 300, flat % 300
    order = _native.tiled_order(rows, cols)
    assert sorted(order) == list(range(5000))
    tile = (rows[order] // _native.ROW_BLOCK) * 10**6 + cols[order] // _native.COL_BLOCK
    assert np.all(np.diff(rows[order] // _native.ROW_BLOCK) >= 0)
    assert len(np.unique(tile)) == 1 + np.count_nonzero(np.diff(tile))  # each tile contiguous


@needs_kernel
@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-13), (np.float32, 1e-5)])
@pytest.mark.parametrize("shape", [(300, 40, 7, 900), (40, 300, 129, 2000), (1, 5, 1, 3),
                                   (600, 600, 33, 20_000)])
def test_kernel_matches_the_dense_product(shape, dtype, rtol):
    """Entries equal (L R)[rows, cols] in the caller's order, for rectangular shapes, widths
    that are not multiples of the vector length and several tiles; float32 and float64.
    Tolerance: a k-term dot product summed in another order, relative to sum |L||R|."""
    d_out, d_in, k, m = shape
    L, R, rows, cols, args = _case(d_out, d_in, k, m, dtype)
    out = jax.jit(lambda a, b: _native.sddmm(a, b.T, *args))(jnp.asarray(L), jnp.asarray(R))
    assert out.dtype == dtype
    ref = (L.astype(np.float64) @ R.astype(np.float64))[rows, cols]
    scale = (np.abs(L.astype(np.float64)) @ np.abs(R.astype(np.float64)))[rows, cols]
    assert np.all(np.abs(np.asarray(out, np.float64) - ref) <= rtol * scale)


@needs_kernel
def test_kernel_under_vmap_and_with_non_finite_values():
    L, R, rows, cols, args = _case(50, 60, 9, 700, np.float64)
    f = jax.jit(jax.vmap(lambda a, b: _native.sddmm(a, b.T, *args)))
    out = np.asarray(f(jnp.stack([L, -2 * L]), jnp.stack([R, R])))
    ref = (L @ R)[rows, cols]
    np.testing.assert_allclose(out[0], ref, rtol=1e-12)
    np.testing.assert_allclose(out[1], -2 * ref, rtol=1e-12)
    L[rows[0], 3] = np.nan  # a diverging run's NaN must reach the loss (divergence detection)
    L[rows[-1], 0] = np.inf
    out = np.asarray(jax.jit(lambda a, b: _native.sddmm(a, b.T, *args))(L, R))
    assert np.isnan(out[rows == rows[0]]).all() and not np.isfinite(out[rows == rows[-1]]).any()
    assert np.isfinite(out[(rows != rows[0]) & (rows != rows[-1])]).all()


def test_fallback_without_the_kernel(monkeypatch):
    """Without the kernel the plan samples with XLA's gathers, 'native' is refused, and
    ``sddmm`` still returns the entries."""
    monkeypatch.setattr(_native, "_state", {"ok": False, "why": "not built: test"})
    assert not _native.available() and _native.status() == "not built: test"
    n, m = 400, 1600  # 1% observed: sampling beats the dense product
    rng = np.random.default_rng(1)
    idx = rng.choice(n * n, m, replace=False)
    prob = pb.MatrixCompletion(idx // n, idx % n, rng.standard_normal(m), (n, n))
    assert pb.SparseCompletion(prob, (n, 64, 64, n)).forward == "gather"
    with pytest.raises(ValueError, match="native"):
        pb.SparseCompletion(prob, (n, 64, 64, n), forward="native")
    L, R, rows, cols, args = _case(30, 20, 4, 100, np.float64)
    np.testing.assert_allclose(_native.sddmm(jnp.asarray(L), jnp.asarray(R).T, *args),
                               (L @ R)[rows, cols], rtol=1e-12)


def test_unsupported_dtype_falls_back_to_gathers():
    L, R, rows, cols, args = _case(30, 20, 4, 100, np.float32)
    out = _native.sddmm(jnp.asarray(L, jnp.bfloat16), jnp.asarray(R, jnp.bfloat16).T, *args)
    assert out.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(out, np.float64), (L @ R)[rows, cols], rtol=0.05,
                               atol=0.1)


def test_a_broken_compiler_or_the_switch_turns_the_kernel_off(monkeypatch, tmp_path):
    monkeypatch.setenv("DEEPLINEAR_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CXX", "/bin/false")
    with pytest.raises(RuntimeError, match="false failed"):
        _native._build()
    assert not any((tmp_path / "cache").glob("*"))  # no half-written library left behind
    monkeypatch.setattr(_native, "_state", {})
    monkeypatch.setattr(_native, "_registered", [])
    assert not _native.available()
    assert _native.status().startswith("not built: false failed")
    monkeypatch.setattr(_native, "_state", {})
    monkeypatch.setenv("DEEPLINEAR_NATIVE", "0")
    assert not _native.available() and "DEEPLINEAR_NATIVE=0" in _native.status()


@needs_kernel
def test_build_goes_to_the_cache_once(monkeypatch, tmp_path):
    monkeypatch.setenv("DEEPLINEAR_CACHE", str(tmp_path))
    built = _native._build()
    assert built.parent == tmp_path and built.name.startswith("sddmm-")
    assert [p.name for p in tmp_path.iterdir()] == [built.name]  # no temporary file left
    stamp = built.stat().st_mtime_ns
    assert _native._build() == built and built.stat().st_mtime_ns == stamp  # not rebuilt


@needs_kernel
def test_sparse_step_with_the_native_forward_matches_the_dense_step():
    """Training through the native forward gives the dense step's trajectory (float32 too)."""
    from deeplinear import train as tr

    for dtype, rtol in [(jnp.float64, 1e-9), (jnp.float32, 2e-4)]:
        rng = np.random.default_rng(2)
        idx = rng.choice(30 * 40, 200, replace=False)
        prob = pb.MatrixCompletion(idx // 40, idx % 40, rng.standard_normal(200), (30, 40),
                                   "half_mean", dtype=dtype)
        dims = (40, 12, 12, 30)
        fs = nw.gaussian_init(jax.random.PRNGKey(3), dims, 0.6, dtype=dtype)
        sp = pb.SparseCompletion(prob, dims, forward="native")
        a = tr.train(fs, sp, lr=0.05, steps=60)
        b = tr.train(fs, prob, lr=0.05, steps=60, sparse=False)
        np.testing.assert_allclose(a.loss, b.loss, rtol=rtol)
        for x, y in zip(a.state, b.state, strict=True):
            assert x.dtype == dtype
            np.testing.assert_allclose(x, y, rtol=rtol, atol=rtol)


def test_small_problems_never_ask_for_the_kernel(monkeypatch):
    """The rule consults the kernel (and so a compiler) only when its plan would win."""
    asked = []
    monkeypatch.setattr(_native, "available", lambda dtype=np.float64: asked.append(dtype) or True)
    two = pb.completion_2x2()
    assert not pb.sparse_is_cheaper(two, (2, 2, 2, 2)) and not asked
    assert pb.SparseCompletion(two, (2, 2, 2, 2)).forward != "native" and not asked
    n, m = 400, 1600
    rng = np.random.default_rng(1)
    idx = rng.choice(n * n, m, replace=False)
    big = pb.MatrixCompletion(idx // n, idx % n, rng.standard_normal(m), (n, n))
    assert pb.SparseCompletion(big, (n, 64, 64, n)).forward == "native" and asked
