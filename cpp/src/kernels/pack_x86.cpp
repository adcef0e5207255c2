// GEMM packing with SIMD transposes, compiled once per x86 target (CMakeLists.txt builds this file
// into the v3 and the v4 kernel libraries, with CHAINRULE_ISA_NS naming the namespace) and called
// only after the dispatcher has checked the CPU. Same rules as the micro-kernel files: only
// <immintrin.h> and <cstdint>, no STL, no external-linkage inline helpers, no global constructors.
//
// Contract (gemm_internal.hpp, pack_panels): X(r, k) = X[r * rs + k * cs] for r < rows, k < depth;
// dst holds ceil(rows / w) micro-panels of w rows, each k-major: dst[p * w * depth + k * w + r % w]
// = X(r, k), and zeros for the rows past `rows` in the last panel. Packing copies values; it does
// no arithmetic, so every path gives the same bits.
//
// Two cases, as the driver calls it:
//  - rs == 1 (the w values of one k are contiguous: A^T, or B as stored): a copy of h values per k,
//    8 lanes (float) / 4 lanes (double) at a time, masked at the edges.
//  - cs == 1 (each row is contiguous in k: A as stored, or B^T): 8 x 8 (float) / 4 x 4 (double)
//    register transposes turn 8 row loads into 8 k-major stores, instead of one scalar gather per
//    element (about ten times faster for a 1024 x 1024 weight).
// Anything else (neither stride 1; the driver never asks) takes a scalar loop.
#include <immintrin.h>

#include <cstdint>

#ifndef CHAINRULE_ISA_NS
#error "CHAINRULE_ISA_NS must name the ISA namespace (isa_v3, isa_v4)"
#endif

