// Skinny GEMM kernels (gemm_skinny.hpp): S broadcast scalars of P times vectors along the long
// side L of Q, S <= 8 rows per register tile, compiled once per x86 target (CMakeLists.txt builds
// this file into the v3 and the v4 kernel libraries, CHAINRULE_ISA_NS naming the namespace):
// 8 float / 4 double lanes with AVX2, 16 / 8 with AVX-512. Called only after the dispatcher has
// checked the CPU. Same rules as the micro-kernel files: only <immintrin.h> and <cstdint>, no STL,
// no external-linkage inline helpers, no global constructors.
//
// Arithmetic, identical on every path (and to the GEMM's micro-kernels): acc = fma(p, q, acc) for
// k in order from acc = +0, then C = alpha acc, or C = alpha acc + beta C, never fused. The product
// p q is exact inside the fma, so which operand came from op(A) does not change a bit.
#include <immintrin.h>

#include <cstdint>

#include "../gemm_skinny.hpp"

#ifndef CHAINRULE_ISA_NS
#error "CHAINRULE_ISA_NS must name the ISA namespace (isa_v3, isa_v4)"
#endif

namespace chainrule {
namespace gemm_detail {
namespace CHAINRULE_ISA_NS {

namespace {

using idx = std::int64_t;

inline idx clamp_lanes(idx n, idx lanes) { return n < 0 ? 0 : n > lanes ? lanes : n; }

// One vector type per element type: W lanes, loads and stores of the first n lanes (masked-out
// lanes are neither read nor written; masked loads give zeros there).
#if defined(__AVX512F__)
constexpr int kRegs = 32;
struct F32 {
  using T = float;
  using V = __m512;
  using M = __mmask16;
  static constexpr idx W = 16;
  static M mask(idx n) { return M((1u << clamp_lanes(n, W)) - 1u); }
  static V zero() { return _mm512_setzero_ps(); }
  static V set1(T x) { return _mm512_set1_ps(x); }
  static V loadu(const T* p) { return _mm512_loadu_ps(p); }
  static V load(const T* p, M m) { return _mm512_maskz_loadu_ps(m, p); }
  static void storeu(T* p, V v) { _mm512_storeu_ps(p, v); }
  static void store(T* p, M m, V v) { _mm512_mask_storeu_ps(p, m, v); }
  static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static V mul(V a, V b) { return _mm512_mul_ps(a, b); }
  static V add(V a, V b) { return _mm512_add_ps(a, b); }
  // r[i] (16 rows of 16) -> r[j] = column j: unpacks within 128-bit lanes, then lane shuffles
  // (the transpose of dense.cpp's register GEMV).
  static void transpose(V r[16]) {
    V t[16];
#pragma GCC unroll 8
    for (int i = 0; i < 8; ++i) {
      t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
      t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
#pragma GCC unroll 4
    for (int g = 0; g < 4; ++g) {  // r[4g + m], lane L: column 4L + m of rows 4g .. 4g+3
      r[4 * g] = _mm512_shuffle_ps(t[4 * g], t[4 * g + 2], 0x44);
      r[4 * g + 1] = _mm512_shuffle_ps(t[4 * g], t[4 * g + 2], 0xEE);
      r[4 * g + 2] = _mm512_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0x44);
      r[4 * g + 3] = _mm512_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0xEE);
    }
#pragma GCC unroll 4
    for (int m = 0; m < 4; ++m) {
      const V u = _mm512_shuffle_f32x4(r[m], r[4 + m], 0x88);
      const V v = _mm512_shuffle_f32x4(r[8 + m], r[12 + m], 0x88);
      const V u2 = _mm512_shuffle_f32x4(r[m], r[4 + m], 0xDD);
      const V v2 = _mm512_shuffle_f32x4(r[8 + m], r[12 + m], 0xDD);
      t[m] = _mm512_shuffle_f32x4(u, v, 0x88);
      t[8 + m] = _mm512_shuffle_f32x4(u, v, 0xDD);
      t[4 + m] = _mm512_shuffle_f32x4(u2, v2, 0x88);
      t[12 + m] = _mm512_shuffle_f32x4(u2, v2, 0xDD);
    }
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) r[i] = t[i];
  }
};
struct F64 {
  using T = double;
  using V = __m512d;
  using M = __mmask8;
  static constexpr idx W = 8;
  static M mask(idx n) { return M((1u << clamp_lanes(n, W)) - 1u); }
  static V zero() { return _mm512_setzero_pd(); }
  static V set1(T x) { return _mm512_set1_pd(x); }
  static V loadu(const T* p) { return _mm512_loadu_pd(p); }
  static V load(const T* p, M m) { return _mm512_maskz_loadu_pd(m, p); }
  static void storeu(T* p, V v) { _mm512_storeu_pd(p, v); }
  static void store(T* p, M m, V v) { _mm512_mask_storeu_pd(p, m, v); }
  static V fma(V a, V b, V c) { return _mm512_fmadd_pd(a, b, c); }
  static V mul(V a, V b) { return _mm512_mul_pd(a, b); }
  static V add(V a, V b) { return _mm512_add_pd(a, b); }
  static void transpose(V r[8]) {
    V t[8];
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i) {
      t[2 * i] = _mm512_unpacklo_pd(r[2 * i], r[2 * i + 1]);
      t[2 * i + 1] = _mm512_unpackhi_pd(r[2 * i], r[2 * i + 1]);
    }
#pragma GCC unroll 2
    for (int m = 0; m < 2; ++m) {  // t[2g + m], lane L: column 2L + m of rows 2g, 2g+1
      const V u = _mm512_shuffle_f64x2(t[m], t[2 + m], 0x88);
      const V v = _mm512_shuffle_f64x2(t[4 + m], t[6 + m], 0x88);
      const V u2 = _mm512_shuffle_f64x2(t[m], t[2 + m], 0xDD);
      const V v2 = _mm512_shuffle_f64x2(t[4 + m], t[6 + m], 0xDD);
      r[m] = _mm512_shuffle_f64x2(u, v, 0x88);
      r[4 + m] = _mm512_shuffle_f64x2(u, v, 0xDD);
      r[2 + m] = _mm512_shuffle_f64x2(u2, v2, 0x88);
      r[6 + m] = _mm512_shuffle_f64x2(u2, v2, 0xDD);
    }
  }
};
#else
constexpr int kRegs = 16;
struct F32 {
  using T = float;
  using V = __m256;
  using M = __m256i;
  static constexpr idx W = 8;
  static M mask(idx n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(int(clamp_lanes(n, W))),
                              _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  static V zero() { return _mm256_setzero_ps(); }
  static V set1(T x) { return _mm256_set1_ps(x); }
  static V loadu(const T* p) { return _mm256_loadu_ps(p); }
  static V load(const T* p, M m) { return _mm256_maskload_ps(p, m); }
  static void storeu(T* p, V v) { _mm256_storeu_ps(p, v); }
  static void store(T* p, M m, V v) { _mm256_maskstore_ps(p, m, v); }
  static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static V mul(V a, V b) { return _mm256_mul_ps(a, b); }
  static V add(V a, V b) { return _mm256_add_ps(a, b); }
  // r[i] (8 rows of 8) -> r[j] = column j (the transpose of pack_x86.cpp).
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
  using M = __m256i;
  static constexpr idx W = 4;
  static M mask(idx n) {
    return _mm256_cmpgt_epi64(_mm256_set1_epi64x(clamp_lanes(n, W)),
                              _mm256_setr_epi64x(0, 1, 2, 3));
  }
  static V zero() { return _mm256_setzero_pd(); }
  static V set1(T x) { return _mm256_set1_pd(x); }
  static V loadu(const T* p) { return _mm256_loadu_pd(p); }
  static V load(const T* p, M m) { return _mm256_maskload_pd(p, m); }
  static void storeu(T* p, V v) { _mm256_storeu_pd(p, v); }
  static void store(T* p, M m, V v) { _mm256_maskstore_pd(p, m, v); }
  static V fma(V a, V b, V c) { return _mm256_fmadd_pd(a, b, c); }
  static V mul(V a, V b) { return _mm256_mul_pd(a, b); }
  static V add(V a, V b) { return _mm256_add_pd(a, b); }
  static void transpose(V r[4]) {
    const V t0 = _mm256_unpacklo_pd(r[0], r[1]), t1 = _mm256_unpackhi_pd(r[0], r[1]);
    const V t2 = _mm256_unpacklo_pd(r[2], r[3]), t3 = _mm256_unpackhi_pd(r[2], r[3]);
    r[0] = _mm256_permute2f128_pd(t0, t2, 0x20);
    r[1] = _mm256_permute2f128_pd(t1, t3, 0x20);
    r[2] = _mm256_permute2f128_pd(t0, t2, 0x31);
    r[3] = _mm256_permute2f128_pd(t1, t3, 0x31);
  }
};
#endif

#define CR_INLINE inline __attribute__((always_inline))

// Rows of P per register tile (a taller S takes several row groups), and the vectors along L a
// tile of sr rows holds with Q in rows: sr * nv accumulators, nv loaded Q vectors and a broadcast
// in the register file. With one or two rows that is 4 vectors: 4 to 8 independent accumulator
// chains to cover the FMA latency (the chains cannot run lengthwise: each element's k order is
// fixed). With Q transposed a tile is one vector, W rows of Q^T: the W x W block being transposed
// takes half the registers, and 2 W rows side by side measured 1.7x slower on
// (1024 x 1024)(1024 x 1).
constexpr int kGroup = 8;
template <class O>
constexpr int nv_max(int sr) {
  for (int nv = 4; nv > 1; --nv)
    if (sr * nv + nv + 1 <= kRegs) return nv;
  return 1;
}

// C (SR, n) from the accumulators (gemm_skinny.hpp): C = alpha acc, or alpha acc + beta C.
template <class O, int SR, int NV>
CR_INLINE void store_tile(const typename O::V (&acc)[SR][NV], const typename O::M (&m)[NV],
                          typename O::T alpha, typename O::T beta, typename O::T* C, idx cs,
                          idx cl, idx n) {
  using T = typename O::T;
  using V = typename O::V;
  const V va = O::set1(alpha), vb = O::set1(beta);
  if (cl == 1) {
#pragma GCC unroll 8
    for (int s = 0; s < SR; ++s)
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) {
        T* c = C + s * cs + v * O::W;
        V r = O::mul(va, acc[s][v]);
        if (beta != T(0)) r = O::add(r, O::mul(vb, O::load(c, m[v])));  // beta == 0: C unread
        O::store(c, m[v], r);
      }
    return;
  }
  // C's l elements are strided (a few columns of a row-major C, vectors down its rows): alpha acc
  // in vectors, then element by element; the same two roundings and sum as the vector form.
  T t[NV * O::W];
#pragma GCC unroll 8
  for (int s = 0; s < SR; ++s) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) O::storeu(t + v * O::W, O::mul(va, acc[s][v]));
    T* c = C + s * cs;
    if (beta == T(0))
      for (idx l = 0; l < n; ++l) c[l * cl] = t[l];
    else
      for (idx l = 0; l < n; ++l) c[l * cl] = t[l] + beta * c[l * cl];
  }
}

