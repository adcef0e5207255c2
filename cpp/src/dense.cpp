// Dense layer forward and backward, expressed as GEMMs.
// Accumulation rule: parameter gradients accumulate (+=), input gradients overwrite (=).
//
// Small products (training minibatches of small networks, a few rows of predict) take a path of
// their own: single-threaded, no packing of the activation operand, and only the weight, which
// every row reuses, copied once per call into the row-major layout the kernel streams (W^T for
// the forward; the backward reads W, dy and x where they lie). Its arithmetic is the GEMM's, so
// the bits are the same: every element accumulates acc = fma(a_ik, b_kj, acc) over k in order,
// from acc = 0 in each depth block of kc (the GEMM's block table), then C = alpha acc for the
// first block (+ beta C when beta != 0) and C = alpha acc + C for later ones.
#include "chainrule/dense.hpp"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <stdexcept>
#include <string>

#include "chainrule/gemm.hpp"
#include "chainrule/threads.hpp"
#include "elementwise.hpp"
#include "gemm_skinny.hpp"

#if CHAINRULE_X86_KERNELS
#include <immintrin.h>
#endif

namespace chainrule {

namespace {

// ---- the small path ---------------------------------------------------------------------------
// C (M, N) = alpha op(A) B + beta C, op(A)(i, k) = A[i * ars + k * acs], B (K, N) row-major with
// row stride ldb, C with row stride ldc; M, N, K > 0. Only when small_path_available(): when the
// GEMM runs another ISA path, callers run gemm instead, which gives the same bits.
// crow (N values, or null): C's initial rows all equal crow (a bias), which is read from there
// instead of from C, so the caller need not broadcast it into C first; the same bits.
template <class T>
void small_gemm(index_t M, index_t N, index_t K, T alpha, const T* A, index_t ars, index_t acs,
                const T* B, index_t ldb, T beta, T* C, index_t ldc, const T* crow = nullptr);
bool small_path_available();

// Products the GEMM takes on its skinny path (M or N a few: gemm_skinny.cpp), which computes no
// padding and splits the long side over the pool itself: they go to gemm() whole, rather than to
// this path or the row blocks below, whose tiles have 8 rows and 16 or more columns (the weight
// gradient of a one-feature layer, (32 x B)(B x 1), took 14x torch's time on them).
// Below 2^20 multiply-adds this file's own paths are as fast or faster (a call through gemm()
// costs its checks and dispatch: the xor workload's steps ran 11 % slower, the rnn's Dense head
// (1 x 2048)(2048 x 128) 5 %), and their padding costs little.
bool skinny_product(index_t M, index_t N, index_t K, std::size_t elem_size) {
  return double(M) * double(N) * double(K) >= 1048576.0 &&
         gemm_detail::gemm_skinny_takes(M, N, K, int(elem_size));
}

// Products this path serves: up to ~64^3 multiply-adds (where a thread hand-off or packing costs
// as much as the arithmetic), and thin ones (a few rows, columns or depth steps, as next to a
// 10-class output) up to 2^21, where the GEMM's register tiles would mostly compute padding or
// its packing would outweigh the arithmetic.
bool small_product(index_t M, index_t N, index_t K) {
  if (M <= 0 || N <= 0 || K <= 0 || !small_path_available()) return false;
  const double work = double(M) * double(N) * double(K);
  if (work <= 262144.0) return true;
  return std::min({M, N, K}) <= 16 && work <= 2097152.0;
}

#if CHAINRULE_X86_KERNELS
// AVX-512 kernels, compiled for that target by attribute and called only when the GEMM runs its
// avx512 path (which the dispatcher enabled only on a CPU that has it). Everything they call is
// an always-inline intrinsic; the anonymous namespace keeps them out of every other object.
// GCC 12 reports the unspecified source of the unmasked AVX-512 intrinsics as "may be used
// uninitialized" once they are inlined here; that value is never read.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#define CR_AVX512 __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,fma")))

CR_AVX512 inline __mmask16 lanes(index_t n, float) {
  return n >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (n > 0 ? n : 0)) - 1u);
}
CR_AVX512 inline __mmask8 lanes(index_t n, double) {
  return n >= 8 ? __mmask8(0xFF) : __mmask8((1u << (n > 0 ? n : 0)) - 1u);
}

// Per-type vector operations, so that one tile template serves float and double.
struct VF {
  using T = float;
  using V = __m512;
  using Mask = __mmask16;
  static constexpr int W = 16;
  CR_AVX512 static V zero() { return _mm512_setzero_ps(); }
  CR_AVX512 static V set1(T x) { return _mm512_set1_ps(x); }
  CR_AVX512 static V load(Mask k, const T* p) { return _mm512_maskz_loadu_ps(k, p); }
  CR_AVX512 static void store(T* p, Mask k, V v) { _mm512_mask_storeu_ps(p, k, v); }
  CR_AVX512 static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  CR_AVX512 static V mul(V a, V b) { return _mm512_mul_ps(a, b); }
  CR_AVX512 static V add(V a, V b) { return _mm512_add_ps(a, b); }
};
struct VD {
  using T = double;
  using V = __m512d;
  using Mask = __mmask8;
  static constexpr int W = 8;
  CR_AVX512 static V zero() { return _mm512_setzero_pd(); }
  CR_AVX512 static V set1(T x) { return _mm512_set1_pd(x); }
  CR_AVX512 static V load(Mask k, const T* p) { return _mm512_maskz_loadu_pd(k, p); }
  CR_AVX512 static void store(T* p, Mask k, V v) { _mm512_mask_storeu_pd(p, k, v); }
  CR_AVX512 static V fma(V a, V b, V c) { return _mm512_fmadd_pd(a, b, c); }
  CR_AVX512 static V mul(V a, V b) { return _mm512_mul_pd(a, b); }
  CR_AVX512 static V add(V a, V b) { return _mm512_add_pd(a, b); }
};

