// C++ unit tests of the core, run by ctest: the kernels against their _ref twins on every ISA path,
// gradients against central differences, the thread pool, and a network that learns XOR.
// Self-contained (no test framework): each CHECK failure is printed; the last line is
// "N passed, N failed".
#include <chainrule/activations.hpp>
#include <chainrule/dense.hpp>
#include <chainrule/gemm.hpp>
#include <chainrule/losses.hpp>
#include <chainrule/network.hpp>
#include <chainrule/optim.hpp>
#include <chainrule/clip.hpp>
#include <chainrule/rng.hpp>
#include <chainrule/threads.hpp>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <cstdio>
#include <functional>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "elementwise.hpp"   // internal: which elementwise table runs
#include "gemm_skinny.hpp"  // internal: the skinny path's rule

using namespace chainrule;

namespace {

int g_passed = 0, g_failed = 0;

void check(bool ok, const std::string& what) {
  if (ok) {
    ++g_passed;
  } else {
    ++g_failed;
    std::printf("FAILED: %s\n", what.c_str());
  }
}

template <class T>
std::vector<T> random_vec(Rng& rng, std::size_t n) {
  std::vector<T> v(n);
  for (auto& x : v) x = T(rng.uniform(-1, 1));
  return v;
}

template <class T>
void test_gemm_paths(const char* dtype) {
  Rng rng(1);
  // (1-3 rows, and 17 or 19 = 16 + 1 or 3: the last rows read in place by the one-row kernel)
  const index_t sizes[][3] = {{1, 1, 1},    {14, 32, 9},  {15, 33, 17}, {13, 31, 40},
                              {37, 5, 3},   {70, 130, 65}, {1, 70, 45}, {2, 33, 20},
                              {3, 64, 130}, {17, 40, 9},   {19, 50, 33}};
  for (int shrink = 0; shrink < 2; ++shrink) {
    gemm_set_blocking(shrink ? 7 : 0, shrink ? 5 : 0, shrink ? 40 : 0);
    for (auto& s : sizes)
      for (int ta = 0; ta < 2; ++ta)
        for (int tb = 0; tb < 2; ++tb) {
          const index_t M = s[0], N = s[1], K = s[2];
          auto A = random_vec<T>(rng, std::size_t(M * K));
          auto B = random_vec<T>(rng, std::size_t(K * N));
          auto C0 = random_vec<T>(rng, std::size_t(M * N));
          const index_t lda = ta ? M : K, ldb = tb ? K : N;
          std::vector<T> ref = C0;
          gemm_ref<T>(ta, tb, M, N, K, T(0.5), A.data(), lda, B.data(), ldb, T(2), ref.data(), N);
          std::vector<T> first;
          for (const std::string& isa : gemm_supported_isas()) {
            gemm_set_isa(isa);
            std::vector<T> C = C0;
            gemm<T>(ta, tb, M, N, K, T(0.5), A.data(), lda, B.data(), ldb, T(2), C.data(), N);
            double err = 0;
            for (std::size_t i = 0; i < C.size(); ++i)
              err = std::max(err, std::abs(double(C[i]) - double(ref[i])));
            const double tol = (sizeof(T) == 4 ? 1e-5 : 1e-13) * double(K + 2);
            check(err <= tol, std::string("gemm ") + dtype + " " + isa + " vs ref, M=" +
                                  std::to_string(M) + " N=" + std::to_string(N) +
                                  " K=" + std::to_string(K) + " ta=" + std::to_string(ta) +
                                  " tb=" + std::to_string(tb));
            if (first.empty()) first = C;
            check(C == first, std::string("gemm ") + dtype + " " + isa + " same bits as baseline");
            // The same product with op(B) pre-packed, on 1 and 2 threads: the same bits.
            for (int threads : {1, 2}) {
              set_num_threads(threads);
              PackedB<T> packed;
              packed.pack(tb, K, N, B.data(), ldb);
              // op(B) and its last micro-panel's padding (NR <= 32), no more: the packed
              // weights live as long as their layer.
              check(packed.bytes() <= std::size_t((N + 31) / 32 * 32 * K) * sizeof(T) + 64,
                    std::string("PackedB ") + dtype + " holds " + std::to_string(packed.bytes()) +
                        " bytes for K=" + std::to_string(K) + " N=" + std::to_string(N));
              std::vector<T> Cp = C0;
              gemm_prepacked<T>(ta, M, T(0.5), A.data(), lda, packed, T(2), Cp.data(), N);
              check(Cp == C, std::string("gemm_prepacked ") + dtype + " " + isa + " threads=" +
                                 std::to_string(threads) + " same bits as gemm");
            }
          }
        }
  }
  gemm_set_blocking(0, 0, 0);
  gemm_set_isa(gemm_supported_isas().back());
}

// Every path rounds each float multiply-add once, as the FMA instructions do, also where rounding
// a b + c to double first (a double-precision fma on float operands) and then to float differs:
// a = A 2^-23 and b = M 2^-48 with A M = 2^47 + r, 0 < r < 2^18, put a b + 1 just above the float
// midpoint 1 + 2^-24, within half a double ulp of it (tests/test_isa_fma.py builds more cases).
void test_gemm_rounds_each_fma_once() {
  std::int64_t A = (std::int64_t(1) << 23) + 1, M = 0;
  for (;; ++A) {
    M = ((std::int64_t(1) << 47) + A / 2) / A;
    const std::int64_t r = A * M - (std::int64_t(1) << 47);
    if (r > 0 && r < (std::int64_t(1) << 18) && M < (std::int64_t(1) << 24)) break;
  }
  const float a = std::ldexp(float(A), -23), b = std::ldexp(float(M), -48), c = 1.0f;
  const float once = 1.0f + std::ldexp(1.0f, -23);
  check(float(double(a) * double(b) + double(c)) == 1.0f,
        "fma operands: rounding twice gives the midpoint's even neighbour");
  for (const std::string& isa : gemm_supported_isas()) {
    gemm_set_isa(isa);
    // C (m, n) = [c a] [1; b] for every element: c 1, then fma(a, b, c). Tiles and edges of
    // every path's kernels, and the pre-packed driver.
    for (index_t m : {1, 3, 5, 9, 15, 20})
      for (index_t n : {1, 9, 17, 33}) {
        std::vector<float> Am, Bm(std::size_t(2 * n), 1.0f), C(std::size_t(m * n), -1.0f);
        for (index_t i = 0; i < m; ++i) Am.insert(Am.end(), {c, a});
        std::fill(Bm.begin() + n, Bm.end(), b);
        gemm<float>(false, false, m, n, 2, 1.0f, Am.data(), 2, Bm.data(), n, 0.0f, C.data(), n);
        const bool gemm_ok = std::all_of(C.begin(), C.end(), [&](float v) { return v == once; });
        PackedB<float> packed;
        packed.pack(false, 2, n, Bm.data(), n);
        std::fill(C.begin(), C.end(), -1.0f);
        gemm_prepacked<float>(false, m, 1.0f, Am.data(), 2, packed, 0.0f, C.data(), n);
        const bool packed_ok = std::all_of(C.begin(), C.end(), [&](float v) { return v == once; });
        check(gemm_ok && packed_ok, "gemm rounds a b + c once, " + isa + " m=" +
                                        std::to_string(m) + " n=" + std::to_string(n));
      }
  }
  gemm_set_isa(gemm_supported_isas().back());
}

// Bitwise equality that tells -0 from +0; any NaN matches any NaN (IEEE leaves the payload of
// an operation on two NaNs open, and gcc may order commutative operands differently per loop).
template <class T>
bool same_bits(T a, T b) {
  return (a != a && b != b) || std::memcmp(&a, &b, sizeof a) == 0;
}
template <class T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (!same_bits(a[i], b[i])) {
      std::printf("  element %zu: %.17g vs %.17g\n", i, double(a[i]), double(b[i]));
      return false;
    }
  return true;
}

