// Recurrent layers and backpropagation through time. See recurrent.hpp for the conventions.
// Internally everything is time-major, (T, B, .), so that a segment of steps is one contiguous
// block of rows and its input projection and weight gradients are single GEMMs; the layer's
// batch-first input, output and their gradients are read and written a segment at a time where
// the network keeps them, never copied whole. The steps of a segment run as one parallel_phases
// job, a phase per step and a task per slice of the hidden units: the slice's gate columns of
// h_{t-1} W_hh^T and its cell math (forward), or its columns of dL/dh_t = dG_{t+1} W_hh and its
// units' dG_t (backward). No thread sleeps between the steps.
//
// Accumulation rule: parameter gradients accumulate (+=), input gradients overwrite (=).
#include "chainrule/recurrent.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "chainrule/dense.hpp"
#include "chainrule/gemm.hpp"
#include "chainrule/threads.hpp"
#include "layers.hpp"
#include "cells.hpp"

namespace chainrule {

namespace {

enum class CellKind { rnn, lstm, gru };

// The cell math of the current ISA path, which follows the GEMM's (gemm_isa): every path computes
// the same bits, the newer ones with wider vectors.
template <class T>
const CellKernels<T>& cell_kernels() {
  static constexpr CellKernels<T> baseline = make_cell_kernels<T>();
#if CHAINRULE_X86_KERNELS
  const int level = gemm_isa_level();
  constexpr bool f32 = std::is_same<T, float>::value;
  if (level == 2) {
    if constexpr (f32) return cells_isa_v4::f32;
    else return cells_isa_v4::f64;
  }
  if (level == 1) {
    if constexpr (f32) return cells_isa_v3::f32;
    else return cells_isa_v3::f64;
  }
#endif
  return baseline;
}

// The width of the slices the time loop splits the H hidden units into: one slice per thread
// when a step's GEMM (B G H multiply-adds) is a few microseconds of work, in whole pairs of
// AVX-512 vectors (the micro-panel width) so that the GEMM and the cell loops get no ragged edges
// but the last; H (one slice) otherwise. Below that (rnnlong: B G H = 16 * 64 * 64) a step is
// ~1 us: split, it gained little on a quiet machine and lost ~40 % on a busy one, where a
// preempted thread stalls every phase it holds a part of.
template <class T>
index_t time_loop_slice_width(index_t B, index_t H, index_t G) {
  const int threads = get_num_threads();
  if (threads <= 1 || double(B) * double(G) * double(H) < 131072.0) return H;
  const index_t gran = 128 / index_t(sizeof(T)), units = (H + gran - 1) / gran;
  const index_t parts = std::min<index_t>(threads, units);
  return std::min(H, (units + parts - 1) / parts * gran);
}

// Row groups for the time loop: a row of h_t depends only on the same row of h_{t-1} (and of the
// step's input), so each thread can run every step of a segment for its own batch rows, with one
// fork and join per segment instead of a phase (and its barrier) per step; a preempted thread
// then delays only its own rows' steps. Taken when every group has at least 8 rows (a register
// tile) and a step is worth splitting; 1 otherwise (then the hidden units are split into slices).
inline index_t time_loop_row_groups(index_t B, index_t H, index_t G) {
  const int threads = get_num_threads();
  if (threads <= 1 || B < 16 || double(B) * double(G) * double(H) < 32768.0) return 1;
  return std::min<index_t>(threads, B / 8);
}

// Rows [r0, r1) of group g of `groups` over B rows: as even as whole rows allow.
inline void group_rows(index_t B, index_t groups, index_t g, index_t& r0, index_t& r1) {
  r0 = B * g / groups;
  r1 = B * (g + 1) / groups;
}

// sum of x[i]^2 in double, in eight interleaved partial sums (a fixed order, so the same bits
// wherever it runs; one chain of dependent additions would take 4 cycles an element).
template <class T>
double sum_of_squares(const T* x, index_t n) {
  double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  index_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) acc[j] += double(x[i + j]) * double(x[i + j]);
  for (int j = 0; i < n; ++i, ++j) acc[j] += double(x[i]) * double(x[i]);
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

// Segment length: ceil(sqrt(T)), the checkpoint spacing that minimises states + one segment.
index_t segment_length(index_t steps) {
  index_t s = index_t(std::sqrt(double(steps)));
  while (s * s < steps) ++s;
  return std::max<index_t>(1, s);
}

// One row of F values. The rows here are short (8 to 512 bytes) and many (B T per sequence
// batch): a libc memcpy call per row cost more than its copy (12 % of an rnnlong step, 32 K
// calls). Fixed-size chunks compile to inline moves.
template <class T>
inline void copy_row(T* __restrict dst, const T* __restrict src, index_t F) {
  const std::size_t bytes = std::size_t(F) * sizeof(T);
  auto* d = reinterpret_cast<unsigned char*>(dst);
  const auto* s = reinterpret_cast<const unsigned char*>(src);
  std::size_t o = 0;
  for (; o + 64 <= bytes; o += 64) __builtin_memcpy(d + o, s + o, 64);
  for (; o + 16 <= bytes; o += 16) __builtin_memcpy(d + o, s + o, 16);
  for (; o + 4 <= bytes; o += 4) __builtin_memcpy(d + o, s + o, 4);
}

// Steps [s, s + n) of a batch-first (B, T, F) sequence <-> a time-major (n, B, F) segment, time
// steps split over the pool above ~64 K elements.
template <class T>
void gather_steps(T* dst, const T* src, index_t B, index_t steps, index_t s, index_t n,
                  index_t F) {
  parallel_ranges(n, 1, B * n * F / 65536, [=](std::int64_t t0, std::int64_t t1) {
    for (index_t t = t0; t < t1; ++t)
      for (index_t b = 0; b < B; ++b)
        copy_row(dst + (t * B + b) * F, src + (b * steps + s + t) * F, F);
  });
}
template <class T>
void scatter_steps(T* dst, const T* src, index_t B, index_t steps, index_t s, index_t n,
                   index_t F) {
  parallel_ranges(n, 1, B * n * F / 65536, [=](std::int64_t t0, std::int64_t t1) {
    for (index_t t = t0; t < t1; ++t)
      for (index_t b = 0; b < B; ++b)
        copy_row(dst + (b * steps + s + t) * F, src + (t * B + b) * F, F);
  });
}

template <class T>
class RecurrentLayer final : public Layer<T> {
 public:
  RecurrentLayer(const LayerSpec& s, std::size_t index)
      : I_(s.in_features), H_(s.out_features), L_(s.num_layers), bias_(s.bias),
        return_sequences_(s.return_sequences), relu_(s.relu) {
    if (s.kind == "rnn") kind_ = CellKind::rnn;
    else if (s.kind == "lstm") kind_ = CellKind::lstm;
    else kind_ = CellKind::gru;
    if (I_ <= 0 || H_ <= 0 || L_ <= 0)
      throw std::invalid_argument(name() + " sizes must be positive, got input_size=" +
                                  std::to_string(I_) + ", hidden_size=" + std::to_string(H_) +
                                  ", num_layers=" + std::to_string(L_));
    G_ = checked_mul(H_, kind_ == CellKind::lstm ? 4 : kind_ == CellKind::gru ? 3 : 1);
    const std::string p = std::to_string(index) + ".";
    // L stacked cells of four Params (objects, names and shapes, small buffers: ~2 KiB a cell
    // even when H = 1), checked before they are built: num_layers=10**7 would need ~20 GB.
    check_available_memory(std::size_t(checked_mul(L_, index_t(4 * (sizeof(Param<T>) + 512)))));
    w_ih_.resize(std::size_t(L_));
    w_hh_.resize(std::size_t(L_));
    b_ih_.resize(std::size_t(L_));
    b_hh_.resize(std::size_t(L_));
    for (index_t k = 0; k < L_; ++k) {
      const std::string sfx = "_l" + std::to_string(k);
      const index_t in = k == 0 ? I_ : H_;
      init_param(w_ih_[k], p + "weight_ih" + sfx, {G_, in});
      init_param(w_hh_[k], p + "weight_hh" + sfx, {G_, H_});
      if (bias_) {
        init_param(b_ih_[k], p + "bias_ih" + sfx, {G_});
        init_param(b_hh_[k], p + "bias_hh" + sfx, {G_});
      }
    }
  }