// One MR x (NV * W) tile of C over the depth block [0, kb): n <= NV * W valid columns.
// crow: read beta's operand from this row (the same for every row) instead of from C.
template <class O, int MR, int NV>
CR_AVX512 void tile(index_t kb, typename O::T alpha, const typename O::T* A, index_t ars,
                    index_t acs, const typename O::T* B, index_t ldb, typename O::T beta,
                    typename O::T* C, index_t ldc, index_t n, const typename O::T* crow) {
  using V = typename O::V;
  typename O::Mask mask[NV];
  for (int v = 0; v < NV; ++v) mask[v] = lanes(n - v * O::W, typename O::T());
  V acc[MR][NV];
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[i][v] = O::zero();
  for (index_t k = 0; k < kb; ++k, A += acs, B += ldb) {
    V b[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) b[v] = O::load(mask[v], B + v * O::W);
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      const V a = O::set1(A[i * ars]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[i][v] = O::fma(a, b[v], acc[i][v]);
    }
  }
  const V va = O::set1(alpha), vb = O::set1(beta);
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      typename O::T* c = C + i * ldc + v * O::W;
      V r = O::mul(va, acc[i][v]);
      if (beta != typename O::T(0))
        r = O::add(r, O::mul(vb, O::load(mask[v], crow ? crow + v * O::W : c)));
      O::store(c, mask[v], r);
    }
}

// Rows [0, m) of a tile with m <= MR: the row count is a template argument, so that no
// accumulator or load exists for absent rows.
template <class O, int NV, int MR>
CR_AVX512 void tile_rows(index_t m, index_t kb, typename O::T alpha, const typename O::T* A,
                         index_t ars, index_t acs, const typename O::T* B, index_t ldb,
                         typename O::T beta, typename O::T* C, index_t ldc, index_t n,
                         const typename O::T* crow) {
  if constexpr (MR > 1) {
    if (m < MR) {
      tile_rows<O, NV, MR - 1>(m, kb, alpha, A, ars, acs, B, ldb, beta, C, ldc, n, crow);
      return;
    }
  }
  tile<O, MR, NV>(kb, alpha, A, ars, acs, B, ldb, beta, C, ldc, n, crow);
}

template <class O>
CR_AVX512 void small_gemm_avx512(index_t M, index_t N, index_t K, index_t kc,
                                 typename O::T alpha, const typename O::T* A, index_t ars,
                                 index_t acs, const typename O::T* B, index_t ldb,
                                 typename O::T beta, typename O::T* C, index_t ldc,
                                 const typename O::T* crow) {
  using T = typename O::T;
  // 8 rows x 2 vectors: 16 accumulators, 2 B vectors and a broadcast in the 32 zmm registers.
  constexpr int MR = 8, NR = 2 * O::W;
  // loop over K in depth blocks of kc, as the GEMM: the first applies beta, later ones add.
  for (index_t pc = 0; pc < K; pc += kc) {
    const index_t kb = std::min(kc, K - pc);
    const T beta_k = pc == 0 ? beta : T(1);
    const T* const row = pc == 0 ? crow : nullptr;  // later blocks add onto C
    const T* Ap = A + pc * acs;
    const T* Bp = B + pc * ldb;
    if (M <= 2) {
      // One or two rows (dx of single-sample predict-and-backward): 4 vectors per row, so that
      // 4 to 8 independent accumulators hide the FMA latency.
      for (index_t j = 0; j < N; j += 4 * O::W)
        tile_rows<O, 4, 2>(M, kb, alpha, Ap, ars, acs, Bp + j, ldb, beta_k, C + j, ldc,
                           std::min<index_t>(4 * O::W, N - j), row ? row + j : row);
      continue;
    }
    // columns in steps of NR (the B micro-panel stays in L1 across the row tiles), then rows
    for (index_t j = 0; j < N; j += NR) {
      const index_t n = std::min<index_t>(NR, N - j);
      for (index_t i = 0; i < M; i += MR) {
        const index_t m = std::min<index_t>(MR, M - i);
        if (n > O::W)
          tile_rows<O, 2, MR>(m, kb, alpha, Ap + i * ars, ars, acs, Bp + j, ldb, beta_k,
                              C + i * ldc + j, ldc, n, row ? row + j : row);
        else
          tile_rows<O, 1, MR>(m, kb, alpha, Ap + i * ars, ars, acs, Bp + j, ldb, beta_k,
                              C + i * ldc + j, ldc, n, row ? row + j : row);
      }
    }
  }
}
// In-register transposes of a W x W block (16 x 16 float, 8 x 8 double): r[i] holds row i on
// entry and column i on return. Unpacks within 128-bit lanes, then 128-bit lane shuffles.
CR_AVX512 inline void transpose_block(__m512 r[16]) {
  __m512 t[16];
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  // r[4g + m], lane L: column 4L + m of rows 4g .. 4g+3
#pragma GCC unroll 4
  for (int g = 0; g < 4; ++g) {
    r[4 * g] = _mm512_shuffle_ps(t[4 * g], t[4 * g + 2], 0x44);
    r[4 * g + 1] = _mm512_shuffle_ps(t[4 * g], t[4 * g + 2], 0xEE);
    r[4 * g + 2] = _mm512_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0x44);
    r[4 * g + 3] = _mm512_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0xEE);
  }