// Every elementwise kernel on every ISA path gives the bits of the portable path (and the
// activations those of their _ref twins), on lengths around the 16-lane reduction blocks and the
// vector widths, with special values mixed in.
template <class T>
void test_elementwise_paths(const char* dtype) {
  const std::vector<std::string> isas = gemm_supported_isas();
  const T inf = std::numeric_limits<T>::infinity(), nan = std::numeric_limits<T>::quiet_NaN();
  const index_t shapes[][2] = {{1, 1}, {3, 5}, {1, 15}, {2, 16}, {1, 17}, {3, 33}, {4, 100},
                               {1, 1000}};
  for (auto& s : shapes) {
    const index_t R = s[0], C = s[1];
    const std::size_t n = std::size_t(R * C);
    Rng rng{std::uint64_t(n)};
    auto x = random_vec<T>(rng, n), dy = random_vec<T>(rng, n), t = random_vec<T>(rng, n);
    for (auto& v : x) v *= 12;
    std::vector<T> prob(n), probt(n), xs = x;  // probabilities for bce; x with special values
    for (std::size_t i = 0; i < n; ++i) prob[i] = (t[i] + 1) / 2;
    for (std::size_t i = 0; i < n; ++i) probt[i] = (dy[i] + 1) / 2;  // bce targets in [0, 1]
    const T specials[] = {T(0), -T(0), T(1e-30), T(-88.5), T(95), T(-800), T(800), inf, -inf, nan};
    if (n > 20)
      for (std::size_t i = 0; i < 10; ++i) xs[3 * i + 1] = specials[i];
    std::vector<std::int64_t> cls(static_cast<std::size_t>(R));
    for (index_t r = 0; r < R; ++r) cls[std::size_t(r)] = std::int64_t(rng.below(std::uint64_t(C)));
    const std::string where = std::string(dtype) + " R=" + std::to_string(R) + " C=" + std::to_string(C);

    // One result vector per case and path: path 0 (baseline) is the reference.
    std::vector<std::vector<T>> first;
    std::vector<double> first_values;
    for (std::size_t k = 0; k < isas.size(); ++k) {
      gemm_set_isa(isas[k]);
      check(std::strcmp(elem::kernels().isa, isas[k].c_str()) == 0,
            "the elementwise table follows gemm_set_isa(" + isas[k] + ")");
      std::vector<std::vector<T>> outs;
      std::vector<double> values;
      for (const auto* in : {&x, &xs})
        for (Activation a : {Activation::identity, Activation::sigmoid, Activation::tanh,
                             Activation::relu, Activation::leaky_relu, Activation::softmax,
                             Activation::log_softmax}) {
          std::vector<T> y(n), yr(n), dx(n), dxr(n);
          activation_forward(y.data(), in->data(), R, C, a, T(0.1));
          activation_forward_ref(yr.data(), in->data(), R, C, a, T(0.1));
          check(same_bits(y, yr), "activation_forward " + std::string(activation_name(a)) + " " +
                                      isas[k] + " same bits as ref, " + where);
          activation_backward(dx.data(), dy.data(), in->data(), y.data(), R, C, a, T(0.1));
          activation_backward_ref(dxr.data(), dy.data(), in->data(), y.data(), R, C, a, T(0.1));
          check(same_bits(dx, dxr), "activation_backward " + std::string(activation_name(a)) +
                                        " " + isas[k] + " same bits as ref, " + where);
          outs.push_back(y);
          outs.push_back(dx);
        }
      for (LossKind kind : {LossKind::mse, LossKind::bce, LossKind::bce_with_logits,
                            LossKind::cross_entropy})
        for (Reduction red : {Reduction::mean, Reduction::sum}) {
          std::vector<T> g(n);
          const T* pred = kind == LossKind::bce ? prob.data() : x.data();
          const T* target = kind == LossKind::cross_entropy ? prob.data()
                            : kind == LossKind::bce             ? probt.data()
                                                                : t.data();
          values.push_back(loss_forward_backward(g.data(), pred, target, R, C, kind, red));
          values.push_back(loss_forward_backward(static_cast<T*>(nullptr), pred, target, R, C, kind, red));
          outs.push_back(g);
        }
      {
        std::vector<T> g(n);
        values.push_back(cross_entropy_index(g.data(), x.data(), cls.data(), R, C, Reduction::mean));
        outs.push_back(g);
        values.push_back(cross_entropy_index(g.data(), xs.data(), cls.data(), R, C, Reduction::sum));
        outs.push_back(g);
      }
      for (int variant = 0; variant < 6; ++variant) {  // plain, decay, momentum x2, nesterov, maximize
        SGDConfig cfg;
        cfg.lr = 0.05;
        cfg.weight_decay = variant == 1 || variant == 4 ? 0.01 : 0.0;
        cfg.momentum = variant >= 2 ? 0.9 : 0.0;
        cfg.dampening = variant == 3 ? 0.25 : 0.0;
        cfg.nesterov = variant == 4;
        cfg.maximize = variant == 5;
        std::vector<T> p = x, buf(n);
        for (int step = 0; step < 3; ++step)
          sgd_step(p.data(), dy.data(), buf.data(), step > 0, index_t(n), cfg);
        outs.push_back(p);
        outs.push_back(buf);
      }
      for (int variant = 0; variant < 4; ++variant) {  // plain, amsgrad + decay, maximize, beta1 0.3
        AdamConfig cfg;
        cfg.amsgrad = variant == 1;
        cfg.weight_decay = variant == 1 ? 0.01 : 0.0;
        cfg.maximize = variant == 2;
        if (variant == 3) cfg.beta1 = 0.3;
        std::vector<T> p = x, m(n), v(n), vmax(n);
        for (int step = 1; step <= 3; ++step)
          adam_step(p.data(), dy.data(), m.data(), v.data(), vmax.data(), step, index_t(n), cfg);
        outs.push_back(p);
        outs.push_back(m);
        outs.push_back(v);
        outs.push_back(vmax);
      }
      for (double norm : {2.0, 3.0, double(inf)})
        for (const auto* in : {&x, &xs}) {
          std::vector<T> g1 = *in, g2 = dy;
          T* ptrs[] = {g1.data(), g2.data()};
          const index_t sizes[] = {index_t(n), index_t(n)};
          values.push_back(clip_grad_norm(ptrs, sizes, 2, 1.0, norm, false));
          outs.push_back(g1);
          outs.push_back(g2);
        }
      {
        std::vector<T> g1 = xs;
        T* ptrs[] = {g1.data()};
        const index_t sizes[] = {index_t(n)};
        clip_grad_value(ptrs, sizes, 1, 0.5);
        outs.push_back(g1);
      }
      if (k == 0) {
        first = outs;
        first_values = values;
        continue;
      }
      bool same = outs.size() == first.size();
      for (std::size_t i = 0; same && i < outs.size(); ++i) same = same_bits(outs[i], first[i]);
      for (std::size_t i = 0; same && i < values.size(); ++i) same = same_bits(values[i], first_values[i]);
      check(same, "losses, optimizers and clipping on " + isas[k] + ": same bits as " + isas[0] +
                      ", " + where);
    }
  }
  gemm_set_isa(isas.back());
}

