// A network: a sequence of layers with their parameters, a loss and an optimizer, and the
// training loop. Tensors between layers are (batch, [time,] features), row-major; a layer that
// works per row (Dense, activations) sees batch * time rows, as torch.nn.Linear does on 3-D input.
//
// Thread contract: predict(), loss_value(), workspace_bytes() and rng_state() read the network
// and may run from many threads at once; every method that changes it takes it exclusively. A
// call that finds the network in use by another thread throws Busy (a std::runtime_error) at
// once instead of waiting or corrupting it. The accessors that hand out references or pointers
// (params(), the const param(), layer_cache(), input_grad(), optimizer(), optimizer_steps(),
// describe_layer()) take no lock: read through them only while no other thread changes the
// network (mutex() gives the lock, for callers that compose several calls).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <shared_mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "chainrule/activations.hpp"
#include "chainrule/losses.hpp"
#include "chainrule/optim.hpp"
#include "chainrule/rng.hpp"
#include "chainrule/tensor.hpp"

namespace chainrule {

// Shape of one sample: features, with a time axis in front when time > 0.
struct SampleShape {
  index_t time = 0;  // 0: no time axis
  index_t features = 0;
  index_t rows() const { return time > 0 ? time : 1; }
  index_t size() const { return checked_mul(rows(), features); }
};

// A trainable tensor, its gradient and its optimizer state, named as in a PyTorch state dict.
template <class T>
struct Param {
  std::string name;
  std::vector<index_t> shape;
  Buffer<T> value, grad;
  Buffer<T> buf;          // SGD momentum buffer, or Adam's exp_avg
  Buffer<T> buf2, buf3;   // Adam's exp_avg_sq and max_exp_avg_sq
  bool has_buf = false;   // SGD: buf holds a previous step
  // Changes with every write of value, so that layers may keep laid-out copies of their weights
  // from one write to the next (DenseWeightCache). The library's writers call changed(): the
  // optimizer step, reset_parameters, Network::param (a handle taken to write through). Code
  // that writes value through a pointer kept from elsewhere (params()) calls it too, before the
  // next forward or predict.
  std::uint64_t version = 0;
  void changed() { ++version; }
  // The largest exponents of value and of the optimizer buffers as the last optimizer step left
  // them, valid while version is still exps_version: what fit's check needs to rule out an
  // overflowing step without reading them again. Code that writes an optimizer buffer (buf,
  // buf2, buf3) directly calls changed() too, or sets exps_version to ~0.
  StepExponents exps;
  std::uint64_t exps_version = ~std::uint64_t(0);
  index_t size() const { return value.size(); }
};

// How much a recurrent layer keeps for backpropagation through time: every state and gate, or a
// checkpoint every ~sqrt(T) steps with each segment recomputed before its backward. Either way the
// layer's input, output and output gradient are the network's (the tape), one copy each; see
// RecurrentCache for what else is sequence-sized.
enum class BpttMemory { all, sqrt };

// What backward needs beyond a layer's input and output (recurrent layers keep their states).
struct LayerCache {
  virtual ~LayerCache() = default;
};

// Description of one layer, as the Python side builds it.
struct LayerSpec {
  std::string kind;                 // "dense", "activation", "rnn", "lstm" or "gru"
  index_t in_features = 0;          // dense; input_size for recurrent layers
  index_t out_features = 0;         // dense; hidden_size for recurrent layers
  bool bias = true;                 // dense and recurrent
  index_t num_layers = 1;           // recurrent: stacked cells
  bool relu = false;                // rnn: nonlinearity relu instead of tanh
  bool return_sequences = true;     // recurrent: every h_t (B, T, H), or the last h (B, H)
  Activation activation = Activation::identity;  // activation
  double negative_slope = 0.01;     // leaky_relu
};

template <class T>
class Layer {
 public:
  virtual ~Layer() = default;
  virtual std::string describe() const = 0;
  // Output shape for a given input shape; std::invalid_argument when the input does not fit.
  virtual SampleShape output_shape(const SampleShape& in) const = 0;
  // x (batch, in) -> y (batch, out). cache is nullptr for inference (then forward keeps nothing).
  virtual void forward(T* y, const T* x, index_t batch, const SampleShape& in,
                       LayerCache* cache) const = 0;
  // dy -> dx (overwritten; skipped when nullptr); parameter gradients accumulate.
  virtual void backward(T* dx, const T* dy, const T* x, const T* y, index_t batch,
                        const SampleShape& in, LayerCache* cache) = 0;
  // Whether backward accepts dx == x (it reads what it needs of x before writing the same part
  // of dx), and whether it reads its output y: what lets the training step write a layer's input
  // gradient over the input, the output of the layer below, once nothing reads it any more.
  virtual bool backward_overwrites_input() const { return false; }
  virtual bool backward_reads_output() const { return true; }
  virtual std::unique_ptr<LayerCache> make_cache() const { return nullptr; }
  virtual bool is_recurrent() const { return false; }
  // Bytes of BPTT workspace one forward + backward of (batch, time) needs with that memory mode.
  virtual std::size_t bptt_workspace(index_t batch, index_t time, BpttMemory m) const { return 0; }
  virtual std::vector<Param<T>*> params() { return {}; }
  // Bytes the layer keeps beyond its parameters and caches (a Dense layer's laid-out weight).
  virtual std::size_t held_bytes() const { return 0; }
  // A training step starts from zero parameter gradients. A layer that can write them (=) in
  // its next backward, instead of adding (+=) to zeros, returns true here and does so once; the
  // network zeroes the gradients of the others. cancel_overwrite_grads() takes it back (a step
  // that failed before that backward).
  virtual bool overwrite_grads_once() { return false; }
  virtual void cancel_overwrite_grads() {}
  // PyTorch's default initialisation for the layer's parameters, drawn from rng.
  virtual void reset_parameters(Rng& rng) {}
};

struct OptimizerConfig {
  enum class Kind { sgd, adam } kind = Kind::sgd;
  SGDConfig sgd;
  AdamConfig adam;
};

struct LossConfig {
  LossKind kind = LossKind::mse;
  Reduction reduction = Reduction::mean;
};

struct ClipConfig {
  double max_norm = 0;       // > 0: clip by global norm
  double norm_type = 2.0;
  bool error_if_nonfinite = false;
  double clip_value = 0;     // > 0: clip by value (after the norm clip)
};

struct EpochStats {
  double loss_sum = 0;       // sum over batches of batch loss * batch size
  index_t samples = 0;       // samples in completed steps
  index_t batches = 0;       // steps completed
  double grad_norm_max = 0;  // largest pre-clip global norm seen (when clipping by norm)
  double grad_norm_sum = 0;  // sum of pre-clip global norms (mean = sum / batches)
  // Running training metric over the epoch, from each batch's forward output before its step:
  // classification losses count correct predictions; mse keeps, per output, what R^2 needs:
  // the targets' mean and sum of squared deviations from it (merged batch by batch, Chan et
  // al.'s update: no cancellation however far the targets sit from 0), and the squared errors.
  index_t correct = 0, counted = 0;
  std::vector<double> mean_y, ss_tot, sum_sq_err;
  // First batch whose loss or gradient was NaN or inf, or whose update would have made a weight
  // or an optimizer buffer so (nonfinite_update; only checked with stop_on_nonfinite), or -1.
  index_t nonfinite_batch = -1;
  double nonfinite_loss = 0;
  bool nonfinite_update = false;
  bool stopped = false;      // the epoch stopped at nonfinite_batch without stepping on it
  // With record_step_norms: per recurrent layer index, the per-timestep norms ||dL/dh_t||
  // (num_layers x T, row-major) summed over the epoch's backward passes, and how many were summed.
  std::vector<std::pair<std::size_t, std::vector<double>>> step_norm_sums;
  index_t step_norm_count = 0;
};

// Options of the training loop beyond the minibatch.
struct FitOptions {
  index_t batch_size = 32;
  bool shuffle = true;
  ClipConfig clip;
  bool stop_on_nonfinite = true;
  index_t bptt_steps = 0;     // > 0: truncated BPTT in chunks of this many steps
  bool stateful = false;      // carry recurrent states across minibatches (needs equal batches
                              // and, with more than one batch, shuffle = false)
  bool record_step_norms = false;
};

// Thrown by fit_epoch when the interrupt callback asks to stop; the network is left at its last
// completed optimizer step.
struct Interrupted : std::exception {
  const char* what() const noexcept override { return "interrupted"; }
};

// Thrown when a mutating call finds the network in use by another thread.
struct Busy : std::runtime_error {
  using std::runtime_error::runtime_error;
};

template <class T>
class Network {
 public:
  // input_features: features per sample (per time step for sequences). The time length is
  // given per call, so one network serves sequences of any length.
  Network(const std::vector<LayerSpec>& specs, index_t input_features, LossConfig loss,
          OptimizerConfig opt, std::uint64_t seed);

