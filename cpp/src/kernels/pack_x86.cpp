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
//    element (4 to 8 times faster, measured on 256 x 784 and 1024 x 512 float panels).
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

// One 256-bit vector type per element type: L lanes, loads and stores of the first n lanes
// (masked at the edges; masked-out lanes are neither read nor written), and an L x L transpose.
struct F32 {
  using T = float;
  using V = __m256;
  static constexpr idx L = 8;
  static V zero() { return _mm256_setzero_ps(); }
  static V loadu(const T* p) { return _mm256_loadu_ps(p); }
  static void storeu(T* p, V v) { _mm256_storeu_ps(p, v); }
#if defined(__AVX512VL__)
  static V load(const T* p, idx n) {
    return n >= L ? loadu(p) : _mm256_maskz_loadu_ps(__mmask8((1u << n) - 1u), p);
  }
  static void store(T* p, V v, idx n) {
    if (n >= L) storeu(p, v);
    else _mm256_mask_storeu_ps(p, __mmask8((1u << n) - 1u), v);
  }
#else
  static __m256i mask(idx n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(int(n)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  static V load(const T* p, idx n) { return n >= L ? loadu(p) : _mm256_maskload_ps(p, mask(n)); }
  static void store(T* p, V v, idx n) {
    if (n >= L) storeu(p, v);
    else _mm256_maskstore_ps(p, mask(n), v);
  }
#endif
  // r[i] (8 rows of 8) -> r[j] = column j.
  static void transpose(V r[8]) {
    const V t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    const V t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    const V t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    const V t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    const V s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    const V s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    const V s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    const V s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    r[0] = _mm256_permute2f128_ps(s0, s4, 0x20);
    r[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
    r[2] = _mm256_permute2f128_ps(s2, s6, 0x20);
    r[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
    r[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
    r[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
    r[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
    r[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
  }
};

struct F64 {
  using T = double;
  using V = __m256d;
  static constexpr idx L = 4;
  static V zero() { return _mm256_setzero_pd(); }
  static V loadu(const T* p) { return _mm256_loadu_pd(p); }
  static void storeu(T* p, V v) { _mm256_storeu_pd(p, v); }
#if defined(__AVX512VL__)
  static V load(const T* p, idx n) {
    return n >= L ? loadu(p) : _mm256_maskz_loadu_pd(__mmask8((1u << n) - 1u), p);
  }
  static void store(T* p, V v, idx n) {
    if (n >= L) storeu(p, v);
    else _mm256_mask_storeu_pd(p, __mmask8((1u << n) - 1u), v);
  }
#else
  static __m256i mask(idx n) {
    return _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), _mm256_setr_epi64x(0, 1, 2, 3));
  }
  static V load(const T* p, idx n) { return n >= L ? loadu(p) : _mm256_maskload_pd(p, mask(n)); }
  static void store(T* p, V v, idx n) {
    if (n >= L) storeu(p, v);
    else _mm256_maskstore_pd(p, mask(n), v);
  }
#endif
  static void transpose(V r[4]) {
    const V t0 = _mm256_unpacklo_pd(r[0], r[1]), t1 = _mm256_unpackhi_pd(r[0], r[1]);
    const V t2 = _mm256_unpacklo_pd(r[2], r[3]), t3 = _mm256_unpackhi_pd(r[2], r[3]);
    r[0] = _mm256_permute2f128_pd(t0, t2, 0x20);
    r[1] = _mm256_permute2f128_pd(t1, t3, 0x20);
    r[2] = _mm256_permute2f128_pd(t0, t2, 0x31);
    r[3] = _mm256_permute2f128_pd(t1, t3, 0x31);
  }
};

// One micro-panel of w rows, h of them live (h <= w).
template <class O>
void pack_panel(idx w, idx h, idx depth, const typename O::T* X, idx rs, idx cs,
                typename O::T* dst) {
  using T = typename O::T;
  using V = typename O::V;
  constexpr idx L = O::L;
  if (rs == 1) {
    if (h == w && w == 4 * L) {  // the AVX-512 kernels' NR (32 float, 16 double): 4 loads, 4 stores
      for (idx k = 0; k < depth; ++k) {
        const T* src = X + k * cs;
        const V v0 = O::loadu(src), v1 = O::loadu(src + L);
        const V v2 = O::loadu(src + 2 * L), v3 = O::loadu(src + 3 * L);
        T* d = dst + k * w;
        O::storeu(d, v0);
        O::storeu(d + L, v1);
        O::storeu(d + 2 * L, v2);
        O::storeu(d + 3 * L, v3);
      }
      return;
    }
    if (h == w && w % L == 0) {  // other full panels: plain copies, no masks
      for (idx k = 0; k < depth; ++k)
        for (idx r0 = 0; r0 < w; r0 += L) O::storeu(dst + k * w + r0, O::loadu(X + k * cs + r0));
      return;
    }
    for (idx k = 0; k < depth; ++k) {
      const T* src = X + k * cs;
      T* d = dst + k * w;
      for (idx r0 = 0; r0 < w; r0 += L) {
        const idx live = clamp_lanes(h - r0, L), n = clamp_lanes(w - r0, L);
        O::store(d + r0, live > 0 ? O::load(src + r0, live) : O::zero(), n);
      }
    }
    return;
  }
  if (cs == 1) {
    const idx kl = depth / L * L;
    // Row groups outside, k blocks inside: L source rows stream side by side (k blocks outside
    // measured up to 1.6x slower: 32 streams at once).
    for (idx r0 = 0; r0 < w; r0 += L) {
      const idx live = clamp_lanes(h - r0, L), n = clamp_lanes(w - r0, L);
      for (idx k0 = 0; k0 < kl; k0 += L) {
        V t[L];
        for (idx i = 0; i < L; ++i)
          t[i] = i < live ? O::loadu(X + (r0 + i) * rs + k0) : O::zero();
        O::transpose(t);
        for (idx j = 0; j < L; ++j) O::store(dst + (k0 + j) * w + r0, t[j], n);
      }
      for (idx k = kl; k < depth; ++k)
        for (idx i = 0; i < n; ++i) dst[k * w + r0 + i] = i < live ? X[(r0 + i) * rs + k] : T(0);
    }
    return;
  }
  for (idx k = 0; k < depth; ++k)
    for (idx r = 0; r < w; ++r) dst[k * w + r] = r < h ? X[r * rs + k * cs] : T(0);
}

template <class O>
void pack_all(idx w, idx rows, idx depth, const typename O::T* X, idx rs, idx cs,
              typename O::T* dst) {
  using T = typename O::T;
  constexpr idx L = O::L;
  const idx full = rows / w;
  if (rs == 1 && w % L == 0 && full > 1) {
    // The copy case over several full panels: blocks of 8 source rows (k) outside, panels
    // inside. Panel by panel, each k would read w values from a different row, a stride of cs
    // apart (4 KiB in a 1024-wide weight): one demand miss per row, which the prefetchers do not
    // follow across pages. Eight rows side by side stream, and each panel still receives 8 whole
    // k rows at a time. A cold 1024 x 1024 float weight packs in 0.19 ns per element instead of
    // 0.45 (0.11 instead of 0.20 from L3).
    constexpr idx KB = 8;
    for (idx k0 = 0; k0 < depth; k0 += KB) {
      const idx kn = depth - k0 < KB ? depth - k0 : KB;
      for (idx p = 0; p < full; ++p) {
        const T* src = X + k0 * cs + p * w;
        T* d = dst + p * w * depth + k0 * w;
        for (idx k = 0; k < kn; ++k)
          for (idx r0 = 0; r0 < w; r0 += L) O::storeu(d + k * w + r0, O::loadu(src + k * cs + r0));
      }
    }
    X += full * w;
    dst += full * w * depth;
    rows -= full * w;
  }
  for (idx r0 = 0; r0 < rows; r0 += w, dst += w * depth)
    pack_panel<O>(w, rows - r0 < w ? rows - r0 : w, depth, X + r0 * rs, rs, cs, dst);
}

}  // namespace

void pack_panels_f32(idx w, idx rows, idx depth, const float* X, idx rs, idx cs, float* dst) {
  pack_all<F32>(w, rows, depth, X, rs, cs, dst);
}

void pack_panels_f64(idx w, idx rows, idx depth, const double* X, idx rs, idx cs, double* dst) {
  pack_all<F64>(w, rows, depth, X, rs, cs, dst);
}

}  // namespace CHAINRULE_ISA_NS
}  // namespace gemm_detail
}  // namespace chainrule