// The optimizers' dry runs say exactly whether the step leaves every weight and buffer finite,
// on every ISA path, for steps near the top of the range (some elements overflow, some not),
// and the SGD step reports the largest exponent among its new weights.
template <class T>
void test_update_dry_runs(const char* dtype) {
  const T big = std::numeric_limits<T>::max() / T(4);
  auto all_finite_vec = [](const std::vector<T>& v) {
    for (T x : v)
      if (!std::isfinite(x)) return false;
    return true;
  };
  auto max_exp = [](const std::vector<T>& v) {  // the largest biased exponent field
    int m = 0;
    for (T x : v) {
      const int e = !std::isfinite(x) ? (sizeof(T) == 4 ? 255 : 2047)
                    : !std::isnormal(x) ? 0
                                        : std::ilogb(x) + std::numeric_limits<T>::max_exponent - 1;
      m = std::max(m, e);
    }
    return m;
  };
  int seen[2] = {0, 0};  // dry runs that said "overflows" and "finite"
  for (const std::string& isa : gemm_supported_isas()) {
    gemm_set_isa(isa);
    Rng rng(11);
    const std::size_t n = 37;
    for (int trial = 0; trial < 40; ++trial) {
      auto p = random_vec<T>(rng, n), g = random_vec<T>(rng, n), b0 = random_vec<T>(rng, n);
      // a few elements near the top, so that some steps overflow and some do not
      for (std::size_t i = 0; i < n; i += 5) p[i] = p[i] < 0 ? -big : big;
      if (trial % 7 == 3) g[n / 2] = std::numeric_limits<T>::infinity();
      if (trial % 7 == 5) g[1] = std::numeric_limits<T>::quiet_NaN();
      const double lrs[] = {0.1, 1.0, double(big), 3.0 * double(big)};
      const double lr = lrs[trial % 4];
      for (int variant = 0; variant < 4; ++variant) {  // plain, decay, momentum, nesterov
        SGDConfig cfg;
        cfg.lr = lr;
        cfg.weight_decay = variant == 1 ? 2.0 : 0.0;
        cfg.momentum = variant >= 2 ? 0.9 : 0.0;
        cfg.nesterov = variant == 3;
        const bool has_buf = variant >= 2 && trial % 2 == 0;
        const bool ok = sgd_step_finite(p.data(), g.data(), b0.data(), has_buf, index_t(n), cfg);
        std::vector<T> q = p, b = b0;
        const StepExponents e = sgd_step(q.data(), g.data(), b.data(), has_buf, index_t(n), cfg);
        const bool finite = all_finite_vec(q) && (variant < 2 || all_finite_vec(b));
        ++seen[finite];
        check(ok == finite, std::string("sgd_step_finite is the step's outcome, ") + dtype + " " +
                                isa + " variant " + std::to_string(variant));
        check(e.value == max_exp(q) && e.state[0] == (variant >= 2 ? max_exp(b) : 0) &&
                  e.state[1] == 0 && e.state[2] == 0,
              std::string("sgd_step returns the largest exponents it wrote, ") + dtype + " " + isa);
      }
      for (int variant = 0; variant < 2; ++variant) {  // plain, amsgrad + decay
        AdamConfig cfg;
        cfg.lr = lr;
        cfg.amsgrad = variant == 1;
        cfg.weight_decay = variant == 1 ? 0.5 : 0.0;
        std::vector<T> m = b0, v(n), vmax(n);
        for (std::size_t i = 0; i < n; ++i) v[i] = vmax[i] = std::fabs(b0[i]);
        const bool ok = adam_step_finite(p.data(), g.data(), m.data(), v.data(), vmax.data(), 2,
                                         index_t(n), cfg);
        std::vector<T> q = p;
        const StepExponents e =
            adam_step(q.data(), g.data(), m.data(), v.data(), vmax.data(), 2, index_t(n), cfg);
        check(e.value == max_exp(q) && e.state[0] == max_exp(m) && e.state[1] == max_exp(v) &&
                  e.state[2] == (variant == 1 ? max_exp(vmax) : 0),
              std::string("adam_step returns the largest exponents it wrote, ") + dtype + " " + isa);
        const bool finite = all_finite_vec(q) && all_finite_vec(m) && all_finite_vec(v);
        ++seen[finite];
        check(ok == finite,
              std::string("adam_step_finite is the step's outcome, ") + dtype + " " + isa);
      }
    }
  }
  check(seen[0] > 20 && seen[1] > 20,
        std::string("the dry-run cases include steps that overflow and steps that do not, ") + dtype);
  gemm_set_isa(gemm_supported_isas().back());
}

