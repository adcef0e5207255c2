// The elementwise math of one recurrent step, forward and backward, for the hidden units
// [u0, u0 + hs) of a batch of rows: the slice one thread of the time loop owns (recurrent.cpp).
// Layouts: gates (B, G) with G = H (RNN), 4H (LSTM: i, f, g, o) or 3H (GRU: r, z, n); states
// (B, H); pointers are to the whole arrays (the slice offset u0 is applied here), except gh, the
// slice's own h_{t-1} W_hh^T, (B, q hs) with its q gate blocks of hs columns side by side, and bh,
// the matching (q hs) values of b_hh or null. The hidden projection is (h W^T) + b as a GEMM with
// the bias in C would round it, but added here: no pass over C to put the bias there first.
//
// Each function is a handful of simple loops over contiguous runs of hs values (a single loop
// doing all of it at once did not vectorise). The transcendental ones call vmath.hpp, whose
// arithmetic is the same on every ISA: this header is compiled once per ISA path
// (cpp/src/kernels/cells_x86_v*.cpp) and every path gives the same bits. Internal linkage, like
// vmath.hpp, so no copy compiled for a newer ISA can be linked into another path.
#pragma once
#include "vmath.hpp"

namespace chainrule {

// One ISA path's cell functions (function pointers only: no code in this struct).
template <class T>
struct CellKernels {
  void (*rnn_forward)(T* h, const T* gx, const T* gh, const T* bh, index_t B, index_t H,
                      index_t u0, index_t hs, bool relu);
  void (*rnn_backward)(T* da, const T* dh, const T* h, index_t B, index_t H, index_t u0,
                       index_t hs, bool relu);
  void (*lstm_forward)(T* h, T* c, T* gates, const T* cprev, const T* gx, const T* gh,
                       const T* bh, index_t B, index_t H, index_t u0, index_t hs);
  void (*lstm_backward)(T* dg, T* dc, const T* dh, const T* gates, const T* cprev, index_t B,
                        index_t H, index_t u0, index_t hs);
  void (*gru_forward)(T* h, T* gates, T* ghn, const T* hprev, const T* gx, const T* gh,
                      const T* bh, index_t B, index_t H, index_t u0, index_t hs);
  void (*gru_backward)(T* dgx, T* dgh, T* dhz, const T* dh, const T* gates, const T* ghn,
                       const T* hprev, index_t B, index_t H, index_t u0, index_t hs);
};

namespace {

// The hidden projection's value k: gh + bh, or gh without a bias (a test on a loop invariant,
// which gcc hoists out of the loop: both versions vectorise).
template <class T>
inline T hid(const T* ph, const T* bh, index_t k) {
  return bh ? ph[k] + bh[k] : ph[k];
}

// h = act(gx + gh), act = tanh or relu.
template <class T>
void rnn_cell_forward(T* h, const T* gx, const T* gh, const T* bh, index_t B, index_t H,
                      index_t u0, index_t hs, bool relu) {
  for (index_t b = 0; b < B; ++b) {
    T* hn = h + b * H + u0;
    const T* px = gx + b * H + u0;
    const T* ph = gh + b * hs;
    if (relu) {
      for (index_t k = 0; k < hs; ++k) {
        const T a = px[k] + hid(ph, bh, k);
        hn[k] = a < T(0) ? T(0) : a;
      }
    } else {
      for (index_t k = 0; k < hs; ++k) hn[k] = vtanh1(px[k] + hid(ph, bh, k));
    }
  }
}

// da = dh * act'(a) from the output: tanh' = 1 - h^2, relu' = [h > 0] (and 1 where h is NaN).
template <class T>
void rnn_cell_backward(T* da, const T* dh, const T* h, index_t B, index_t H, index_t u0,
                       index_t hs, bool relu) {
  for (index_t b = 0; b < B; ++b) {
    T* d = da + b * H + u0;
    const T* e = dh + b * H + u0;
    const T* y = h + b * H + u0;
    if (relu) {
      for (index_t k = 0; k < hs; ++k) {
        const T v = e[k];  // loaded unconditionally, so the select vectorises
        d[k] = y[k] <= T(0) ? T(0) : v;  // as threshold_backward: a NaN h passes v
      }
    } else {
      for (index_t k = 0; k < hs; ++k) d[k] = e[k] * (T(1) - y[k] * y[k]);
    }
  }
}

// i, f, g, o = sigma, sigma, tanh, sigma of gx + gh;  c = f c_prev + i g;  h = o tanh(c).
// gates (B, 5H) receives (i, f, g, o, tanh(c)): the backward reads tanh(c) instead of computing
// it again (an exp and a division per unit).
template <class T>
void lstm_cell_forward(T* h, T* c, T* gates, const T* cprev, const T* gx, const T* gh,
                       const T* bh, index_t B, index_t H, index_t u0, index_t hs) {
  const index_t G = 4 * H, GS = 5 * H;
  for (index_t b = 0; b < B; ++b) {
    T* gi = gates + b * GS + u0;
    T* gf = gi + H;
    T* gg = gi + 2 * H;
    T* go = gi + 3 * H;
    const T* px = gx + b * G + u0;
    const T* ph = gh + b * 4 * hs;
    const T* bf = bh ? bh + hs : nullptr;
    const T* bg = bh ? bh + 2 * hs : nullptr;
    const T* bo = bh ? bh + 3 * hs : nullptr;
    for (index_t k = 0; k < hs; ++k) gi[k] = vsigmoid1(px[k] + hid(ph, bh, k));
    for (index_t k = 0; k < hs; ++k) gf[k] = vsigmoid1(px[H + k] + hid(ph + hs, bf, k));
    for (index_t k = 0; k < hs; ++k) gg[k] = vtanh1(px[2 * H + k] + hid(ph + 2 * hs, bg, k));
    for (index_t k = 0; k < hs; ++k) go[k] = vsigmoid1(px[3 * H + k] + hid(ph + 3 * hs, bo, k));
    const T* cp = cprev + b * H + u0;
    T* cn = c + b * H + u0;
    T* hn = h + b * H + u0;
    T* tc = gi + 4 * H;
    for (index_t k = 0; k < hs; ++k) cn[k] = gf[k] * cp[k] + gi[k] * gg[k];
    for (index_t k = 0; k < hs; ++k) tc[k] = vtanh1(cn[k]);
    for (index_t k = 0; k < hs; ++k) hn[k] = go[k] * tc[k];
  }
}

// h = o tanh(c):       do = dh tanh(c),  dc += dh o (1 - tanh(c)^2)
// c = f c_prev + i g:  di = dc g, df = dc c_prev, dg = dc i, dc_prev = dc f
// through the gate nonlinearities: sigma' = s (1 - s), tanh' = 1 - g^2.
// gates (B, 5H) as the forward wrote them, tanh(c) included; dg receives the pre-activation
// gradients (B, 4H); dc (B, H) enters as dL/dc_t from step t + 1 and leaves as dL/dc_{t-1}.
template <class T>
void lstm_cell_backward(T* dg, T* dc, const T* dh, const T* gates, const T* cprev, index_t B,
                        index_t H, index_t u0, index_t hs) {
  const index_t G = 4 * H, GS = 5 * H;
  for (index_t b = 0; b < B; ++b) {
    const T* gi = gates + b * GS + u0;
    const T* gf = gi + H;
    const T* gg = gi + 2 * H;
    const T* go = gi + 3 * H;
    const T* tc = gi + 4 * H;
    T* d = dg + b * G + u0;
    T* dcb = dc + b * H + u0;
    const T* dhb = dh + b * H + u0;
    const T* cp = cprev + b * H + u0;
    for (index_t k = 0; k < hs; ++k) dcb[k] = dcb[k] + dhb[k] * go[k] * (T(1) - tc[k] * tc[k]);
    for (index_t k = 0; k < hs; ++k) d[k] = dcb[k] * gg[k] * gi[k] * (T(1) - gi[k]);
    for (index_t k = 0; k < hs; ++k) d[H + k] = dcb[k] * cp[k] * gf[k] * (T(1) - gf[k]);
    for (index_t k = 0; k < hs; ++k) d[2 * H + k] = dcb[k] * gi[k] * (T(1) - gg[k] * gg[k]);
    for (index_t k = 0; k < hs; ++k) d[3 * H + k] = dhb[k] * tc[k] * go[k] * (T(1) - go[k]);
    for (index_t k = 0; k < hs; ++k) dcb[k] = dcb[k] * gf[k];
  }
}

// r = sigma(x_r + h_r), z = sigma(x_z + h_z), n = tanh(x_n + r ghn) with ghn = W_hn h + b_hn,
// h = n + z (h_prev - n)   (PyTorch's form of (1 - z) n + z h_prev).
// gates receives (r, z, n), ghn_out (B, H) the ghn part of gh.
template <class T>
void gru_cell_forward(T* h, T* gates, T* ghn_out, const T* hprev, const T* gx, const T* gh,
                      const T* bh, index_t B, index_t H, index_t u0, index_t hs) {
  const index_t G = 3 * H;
  for (index_t b = 0; b < B; ++b) {
    T* gr = gates + b * G + u0;
    T* gz = gr + H;
    T* gn = gr + 2 * H;
    const T* px = gx + b * G + u0;
    const T* ph = gh + b * 3 * hs;
    T* hn_part = ghn_out + b * H + u0;
    const T* bz = bh ? bh + hs : nullptr;
    const T* bn = bh ? bh + 2 * hs : nullptr;
    for (index_t k = 0; k < hs; ++k) gr[k] = vsigmoid1(px[k] + hid(ph, bh, k));
    for (index_t k = 0; k < hs; ++k) gz[k] = vsigmoid1(px[H + k] + hid(ph + hs, bz, k));
    for (index_t k = 0; k < hs; ++k) hn_part[k] = hid(ph + 2 * hs, bn, k);
    for (index_t k = 0; k < hs; ++k) gn[k] = vtanh1(px[2 * H + k] + gr[k] * hn_part[k]);
    const T* hp = hprev + b * H + u0;
    T* hn = h + b * H + u0;
    for (index_t k = 0; k < hs; ++k) hn[k] = gn[k] + gz[k] * (hp[k] - gn[k]);
  }
}

// dn = dh (1 - z), dz = dh (h_prev - n), dh_prev = dh z + (W_hh part, added by the caller);
// da_n = dn (1 - n^2) on the input side and r da_n on the hidden side; dr = da_n ghn; dz, dr
// through sigma' = s (1 - s). dgx, dgh (B, 3H) receive the pre-activation gradients of the input
// and hidden projections; dhz (B, H) receives the direct path dh z.
template <class T>
void gru_cell_backward(T* dgx, T* dgh, T* dhz, const T* dh, const T* gates, const T* ghn,
                       const T* hprev, index_t B, index_t H, index_t u0, index_t hs) {
  const index_t G = 3 * H;
  for (index_t b = 0; b < B; ++b) {
    const T* gr = gates + b * G + u0;
    const T* gz = gr + H;
    const T* gn = gr + 2 * H;
    const T* hn_part = ghn + b * H + u0;
    const T* hp = hprev + b * H + u0;
    T* px = dgx + b * G + u0;
    T* ph = dgh + b * G + u0;
    const T* d = dh + b * H + u0;
    T* dz = dhz + b * H + u0;
    for (index_t k = 0; k < hs; ++k)
      px[2 * H + k] = d[k] * (T(1) - gz[k]) * (T(1) - gn[k] * gn[k]);
    for (index_t k = 0; k < hs; ++k) px[H + k] = d[k] * (hp[k] - gn[k]) * gz[k] * (T(1) - gz[k]);
    for (index_t k = 0; k < hs; ++k) px[k] = px[2 * H + k] * hn_part[k] * gr[k] * (T(1) - gr[k]);
    for (index_t k = 0; k < hs; ++k) ph[k] = px[k];
    for (index_t k = 0; k < hs; ++k) ph[H + k] = px[H + k];
    for (index_t k = 0; k < hs; ++k) ph[2 * H + k] = px[2 * H + k] * gr[k];
    for (index_t k = 0; k < hs; ++k) dz[k] = d[k] * gz[k];
  }
}

// This translation unit's instantiations, as a table (constant-initialised: no constructor).
template <class T>
constexpr CellKernels<T> make_cell_kernels() {
  return CellKernels<T>{&rnn_cell_forward<T>,  &rnn_cell_backward<T>, &lstm_cell_forward<T>,
                        &lstm_cell_backward<T>, &gru_cell_forward<T>, &gru_cell_backward<T>};
}

}  // namespace

// The tables compiled for x86-64-v3 and x86-64-v4 (cpp/src/kernels/cells_x86_v*.cpp); the
// baseline table is recurrent.cpp's own.
namespace cells_isa_v3 {
extern const CellKernels<float> f32;
extern const CellKernels<double> f64;
}  // namespace cells_isa_v3
namespace cells_isa_v4 {
extern const CellKernels<float> f32;
extern const CellKernels<double> f64;
}  // namespace cells_isa_v4

}  // namespace chainrule
