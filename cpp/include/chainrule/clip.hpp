// Gradient clipping across a set of tensors, after torch.nn.utils.clip_grad_norm_ and
// clip_grad_value_.
#pragma once
#include <cstddef>
#include "chainrule/tensor.hpp"

namespace chainrule {

// total = ||(||g_1||, ..., ||g_k||)||_p (p = norm_type; inf for the max norm);
// every g *= min(max_norm / (total + 1e-6), 1). Returns total, the norm before clipping.
// With error_if_nonfinite, a NaN or inf total throws std::domain_error and changes nothing.
template <class T>
double clip_grad_norm(T* const* grads, const index_t* sizes, std::size_t count, double max_norm,
                      double norm_type = 2.0, bool error_if_nonfinite = false);

// Every element clamped to [-clip_value, clip_value].
template <class T>
void clip_grad_value(T* const* grads, const index_t* sizes, std::size_t count, double clip_value);

}  // namespace chainrule