  std::string name() const {
    return kind_ == CellKind::rnn ? "RNN" : kind_ == CellKind::lstm ? "LSTM" : "GRU";
  }
  std::string describe() const override {
    return name() + "(input_size=" + std::to_string(I_) + ", hidden_size=" + std::to_string(H_) +
           ", num_layers=" + std::to_string(L_) + ")";
  }
  SampleShape output_shape(const SampleShape& in) const override {
    if (in.time <= 0)
      throw std::invalid_argument(
          describe() + " expects sequences: a 3-D input (batch, time, features) with time >= 1" +
          (in.time == 0 ? std::string(", got a 2-D input (batch, features); reshape a single "
                                      "sequence with X[None] or a batch of 1-step sequences "
                                      "with X[:, None, :]")
                        : std::string()));
    if (in.features != I_)
      throw std::invalid_argument(describe() + " received " + std::to_string(in.features) +
                                  " features per step, expected " + std::to_string(I_));
    return SampleShape{return_sequences_ ? in.time : 0, H_};
  }
  std::unique_ptr<LayerCache> make_cache() const override {
    return std::make_unique<RecurrentCache<T>>();
  }
  bool is_recurrent() const override { return true; }
  bool backward_overwrites_input() const override { return true; }  // a segment at a time
  bool backward_reads_output() const override { return false; }      // its own tape instead
  std::size_t bptt_workspace(index_t B, index_t steps, BpttMemory m) const override {
    // Mirrors what forward and a backward without consume allocate (see the accounting at the
    // end of backward); fit's backward (consume) holds the stacked cells' dtm buffers no more.
    const index_t S = segment_length(steps), nseg = (steps + S - 1) / S;
    const index_t BH = checked_mul(B, H_), BG = checked_mul(B, G_);
    const index_t gate_store = checked_mul(B, tape_gates());  // per step
    const index_t slots = m == BpttMemory::all ? steps + 1 : nseg;
    const index_t per_cell = slots * BH * (lstm() ? 2 : 1) +
                             (m == BpttMemory::all ? steps * (gate_store + (gru() ? BH : 0)) : 0);
    // gx, dgx (+ dgh), the slices' gate scratch (BG in all), dh (two slots, GRU three) (+ dc),
    // xseg and dxseg.
    index_t seg = 2 * S * BG + BG + (gru() ? S * BG : 0) + BH * (lstm() || gru() ? 3 : 2) +
                  2 * S * B * I_;
    if (m == BpttMemory::sqrt)
      seg += (S + 1) * BH * (lstm() ? 2 : 1) + S * (gate_store + (gru() ? BH : 0));
    // Between stacked cells: "sqrt"'s copies of the lower cells' outputs, and the input
    // gradients of the upper cells (dtm, and dtm2 from three cells on).
    const index_t stacked = (m == BpttMemory::sqrt ? L_ - 1 : 0) + std::min<index_t>(L_ - 1, 2);
    return std::size_t(L_ * per_cell + seg + stacked * steps * BH) * sizeof(T);
  }
  std::vector<Param<T>*> params() override {
    std::vector<Param<T>*> out;
    for (index_t k = 0; k < L_; ++k) {
      out.push_back(&w_ih_[k]);
      out.push_back(&w_hh_[k]);
      if (bias_) { out.push_back(&b_ih_[k]); out.push_back(&b_hh_[k]); }
    }
    return out;
  }
  // torch.nn.RNNBase.reset_parameters: every weight and bias ~ U(-1/sqrt(H), 1/sqrt(H)).
  void reset_parameters(Rng& rng) override {
    const double bound = 1.0 / std::sqrt(double(H_));
    for (Param<T>* p : params())
      for (index_t i = 0; i < p->size(); ++i) p->value[i] = T(rng.uniform(-bound, bound));
  }

