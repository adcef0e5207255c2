// GEMM for skinny products: C (M, N) = alpha op(A) op(B) + beta C with M or N a few (S) and the
// other side (L) and K of any length: the weight gradient and dx of one-feature or one-output
// layers, (32 x 100000)(100000 x 1). The blocked driver pads S to a whole register tile (up to 32
// times the multiply-adds) and packs the long operand into padded panels; this path broadcasts
// the S scalars of the short operand per k and runs vectors along L, so no lane computes padding.
//
// Same bits as the blocked GEMM: every element accumulates acc = fma(a_ik, b_kj, acc) over k in
// order from +0, in the GEMM's depth blocks of kc, then C = alpha acc (+ beta C for the first
// block when beta != 0, C read only then; + C for later blocks), unfused. Vectors run across
// output elements, never along k; threads split L, each element computed whole by one of them.
#include "gemm_skinny.hpp"

#include <algorithm>
#include <atomic>

#include "chainrule/gemm.hpp"
#include "chainrule/tensor.hpp"
#include "chainrule/threads.hpp"
#include "gemm_internal.hpp"

namespace chainrule {
namespace gemm_detail {

namespace {

using idx = std::int64_t;

// ---------------------------------------------------------------------------------------------
// The portable kernel (gemm_skinny.hpp's contract): 8 lanes of accumulators along L per row of P,
// which gcc keeps in vector registers where the target has them. At the x86-64 baseline the fma
// is a library call, as in the portable GEMM kernels: a slow, exact fallback.
template <class T>
void skinny_ref(idx S, idx L, idx kb, T alpha, const T* P, idx ps, idx pk, const T* Q, idx qk,
                idx ql, T beta, T* C, idx cs, idx cl) {
  constexpr idx W = 8;
  for (idx l0 = 0; l0 < L; l0 += W) {
    const idx n = std::min(W, L - l0);
    for (idx s = 0; s < S; ++s) {
      T acc[W] = {};
      const T* p = P + s * ps;
      const T* q = Q + l0 * ql;
      for (idx k = 0; k < kb; ++k, p += pk, q += qk)
        for (idx j = 0; j < n; ++j) acc[j] = fused(*p, q[j * ql], acc[j]);
      T* c = C + s * cs + l0 * cl;
      for (idx j = 0; j < n; ++j)
        c[j * cl] = beta == T(0) ? alpha * acc[j] : alpha * acc[j] + beta * c[j * cl];
    }
  }
}

}  // namespace

void skinny_ref_f32(idx S, idx L, idx kb, float alpha, const float* P, idx ps, idx pk,
                    const float* Q, idx qk, idx ql, float beta, float* C, idx cs, idx cl) {
  skinny_ref<float>(S, L, kb, alpha, P, ps, pk, Q, qk, ql, beta, C, cs, cl);
}

void skinny_ref_f64(idx S, idx L, idx kb, double alpha, const double* P, idx ps, idx pk,
                    const double* Q, idx qk, idx ql, double beta, double* C, idx cs, idx cl) {
  skinny_ref<double>(S, L, kb, alpha, P, ps, pk, Q, qk, ql, beta, C, cs, cl);
}

namespace {

// The kernel of the current ISA path (gemm_isa_level follows the GEMM's).
SkinnyKernel<float> skinny_kernel(int level, float) {
#if CHAINRULE_X86_KERNELS
  if (level == 2) return &isa_v4::skinny_f32;
  if (level == 1) return &isa_v3::skinny_f32;
#endif
  (void)level;
  return &skinny_ref_f32;
}

SkinnyKernel<double> skinny_kernel(int level, double) {
#if CHAINRULE_X86_KERNELS
  if (level == 2) return &isa_v4::skinny_f64;
  if (level == 1) return &isa_v3::skinny_f64;
#endif
  (void)level;
  return &skinny_ref_f64;
}

// -1: the tuned rule below; 0: never; w > 0: every product with min(M, N) <= w (tests).
std::atomic<index_t> g_skinny_max{-1};

// The tuned rule: which products this path takes from the blocked GEMM (S = min(M, N); s_is_m:
// S is M). Measured with bench/skinny.py's shapes and a sweep of S = 1..16 against L = 64 .. 1e5
// and K = 8 .. 20000, all transposes, float and double, one thread (the ratios below are the
// tile GEMM's time over this path's):
//  - S <= 4: always. Mostly 1.3-17x on AVX-512 and AVX2; the exceptions are near-ties (0.9-1.1)
//    where both paths stream a 12-25 MB operand once with K <= 32.
//  - S <= 8 with K >= 64: 1.2-10x; with shorter depth the AVX-512 float64 and the M side lose.
//  - S <= 16 with K >= 256: 1.2-3x on AVX-512. On AVX2 only for the N side: its 6-row tile pads
//    the M side little and outruns this path there (0.6-0.8 at S = 12-16).
//  - The portable path: every multiply-add is a library fma on both paths, so the gain is the
//    padding saved (4 x 8 float, 4 x 4 double tiles): taken when the tile would compute 1.25x
//    the multiply-adds or more (1.1-7x measured; 0.8-0.9 where it pads less).
bool skinny_default(idx S, bool s_is_m, idx K, int elem_size, int level) {
  if (S > 16) return false;
  if (level == 0) {
    const idx tile = s_is_m || elem_size == 8 ? 4 : 8;  // gemm.cpp's portable tiles
    return (S + tile - 1) / tile * tile * 4 >= S * 5;
  }
  if (S <= 4) return true;
  if (S <= 8) return K >= 64;
  return K >= 256 && (level == 2 || !s_is_m);
}

}  // namespace

bool gemm_skinny_takes(idx M, idx N, idx K, int elem_size) {
  if (M <= 0 || N <= 0 || K <= 0) return false;
  const index_t limit = g_skinny_max.load(std::memory_order_relaxed);
  const idx S = std::min(M, N);
  if (limit >= 0) return S <= limit;
  return skinny_default(S, M <= N, K, elem_size, gemm_isa_level());
}

template <class T>
bool gemm_skinny(bool ta, bool tb, idx M, idx N, idx K, T alpha, const T* A, idx lda, const T* B,
                 idx ldb, T beta, T* C, idx ldc) {
  if (!gemm_skinny_takes(M, N, K, int(sizeof(T)))) return false;
  // The short side S gives the broadcast scalars P(s, k), the long side L the vectors Q(k, l).
  const bool s_is_m = M <= N;
  const idx S = s_is_m ? M : N, L = s_is_m ? N : M;
  const T *P, *Q;
  idx ps, pk, qk, ql, cs, cl;
  if (s_is_m) {  // C (S, L) itself: P = op(A), Q = op(B), rows of C along the vectors
    P = A, ps = ta ? 1 : lda, pk = ta ? lda : 1;
    Q = B, qk = tb ? 1 : ldb, ql = tb ? ldb : 1;
    cs = ldc, cl = 1;
  } else {  // C^T (S, L) = op(B)^T op(A)^T: P = op(B)^T, Q = op(A)^T, columns of C along them
    P = B, ps = tb ? ldb : 1, pk = tb ? 1 : ldb;
    Q = A, qk = ta ? lda : 1, ql = ta ? 1 : lda;
    cs = 1, cl = ldc;
  }
  if (L == 1) ql = 1;  // one lane, Q(k, 0) = Q[k * qk]: read as rows, nothing to transpose
  const SkinnyKernel<T> run = skinny_kernel(gemm_isa_level(), T());
  const idx kc = std::max<idx>(1, gemm_get_blocking().kc);
  // Output columns [l0, l1) of C (S, L), all of K: loop over K in depth blocks of kc, as the
  // GEMM: the first applies beta, later ones add.
  auto part = [&](idx l0, idx l1) {
    for (idx pc = 0; pc < K; pc += kc)
      run(S, l1 - l0, std::min(kc, K - pc), alpha, P + pc * pk, ps, pk, Q + pc * qk + l0 * ql, qk,
          ql, pc == 0 ? beta : T(1), C + l0 * cl, cs, cl);
  };
  // Threads split L in 64-element units (whole vectors on every path; 256 bytes of a float row
  // of C) once the product is worth a hand-off (the GEMM's 64^3 multiply-adds).
  const double work = double(S) * double(L) * double(K);
  parallel_ranges(L, 64, work >= 262144.0 ? L : 1, part);
  return true;
}

template bool gemm_skinny<float>(bool, bool, idx, idx, idx, float, const float*, idx, const float*,
                                 idx, float, float*, idx);
template bool gemm_skinny<double>(bool, bool, idx, idx, idx, double, const double*, idx,
                                  const double*, idx, double, double*, idx);

}  // namespace gemm_detail

void gemm_set_skinny(index_t max_side) {
  gemm_detail::g_skinny_max.store(max_side < 0 ? -1 : max_side, std::memory_order_relaxed);
}

index_t gemm_get_skinny() { return gemm_detail::g_skinny_max.load(std::memory_order_relaxed); }

}  // namespace chainrule
