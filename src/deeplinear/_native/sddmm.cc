// Sampled dense-dense product (SDDMM) for the sparse completion step, as an XLA FFI custom call
// (CPU): the observed entries of L @ Rt^T, out[pos[e]] = sum_d L[rows[e], d] * Rt[cols[e], d].
// The entries come in tiles (blocks of rows, then of columns; deeplinear._native.tiled_order)
// so that the rows of L and Rt a tile reads stay in cache; pos puts each result back in the
// caller's order. The dot product is vectorized (omp simd: reassociated sums, NaN and inf kept).
#include <cstdint>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

template <typename T>
static void Sddmm(const T* L, const T* Rt, const int32_t* rows, const int32_t* cols,
                  const int32_t* pos, int64_t m, int64_t k, T* out) {
  for (int64_t e = 0; e < m; ++e) {
    const T* __restrict__ a = L + static_cast<int64_t>(rows[e]) * k;
    const T* __restrict__ b = Rt + static_cast<int64_t>(cols[e]) * k;
    T s = 0;
#pragma omp simd reduction(+ : s)
    for (int64_t d = 0; d < k; ++d) s += a[d] * b[d];
    out[pos[e]] = s;
  }
}

template <ffi::DataType D>
static ffi::Error SddmmImpl(ffi::Buffer<D> L, ffi::Buffer<D> Rt, ffi::Buffer<ffi::S32> rows,
                            ffi::Buffer<ffi::S32> cols, ffi::Buffer<ffi::S32> pos,
                            ffi::ResultBuffer<D> out) {
  auto ld = L.dimensions();
  auto rd = Rt.dimensions();
  if (ld.size() != 2 || rd.size() != 2 || ld[1] != rd[1]) {
    return ffi::Error::InvalidArgument("sddmm: L and Rt must be matrices of equal width");
  }
  const int64_t m = rows.element_count();
  if (cols.element_count() != m || pos.element_count() != m || out->element_count() != m) {
    return ffi::Error::InvalidArgument("sddmm: rows, cols, pos and out must have equal length");
  }
  Sddmm(L.typed_data(), Rt.typed_data(), rows.typed_data(), cols.typed_data(), pos.typed_data(),
        m, ld[1], out->typed_data());
  return ffi::Error::Success();
}

#define DEEPLINEAR_SDDMM(NAME, D)                                                     \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(NAME, SddmmImpl<D>, ffi::Ffi::Bind()                  \
                                                        .Arg<ffi::Buffer<D>>()        \
                                                        .Arg<ffi::Buffer<D>>()        \
                                                        .Arg<ffi::Buffer<ffi::S32>>() \
                                                        .Arg<ffi::Buffer<ffi::S32>>() \
                                                        .Arg<ffi::Buffer<ffi::S32>>() \
                                                        .Ret<ffi::Buffer<D>>());

DEEPLINEAR_SDDMM(DeeplinearSddmmF32, ffi::F32)
DEEPLINEAR_SDDMM(DeeplinearSddmmF64, ffi::F64)
