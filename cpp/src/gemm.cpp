// GEMM: C = alpha op(A) op(B) + beta C on row-major operands.
// TODO(#2): the cache-blocked driver replaces the plain loop behind gemm().
#include "chainrule/gemm.hpp"

namespace chainrule {

namespace {
GemmBlocking g_blocking{256, 256, 4096};
}
GemmBlocking gemm_get_blocking() { return g_blocking; }
void gemm_set_blocking(index_t mc, index_t kc, index_t nc) {
  g_blocking = GemmBlocking{mc > 0 ? mc : 256, kc > 0 ? kc : 256, nc > 0 ? nc : 4096};
}

template <class T>
void gemm_ref(bool ta, bool tb, index_t M, index_t N, index_t K, T alpha, const T* A, index_t lda,
              const T* B, index_t ldb, T beta, T* C, index_t ldc) {
  for (index_t i = 0; i < M; ++i)
    for (index_t j = 0; j < N; ++j) {
      T acc = 0;
      for (index_t k = 0; k < K; ++k)
        acc += (ta ? A[k * lda + i] : A[i * lda + k]) * (tb ? B[j * ldb + k] : B[k * ldb + j]);
      C[i * ldc + j] = beta == T(0) ? alpha * acc : alpha * acc + beta * C[i * ldc + j];
    }
}

template <class T>
void gemm(bool ta, bool tb, index_t M, index_t N, index_t K, T alpha, const T* A, index_t lda,
          const T* B, index_t ldb, T beta, T* C, index_t ldc) {
  gemm_ref(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

template void gemm<float>(bool, bool, index_t, index_t, index_t, float, const float*, index_t,
                          const float*, index_t, float, float*, index_t);
template void gemm<double>(bool, bool, index_t, index_t, index_t, double, const double*, index_t,
                           const double*, index_t, double, double*, index_t);
template void gemm_ref<float>(bool, bool, index_t, index_t, index_t, float, const float*, index_t,
                              const float*, index_t, float, float*, index_t);
template void gemm_ref<double>(bool, bool, index_t, index_t, index_t, double, const double*,
                               index_t, const double*, index_t, double, double*, index_t);

}  // namespace chainrule
