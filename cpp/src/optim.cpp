// SGD and Adam updates, one parameter tensor at a time, in PyTorch's operation order so that the
// same weights and gradients give the same new weights (to the last bit where the arithmetic
// matches: the scalars are computed in double and applied in T, as PyTorch does).
#include "chainrule/optim.hpp"

#include <cmath>

#include "elementwise.hpp"

namespace chainrule {

// The loops live in elementwise_impl.hpp, compiled once per ISA path; here the scalars, computed
// in double and rounded to T as PyTorch does, and the choice of path.
namespace {

template <class T>
elem::SgdArgs<T> sgd_args(bool has_buf, const SGDConfig& cfg) {
  elem::SgdArgs<T> a;
  a.decay = cfg.weight_decay != 0;
  a.momentum = cfg.momentum != 0;
  a.has_buf = has_buf;
  a.nesterov = cfg.nesterov;
  a.sign = cfg.maximize ? T(-1) : T(1);
  a.lr = T(cfg.lr);
  a.wd = T(cfg.weight_decay);
  a.mu = T(cfg.momentum);
  a.one_minus_damp = T(1.0 - cfg.dampening);
  return a;
}

template <class T>
elem::AdamArgs<T> adam_args(std::int64_t step, const AdamConfig& cfg) {
  const double bc1 = 1.0 - std::pow(cfg.beta1, double(step));
  const double bc2 = 1.0 - std::pow(cfg.beta2, double(step));
  const double w = 1.0 - cfg.beta1;  // lerp weight
  elem::AdamArgs<T> a;
  a.maximize = cfg.maximize;
  a.decay = cfg.weight_decay != 0;
  a.amsgrad = cfg.amsgrad;
  a.lerp_low = w < 0.5;
  a.step_size = T(cfg.lr / bc1);
  a.bc2_sqrt = T(std::sqrt(bc2));
  a.wd = T(cfg.weight_decay);
  a.eps = T(cfg.eps);
  a.w = T(w);
  a.one_minus_w = T(1.0 - w);
  a.b2 = T(cfg.beta2);
  a.one_minus_b2 = T(1.0 - cfg.beta2);
  return a;
}

StepExponents exponents(const int ex[4]) {
  StepExponents e;
  e.value = ex[0];
  for (int i = 0; i < 3; ++i) e.state[i] = ex[i + 1];
  return e;
}

}  // namespace

template <class T>
StepExponents sgd_step(T* p, const T* grad, T* buf, bool has_buf, index_t n,
                       const SGDConfig& cfg) {
  int ex[4];
  elem::ops<T>().sgd(p, grad, buf, n, sgd_args<T>(has_buf, cfg), ex);
  return exponents(ex);
}

template <class T>
bool sgd_step_finite(const T* p, const T* grad, const T* buf, bool has_buf, index_t n,
                     const SGDConfig& cfg) {
  return elem::ops<T>().sgd_check(p, grad, buf, n, sgd_args<T>(has_buf, cfg));
}

template <class T>
StepExponents adam_step(T* p, const T* grad, T* m, T* v, T* vmax, std::int64_t step, index_t n,
                        const AdamConfig& cfg) {
  int ex[4];
  elem::ops<T>().adam(p, grad, m, v, vmax, n, adam_args<T>(step, cfg), ex);
  return exponents(ex);
}

template <class T>
bool adam_step_finite(const T* p, const T* grad, const T* m, const T* v, const T* vmax,
                      std::int64_t step, index_t n, const AdamConfig& cfg) {
  return elem::ops<T>().adam_check(p, grad, m, v, vmax, n, adam_args<T>(step, cfg));
}

template StepExponents sgd_step<float>(float*, const float*, float*, bool, index_t,
                                       const SGDConfig&);
template StepExponents sgd_step<double>(double*, const double*, double*, bool, index_t,
                                        const SGDConfig&);
template bool sgd_step_finite<float>(const float*, const float*, const float*, bool, index_t,
                                     const SGDConfig&);
template bool sgd_step_finite<double>(const double*, const double*, const double*, bool, index_t,
                                      const SGDConfig&);
template StepExponents adam_step<float>(float*, const float*, float*, float*, float*, std::int64_t,
                                        index_t, const AdamConfig&);
template StepExponents adam_step<double>(double*, const double*, double*, double*, double*,
                                         std::int64_t, index_t, const AdamConfig&);
template bool adam_step_finite<float>(const float*, const float*, const float*, const float*,
                                      const float*, std::int64_t, index_t, const AdamConfig&);
template bool adam_step_finite<double>(const double*, const double*, const double*,
                                       const double*, const double*, std::int64_t, index_t,
                                       const AdamConfig&);

}  // namespace chainrule
