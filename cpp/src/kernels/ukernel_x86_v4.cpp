// GEMM micro-kernels for x86-64-v4 (AVX-512 F/BW/DQ/VL), compiled with -march=x86-64-v4 into
// namespace isa_v4 and called only after the dispatcher has checked the CPU. Nothing here may be
// linked into another path: no STL, no shared inline helpers, no global constructors (only
// <immintrin.h> and <cstdint>).
//
// Contract (gemm_internal.hpp): C (m, n) tile = alpha a b + beta C, a an MR x kc packed micro-panel
// (k-major, MR values per k), b a kc x NR micro-panel (NR values per k). Arithmetic, identical on
// every ISA path: acc = fma(a_ik, b_kj, acc) for k = 0..kc-1 from acc = 0, then C = alpha acc, or
// C = alpha acc + beta C (two products and a sum, never fused).
#include <immintrin.h>

#include <cstdint>

namespace chainrule {
namespace gemm_detail {
namespace isa_v4 {

namespace {

// Mask of the first `cols` lanes (0 <= cols <= 16).
inline __mmask16 lanes16(std::int64_t cols) {
  return cols >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (cols > 0 ? cols : 0)) - 1u);
}
inline __mmask8 lanes8(std::int64_t cols) {
  return cols >= 8 ? __mmask8(0xFF) : __mmask8((1u << (cols > 0 ? cols : 0)) - 1u);
}

}  // namespace

// float: MR x 32 tile = 2 MR zmm accumulators + 2 for the B row + 1 broadcast. MR = 14 fills the
// register file; MR = 8 serves row counts that 14 divides badly (a batch of 32: 3 x 14 = 42 rows
// computed for 32, 24 % wasted, against exactly 4 x 8).
namespace {  // internal linkage: no weak symbol a baseline caller could bind to
// a(i, k) = a[k * acs + i * ars]: a packed micro-panel (ars = 1, acs = MR, both constants), or
// op(A) read where it lies (the strided twins below).
template <int MR>
inline void ukernel_f32_x32(std::int64_t kc, float alpha, const float* a, std::int64_t ars,
                            std::int64_t acs, const float* b, float beta, float* c,
                            std::int64_t ldc, std::int64_t m, std::int64_t n) {
  __m512 acc[MR][2];
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
  for (std::int64_t k = 0; k < kc; ++k, a += acs, b += 32) {
    const __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16);
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      const __m512 ai = _mm512_set1_ps(a[i * ars]);
      acc[i][0] = _mm512_fmadd_ps(ai, b0, acc[i][0]);
      acc[i][1] = _mm512_fmadd_ps(ai, b1, acc[i][1]);
    }
  }
  const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
  const __mmask16 k0 = lanes16(n), k1 = lanes16(n - 16);
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) {
    if (i >= m) break;
    float* ci = c + i * ldc;
    __m512 r0 = _mm512_mul_ps(va, acc[i][0]), r1 = _mm512_mul_ps(va, acc[i][1]);
    if (beta != 0.0f) {  // beta == 0 must not read C
      r0 = _mm512_add_ps(r0, _mm512_mul_ps(vb, _mm512_maskz_loadu_ps(k0, ci)));
      r1 = _mm512_add_ps(r1, _mm512_mul_ps(vb, _mm512_maskz_loadu_ps(k1, ci + 16)));
    }
    _mm512_mask_storeu_ps(ci, k0, r0);
    _mm512_mask_storeu_ps(ci + 16, k1, r1);
  }
}

}  // namespace

void ukernel_avx512_f32_14x32(std::int64_t kc, float alpha, const float* a, const float* b,
                              float beta, float* c, std::int64_t ldc, std::int64_t m,
                              std::int64_t n) {
  ukernel_f32_x32<14>(kc, alpha, a, 1, 14, b, beta, c, ldc, m, n);
}

void ukernel_avx512_f32_8x32(std::int64_t kc, float alpha, const float* a, const float* b,
                             float beta, float* c, std::int64_t ldc, std::int64_t m,
                             std::int64_t n) {
  ukernel_f32_x32<8>(kc, alpha, a, 1, 8, b, beta, c, ldc, m, n);
}

