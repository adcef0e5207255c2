// Dense layer forward and backward, expressed as GEMMs.
// Accumulation rule: parameter gradients accumulate (+=), input gradients overwrite (=).
#include "chainrule/dense.hpp"

#include <cstring>

#include "chainrule/gemm.hpp"

namespace chainrule {

template <class T>
void dense_forward(T* y, const T* x, const T* W, const T* b, index_t B, index_t I, index_t O) {
  // x (B, I), W (O, I), b (O) -> y (B, O)
  // y = b broadcast over rows, then y += x W^T (beta = 1), or y = x W^T without bias.
  if (b)
    for (index_t r = 0; r < B; ++r) std::memcpy(y + r * O, b, std::size_t(O) * sizeof(T));
  gemm<T>(false, true, B, O, I, T(1), x, I, W, I, b ? T(1) : T(0), y, O);
}

template <class T>
void dense_backward(T* dx, T* dW, T* db, const T* dy, const T* x, const T* W, index_t B, index_t I,
                    index_t O) {
  // dy (B, O), x (B, I), W (O, I)
  // y_bo = sum_i x_bi W_oi + b_o, so
  //   dL/dx_bi = sum_o dy_bo W_oi      -> dx = dy W       (B, I), overwritten
  //   dL/dW_oi = sum_b dy_bo x_bi      -> dW += dy^T x    (O, I), accumulated
  //   dL/db_o  = sum_b dy_bo           -> db += 1^T dy    (O),    accumulated
  if (dx) gemm<T>(false, false, B, I, O, T(1), dy, O, W, I, T(0), dx, I);
  if (dW) gemm<T>(true, false, O, I, B, T(1), dy, O, x, I, T(1), dW, I);
  if (db) {
    for (index_t r = 0; r < B; ++r) {
      const T* __restrict row = dy + r * O;
      T* __restrict acc = db;
      for (index_t o = 0; o < O; ++o) acc[o] += row[o];
    }
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

}  // namespace chainrule