// Rows of Q a page or more apart (a tile's few lanes of long rows) defeat the hardware
// prefetchers, which stop at page boundaries, so the row tile fetches them itself: in a long
// depth block kAhead rows ahead, in a short one (too few rows to run ahead in) the same rows'
// lanes of the next tile. Into L2, not L1: rows 4 KiB apart share L1 sets, which evicted the
// prefetched lines before use (M = 1, N = 1024, K = 1024 float: 380 -> 180 us on AVX2, 170 -> 110
// on AVX-512).
constexpr idx kAhead = 16;

// One register tile, Q in rows: Q(k, l) = Q[k * qk + l]; n <= NV * W lanes (FULL: n == NV * W,
// no masks in the k loop).
template <class O, int SR, int NV, bool FULL>
CR_INLINE void tile(idx kb, typename O::T alpha, const typename O::T* P, idx ps, idx pk,
                    const typename O::T* Q, idx qk, typename O::T beta, typename O::T* C, idx cs,
                    idx cl, idx n) {
  using T = typename O::T;
  using V = typename O::V;
  typename O::M m[NV];
#pragma GCC unroll 4
  for (int v = 0; v < NV; ++v) m[v] = O::mask(n - v * O::W);
  V acc[SR][NV];
#pragma GCC unroll 8
  for (int s = 0; s < SR; ++s)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[s][v] = O::zero();
  const bool far = qk * idx(sizeof(T)) >= 1024, next = far && kb < 4 * kAhead;
  const idx pf = next ? NV * O::W : kAhead * qk;
  for (idx k = 0; k < kb; ++k, P += pk, Q += qk) {
    if (far && (next || k + kAhead < kb))
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v)
        _mm_prefetch(reinterpret_cast<const char*>(Q + pf + v * O::W), _MM_HINT_T1);
    V q[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v)
      q[v] = FULL ? O::loadu(Q + v * O::W) : O::load(Q + v * O::W, m[v]);
#pragma GCC unroll 8
    for (int s = 0; s < SR; ++s) {
      const V p = O::set1(P[s * ps]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[s][v] = O::fma(p, q[v], acc[s][v]);
    }
  }
  store_tile<O, SR, NV>(acc, m, alpha, beta, C, cs, cl, n);
}

