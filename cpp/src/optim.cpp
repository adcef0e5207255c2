// SGD and Adam updates, one parameter tensor at a time, in PyTorch's operation order so that the
// same weights and gradients give the same new weights (to the last bit where the arithmetic
// matches: the scalars are computed in double and applied in T, as PyTorch does).
#include "chainrule/optim.hpp"

#include <algorithm>
#include <cmath>
#include <type_traits>

namespace chainrule {

namespace {

// One SGD variant with its options fixed at compile time, so that each loop is branch-free and
// vectorises. sign is -1 with maximize (an exact negation), else 1.
template <class T, bool kDecay, bool kMomentum, bool kHasBuf, bool kNesterov>
void sgd_loop(T* __restrict p, const T* __restrict grad, T* __restrict buf, index_t n, T sign,
              T lr, T wd, T mu, T one_minus_damp) {
  for (index_t i = 0; i < n; ++i) {
    T g = sign * grad[i];
    if (kDecay) g = g + wd * p[i];                          // d_p = d_p.add(p, alpha=wd)
    if (kMomentum) {
      const T b = kHasBuf ? mu * buf[i] + one_minus_damp * g : g;  // buf.mul_(mu).add_(d_p, 1-damp)
      buf[i] = b;
      g = kNesterov ? g + mu * b : b;
    }
    p[i] = p[i] - lr * g;                                   // p.add_(d_p, alpha=-lr)
  }
}

}  // namespace

template <class T>
void sgd_step(T* p, const T* grad, T* buf, bool has_buf, index_t n, const SGDConfig& cfg) {
  const T lr = T(cfg.lr), wd = T(cfg.weight_decay), mu = T(cfg.momentum);
  const T one_minus_damp = T(1.0 - cfg.dampening);
  const T sign = cfg.maximize ? T(-1) : T(1);
  const bool decay = cfg.weight_decay != 0;
  if (cfg.momentum == 0) {
    if (decay) sgd_loop<T, true, false, false, false>(p, grad, buf, n, sign, lr, wd, mu, one_minus_damp);
    else sgd_loop<T, false, false, false, false>(p, grad, buf, n, sign, lr, wd, mu, one_minus_damp);
    return;
  }
  // With momentum: 2 x 2 x 2 variants of decay, first step, Nesterov.
  auto run = [&](auto decay_c, auto has_c, auto nest_c) {
    sgd_loop<T, decltype(decay_c)::value, true, decltype(has_c)::value, decltype(nest_c)::value>(
        p, grad, buf, n, sign, lr, wd, mu, one_minus_damp);
  };
  using Y = std::true_type;
  using N = std::false_type;
  if (decay) {
    if (has_buf) { if (cfg.nesterov) run(Y{}, Y{}, Y{}); else run(Y{}, Y{}, N{}); }
    else { if (cfg.nesterov) run(Y{}, N{}, Y{}); else run(Y{}, N{}, N{}); }
  } else {
    if (has_buf) { if (cfg.nesterov) run(N{}, Y{}, Y{}); else run(N{}, Y{}, N{}); }
    else { if (cfg.nesterov) run(N{}, N{}, Y{}); else run(N{}, N{}, N{}); }
  }
}

template <class T>
void adam_step(T* p, const T* grad, T* m, T* v, T* vmax, std::int64_t step, index_t n,
               const AdamConfig& cfg) {
  const double bc1 = 1.0 - std::pow(cfg.beta1, double(step));
  const double bc2 = 1.0 - std::pow(cfg.beta2, double(step));
  const T step_size = T(cfg.lr / bc1);
  const T bc2_sqrt = T(std::sqrt(bc2));
  const T wd = T(cfg.weight_decay), eps = T(cfg.eps);
  const double w = 1.0 - cfg.beta1;  // lerp weight
  const T wT = T(w), one_minus_w = T(1.0 - w);
  const T b2 = T(cfg.beta2), one_minus_b2 = T(1.0 - cfg.beta2);
  for (index_t i = 0; i < n; ++i) {
    T g = cfg.maximize ? -grad[i] : grad[i];
    if (cfg.weight_decay != 0) g = g + wd * p[i];
    // exp_avg.lerp_(g, w): PyTorch's lerp picks the form that is exact at its nearer end.
    m[i] = w < 0.5 ? m[i] + wT * (g - m[i]) : g - (g - m[i]) * one_minus_w;
    v[i] = v[i] * b2 + one_minus_b2 * (g * g);  // exp_avg_sq.mul_(b2).addcmul_(g, g, 1-b2)
    T vv = v[i];
    if (cfg.amsgrad) { vmax[i] = std::max(vmax[i], v[i]); vv = vmax[i]; }
    const T denom = std::sqrt(vv) / bc2_sqrt + eps;
    p[i] = p[i] + (-step_size) * (m[i] / denom);  // p.addcdiv_(m, denom, value=-step_size)
  }
}

template void sgd_step<float>(float*, const float*, float*, bool, index_t, const SGDConfig&);
template void sgd_step<double>(double*, const double*, double*, bool, index_t, const SGDConfig&);
template void adam_step<float>(float*, const float*, float*, float*, float*, std::int64_t, index_t,
                               const AdamConfig&);
template void adam_step<double>(double*, const double*, double*, double*, double*, std::int64_t,
                                index_t, const AdamConfig&);

}  // namespace chainrule