  void forward(T* y, const T* x, index_t B, const SampleShape& in,
               LayerCache* cache) const override;
  void backward(T* dx, const T* dy, const T* x, const T* y, index_t B, const SampleShape& in,
                LayerCache* cache) override;

 private:
  using Cache = RecurrentCache<T>;
  using CellStore = typename Cache::Cell;

  static void init_param(Param<T>& p, const std::string& name, std::vector<index_t> shape) {
    p.name = name;
    p.shape = shape;
    index_t n = 1;
    for (index_t d : shape) n = checked_mul(n, d);
    p.value.resize(n);
    p.grad.resize(n);
  }
  const T* bias_ih(index_t k) const { return bias_ ? b_ih_[k].value.data() : nullptr; }
  const T* bias_hh(index_t k) const { return bias_ ? b_hh_[k].value.data() : nullptr; }
  bool lstm() const { return kind_ == CellKind::lstm; }
  bool gru() const { return kind_ == CellKind::gru; }

  // Splits the hidden units into slices for the time loop (time_loop_slice_width) and packs each
  // slice's part of W_hh of cell k: its gate rows for the forward steps, its columns for the
  // backward steps. A new split starts from fresh buffers, so the workspace stays exact.
  void prepare_slices(Cache& c, index_t k, index_t B, bool fwd, bool bwd) const {
    const index_t H = H_, G = G_, q = G_ / H_;
    c.row_groups = time_loop_row_groups(B, H, G);
    const index_t per = c.row_groups > 1 ? H : time_loop_slice_width<T>(B, H, G);
    const index_t parts = (H + per - 1) / per;
    if (index_t(c.slices.size()) != parts || c.slices[0].hs != per) {
      c.slices.clear();
      c.slices.resize(std::size_t(parts));
    }
    const T* Whh = w_hh_[k].value.data();
    const T* bh = bias_hh(k);
    for (index_t p = 0; p < parts; ++p) {
      auto& sl = c.slices[std::size_t(p)];
      sl.u0 = std::min(p * per, H);
      sl.hs = std::min(per, H - sl.u0);
      sl.gh.resize_for_overwrite(checked_mul(B, q * sl.hs));
      if (fwd) {
        sl.w.resize_for_overwrite(q * sl.hs * H);
        sl.b.resize_for_overwrite(bh ? q * sl.hs : 0);
        for (index_t g = 0; g < q; ++g) {
          std::memcpy(sl.w.data() + g * sl.hs * H, Whh + (g * H + sl.u0) * H,
                      std::size_t(sl.hs * H) * sizeof(T));
          if (bh) std::memcpy(sl.b.data() + g * sl.hs, bh + g * H + sl.u0,
                              std::size_t(sl.hs) * sizeof(T));
        }
        sl.fwd.pack(true, H, q * sl.hs, sl.w.data(), H);
      }
      if (bwd) sl.bwd.pack(false, G, sl.hs, Whh + sl.u0, H);
    }
  }

