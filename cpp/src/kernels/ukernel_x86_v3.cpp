// GEMM micro-kernels for x86-64-v3 (AVX2 + FMA), compiled with -march=x86-64-v3 into namespace
// isa_v3 and called only after the dispatcher has checked the CPU. Same rules and the same
// arithmetic as ukernel_x86_v4.cpp (see there): the paths give identical bits.
#include <immintrin.h>

#include <cstdint>

namespace chainrule {
namespace gemm_detail {
namespace isa_v3 {

namespace {

// Lane masks for maskload/maskstore: all ones in the first `cols` lanes.
inline __m256i mask_epi32(std::int64_t cols) {
  const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(int(cols < 0 ? 0 : cols > 8 ? 8 : cols)), idx);
}
inline __m256i mask_epi64(std::int64_t cols) {
  const __m256i idx = _mm256_setr_epi64x(0, 1, 2, 3);
  return _mm256_cmpgt_epi64(_mm256_set1_epi64x(cols < 0 ? 0 : cols > 4 ? 4 : cols), idx);
}

}  // namespace

// float: 6 x 16 tile = 12 ymm accumulators + 2 for the B row + 1 broadcast.
void ukernel_avx2_f32_6x16(std::int64_t kc, float alpha, const float* a, const float* b,
                           float beta, float* c, std::int64_t ldc, std::int64_t m,
                           std::int64_t n) {
  constexpr int MR = 6;
  __m256 acc[MR][2];
#pragma GCC unroll 6
  for (int i = 0; i < MR; ++i) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
  for (std::int64_t k = 0; k < kc; ++k, a += MR, b += 16) {
    const __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8);
#pragma GCC unroll 6
    for (int i = 0; i < MR; ++i) {
      const __m256 ai = _mm256_broadcast_ss(a + i);
      acc[i][0] = _mm256_fmadd_ps(ai, b0, acc[i][0]);
      acc[i][1] = _mm256_fmadd_ps(ai, b1, acc[i][1]);
    }
  }
  const __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
  const __m256i k0 = mask_epi32(n), k1 = mask_epi32(n - 8);
#pragma GCC unroll 6
  for (int i = 0; i < MR; ++i) {
    if (i >= m) break;
    float* ci = c + i * ldc;
    __m256 r0 = _mm256_mul_ps(va, acc[i][0]), r1 = _mm256_mul_ps(va, acc[i][1]);
    if (beta != 0.0f) {
      r0 = _mm256_add_ps(r0, _mm256_mul_ps(vb, _mm256_maskload_ps(ci, k0)));
      r1 = _mm256_add_ps(r1, _mm256_mul_ps(vb, _mm256_maskload_ps(ci + 8, k1)));
    }
    _mm256_maskstore_ps(ci, k0, r0);
    _mm256_maskstore_ps(ci + 8, k1, r1);
  }
}

// double: 6 x 8 tile = 12 ymm accumulators.
void ukernel_avx2_f64_6x8(std::int64_t kc, double alpha, const double* a, const double* b,
                          double beta, double* c, std::int64_t ldc, std::int64_t m,
                          std::int64_t n) {
  constexpr int MR = 6;
  __m256d acc[MR][2];
#pragma GCC unroll 6
  for (int i = 0; i < MR; ++i) acc[i][0] = acc[i][1] = _mm256_setzero_pd();
  for (std::int64_t k = 0; k < kc; ++k, a += MR, b += 8) {
    const __m256d b0 = _mm256_loadu_pd(b), b1 = _mm256_loadu_pd(b + 4);
#pragma GCC unroll 6
    for (int i = 0; i < MR; ++i) {
      const __m256d ai = _mm256_broadcast_sd(a + i);
      acc[i][0] = _mm256_fmadd_pd(ai, b0, acc[i][0]);
      acc[i][1] = _mm256_fmadd_pd(ai, b1, acc[i][1]);
    }
  }
  const __m256d va = _mm256_set1_pd(alpha), vb = _mm256_set1_pd(beta);
  const __m256i k0 = mask_epi64(n), k1 = mask_epi64(n - 4);
#pragma GCC unroll 6
  for (int i = 0; i < MR; ++i) {
    if (i >= m) break;
    double* ci = c + i * ldc;
    __m256d r0 = _mm256_mul_pd(va, acc[i][0]), r1 = _mm256_mul_pd(va, acc[i][1]);
    if (beta != 0.0) {
      r0 = _mm256_add_pd(r0, _mm256_mul_pd(vb, _mm256_maskload_pd(ci, k0)));
      r1 = _mm256_add_pd(r1, _mm256_mul_pd(vb, _mm256_maskload_pd(ci + 4, k1)));
    }
    _mm256_maskstore_pd(ci, k0, r0);
    _mm256_maskstore_pd(ci + 4, k1, r1);
  }
}

}  // namespace isa_v3
}  // namespace gemm_detail
}  // namespace chainrule