void test_activations() {
  Rng rng(2);
  const index_t R = 5, C = 7;
  auto x = random_vec<double>(rng, R * C);
  for (auto& v : x) v *= 6;
  for (Activation a : {Activation::identity, Activation::sigmoid, Activation::tanh, Activation::relu,
                       Activation::leaky_relu, Activation::softmax, Activation::log_softmax}) {
    std::vector<double> y(x.size()), yr(x.size()), dx(x.size()), dxr(x.size());
    auto dy = random_vec<double>(rng, x.size());
    activation_forward(y.data(), x.data(), R, C, a, 0.1);
    activation_forward_ref(yr.data(), x.data(), R, C, a, 0.1);
    double err = 0;
    for (std::size_t i = 0; i < y.size(); ++i) err = std::max(err, std::abs(y[i] - yr[i]));
    check(err < 1e-15, std::string("activation_forward vs ref: ") + activation_name(a));
    activation_backward(dx.data(), dy.data(), x.data(), y.data(), R, C, a, 0.1);
    // Central differences of L = sum dy * f(x).
    double fd_err = 0;
    for (std::size_t i = 0; i < x.size(); ++i) {
      const double h = 1e-6;
      std::vector<double> xp = x, xm = x, yp(x.size()), ym(x.size());
      xp[i] += h;
      xm[i] -= h;
      activation_forward(yp.data(), xp.data(), R, C, a, 0.1);
      activation_forward(ym.data(), xm.data(), R, C, a, 0.1);
      double lp = 0, lm = 0;
      for (std::size_t j = 0; j < x.size(); ++j) { lp += dy[j] * yp[j]; lm += dy[j] * ym[j]; }
      fd_err = std::max(fd_err, std::abs((lp - lm) / (2 * h) - dx[i]));
    }
    check(fd_err < 1e-7, std::string("activation_backward vs central differences: ") +
                             activation_name(a));
  }
}

void test_losses_and_dense() {
  Rng rng(3);
  const index_t B = 4, I = 3, O = 5;
  auto x = random_vec<double>(rng, B * I), W = random_vec<double>(rng, O * I);
  auto b = random_vec<double>(rng, O), t = random_vec<double>(rng, B * O);
  for (auto& v : t) v = (v + 1) / 2;  // in [0, 1]: valid for every loss
  for (LossKind k : {LossKind::mse, LossKind::bce_with_logits, LossKind::cross_entropy}) {
    auto loss_of = [&](const std::vector<double>& xx, const std::vector<double>& WW,
                       std::vector<double>* grad_y) {
      std::vector<double> y(B * O);
      dense_forward(y.data(), xx.data(), WW.data(), b.data(), B, I, O);
      std::vector<double> g(B * O);
      const double l = loss_forward_backward(g.data(), y.data(), t.data(), B, O, k, Reduction::mean);
      if (grad_y) *grad_y = g;
      return l;
    };
    std::vector<double> gy;
    loss_of(x, W, &gy);
    std::vector<double> dx(B * I), dW(O * I, 0.0), db(O, 0.0);
    dense_backward(dx.data(), dW.data(), db.data(), gy.data(), x.data(), W.data(), B, I, O);
    double err = 0;
    const double h = 1e-6;
    for (std::size_t i = 0; i < W.size(); ++i) {
      auto Wp = W, Wm = W;
      Wp[i] += h;
      Wm[i] -= h;
      err = std::max(err, std::abs((loss_of(x, Wp, nullptr) - loss_of(x, Wm, nullptr)) / (2 * h) - dW[i]));
    }
    for (std::size_t i = 0; i < x.size(); ++i) {
      auto xp = x, xm = x;
      xp[i] += h;
      xm[i] -= h;
      err = std::max(err, std::abs((loss_of(xp, W, nullptr) - loss_of(xm, W, nullptr)) / (2 * h) - dx[i]));
    }
    check(err < 1e-8, std::string("dense + loss gradients vs central differences: ") + loss_name(k));
  }
}

void test_sgd_plain_rule() {
  std::vector<float> p = {1.0f, -2.0f, 0.5f}, g = {0.25f, 1.0f, -4.0f};
  std::vector<float> expect(3);
  for (int i = 0; i < 3; ++i) expect[i] = p[i] - 0.1f * g[i];
  SGDConfig cfg;
  cfg.lr = 0.1;
  sgd_step(p.data(), g.data(), static_cast<float*>(nullptr), false, 3, cfg);
  check(p == expect, "SGD with momentum 0 is exactly w - lr * grad");
}

void test_thread_pool() {
  const int before = get_num_threads();
  set_num_threads(2);
  std::vector<std::atomic<int>> hits(100);
  parallel_for(100, [&](int i) { hits[std::size_t(i)]++; });
  bool once = true;
  for (auto& h : hits) once = once && h.load() == 1;
  check(once, "parallel_for runs every task exactly once");
  bool caught = false;
  try {
    parallel_for(8, [](int i) {
      if (i == 5) throw std::runtime_error("task 5");
    });
  } catch (const std::runtime_error& e) {
    caught = std::string(e.what()) == "task 5";
  }
  check(caught, "an exception in a worker task is rethrown in the caller");
  std::atomic<int> inner{0};
  parallel_for(4, [&](int) { parallel_for(3, [&](int) { inner++; }); });
  check(inner.load() == 12, "nested parallel_for runs inline");
  set_num_threads(before);
}

// parallel_phases: every (phase, part) once, each phase only after the whole previous one, on 1,
// 2 and 3 threads (more threads than parts too), nested inside a pool task (inline), and a
// throwing task ends the run with its exception instead of leaving the others waiting.
void test_parallel_phases() {
  const int before = get_num_threads();
  for (int threads : {1, 2, 3}) {
    set_num_threads(threads);
    for (int parts : {1, 2, 5}) {
      const int phases = 200;
      std::vector<std::atomic<int>> hits(std::size_t(phases * parts));
      std::atomic<int> finished{0};  // tasks finished so far
      std::atomic<bool> ordered{true};
      parallel_phases(phases, parts, [&](int k, int p) {
        // Everything of phases < k is finished, nothing of phases > k has started.
        const int f = finished.load();
        if (f < k * parts || f > (k + 1) * parts) ordered = false;
        hits[std::size_t(k * parts + p)]++;
        finished++;
      });
      bool once = true;
      for (auto& h : hits) once = once && h.load() == 1;
      const std::string tag = " (threads=" + std::to_string(threads) + ", parts=" +
                              std::to_string(parts) + ")";
      check(once, "parallel_phases runs every task exactly once" + tag);
      check(ordered.load(), "parallel_phases runs a phase only after the previous one" + tag);
    }
    std::atomic<int> inner{0};
    parallel_for(3, [&](int) { parallel_phases(4, 2, [&](int, int) { inner++; }); });
    check(inner.load() == 24, "parallel_phases inside a pool task runs inline");
    bool caught = false;
    std::atomic<int> after{0};
    try {
      parallel_phases(50, 2, [&](int k, int p) {
        if (k == 10 && p == 1) throw std::runtime_error("phase 10");
        if (k > 10) after++;
      });
    } catch (const std::runtime_error& e) {
      caught = std::string(e.what()) == "phase 10";
    }
    check(caught && after.load() == 0,
          "an exception in parallel_phases is rethrown and no later phase runs");
  }
  set_num_threads(before);
}

