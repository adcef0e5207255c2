// The elementwise kernels (activations, losses, optimizer updates, clipping) as one table of
// function pointers per instruction set. The loop source (elementwise_impl.hpp) is compiled once
// per target (cpp/src/kernels/elementwise_*.cpp), each copy in its own namespace; elem_kernels()
// picks the copy that matches the GEMM's current path, so gemm_set_isa switches both together.
// Every copy computes the same bits: the same IEEE operations in the same order (contraction off,
// reductions in a fixed blocking of 16 lanes that does not depend on the vector width).
//
// This header is included by the ISA files: plain C types only (no STL, no inline functions).
#pragma once
#include <cstdint>

namespace chainrule {
namespace elem {

using idx = std::int64_t;

// Activation and loss codes: the values of chainrule::Activation (checked in activations.cpp).
enum ActCode : int { kIdentity, kSigmoid, kTanh, kRelu, kLeakyRelu, kSoftmax, kLogSoftmax };

// SGD with its PyTorch options resolved to flags and T scalars (optim.cpp).
template <class T>
struct SgdArgs {
  bool decay, momentum, has_buf, nesterov;
  T sign, lr, wd, mu, one_minus_damp;
};
// Adam likewise; lerp_low says which of lerp's two forms PyTorch takes (weight w < 0.5).
template <class T>
struct AdamArgs {
  bool maximize, decay, amsgrad, lerp_low;
  T step_size, bc2_sqrt, wd, eps, w, one_minus_w, b2, one_minus_b2;
};

template <class T>
struct ElemOps {
  // x (R, C) -> y (R, C); y may alias x.
  void (*act_forward)(T* y, const T* x, idx R, idx C, int act, T slope);
  // dy, x, y (R, C) -> dx (R, C); dx may alias dy.
  void (*act_backward)(T* dx, const T* dy, const T* x, const T* y, idx R, idx C, int act,
                       T slope);
  // Losses over n = R C elements (rows of C for cross entropy): the unreduced sum in double,
  // grad (or nullptr) = dLoss/dpred with the reduction's scale already applied.
  double (*mse)(T* grad, const T* p, const T* t, idx n, T norm);
  double (*bce)(T* grad, const T* p, const T* t, idx n, T scale);
  double (*bce_logits)(T* grad, const T* x, const T* t, idx n, T scale);
  double (*cross_entropy_prob)(T* grad, const T* x, const T* t, idx R, idx C, T scale);
  double (*cross_entropy_index)(T* grad, const T* x, const std::int64_t* t, idx R, idx C,
                                T scale);
  // Optimizer updates of one tensor of n elements, in place; each fills ex with the largest
  // biased exponent of what it wrote: ex[0] the weights, ex[1..3] the buffers (SGD: momentum;
  // Adam: m, v, vmax), 0 for a buffer it did not write. The _check forms are dry runs: true
  // when the update would leave every weight and optimizer buffer finite; they write nothing.
  void (*sgd)(T* p, const T* grad, T* buf, idx n, const SgdArgs<T>& a, int* ex);
  bool (*sgd_check)(const T* p, const T* grad, const T* buf, idx n, const SgdArgs<T>& a);
  void (*adam)(T* p, const T* grad, T* m, T* v, T* vmax, idx n, const AdamArgs<T>& a, int* ex);
  bool (*adam_check)(const T* p, const T* grad, const T* m, const T* v, const T* vmax, idx n,
                     const AdamArgs<T>& a);
  // Clipping: sum of g^2 in double; max |g| in double (the first NaN if there is one); g *= coef;
  // g = clamp(g, lo, hi).
  double (*sum_squares)(const T* g, idx n);
  double (*max_abs)(const T* g, idx n);
  void (*scale)(T* g, idx n, T coef);
  void (*clamp)(T* g, idx n, T lo, T hi);
  // True when no element is NaN or +-inf.
  bool (*all_finite)(const T* x, idx n);
  // The largest biased exponent field (255 or 2047 when an element is NaN or +-inf).
  int (*max_exponent)(const T* x, idx n);
  // acc[c] += x[r * ldx + c] for r = 0..rows-1 in order, c < cols (a bias gradient).
  void (*col_sums)(T* acc, const T* x, idx rows, idx cols, idx ldx);
};

struct ElemKernels {
  const char* isa;
  ElemOps<float> f32;
  ElemOps<double> f64;
};

// One table per compiled copy (constant-initialised: no global constructors).
namespace baseline { extern const ElemKernels kernels; }
#if CHAINRULE_X86_KERNELS
namespace x86_v3 { extern const ElemKernels kernels; }
namespace x86_v4 { extern const ElemKernels kernels; }
#endif

// The table of the GEMM's current ISA path (gemm_isa()), and its float or double half.
const ElemKernels& kernels();
template <class T> const ElemOps<T>& ops();
template <> const ElemOps<float>& ops<float>();
template <> const ElemOps<double>& ops<double>();

}  // namespace elem
}  // namespace chainrule
