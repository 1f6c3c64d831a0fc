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

The same library holds a second kernel, :func:`gemm` (``gemm.cc``): a dense product
``op(a) @ op(b)`` through SciPy's BLAS ``?gemm`` (``scipy.linalg.cython_blas``, the OpenBLAS
SciPy bundles; no new dependency), whose function pointers the library receives once at load.
For large float64 products this BLAS is up to 25% faster than XLA:CPU's dot on the benchmark
machine, one thread each (``benchmarks/bench_gemm.py``; BENCHMARKS.md), so ``network``'s
products from :data:`GEMM_MIN_FLOPS` (per dtype) up use it on CPU when the BLAS runs one thread
(``OPENBLAS_NUM_THREADS=1``, or ``threadpoolctl``; :func:`gemm_preferred`): its own thread pool
would compete with XLA's. XLA's dot elsewhere: with more BLAS threads, on GPU, or where the
kernel or SciPy's BLAS is unavailable (the same numbers to rounding).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from deeplinear._fetch import cache_dir as _cache_dir

__all__ = ["COL_BLOCK", "GEMM_MIN_FLOPS", "ROW_BLOCK", "available", "blas_threads", "cpu_model",
           "gemm", "gemm_available", "gemm_preferred", "gemm_status", "sddmm", "status",
           "tiled_order"]

ROW_BLOCK = 256  # rows of L a tile reads (256 rows x 1 KiB at width 128: in L2)
COL_BLOCK = 16  # rows of R^T a tile reads (in L1 at width 128; measured best at 128 and 2000)
# 2 m k n at or above which network's products call gemm: where SciPy's BLAS was no slower than
# XLA's dot, one thread each (benchmarks/bench_gemm.py, BENCHMARKS.md); float64: 0-15% faster
# from 400^3 (a^T b: 10-15%) and 17-25% from 1400^3 up; float32: 0-5% slower up to 1000^3,
# 0-10% faster from 1400^3
GEMM_MIN_FLOPS = {np.dtype(np.float64): 2 * 512**3, np.dtype(np.float32): 2 * 1200**3}
_SOURCES = (Path(__file__).with_name("sddmm.cc"), Path(__file__).with_name("gemm.cc"))
_FLAGS = ("-std=c++17", "-O3", "-march=native", "-fopenmp-simd", "-shared", "-fPIC", "-w")
_TARGETS = {np.dtype(np.float32): "deeplinear_sddmm_f32", np.dtype(np.float64): "deeplinear_sddmm_f64"}
_GEMM_TARGETS = {np.dtype(np.float32): "deeplinear_gemm_f32",
                 np.dtype(np.float64): "deeplinear_gemm_f64"}
_SYMBOLS = {"deeplinear_sddmm_f32": "DeeplinearSddmmF32", "deeplinear_sddmm_f64": "DeeplinearSddmmF64",
            "deeplinear_gemm_f32": "DeeplinearGemmF32", "deeplinear_gemm_f64": "DeeplinearGemmF64"}
_state: dict[str, object] = {}  # "ok" and "why" once _load has run; "blas" once _load_blas has
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
        *(src.read_text() for src in _SOURCES), compiler, *_FLAGS, jaxlib.__version__,
        cpu_model(),
    ]).encode()).hexdigest()[:16]
    target = _cache_dir() / f"sddmm-{key}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        cmd = [compiler, *_FLAGS, "-I", jax.ffi.include_dir(), *map(str, _SOURCES), "-o", tmp]
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


# the C signature of scipy.linalg.cython_blas's ?gemm (Fortran-style, 32-bit integers), as its
# capsules name it; any other signature leaves gemm unused
_GEMM_SIGNATURE = ("void (char *, char *, int *, int *, int *, {t} *, {t} *, int *, {t} *, "
                   "int *, {t} *, {t} *, int *)")


def _blas_pointers() -> tuple[int, int]:
    """The addresses of SciPy's ``dgemm`` and ``sgemm`` (``scipy.linalg.cython_blas``)."""
    from scipy.linalg import cython_blas

    get_name = ctypes.pythonapi.PyCapsule_GetName
    get_name.restype, get_name.argtypes = ctypes.c_char_p, [ctypes.py_object]
    get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
    get_pointer.restype, get_pointer.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    out = []
    for name, letter in (("dgemm", "d"), ("sgemm", "s")):
        capsule = cython_blas.__pyx_capi__[name]
        signature = get_name(capsule)
        expected = _GEMM_SIGNATURE.format(t=f"__pyx_t_5scipy_6linalg_11cython_blas_{letter}")
        if signature is None or signature.decode() != expected:
            raise RuntimeError(f"scipy.linalg.cython_blas.{name} has an unexpected signature")
        out.append(get_pointer(capsule, signature))
    return out[0], out[1]


def _load_blas() -> bool:
    if "blas" in _state:
        return bool(_state["blas"])
    if not _load():
        _state.update(blas=False, blas_why=str(_state["why"]))
        return False
    try:
        dgemm, sgemm = _blas_pointers()
        _registered[0].deeplinear_set_blas(ctypes.c_void_p(dgemm), ctypes.c_void_p(sgemm))
        _state.update(blas=True, blas_why="SciPy's BLAS")
    except (ImportError, KeyError, AttributeError, OSError, RuntimeError) as e:
        _state.update(blas=False, blas_why=f"no BLAS: {e}")
    return bool(_state["blas"])