#pragma GCC unroll 4
  for (int m = 0; m < 4; ++m) {
    const __m512 u = _mm512_shuffle_f32x4(r[m], r[4 + m], 0x88);   // lanes g0L0 g0L2 g1L0 g1L2
    const __m512 v = _mm512_shuffle_f32x4(r[8 + m], r[12 + m], 0x88);
    const __m512 u2 = _mm512_shuffle_f32x4(r[m], r[4 + m], 0xDD);  // lanes g0L1 g0L3 g1L1 g1L3
    const __m512 v2 = _mm512_shuffle_f32x4(r[8 + m], r[12 + m], 0xDD);
    t[m] = _mm512_shuffle_f32x4(u, v, 0x88);
    t[8 + m] = _mm512_shuffle_f32x4(u, v, 0xDD);
    t[4 + m] = _mm512_shuffle_f32x4(u2, v2, 0x88);
    t[12 + m] = _mm512_shuffle_f32x4(u2, v2, 0xDD);
  }
#pragma GCC unroll 16
  for (int i = 0; i < 16; ++i) r[i] = t[i];
}
CR_AVX512 inline void transpose_block(__m512d r[8]) {
  __m512d t[8];
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm512_unpacklo_pd(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_pd(r[2 * i], r[2 * i + 1]);
  }
  // t[2g + m], lane L: column 2L + m of rows 2g, 2g+1
#pragma GCC unroll 2
  for (int m = 0; m < 2; ++m) {
    const __m512d u = _mm512_shuffle_f64x2(t[m], t[2 + m], 0x88);
    const __m512d v = _mm512_shuffle_f64x2(t[4 + m], t[6 + m], 0x88);
    const __m512d u2 = _mm512_shuffle_f64x2(t[m], t[2 + m], 0xDD);
    const __m512d v2 = _mm512_shuffle_f64x2(t[4 + m], t[6 + m], 0xDD);
    r[m] = _mm512_shuffle_f64x2(u, v, 0x88);
    r[4 + m] = _mm512_shuffle_f64x2(u, v, 0xDD);
    r[2 + m] = _mm512_shuffle_f64x2(u2, v2, 0x88);
    r[6 + m] = _mm512_shuffle_f64x2(u2, v2, 0xDD);
  }
}

// Loads the W x W block of Wt rows [j0, j0 + W) (rows past N repeat row N-1; their columns are
// never stored), columns [k0, k0 + cnt) (the rest zero), and transposes it: r[kk] then holds
// column k0 + kk of those rows.
template <class O>
CR_AVX512 void load_transposed(typename O::V r[O::W], const typename O::T* Wt, index_t ldw,
                               index_t j0, index_t N, index_t k0, index_t cnt) {
  const typename O::Mask mk = lanes(cnt, typename O::T());
  // The W rows are W streams through memory at once, more than the hardware prefetchers follow
  // (a weight of 1024 x 1024 floats ran at a quarter of the memory bandwidth without this).
  constexpr index_t ahead = 512 / index_t(sizeof(typename O::T));
#pragma GCC unroll 16
  for (int rr = 0; rr < O::W; ++rr) {
    const typename O::T* row = Wt + std::min<index_t>(j0 + rr, N - 1) * ldw;
    if (k0 + ahead < ldw) _mm_prefetch(reinterpret_cast<const char*>(row + k0 + ahead), _MM_HINT_T0);
    r[rr] = O::load(mk, row + k0);
  }
  transpose_block(r);
}

// W (N, K) row-major -> W^T (K, N) row-major, through W x W register blocks.
template <class O>
CR_AVX512 void transpose_avx512(typename O::T* dst, const typename O::T* Wt, index_t N,
                                index_t K) {
  typename O::V r[O::W];
  for (index_t k0 = 0; k0 < K; k0 += O::W) {
    const index_t cnt = std::min<index_t>(O::W, K - k0);
    for (index_t j0 = 0; j0 < N; j0 += O::W) {
      const typename O::Mask mj = lanes(N - j0, typename O::T());
      load_transposed<O>(r, Wt, K, j0, N, k0, cnt);
      for (index_t kk = 0; kk < cnt; ++kk) O::store(dst + (k0 + kk) * N + j0, mj, r[kk]);
    }
  }
}