// One register tile, Q transposed: Q(k, l) = Q[l * ql + k], n <= W lanes. The W rows of Q^T are
// read in place, W k at a time, and turned into W vectors along l by a register transpose (no
// packing: a panel written and read back cost 2 to 3 times as much on (32 x 1e5)(1e5 x 1)).
// Lanes past n repeat row n - 1 (memory that exists); they are never stored.
template <class O, int SR>
CR_INLINE void tile_t(idx kb, typename O::T alpha, const typename O::T* P, idx ps, idx pk,
                      const typename O::T* Q, idx ql, typename O::T beta, typename O::T* C,
                      idx cs, idx cl, idx n) {
  using T = typename O::T;
  using V = typename O::V;
  constexpr idx W = O::W;
  // W rows stream side by side, more than the hardware prefetchers follow (as dense.cpp's GEMV).
  constexpr idx ahead = 512 / idx(sizeof(T));
  const typename O::M m[1] = {O::mask(n)};
  V acc[SR][1];
#pragma GCC unroll 8
  for (int s = 0; s < SR; ++s) acc[s][0] = O::zero();
  // r[kk] = Q(k0 + kk, 0 .. W-1) for kk < cnt
  auto load_transposed = [&](V r[W], idx k0, idx cnt) {
    const typename O::M mk = O::mask(cnt);
#pragma GCC unroll 16
    for (int i = 0; i < int(W); ++i) {
      const T* row = Q + (i < n ? i : n - 1) * ql + k0;
      if (cnt == W) {
        if (k0 + ahead < kb) _mm_prefetch(reinterpret_cast<const char*>(row + ahead), _MM_HINT_T0);
        r[i] = O::loadu(row);
      } else {
        r[i] = O::load(row, mk);
      }
    }
    O::transpose(r);
  };
  idx k0 = 0;
  for (; k0 + W <= kb; k0 += W) {
    V r[W];
    load_transposed(r, k0, W);
    const T* p = P + k0 * pk;
#pragma GCC unroll 16
    for (int kk = 0; kk < int(W); ++kk)
#pragma GCC unroll 8
      for (int s = 0; s < SR; ++s)
        acc[s][0] = O::fma(O::set1(p[s * ps + kk * pk]), r[kk], acc[s][0]);
  }
  if (k0 < kb) {
    const idx cnt = kb - k0;
    V r[W];
    load_transposed(r, k0, cnt);
    const T* p = P + k0 * pk;
    for (idx kk = 0; kk < cnt; ++kk)
#pragma GCC unroll 8
      for (int s = 0; s < SR; ++s)
        acc[s][0] = O::fma(O::set1(p[s * ps + kk * pk]), r[kk], acc[s][0]);
  }
  store_tile<O, SR, 1>(acc, m, alpha, beta, C, cs, cl, n);
}

