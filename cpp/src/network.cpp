// Network: forward layer by layer, loss, backward by the chain rule in reverse, optimizer step,
// and the minibatch training loop, all over the buffers the network owns.
#include "chainrule/network.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <mutex>
#include <numeric>
#include <utility>

#include "chainrule/clip.hpp"
#include "chainrule/finite.hpp"
#include "chainrule/recurrent.hpp"
#include "chainrule/threads.hpp"
#include "layers.hpp"

namespace chainrule {

namespace {

// Exclusive use of the network for one mutating call, or Busy at once.
struct ExclusiveUse {
  explicit ExclusiveUse(std::shared_mutex& m) : lock(m, std::try_to_lock) {
    if (!lock.owns_lock())
      throw Busy("this model is already in use by another thread (fit, forward, backward, step "
                 "and load_state_dict need it alone); wait for that call to finish, or use a "
                 "copy of the model per thread");
  }
  std::unique_lock<std::shared_mutex> lock;
};
struct SharedUse {
  explicit SharedUse(std::shared_mutex& m) : lock(m, std::try_to_lock) {
    if (!lock.owns_lock())
      throw Busy("this model is being trained or changed by another thread; predict and "
                 "evaluate may run concurrently with each other, not with fit or step");
  }
  std::shared_lock<std::shared_mutex> lock;
};

// Adds one batch to the running metric: argmax (cross_entropy) or threshold (bce: p > 1/2,
// bce_with_logits: x > 0) accuracy, or the sums R^2 needs (mse).
template <class T>
void accumulate_metric(EpochStats& st, LossKind kind, const T* pred, const T* yf,
                       const std::int64_t* yi, index_t rows, index_t C) {
  if (kind == LossKind::mse) {
    if (st.mean_y.empty()) {
      st.mean_y.assign(std::size_t(C), 0.0);
      st.ss_tot.assign(std::size_t(C), 0.0);
      st.sum_sq_err.assign(std::size_t(C), 0.0);
    }
    // The batch's mean and squared deviations per column (two passes), merged into the epoch's:
    // a one-pass sum of t^2 - (sum t)^2 / n loses every digit once the targets' offset is 1e4
    // times their spread. Column slices over the pool above ~64 K elements (a wide regression
    // output), in chunks of columns; each column's sums still add the rows in order.
    double *mean = st.mean_y.data(), *m2 = st.ss_tot.data(), *see = st.sum_sq_err.data();
    const double na = double(st.counted), nb = double(rows), n = na + nb;
    parallel_ranges(C, 8, rows * C / 65536, [=](std::int64_t c0, std::int64_t c1) {
      constexpr index_t kChunk = 64;
      for (index_t cc = c0; cc < c1; cc += kChunk) {
        const index_t w = std::min<index_t>(kChunk, c1 - cc);
        double bm[kChunk] = {}, bq[kChunk] = {};
        for (index_t r = 0; r < rows; ++r)
          for (index_t j = 0; j < w; ++j) {
            const double t = double(yf[r * C + cc + j]), e = double(pred[r * C + cc + j]) - t;
            bm[j] += t;
            see[cc + j] += e * e;
          }
        for (index_t j = 0; j < w; ++j) bm[j] /= nb;
        for (index_t r = 0; r < rows; ++r)
          for (index_t j = 0; j < w; ++j) {
            const double d = double(yf[r * C + cc + j]) - bm[j];
            bq[j] += d * d;
          }
        for (index_t j = 0; j < w; ++j) {
          const double delta = bm[j] - mean[cc + j];
          mean[cc + j] += delta * (nb / n);
          m2[cc + j] += bq[j] + delta * delta * (na * nb / n);
        }
      }
    });
    st.counted += rows;
    return;
  }
  if (kind == LossKind::cross_entropy) {
    for (index_t r = 0; r < rows; ++r) {
      const T* p = pred + r * C;
      const index_t guess = index_t(std::max_element(p, p + C) - p);
      index_t truth;
      if (yi) truth = index_t(yi[r]);
      else truth = index_t(std::max_element(yf + r * C, yf + (r + 1) * C) - (yf + r * C));
      st.correct += guess == truth;
    }
    st.counted += rows;
    return;
  }
  const T threshold = kind == LossKind::bce ? T(0.5) : T(0);
  for (index_t i = 0; i < rows * C; ++i)
    st.correct += (pred[i] > threshold) == (yf[i] > T(0.5));
  st.counted += rows * C;
}

// Runs f(lo, hi) over [0, n) in a few 64-byte-aligned slices on the thread pool once n is large
// enough to pay for the hand-off (a wide layer's weight: 1M elements), else in one call. The
// passes over every parameter per training step (zeroing the gradients, the finiteness check,
// the optimizer update) are memory-bound and otherwise run on one core while the others wait.
// Every slice gets the same elementwise arithmetic, so the result is the same for any split.
template <class F>
void for_slices(index_t n, const F& f) {
  constexpr index_t kGrain = index_t(1) << 15;  // elements per slice, at least
  parallel_ranges(n, 16, n / kGrain, f);
}

// The exponent field of NaN and +-inf (max_exponent's answer when one is there).
template <class T>
constexpr int kExpAllOnes = sizeof(T) == 4 ? 255 : 2047;

// Runs a step over slices of a parameter; its largest exponents (StepExponents) go to p->exps.
template <class T, class Step>
void step_slices(Param<T>* p, const Step& step) {
  std::atomic<int> ex[4] = {{0}, {0}, {0}, {0}};
  for_slices(p->size(), [&](index_t lo, index_t hi) {
    const StepExponents e = step(lo, hi);
    atomic_max(ex[0], e.value);
    for (int k = 0; k < 3; ++k) atomic_max(ex[k + 1], e.state[k]);
  });
  p->exps.value = ex[0].load();
  for (int k = 0; k < 3; ++k) p->exps.state[k] = ex[k + 1].load();
  p->exps_version = p->version;
}

template <class T>
void zero_param_grad(Param<T>* p) {
  T* g = p->grad.data();
  for_slices(p->size(), [g](index_t lo, index_t hi) {
    std::memset(static_cast<void*>(g + lo), 0, std::size_t(hi - lo) * sizeof(T));
  });
}

template <class T>
void zero_grads(const std::vector<Param<T>*>& params) {
  for (Param<T>* p : params) zero_param_grad(p);
}

}  // namespace

template <class T>
Network<T>::Network(const std::vector<LayerSpec>& specs, index_t input_features, LossConfig loss,
                    OptimizerConfig opt, std::uint64_t seed)
    : input_features_(input_features), loss_(loss), opt_(opt), rng_(seed) {
  if (specs.empty()) throw std::invalid_argument("a model needs at least one layer, got none");
  if (input_features <= 0)
    throw std::invalid_argument("input features must be positive, got " +
                                std::to_string(input_features));
  for (std::size_t i = 0; i < specs.size(); ++i) {
    layers_.push_back(make_layer<T>(specs[i], i));
    param_begin_.push_back(params_.size());
    for (Param<T>* p : layers_.back()->params()) params_.push_back(p);
  }
  param_begin_.push_back(params_.size());
  for (auto& l : layers_) caches_.push_back(l->make_cache());
  // Validate that the layers fit together: with a time axis when a recurrent layer needs one.
  bool recurrent = false;
  for (auto& l : layers_) recurrent = recurrent || l->is_recurrent();
  shapes_ = shapes_for(recurrent ? 1 : 0);
  set_optimizer_impl(opt);
  for (auto& l : layers_) l->reset_parameters(rng_);
}

template <class T>
const Param<T>& Network<T>::param(const std::string& name) const {
  for (const Param<T>* p : params_)
    if (p->name == name) return *p;
  throw std::out_of_range("no parameter named '" + name + "'");
}

template <class T>
Param<T>& Network<T>::param(const std::string& name) {
  ExclusiveUse use(mutex_);  // a write, as the other writers: Busy while another thread trains
  Param<T>& p = const_cast<Param<T>&>(std::as_const(*this).param(name));
  p.changed();
  return p;
}

template <class T>
void Network<T>::set_optimizer_steps(std::int64_t s) {
  // A negative count would make Adam's bias correction 1 - beta^t zero or negative: NaN weights.
  if (s < 0)
    throw std::invalid_argument("optimizer step count must be >= 0, got " + std::to_string(s));
  ExclusiveUse use(mutex_);
  steps_ = s;
}

template <class T>
Rng& Network<T>::rng() {
  ExclusiveUse use(mutex_);
  return rng_;
}

template <class T>
void Network<T>::rng_state(std::uint64_t out[4]) const {
  SharedUse use(mutex_);  // a read: beside predict calls, as save() runs
  rng_.get_state(out);
}

template <class T>
void Network<T>::set_loss(LossConfig loss) {
  ExclusiveUse use(mutex_);
  loss_ = loss;
}

template <class T>
void Network<T>::set_optimizer(OptimizerConfig opt) {
  ExclusiveUse use(mutex_);
  set_optimizer_impl(opt);
}

template <class T>
void Network<T>::set_optimizer_hyperparameters(OptimizerConfig opt) {
  ExclusiveUse use(mutex_);
  if (opt.kind != opt_.kind)
    throw std::invalid_argument("new hyper-parameters must be for the same kind of optimizer; "
                                "set_optimizer changes the kind (and resets the state)");
  for (Param<T>* p : params_) {
    if (opt.kind == OptimizerConfig::Kind::sgd && opt.sgd.momentum != 0 && p->buf.size() == 0) {
      p->buf.resize(p->size());
      p->has_buf = false;  // filled from the next gradient, as torch's first momentum step
    }
    if (opt.kind == OptimizerConfig::Kind::adam && opt.adam.amsgrad && p->buf3.size() == 0) {
      p->buf3.resize(p->size());
      std::fill(p->buf3.data(), p->buf3.data() + p->size(), T(0));
    }
    p->exps_version = ~std::uint64_t(0);  // bounds are settled afresh for the new values
  }
  opt_ = opt;
}

template <class T>
void Network<T>::set_optimizer_impl(OptimizerConfig opt) {
  opt_ = opt;
  steps_ = 0;
  for (Param<T>* p : params_) {
    const bool sgd_mom = opt.kind == OptimizerConfig::Kind::sgd && opt.sgd.momentum != 0;
    const bool adam = opt.kind == OptimizerConfig::Kind::adam;
    p->buf.resize(sgd_mom || adam ? p->size() : 0);
    p->buf2.resize(adam ? p->size() : 0);
    p->buf3.resize(adam && opt.adam.amsgrad ? p->size() : 0);
    p->has_buf = false;
    p->exps_version = ~std::uint64_t(0);  // the buffers' exponents are unknown until a step
  }
}

template <class T>
void Network<T>::reset_parameters(std::uint64_t seed) {
  ExclusiveUse use(mutex_);
  rng_.reseed(seed);
  for (auto& l : layers_) l->reset_parameters(rng_);
  for (Param<T>* p : params_) p->changed();
  set_optimizer_impl(opt_);
}

template <class T>
std::vector<SampleShape> Network<T>::shapes_for(index_t time) const {
  if (time < 0) throw std::invalid_argument("negative sequence length " + std::to_string(time));
  std::vector<SampleShape> s{SampleShape{time, input_features_}};
  for (auto& l : layers_) s.push_back(l->output_shape(s.back()));
  return s;
}

template <class T>
void Network<T>::forward_impl(const T* x, index_t batch, index_t time, bool borrow) {
  const std::size_t L = layers_.size();
  // No tape until this forward completes: one that fails halfway (out of memory, a bad initial
  // state) would otherwise leave a tape that mixes two batches for backward to read.
  tape_batch_ = 0;
  tape_in_ = nullptr;
  std::vector<SampleShape> fresh;  // the shapes for a new time length, adopted once it fits
  if (shapes_.front().time != time) fresh = shapes_for(time);
  const std::vector<SampleShape>& shapes = fresh.empty() ? shapes_ : fresh;
  // Every activation the tape still has to grow, refused together before any is allocated.
  index_t grow = 0;
  for (std::size_t i = borrow ? 1 : 0; i <= L; ++i) {
    const index_t bytes = checked_mul(checked_mul(batch, shapes[i].size()), index_t(sizeof(T)));
    if (i < acts_.size() && std::size_t(bytes) <= acts_[i].capacity_bytes()) continue;
    if (grow > std::numeric_limits<index_t>::max() - bytes)
      throw std::length_error("the activations of a batch of " + std::to_string(batch) +
                              " overflow a 64-bit size");
    grow += bytes;
  }
  if (grow > 0) check_available_memory(std::size_t(grow));
  try {
    if (!fresh.empty()) shapes_ = std::move(fresh);
    acts_.resize(L + 1);
    if (borrow) {
      tape_in_ = x;
    } else {
      acts_[0].resize_for_overwrite(checked_mul(batch, shapes_[0].size()));
      if (x != acts_[0].data()) std::memcpy(acts_[0].data(), x, acts_[0].bytes());
      tape_in_ = acts_[0].data();
    }
    for (std::size_t i = 0; i < L; ++i) {
      acts_[i + 1].resize_for_overwrite(checked_mul(batch, shapes_[i + 1].size()));
      if (auto* rc = dynamic_cast<RecurrentCache<T>*>(caches_[i].get())) {
        rc->memory = bptt_memory_;
        if (bptt_budget_ > 0)
          rc->memory = layers_[i]->bptt_workspace(batch, time, BpttMemory::all) <= bptt_budget_
                           ? BpttMemory::all : BpttMemory::sqrt;
      }
      layers_[i]->forward(acts_[i + 1].data(), i ? acts_[i].data() : tape_in_, batch, shapes_[i],
                          caches_[i].get());
    }
  } catch (...) {
    // Free what the failed forward allocated (it may be most of the memory there is).
    acts_.clear();
    for (auto& c : caches_)
      if (auto* rc = dynamic_cast<RecurrentCache<T>*>(c.get())) {
        rc->release_workspace();
        rc->B = rc->steps = 0;
      }
    throw;
  }
  tape_batch_ = batch;
  tape_version_ = weights_version();
}

template <class T>
std::uint64_t Network<T>::weights_version() const {
  std::uint64_t v = 0;  // versions only grow: the sum changes whenever one of them does
  for (const Param<T>* p : params_) v += p->version;
  return v;
}

template <class T>
void Network<T>::check_tape() const {
  if (tape_batch_ == 0) throw std::logic_error("backward() needs a forward() first");
  if (weights_version() != tape_version_)
    throw std::logic_error(
        "backward() after the weights changed (step(), load_state_dict() or another write) "
        "since the forward() that recorded its tape: the gradients would mix two sets of "
        "weights; call forward() again first");
}

template <class T>
T* Network<T>::input_slot(index_t batch, const SampleShape& in) {
  if (acts_.size() != layers_.size() + 1) acts_.resize(layers_.size() + 1);
  acts_[0].resize_for_overwrite(checked_mul(batch, in.size()));
  return acts_[0].data();
}

template <class T>
const T* Network<T>::forward(const T* x, index_t batch, index_t time) {
  ExclusiveUse use(mutex_);
  if (batch <= 0) throw std::invalid_argument("forward of an empty batch");
  forward_impl(x, batch, time);
  return acts_.back().data();
}

template <class T>
double Network<T>::loss_and_grad(T* grad, const T* pred, const T* yf, const std::int64_t* yi,
                                 index_t batch, const SampleShape& out) const {
  const index_t rows = checked_mul(batch, out.rows());
  if (yi) {
    if (loss_.kind != LossKind::cross_entropy)
      throw std::invalid_argument(std::string("class-index targets need the cross_entropy loss, "
                                              "but the model's loss is ") + loss_name(loss_.kind));
    return cross_entropy_index(grad, pred, yi, rows, out.features, loss_.reduction);
  }
  return loss_forward_backward(grad, pred, yf, rows, out.features, loss_.kind, loss_.reduction);
}

template <class T>
void Network<T>::backward_impl(const T* grad_output, bool need_input_grad, bool consume) {
  // Chain rule in reverse: g holds dL/d(output of layer i); each layer turns it into
  // dL/d(input of layer i), accumulating its parameter gradients on the way. dL/d(input of layer
  // k) goes over that input, acts_[k], when the step consumes the tape and nothing reads acts_[k]
  // after layer k's backward (a Dense on every step of a recurrent layer's output sequence: the
  // sequence's gradient takes the sequence's place); else into g0_ or g1_, whichever does not
  // hold g.
  const std::size_t L = layers_.size();
  for (auto& c : caches_)
    if (auto* rc = dynamic_cast<RecurrentCache<T>*>(c.get())) rc->consume = consume;
  const T* g = grad_output;
  Buffer<T>* held = nullptr;  // the one of g0_, g1_ that holds g
  for (std::size_t k = L; k-- > 0;) {
    T* dx = nullptr;
    Buffer<T>* dst = nullptr;
    if (k > 0) {
      if (consume && layers_[k]->backward_overwrites_input() &&
          !layers_[k - 1]->backward_reads_output()) {
        dx = acts_[k].data();
      } else {
        dst = held == &g0_ ? &g1_ : &g0_;
        dst->resize_for_overwrite(checked_mul(tape_batch_, shapes_[k].size()));
        dx = dst->data();
      }
    } else if (need_input_grad) {
      dx_.resize_for_overwrite(checked_mul(tape_batch_, shapes_[0].size()));
      dx = dx_.data();
    }
    layers_[k]->backward(dx, g, k ? acts_[k].data() : tape_in_, acts_[k + 1].data(), tape_batch_,
                         shapes_[k], caches_[k].get());
    g = dx;
    held = dst;
  }
}

template <class T>
double Network<T>::backward_loss(const T* yf, const std::int64_t* yi) {
  ExclusiveUse use(mutex_);
  check_tape();
  Buffer<T> grad(acts_.back().size());
  const double loss =
      loss_and_grad(grad.data(), acts_.back().data(), yf, yi, tape_batch_, shapes_.back());
  backward_impl(grad.data(), true);
  return loss;
}

template <class T>
void Network<T>::backward_grad(const T* grad_output) {
  ExclusiveUse use(mutex_);
  check_tape();
  backward_impl(grad_output, true);
}

template <class T>
void Network<T>::zero_grad() {
  ExclusiveUse use(mutex_);
  zero_grads(params_);
}

template <class T>
void Network<T>::step_impl() {
  ++steps_;
  for (Param<T>* p : params_) {
    // Elementwise updates: a slice of a parameter is updated exactly as the whole would be.
    p->changed();
    T *w = p->value.data(), *g = p->grad.data();
    if (opt_.kind == OptimizerConfig::Kind::sgd) {
      T* buf = p->buf.size() ? p->buf.data() : nullptr;
      const bool has_buf = p->has_buf;
      step_slices(p, [&](index_t lo, index_t hi) {
        return sgd_step(w + lo, g + lo, buf ? buf + lo : nullptr, has_buf, hi - lo, opt_.sgd);
      });
      // A step without momentum leaves the buffer as it was, for momentum switched on again
      // (torch keeps momentum_buffer in the state while a param_group's momentum is 0).
      if (opt_.sgd.momentum != 0) p->has_buf = true;
    } else {
      T *m = p->buf.data(), *v = p->buf2.data(), *vmax = p->buf3.size() ? p->buf3.data() : nullptr;
      step_slices(p, [&](index_t lo, index_t hi) {
        return adam_step(w + lo, g + lo, m + lo, v + lo, vmax ? vmax + lo : nullptr, steps_,
                         hi - lo, opt_.adam);
      });
    }
  }
}

template <class T>
void Network<T>::step() {
  ExclusiveUse use(mutex_);
  step_impl();
}

template <class T>
double Network<T>::clip_grad_norm(double max_norm, double norm_type, bool error_if_nonfinite) {
  ExclusiveUse use(mutex_);
  return clip_norm_impl(max_norm, norm_type, error_if_nonfinite);
}

template <class T>
double Network<T>::clip_norm_impl(double max_norm, double norm_type, bool error_if_nonfinite) {
  gather_grads();
  return chainrule::clip_grad_norm(grad_ptrs_.data(), grad_sizes_.data(), grad_ptrs_.size(),
                                   max_norm, norm_type, error_if_nonfinite);
}

template <class T>
void Network<T>::clip_value_impl(double clip_value) {
  gather_grads();
  chainrule::clip_grad_value(grad_ptrs_.data(), grad_sizes_.data(), grad_ptrs_.size(),
                             clip_value);
}

template <class T>
bool Network<T>::grads_finite() {
  grad_exp_.resize(params_.size());
  bool finite = true;
  for (std::size_t i = 0; i < params_.size(); ++i) {
    grad_exp_[i] = max_exponent(params_[i]->grad.data(), params_[i]->size());
    finite = finite && grad_exp_[i] != kExpAllOnes<T>;
  }
  return finite;
}

// Would the step about to run leave every weight and optimizer buffer finite? The loss and the
// gradients are finite by now, yet lr times a gradient (or Adam's g^2, or m / eps) can still
// overflow. Bounds usually settle it from what is already known: |g| < 2^(eg - bias + 1) from
// grads_finite (clipping only shrinks it), and the weights' and buffers' exponents that the last
// step wrote (Param::exps), so the check reads nothing again. Far from the top of the range
// (any sane training) the bounds pass; otherwise, or when a write since the last step left the
// exponents unknown, the update runs as a dry run that writes nothing: the same arithmetic as
// the step, so exactly its outcome.
template <class T>
bool Network<T>::update_bounded(std::size_t i) const {
  const Param<T>* p = params_[i];
  if (p->exps_version != p->version) return false;
  const double top = double(std::numeric_limits<T>::max()) / 2;  // margin for the roundings
  const int bias = std::numeric_limits<T>::max_exponent - 1;
  auto bound = [&](int e) { return std::ldexp(1.0, std::max(e, 1) - bias + 1); };
  auto as_t = [](double x) { return std::fabs(double(T(x))); };  // as the kernels apply it
  const double W = bound(p->exps.value);
  if (opt_.kind == OptimizerConfig::Kind::sgd) {
    const SGDConfig& c = opt_.sgd;
    const double d = bound(grad_exp_[i]) + as_t(c.weight_decay) * W;  // > |g + wd w|
    double step = d;
    if (c.momentum != 0) {
      const double mu = as_t(c.momentum);
      const double b = (p->has_buf ? mu * bound(p->exps.state[0]) + as_t(1.0 - c.dampening) * d
                                   : d);  // > |new momentum buffer|
      if (!(b < top)) return false;
      step = c.nesterov ? d + mu * b : b;
    }
    return d < top && W + as_t(c.lr) * step < top;
  }
  const AdamConfig& c = opt_.adam;
  const double eps = as_t(c.eps);
  if (!(eps > 0)) return false;  // 0 / 0 is possible: let the dry run decide
  const double d = bound(grad_exp_[i]) + as_t(c.weight_decay) * W;  // > |g + wd w|
  const double m = d + bound(p->exps.state[0]);                       // > |g - m|, |new m|
  const double v = bound(p->exps.state[1]) + d * d;                    // > |new v|
  const double bc1 = 1.0 - std::pow(c.beta1, double(steps_ + 1));
  const double step_size = as_t(c.lr / bc1);
  return d * d < top && m < top && v < top && m / eps < top && W + step_size * (m / eps) < top;
}

template <class T>
bool Network<T>::update_finite() {
  for (std::size_t i = 0; i < params_.size(); ++i) {
    if (update_bounded(i)) continue;
    const Param<T>* p = params_[i];
    const T *w = p->value.data(), *g = p->grad.data();
    std::atomic<bool> ok{true};
    if (opt_.kind == OptimizerConfig::Kind::sgd) {
      const T* buf = p->buf.size() ? p->buf.data() : nullptr;
      for_slices(p->size(), [&](index_t lo, index_t hi) {
        if (ok.load(std::memory_order_relaxed) &&
            !sgd_step_finite(w + lo, g + lo, buf ? buf + lo : nullptr, p->has_buf, hi - lo,
                             opt_.sgd))
          ok.store(false, std::memory_order_relaxed);
      });
    } else {
      const T *m = p->buf.data(), *v = p->buf2.data();
      const T* vmax = p->buf3.size() ? p->buf3.data() : nullptr;
      for_slices(p->size(), [&](index_t lo, index_t hi) {
        if (ok.load(std::memory_order_relaxed) &&
            !adam_step_finite(w + lo, g + lo, m + lo, v + lo, vmax ? vmax + lo : nullptr,
                              steps_ + 1, hi - lo, opt_.adam))
          ok.store(false, std::memory_order_relaxed);
      });
    }
    if (!ok.load()) return false;
  }
  return true;
}

template <class T>
void Network<T>::gather_grads() {
  // Member vectors: after the first call, the training loop allocates nothing here.
  grad_ptrs_.clear();
  grad_sizes_.clear();
  for (Param<T>* p : params_) {
    grad_ptrs_.push_back(p->grad.data());
    grad_sizes_.push_back(p->size());
  }
}

template <class T>
void Network<T>::clip_grad_value(double clip_value) {
  ExclusiveUse use(mutex_);
  clip_value_impl(clip_value);
}

template <class T>
void Network<T>::predict(T* out, const T* x, index_t n, index_t time) const {
  if (n < 0) throw std::invalid_argument("predict needs n >= 0 samples, got " + std::to_string(n));
  SharedUse use(mutex_);
  const std::vector<SampleShape> shapes = shapes_for(time);
  // Chunks of samples bound the workspace; each thread has its own, so calls can overlap.
  const std::size_t L = layers_.size();
  index_t widest = 0;
  for (const SampleShape& s : shapes) widest = std::max(widest, s.size());
  const index_t chunk = std::max<index_t>(1, std::min<index_t>(n, (index_t(1) << 20) / widest));
  // Two buffers for the activations between layers, each allocated when first written: one
  // layer needs neither, two layers one (a sequence's worth, for a long one).
  index_t between = 0;
  for (std::size_t i = 1; i < L; ++i) between = std::max(between, shapes[i].size());
  Buffer<T> bufs[2];
  const index_t in_size = shapes.front().size(), out_size = shapes.back().size();
  for (index_t s = 0; s < n; s += chunk) {
    const index_t m = std::min(chunk, n - s);
    const T* cur = x + s * in_size;
    int next = 0;
    for (std::size_t i = 0; i < L; ++i) {
      if (i + 1 < L && bufs[next].size() == 0)
        bufs[next].resize_for_overwrite(checked_mul(chunk, between));
      T* dst = (i + 1 == L) ? out + s * out_size : bufs[next].data();
      layers_[i]->forward(dst, cur, m, shapes[i], nullptr);
      cur = dst;
      next ^= 1;
    }
  }
}

template <class T>
double Network<T>::loss_value(const T* pred, const T* yf, const std::int64_t* yi, index_t n,
                              index_t time) const {
  SharedUse use(mutex_);
  return loss_and_grad(nullptr, pred, yf, yi, n, output_shape(time));
}

template <class T>
bool Network<T>::train_step(const T* x, const T* yf, const std::int64_t* yi, index_t bs,
                            index_t time, const FitOptions& opt, EpochStats& st, index_t b,
                            index_t t_offset, index_t full_time, bool borrow) {
  forward_impl(x, bs, time, borrow);
  lossgrad_.resize_for_overwrite(acts_.back().size());
  const double loss =
      loss_and_grad(lossgrad_.data(), acts_.back().data(), yf, yi, bs, shapes_.back());
  // Zero gradients: Dense layers write theirs in this backward (the first accumulation with
  // beta = 0, the same bits as adding to zeros) instead of a separate pass that zeroes them.
  for (std::size_t i = 0; i < layers_.size(); ++i)
    if (!layers_[i]->overwrite_grads_once())
      for (std::size_t j = param_begin_[i]; j < param_begin_[i + 1]; ++j)
        zero_param_grad(params_[j]);
  // The step reads no activation after this backward but acts_.back() (accumulate_metric), which
  // no backward overwrites: the tape is consumed.
  try {
    backward_impl(lossgrad_.data(), false, /*consume=*/true);
  } catch (...) {
    for (auto& l : layers_) l->cancel_overwrite_grads();
    throw;
  }
  // A non-finite loss, gradient or update never reaches the weights unless the caller said
  // "ignore": then the weights stay those of the last finite step.
  if (!std::isfinite(loss) || !grads_finite()) {
    if (st.nonfinite_batch < 0) { st.nonfinite_batch = b; st.nonfinite_loss = loss; }
    if (opt.stop_on_nonfinite) { st.stopped = true; return false; }
  }
  double norm = 0;
  if (opt.clip.max_norm > 0)
    norm = clip_norm_impl(opt.clip.max_norm, opt.clip.norm_type, opt.clip.error_if_nonfinite);
  if (opt.clip.clip_value > 0) clip_value_impl(opt.clip.clip_value);
  if (opt.stop_on_nonfinite && !update_finite()) {
    if (st.nonfinite_batch < 0) {
      st.nonfinite_batch = b;
      st.nonfinite_loss = loss;
      st.nonfinite_update = true;
    }
    st.stopped = true;
    return false;
  }
  if (opt.clip.max_norm > 0) {
    // A NaN norm (on_nonfinite="ignore") is the largest: std::max(a, NaN) would drop it, and
    // the epoch's maximum would read finite beside a NaN mean, as torch's max of them is not.
    if (!std::isnan(st.grad_norm_max) && (std::isnan(norm) || norm > st.grad_norm_max))
      st.grad_norm_max = norm;
    st.grad_norm_sum += norm;
  }
  accumulate_metric(st, loss_.kind, acts_.back().data(), yf, yi, bs * shapes_.back().rows(),
                    shapes_.back().features);
  if (opt.record_step_norms) {
    bool first = st.step_norm_sums.empty();
    std::size_t slot = 0;
    for (std::size_t i = 0; i < layers_.size(); ++i) {
      const auto* rc = dynamic_cast<const RecurrentCache<T>*>(caches_[i].get());
      if (!rc) continue;
      const index_t cells = index_t(rc->step_norms.size()) / std::max<index_t>(time, 1);
      if (first) st.step_norm_sums.emplace_back(i, std::vector<double>(std::size_t(cells * full_time)));
      std::vector<double>& acc = st.step_norm_sums[slot++].second;
      for (index_t k = 0; k < cells; ++k)
        for (index_t t = 0; t < time; ++t)
          acc[std::size_t(k * full_time + t_offset + t)] += rc->step_norms[std::size_t(k * time + t)];
    }
    if (t_offset == 0) st.step_norm_count += 1;
  }
  step_impl();
  st.loss_sum += loss * double(bs);
  st.samples += bs;
  st.batches += 1;
  return true;
}

template <class T>
EpochStats Network<T>::fit_epoch(const T* X, const T* yf, const std::int64_t* yi, index_t n,
                                 index_t time, const FitOptions& opt,
                                 const std::function<bool()>& interrupt) {
  ExclusiveUse use(mutex_);
  if (n <= 0) throw std::invalid_argument("fit needs at least one sample, got 0");
  if (opt.batch_size <= 0)
    throw std::invalid_argument("batch_size must be positive, got " +
                                std::to_string(opt.batch_size));
  const index_t batch_size = std::min(opt.batch_size, n);
  // Stateful training continues row i of a batch in row i of the next: shuffled rows or a short
  // last batch would carry states into unrelated sequences (one batch an epoch carries none).
  if (opt.stateful && batch_size < n && opt.shuffle)
    throw std::invalid_argument("stateful training carries each row's state to the same row of "
                                "the next batch, which shuffling breaks: set shuffle = false");
  if (opt.stateful && n % batch_size)
    throw std::invalid_argument(
        "stateful training needs batches of equal size; " + std::to_string(n) +
        " samples in batches of " + std::to_string(batch_size) + " leave a last batch of " +
        std::to_string(n % batch_size));
  const std::vector<SampleShape> shapes = shapes_for(time);
  const index_t xs = shapes.front().size();
  const index_t ys = yi ? shapes.back().rows() : shapes.back().size();
  const index_t k = opt.bptt_steps;
  if (k > 0 && (time <= 0 || shapes.back().time != time))
    throw std::invalid_argument(
        "truncated BPTT (bptt_steps) needs sequence outputs, one per time step (B, T, O); this "
        "model's output for (B, " + std::to_string(time) + ", F) inputs has no time axis");
  // In order and without BPTT chunks, a minibatch is rows [start, start + bs) of the caller's
  // arrays, which the step reads where they lie: a gather would copy them (2 MiB a step for wide)
  // only to read the copy. The tape then refers to the caller's memory, which this call does not
  // outlive, so the tape is dropped on the way out (either way, for one rule: a backward() after
  // fit needs a forward() first).
  const bool borrow = !opt.shuffle && k <= 0;
  // On the way out, also put back the initial states the caller set (set_initial_state) for
  // later forward calls: the epoch starts from zeros and carries its own states (truncated BPTT,
  // stateful), which must not leak into them.
  struct Restore {
    Network* net;
    std::vector<std::pair<std::vector<T>, std::vector<T>>> states;
    ~Restore() {
      net->tape_batch_ = 0;
      net->tape_in_ = nullptr;
      try {
        std::size_t i = 0;
        for (auto& c : net->caches_)
          if (auto* rc = dynamic_cast<RecurrentCache<T>*>(c.get()); rc && i < states.size()) {
            rc->h0.resize(index_t(states[i].first.size()));
            std::copy(states[i].first.begin(), states[i].first.end(), rc->h0.data());
            rc->c0.resize(index_t(states[i].second.size()));
            std::copy(states[i].second.begin(), states[i].second.end(), rc->c0.data());
            ++i;
          }
      } catch (...) {  // out of memory putting them back: zeros rather than carried states
        net->clear_initial_states();
      }
    }
  } restore{this, {}};
  for (auto& c : caches_)
    if (auto* rc = dynamic_cast<RecurrentCache<T>*>(c.get()))
      restore.states.emplace_back(std::vector<T>(rc->h0.data(), rc->h0.data() + rc->h0.size()),
                                  std::vector<T>(rc->c0.data(), rc->c0.data() + rc->c0.size()));
  if (!borrow) {
    perm_.resize(std::size_t(n));
    std::iota(perm_.begin(), perm_.end(), std::int64_t(0));
    if (opt.shuffle) rng_.shuffle(perm_.data(), n);
    // With BPTT chunks, each chunk's rows are gathered from X and the targets where they lie:
    // no copy of the whole minibatch of sequences.
    if (k <= 0 && yi) yib_.resize(std::size_t(checked_mul(batch_size, ys)));
    else if (k <= 0) yfb_.resize_for_overwrite(checked_mul(batch_size, ys));
  }
  clear_initial_states();

  // Recurrent states carried from chunk to chunk (and, when stateful, batch to batch): the values
  // of the final states, detached: no gradient flows back through them.
  auto carry = [&]() {
    for (auto& c : caches_)
      if (auto* rc = dynamic_cast<RecurrentCache<T>*>(c.get())) { rc->h0 = rc->hn; rc->c0 = rc->cn; }
  };
  index_t carried_batch = -1;
  EpochStats st;
  for (index_t start = 0, b = 0; start < n; start += batch_size, ++b) {
    const index_t bs = std::min(batch_size, n - start);
    const T* xb = nullptr;  // the minibatch; BPTT chunks gather their rows below instead
    const T* ybf = nullptr;
    const std::int64_t* ybi = nullptr;
    if (borrow) {
      xb = X + start * xs;
      ybf = yi ? nullptr : yf + start * ys;
      ybi = yi ? yi + start * ys : nullptr;
    } else if (k <= 0) {
      // Gather the minibatch rows in permuted order straight into the tape's input slot, rows
      // over the pool above ~16 K elements: the source rows come from memory (a data set larger
      // than the caches), and one core's stream of them took 6 % of an mnist step while the
      // other waited.
      T* const xdst = input_slot(bs, shapes.front());
      const std::int64_t* const perm = perm_.data() + start;
      std::int64_t* const ybi_dst = yi ? yib_.data() : nullptr;
      T* const ybf_dst = yi ? nullptr : yfb_.data();
      parallel_ranges(bs, 1, bs * (xs + ys) / 16384, [=](std::int64_t r0, std::int64_t r1) {
        for (index_t r = r0; r < r1; ++r) {
          const index_t src = perm[r];
          std::memcpy(xdst + r * xs, X + src * xs, std::size_t(xs) * sizeof(T));
          if (yi)
            std::memcpy(ybi_dst + r * ys, yi + src * ys, std::size_t(ys) * sizeof(std::int64_t));
          else std::memcpy(ybf_dst + r * ys, yf + src * ys, std::size_t(ys) * sizeof(T));
        }
      });
      xb = xdst;
      ybf = ybf_dst;
      ybi = ybi_dst;
    }
    if (!opt.stateful || bs != carried_batch) clear_initial_states();
    if (k <= 0) {
      if (!train_step(xb, ybf, ybi, bs, time, opt, st, b, 0, time, borrow)) return st;
      if (opt.stateful) carry();
    } else {
      // Cut each sequence of the batch into chunks of k steps: x (bs, T, F) -> (bs, kk, F),
      // sample r of the chunk from row perm[start + r] of X (and of the targets), the inputs
      // straight into the tape's input slot.
      const index_t F = shapes.front().features, per_step = ys / time;
      const std::int64_t* const perm = perm_.data() + start;
      for (index_t c0 = 0; c0 < time; c0 += k) {
        const index_t kk = std::min(k, time - c0);
        T* const xc = input_slot(bs, SampleShape{kk, F});
        for (index_t r = 0; r < bs; ++r)
          std::memcpy(xc + r * kk * F, X + perm[r] * xs + c0 * F, std::size_t(kk * F) * sizeof(T));
        if (yi) {
          yic_.resize(std::size_t(bs * kk));
          for (index_t r = 0; r < bs; ++r)
            std::memcpy(yic_.data() + r * kk, yi + perm[r] * ys + c0,
                        std::size_t(kk) * sizeof(std::int64_t));
        } else {
          yfc_.resize_for_overwrite(checked_mul(bs, kk * per_step));
          for (index_t r = 0; r < bs; ++r)
            std::memcpy(yfc_.data() + r * kk * per_step, yf + perm[r] * ys + c0 * per_step,
                        std::size_t(kk * per_step) * sizeof(T));
        }
        if (!train_step(xc, yi ? nullptr : yfc_.data(), yi ? yic_.data() : nullptr, bs, kk, opt,
                        st, b, c0, time))
          return st;
        carry();
        // every chunk is an optimizer step: a stop request need not wait for the sequence's end
        if (c0 + kk < time && interrupt && interrupt()) throw Interrupted();
      }
    }
    carried_batch = bs;
    if (interrupt && interrupt()) throw Interrupted();
  }
  return st;
}

template <class T>
void Network<T>::set_bptt_memory(BpttMemory m, std::size_t budget_bytes) {
  ExclusiveUse use(mutex_);
  bptt_memory_ = m;
  bptt_budget_ = budget_bytes;
}

template <class T>
void Network<T>::set_initial_state(std::size_t layer, const T* h0, index_t h0_size, const T* c0,
                                   index_t c0_size) {
  ExclusiveUse use(mutex_);
  auto* rc = dynamic_cast<RecurrentCache<T>*>(caches_.at(layer).get());
  if (!rc) throw std::invalid_argument("layer " + std::to_string(layer) + " is not recurrent");
  rc->h0.resize(h0 ? h0_size : 0);
  if (h0) std::memcpy(rc->h0.data(), h0, std::size_t(h0_size) * sizeof(T));
  rc->c0.resize(c0 ? c0_size : 0);
  if (c0) std::memcpy(rc->c0.data(), c0, std::size_t(c0_size) * sizeof(T));
}

template <class T>
void Network<T>::clear_initial_states() {
  for (auto& c : caches_)
    if (auto* rc = dynamic_cast<RecurrentCache<T>*>(c.get())) { rc->h0.resize(0); rc->c0.resize(0); }
}

template <class T>
std::size_t Network<T>::workspace_bytes() const {
  SharedUse use(mutex_);  // forward resizes the buffers read here
  std::size_t b = g0_.capacity_bytes() + g1_.capacity_bytes() + dx_.capacity_bytes() +
                  yfb_.capacity_bytes() + yfc_.capacity_bytes() + lossgrad_.capacity_bytes() +
                  (yib_.capacity() + yic_.capacity() + perm_.capacity()) * sizeof(std::int64_t);
  for (auto& a : acts_) b += a.capacity_bytes();
  for (auto& l : layers_) b += l->held_bytes();
  return b;
}

template class Network<float>;
template class Network<double>;

}  // namespace chainrule