  index_t input_features() const { return input_features_; }
  // Shapes of every layer boundary for an input of the given time length (0: no time axis);
  // std::invalid_argument when a layer does not accept its input.
  std::vector<SampleShape> shapes_for(index_t time) const;
  SampleShape output_shape(index_t time) const { return shapes_for(time).back(); }
  std::size_t num_layers() const { return layers_.size(); }
  const std::vector<Param<T>*>& params() const { return params_; }
  // std::out_of_range for unknown names. The handle may be written through: the parameter
  // counts as changed (Param::changed), and like every writer the call throws Busy while another
  // thread uses the network. The const overload only reads (no change counted).
  Param<T>& param(const std::string& name);
  const Param<T>& param(const std::string& name) const;
  std::string describe_layer(std::size_t i) const { return layers_[i]->describe(); }

  LossConfig loss() const { return loss_; }
  void set_loss(LossConfig loss);
  const OptimizerConfig& optimizer() const { return opt_; }
  void set_optimizer(OptimizerConfig opt);  // resets the optimizer state and step count
  // New hyper-parameters for the same kind of optimizer (a learning-rate schedule, momentum
  // switched on), keeping its state and step count, as torch keeps them when a param_group's
  // values change. A buffer the new values need and the state lacks starts as torch starts it:
  // the momentum buffer from the next gradient, AMSGrad's maximum from zeros.
  void set_optimizer_hyperparameters(OptimizerConfig opt);
  std::int64_t optimizer_steps() const { return steps_; }
  void set_optimizer_steps(std::int64_t s);
  Rng& rng();  // the generator, to set its state (Busy while another thread uses the network)
  void rng_state(std::uint64_t out[4]) const;  // reads it (Busy only while one trains)
  void reset_parameters(std::uint64_t seed);