// The last tile of a row group, narrower than a full one: as many vectors as its n lanes need.
template <class O, int SR, int NV>
void edge(bool transposed, idx kb, typename O::T alpha, const typename O::T* P, idx ps, idx pk,
          const typename O::T* Q, idx qk, idx ql, typename O::T beta, typename O::T* C, idx cs,
          idx cl, idx n) {
  if constexpr (NV == 1) {
    if (transposed) {
      tile_t<O, SR>(kb, alpha, P, ps, pk, Q, ql, beta, C, cs, cl, n);
      return;
    }
  }
  tile<O, SR, NV, false>(kb, alpha, P, ps, pk, Q, qk, beta, C, cs, cl, n);
}

// Rows [0, SR) of P against lanes [0, L): full tiles in a loop (their set-up hoisted: with short
// depth blocks, as dx of a one-feature layer with K = 32, a tile's k loop is only a few dozen
// multiply-adds; a call per tile cost 1.3x on (1e5 x 32)(32 x 1)), then the edge.
template <class O, int SR>
void row_group(bool transposed, idx kb, typename O::T alpha, const typename O::T* P, idx ps,
               idx pk, const typename O::T* Q, idx qk, idx ql, typename O::T beta,
               typename O::T* C, idx cs, idx cl, idx L) {
  constexpr int NV = nv_max<O>(SR);
  const idx tw = transposed ? O::W : NV * O::W;
  idx l0 = 0;
  if (transposed)
    for (; l0 + tw <= L; l0 += tw)
      tile_t<O, SR>(kb, alpha, P, ps, pk, Q + l0 * ql, ql, beta, C + l0 * cl, cs, cl, tw);
  else
    for (; l0 + tw <= L; l0 += tw)
      tile<O, SR, NV, true>(kb, alpha, P, ps, pk, Q + l0, qk, beta, C + l0 * cl, cs, cl, tw);
  const idx n = L - l0;
  if (n <= 0) return;
  const typename O::T* q = Q + l0 * (transposed ? ql : 1);
  typename O::T* c = C + l0 * cl;
  const int nv = int((n + O::W - 1) / O::W);  // transposed: 1; in rows: up to NV
  if (nv == 1) edge<O, SR, 1>(transposed, kb, alpha, P, ps, pk, q, qk, ql, beta, c, cs, cl, n);
  if constexpr (NV >= 2)
    if (nv == 2) edge<O, SR, 2>(false, kb, alpha, P, ps, pk, q, qk, ql, beta, c, cs, cl, n);
  if constexpr (NV >= 3)
    if (nv == 3) edge<O, SR, 3>(false, kb, alpha, P, ps, pk, q, qk, ql, beta, c, cs, cl, n);
  if constexpr (NV >= 4)
    if (nv == 4) edge<O, SR, 4>(false, kb, alpha, P, ps, pk, q, qk, ql, beta, c, cs, cl, n);
}

