// Dense matrix product through a BLAS ?gemm, as an XLA FFI custom call (CPU):
// out = op(a) @ op(b) for row-major a, b, out, op(x) = x or x^T (the attributes trans_a,
// trans_b). The BLAS is column-major: a row-major m x n buffer is its n x m transpose, so
// out^T = op(b)^T op(a)^T is one gemm call with the operands swapped and the same trans
// flags; nothing is copied. The gemm functions (Fortran-style, 32-bit integers: SciPy's
// scipy.linalg.cython_blas) are handed over once by deeplinear_set_blas. Leading axes are
// batch axes (vmap's expand_dims: an axis of size 1 in one operand is broadcast): one gemm per
// batch member, in order.
#include <cstdint>
#include <cstring>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

template <typename T>
using GemmFn = void (*)(const char*, const char*, const int*, const int*, const int*, const T*,
                        const T*, const int*, const T*, const int*, const T*, T*, const int*);

static GemmFn<double> g_dgemm = nullptr;
static GemmFn<float> g_sgemm = nullptr;

extern "C" void deeplinear_set_blas(void* dgemm, void* sgemm) {
  g_dgemm = reinterpret_cast<GemmFn<double>>(dgemm);
  g_sgemm = reinterpret_cast<GemmFn<float>>(sgemm);
}

template <typename T>
static GemmFn<T> Gemm();
template <>
GemmFn<double> Gemm<double>() { return g_dgemm; }
template <>
GemmFn<float> Gemm<float>() { return g_sgemm; }

template <ffi::DataType D>
static ffi::Error GemmImpl(ffi::Buffer<D> a, ffi::Buffer<D> b, ffi::ResultBuffer<D> out,
                           bool trans_a, bool trans_b) {
  using T = ffi::NativeType<D>;
  GemmFn<T> gemm = Gemm<T>();
  if (gemm == nullptr) return ffi::Error::Internal("gemm: no BLAS was set");
  auto ad = a.dimensions();
  auto bd = b.dimensions();
  auto od = out->dimensions();
  const size_t rank = od.size();
  if (rank < 2 || ad.size() != rank || bd.size() != rank) {
    return ffi::Error::InvalidArgument("gemm: a, b and out must have equal rank >= 2");
  }
  const int64_t ra = ad[rank - 2], ca = ad[rank - 1], rb = bd[rank - 2], cb = bd[rank - 1];
  const int64_t m = trans_a ? ca : ra, k = trans_a ? ra : ca;
  const int64_t kb = trans_b ? cb : rb, n = trans_b ? rb : cb;
  if (k != kb || od[rank - 2] != m || od[rank - 1] != n) {
    return ffi::Error::InvalidArgument("gemm: shapes do not match op(a) @ op(b)");
  }
  const int64_t limit = INT32_MAX;
  if (ra > limit || ca > limit || rb > limit || cb > limit) {
    return ffi::Error::InvalidArgument("gemm: a dimension exceeds the BLAS's 32-bit integers");
  }
  // batch strides (in elements) of a and b over out's batch axes; 0 where broadcast
  const size_t nb = rank - 2;
  std::vector<int64_t> sa(nb), sb(nb), count(nb);
  int64_t step_a = ra * ca, step_b = rb * cb, batches = 1;
  for (size_t i = nb; i-- > 0;) {
    if ((ad[i] != od[i] && ad[i] != 1) || (bd[i] != od[i] && bd[i] != 1)) {
      return ffi::Error::InvalidArgument("gemm: batch axes do not broadcast");
    }
    sa[i] = ad[i] == 1 ? 0 : step_a;
    sb[i] = bd[i] == 1 ? 0 : step_b;
    step_a *= ad[i];
    step_b *= bd[i];
    count[i] = od[i];
    batches *= od[i];
  }
  T* c = out->typed_data();
  if (m == 0 || n == 0) return ffi::Error::Success();
  if (k == 0) {
    std::memset(c, 0, sizeof(T) * static_cast<size_t>(batches * m * n));
    return ffi::Error::Success();
  }
  const char ta = trans_a ? 'T' : 'N', tb = trans_b ? 'T' : 'N';
  const int im = static_cast<int>(m), in = static_cast<int>(n), ik = static_cast<int>(k);
  const int lda = static_cast<int>(ca), ldb = static_cast<int>(cb), ldc = in;
  const T one = 1, zero = 0;
  std::vector<int64_t> index(nb, 0);
  for (int64_t t = 0; t < batches; ++t) {
    int64_t oa = 0, ob = 0;
    for (size_t i = 0; i < nb; ++i) {
      oa += index[i] * sa[i];
      ob += index[i] * sb[i];
    }
    // out^T (n x m, column-major) = op(b)^T op(a)^T
    gemm(&tb, &ta, &in, &im, &ik, &one, b.typed_data() + ob, &ldb, a.typed_data() + oa, &lda,
         &zero, c + t * m * n, &ldc);
    for (size_t i = nb; i-- > 0;) {  // the next batch index, last axis fastest
      if (++index[i] < count[i]) break;
      index[i] = 0;
    }
  }
  return ffi::Error::Success();
}

#define DEEPLINEAR_GEMM(NAME, D)                                           \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(NAME, GemmImpl<D>, ffi::Ffi::Bind()        \
                                                       .Arg<ffi::Buffer<D>>() \
                                                       .Arg<ffi::Buffer<D>>() \
                                                       .Ret<ffi::Buffer<D>>() \
                                                       .Attr<bool>("trans_a") \
                                                       .Attr<bool>("trans_b"));

DEEPLINEAR_GEMM(DeeplinearGemmF32, ffi::F32)
DEEPLINEAR_GEMM(DeeplinearGemmF64, ffi::F64)