def gemm_available(dtype=np.float64) -> bool:
    """Whether :func:`gemm` runs SciPy's BLAS for ``dtype`` (float32/float64) on CPU."""
    return np.dtype(dtype) in _GEMM_TARGETS and _load_blas()


def gemm_status() -> str:
    """Which BLAS :func:`gemm` calls, or why none (benchmark headers, bug reports)."""
    if not _load_blas():
        return str(_state["blas_why"])
    threads = blas_threads()
    count = ("threads unknown" if threads is None else
             f"{threads} thread" + ("s" if threads != 1 else ""))
    return f"{_state['blas_why']}, {count}"


def blas_threads() -> int | None:
    """The number of threads SciPy's OpenBLAS runs a product on now (``OPENBLAS_NUM_THREADS``,
    ``threadpoolctl``), or None where it cannot be asked (another BLAS, another platform)."""
    if "blas_lib" not in _state:
        _state["blas_lib"] = None
        try:
            import scipy
            from scipy.linalg import cython_blas  # noqa: F401  (loads SciPy's OpenBLAS)

            libs = (Path(scipy.__file__).resolve().parent.parent / "scipy.libs").resolve()
            with open("/proc/self/maps") as fh:  # the OpenBLAS SciPy has loaded (Linux wheels)
                paths = {ln.split(None, 5)[-1].strip() for ln in fh if "openblas" in ln}
            for path in sorted(p for p in paths if Path(p).parent == libs):
                lib = ctypes.CDLL(path)
                for name in ("scipy_openblas_get_num_threads", "openblas_get_num_threads"):
                    if hasattr(lib, name):
                        _state["blas_lib"] = getattr(lib, name)
                        break
        except (OSError, ImportError):
            pass
    get = _state["blas_lib"]
    return int(get()) if get is not None else None


def gemm_preferred(dtype=np.float64) -> bool:
    """Whether ``network``'s large products should call :func:`gemm`: the kernel is available for
    ``dtype`` and the BLAS runs one thread. With more threads the BLAS's own pool would compete
    with XLA's for the cores (on the shared 2-core benchmark machine, default threads: the sparse
    step at n = 2,000 took 1.74 s of wall clock through the BLAS against 1.67 s on XLA's dot, and
    1.46 s with ``OPENBLAS_NUM_THREADS=1``), so XLA's dot keeps those products."""
    return gemm_available(dtype) and blas_threads() == 1


def _xla_product(a, b, trans_a: bool, trans_b: bool):
    return jnp.einsum(f"...{'ji' if trans_a else 'ij'},...{'kj' if trans_b else 'jk'}->...ik", a, b)


def _blas_product(a, b, trans_a: bool, trans_b: bool):
    batch = jnp.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    rank = len(batch) + 2
    a = a.reshape((1,) * (rank - a.ndim) + a.shape)  # leading axes of size 1: the kernel
    b = b.reshape((1,) * (rank - b.ndim) + b.shape)  # broadcasts them
    shape = batch + (a.shape[-1] if trans_a else a.shape[-2], b.shape[-2] if trans_b else b.shape[-1])
    call = jax.ffi.ffi_call(_GEMM_TARGETS[np.dtype(a.dtype)], jax.ShapeDtypeStruct(shape, a.dtype),
                            vmap_method="expand_dims")
    return call(a, b, trans_a=trans_a, trans_b=trans_b)


@partial(jax.custom_jvp, nondiff_argnums=(2, 3))
def _gemm(a, b, trans_a, trans_b):
    return jax.lax.platform_dependent(
        a, b, cpu=lambda x, y: _blas_product(x, y, trans_a, trans_b),
        default=lambda x, y: _xla_product(x, y, trans_a, trans_b))


@_gemm.defjvp
def _gemm_jvp(trans_a, trans_b, primals, tangents):
    # the product is bilinear: its tangent is two products, written as XLA dots so that reverse
    # mode can transpose them
    (a, b), (da, db) = primals, tangents
    out = _gemm(a, b, trans_a, trans_b)
    return out, _xla_product(da, b, trans_a, trans_b) + _xla_product(a, db, trans_a, trans_b)


def gemm(a: jax.Array, b: jax.Array, trans_a: bool = False, trans_b: bool = False) -> jax.Array:
    """``op(a) @ op(b)`` with ``op(x) = x^T`` (the last two axes) where ``trans_*``, leading axes
    broadcast as in ``jnp.matmul``: SciPy's BLAS on CPU for float32/float64 where the kernel is
    built, XLA's dot elsewhere (same numbers to rounding). Differentiable (forward and reverse)
    and batched by ``jax.vmap`` (one BLAS call per batch member)."""
    if a.dtype != b.dtype or not gemm_available(a.dtype):
        return _xla_product(a, b, trans_a, trans_b)
    return _gemm(a, b, bool(trans_a), bool(trans_b))


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