void test_network_learns_xor_and_reproduces() {
  auto train = [](std::uint64_t seed, std::vector<float>& weights) {
    std::vector<LayerSpec> layers(3);
    layers[0].kind = "dense"; layers[0].in_features = 2; layers[0].out_features = 8;
    layers[1].kind = "activation"; layers[1].activation = Activation::tanh;
    layers[2].kind = "dense"; layers[2].in_features = 8; layers[2].out_features = 1;
    OptimizerConfig opt;
    opt.sgd.lr = 0.5;
    Network<float> net(layers, 2, LossConfig{LossKind::bce_with_logits}, opt, seed);
    const float X[8] = {0, 0, 0, 1, 1, 0, 1, 1}, y[4] = {0, 1, 1, 0};
    FitOptions fit;
    fit.batch_size = 2;
    for (int e = 0; e < 1500; ++e) net.fit_epoch(X, y, nullptr, 4, 0, fit, nullptr);
    float out[4];
    net.predict(out, X, 4, 0);
    weights.clear();
    for (Param<float>* p : net.params())
      weights.insert(weights.end(), p->value.data(), p->value.data() + p->size());
    int correct = 0;
    for (int i = 0; i < 4; ++i) correct += (out[i] > 0) == (y[i] > 0.5f);
    return correct;
  };
  std::vector<float> w1, w2;
  check(train(7, w1) == 4, "a 2-8-1 network learns XOR");
  train(7, w2);
  check(w1 == w2, "the same seed reproduces the weights bit for bit");
}

// fit_epoch without shuffle reads the caller's rows where they lie and leaves no tape behind
// (it would refer to the caller's memory): backward needs a forward first, with or without shuffle.
void test_fit_leaves_no_tape() {
  std::vector<LayerSpec> layers(2);
  layers[0].kind = "activation"; layers[0].activation = Activation::tanh;  // reads x in backward
  layers[1].kind = "dense"; layers[1].in_features = 2; layers[1].out_features = 1;
  for (bool shuffle : {false, true}) {
    Network<double> net(layers, 2, LossConfig{LossKind::mse}, OptimizerConfig{}, 3);
    const double X[8] = {0, 0, 0, 1, 1, 0, 1, 1}, y[4] = {0, 1, 1, 0};
    FitOptions fit;
    fit.batch_size = 3;
    fit.shuffle = shuffle;
    net.fit_epoch(X, y, nullptr, 4, 0, fit, nullptr);
    bool threw = false;
    try { net.backward_loss(y, nullptr); } catch (const std::logic_error&) { threw = true; }
    check(threw && net.last_batch() == 0, "fit_epoch leaves no tape for backward to read");
    net.forward(X, 4, 0);
    check(std::isfinite(net.backward_loss(y, nullptr)), "a forward after fit makes a new tape");
  }
}

void test_backward_refuses_a_tape_older_than_the_weights() {
  std::vector<LayerSpec> layers(1);
  layers[0].kind = "dense"; layers[0].in_features = 2; layers[0].out_features = 1;
  Network<double> net(layers, 2, LossConfig{LossKind::mse}, OptimizerConfig{}, 3);
  const double X[4] = {0, 1, 1, 0}, y[2] = {1, 0};
  auto throws = [&] {
    try { net.backward_loss(y, nullptr); } catch (const std::logic_error&) { return true; }
    return false;
  };
  net.forward(X, 2, 0);
  net.backward_loss(y, nullptr);
  net.step();
  check(throws(), "backward after a step needs a new forward");
  net.forward(X, 2, 0);
  net.param("0.weight").value[0] = 3;  // a write through the writable handle
  check(throws(), "backward after a write through param() needs a new forward");
  net.forward(X, 2, 0);
  net.zero_grad();
  check(!throws(), "zeroing the gradients keeps the tape");
}

// Stateful training carries row i's state into row i of the next batch: shuffled rows or a short
// last batch would carry states into unrelated sequences, so both are refused up front.
void test_stateful_fit_refuses_misaligned_batches() {
  LayerSpec r;
  r.kind = "rnn";
  r.in_features = 2;
  r.out_features = 3;
  Network<float> net({r}, 2, LossConfig{LossKind::mse}, OptimizerConfig{}, 0);
  Rng rng(3);
  auto X = random_vec<float>(rng, 4 * 5 * 2), Y = random_vec<float>(rng, 4 * 5 * 3);
  const Param<float>& w = std::as_const(net).param("0.weight_hh_l0");
  const std::vector<float> before(w.value.data(), w.value.data() + w.size());
  auto message = [&](index_t n, index_t batch, bool shuffle) -> std::string {
    FitOptions fo;
    fo.batch_size = batch;
    fo.shuffle = shuffle;
    fo.stateful = true;
    try {
      net.fit_epoch(X.data(), Y.data(), nullptr, n, 5, fo, nullptr);
    } catch (const std::invalid_argument& e) {
      return e.what();
    }
    return "";
  };
  check(message(4, 2, true).find("shuffling") != std::string::npos, "stateful + shuffle refused");
  check(message(3, 2, false).find("last batch of 1") != std::string::npos,
        "stateful with a short last batch refused");
  check(std::equal(before.begin(), before.end(), w.value.data()),
        "a refused stateful fit changes no weight");
  check(message(4, 2, false).empty(), "stateful, in order, equal batches: trains");
  check(message(4, 4, true).empty(), "stateful, one batch an epoch: shuffling is harmless");
}

// Negative sizes and counts are refused, not taken as empty loops (or, for dense_forward with no
// inputs, a fill of a negative length: a write past the output).
void test_negative_sizes_and_counts_are_refused() {
  auto invalid = [](auto&& f) {
    try { f(); } catch (const std::invalid_argument&) { return true; }
    return false;
  };
  std::vector<double> y(4, 7.0), x(4, 1.0), w(4, 1.0);
  check(invalid([&] { dense_forward<double>(y.data(), nullptr, nullptr, nullptr, -1, 0, 2); }),
        "dense_forward with B = -1 and no inputs");
  check(invalid([&] { dense_forward<double>(y.data(), x.data(), w.data(), nullptr, 2, -2, 2); }),
        "dense_forward with I = -2");
  check(invalid([&] {
          dense_backward<double>(x.data(), w.data(), nullptr, y.data(), x.data(), w.data(), -1, 2,
                                 2);
        }), "dense_backward with B = -1");
  check(y == std::vector<double>(4, 7.0), "a refused dense call writes nothing");
  LayerSpec d;
  d.kind = "dense"; d.in_features = 2; d.out_features = 2;
  OptimizerConfig adam;
  adam.kind = OptimizerConfig::Kind::adam;
  Network<float> net({d}, 2, LossConfig{}, adam, 0);
  std::vector<float> out(8), in(8, 1.0f);
  check(invalid([&] { net.predict(out.data(), in.data(), -4, 0); }), "predict with n = -4");
  check(invalid([&] { net.set_optimizer_steps(-1); }),
        "a negative optimizer step count (Adam's bias correction would divide by 0)");
  check(net.optimizer_steps() == 0, "and the count is kept");
}