// C (M, N) = alpha A B^T + beta C for M <= MR rows (a GEMV for M = 1): A (M, K) with row
// stride lda, Bt (N, K) row-major with row stride ldb, read in place through register
// transposes, so that neither operand is packed (a single row would not repay packing the
// weight). Same arithmetic per element as the GEMM, depth blocks of kc included.
template <class O, int MR>
CR_AVX512 void gemv_bt(index_t N, index_t K, index_t kc, typename O::T alpha,
                       const typename O::T* A, index_t lda, const typename O::T* Bt, index_t ldb,
                       typename O::T beta, typename O::T* C, index_t ldc) {
  using T = typename O::T;
  using V = typename O::V;
  V r[O::W];
  for (index_t j0 = 0; j0 < N; j0 += O::W) {
    const typename O::Mask mj = lanes(N - j0, T());
    for (index_t pc = 0; pc < K; pc += kc) {
      const index_t kend = std::min(K, pc + kc);
      const T beta_k = pc == 0 ? beta : T(1);
      V acc[MR];
#pragma GCC unroll 4
      for (int i = 0; i < MR; ++i) acc[i] = O::zero();
      for (index_t k0 = pc; k0 < kend; k0 += O::W) {
        const index_t cnt = std::min<index_t>(O::W, kend - k0);
        load_transposed<O>(r, Bt, ldb, j0, N, k0, cnt);
        if (cnt == O::W) {
#pragma GCC unroll 16
          for (int kk = 0; kk < O::W; ++kk)
#pragma GCC unroll 4
            for (int i = 0; i < MR; ++i)
              acc[i] = O::fma(O::set1(A[i * lda + k0 + kk]), r[kk], acc[i]);
        } else {
          for (index_t kk = 0; kk < cnt; ++kk)
#pragma GCC unroll 4
            for (int i = 0; i < MR; ++i)
              acc[i] = O::fma(O::set1(A[i * lda + k0 + kk]), r[kk], acc[i]);
        }
      }
      const V va = O::set1(alpha), vb = O::set1(beta_k);
#pragma GCC unroll 4
      for (int i = 0; i < MR; ++i) {
        T* c = C + i * ldc + j0;
        V v = O::mul(va, acc[i]);
        if (beta_k != T(0)) v = O::add(v, O::mul(vb, O::load(mj, c)));
        O::store(c, mj, v);
      }
    }
  }
}

template <class O>
CR_AVX512 void gemv_bt_rows(index_t M, index_t N, index_t K, index_t kc, typename O::T alpha,
                            const typename O::T* A, index_t lda, const typename O::T* Bt,
                            index_t ldb, typename O::T beta, typename O::T* C, index_t ldc) {
  // Four rows at a time share each transposed block.
  for (index_t i = 0; i < M; i += 4) {
    const index_t m = std::min<index_t>(4, M - i);
    const typename O::T* a = A + i * lda;
    typename O::T* c = C + i * ldc;
    if (m == 4) gemv_bt<O, 4>(N, K, kc, alpha, a, lda, Bt, ldb, beta, c, ldc);
    else if (m == 3) gemv_bt<O, 3>(N, K, kc, alpha, a, lda, Bt, ldb, beta, c, ldc);
    else if (m == 2) gemv_bt<O, 2>(N, K, kc, alpha, a, lda, Bt, ldb, beta, c, ldc);
    else gemv_bt<O, 1>(N, K, kc, alpha, a, lda, Bt, ldb, beta, c, ldc);
  }
}
#undef CR_AVX512
#pragma GCC diagnostic pop

#endif  // CHAINRULE_X86_KERNELS

bool small_path_available() {
#if CHAINRULE_X86_KERNELS
  // Follows the GEMM's ISA path (tests switch it to run every one); gemm enabled avx512 only on
  // a CPU that has it.
  return gemm_isa_level() == 2;
#else
  return false;
#endif
}

// C (M, N) = alpha A B^T + beta C with B (N, K) read in place: for a few rows (M <= 4 is
// where it beats transposing B once). Same conditions as small_gemm.
template <class T>
void small_gemv_bt(index_t M, index_t N, index_t K, T alpha, const T* A, index_t lda, const T* Bt,
                   index_t ldb, T beta, T* C, index_t ldc) {
#if CHAINRULE_X86_KERNELS
  const index_t kc = std::max<index_t>(1, gemm_get_blocking().kc);
  if constexpr (sizeof(T) == 4)
    gemv_bt_rows<VF>(M, N, K, kc, alpha, A, lda, Bt, ldb, beta, C, ldc);
  else
    gemv_bt_rows<VD>(M, N, K, kc, alpha, A, lda, Bt, ldb, beta, C, ldc);
#else
  (void)M, (void)N, (void)K, (void)alpha, (void)A, (void)lda, (void)Bt, (void)ldb, (void)beta,
      (void)C, (void)ldc;
#endif
}

