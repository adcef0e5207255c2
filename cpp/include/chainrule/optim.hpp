// Optimizers with PyTorch's exact update rules (torch.optim.SGD and torch.optim.Adam, the
// single-tensor path). Each step function updates one parameter tensor of n elements in place.
#pragma once
#include <cstdint>
#include "chainrule/tensor.hpp"

namespace chainrule {

// What a step wrote, as the largest biased exponent field of each array (255 or 2047 when one
// element is NaN or inf, 0 for zeros or an array not written): an upper bound on magnitudes,
// |x| < 2^(e - bias + 1), that the step computes for free as it writes. value: the weights;
// state: SGD's momentum buffer in state[0]; Adam's exp_avg, exp_avg_sq, max_exp_avg_sq.
struct StepExponents {
  int value = 0;
  int state[3] = {0, 0, 0};
};

struct SGDConfig {
  double lr = 0.01;
  double momentum = 0.0;
  double dampening = 0.0;
  double weight_decay = 0.0;
  bool nesterov = false;
  bool maximize = false;
};

// g = ±grad + wd p; with momentum: buf = g on the first step, else buf = mu buf + (1 - damp) g,
// g = nesterov ? g + mu buf : buf; then p -= lr g. With momentum 0 it is exactly p -= lr grad.
// buf may be nullptr when momentum == 0; has_buf says whether buf holds a previous step.
// Returns the largest biased exponent fields of what it wrote (see StepExponents).
template <class T>
StepExponents sgd_step(T* p, const T* grad, T* buf, bool has_buf, index_t n,
                       const SGDConfig& cfg);
// The same update as a dry run: true when it would leave every weight and buffer finite.
template <class T>
bool sgd_step_finite(const T* p, const T* grad, const T* buf, bool has_buf, index_t n,
                     const SGDConfig& cfg);

struct AdamConfig {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
  bool amsgrad = false;
  bool maximize = false;
};

// step is the 1-based step count after incrementing. m, v (and vmax with amsgrad) are the state.
// g = ±grad + wd p; m = lerp(m, g, 1 - b1); v = b2 v + (1 - b2) g^2;
// p -= lr / (1 - b1^step) * m / (sqrt(v) / sqrt(1 - b2^step) + eps)   (vmax in place of v with amsgrad)
template <class T>
StepExponents adam_step(T* p, const T* grad, T* m, T* v, T* vmax, std::int64_t step, index_t n,
                        const AdamConfig& cfg);
// The same update as a dry run: true when it would leave every weight, m and v finite.
template <class T>
bool adam_step_finite(const T* p, const T* grad, const T* m, const T* v, const T* vmax,
                      std::int64_t step, index_t n, const AdamConfig& cfg);

}  // namespace chainrule