  // Cell k's output sequence (T, B, H), time-major: with every state kept, h_1 .. h_T already lie
  // contiguous in the states (slot 0 is h_0), so no copy is made.
  const T* seq_out(const Cache& c, index_t k) const {
    const auto& cl = c.cells[std::size_t(k)];
    return c.memory == BpttMemory::all ? cl.hs.data() + c.B * H_ : cl.out.data();
  }

  // Cell k's input for steps [s, s + n), time-major (n, B, I_k): the layer's input x (B, T, I)
  // gathered into xseg for the bottom cell, rows of the cell below's output otherwise.
  const T* segment_input(Cache& c, index_t k, const T* x, index_t s, index_t n, index_t B) const {
    if (k > 0) return seq_out(c, k - 1) + s * B * H_;
    c.xseg.resize_for_overwrite(checked_mul(checked_mul(n, B), I_));
    gather_steps(c.xseg.data(), x, B, c.steps, s, n, I_);
    return c.xseg.data();
  }

  // Runs n steps of cell k from a segment's input xin (n, B, I_k), time-major. hs/cs hold n + 1
  // state slots; slot 0 must hold the state before the first step on entry, slot t + 1 receives
  // h after step t. gates (n, B, G) and ghn (n, B, H) receive what backward needs. Needs
  // prepare_slices(fwd).
  void run_segment(Cache& c, index_t k, const T* xin, index_t n, index_t B, T* hs, T* cs,
                   T* gates, T* ghn) const {
    const index_t H = H_, G = G_, GS = tape_gates(), BH = B * H_, Ik = k == 0 ? I_ : H_;
    c.gx.resize_for_overwrite(checked_mul(checked_mul(n, B), G));
    // The input projection of the whole segment: one GEMM over n * B rows.
    dense_forward(c.gx.data(), xin, w_ih_[k].value.data(), bias_ih(k), n * B, Ik, G);
    const CellKernels<T>& ck = cell_kernels<T>();
    const bool bias = bias_;
    // Step t for batch rows [r0, r0 + m) and the slice's hidden units.
    auto step = [&](index_t t, index_t r0, index_t m, auto& sl) {
      const index_t cols = sl.fwd.N();
      const T* hprev = hs + t * BH + r0 * H;
      T* hnew = hs + (t + 1) * BH + r0 * H;
      const T* gx = c.gx.data() + t * B * G + r0 * G;
      T* gh = sl.gh.data() + r0 * cols;
      const T* bh = bias ? sl.b.data() : nullptr;  // added in the cell
      // Only h_{t-1} W_hh^T inside the loop, with W_hh^T packed once.
      gemm_prepacked<T>(false, m, T(1), hprev, H, sl.fwd, T(0), gh, cols);
      if (kind_ == CellKind::rnn)
        ck.rnn_forward(hnew, gx, gh, bh, m, H, sl.u0, sl.hs, relu_);
      else if (kind_ == CellKind::lstm)
        ck.lstm_forward(hnew, cs + (t + 1) * BH + r0 * H, gates + t * B * GS + r0 * GS,
                        cs + t * BH + r0 * H, gx, gh, bh, m, H, sl.u0, sl.hs);
      else
        ck.gru_forward(hnew, gates + t * B * GS + r0 * GS, ghn + t * BH + r0 * H, hprev, gx, gh,
                       bh, m, H, sl.u0, sl.hs);
    };
    if (c.row_groups > 1) {  // each group runs every step for its rows, all hidden units
      const index_t groups = c.row_groups;
      parallel_for(int(groups), [&](int g) {
        index_t r0, r1;
        group_rows(B, groups, g, r0, r1);
        for (index_t t = 0; t < n; ++t) step(t, r0, r1 - r0, c.slices[0]);
      });
      return;
    }
    // Phase t: step t, each part a slice of the hidden units (reading all of h_{t-1}).
    parallel_phases(int(n), int(c.slices.size()), [&](int t, int p) {
      step(t, 0, B, c.slices[std::size_t(p)]);
    });
  }

