// Gradient clipping over many tensors, after torch.nn.utils.clip_grad_norm_ / clip_grad_value_.
#include "chainrule/clip.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

#include "elementwise.hpp"

namespace chainrule {

template <class T>
double clip_grad_norm(T* const* grads, const index_t* sizes, std::size_t count, double max_norm,
                      double norm_type, bool error_if_nonfinite) {
  // Per-tensor norms first, then the norm of those norms, as PyTorch stacks and reduces them.
  // Sums run in double: for float32 this is at least as accurate as PyTorch's float reduction.
  // The long loops run on the current ISA path (elementwise_impl.hpp); the p-norm's pow stays here.
  const elem::ElemOps<T>& ops = elem::ops<T>();
  const bool inf_norm = std::isinf(norm_type);
  double total = 0;
  for (std::size_t k = 0; k < count; ++k) {
    const T* g = grads[k];
    double nk = 0;
    if (inf_norm) {
      nk = ops.max_abs(g, sizes[k]);  // the first NaN if there is one
      total = std::isnan(nk) ? nk : std::max(total, nk);
    } else if (norm_type == 2.0) {
      nk = std::sqrt(ops.sum_squares(g, sizes[k]));  // in a fixed blocking of 16 lanes
      total += nk * nk;
    } else {
      for (index_t i = 0; i < sizes[k]; ++i) nk += std::pow(std::abs(double(g[i])), norm_type);
      nk = std::pow(nk, 1.0 / norm_type);
      total += std::pow(nk, norm_type);
    }
  }
  if (!inf_norm) total = norm_type == 2.0 ? std::sqrt(total) : std::pow(total, 1.0 / norm_type);
  // PyTorch rounds the total to the gradient dtype before using it.
  const T total_t = T(total);
  if (error_if_nonfinite && !std::isfinite(double(total_t)))
    throw std::domain_error("the total norm of the gradients is non-finite (" +
                            std::to_string(double(total_t)) +
                            "), so it cannot be clipped; pass error_if_nonfinite=False to clip "
                            "anyway");
  // clip_coef = max_norm / (total + 1e-6), clamped to at most 1, always multiplied in.
  T coef = T(max_norm) / (total_t + T(1e-6));
  if (coef > T(1)) coef = T(1);
  for (std::size_t k = 0; k < count; ++k) ops.scale(grads[k], sizes[k], coef);
  return double(total_t);
}

template <class T>
void clip_grad_value(T* const* grads, const index_t* sizes, std::size_t count, double clip_value) {
  const T hi = T(clip_value), lo = -hi;
  const elem::ElemOps<T>& ops = elem::ops<T>();
  for (std::size_t k = 0; k < count; ++k) ops.clamp(grads[k], sizes[k], lo, hi);  // NaN stays NaN
}

template double clip_grad_norm<float>(float* const*, const index_t*, std::size_t, double, double,
                                      bool);
template double clip_grad_norm<double>(double* const*, const index_t*, std::size_t, double, double,
                                       bool);
template void clip_grad_value<float>(float* const*, const index_t*, std::size_t, double);
template void clip_grad_value<double>(double* const*, const index_t*, std::size_t, double);

}  // namespace chainrule
