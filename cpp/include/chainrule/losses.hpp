// Loss functions, value and gradient together, with PyTorch's formulas.
//   mse:             mean/sum of (p - t)^2
//   bce:             -(t log p + (1 - t) log(1 - p)) on probabilities, each log clamped at -100
//   bce_with_logits: (1 - t) x + log(1 + exp(-x)) in the stable form max(-x, 0) + log(e^{-m} + e^{-x-m})
//   cross_entropy:   -sum_c t_c log_softmax(x)_c per row, with class indices or probability targets
// Reduction 'mean' divides by the element count for mse/bce/bce_with_logits and by the number of
// rows R for cross_entropy, as PyTorch does. The gradient (if grad != nullptr) is dLoss/dpred,
// overwritten. The value is accumulated in double and returned as double.
#pragma once
#include <cstdint>
#include <string>
#include "chainrule/tensor.hpp"

namespace chainrule {

enum class LossKind { mse, bce, bce_with_logits, cross_entropy };
enum class Reduction { mean, sum };

LossKind loss_from_name(const std::string& name);  // std::invalid_argument for unknown names
const char* loss_name(LossKind k);
Reduction reduction_from_name(const std::string& name);
const char* reduction_name(Reduction r);

// pred (R, C), target (R, C) of the same dtype -> loss; grad (R, C) or nullptr.
// For cross_entropy the targets are class probabilities per row.
template <class T>
double loss_forward_backward(T* grad, const T* pred, const T* target, index_t R, index_t C,
                             LossKind kind, Reduction reduction);

// Cross entropy with class-index targets: logits (R, C), target (R) in [0, C) -> loss;
// grad (R, C) or nullptr. std::invalid_argument names the first out-of-range target.
template <class T>
double cross_entropy_index(T* grad, const T* logits, const std::int64_t* target, index_t R,
                           index_t C, Reduction reduction);

}  // namespace chainrule
