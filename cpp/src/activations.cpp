// Activation kernels: x (R, C) -> y (R, C) and their backward passes: names, checks, and the
// choice of ISA path (the loops are elementwise_impl.hpp). Softmax and log_softmax subtract the
// row maximum first, so no exp overflows and every row of softmax sums to 1 within rounding.
#include "chainrule/activations.hpp"

#include <algorithm>
#include <stdexcept>

#include "chainrule/threads.hpp"
#include "elementwise.hpp"

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

// The kernels live in elementwise_impl.hpp, compiled once per ISA path; these validate and pick
// the path. Activation's values are the table's codes:
static_assert(int(Activation::identity) == elem::kIdentity && int(Activation::sigmoid) == elem::kSigmoid &&
              int(Activation::tanh) == elem::kTanh && int(Activation::relu) == elem::kRelu &&
              int(Activation::leaky_relu) == elem::kLeakyRelu &&
              int(Activation::softmax) == elem::kSoftmax &&
              int(Activation::log_softmax) == elem::kLogSoftmax,
              "Activation and elem::ActCode disagree");

// An Activation cast from an out-of-range integer would select no kernel and leave y unwritten.
void check_activation(Activation a) {
  if (int(a) < int(Activation::identity) || int(a) > int(Activation::log_softmax))
    throw std::invalid_argument("unknown activation code " + std::to_string(int(a)) +
                                "; expected 0 (identity) .. 6 (log_softmax)");
}

namespace {

// Large blocks of exp-bound work are split over the thread pool: each task runs the same kernel
// on a contiguous range of whole rows (elementwise activations: of elements, cut at multiples of
// 64), so the bits never depend on the thread count. Below kParallelWork (elements weighted by
// their cost: an exp is about 8 simple operations) one thread does it all, as a hand-off would
// cost more. The cheap maps (relu, the backward of tanh and sigmoid, ...) stay on one thread:
// they are bound by memory, and a second thread measured slower for freshly allocated outputs
// (both fault in pages).
constexpr double kParallelWork = 131072;
constexpr index_t kAlign = 64;

bool row_wise(Activation a) { return a == Activation::softmax || a == Activation::log_softmax; }

double cost(Activation a, bool backward) {  // 0: never split
  switch (a) {
    case Activation::sigmoid:
    case Activation::tanh:
    case Activation::softmax: return backward ? 0 : 8;
    case Activation::log_softmax: return 8;
    default: return 0;
  }
}

// Elements from which the cheap maps split too when their output is already mapped (mnist's
// relu layers, 128 x 256, ran on one thread while the other waited: 5 % of a step).
constexpr index_t kMappedSplit = 16384;

// run(begin, end) over [0, units) in pieces of multiples of align, over the pool when the
// weighted work pays for the hand-off.
template <class F>
void split(index_t units, index_t align, double work, const F& run) {
  parallel_ranges(units, align, work >= kParallelWork ? units : 1, run);
}

// The work split() weighs: the cost-weighted elements, or, for a cheap map into mapped memory
// of at least kMappedSplit elements, enough to split.
double weighted(index_t n, double cost, bool mapped_output) {
  if (cost == 0 && mapped_output && n >= kMappedSplit) return kParallelWork;
  return double(n) * cost;
}

}  // namespace

template <class T>
void activation_forward(T* y, const T* x, index_t R, index_t C, Activation a, T slope,
                        bool mapped_output) {
  check_activation(a);
  const index_t n = checked_mul(R, C);
  const auto fwd = elem::ops<T>().act_forward;
  const double work = weighted(n, cost(a, false), mapped_output);
  if (row_wise(a))
    split(R, 1, work, [&](index_t r0, index_t r1) {
      fwd(y + r0 * C, x + r0 * C, r1 - r0, C, int(a), slope);
    });
  else
    split(n, kAlign, work, [&](index_t i0, index_t i1) {
      fwd(y + i0, x + i0, 1, i1 - i0, int(a), slope);
    });
}

template <class T>
void activation_backward(T* dx, const T* dy, const T* x, const T* y, index_t R, index_t C,
                         Activation a, T slope, bool mapped_output) {
  check_activation(a);
  const index_t n = checked_mul(R, C);
  const auto bwd = elem::ops<T>().act_backward;
  const double work = weighted(n, cost(a, true), mapped_output);
  // An activation reads x or y, not always both: a caller may pass nullptr for the other.
  auto at = [](const T* p, index_t i) { return p ? p + i : p; };
  if (row_wise(a))
    split(R, 1, work, [&](index_t r0, index_t r1) {
      bwd(dx + r0 * C, dy + r0 * C, at(x, r0 * C), at(y, r0 * C), r1 - r0, C, int(a), slope);
    });
  else
    split(n, kAlign, work, [&](index_t i0, index_t i1) {
      bwd(dx + i0, dy + i0, at(x, i0), at(y, i0), 1, i1 - i0, int(a), slope);
    });
}

// The reference twins run the portable copy one element (softmax: one row) at a time, so that no
// loop structure the compiler could vectorise differently is involved; every path must match them.
namespace {
const elem::ElemOps<float>& portable(float) { return elem::baseline::kernels.f32; }
const elem::ElemOps<double>& portable(double) { return elem::baseline::kernels.f64; }
}  // namespace

template <class T>
void activation_forward_ref(T* y, const T* x, index_t R, index_t C, Activation a, T slope) {
  check_activation(a);
  const index_t n = checked_mul(R, C);
  const auto& k = portable(T());
  if (a == Activation::softmax || a == Activation::log_softmax) {
    for (index_t r = 0; r < R; ++r) k.act_forward(y + r * C, x + r * C, 1, C, int(a), slope);
    return;
  }
  for (index_t i = 0; i < n; ++i) k.act_forward(y + i, x + i, 1, 1, int(a), slope);
}
template <class T>
void activation_backward_ref(T* dx, const T* dy, const T* x, const T* y, index_t R, index_t C,
                             Activation a, T slope) {
  check_activation(a);
  const index_t n = checked_mul(R, C);
  const auto& k = portable(T());
  if (a == Activation::softmax || a == Activation::log_softmax) {
    for (index_t r = 0; r < R; ++r)
      k.act_backward(dx + r * C, dy + r * C, x + r * C, y + r * C, 1, C, int(a), slope);
    return;
  }
  for (index_t i = 0; i < n; ++i) k.act_backward(dx + i, dy + i, x + i, y + i, 1, 1, int(a), slope);
}

template void activation_forward<float>(float*, const float*, index_t, index_t, Activation, float,
                                       bool);
template void activation_backward<float>(float*, const float*, const float*, const float*, index_t, index_t,
                                       Activation, float, bool);
template void activation_forward_ref<float>(float*, const float*, index_t, index_t, Activation, float);
template void activation_backward_ref<float>(float*, const float*, const float*, const float*, index_t,
                                           index_t, Activation, float);
template void activation_forward<double>(double*, const double*, index_t, index_t, Activation, double,
                                        bool);
template void activation_backward<double>(double*, const double*, const double*, const double*, index_t, index_t,
                                       Activation, double, bool);
template void activation_forward_ref<double>(double*, const double*, index_t, index_t, Activation, double);
template void activation_backward_ref<double>(double*, const double*, const double*, const double*, index_t,
                                           index_t, Activation, double);

}  // namespace chainrule
