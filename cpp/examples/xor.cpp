// XOR with the C++ API alone: a 2-4-1 network (tanh hidden layer, BCE with logits) trained by
// plain SGD, then its predictions. Links chainrule::core; no Python involved.
#include <chainrule/network.hpp>

#include <cmath>
#include <cstdio>
#include <vector>

int main() {
  using namespace chainrule;
  std::vector<LayerSpec> layers(3);
  layers[0].kind = "dense";
  layers[0].in_features = 2;
  layers[0].out_features = 4;
  layers[1].kind = "activation";
  layers[1].activation = Activation::tanh;
  layers[2].kind = "dense";
  layers[2].in_features = 4;
  layers[2].out_features = 1;
  OptimizerConfig opt;
  opt.sgd.lr = 0.5;
  opt.sgd.momentum = 0.9;
  Network<float> net(layers, /*input_features=*/2, LossConfig{LossKind::bce_with_logits},
                     opt, /*seed=*/0);

  const float X[8] = {0, 0, 0, 1, 1, 0, 1, 1};
  const float y[4] = {0, 1, 1, 0};
  FitOptions fit;
  fit.batch_size = 4;
  double first = 0, last = 0;
  for (int epoch = 0; epoch < 1000; ++epoch) {
    const EpochStats st = net.fit_epoch(X, y, nullptr, 4, /*time=*/0, fit, nullptr);
    last = st.loss_sum / double(st.samples);
    if (epoch == 0) first = last;
  }
  float out[4];
  net.predict(out, X, 4, 0);
  int correct = 0;
  std::printf("loss %.4f -> %.6f after 1000 epochs\n", first, last);
  for (int i = 0; i < 4; ++i) {
    const float p = 1.0f / (1.0f + std::exp(-out[i]));
    correct += (p > 0.5f) == (y[i] > 0.5f);
    std::printf("  x = (%g, %g)  target %g  p = %.4f\n", X[2 * i], X[2 * i + 1], y[i], p);
  }
  std::printf("%d/4 correct\n", correct);
  return correct == 4 ? 0 : 1;
}
