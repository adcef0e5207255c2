// Loss kernels: value and gradient in one pass over pred (R, C), with PyTorch's formulas.
// The value is summed in double whatever T is; the gradient is written in T.
#include "chainrule/losses.hpp"

#include "vmath.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

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

namespace {

// Row x (C) -> its maximum m and ls = log sum_c exp(x_c - m), so that lse = m + ls. Kept apart:
// x_c - lse = (x_c - m) - ls is exact to the rounding of ls, where m + ls would round at the
// magnitude of m (float32 logits of -1e4 gave ln 2 with a relative error of 3e-4).
template <class T>
T log_sum_exp_shifted(const T* x, index_t C, T& m) {
  m = -std::numeric_limits<T>::infinity();
  for (index_t c = 0; c < C; ++c) m = std::max(m, x[c]);
  if (!std::isfinite(m)) return T(0);  // -inf row: lse = -inf; inf/NaN: propagate through m
  // The maximum contributes exactly 1: log1p of the others' sum keeps the relative precision
  // of small losses (a confident, correct prediction), which log(1 + small) would lose.
  index_t am = 0;
  while (x[am] != m) ++am;
  T s = 0;
  for (index_t c = 0; c < am; ++c) s += vexp1(x[c] - m);
  for (index_t c = am + 1; c < C; ++c) s += vexp1(x[c] - m);
  return std::log1p(s);
}

template <class T>
double mse(T* grad, const T* p, const T* t, index_t n, Reduction red) {
  // L = sum (p - t)^2 [/ n];  dL/dp = 2 (p - t) [/ n]
  double sum = 0;
  const T norm = T(red == Reduction::mean ? 2.0 / double(n) : 2.0);
  for (index_t i = 0; i < n; ++i) {
    const T d = p[i] - t[i];
    sum += double(d) * double(d);
    if (grad) grad[i] = norm * d;
  }
  return red == Reduction::mean ? sum / double(n) : sum;
}

template <class T>
double bce(T* grad, const T* p, const T* t, index_t n, Reduction red) {
  // L = -(t max(log p, -100) + (1 - t) max(log(1 - p), -100));
  // dL/dp = (p - t) / max(p (1 - p), 1e-12)   (PyTorch's EPSILON)
  for (index_t i = 0; i < n; ++i)
    if (!(p[i] >= T(0) && p[i] <= T(1)))
      throw std::invalid_argument(
          "bce expects probabilities in [0, 1] (put a Sigmoid before it, or use "
          "'bce_with_logits'), got " + std::to_string(double(p[i])) + " at element " +
          std::to_string(i));
  double sum = 0;
  const T scale = T(red == Reduction::mean ? 1.0 / double(n) : 1.0);
  for (index_t i = 0; i < n; ++i) {
    const T lp = std::max(std::log(p[i]), T(-100));
    const T l1p = std::max(std::log1p(-p[i]), T(-100));
    sum += double((t[i] - T(1)) * l1p - t[i] * lp);
    if (grad) grad[i] = (p[i] - t[i]) / std::max((T(1) - p[i]) * p[i], T(1e-12)) * scale;
  }
  return red == Reduction::mean ? sum / double(n) : sum;
}

template <class T>
double bce_logits(T* grad, const T* x, const T* t, index_t n, Reduction red) {
  // L = (1 - t) x - log sigmoid(x), log sigmoid(x) = min(x, 0) - log1p(e^{-|x|}) (no overflow);
  // dL/dx = sigmoid(x) - t
  double sum = 0;
  const T scale = T(red == Reduction::mean ? 1.0 / double(n) : 1.0);
  for (index_t i = 0; i < n; ++i) {
    const T xi = x[i];
    const T log_sig = std::min(xi, T(0)) - std::log1p(vexp1(-std::abs(xi)));
    sum += double((T(1) - t[i]) * xi - log_sig);
    if (grad) grad[i] = (vsigmoid1(xi) - t[i]) * scale;
  }
  return red == Reduction::mean ? sum / double(n) : sum;
}

template <class T>
double cross_entropy_prob(T* grad, const T* x, const T* t, index_t R, index_t C, Reduction red) {
  // L_r = -sum_c t_c (x_c - lse);  dL/dx_c = softmax_c * sum_j t_j - t_c
  double sum = 0;
  const T scale = T(red == Reduction::mean ? 1.0 / double(R) : 1.0);
  for (index_t r = 0; r < R; ++r) {
    const T* xr = x + r * C; const T* tr = t + r * C;
    T m;
    const T ls = log_sum_exp_shifted(xr, C, m);
    T tsum = 0; double lr = 0;
    for (index_t c = 0; c < C; ++c) { tsum += tr[c]; lr -= double(tr[c] * ((xr[c] - m) - ls)); }
    sum += lr;
    if (grad) {
      T* gr = grad + r * C;
      for (index_t c = 0; c < C; ++c) gr[c] = (vexp1((xr[c] - m) - ls) * tsum - tr[c]) * scale;
    }
  }
  return red == Reduction::mean ? sum / double(R) : sum;
}

}  // namespace

template <class T>
double loss_forward_backward(T* grad, const T* pred, const T* target, index_t R, index_t C,
                             LossKind kind, Reduction red) {
  const index_t n = checked_mul(R, C);
  if (n == 0) throw std::invalid_argument("loss of an empty batch: got 0 elements");
  switch (kind) {
    case LossKind::mse: return mse(grad, pred, target, n, red);
    case LossKind::bce: return bce(grad, pred, target, n, red);
    case LossKind::bce_with_logits: return bce_logits(grad, pred, target, n, red);
    case LossKind::cross_entropy: return cross_entropy_prob(grad, pred, target, R, C, red);
  }
  return 0;
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
  double sum = 0;
  const T scale = T(red == Reduction::mean ? 1.0 / double(R) : 1.0);
  for (index_t r = 0; r < R; ++r) {
    const T* xr = x + r * C;
    T m;
    const T ls = log_sum_exp_shifted(xr, C, m);
    sum += double((m - xr[target[r]]) + ls);
    if (grad) {
      T* gr = grad + r * C;
      for (index_t c = 0; c < C; ++c) gr[c] = vexp1((xr[c] - m) - ls) * scale;
      gr[target[r]] -= scale;
    }
  }
  return red == Reduction::mean ? sum / double(R) : sum;
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
