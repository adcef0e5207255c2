// The elementwise math of one recurrent step, forward and backward, for a batch of rows.
// Each function is a handful of simple loops over contiguous arrays (the transcendental ones go
// through vmath.hpp's array functions) so that gcc vectorises every one of them; a single loop
// doing all of it at once did not vectorise. Layouts: gates (B, G) with G = H (RNN), 4H (LSTM:
// i, f, g, o) or 3H (GRU: r, z, n); states (B, H). Internal linkage, like vmath.hpp.
#pragma once
#include "vmath.hpp"

namespace chainrule {
namespace {

// h = act(gx + gh), act = tanh or relu; n = B * H elements.
template <class T>
void rnn_cell_forward(T* h, const T* gx, const T* gh, index_t n, bool relu) {
  for (index_t i = 0; i < n; ++i) h[i] = gx[i] + gh[i];
  if (relu) {
    for (index_t i = 0; i < n; ++i) h[i] = h[i] < T(0) ? T(0) : h[i];
  } else {
    vtanh(h, h, n);
  }
}

// da = dh * act'(a) from the output: tanh' = 1 - h^2, relu' = [h > 0].
template <class T>
void rnn_cell_backward(T* da, const T* dh, const T* h, index_t n, bool relu) {
  if (relu) {
    for (index_t i = 0; i < n; ++i) {
      const T d = dh[i];  // loaded unconditionally, so the select vectorises
      da[i] = h[i] > T(0) ? d : T(0);
    }
  } else {
    for (index_t i = 0; i < n; ++i) da[i] = dh[i] * (T(1) - h[i] * h[i]);
  }
}

// i, f, g, o = sigma, sigma, tanh, sigma of gx + gh;  c = f c_prev + i g;  h = o tanh(c).
// gates receives (i, f, g, o); tmp holds H values.
template <class T>
void lstm_cell_forward(T* h, T* c, T* gates, const T* cprev, const T* gx, const T* gh, index_t B,
                       index_t H, T* tmp) {
  const index_t G = 4 * H;
  for (index_t b = 0; b < B; ++b) {
    T* g = gates + b * G;
    const T* px = gx + b * G;
    const T* ph = gh + b * G;
    for (index_t j = 0; j < G; ++j) g[j] = px[j] + ph[j];
    vsigmoid(g, g, 2 * H);
    vtanh(g + 2 * H, g + 2 * H, H);
    vsigmoid(g + 3 * H, g + 3 * H, H);
    const T* cp = cprev + b * H;
    T* cn = c + b * H;
    T* hn = h + b * H;
    for (index_t k = 0; k < H; ++k) cn[k] = g[H + k] * cp[k] + g[k] * g[2 * H + k];
    vtanh(tmp, cn, H);
    for (index_t k = 0; k < H; ++k) hn[k] = g[3 * H + k] * tmp[k];
  }
}

// h = o tanh(c):       do = dh tanh(c),  dc += dh o (1 - tanh(c)^2)
// c = f c_prev + i g:  di = dc g, df = dc c_prev, dg = dc i, dc_prev = dc f
// through the gate nonlinearities: sigma' = s (1 - s), tanh' = 1 - g^2.
// dg receives the pre-activation gradients (B, 4H); dc (B, H) enters as dL/dc_t from step t + 1
// and leaves as dL/dc_{t-1}; tmp holds H values.
template <class T>
void lstm_cell_backward(T* dg, T* dc, const T* dh, const T* gates, const T* c, const T* cprev,
                        index_t B, index_t H, T* tmp) {
  const index_t G = 4 * H;
  for (index_t b = 0; b < B; ++b) {
    const T* g = gates + b * G;
    T* d = dg + b * G;
    T* dcb = dc + b * H;
    const T* dhb = dh + b * H;
    const T* cp = cprev + b * H;
    vtanh(tmp, c + b * H, H);
    for (index_t k = 0; k < H; ++k)
      dcb[k] = dcb[k] + dhb[k] * g[3 * H + k] * (T(1) - tmp[k] * tmp[k]);
    for (index_t k = 0; k < H; ++k) d[k] = dcb[k] * g[2 * H + k] * g[k] * (T(1) - g[k]);
    for (index_t k = 0; k < H; ++k) d[H + k] = dcb[k] * cp[k] * g[H + k] * (T(1) - g[H + k]);
    for (index_t k = 0; k < H; ++k)
      d[2 * H + k] = dcb[k] * g[k] * (T(1) - g[2 * H + k] * g[2 * H + k]);
    for (index_t k = 0; k < H; ++k)
      d[3 * H + k] = dhb[k] * tmp[k] * g[3 * H + k] * (T(1) - g[3 * H + k]);
    for (index_t k = 0; k < H; ++k) dcb[k] = dcb[k] * g[H + k];
  }
}

// r = sigma(x_r + h_r), z = sigma(x_z + h_z), n = tanh(x_n + r ghn) with ghn = W_hn h + b_hn,
// h = n + z (h_prev - n)   (PyTorch's form of (1 - z) n + z h_prev).
// gates receives (r, z, n), ghn_out the ghn part of gh.
template <class T>
void gru_cell_forward(T* h, T* gates, T* ghn_out, const T* hprev, const T* gx, const T* gh,
                      index_t B, index_t H) {
  const index_t G = 3 * H;
  for (index_t b = 0; b < B; ++b) {
    T* g = gates + b * G;
    const T* px = gx + b * G;
    const T* ph = gh + b * G;
    T* gn = ghn_out + b * H;
    for (index_t j = 0; j < 2 * H; ++j) g[j] = px[j] + ph[j];
    vsigmoid(g, g, 2 * H);
    for (index_t k = 0; k < H; ++k) gn[k] = ph[2 * H + k];
    for (index_t k = 0; k < H; ++k) g[2 * H + k] = px[2 * H + k] + g[k] * gn[k];
    vtanh(g + 2 * H, g + 2 * H, H);
    const T* hp = hprev + b * H;
    T* hn = h + b * H;
    for (index_t k = 0; k < H; ++k) hn[k] = g[2 * H + k] + g[H + k] * (hp[k] - g[2 * H + k]);
  }
}

// dn = dh (1 - z), dz = dh (h_prev - n), dh_prev = dh z + (W_hh part, added by the caller);
// da_n = dn (1 - n^2) on the input side and r da_n on the hidden side; dr = da_n ghn; dz, dr
// through sigma' = s (1 - s). dgx, dgh (B, 3H) receive the pre-activation gradients of the input
// and hidden projections; dh (B, H) is replaced by its direct path dh z.
template <class T>
void gru_cell_backward(T* dgx, T* dgh, T* dh, const T* gates, const T* ghn, const T* hprev,
                       index_t B, index_t H) {
  const index_t G = 3 * H;
  for (index_t b = 0; b < B; ++b) {
    const T* g = gates + b * G;
    const T* gn = ghn + b * H;
    const T* hp = hprev + b * H;
    T* px = dgx + b * G;
    T* ph = dgh + b * G;
    T* d = dh + b * H;
    for (index_t k = 0; k < H; ++k)
      px[2 * H + k] = d[k] * (T(1) - g[H + k]) * (T(1) - g[2 * H + k] * g[2 * H + k]);
    for (index_t k = 0; k < H; ++k)
      px[H + k] = d[k] * (hp[k] - g[2 * H + k]) * g[H + k] * (T(1) - g[H + k]);
    for (index_t k = 0; k < H; ++k) px[k] = px[2 * H + k] * gn[k] * g[k] * (T(1) - g[k]);
    for (index_t k = 0; k < 2 * H; ++k) ph[k] = px[k];
    for (index_t k = 0; k < H; ++k) ph[2 * H + k] = px[2 * H + k] * g[k];
    for (index_t k = 0; k < H; ++k) d[k] = d[k] * g[H + k];
  }
}

}  // namespace
}  // namespace chainrule
