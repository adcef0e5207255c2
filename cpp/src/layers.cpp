// The feedforward layers: Dense (y = x W^T + b, per row) and elementwise/row-wise activations.
// Both act on every row of a (batch, [time,] features) tensor. Parameter names follow
// nn.Sequential: "<index>.weight" (out, in) and "<index>.bias" (out).
#include "layers.hpp"

#include <cmath>
#include <stdexcept>
#include <string>

#include "chainrule/activations.hpp"
#include "chainrule/dense.hpp"

namespace chainrule {

namespace {

template <class T>
class DenseLayer final : public Layer<T> {
 public:
  DenseLayer(const LayerSpec& s, std::size_t index) : in_(s.in_features), out_(s.out_features) {
    if (in_ <= 0 || out_ <= 0)
      throw std::invalid_argument("Dense sizes must be positive, got in_features=" +
                                  std::to_string(in_) + ", out_features=" + std::to_string(out_));
    const std::string p = std::to_string(index) + ".";
    weight_.name = p + "weight";
    weight_.shape = {out_, in_};
    weight_.value.resize(checked_mul(out_, in_));
    weight_.grad.resize(weight_.value.size());
    if (s.bias) {
      bias_ = std::make_unique<Param<T>>();
      bias_->name = p + "bias";
      bias_->shape = {out_};
      bias_->value.resize(out_);
      bias_->grad.resize(out_);
    }
  }
  std::string describe() const override {
    return "Dense(in=" + std::to_string(in_) + ", out=" + std::to_string(out_) +
           (bias_ ? "" : ", bias=False") + ")";
  }
  SampleShape output_shape(const SampleShape& in) const override {
    if (in.features != in_)
      throw std::invalid_argument("Dense(in=" + std::to_string(in_) + ", out=" +
                                  std::to_string(out_) + ") received " +
                                  std::to_string(in.features) + " features, expected " +
                                  std::to_string(in_));
    return SampleShape{in.time, out_};
  }
  void forward(T* y, const T* x, index_t batch, const SampleShape& in,
               LayerCache*) const override {
    cache_.forward(y, x, weight_.value.data(), bias_ ? bias_->value.data() : nullptr,
                   batch * in.rows(), in_, out_, weight_.version);
  }
  void backward(T* dx, const T* dy, const T* x, const T*, index_t batch, const SampleShape& in,
                LayerCache*) override {
    const index_t rows = batch * in.rows();
    T* const db = bias_ ? bias_->grad.data() : nullptr;
    if (dx == x) {  // dx over x: dW and db read x first, dx alone after (each the same bits)
      dense_backward_impl(static_cast<T*>(nullptr), weight_.grad.data(), db, dy, x,
                          weight_.value.data(), rows, in_, out_, !overwrite_);
      dense_backward_impl(dx, static_cast<T*>(nullptr), static_cast<T*>(nullptr), dy, x,
                          weight_.value.data(), rows, in_, out_, true);
    } else {
      dense_backward_impl(dx, weight_.grad.data(), db, dy, x, weight_.value.data(), rows, in_,
                          out_, !overwrite_);
    }
    overwrite_ = false;
  }
  bool backward_overwrites_input() const override { return true; }
  bool backward_reads_output() const override { return false; }
  std::size_t held_bytes() const override { return cache_.bytes(); }
  bool overwrite_grads_once() override { return overwrite_ = true; }
  void cancel_overwrite_grads() override { overwrite_ = false; }
  std::vector<Param<T>*> params() override {
    if (bias_) return {&weight_, bias_.get()};
    return {&weight_};
  }
  // torch.nn.Linear.reset_parameters: kaiming_uniform_(a=sqrt(5)) gives U(-1/sqrt(in), 1/sqrt(in))
  // for the weight, and the bias is drawn from the same bound.
  void reset_parameters(Rng& rng) override {
    const double bound = 1.0 / std::sqrt(double(in_));
    for (index_t i = 0; i < weight_.size(); ++i) weight_.value[i] = T(rng.uniform(-bound, bound));
    if (bias_)
      for (index_t i = 0; i < bias_->size(); ++i) bias_->value[i] = T(rng.uniform(-bound, bound));
  }

 private:
  index_t in_, out_;
  bool overwrite_ = false;  // the next backward writes the parameter gradients (=), once
  Param<T> weight_;
  std::unique_ptr<Param<T>> bias_;
  DenseWeightCache<T> cache_;  // W laid out for the forward, made again after each write
};

template <class T>
class ActivationLayer final : public Layer<T> {
 public:
  explicit ActivationLayer(const LayerSpec& s) : act_(s.activation), slope_(T(s.negative_slope)) {
    check_activation(act_);
  }
  std::string describe() const override { return activation_name(act_); }
  SampleShape output_shape(const SampleShape& in) const override { return in; }
  void forward(T* y, const T* x, index_t batch, const SampleShape& in,
               LayerCache*) const override {
    activation_forward(y, x, batch * in.rows(), in.features, act_, slope_, /*mapped_output=*/true);
  }
  void backward(T* dx, const T* dy, const T* x, const T* y, index_t batch, const SampleShape& in,
                LayerCache*) override {
    if (dx)
      activation_backward(dx, dy, x, y, batch * in.rows(), in.features, act_, slope_,
                          /*mapped_output=*/true);
  }
  // Each element of dx (a row, for softmax) is computed from the same element (row) of x, y and
  // dy, read before it is written: dx may be x.
  bool backward_overwrites_input() const override { return true; }

 private:
  Activation act_;
  T slope_;
};

}  // namespace

template <class T>
std::unique_ptr<Layer<T>> make_layer(const LayerSpec& spec, std::size_t index) {
  if (spec.kind == "dense") return std::make_unique<DenseLayer<T>>(spec, index);
  if (spec.kind == "activation") return std::make_unique<ActivationLayer<T>>(spec);
  if (spec.kind == "rnn" || spec.kind == "lstm" || spec.kind == "gru")
    return make_recurrent_layer<T>(spec, index);
  throw std::invalid_argument("unknown layer kind '" + spec.kind + "'");
}

template std::unique_ptr<Layer<float>> make_layer<float>(const LayerSpec&, std::size_t);
template std::unique_ptr<Layer<double>> make_layer<double>(const LayerSpec&, std::size_t);

}  // namespace chainrule