  // ---- the fundamentals, one call each ----
  // x (batch, [time,] features) -> output (batch, out sample); keeps what backward needs.
  const T* forward(const T* x, index_t batch, index_t time);
  index_t last_batch() const { return tape_batch_; }
  index_t last_time() const { return shapes_.front().time; }
  // Loss of the last forward output against the targets (float targets yf, or class indices yi
  // for cross_entropy), then backward through every layer. Returns the loss.
  double backward_loss(const T* yf, const std::int64_t* yi);
  // Backward from a caller-computed gradient of the loss w.r.t. the last output.
  // Both throw std::logic_error without a forward, or when a weight changed after it (a step,
  // a write through param(name) or Param::changed()), as torch refuses a graph whose tensors
  // were modified in place.
  void backward_grad(const T* grad_output);
  // dL/dx of the last backward (batch, input sample).
  const T* input_grad() const { return dx_.data(); }
  void zero_grad();
  void step();
  double clip_grad_norm(double max_norm, double norm_type, bool error_if_nonfinite);
  void clip_grad_value(double clip_value);

  // ---- inference (thread-safe) ----
  void predict(T* out, const T* x, index_t n, index_t time) const;
  double loss_value(const T* pred, const T* yf, const std::int64_t* yi, index_t n,
                    index_t time) const;

  // ---- training ----
  // One epoch over X (n, sample) and targets: minibatches of batch_size (the last may be smaller),
  // in an order shuffled by the network's generator when shuffle is set. interrupt() is called
  // after every step; when it returns true, Interrupted is thrown.
  // With bptt_steps = k, each minibatch of sequences is cut into chunks of k steps; the recurrent
  // states are carried (detached) from chunk to chunk, with one loss, backward and step per chunk.
  // fit_epoch leaves no tape: a backward() after it needs a forward() first. Without shuffle, the
  // steps read X and the targets where they lie, which must not change during the call.
  EpochStats fit_epoch(const T* X, const T* yf, const std::int64_t* yi, index_t n, index_t time,
                       const FitOptions& opt, const std::function<bool()>& interrupt);

