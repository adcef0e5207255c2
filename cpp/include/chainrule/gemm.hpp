// General matrix multiply on row-major operands: C = alpha * op(A) * op(B) + beta * C,
// op(A) (M, K), op(B) (K, N), C (M, N). With trans_a, A is stored (K, M); with trans_b, B is
// stored (N, K). Leading dimensions are row strides in elements. BLAS convention: when beta == 0,
// C is not read (NaN or garbage in C does not propagate); when alpha == 0 or K == 0, A and B are
// not read and C = beta * C (NaN or inf in A or B does not propagate either).
//
// This header is the one interface to GEMM: callers never name an implementation, so the kernels
// can change (blocking, micro-kernels, ISA dispatch, threads) without touching them.
#pragma once
#include <string>
#include <vector>

#include "chainrule/tensor.hpp"

namespace chainrule {

template <class T>
void gemm(bool trans_a, bool trans_b, index_t M, index_t N, index_t K, T alpha, const T* A,
          index_t lda, const T* B, index_t ldb, T beta, T* C, index_t ldc);

// The plain triple loop: the reference for tests and the fallback. Same contract as gemm.
template <class T>
void gemm_ref(bool trans_a, bool trans_b, index_t M, index_t N, index_t K, T alpha, const T* A,
              index_t lda, const T* B, index_t ldb, T beta, T* C, index_t ldc);

// Cache block sizes of the blocked driver, one table for all callers. Tests shrink them to hit
// every edge of the blocking with small matrices; 0 restores the defaults.
struct GemmBlocking {
  index_t mc;  // rows of op(A) per packed block (L2)
  index_t kc;  // depth per packed panel (L1 for the B micro-panel)
  index_t nc;  // columns of op(B) per packed panel (L3)
};
GemmBlocking gemm_get_blocking();
void gemm_set_blocking(index_t mc, index_t kc, index_t nc);

// Skinny products (M or N a few, gemm_skinny.cpp) skip the register tiles for a path that computes
// no padding, with the same bits. Which ones: max_side < 0 (the default) the tuned rule; 0 none
// (every product on the blocked tiles); w > 0 every product with min(M, N) <= w. For tests, which
// compare the two paths and reach every edge of the skinny one.
void gemm_set_skinny(index_t max_side);
index_t gemm_get_skinny();

// op(B) (K, N) packed once for many products with different A: a recurrent weight used by every
// time step of a sequence. pack() copies B into the micro-panel layout of the current ISA path and
// block sizes; gemm_prepacked then skips packing B. The source B must stay unchanged while the
// PackedB is used (if the ISA path or block sizes change in between, gemm_prepacked falls back
// to an ordinary gemm on it). Results are the same bits as gemm(trans_a, trans_b, ...).
template <class T>
class PackedB {
 public:
  // trans_b false: B is stored (K, N) with row stride ldb; true: B is stored (N, K).
  void pack(bool trans_b, index_t K, index_t N, const T* B, index_t ldb);
  index_t K() const { return K_; }
  index_t N() const { return N_; }
  std::size_t bytes() const { return data_.capacity_bytes(); }

 private:
  template <class U>
  friend void gemm_prepacked(bool, index_t, U, const U*, index_t, const PackedB<U>&, U, U*,
                             index_t);
  Buffer<T> data_;
  index_t K_ = 0, N_ = 0, kc_ = 0, nc_ = 0;
  const void* kernel_ = nullptr;  // the micro-kernel the layout is for
  bool trans_ = false;
  const T* src_ = nullptr;
  index_t ld_ = 0;
};

// C (M, N) = alpha op(A) B + beta C with B pre-packed (same contract as gemm otherwise).
template <class T>
void gemm_prepacked(bool trans_a, index_t M, T alpha, const T* A, index_t lda,
                    const PackedB<T>& B, T beta, T* C, index_t ldc);

// The instruction-set path the kernels run on: "baseline" (portable), "avx2" (x86-64-v3) or
// "avx512" (x86-64-v4); the GEMM sets it and the elementwise and recurrent-cell tables follow it.
// Chosen at first use as the best the CPU supports, or as the environment variable
// CHAINRULE_ISA says. Every path computes the same bits.
const char* gemm_isa();
// The same path as a number (0 baseline, 1 avx2, 2 avx512): a load and two comparisons, for the
// dispatchers that ask on every call (tiny training steps ask many times per microsecond).
int gemm_isa_level();
// The paths this CPU supports, oldest first.
std::vector<std::string> gemm_supported_isas();
// Switches path (tests run every one); std::invalid_argument for an unknown or unsupported name.
void gemm_set_isa(const std::string& name);

}  // namespace chainrule
