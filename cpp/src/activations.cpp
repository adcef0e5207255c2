// Activation kernels: x (R, C) -> y (R, C) and their backward passes.
// The elementwise loops are written so that gcc vectorises them; softmax and log_softmax subtract
// the row maximum first, so no exp overflows and every row of softmax sums to 1 within rounding.
#include "chainrule/activations.hpp"

#include "vmath.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>

namespace chainrule {

Activation activation_from_name(const std::string& name) {
  if (name == "identity") return Activation::identity;
  if (name == "sigmoid") return Activation::sigmoid;
  if (name == "tanh") return Activation::tanh;
  if (name == "relu") return Activation::relu;
  if (name == "leaky_relu") return Activation::leaky_relu;
  if (name == "softmax") return Activation::softmax;
  if (name == "log_softmax") return Activation::log_softmax;
  throw std::invalid_argument("unknown activation '" + name +
                              "'; expected one of identity, sigmoid, tanh, relu, leaky_relu, "
                              "softmax, log_softmax");
}

const char* activation_name(Activation a) {
  switch (a) {
    case Activation::identity: return "identity";
    case Activation::sigmoid: return "sigmoid";
    case Activation::tanh: return "tanh";
    case Activation::relu: return "relu";
    case Activation::leaky_relu: return "leaky_relu";
    case Activation::softmax: return "softmax";
    case Activation::log_softmax: return "log_softmax";
  }
  return "?";
}

namespace {

template <class T>
void softmax_rows(T* y, const T* x, index_t R, index_t C, bool log) {
  for (index_t r = 0; r < R; ++r) {
    const T* xr = x + r * C;
    T* yr = y + r * C;
    T mx = -std::numeric_limits<T>::infinity();
    for (index_t c = 0; c < C; ++c) mx = std::max(mx, xr[c]);
    const bool finite = std::isfinite(mx);
    if (!finite) mx = 0;  // all -inf (or +inf) rows: let the arithmetic say NaN/0
    T sum = 0;
    if (log) {
      // log sum_c e^{x_c - m} = log1p(sum over the others): the maximum contributes exactly 1, and
      // log1p keeps the relative precision that log(1 + small) loses when one logit dominates.
      T lse;
      if (finite) {
        index_t am = 0;
        while (xr[am] != mx) ++am;
        for (index_t c = 0; c < am; ++c) sum += vexp1(xr[c] - mx);
        for (index_t c = am + 1; c < C; ++c) sum += vexp1(xr[c] - mx);
        lse = std::log1p(sum);
      } else {
        for (index_t c = 0; c < C; ++c) sum += vexp1(xr[c] - mx);
        lse = std::log(sum);
      }
      for (index_t c = 0; c < C; ++c) yr[c] = (xr[c] - mx) - lse;
    } else {
      for (index_t c = 0; c < C; ++c) yr[c] = vexp1(xr[c] - mx);
      for (index_t c = 0; c < C; ++c) sum += yr[c];
      const T inv = T(1) / sum;
      for (index_t c = 0; c < C; ++c) yr[c] *= inv;
    }
  }
}

template <class T>
void forward_impl(T* y, const T* x, index_t R, index_t C, Activation a, T slope) {
  const index_t n = checked_mul(R, C);
  switch (a) {
    case Activation::identity:
      if (y != x) std::copy(x, x + n, y);
      break;
    case Activation::sigmoid:
      vsigmoid(y, x, n);  // 1 / (1 + e^{-x}), as PyTorch computes it
      break;
    case Activation::tanh:
      vtanh(y, x, n);
      break;
    case Activation::relu:
      // x < 0 ? 0 : x keeps NaN as NaN, as PyTorch's clamp_min does.
      for (index_t i = 0; i < n; ++i) y[i] = x[i] < T(0) ? T(0) : x[i];
      break;
    case Activation::leaky_relu:
      for (index_t i = 0; i < n; ++i) y[i] = x[i] > T(0) ? x[i] : x[i] * slope;
      break;
    case Activation::softmax: softmax_rows(y, x, R, C, false); break;
    case Activation::log_softmax: softmax_rows(y, x, R, C, true); break;
  }
}

template <class T>
void backward_impl(T* dx, const T* dy, const T* x, const T* y, index_t R, index_t C, Activation a,
                   T slope) {
  const index_t n = checked_mul(R, C);
  switch (a) {
    case Activation::identity:
      if (dx != dy) std::copy(dy, dy + n, dx);
      break;
    case Activation::sigmoid:  // dx = dy * y (1 - y)
      for (index_t i = 0; i < n; ++i) dx[i] = dy[i] * ((T(1) - y[i]) * y[i]);
      break;
    case Activation::tanh:  // dx = dy * (1 - y^2)
      for (index_t i = 0; i < n; ++i) dx[i] = dy[i] * (T(1) - y[i] * y[i]);
      break;
    case Activation::relu:  // dx = dy where y > 0 (PyTorch's threshold_backward on the output)
      for (index_t i = 0; i < n; ++i) {
        const T d = dy[i];  // an unconditional load lets the select vectorise
        dx[i] = y[i] > T(0) ? d : T(0);
      }
      break;
    case Activation::leaky_relu:  // dx = dy where x > 0, slope * dy elsewhere
      for (index_t i = 0; i < n; ++i) {
        const T d = dy[i];
        dx[i] = x[i] > T(0) ? d : d * slope;
      }
      break;
    case Activation::softmax:
      // dx_c = y_c (dy_c - sum_j dy_j y_j): the Jacobian diag(y) - y y^T applied to dy.
      for (index_t r = 0; r < R; ++r) {
        const T* dyr = dy + r * C; const T* yr = y + r * C; T* dxr = dx + r * C;
        T dot = 0;
        for (index_t c = 0; c < C; ++c) dot += dyr[c] * yr[c];
        for (index_t c = 0; c < C; ++c) dxr[c] = yr[c] * (dyr[c] - dot);
      }
      break;
    case Activation::log_softmax:
      // dx_c = dy_c - softmax_c * sum_j dy_j, with softmax = exp(y).
      for (index_t r = 0; r < R; ++r) {
        const T* dyr = dy + r * C; const T* yr = y + r * C; T* dxr = dx + r * C;
        T sum = 0;
        for (index_t c = 0; c < C; ++c) sum += dyr[c];
        for (index_t c = 0; c < C; ++c) dxr[c] = dyr[c] - vexp1(yr[c]) * sum;
      }
      break;
  }
}

}  // namespace

template <class T>
void activation_forward(T* y, const T* x, index_t R, index_t C, Activation a, T slope) {
  forward_impl(y, x, R, C, a, slope);
}
template <class T>
void activation_backward(T* dx, const T* dy, const T* x, const T* y, index_t R, index_t C,
                         Activation a, T slope) {
  backward_impl(dx, dy, x, y, R, C, a, slope);
}

// The reference twins evaluate one element at a time through the same formulas, without any
// loop structure the compiler could vectorise differently; the tuned path must match them.
template <class T>
void activation_forward_ref(T* y, const T* x, index_t R, index_t C, Activation a, T slope) {
  if (a == Activation::softmax || a == Activation::log_softmax) {
    for (index_t r = 0; r < R; ++r) softmax_rows(y + r * C, x + r * C, 1, C, a == Activation::log_softmax);
    return;
  }
  for (index_t i = 0; i < R * C; ++i) forward_impl(y + i, x + i, 1, 1, a, slope);
}
template <class T>
void activation_backward_ref(T* dx, const T* dy, const T* x, const T* y, index_t R, index_t C,
                             Activation a, T slope) {
  if (a == Activation::softmax || a == Activation::log_softmax) {
    for (index_t r = 0; r < R; ++r)
      backward_impl(dx + r * C, dy + r * C, x + r * C, y + r * C, 1, C, a, slope);
    return;
  }
  for (index_t i = 0; i < R * C; ++i) backward_impl(dx + i, dy + i, x + i, y + i, 1, 1, a, slope);
}

template void activation_forward<float>(float*, const float*, index_t, index_t, Activation, float);
template void activation_backward<float>(float*, const float*, const float*, const float*, index_t, index_t,
                                       Activation, float);
template void activation_forward_ref<float>(float*, const float*, index_t, index_t, Activation, float);
template void activation_backward_ref<float>(float*, const float*, const float*, const float*, index_t,
                                           index_t, Activation, float);
template void activation_forward<double>(double*, const double*, index_t, index_t, Activation, double);
template void activation_backward<double>(double*, const double*, const double*, const double*, index_t, index_t,
                                       Activation, double);
template void activation_forward_ref<double>(double*, const double*, index_t, index_t, Activation, double);
template void activation_backward_ref<double>(double*, const double*, const double*, const double*, index_t,
                                           index_t, Activation, double);

}  // namespace chainrule