  // ---- recurrent layers ----
  bool is_recurrent(std::size_t layer) const { return layers_.at(layer)->is_recurrent(); }
  // Memory mode for BPTT; with budget_bytes > 0, "all" when it fits the budget, else "sqrt".
  void set_bptt_memory(BpttMemory m, std::size_t budget_bytes);
  // Initial states (num_layers, batch, hidden) of a recurrent layer for the next forward calls;
  // nullptr means zeros. fit starts from zeros whatever was set here, and leaves what was set
  // here in place for the forward calls after it.
  void set_initial_state(std::size_t layer, const T* h0, index_t h0_size, const T* c0,
                         index_t c0_size);
  // The cache of a recurrent layer after forward/backward (final states, dh0, step norms,
  // workspace bytes), or nullptr.
  const LayerCache* layer_cache(std::size_t layer) const {
    return layer < caches_.size() ? caches_[layer].get() : nullptr;
  }

  // Bytes held by the training workspace (tape, gradients, batch buffers) and by the layers'
  // laid-out copies of their weights.
  std::size_t workspace_bytes() const;

  // The lock used by the thread contract, for callers that compose several calls.
  std::shared_mutex& mutex() const { return mutex_; }

 private:
  // borrow: the tape reads x where it lies (fit's rows of the caller's array, which outlive the
  // step) instead of a copy in acts_[0].
  void forward_impl(const T* x, index_t batch, index_t time, bool borrow = false);
  // acts_[0] sized for a batch, for a caller that gathers the input there (forward_impl then
  // skips its copy).
  T* input_slot(index_t batch, const SampleShape& in);
  // One optimizer step on a gathered minibatch: forward, loss, backward, clip, step. Adds to st;
  // returns false when a non-finite loss or gradient stopped it before the step.
  bool train_step(const T* x, const T* yf, const std::int64_t* yi, index_t batch, index_t time,
                  const FitOptions& opt, EpochStats& st, index_t batch_index, index_t t_offset,
                  index_t full_time, bool borrow = false);
  double loss_and_grad(T* grad, const T* pred, const T* yf, const std::int64_t* yi, index_t batch,
                       const SampleShape& out) const;
  // consume: nothing reads the tape after this backward (fit's step), so a layer's input gradient
  // may overwrite that input (Layer::backward_overwrites_input) when the layer below does not
  // read its output, and recurrent layers may overwrite their own sequences (RecurrentCache).
  void backward_impl(const T* grad_output, bool need_input_grad, bool consume = false);
  void step_impl();
  void set_optimizer_impl(OptimizerConfig opt);
  double clip_norm_impl(double max_norm, double norm_type, bool error_if_nonfinite);
  void clip_value_impl(double clip_value);
  void gather_grads();  // fills grad_ptrs_ / grad_sizes_ for the clipping kernels
  bool grads_finite();   // and each gradient's largest exponent into grad_exp_
  bool update_finite();  // the optimizer step about to run leaves weights and buffers finite
  bool update_bounded(std::size_t i) const;  // ... for parameter i, by bounds alone
  void clear_initial_states();

  std::vector<std::unique_ptr<Layer<T>>> layers_;
  index_t input_features_ = 0;
  std::vector<SampleShape> shapes_;  // of the tape: shapes_[i] is the input of layer i
  std::vector<Param<T>*> params_;
  std::vector<std::size_t> param_begin_;  // params_ of layer i: [param_begin_[i], param_begin_[i+1])
  LossConfig loss_;
  OptimizerConfig opt_;
  std::int64_t steps_ = 0;
  Rng rng_;

  // Training tape: acts_[i] input of layer i, acts_.back() the output.
  std::vector<Buffer<T>> acts_;
  std::vector<std::unique_ptr<LayerCache>> caches_;
  index_t tape_batch_ = 0;
  const T* tape_in_ = nullptr;  // the tape's input of layer 0: acts_[0], or borrowed rows
  std::uint64_t tape_version_ = 0;  // weights_version() when the tape was recorded
  std::uint64_t weights_version() const;
  void check_tape() const;  // backward's precondition: a tape, recorded with today's weights
  Buffer<T> g0_, g1_, dx_;  // gradients between layers (each sized as it is used), dL/dx
  Buffer<T> yfb_, yfc_, lossgrad_;  // a minibatch's float targets (whole, or a BPTT chunk's)
  std::vector<std::int64_t> yib_, yic_, perm_;
  std::vector<T*> grad_ptrs_;
  std::vector<int> grad_exp_;  // per parameter, from grads_finite()
  std::vector<index_t> grad_sizes_;

  BpttMemory bptt_memory_ = BpttMemory::all;
  std::size_t bptt_budget_ = 0;

  mutable std::shared_mutex mutex_;
};

}  // namespace chainrule
