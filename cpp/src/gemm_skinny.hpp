// The GEMM's path for skinny products (gemm_skinny.cpp): M or N of a few, the other side and K of
// any length (the weight gradient and dx of one-feature or one-output Dense layers). Shared by the
// driver (gemm.cpp), the dispatcher (gemm_skinny.cpp) and the ISA kernels (kernels/skinny_x86.cpp).
// Plain C types only: the ISA files include this header.
#pragma once
#include <cstdint>

namespace chainrule {
namespace gemm_detail {

// A skinny kernel: for s < S, l < L,
//   acc(s, l) = fma(P(s, k), Q(k, l), acc) for k = 0 .. kb-1 in order, from acc = +0, then
//   C(s, l) = alpha acc                        when beta == 0 (C not read),
//   C(s, l) = alpha acc + beta C(s, l)         otherwise (two products and a sum, unfused),
// with P(s, k) = P[s * ps + k * pk] (broadcast), Q(k, l) = Q[k * qk + l * ql] (vectors along l;
// ql == 1, or else qk == 1: Q's l are rows contiguous in k, which the kernels transpose in
// registers) and C(s, l) = C[s * cs + l * cl]. One depth block of the GEMM's arithmetic, the
// operands' roles chosen so that the long output side lies along the vectors.
template <class T>
using SkinnyKernel = void (*)(std::int64_t S, std::int64_t L, std::int64_t kb, T alpha, const T* P,
                              std::int64_t ps, std::int64_t pk, const T* Q, std::int64_t qk,
                              std::int64_t ql, T beta, T* C, std::int64_t cs, std::int64_t cl);

// The portable kernel (gemm_skinny.cpp): the baseline path, and the reference for the others.
void skinny_ref_f32(std::int64_t S, std::int64_t L, std::int64_t kb, float alpha, const float* P,
                    std::int64_t ps, std::int64_t pk, const float* Q, std::int64_t qk,
                    std::int64_t ql, float beta, float* C, std::int64_t cs, std::int64_t cl);
void skinny_ref_f64(std::int64_t S, std::int64_t L, std::int64_t kb, double alpha, const double* P,
                    std::int64_t ps, std::int64_t pk, const double* Q, std::int64_t qk,
                    std::int64_t ql, double beta, double* C, std::int64_t cs, std::int64_t cl);

#if CHAINRULE_X86_KERNELS
// kernels/skinny_x86.cpp, compiled once per target: AVX2 (8 float / 4 double lanes) and AVX-512
// (16 / 8 lanes).
namespace isa_v3 {
void skinny_f32(std::int64_t S, std::int64_t L, std::int64_t kb, float alpha, const float* P,
                std::int64_t ps, std::int64_t pk, const float* Q, std::int64_t qk, std::int64_t ql,
                float beta, float* C, std::int64_t cs, std::int64_t cl);
void skinny_f64(std::int64_t S, std::int64_t L, std::int64_t kb, double alpha, const double* P,
                std::int64_t ps, std::int64_t pk, const double* Q, std::int64_t qk, std::int64_t ql,
                double beta, double* C, std::int64_t cs, std::int64_t cl);
}  // namespace isa_v3
namespace isa_v4 {
void skinny_f32(std::int64_t S, std::int64_t L, std::int64_t kb, float alpha, const float* P,
                std::int64_t ps, std::int64_t pk, const float* Q, std::int64_t qk, std::int64_t ql,
                float beta, float* C, std::int64_t cs, std::int64_t cl);
void skinny_f64(std::int64_t S, std::int64_t L, std::int64_t kb, double alpha, const double* P,
                std::int64_t ps, std::int64_t pk, const double* Q, std::int64_t qk, std::int64_t ql,
                double beta, double* C, std::int64_t cs, std::int64_t cl);
}  // namespace isa_v4
#endif

// C (M, N) = alpha op(A) op(B) + beta C (gemm's contract; M, N, K > 0 and alpha != 0, arguments
// already checked) when the product is skinny enough for this path; false, touching nothing,
// when it is not. The same bits as the blocked GEMM, for any thread count.
template <class T>
bool gemm_skinny(bool trans_a, bool trans_b, std::int64_t M, std::int64_t N, std::int64_t K,
                 T alpha, const T* A, std::int64_t lda, const T* B, std::int64_t ldb, T beta, T* C,
                 std::int64_t ldc);

// Whether gemm() takes the skinny path for this shape (on the current ISA path and settings):
// callers with their own threading of the GEMM (dense.cpp) hand such products to gemm() instead.
bool gemm_skinny_takes(std::int64_t M, std::int64_t N, std::int64_t K, int elem_size);

}  // namespace gemm_detail
}  // namespace chainrule
