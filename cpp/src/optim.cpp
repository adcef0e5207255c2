// SGD and Adam updates, one parameter tensor at a time, in PyTorch's operation order so that the
// same weights and gradients give the same new weights (to the last bit where the arithmetic
// matches: the scalars are computed in double and applied in T, as PyTorch does).
#include "chainrule/optim.hpp"

#include <algorithm>
#include <cmath>

namespace chainrule {

template <class T>
void sgd_step(T* p, const T* grad, T* buf, bool has_buf, index_t n, const SGDConfig& cfg) {
  const T lr = T(cfg.lr), wd = T(cfg.weight_decay), mu = T(cfg.momentum);
  const T one_minus_damp = T(1.0 - cfg.dampening);
  for (index_t i = 0; i < n; ++i) {
    T g = cfg.maximize ? -grad[i] : grad[i];
    if (cfg.weight_decay != 0) g = g + wd * p[i];              // d_p = d_p.add(p, alpha=wd)
    if (cfg.momentum != 0) {
      buf[i] = has_buf ? mu * buf[i] + one_minus_damp * g : g;  // buf.mul_(mu).add_(d_p, 1-damp)
      g = cfg.nesterov ? g + mu * buf[i] : buf[i];
    }
    p[i] = p[i] - lr * g;                                       // p.add_(d_p, alpha=-lr)
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