template <class T>
void small_gemm(index_t M, index_t N, index_t K, T alpha, const T* A, index_t ars, index_t acs,
                const T* B, index_t ldb, T beta, T* C, index_t ldc, const T* crow) {
#if CHAINRULE_X86_KERNELS
  const index_t kc = std::max<index_t>(1, gemm_get_blocking().kc);
  if constexpr (sizeof(T) == 4)
    small_gemm_avx512<VF>(M, N, K, kc, alpha, A, ars, acs, B, ldb, beta, C, ldc, crow);
  else
    small_gemm_avx512<VD>(M, N, K, kc, alpha, A, ars, acs, B, ldb, beta, C, ldc, crow);
#else
  (void)M, (void)N, (void)K, (void)alpha, (void)A, (void)ars, (void)acs, (void)B, (void)ldb,
      (void)beta, (void)C, (void)ldc, (void)crow;
#endif
}

// Pieces for splitting a small-path product of M N K multiply-adds over the pool: one below
// 2^19 (~5 us of one core, about what a hand-off costs), then one per 2^18.
inline std::int64_t small_pieces(index_t M, index_t N, index_t K) {
  const double work = double(M) * double(N) * double(K);
  return work >= 524288.0 ? std::int64_t(work / 262144.0) : 1;
}

// small_gemm with C's rows split over the pool once the product is worth a hand-off: the
// per-segment input projections and their gradients in BPTT (n B = 256 rows against a 16-wide
// input) were serial work with the other threads idle. Every element keeps its arithmetic, so
// the bits are the same for any split.
template <class T>
void small_gemm_rows(index_t M, index_t N, index_t K, T alpha, const T* A, index_t ars,
                     index_t acs, const T* B, index_t ldb, T beta, T* C, index_t ldc,
                     const T* crow = nullptr) {
  parallel_ranges(M, 8, small_pieces(M, N, K), [=](std::int64_t r0, std::int64_t r1) {
    small_gemm<T>(r1 - r0, N, K, alpha, A + r0 * ars, ars, acs, B, ldb, beta, C + r0 * ldc, ldc,
                  crow);
  });
}

// W (O, I) -> W^T (I, O) in a per-thread buffer (predict may run on many threads at once),
// transposed in 32 x 32 blocks so that both sides stay in cache lines.
template <class T>
const T* transposed(const T* W, index_t I, index_t O) {
  thread_local Buffer<T> wt;
  wt.resize_for_overwrite(checked_mul(I, O));
  T* dst = wt.data();
#if CHAINRULE_X86_KERNELS
  if (small_path_available()) {
    if constexpr (sizeof(T) == 4) transpose_avx512<VF>(dst, W, O, I);
    else transpose_avx512<VD>(dst, W, O, I);
    return dst;
  }
#endif
  constexpr index_t bs = 32;
  for (index_t o0 = 0; o0 < O; o0 += bs)
    for (index_t i0 = 0; i0 < I; i0 += bs) {
      const index_t o1 = std::min(O, o0 + bs), i1 = std::min(I, i0 + bs);
      for (index_t o = o0; o < o1; ++o)
        for (index_t i = i0; i < i1; ++i) dst[i * O + o] = W[o * I + i];
    }
  return dst;
}

// The larger products, over the pool: op(B) (the weight, or the activations a gradient GEMM
// multiplies by) packed once, in two column halves packed at the same time, then row blocks of
// op(A) times each half as many small tasks, several per thread. gemm splits into one task per
// thread, each packing all of op(B) again; when another process holds a core, the caller then
// waits for the whole of a preempted thread's half. With several tasks per thread the caller
// takes over the blocks not yet started. gemm_prepacked gives gemm's bits, and neither a row
// block nor a column half changes any element's arithmetic.
//
// pack_halves packs op(B) (K, N) into packs[0] and packs[1] and returns the first half's width
// (N when there is one half): split at a multiple of 32, which every register tile's NR divides.
template <class T>
index_t pack_halves(PackedB<T>* const packs[2], bool tb, index_t K, index_t N, const T* B,
                    index_t ldb) {
  const index_t n0 = N >= 64 ? std::min(N, (N / 2 + 31) / 32 * 32) : N;
  const int halves = n0 < N ? 2 : 1;
  parallel_for(halves, [packs, tb, n0, N, K, B, ldb](int h) {
    const index_t j = h ? n0 : 0, n = h ? N - n0 : n0;
    packs[h]->pack(tb, K, n, tb ? B + j * ldb : B + j, ldb);
  });
  return n0;
}

// Rows per block of run_halves: a multiple of 8 (both AVX-512 tiles' row counts divide 8 or 16
// well), about four blocks per thread.
inline index_t rows_per_block(index_t M, int threads) {
  return std::max<index_t>(8, (M + 4 * threads - 1) / (4 * threads) + 7) / 8 * 8;
}

