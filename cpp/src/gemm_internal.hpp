// GEMM internals shared by the blocked driver (gemm.cpp) and the packing routines (gemm_pack.cpp).
// Packed layouts (BLIS): op(A) in MR-tall micro-panels, each stored k-major as kc columns of MR
// values; op(B) in NR-wide micro-panels, each stored k-major as kc rows of NR values. Edges are
// zero-padded to full MR / NR, so a micro-kernel always runs on a whole register tile; the padded
// rows and columns are never stored, and zeros (not stale memory, which may hold denormals) keep
// them at full speed.
#pragma once
#include "chainrule/tensor.hpp"

namespace chainrule {
namespace gemm_detail {

// Packs the (rows, depth) operand X, element (r, k) at X[r * rs + k * cs], into ceil(rows / w)
// micro-panels of w rows: dst[(r / w) * w * depth + k * w + r % w] = X(r, k); the rows past
// `rows` in the last panel are zeros. dst holds round_up(rows, w) * depth elements.
// Either rs or cs is 1 for every operand the driver packs; both are handled as fast paths.
// a b + c rounded once, in T, as the ISA kernels' FMA instructions round it: the portable
// kernels' multiply-add. __builtin_fma is the double function: on float operands it rounds the
// exact a b + c to double and then to float, which differs from one rounding when that double
// lands exactly on a float midpoint (rare: an a b far below c, one multiply-add in a whole
// training run; tests/test_isa_fma.py builds such cases).
inline float fused(float a, float b, float c) { return __builtin_fmaf(a, b, c); }
inline double fused(double a, double b, double c) { return __builtin_fma(a, b, c); }

template <class T>
void pack_panels(index_t w, index_t rows, index_t depth, const T* X, index_t rs, index_t cs,
                 T* dst);

// A packing routine with pack_panels' contract; each ISA path brings its own (SIMD transposes).
template <class T>
using PackFn = void (*)(index_t w, index_t rows, index_t depth, const T* X, index_t rs,
                        index_t cs, T* dst);

// op(A) (mb, kb) block at A, as stored row-major with leading dimension lda
// (trans_a: A is stored (kb, mb)) -> MR-tall micro-panels.
template <class T>
void pack_a(PackFn<T> pack, index_t mr, bool trans_a, index_t mb, index_t kb, const T* A,
            index_t lda, T* dst) {
  // op(A)(i, k) = trans_a ? A[k * lda + i] : A[i * lda + k]
  if (trans_a) pack(mr, mb, kb, A, index_t(1), lda, dst);
  else pack(mr, mb, kb, A, lda, index_t(1), dst);
}

// op(B) (kb, nb) block at B (trans_b: B is stored (nb, kb)) -> NR-wide micro-panels.
// This packs op(B)^T (nb, kb) into panels of NR of its rows, which is the same layout.
template <class T>
void pack_b(PackFn<T> pack, index_t nr, bool trans_b, index_t kb, index_t nb, const T* B,
            index_t ldb, T* dst) {
  // op(B)(k, j) = trans_b ? B[j * ldb + k] : B[k * ldb + j]
  if (trans_b) pack(nr, nb, kb, B, ldb, index_t(1), dst);
  else pack(nr, nb, kb, B, index_t(1), ldb, dst);
}

// A micro-kernel: C (m, n) tile at c with row stride ldc, m <= MR, n <= NR:
//   C = alpha * a b + beta * C,  a one packed MR x kc micro-panel of op(A), b one kc x NR of op(B).
// beta == 0 writes C without reading it. Only the m x n corner of the MR x NR tile is stored.
template <class T>
using Ukernel = void (*)(index_t kc, T alpha, const T* a, const T* b, T beta, T* c, index_t ldc,
                         index_t m, index_t n);

// The same tile with op(A) read where it lies instead of packed: a(i, k) = a[i * ars + k * acs],
// for full tiles only (m == MR). The same arithmetic, so the same bits as run on packed panels.
template <class T>
using UkernelSA = void (*)(index_t kc, T alpha, const T* a, index_t ars, index_t acs, const T* b,
                           T beta, T* c, index_t ldc, index_t m, index_t n);

// A micro-kernel with its register tile; the driver reads MR and NR from here, so a kernel with
// another tile (an ISA-specific one) plugs in without touching the driver or the packing.
template <class T>
struct MicroKernel {
  index_t mr;
  index_t nr;
  Ukernel<T> run;
  PackFn<T> pack;  // packs both operands for this kernel's path
  const char* name;
  UkernelSA<T> run_sa = nullptr;  // the strided twin, where the path has one
  // One row of op(A) read in place (m == 1), where the path has it: a product's last rows
  // (a batch of one in the recurrent time loop) without padding them to MR rows of work.
  UkernelSA<T> run_row = nullptr;
};

// Portable kernels, vectorised by the compiler for whatever the baseline ISA is (SSE2 on x86-64).
// Every kernel, portable or ISA-specific, accumulates acc = fma(a, b, acc) in k order and then
// forms alpha acc (+ beta C) unfused, so all paths give the same bits.
void ukernel_generic_f32_4x8(index_t kc, float alpha, const float* a, const float* b, float beta,
                             float* c, index_t ldc, index_t m, index_t n);
void ukernel_generic_f64_4x4(index_t kc, double alpha, const double* a, const double* b,
                             double beta, double* c, index_t ldc, index_t m, index_t n);

#if CHAINRULE_X86_KERNELS
// ISA-specific kernels, each in a file compiled for its target (cpp/src/kernels/).
// Packing with SIMD transposes (kernels/pack_x86.cpp, compiled once per target).
namespace isa_v3 {
void pack_panels_f32(index_t w, index_t rows, index_t depth, const float* X, index_t rs,
                     index_t cs, float* dst);
void pack_panels_f64(index_t w, index_t rows, index_t depth, const double* X, index_t rs,
                     index_t cs, double* dst);
void ukernel_avx2_f32_6x16(index_t kc, float alpha, const float* a, const float* b, float beta,
                           float* c, index_t ldc, index_t m, index_t n);
void ukernel_avx2_f64_6x8(index_t kc, double alpha, const double* a, const double* b,
                          double beta, double* c, index_t ldc, index_t m, index_t n);
}  // namespace isa_v3
namespace isa_v4 {
void pack_panels_f32(index_t w, index_t rows, index_t depth, const float* X, index_t rs,
                     index_t cs, float* dst);
void pack_panels_f64(index_t w, index_t rows, index_t depth, const double* X, index_t rs,
                     index_t cs, double* dst);
void ukernel_avx512_f32_14x32(index_t kc, float alpha, const float* a, const float* b,
                              float beta, float* c, index_t ldc, index_t m, index_t n);
void ukernel_avx512_f64_14x16(index_t kc, double alpha, const double* a, const double* b,
                              double beta, double* c, index_t ldc, index_t m, index_t n);
void ukernel_avx512_f32_8x32(index_t kc, float alpha, const float* a, const float* b, float beta,
                             float* c, index_t ldc, index_t m, index_t n);
void ukernel_avx512_f64_8x16(index_t kc, double alpha, const double* a, const double* b,
                             double beta, double* c, index_t ldc, index_t m, index_t n);
void ukernel_avx512_f32_8x32_sa(index_t kc, float alpha, const float* a, index_t ars,
                                index_t acs, const float* b, float beta, float* c, index_t ldc,
                                index_t m, index_t n);
void ukernel_avx512_f64_8x16_sa(index_t kc, double alpha, const double* a, index_t ars,
                                index_t acs, const double* b, double beta, double* c,
                                index_t ldc, index_t m, index_t n);
void ukernel_avx512_f32_1x32_sa(index_t kc, float alpha, const float* a, index_t ars,
                                index_t acs, const float* b, float beta, float* c, index_t ldc,
                                index_t m, index_t n);
void ukernel_avx512_f64_1x16_sa(index_t kc, double alpha, const double* a, index_t ars,
                                index_t acs, const double* b, double beta, double* c,
                                index_t ldc, index_t m, index_t n);
}  // namespace isa_v4
#endif

}  // namespace gemm_detail
}  // namespace chainrule