// With truncated BPTT every chunk is an optimizer step, and interrupt() is asked after each.
void test_interrupt_is_asked_after_every_bptt_chunk() {
  LayerSpec r;
  r.kind = "rnn"; r.in_features = 2; r.out_features = 3;
  Network<float> net({r}, 2, LossConfig{LossKind::mse}, OptimizerConfig{}, 0);
  Rng rng(5);
  auto X = random_vec<float>(rng, 4 * 12 * 2), Y = random_vec<float>(rng, 4 * 12 * 3);
  FitOptions fo;
  fo.batch_size = 2;
  fo.shuffle = false;
  fo.bptt_steps = 3;
  int asked = 0;
  net.fit_epoch(X.data(), Y.data(), nullptr, 4, 12, fo, [&] { ++asked; return false; });
  check(asked == 8 && net.optimizer_steps() == 8,
        "interrupt() after each of 8 chunk steps, got " + std::to_string(asked));
  bool stopped = false;
  try {
    net.fit_epoch(X.data(), Y.data(), nullptr, 4, 12, fo, [&] { return true; });
  } catch (const Interrupted&) {
    stopped = true;
  }
  check(stopped && net.optimizer_steps() == 9, "a stop request ends the epoch after one chunk");
}

void test_fit_keeps_the_callers_initial_states() {
  LayerSpec r;
  r.kind = "gru";
  r.in_features = 2;
  r.out_features = 3;
  for (int mode = 0; mode < 2; ++mode) {  // truncated BPTT, then stateful: both carry states
    Network<float> net({r}, 2, LossConfig{LossKind::mse}, OptimizerConfig{}, 0);
    Rng rng(9);
    auto X = random_vec<float>(rng, 4 * 6 * 2), Y = random_vec<float>(rng, 4 * 6 * 3);
    FitOptions fo;
    fo.batch_size = 2;
    fo.shuffle = false;
    if (mode == 0) fo.bptt_steps = 3; else fo.stateful = true;
    const std::string what = mode == 0 ? "truncated BPTT" : "stateful";
    net.fit_epoch(X.data(), Y.data(), nullptr, 4, 6, fo, nullptr);
    std::vector<float> p(4 * 6 * 3);
    net.predict(p.data(), X.data(), 4, 6);
    const float* f = net.forward(X.data(), 4, 6);
    check(std::equal(p.begin(), p.end(), f), "forward after fit (" + what + ") starts from zeros");
    bool threw = false;
    try { net.forward(X.data(), 3, 6); } catch (const std::exception&) { threw = true; }
    check(!threw, "no carried state of fit's batch size is left for forward (" + what + ")");
    // a state the caller set for forward survives fit, which starts from zeros regardless
    std::vector<float> h0(4 * 3, 0.7f);
    net.set_initial_state(0, h0.data(), 12, nullptr, 0);
    net.fit_epoch(X.data(), Y.data(), nullptr, 4, 6, fo, nullptr);
    const float* g = net.forward(X.data(), 4, 6);
    std::vector<float> kept(g, g + p.size());
    net.set_initial_state(0, h0.data(), 12, nullptr, 0);
    g = net.forward(X.data(), 4, 6);
    check(std::equal(kept.begin(), kept.end(), g), "the caller's h0 survives fit (" + what + ")");
    net.set_initial_state(0, nullptr, 0, nullptr, 0);
    g = net.forward(X.data(), 4, 6);
    check(!std::equal(kept.begin(), kept.end(), g), "and it is not zeros (" + what + ")");
  }
}

void test_bad_activation_codes_are_refused() {
  LayerSpec d, a;
  d.kind = "dense"; d.in_features = 3; d.out_features = 3;
  a.kind = "activation"; a.activation = Activation(99);
  bool threw = false;
  try { Network<float> net({d, a}, 3, LossConfig{}, OptimizerConfig{}, 0); }
  catch (const std::invalid_argument&) { threw = true; }
  check(threw, "a LayerSpec with an unknown activation code is refused");
  float x[3] = {1, 2, 3}, y[3] = {0, 0, 0};
  threw = false;
  try { activation_forward(y, x, 1, 3, Activation(-1), 0.f); }
  catch (const std::invalid_argument&) { threw = true; }
  check(threw, "activation_forward refuses an unknown activation code");
}

void test_param_is_busy_while_another_thread_trains() {
  std::vector<LayerSpec> layers(1);
  layers[0].kind = "dense"; layers[0].in_features = 64; layers[0].out_features = 64;
  Network<float> net(layers, 64, LossConfig{LossKind::mse}, OptimizerConfig{}, 0);
  Rng rng(2);
  auto X = random_vec<float>(rng, 4096 * 64), Y = random_vec<float>(rng, 4096 * 64);
  FitOptions fo;
  fo.batch_size = 8;
  std::atomic<bool> training{true};
  std::thread t([&] {  // either side may find the other holding the network: Busy, try again
    for (int e = 0; e < 20;) {
      try {
        net.fit_epoch(X.data(), Y.data(), nullptr, 4096, 0, fo, nullptr);
        ++e;
      } catch (const Busy&) {
      }
    }
    training = false;
  });
  int busy = 0;
  while (training) {
    try { net.param("0.weight"); } catch (const Busy&) { ++busy; }
    try { net.set_optimizer_steps(3); } catch (const Busy&) { ++busy; }
  }
  t.join();
  check(busy > 0, "param(name) and set_optimizer_steps throw Busy while fit runs elsewhere");
}

void test_buffer_moves() {
  Buffer<float> a(100);
  a[99] = 1.f;
  const float* data = a.data();
  Buffer<float> b(std::move(a));
  a.resize(50);  // the moved-from buffer allocates afresh (it used to zero-fill through null)
  check(a.size() == 50 && a.data() != nullptr && a[49] == 0.f, "a moved-from Buffer is reusable");
  b.resize(80);  // within the capacity it took over: no new allocation
  check(b.data() == data && b.capacity_bytes() == 100 * sizeof(float),
        "a moved-to Buffer keeps the capacity");
  Buffer<float> c(10), d(200);
  std::swap(c, d);  // as recurrent backward swaps its gradient buffers
  check(c.capacity_bytes() == 200 * sizeof(float) && d.capacity_bytes() == 10 * sizeof(float),
        "std::swap exchanges capacities");
}