namespace chainrule {
namespace gemm_detail {
namespace CHAINRULE_ISA_NS {

namespace {

using idx = std::int64_t;

inline idx clamp_lanes(idx n, idx lanes) { return n < 0 ? 0 : n > lanes ? lanes : n; }

// ---- float: 8 lanes -------------------------------------------------------------------------

#if defined(__AVX512VL__)
inline __m256 load8(const float* p, idx n) {
  return n >= 8 ? _mm256_loadu_ps(p) : _mm256_maskz_loadu_ps(__mmask8((1u << n) - 1u), p);
}
inline void store8(float* p, __m256 v, idx n) {
  if (n >= 8) _mm256_storeu_ps(p, v);
  else _mm256_mask_storeu_ps(p, __mmask8((1u << n) - 1u), v);
}
#else
inline __m256i mask8(idx n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(int(n)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
inline __m256 load8(const float* p, idx n) {
  return n >= 8 ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, mask8(n));
}
inline void store8(float* p, __m256 v, idx n) {
  if (n >= 8) _mm256_storeu_ps(p, v);
  else _mm256_maskstore_ps(p, mask8(n), v);
}
#endif

// r[i] (8 rows of 8) -> r[j] = column j.
inline void transpose8(__m256 r[8]) {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  const __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  const __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  r[0] = _mm256_permute2f128_ps(s0, s4, 0x20);
  r[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
  r[2] = _mm256_permute2f128_ps(s2, s6, 0x20);
  r[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
  r[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
  r[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
  r[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
  r[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}

// One micro-panel of w rows, h of them live (h <= w).
void pack_panel_f32(idx w, idx h, idx depth, const float* X, idx rs, idx cs, float* dst) {
  if (rs == 1) {
    if (h == w && w == 32) {  // the AVX-512 kernels' NR: four loads, then four stores
      for (idx k = 0; k < depth; ++k) {
        const float* src = X + k * cs;
        const __m256 v0 = _mm256_loadu_ps(src), v1 = _mm256_loadu_ps(src + 8);
        const __m256 v2 = _mm256_loadu_ps(src + 16), v3 = _mm256_loadu_ps(src + 24);
        float* d = dst + k * 32;
        _mm256_storeu_ps(d, v0);
        _mm256_storeu_ps(d + 8, v1);
        _mm256_storeu_ps(d + 16, v2);
        _mm256_storeu_ps(d + 24, v3);
      }
      return;
    }
    if (h == w && w % 8 == 0) {  // other full panels: plain 8-lane copies, no masks
      for (idx k = 0; k < depth; ++k)
        for (idx r0 = 0; r0 < w; r0 += 8)
          _mm256_storeu_ps(dst + k * w + r0, _mm256_loadu_ps(X + k * cs + r0));
      return;
    }
    for (idx k = 0; k < depth; ++k) {
      const float* src = X + k * cs;
      float* d = dst + k * w;
      for (idx r0 = 0; r0 < w; r0 += 8) {
        const idx live = clamp_lanes(h - r0, 8), n = clamp_lanes(w - r0, 8);
        store8(d + r0, live > 0 ? load8(src + r0, live) : _mm256_setzero_ps(), n);
      }
    }
    return;
  }
  if (cs == 1) {
    const idx k8 = depth / 8 * 8;
    // Row groups outside, k blocks inside: 8 source rows stream side by side (k blocks outside
    // measured up to 1.6x slower: 32 streams at once).
    for (idx r0 = 0; r0 < w; r0 += 8) {
      const idx live = clamp_lanes(h - r0, 8), n = clamp_lanes(w - r0, 8);
      for (idx k0 = 0; k0 < k8; k0 += 8) {
        __m256 t[8];
        for (idx i = 0; i < 8; ++i)
          t[i] = i < live ? _mm256_loadu_ps(X + (r0 + i) * rs + k0) : _mm256_setzero_ps();
        transpose8(t);
        for (idx j = 0; j < 8; ++j) store8(dst + (k0 + j) * w + r0, t[j], n);
      }
      for (idx k = k8; k < depth; ++k)
        for (idx i = 0; i < n; ++i) dst[k * w + r0 + i] = i < live ? X[(r0 + i) * rs + k] : 0.0f;
    }
    return;
  }
  for (idx k = 0; k < depth; ++k)
    for (idx r = 0; r < w; ++r) dst[k * w + r] = r < h ? X[r * rs + k * cs] : 0.0f;
}

// ---- double: 4 lanes ------------------------------------------------------------------------

#if defined(__AVX512VL__)
inline __m256d load4(const double* p, idx n) {
  return n >= 4 ? _mm256_loadu_pd(p) : _mm256_maskz_loadu_pd(__mmask8((1u << n) - 1u), p);
}
inline void store4(double* p, __m256d v, idx n) {
  if (n >= 4) _mm256_storeu_pd(p, v);
  else _mm256_mask_storeu_pd(p, __mmask8((1u << n) - 1u), v);
}
#else
inline __m256i mask4(idx n) {
  return _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), _mm256_setr_epi64x(0, 1, 2, 3));
}
inline __m256d load4(const double* p, idx n) {
  return n >= 4 ? _mm256_loadu_pd(p) : _mm256_maskload_pd(p, mask4(n));
}
inline void store4(double* p, __m256d v, idx n) {
  if (n >= 4) _mm256_storeu_pd(p, v);
  else _mm256_maskstore_pd(p, mask4(n), v);
}
#endif

inline void transpose4(__m256d r[4]) {
  const __m256d t0 = _mm256_unpacklo_pd(r[0], r[1]), t1 = _mm256_unpackhi_pd(r[0], r[1]);
  const __m256d t2 = _mm256_unpacklo_pd(r[2], r[3]), t3 = _mm256_unpackhi_pd(r[2], r[3]);
  r[0] = _mm256_permute2f128_pd(t0, t2, 0x20);
  r[1] = _mm256_permute2f128_pd(t1, t3, 0x20);
  r[2] = _mm256_permute2f128_pd(t0, t2, 0x31);
  r[3] = _mm256_permute2f128_pd(t1, t3, 0x31);
}

void pack_panel_f64(idx w, idx h, idx depth, const double* X, idx rs, idx cs, double* dst) {
  if (rs == 1) {
    for (idx k = 0; k < depth; ++k) {
      const double* src = X + k * cs;
      double* d = dst + k * w;
      for (idx r0 = 0; r0 < w; r0 += 4) {
        const idx live = clamp_lanes(h - r0, 4), n = clamp_lanes(w - r0, 4);
        store4(d + r0, live > 0 ? load4(src + r0, live) : _mm256_setzero_pd(), n);
      }
    }
    return;
  }
  if (cs == 1) {
    const idx k4 = depth / 4 * 4;
    for (idx r0 = 0; r0 < w; r0 += 4) {
      const idx live = clamp_lanes(h - r0, 4), n = clamp_lanes(w - r0, 4);
      for (idx k0 = 0; k0 < k4; k0 += 4) {
        __m256d t[4];
        for (idx i = 0; i < 4; ++i)
          t[i] = i < live ? _mm256_loadu_pd(X + (r0 + i) * rs + k0) : _mm256_setzero_pd();
        transpose4(t);
        for (idx j = 0; j < 4; ++j) store4(dst + (k0 + j) * w + r0, t[j], n);
      }
      for (idx k = k4; k < depth; ++k)
        for (idx i = 0; i < n; ++i) dst[k * w + r0 + i] = i < live ? X[(r0 + i) * rs + k] : 0.0;
    }
    return;
  }
  for (idx k = 0; k < depth; ++k)
    for (idx r = 0; r < w; ++r) dst[k * w + r] = r < h ? X[r * rs + k * cs] : 0.0;
}

}  // namespace

void pack_panels_f32(idx w, idx rows, idx depth, const float* X, idx rs, idx cs, float* dst) {
  for (idx r0 = 0; r0 < rows; r0 += w, dst += w * depth)
    pack_panel_f32(w, rows - r0 < w ? rows - r0 : w, depth, X + r0 * rs, rs, cs, dst);
}

void pack_panels_f64(idx w, idx rows, idx depth, const double* X, idx rs, idx cs, double* dst) {
  for (idx r0 = 0; r0 < rows; r0 += w, dst += w * depth)
    pack_panel_f64(w, rows - r0 < w ? rows - r0 : w, depth, X + r0 * rs, rs, cs, dst);
}

}  // namespace CHAINRULE_ISA_NS
}  // namespace gemm_detail
}  // namespace chainrule
