// Loss kernels: value and gradient of pred (R, C), with PyTorch's formulas (elementwise_impl.hpp).
// The value is summed in double whatever T is; the gradient is written in T.
#include "chainrule/losses.hpp"

#include <stdexcept>
#include <string>

#include "elementwise.hpp"

namespace chainrule {

LossKind loss_from_name(const std::string& name) {
  if (name == "mse") return LossKind::mse;
  if (name == "bce") return LossKind::bce;
  if (name == "bce_with_logits") return LossKind::bce_with_logits;
  if (name == "cross_entropy") return LossKind::cross_entropy;
  throw std::invalid_argument("unknown loss '" + name +
                              "'; expected one of mse, bce, bce_with_logits, cross_entropy");
}
const char* loss_name(LossKind k) {
  switch (k) {
    case LossKind::mse: return "mse";
    case LossKind::bce: return "bce";
    case LossKind::bce_with_logits: return "bce_with_logits";
    case LossKind::cross_entropy: return "cross_entropy";
  }
  return "?";
}
Reduction reduction_from_name(const std::string& name) {
  if (name == "mean") return Reduction::mean;
  if (name == "sum") return Reduction::sum;
  throw std::invalid_argument("unknown reduction '" + name + "'; expected 'mean' or 'sum'");
}
const char* reduction_name(Reduction r) { return r == Reduction::mean ? "mean" : "sum"; }

// The kernels live in elementwise_impl.hpp, compiled once per ISA path; here the checks that
// throw, the reduction's scale and the choice of path.
template <class T>
double loss_forward_backward(T* grad, const T* pred, const T* target, index_t R, index_t C,
                             LossKind kind, Reduction red) {
  const index_t n = checked_mul(R, C);
  if (n == 0) throw std::invalid_argument("loss of an empty batch: got 0 elements");
  const bool mean = red == Reduction::mean;
  const elem::ElemOps<T>& k = elem::ops<T>();
  double sum = 0;
  switch (kind) {
    case LossKind::mse:  // dL/dp = 2 (p - t) [/ n]
      sum = k.mse(grad, pred, target, n, T(mean ? 2.0 / double(n) : 2.0));
      break;
    case LossKind::bce:
      for (index_t i = 0; i < n; ++i)
        if (!(pred[i] >= T(0) && pred[i] <= T(1)))
          throw std::invalid_argument(
              "bce expects probabilities in [0, 1] (put a Sigmoid before it, or use "
              "'bce_with_logits'), got " + std::to_string(double(pred[i])) + " at element " +
              std::to_string(i));
      for (index_t i = 0; i < n; ++i)  // as torch: "all elements of target should be between 0 and 1"
        if (!(target[i] >= T(0) && target[i] <= T(1)))
          throw std::invalid_argument("bce expects targets in [0, 1], got " +
                                      std::to_string(double(target[i])) + " at element " +
                                      std::to_string(i));
      sum = k.bce(grad, pred, target, n, T(mean ? 1.0 / double(n) : 1.0));
      break;
    case LossKind::bce_with_logits:
      sum = k.bce_logits(grad, pred, target, n, T(mean ? 1.0 / double(n) : 1.0));
      break;
    case LossKind::cross_entropy:  // 'mean' divides by the rows
      sum = k.cross_entropy_prob(grad, pred, target, R, C, T(mean ? 1.0 / double(R) : 1.0));
      return mean ? sum / double(R) : sum;
  }
  return mean ? sum / double(n) : sum;
}

template <class T>
double cross_entropy_index(T* grad, const T* x, const std::int64_t* target, index_t R, index_t C,
                           Reduction red) {
  // L_r = lse(x_r) - x_{r, t_r};  dL/dx_c = softmax_c - [c == t_r]
  if (R == 0 || C == 0) throw std::invalid_argument("cross_entropy of an empty batch");
  for (index_t r = 0; r < R; ++r)
    if (target[r] < 0 || target[r] >= C)
      throw std::invalid_argument("class target " + std::to_string(target[r]) + " at row " +
                                  std::to_string(r) + " is out of range; expected 0 <= target < " +
                                  std::to_string(C));
  const bool mean = red == Reduction::mean;
  const double sum =
      elem::ops<T>().cross_entropy_index(grad, x, target, R, C, T(mean ? 1.0 / double(R) : 1.0));
  return mean ? sum / double(R) : sum;
}

template double loss_forward_backward<float>(float*, const float*, const float*, index_t, index_t,
                                             LossKind, Reduction);
template double loss_forward_backward<double>(double*, const double*, const double*, index_t,
                                              index_t, LossKind, Reduction);
template double cross_entropy_index<float>(float*, const float*, const std::int64_t*, index_t,
                                           index_t, Reduction);
template double cross_entropy_index<double>(double*, const double*, const std::int64_t*, index_t,
                                            index_t, Reduction);

}  // namespace chainrule