void test_failed_forward_leaves_no_tape() {
  // dense -> rnn -> dense; a forward that fails in the rnn (a wrong initial state) has already
  // overwritten the first activations with the new batch: backward must refuse, not mix batches.
  std::vector<LayerSpec> layers(3);
  layers[0].kind = "dense"; layers[0].in_features = 2; layers[0].out_features = 3;
  layers[1].kind = "rnn"; layers[1].in_features = 3; layers[1].out_features = 4;
  layers[2].kind = "dense"; layers[2].in_features = 4; layers[2].out_features = 1;
  Network<double> net(layers, 2, LossConfig{}, OptimizerConfig{}, 1);
  std::vector<double> x4(4 * 5 * 2, 0.5), x6(6 * 5 * 2, -0.5), y4(4 * 5, 1.0), h0(7, 0.0);
  net.forward(x4.data(), 4, 5);
  net.set_initial_state(1, h0.data(), index_t(h0.size()), nullptr, 0);  // needs 1 x 6 x 4
  bool threw = false;
  try { net.forward(x6.data(), 6, 5); } catch (const std::invalid_argument&) { threw = true; }
  check(threw, "a forward with a wrong initial state throws");
  threw = false;
  try { net.backward_loss(y4.data(), nullptr); } catch (const std::logic_error&) { threw = true; }
  check(threw, "backward after a failed forward throws instead of reading a mixed tape");
  net.set_initial_state(1, nullptr, 0, nullptr, 0);
  net.forward(x4.data(), 4, 5);
  check(std::isfinite(net.backward_loss(y4.data(), nullptr)), "a new forward makes a new tape");
}

void test_out_of_memory() {
  if (available_memory() == 0) return;  // not Linux: nothing to compare with
  bool refused = false;
  try {
    Buffer<float> b(index_t(1) << 50);  // 4 PiB
  } catch (const OutOfMemory& e) {
    refused = std::string(e.what()).find("available") != std::string::npos;
  }
  check(refused, "a 4 PiB Buffer is refused with OutOfMemory before malloc");
}

void test_rng() {
  Rng a(42), b(42);
  bool same = true, in_range = true;
  for (int i = 0; i < 1000; ++i) {
    same = same && a.next() == b.next();
    const auto v = a.below(7);
    b.below(7);
    in_range = in_range && v < 7;
  }
  check(same && in_range, "Rng: same seed, same stream; below(n) < n");
}

// The skinny path (M or N a few, vectors along the other side) against the register-tile path
// (gemm_set_skinny(0)): the same bits on every ISA path, for 1 and 2 threads, every transpose,
// shrunk depth blocks (several per element), beta 0 with NaN in C, beta 1 and other scalars,
// and leading dimensions wider than the rows. The portable path's kernel is skinny_ref, so
// agreeing with the baseline run also checks each ISA kernel against its _ref twin.
template <class T>
void test_gemm_skinny_paths(const char* dtype) {
  Rng rng(3);
  const index_t shapes[][3] = {{1, 1, 1},    {1, 70, 45},  {2, 33, 20}, {3, 64, 130},
                               {4, 17, 9},   {5, 100, 7},  {8, 31, 66}, {9, 40, 12},
                               {16, 65, 33}, {17, 20, 5},  {1, 700, 400}, {3, 1500, 180}};
  const GemmBlocking before = gemm_get_blocking();
  const int threads = get_num_threads();
  const T nan = std::numeric_limits<T>::quiet_NaN();
  for (int shrink = 0; shrink < 2; ++shrink) {
    gemm_set_blocking(0, shrink ? 16 : 0, 0);
    for (auto& s : shapes)
      for (int flip = 0; flip < 2; ++flip)  // the short side as M, then as N
        for (int ta = 0; ta < 2; ++ta)
          for (int tb = 0; tb < 2; ++tb)
            for (int sc = 0; sc < 3; ++sc) {
              const index_t M = flip ? s[1] : s[0], N = flip ? s[0] : s[1], K = s[2];
              const T alpha = sc == 2 ? T(-0.75) : T(1);
              const T beta = sc == 0 ? T(0) : sc == 1 ? T(1) : T(1.5);
              // Leading dimensions 3 wider than the stored rows.
              const index_t lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 3, ldc = N + 3;
              auto A = random_vec<T>(rng, std::size_t((ta ? K : M) * lda));
              auto B = random_vec<T>(rng, std::size_t((tb ? N : K) * ldb));
              auto C0 = random_vec<T>(rng, std::size_t(M * ldc));
              if (beta == T(0))
                for (index_t i = 0; i < M; ++i)
                  for (index_t j = 0; j < N; ++j) C0[std::size_t(i * ldc + j)] = nan;
              const std::string where = std::string("skinny ") + dtype + " M=" + std::to_string(M) +
                                        " N=" + std::to_string(N) + " K=" + std::to_string(K) +
                                        " ta=" + std::to_string(ta) + " tb=" + std::to_string(tb) +
                                        " scalars=" + std::to_string(sc) + (shrink ? " kc=16" : "");
              gemm_set_isa("baseline");
              set_num_threads(1);
              gemm_set_skinny(0);
              std::vector<T> want = C0;
              gemm<T>(ta, tb, M, N, K, alpha, A.data(), lda, B.data(), ldb, beta, want.data(), ldc);
              for (const std::string& isa : gemm_supported_isas())
                for (int nt = 1; nt <= 2; ++nt) {
                  gemm_set_isa(isa);
                  set_num_threads(nt);
                  gemm_set_skinny(1 << 20);
                  std::vector<T> got = C0;
                  gemm<T>(ta, tb, M, N, K, alpha, A.data(), lda, B.data(), ldb, beta, got.data(),
                          ldc);
                  check(same_bits(got, want), where + " " + isa + " threads=" + std::to_string(nt));
                }
            }
  }
  gemm_set_skinny(-1);
  gemm_set_blocking(before.mc, before.kc, before.nc);
  set_num_threads(threads);
  gemm_set_isa(gemm_supported_isas().back());
}

// The tuned rule sends the audit's one-wide products down the skinny path, on every ISA path
// (the portable one too: its tile pads one column to 8 or 4), and square products to the tiles.
void test_gemm_skinny_rule() {
  for (const std::string& isa : gemm_supported_isas()) {
    gemm_set_isa(isa);
    for (int esize : {4, 8}) {
      const std::string where = " on " + isa + ", " + std::to_string(esize) + "-byte elements";
      check(gemm_detail::gemm_skinny_takes(32, 1, 100000, esize), "(32x1e5)(1e5x1) skinny" + where);
      check(gemm_detail::gemm_skinny_takes(1, 32, 100000, esize), "(1x1e5)(1e5x32) skinny" + where);
      check(gemm_detail::gemm_skinny_takes(100000, 1, 32, esize), "(1e5x32)(32x1) skinny" + where);
      check(!gemm_detail::gemm_skinny_takes(64, 64, 64, esize), "(64x64)(64x64) tiles" + where);
      check(!gemm_detail::gemm_skinny_takes(100000, 32, 1, esize), "(1e5x1)(1x32) tiles" + where);
    }
  }
  gemm_set_isa(gemm_supported_isas().back());
}