// C (M, N) = alpha op(A) op(B) + beta C from pack_halves' panels, in row blocks of
// rows_per_block. Each half's blocks are taken first by the task of the same index as the one
// that packed it, which usually runs on the same thread (the caller takes the first task), so
// the panels are read from that core's own caches; a task that runs out of its own blocks then
// takes the other half's. Cross-core reads of the panels cost most when the two vCPUs sit on
// different chiplets, which on these shared machines comes and goes (rnn and wide then ran at half
// speed on two threads, slower than on one).
//
// bias (N values, or null): C's rows are b first, each task setting its own block just before it
// accumulates onto it (beta = 1), so the block stays in that core's cache.
template <class T>
void run_halves(PackedB<T>* const packs[2], index_t n0, index_t N, bool ta, index_t M, T alpha,
                const T* A, index_t lda, T beta, T* C, index_t ldc, const T* bias = nullptr) {
  const index_t per = rows_per_block(M, get_num_threads());
  const int halves = n0 < N ? 2 : 1;
  const int blocks = int((M + per - 1) / per);
  auto block = [=](int h, int i) {
    const index_t lo = index_t(i) * per, len = std::min(per, M - lo);
    const index_t j = h ? n0 : 0, w = halves == 1 ? N : h ? N - n0 : n0;
    if (bias)
      for (index_t r = lo; r < lo + len; ++r)
        std::memcpy(C + r * ldc + j, bias + j, std::size_t(w) * sizeof(T));
    gemm_prepacked<T>(ta, len, alpha, ta ? A + lo : A + lo * lda, lda, *packs[h], beta,
                      C + lo * ldc + j, ldc);
  };
  if (halves == 1) {
    parallel_for(blocks, [&](int i) { block(0, i); });
    return;
  }
  std::atomic<int> next[2] = {{0}, {0}};
  parallel_for(2, [&](int h) {
    for (int k = 0; k < 2; ++k) {
      const int hh = h ^ k;
      for (int i = next[hh].fetch_add(1); i < blocks; i = next[hh].fetch_add(1)) block(hh, i);
    }
  });
}

// Packing space per calling thread (predict may run on several at once), shared by every layer's
// products. The tasks get plain pointers: inside them, the name of a thread_local would denote
// the running worker's own instance.
template <class T>
PackedB<T>* const* scratch_packs() {
  thread_local PackedB<T> space[2];
  thread_local PackedB<T>* const packs[2] = {&space[0], &space[1]};
  return packs;
}

// y = b broadcast over rows (B, O): rows over the pool above ~64 K elements (a 256 x 1024
// minibatch: 1 MiB of copies).
template <class T>
void broadcast_bias(T* y, const T* b, index_t B, index_t O) {
  parallel_ranges(B, 1, B * O / 65536, [=](std::int64_t r0, std::int64_t r1) {
    for (index_t r = r0; r < r1; ++r) std::memcpy(y + r * O, b, std::size_t(O) * sizeof(T));
  });
}

// bias: as run_halves (then beta = 1, and C's ldc = N).
template <class T>
void gemm_rows_parallel(bool ta, bool tb, index_t M, index_t N, index_t K, T alpha, const T* A,
                        index_t lda, const T* B, index_t ldb, T beta, T* C, index_t ldc,
                        const T* bias = nullptr) {
  const int threads = get_num_threads();
  if (threads <= 1 || M < 2 * rows_per_block(M, threads) || skinny_product(M, N, K, sizeof(T))) {
    if (bias) broadcast_bias(C, bias, M, N);
    gemm<T>(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    return;
  }
  PackedB<T>* const* const packs = scratch_packs<T>();
  const index_t n0 = pack_halves<T>(packs, tb, K, N, B, ldb);
  run_halves<T>(packs, n0, N, ta, M, alpha, A, lda, beta, C, ldc, bias);
}

// W^T in column panels, for the small path with a cached weight: panel p holds columns
// [p P, p P + w) of W^T (I, O), w = min(P, O - p P), as an (I, w) row-major block at offset
// p P I. A panel is one sequential stream (W^T row-major strides a whole row between the 256
// bytes a tile reads per depth step), and P = 4 vectors is the width the one- and two-row tiles
// read per step.
template <class T>
constexpr index_t panel_width() {
  return index_t(256 / sizeof(T));
}

template <class T>
void make_panels(T* dst, const T* W, index_t I, index_t O) {
  constexpr index_t P = panel_width<T>();
  const index_t panels = (O + P - 1) / P;
  parallel_ranges(panels, 1, I * O / 262144, [=](std::int64_t p0, std::int64_t p1) {
    for (index_t p = p0; p < p1; ++p) {
      const index_t j = p * P, w = std::min(P, O - j);
#if CHAINRULE_X86_KERNELS
      if constexpr (sizeof(T) == 4) transpose_avx512<VF>(dst + j * I, W + j * I, w, I);
      else transpose_avx512<VD>(dst + j * I, W + j * I, w, I);
#else
      for (index_t o = 0; o < w; ++o)
        for (index_t i = 0; i < I; ++i) dst[j * I + i * w + o] = W[(j + o) * I + i];
#endif
    }
  });
}

// Rows [r0, r1) and panels [p0, p1) of y = x W^T + beta y, reading make_panels' layout.
template <class T>
void panels_gemm(index_t r0, index_t r1, index_t p0, index_t p1, const T* x, const T* panels,
                 index_t I, index_t O, const T* b, T* y) {
  constexpr index_t P = panel_width<T>();
  for (index_t p = p0; p < p1; ++p) {
    const index_t j = p * P, w = std::min(P, O - j);
    small_gemm<T>(r1 - r0, w, I, T(1), x + r0 * I, I, 1, panels + j * I, w, b ? T(1) : T(0),
                  y + r0 * O + j, O, b ? b + j : b);
  }
}

}  // namespace

