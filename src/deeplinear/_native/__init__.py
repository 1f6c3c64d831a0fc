"""Optional native kernel for the sparse completion step: the sampled dense-dense product (SDDMM)
``e_i = sum_d L[a_i, d] R[d, b_i]`` as an XLA FFI custom call on CPU.

XLA:CPU gathers the rows of ``L`` and ``R^T`` at about 0.5 ns per element, so computing the
observed entries by gathers costs as much as the whole dense product ``L R`` at 10% observed; a
compiled, vectorized loop over tiles of entries (blocks of rows, then of columns, so the rows of
``R^T`` a tile reads stay in cache) does it 2-4x faster than the dense product (BENCHMARKS.md,
sparse step). (A kernel doing the two sparse-dense products of the step in the same pass was
measured too: it was slower than jaxlib's CSR products, so those stay.)

The kernel (``sddmm.cc``) is compiled on first use with the system C++ compiler against jaxlib's
FFI headers and cached in ``$DEEPLINEAR_CACHE`` (default ``$XDG_CACHE_HOME/deeplinear`` or
``~/.cache/deeplinear``), one file per source, compiler flags, jaxlib version and CPU model. Where
no compiler works, or with ``DEEPLINEAR_NATIVE=0``, :func:`available` is False and the sparse step
uses XLA's gathers or a dense product instead (the same numbers to rounding). Off CPU (GPU/TPU)
:func:`sddmm` runs XLA's gathers (``lax.platform_dependent``).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from deeplinear._fetch import cache_dir as _cache_dir

__all__ = ["COL_BLOCK", "ROW_BLOCK", "available", "cpu_model", "sddmm", "status", "tiled_order"]

ROW_BLOCK = 256  # rows of L a tile reads (256 rows x 1 KiB at width 128: in L2)
COL_BLOCK = 16  # rows of R^T a tile reads (in L1 at width 128; measured best at 128 and 2000)
_SOURCE = Path(__file__).with_name("sddmm.cc")
_FLAGS = ("-std=c++17", "-O3", "-march=native", "-fopenmp-simd", "-shared", "-fPIC", "-w")
_TARGETS = {np.dtype(np.float32): "deeplinear_sddmm_f32", np.dtype(np.float64): "deeplinear_sddmm_f64"}
_SYMBOLS = {"deeplinear_sddmm_f32": "DeeplinearSddmmF32", "deeplinear_sddmm_f64": "DeeplinearSddmmF64"}
_state: dict[str, object] = {}  # "ok" and "why" once _load has run
_registered: list[ctypes.CDLL] = []  # the loaded library, once its targets are registered


def cpu_model() -> str:
    """The CPU's model name (part of the kernel's cache key; benchmark and docs headers)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _build() -> Path:
    """Compile the kernel into the cache (atomically: a temporary file, then renamed)."""
    import jaxlib

    compiler = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if not compiler:
        raise RuntimeError("no C++ compiler (set CXX or install g++)")
    key = hashlib.sha256("\0".join([
        _SOURCE.read_text(), compiler, *_FLAGS, jaxlib.__version__, cpu_model(),
    ]).encode()).hexdigest()[:16]
    target = _cache_dir() / f"sddmm-{key}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        cmd = [compiler, *_FLAGS, "-I", jax.ffi.include_dir(), str(_SOURCE), "-o", tmp]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise RuntimeError(f"{Path(compiler).name} failed: {done.stderr.strip()[-300:]}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def _load() -> bool:
    if "ok" in _state:
        return bool(_state["ok"])
    if os.environ.get("DEEPLINEAR_NATIVE", "1") == "0":
        _state.update(ok=False, why="disabled by DEEPLINEAR_NATIVE=0")
        return False
    if _registered:  # FFI targets are registered once per process
        _state.update(ok=True, why="compiled")
        return True
    try:
        lib = ctypes.cdll.LoadLibrary(str(_build()))
        for name, symbol in _SYMBOLS.items():
            jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(lib, symbol)),
                                        platform="cpu")
        _registered.append(lib)
        _state.update(ok=True, why="compiled")
    except (OSError, RuntimeError, subprocess.SubprocessError, AttributeError) as e:
        _state.update(ok=False, why=f"not built: {e}")
    return bool(_state["ok"])


def available(dtype=np.float64) -> bool:
    """Whether the native kernel can run for arrays of ``dtype`` (float32/float64) on CPU."""
    return np.dtype(dtype) in _TARGETS and _load()


def status() -> str:
    """Why the kernel is, or is not, in use (for benchmark headers and bug reports)."""
    _load()
    return str(_state["why"])


def tiled_order(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """The order in which the kernel visits entries: tiles of ``ROW_BLOCK`` rows x ``COL_BLOCK``
    columns, row-major inside a tile."""
    rows, cols = np.asarray(rows), np.asarray(cols)
    return np.lexsort((cols, rows, cols // COL_BLOCK, rows // ROW_BLOCK))


def _gathered(L, Rt, rows, cols, pos):
    out = jnp.sum(L[rows] * Rt[cols], axis=-1)
    return jnp.zeros_like(out).at[pos].set(out, unique_indices=True)


def sddmm(L: jax.Array, Rt: jax.Array, rows: jax.Array, cols: jax.Array,
          pos: jax.Array) -> jax.Array:
    """``out[pos[i]] = L[rows[i]] . Rt[cols[i]]`` (``rows``, ``cols`` in :func:`tiled_order`,
    ``pos`` a permutation, all int32): the native kernel on CPU for float32/float64, XLA's
    gathers elsewhere or where the kernel is unavailable (same numbers to rounding)."""
    if not available(L.dtype):
        return _gathered(L, Rt, rows, cols, pos)
    call = jax.ffi.ffi_call(_TARGETS[np.dtype(L.dtype)],
                            jax.ShapeDtypeStruct(rows.shape, L.dtype), vmap_method="sequential")
    return jax.lax.platform_dependent(L, Rt, rows, cols, pos, cpu=call, default=_gathered)