// Dense's own paths (the small kernel, the GEMV for a few rows, row blocks over the pool) give
// the packed GEMM's bits on every ISA path, thread count and block table.
template <class T>
void test_dense_paths_match_gemm(const char* dtype) {
  Rng rng(2);
  const index_t shapes[][3] = {{1, 1, 1},  {1, 70, 33}, {2, 17, 40}, {4, 33, 16}, {5, 9, 31},
                               {9, 40, 9}, {32, 64, 128}, {32, 128, 10}, {130, 64, 70}};
  const GemmBlocking before = gemm_get_blocking();
  const int threads = get_num_threads();
  for (const std::string& isa : gemm_supported_isas())
    for (int shrink = 0; shrink < 2; ++shrink)
      for (int nt = 1; nt <= 2; ++nt) {
        gemm_set_isa(isa);
        gemm_set_blocking(shrink ? 7 : 0, shrink ? 5 : 0, shrink ? 40 : 0);
        set_num_threads(nt);
        for (auto& s : shapes) {
          const index_t B = s[0], I = s[1], O = s[2];
          auto x = random_vec<T>(rng, std::size_t(B * I));
          auto W = random_vec<T>(rng, std::size_t(O * I));
          auto b = random_vec<T>(rng, std::size_t(O));
          auto dy = random_vec<T>(rng, std::size_t(B * O));
          auto dW0 = random_vec<T>(rng, std::size_t(O * I));
          std::vector<T> y(std::size_t(B * O)), y_ref(std::size_t(B * O));
          for (index_t r = 0; r < B; ++r)
            for (index_t o = 0; o < O; ++o) y_ref[std::size_t(r * O + o)] = b[std::size_t(o)];
          gemm<T>(false, true, B, O, I, T(1), x.data(), I, W.data(), I, T(1), y_ref.data(), O);
          dense_forward(y.data(), x.data(), W.data(), b.data(), B, I, O);
          std::vector<T> dx(std::size_t(B * I)), dx_ref(dx.size()), dW = dW0, dW_ref = dW0;
          std::vector<T> db(std::size_t(O), T(0));
          gemm<T>(false, false, B, I, O, T(1), dy.data(), O, W.data(), I, T(0), dx_ref.data(), I);
          gemm<T>(true, false, O, I, B, T(1), dy.data(), O, x.data(), I, T(1), dW_ref.data(), I);
          dense_backward(dx.data(), dW.data(), db.data(), dy.data(), x.data(), W.data(), B, I, O);
          const std::string where = std::string("dense paths vs gemm, ") + dtype + " " + isa +
                                    " B=" + std::to_string(B) + " I=" + std::to_string(I) +
                                    " O=" + std::to_string(O) + " threads=" + std::to_string(nt) +
                                    (shrink ? " shrunk" : "");
          check(y == y_ref, "forward: " + where);
          check(dx == dx_ref, "dx: " + where);
          check(dW == dW_ref, "dW: " + where);
        }
      }
  gemm_set_blocking(before.mc, before.kc, before.nc);
  set_num_threads(threads);
  gemm_set_isa(gemm_supported_isas().back());
}

// A Dense layer keeps its weight laid out for the forward until the weight changes: a write
// through Network::param, or through params() followed by Param::changed(), must be seen by the
// next predict, on every path of the cached forward (a few rows, the small path, the GEMM).
void test_weight_writes_reach_predict() {
  std::vector<LayerSpec> layers(1);
  layers[0].kind = "dense";
  layers[0].in_features = 160;
  layers[0].out_features = 150;  // 24 K weights: above the cache's 16 K
  Network<float> net(layers, 160, LossConfig{LossKind::mse}, OptimizerConfig{}, 1);
  Rng rng(5);
  for (index_t rows : {1, 3, 12, 200}) {
    auto x = random_vec<float>(rng, std::size_t(rows * 160));
    std::vector<float> out(std::size_t(rows * 150)), ref(out.size());
    auto expect = [&] {
      const Param<float>& w = *net.params()[0];
      const Param<float>& b = *net.params()[1];
      dense_forward(ref.data(), x.data(), w.value.data(), b.value.data(), rows, 160, 150);
    };
    net.predict(out.data(), x.data(), rows, 0);
    expect();
    check(out == ref, "predict before a write, rows=" + std::to_string(rows));
    Param<float>& w = net.param("0.weight");
    for (index_t i = 0; i < w.size(); ++i) w.value[i] *= -0.5f;
    net.predict(out.data(), x.data(), rows, 0);
    expect();
    check(out == ref, "predict after a write through param(), rows=" + std::to_string(rows));
    Param<float>* p = net.params()[0];
    for (index_t i = 0; i < p->size(); ++i) p->value[i] += 0.25f;
    p->changed();
    net.predict(out.data(), x.data(), rows, 0);
    expect();
    check(out == ref, "predict after a write and changed(), rows=" + std::to_string(rows));
  }
  check(net.workspace_bytes() >= 160 * 150 * sizeof(float),
        "workspace_bytes counts the laid-out weight");
}

}  // namespace

int main() {
  test_gemm_paths<float>("f32");
  test_gemm_paths<double>("f64");
  test_gemm_rounds_each_fma_once();
  test_elementwise_paths<float>("f32");
  test_elementwise_paths<double>("f64");
  test_activations();
  test_losses_and_dense();
  test_dense_paths_match_gemm<float>("f32");
  test_dense_paths_match_gemm<double>("f64");
  test_gemm_skinny_paths<float>("f32");
  test_gemm_skinny_paths<double>("f64");
  test_gemm_skinny_rule();
  test_sgd_plain_rule();
  test_thread_pool();
  test_parallel_phases();
  test_network_learns_xor_and_reproduces();
  test_fit_leaves_no_tape();
  test_backward_refuses_a_tape_older_than_the_weights();
  test_fit_keeps_the_callers_initial_states();
  test_stateful_fit_refuses_misaligned_batches();
  test_negative_sizes_and_counts_are_refused();
  test_interrupt_is_asked_after_every_bptt_chunk();
  test_bad_activation_codes_are_refused();
  test_param_is_busy_while_another_thread_trains();
  test_update_dry_runs<float>("float32");
  test_update_dry_runs<double>("float64");
  test_weight_writes_reach_predict();
  test_rng();
  test_buffer_moves();
  test_failed_forward_leaves_no_tape();
  test_out_of_memory();
  std::printf("%d passed, %d failed\n", g_passed, g_failed);
  return g_failed == 0 ? 0 : 1;
}