template <class T>
void DenseWeightCache<T>::forward(T* y, const T* x, const T* W, const T* b, index_t B, index_t I,
                                  index_t O, std::uint64_t version) const {
  const bool few = B <= 4 && small_path_available();
  const bool small = !few && small_product(B, O, I);
  // One output column, small weights, and skinny products past a few rows, as dense_forward
  // (nothing worth keeping).
  if (B <= 0 || O == 1 || I * O < 16384 || (B > 4 && skinny_product(B, O, I, sizeof(T)))) {
    dense_forward(y, x, W, b, B, I, O);
    return;
  }
  const bool panels_kind = few || small;
  const GemmBlocking blk = gemm_get_blocking();
  const Key key = panels_kind ? Key{W, I, O, version, 0, 0, 0}
                              : Key{W, I, O, version, gemm_isa_level(), blk.kc, blk.nc};
  PackedB<T>* const packs[2] = {&packed_[0], &packed_[1]};
  bool uncached = false;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    Key& held = panels_kind ? panels_key_ : packed_key_;
    Key& seen = panels_kind ? panels_seen_ : packed_seen_;
    if (!(held == key)) {
      if (!(seen == key)) {  // this version's first forward of this kind: keep nothing yet
        seen = key;
        uncached = true;
      } else {
        held = Key{};  // invalid until the copy is complete (a throw leaves it so)
        if (panels_kind) {
          panels_.resize_for_overwrite(checked_mul(I, O));
          make_panels(panels_.data(), W, I, O);
        } else {
          n0_ = pack_halves<T>(packs, true, I, O, W, I);
        }
        held = key;
      }
    }
  }
  const T beta = b ? T(1) : T(0);
  if (panels_kind) {  // the bias comes in through small_gemm's crow
    const T* panels = panels_.data();
    if (uncached) {
      thread_local Buffer<T> scratch;
      scratch.resize_for_overwrite(checked_mul(I, O));
      make_panels(scratch.data(), W, I, O);
      panels = scratch.data();
    }
    constexpr index_t P = panel_width<T>();
    const index_t np = (O + P - 1) / P;
    if (few)  // panels over the pool, each with its whole k loop
      parallel_ranges(np, 1, small_pieces(B, O, I), [=](std::int64_t p0, std::int64_t p1) {
        panels_gemm<T>(0, B, p0, p1, x, panels, I, O, b, y);
      });
    else
      parallel_ranges(B, 8, small_pieces(B, O, I), [=](std::int64_t r0, std::int64_t r1) {
        panels_gemm<T>(r0, r1, 0, np, x, panels, I, O, b, y);
      });
    return;
  }
  if (uncached)  // packs into the per-thread scratch
    gemm_rows_parallel<T>(false, true, B, O, I, T(1), x, I, W, I, beta, y, O, b);
  else
    run_halves<T>(packs, n0_, O, false, B, T(1), x, I, beta, y, O, b);
}

template <class T>
std::size_t DenseWeightCache<T>::bytes() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return panels_.capacity_bytes() + packed_[0].bytes() + packed_[1].bytes();
}

template class DenseWeightCache<float>;
template class DenseWeightCache<double>;

// Sizes a dense call can take: none negative (every kernel below would take a negative count
// as an empty loop, or, with I == 0, fill a negative length), and B * I, B * O, O * I within
// index_t.
namespace {
void check_dense_sizes(const char* what, index_t B, index_t I, index_t O) {
  if (B < 0 || I < 0 || O < 0)
    throw std::invalid_argument(std::string(what) + " sizes must be >= 0, got B=" +
                                std::to_string(B) + ", I=" + std::to_string(I) + ", O=" +
                                std::to_string(O));
  checked_mul(B, I);
  checked_mul(B, O);
  checked_mul(O, I);
}
}  // namespace