template <class O>
void skinny(idx S, idx L, idx kb, typename O::T alpha, const typename O::T* P, idx ps, idx pk,
            const typename O::T* Q, idx qk, idx ql, typename O::T beta, typename O::T* C, idx cs,
            idx cl) {
  using T = typename O::T;
  const bool transposed = ql != 1;
  // L in chunks with the row groups inside, so that a taller S reads each chunk of Q from cache
  // for its later groups (512 lanes: 2 KiB of a float row).
  const idx chunk = S > kGroup ? 512 : L;
  for (idx l0 = 0; l0 < L; l0 += chunk) {
    const idx n = L - l0 < chunk ? L - l0 : chunk;
    const T* q = Q + l0 * (transposed ? ql : 1);
    T* c0 = C + l0 * cl;
    for (idx s0 = 0; s0 < S; s0 += kGroup) {
      const T* p = P + s0 * ps;
      T* c = c0 + s0 * cs;
      const idx sr = S - s0 < kGroup ? S - s0 : kGroup;
      if (sr == 1) row_group<O, 1>(transposed, kb, alpha, p, ps, pk, q, qk, ql, beta, c, cs, cl, n);
      if (sr == 2) row_group<O, 2>(transposed, kb, alpha, p, ps, pk, q, qk, ql, beta, c, cs, cl, n);
      if (sr == 3) row_group<O, 3>(transposed, kb, alpha, p, ps, pk, q, qk, ql, beta, c, cs, cl, n);
      if (sr == 4) row_group<O, 4>(transposed, kb, alpha, p, ps, pk, q, qk, ql, beta, c, cs, cl, n);
      if (sr == 5) row_group<O, 5>(transposed, kb, alpha, p, ps, pk, q, qk, ql, beta, c, cs, cl, n);
      if (sr == 6) row_group<O, 6>(transposed, kb, alpha, p, ps, pk, q, qk, ql, beta, c, cs, cl, n);
      if (sr == 7) row_group<O, 7>(transposed, kb, alpha, p, ps, pk, q, qk, ql, beta, c, cs, cl, n);
      if (sr == 8) row_group<O, 8>(transposed, kb, alpha, p, ps, pk, q, qk, ql, beta, c, cs, cl, n);
    }
  }
}

#undef CR_INLINE

}  // namespace

void skinny_f32(idx S, idx L, idx kb, float alpha, const float* P, idx ps, idx pk, const float* Q,
                idx qk, idx ql, float beta, float* C, idx cs, idx cl) {
  skinny<F32>(S, L, kb, alpha, P, ps, pk, Q, qk, ql, beta, C, cs, cl);
}

void skinny_f64(idx S, idx L, idx kb, double alpha, const double* P, idx ps, idx pk,
                const double* Q, idx qk, idx ql, double beta, double* C, idx cs, idx cl) {
  skinny<F64>(S, L, kb, alpha, P, ps, pk, Q, qk, ql, beta, C, cs, cl);
}

}  // namespace CHAINRULE_ISA_NS
}  // namespace gemm_detail
}  // namespace chainrule