  // Values per batch row and step of the gate tape: the LSTM's i, f, g, o and tanh(c) (which
  // the backward reads instead of computing it again), the GRU's r, z, n; the RNN keeps none.
  index_t tape_gates() const { return lstm() ? 5 * H_ : gru() ? G_ : 0; }

  CellKind kind_;
  index_t I_, H_, L_, G_ = 0;
  bool bias_, return_sequences_, relu_;
  std::vector<Param<T>> w_ih_, w_hh_, b_ih_, b_hh_;
};

template <class T>
void RecurrentLayer<T>::forward(T* y, const T* x, index_t B, const SampleShape& in,
                                LayerCache* cache) const {
  // x (B, T, I) -> y (B, T, H) or (B, H)
  std::unique_ptr<Cache> local;
  Cache* c = static_cast<Cache*>(cache);
  if (!c) {  // inference: keep nothing beyond one segment
    local = std::make_unique<Cache>();
    local->memory = BpttMemory::sqrt;
    c = local.get();
  }
  // What the last backward reported belongs to the last forward's graph: a new forward (even
  // one that fails below) leaves none, so it cannot be read as this forward's.
  c->dh0.resize_for_overwrite(0);
  c->dc0.resize_for_overwrite(0);
  c->step_norms.clear();
  const index_t steps = in.time, H = H_;
  const index_t BH = checked_mul(B, H);
  const index_t LBH = checked_mul(L_, BH);
  if (c->h0.size() && c->h0.size() != LBH)
    throw std::invalid_argument(name() + " initial state h0 has " + std::to_string(c->h0.size()) +
                                " elements, expected (num_layers, batch, hidden) = " +
                                std::to_string(LBH));
  if (c->c0.size() && c->c0.size() != LBH)
    throw std::invalid_argument(name() + " initial state c0 has " + std::to_string(c->c0.size()) +
                                " elements, expected " + std::to_string(LBH));
  const bool keep_all = cache && c->memory == BpttMemory::all;
  if (c->allocated_for != c->memory) {
    c->release_workspace();
    c->allocated_for = c->memory;
  }
  const index_t S = segment_length(steps), nseg = (steps + S - 1) / S;
  c->B = B;
  c->steps = steps;
  c->cells.resize(std::size_t(L_));
  c->hn.resize_for_overwrite(LBH);
  c->cn.resize_for_overwrite(lstm() ? LBH : 0);
  c->xseg.resize_for_overwrite(checked_mul(checked_mul(S, B), I_));
  if (!keep_all) {
    c->seg_hs.resize_for_overwrite(checked_mul(S + 1, BH));
    c->seg_cs.resize_for_overwrite(lstm() ? checked_mul(S + 1, BH) : 0);
    c->seg_gates.resize_for_overwrite(checked_mul(checked_mul(S, B), tape_gates()));
    c->seg_ghn.resize_for_overwrite(gru() ? checked_mul(S, BH) : 0);
  }
  for (index_t k = 0; k < L_; ++k) {
    CellStore& cl = c->cells[std::size_t(k)];
    const bool top = k == L_ - 1;
    prepare_slices(*c, k, B, true, false);
    // The next cell's input: with "all" the states themselves; the top cell writes into y.
    cl.out.resize_for_overwrite(keep_all || top ? 0 : checked_mul(steps, BH));
    if (keep_all) {
      cl.hs.resize_for_overwrite(checked_mul(steps + 1, BH));
      cl.cs.resize_for_overwrite(lstm() ? checked_mul(steps + 1, BH) : 0);
      cl.gates.resize_for_overwrite(checked_mul(checked_mul(steps, B), tape_gates()));
      cl.ghn.resize_for_overwrite(gru() ? checked_mul(steps, BH) : 0);
    } else {  // checkpoints: the state at every segment start
      cl.hs.resize_for_overwrite(checked_mul(nseg, BH));
      cl.cs.resize_for_overwrite(lstm() ? checked_mul(nseg, BH) : 0);
      cl.gates.resize_for_overwrite(0);
      cl.ghn.resize_for_overwrite(0);
    }
    for (index_t j = 0; j < nseg; ++j) {
      const index_t s = j * S, n = std::min(S, steps - s);
      T* hs = keep_all ? cl.hs.data() + s * BH : c->seg_hs.data();
      T* cs = !lstm() ? nullptr : keep_all ? cl.cs.data() + s * BH : c->seg_cs.data();
      T* gates = keep_all ? cl.gates.data() + s * B * tape_gates() : c->seg_gates.data();
      T* ghn = keep_all ? cl.ghn.data() + s * BH : c->seg_ghn.data();
      if (j == 0) {
        if (c->h0.size()) std::memcpy(hs, c->h0.data() + k * BH, std::size_t(BH) * sizeof(T));
        else std::memset(static_cast<void*>(hs), 0, std::size_t(BH) * sizeof(T));
        if (lstm()) {
          if (c->c0.size()) std::memcpy(cs, c->c0.data() + k * BH, std::size_t(BH) * sizeof(T));
          else std::memset(static_cast<void*>(cs), 0, std::size_t(BH) * sizeof(T));
        }
      } else if (!keep_all) {  // carry the last state of the previous segment into slot 0
        const index_t prev_n = S;
        std::memmove(hs, hs + prev_n * BH, std::size_t(BH) * sizeof(T));
        if (lstm()) std::memmove(cs, cs + prev_n * BH, std::size_t(BH) * sizeof(T));
      }
      if (!keep_all) {
        std::memcpy(cl.hs.data() + j * BH, hs, std::size_t(BH) * sizeof(T));
        if (lstm()) std::memcpy(cl.cs.data() + j * BH, cs, std::size_t(BH) * sizeof(T));
      }
      run_segment(*c, k, segment_input(*c, k, x, s, n, B), n, B, hs, cs, gates, ghn);
      if (top && return_sequences_) scatter_steps(y, hs + BH, B, steps, s, n, H);
      else if (cl.out.size())
        std::memcpy(cl.out.data() + s * BH, hs + BH, std::size_t(n * BH) * sizeof(T));
      if (j == nseg - 1) {
        std::memcpy(c->hn.data() + k * BH, hs + n * BH, std::size_t(BH) * sizeof(T));
        if (lstm()) std::memcpy(c->cn.data() + k * BH, cs + n * BH, std::size_t(BH) * sizeof(T));
      }
    }
  }
  if (!return_sequences_) std::memcpy(y, c->hn.data() + (L_ - 1) * BH, std::size_t(BH) * sizeof(T));
}

template <class T>
void RecurrentLayer<T>::backward(T* dx, const T* dy, const T* x, const T*, index_t B,
                                 const SampleShape& in, LayerCache* cache) {
  // dy (B, T, H) or (B, H) -> dx (B, T, I); every parameter gradient accumulates; dh0, dc0 and
  // the per-step norms ||dL/dh_t|| land in the cache. x is read a segment at a time, each segment
  // before dx's rows of the same steps are written: dx may be x itself.
  Cache& c = *static_cast<Cache*>(cache);
  const index_t steps = in.time, H = H_, G = G_, GS = tape_gates(), BH = B * H;
  if (c.steps != steps || c.B != B) throw std::logic_error("backward does not match the forward");
  const bool keep_all = c.memory == BpttMemory::all;
  // "sqrt" with consume: cell k > 0 writes its input gradient over its input, the copy of cell
  // k - 1's output that only this backward reads (a segment's rows once its last reader is done).
  const bool in_place = !keep_all && c.consume;
  const index_t S = segment_length(steps), nseg = (steps + S - 1) / S;
  c.step_norms.assign(std::size_t(L_ * steps), 0.0);
  c.dh0.resize_for_overwrite(L_ * BH);
  c.dc0.resize_for_overwrite(lstm() ? L_ * BH : 0);
  // dL/dh_t lives in slot (t + 1) % slots of the ring dh. Step t's GEMM writes dL/dh_{t-1} into
  // slot t % slots (only its own units) while other units' norms of step t still read slot
  // (t + 1) % slots; the GRU also writes its direct path dh z there a step ahead: three slots.
  const index_t slots = gru() ? 3 : 2;
  c.dh.resize_for_overwrite(checked_mul(slots, BH));
  c.dc.resize_for_overwrite(lstm() ? BH : 0);
  c.row_sq.resize(std::size_t(S * B));
  c.dxseg.resize_for_overwrite(checked_mul(checked_mul(S, B), I_));
  if (!keep_all) {
    c.seg_hs.resize_for_overwrite(checked_mul(S + 1, BH));
    c.seg_cs.resize_for_overwrite(lstm() ? checked_mul(S + 1, BH) : 0);
    c.seg_gates.resize_for_overwrite(checked_mul(checked_mul(S, B), tape_gates()));
    c.seg_ghn.resize_for_overwrite(gru() ? checked_mul(S, BH) : 0);
  }
  // Without consume, the stacked cells' input gradients alternate between dtm and dtm2: cell k
  // writes the one that cell k + 1 did not (the one it reads).
  auto grad_buffer = [&](index_t k) -> Buffer<T>& { return (L_ - 1 - k) % 2 ? c.dtm2 : c.dtm; };
  for (index_t k = L_ - 1; k >= 0; --k) {
    CellStore& cl = c.cells[std::size_t(k)];
    const index_t Ik = k == 0 ? I_ : H_;
    const bool top = k == L_ - 1;
    // dL/d(this cell's output h_t) of batch row b at dout[t dts + b drs]: dy where it lies for
    // the top cell (with return_sequences (B, T, H), else (B, H) for the last step only), the
    // cell above's input gradient (T, B, H) below it.
    const T* dout = dy;
    index_t dts = return_sequences_ ? H : 0, drs = return_sequences_ ? steps * H : H;
    if (!top) {
      dout = in_place ? c.cells[std::size_t(k)].out.data() : grad_buffer(k + 1).data();
      dts = BH;
      drs = H;
    }
    const bool last_only = top && !return_sequences_;
    // dL/d(this cell's input): (T, B, H) for the cell below, or dx a segment at a time.
    T* dxin = nullptr;
    if (k > 0) {
      if (in_place) {
        dxin = c.cells[std::size_t(k - 1)].out.data();
      } else {
        grad_buffer(k).resize_for_overwrite(checked_mul(steps, BH));
        dxin = grad_buffer(k).data();
      }
    }
    T* dc = lstm() ? c.dc.data() : nullptr;
    c.dh.fill_zero();
    c.dc.fill_zero();
    const T* Whh = w_hh_[k].value.data();
    prepare_slices(c, k, B, !keep_all, true);  // !keep_all: the segments are recomputed
    const CellKernels<T>& ck = cell_kernels<T>();
    for (index_t j = nseg - 1; j >= 0; --j) {
      const index_t s = j * S, n = std::min(S, steps - s);
      const T* xin = segment_input(c, k, x, s, n, B);
      T *hs, *cs, *gates, *ghn;
      if (keep_all) {
        hs = cl.hs.data() + s * BH;
        cs = lstm() ? cl.cs.data() + s * BH : nullptr;
        gates = cl.gates.data() + s * B * tape_gates();
        ghn = cl.ghn.data() + s * BH;
      } else {  // recompute the segment from its checkpoint, exactly as forward did
        hs = c.seg_hs.data();
        cs = lstm() ? c.seg_cs.data() : nullptr;
        gates = c.seg_gates.data();
        ghn = c.seg_ghn.data();
        std::memcpy(hs, cl.hs.data() + j * BH, std::size_t(BH) * sizeof(T));
        if (lstm()) std::memcpy(cs, cl.cs.data() + j * BH, std::size_t(BH) * sizeof(T));
        run_segment(c, k, xin, n, B, hs, cs, gates, ghn);
      }
      c.dgx.resize_for_overwrite(checked_mul(checked_mul(n, B), G));
      c.dgh.resize_for_overwrite(gru() ? checked_mul(checked_mul(n, B), G) : 0);
      double* row_sq = c.row_sq.data();
      T* const dh_ring = c.dh.data();
      // Per slice of units and batch rows [r0, r1): dG_t from dL/dh_t (elementwise), then, once
      // every slice of dG_t is there, the slice's dL/dh_{t-1} = dG_t W_hh (+ the GRU's direct
      // path), and ||dL/dh_t||^2 of rows [q0, q1).
      auto cell = [&](index_t t, const auto& sl, index_t r0, index_t r1) {
        const index_t tt = s + t, u0 = sl.u0, u1 = sl.u0 + sl.hs, m = r1 - r0;
        T* dh = dh_ring + (tt + 1) % slots * BH + r0 * H;
        T* dgx = c.dgx.data() + t * B * G + r0 * G;
        // dL/dh_t = (from step t + 1, already in dh) + (from the output at t)
        if (!last_only || tt == steps - 1)
          for (index_t b = 0; b < m; ++b) {
            const T* extra = dout + tt * dts + (r0 + b) * drs;
            for (index_t u = u0; u < u1; ++u) dh[b * H + u] += extra[u];
          }
        if (kind_ == CellKind::rnn)
          ck.rnn_backward(dgx, dh, hs + (t + 1) * BH + r0 * H, m, H, u0, sl.hs, relu_);
        else if (kind_ == CellKind::lstm)
          ck.lstm_backward(dgx, dc + r0 * H, dh, gates + t * B * GS + r0 * GS,
                           cs + t * BH + r0 * H, m, H, u0, sl.hs);
        else  // the direct path dh z goes to dL/dh_{t-1}; the GEMM adds onto it
          ck.gru_backward(dgx, c.dgh.data() + t * B * G + r0 * G,
                          dh_ring + tt % slots * BH + r0 * H, dh, gates + t * B * GS + r0 * GS,
                          ghn + t * BH + r0 * H, hs + t * BH + r0 * H, m, H, u0, sl.hs);
      };
      auto back = [&](index_t t, const auto& sl, index_t r0, index_t r1, index_t q0,
                      index_t q1) {
        const index_t tt = s + t;
        const T* dh = dh_ring + (tt + 1) % slots * BH;
        const T* dgh = (gru() ? c.dgh.data() : c.dgx.data()) + t * B * G + r0 * G;
        gemm_prepacked<T>(false, r1 - r0, T(1), dgh, G, sl.bwd, gru() ? T(1) : T(0),
                          dh_ring + tt % slots * BH + r0 * H + sl.u0, H);
        // ||dL/dh_t||^2 by batch rows, each row by one task, summed in a fixed order below.
        for (index_t b = q0; b < q1; ++b) row_sq[t * B + b] = sum_of_squares(dh + b * H, H);
      };
      if (c.row_groups > 1) {  // each group runs every step for its rows (see forward)
        const index_t groups = c.row_groups;
        parallel_for(int(groups), [&](int g) {
          index_t r0, r1;
          group_rows(B, groups, g, r0, r1);
          for (index_t t = n - 1; t >= 0; --t) {
            cell(t, c.slices[0], r0, r1);
            back(t, c.slices[0], r0, r1, r0, r1);
          }
        });
      } else {
        const int parts = int(c.slices.size());
        // Phase j: the back half of step n - j and the cell half of step n - 1 - j.
        parallel_phases(int(n) + 1, parts, [&](int j, int p) {
          const auto& sl = c.slices[std::size_t(p)];
          if (j > 0) back(n - j, sl, 0, B, B * p / parts, B * (p + 1) / parts);
          if (j < n) cell(n - 1 - j, sl, 0, B);
        });
      }
      for (index_t t = 0; t < n; ++t) {
        double sq = 0;
        for (index_t b = 0; b < B; ++b) sq += row_sq[t * B + b];
        c.step_norms[std::size_t(k * steps + s + t)] = std::sqrt(sq);
      }
      // The segment's weight gradients and input gradient as GEMMs over n * B rows:
      // dW_ih += dGx^T x, db_ih += sum dGx, dx = dGx W_ih; dW_hh += dGh^T h_prev, db_hh += sum dGh.
      // dx after dW_ih, which reads x: in place, the input gradient overwrites x's rows.
      dense_backward(static_cast<T*>(nullptr), w_ih_[k].grad.data(),
                     bias_ ? b_ih_[k].grad.data() : nullptr, c.dgx.data(), xin,
                     w_ih_[k].value.data(), n * B, Ik, G);
      if (T* d = k > 0 ? dxin + s * BH : dx ? c.dxseg.data() : nullptr) {
        dense_backward(d, static_cast<T*>(nullptr), static_cast<T*>(nullptr), c.dgx.data(), xin,
                       w_ih_[k].value.data(), n * B, Ik, G);
        if (k == 0) scatter_steps(dx, d, B, steps, s, n, I_);
      }
      dense_backward(static_cast<T*>(nullptr), w_hh_[k].grad.data(),
                     bias_ ? b_hh_[k].grad.data() : nullptr,
                     gru() ? c.dgh.data() : c.dgx.data(), hs, Whh, n * B, H, G);
    }
    std::memcpy(c.dh0.data() + k * BH, c.dh.data(), std::size_t(BH) * sizeof(T));  // slot 0
    if (lstm()) std::memcpy(c.dc0.data() + k * BH, dc, std::size_t(BH) * sizeof(T));
  }
  // Workspace: what BPTT holds for the backward (states, gates, checkpoints, segment scratch,
  // gate gradients, the stacked cells' sequences and their gradients), not the layer's input and
  // output sequences nor their gradients.
  std::size_t ws = 0;
  for (const CellStore& cl : c.cells)
    ws += cl.out.capacity_bytes() + cl.hs.capacity_bytes() + cl.cs.capacity_bytes() +
          cl.gates.capacity_bytes() + cl.ghn.capacity_bytes();
  for (const Buffer<T>* b : {&c.seg_hs, &c.seg_cs, &c.seg_gates, &c.seg_ghn, &c.gx, &c.dgx,
                             &c.dgh, &c.xseg, &c.dxseg, &c.dh, &c.dc, &c.dtm, &c.dtm2})
    ws += b->capacity_bytes();
  for (const auto& sl : c.slices) ws += sl.gh.capacity_bytes();
  // (The packed copies of W_hh are weights, O(H G) whatever T; they are not BPTT workspace.)
  c.workspace_bytes = ws;
  c.peak_workspace_bytes = std::max(c.peak_workspace_bytes, ws);
}

}  // namespace

template <class T>
std::unique_ptr<Layer<T>> make_recurrent_layer(const LayerSpec& spec, std::size_t index) {
  return std::make_unique<RecurrentLayer<T>>(spec, index);
}

template std::unique_ptr<Layer<float>> make_recurrent_layer<float>(const LayerSpec&, std::size_t);
template std::unique_ptr<Layer<double>> make_recurrent_layer<double>(const LayerSpec&,
                                                                     std::size_t);

}  // namespace chainrule