template <class T>
void dense_forward(T* y, const T* x, const T* W, const T* b, index_t B, index_t I, index_t O) {
  // x (B, I), W (O, I), b (O) -> y (B, O)
  // y = b broadcast over rows, then y += x W^T (beta = 1), or y = x W^T without bias.
  check_dense_sizes("dense_forward", B, I, O);
  if (I == 0) {  // an empty sum: y = b, or zeros (the kernels below write nothing for k = 0)
    if (b) broadcast_bias(y, b, B, O);
    else std::fill(y, y + B * O, T(0));
    return;
  }
  const T beta = b ? T(1) : T(0);
  const bool few = B <= 4 && small_path_available();
  // (One output at any size: the GEMM would compute a whole 32-column tile for it, 32 times the
  // multiply-adds; 100,000 rows x 32 inputs took 8x torch's time.)
  const bool gemv = !few && O == 1 && small_path_available();
  const bool small =
      !few && !gemv && !skinny_product(B, O, I, sizeof(T)) && small_product(B, O, I);
  if (b && (few || gemv)) broadcast_bias(y, b, B, O);  // else in the products below
  // A few rows (single-sample predict): read W in place, through register transposes that bound
  // it below memory speed (a 1 x 1024 x 1024 float forward took 200 us on one core), so output
  // columns split over the pool like small_gemm_rows' rows; each keeps its whole k loop.
  if (few) {
    parallel_ranges(O, 16, small_pieces(B, O, I), [=](std::int64_t o0, std::int64_t o1) {
      small_gemv_bt<T>(B, o1 - o0, I, T(1), x, I, W + o0 * I, I, beta, y + o0, O);
    });
  }
  // One output (a regression head on every time step, B = batch * time rows): y^T = W x^T is
  // the same GEMV with the roles swapped, and y (B, 1) is laid out as y^T (1, B). Each y_r is
  // still sum over i of fma(x_ri, W_i) in i order: the same bits. Rows split over the pool in
  // whole vectors; each element keeps its k loop, so any split gives the same bits.
  else if (gemv)
    parallel_ranges(B, 16, small_pieces(B, 1, I), [=](std::int64_t r0, std::int64_t r1) {
      small_gemv_bt<T>(1, r1 - r0, I, T(1), W, I, x + r0 * I, I, beta, y + r0, B);
    });
  else if (small)
    small_gemm_rows<T>(B, O, I, T(1), x, I, 1, transposed(W, I, O), O, beta, y, O, b);
  else
    gemm_rows_parallel<T>(false, true, B, O, I, T(1), x, I, W, I, beta, y, O, b);
}

template <class T>
void dense_backward(T* dx, T* dW, T* db, const T* dy, const T* x, const T* W, index_t B, index_t I,
                    index_t O) {
  dense_backward_impl(dx, dW, db, dy, x, W, B, I, O, true);
}

template <class T>
void dense_backward_impl(T* dx, T* dW, T* db, const T* dy, const T* x, const T* W, index_t B,
                         index_t I, index_t O, bool accumulate) {
  // dy (B, O), x (B, I), W (O, I)
  // y_bo = sum_i x_bi W_oi + b_o, so
  //   dL/dx_bi = sum_o dy_bo W_oi      -> dx = dy W       (B, I), overwritten
  //   dL/dW_oi = sum_b dy_bo x_bi      -> dW += dy^T x    (O, I), accumulated (= when !accumulate)
  //   dL/db_o  = sum_b dy_bo           -> db += 1^T dy    (O),    accumulated (= when !accumulate)
  check_dense_sizes("dense_backward", B, I, O);
  const T beta = accumulate ? T(1) : T(0);
  if (dx) {
    if (!skinny_product(B, I, O, sizeof(T)) && small_product(B, I, O))
      small_gemm_rows<T>(B, I, O, T(1), dy, O, 1, W, I, T(0), dx, I);
    else
      gemm_rows_parallel<T>(false, false, B, I, O, T(1), dy, O, W, I, T(0), dx, I);
  }
  if (dW) {
    if (!skinny_product(O, I, B, sizeof(T)) && small_product(O, I, B))
      small_gemm_rows<T>(O, I, B, T(1), dy, 1, O, x, I, beta, dW, I);
    else
      gemm_rows_parallel<T>(true, false, O, I, B, T(1), dy, O, x, I, beta, dW, I);
  }
  if (db) {
    // Column slices over the pool above ~64 K elements; each db_o still adds the rows in order
    // (elem col_sums: column blocks in registers on the current ISA path).
    const elem::ElemOps<T>& ops = elem::ops<T>();
    parallel_ranges(O, 16, B * O / 65536, [=, &ops](std::int64_t o0, std::int64_t o1) {
      if (B == 0) {
        if (!accumulate) std::fill(db + o0, db + o1, T(0));
        return;
      }
      // Row 0 overwrites when not accumulating, with the sum zeroing first would compute.
      if (!accumulate)
        for (index_t o = o0; o < o1; ++o) db[o] = T(0) + dy[o];  // -0 becomes +0, as in 0 += -0
      const index_t r = accumulate ? 0 : 1;
      ops.col_sums(db + o0, dy + r * O + o0, B - r, o1 - o0, O);
    });
  }
}

template void dense_forward<float>(float*, const float*, const float*, const float*, index_t,
                                   index_t, index_t);
template void dense_forward<double>(double*, const double*, const double*, const double*, index_t,
                                    index_t, index_t);
template void dense_backward<float>(float*, float*, float*, const float*, const float*,
                                    const float*, index_t, index_t, index_t);
template void dense_backward<double>(double*, double*, double*, const double*, const double*,
                                     const double*, index_t, index_t, index_t);
template void dense_backward_impl<float>(float*, float*, float*, const float*, const float*,
                                         const float*, index_t, index_t, index_t, bool);
template void dense_backward_impl<double>(double*, double*, double*, const double*,
                                          const double*, const double*, index_t, index_t, index_t,
                                          bool);

}  // namespace chainrule