// double: MR x 16 tile (MR = 14: 28 zmm accumulators; MR = 8 as for float).
namespace {
template <int MR>
inline void ukernel_f64_x16(std::int64_t kc, double alpha, const double* a, std::int64_t ars,
                            std::int64_t acs, const double* b, double beta, double* c,
                            std::int64_t ldc, std::int64_t m, std::int64_t n) {
  __m512d acc[MR][2];
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) acc[i][0] = acc[i][1] = _mm512_setzero_pd();
  for (std::int64_t k = 0; k < kc; ++k, a += acs, b += 16) {
    const __m512d b0 = _mm512_loadu_pd(b), b1 = _mm512_loadu_pd(b + 8);
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      const __m512d ai = _mm512_set1_pd(a[i * ars]);
      acc[i][0] = _mm512_fmadd_pd(ai, b0, acc[i][0]);
      acc[i][1] = _mm512_fmadd_pd(ai, b1, acc[i][1]);
    }
  }
  const __m512d va = _mm512_set1_pd(alpha), vb = _mm512_set1_pd(beta);
  const __mmask8 k0 = lanes8(n), k1 = lanes8(n - 8);
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) {
    if (i >= m) break;
    double* ci = c + i * ldc;
    __m512d r0 = _mm512_mul_pd(va, acc[i][0]), r1 = _mm512_mul_pd(va, acc[i][1]);
    if (beta != 0.0) {
      r0 = _mm512_add_pd(r0, _mm512_mul_pd(vb, _mm512_maskz_loadu_pd(k0, ci)));
      r1 = _mm512_add_pd(r1, _mm512_mul_pd(vb, _mm512_maskz_loadu_pd(k1, ci + 8)));
    }
    _mm512_mask_storeu_pd(ci, k0, r0);
    _mm512_mask_storeu_pd(ci + 8, k1, r1);
  }
}

}  // namespace

void ukernel_avx512_f64_14x16(std::int64_t kc, double alpha, const double* a, const double* b,
                              double beta, double* c, std::int64_t ldc, std::int64_t m,
                              std::int64_t n) {
  ukernel_f64_x16<14>(kc, alpha, a, 1, 14, b, beta, c, ldc, m, n);
}

void ukernel_avx512_f64_8x16(std::int64_t kc, double alpha, const double* a, const double* b,
                             double beta, double* c, std::int64_t ldc, std::int64_t m,
                             std::int64_t n) {
  ukernel_f64_x16<8>(kc, alpha, a, 1, 8, b, beta, c, ldc, m, n);
}

// Strided twins of the 8-row kernels: every one of the 8 rows of op(A) read in place,
// a(i, k) = a[i * ars + k * acs] (the caller passes full tiles only: m == 8).
void ukernel_avx512_f32_8x32_sa(std::int64_t kc, float alpha, const float* a, std::int64_t ars,
                                std::int64_t acs, const float* b, float beta, float* c,
                                std::int64_t ldc, std::int64_t m, std::int64_t n) {
  ukernel_f32_x32<8>(kc, alpha, a, ars, acs, b, beta, c, ldc, m, n);
}

void ukernel_avx512_f64_8x16_sa(std::int64_t kc, double alpha, const double* a, std::int64_t ars,
                                std::int64_t acs, const double* b, double beta, double* c,
                                std::int64_t ldc, std::int64_t m, std::int64_t n) {
  ukernel_f64_x16<8>(kc, alpha, a, ars, acs, b, beta, c, ldc, m, n);
}

// One row read in place (m == 1): the same arithmetic per element, without the 7 padded rows the
// 8-row kernel would compute for it.
void ukernel_avx512_f32_1x32_sa(std::int64_t kc, float alpha, const float* a, std::int64_t ars,
                                std::int64_t acs, const float* b, float beta, float* c,
                                std::int64_t ldc, std::int64_t m, std::int64_t n) {
  ukernel_f32_x32<1>(kc, alpha, a, ars, acs, b, beta, c, ldc, m, n);
}

void ukernel_avx512_f64_1x16_sa(std::int64_t kc, double alpha, const double* a, std::int64_t ars,
                                std::int64_t acs, const double* b, double beta, double* c,
                                std::int64_t ldc, std::int64_t m, std::int64_t n) {
  ukernel_f64_x16<1>(kc, alpha, a, ars, acs, b, beta, c, ldc, m, n);
}

}  // namespace isa_v4
}  // namespace gemm_detail
}  // namespace chainrule
