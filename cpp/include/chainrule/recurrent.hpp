// Recurrent layers (Elman RNN, LSTM, GRU) with PyTorch's math, parameter names, shapes and gate
// orders, and backpropagation through time.
//
// Input (B, T, I) batch-first, output (B, T, H) or the last step (B, H). Per stacked cell k the
// parameters are weight_ih_l{k} (G, I_k), weight_hh_l{k} (G, H), bias_ih_l{k} (G),
// bias_hh_l{k} (G), with G = H (RNN), 4H (LSTM: gates i, f, g, o), 3H (GRU: gates r, z, n).
//
// BPTT runs in segments of S = ceil(sqrt(T)) steps. Forward computes each segment's input
// projection as one GEMM and only h_{t-1} W_hh^T per step; backward keeps only dh_{t-1} = dG_t W_hh
// per step and computes the weight gradients as one GEMM per segment. With memory "all" every
// state and gate is kept; with "sqrt" only the state at each segment start is kept and each segment
// is recomputed just before its backward. Both run the same arithmetic in the same order, so their
// gradients are bitwise identical. The time loop runs on all threads at once. With a batch of 16
// rows or more, each thread runs every step for its own group of batch rows (a row of h_t
// depends only on the same row of h_{t-1}), so steps need no barrier; with fewer rows the hidden
// units are split into slices (a slice's gate columns of the step GEMM and its cell math form one
// task) and a step is one phase of parallel_phases. Every element is computed by one task the
// same way, so the bits do not depend on the thread count.
#pragma once
#include <cstdint>
#include <vector>

#include "chainrule/gemm.hpp"
#include "chainrule/network.hpp"

namespace chainrule {

// What a recurrent layer keeps between forward and backward, and what it reports.
//
// Sequence-sized buffers: the layer reads its input x (B, T, I) where the network keeps it (one
// segment at a time is gathered time-major into xseg), writes its output y (B, T, H) there a
// segment at a time, and reads dL/dy where the network puts it; none of these is copied whole.
// Beyond them it holds O(T) data only where BPTT needs it: with "all", every state and gate;
// with num_layers > 1, the sequence between two stacked cells (the states themselves with
// "all", a copy in Cell::out with "sqrt") and that sequence's gradient (dtm; with "sqrt" and
// consume set, written over Cell::out instead). Everything else is one segment or one step.
template <class T>
struct RecurrentCache : LayerCache {
  // Set by the caller before forward:
  BpttMemory memory = BpttMemory::all;
  Buffer<T> h0, c0;  // (L, B, H) initial states; empty means zeros
  // Set by the caller before backward: nothing reads the forward's results again (fit's step),
  // so backward may write a stacked cell's input gradient over that input, the lower cell's
  // output sequence, which "sqrt" keeps only for this backward. A second backward of the same
  // forward needs consume = false.
  bool consume = false;
  // Filled by forward:
  index_t B = 0, steps = 0;
  Buffer<T> hn, cn;  // (L, B, H) final states (cn for LSTM only)
  // Filled by backward (and emptied by the next forward):
  Buffer<T> dh0, dc0;             // (L, B, H) gradients w.r.t. the initial states
  std::vector<double> step_norms;  // (L, T): ||dL/dh_t|| over the batch, per stacked cell
  // Bytes of every buffer above the step scratch that BPTT held (states, gates, checkpoints,
  // segment scratch, gate gradients, and the stacked cells' sequences and their gradients); not
  // the layer's input, output or their gradients, which the network holds.
  std::size_t workspace_bytes = 0;
  std::size_t peak_workspace_bytes = 0;

  // Internal storage, per stacked cell k.
  struct Cell {
    Buffer<T> out;    // sqrt, below the top cell: (T, B, H) time-major output (the next input)
    Buffer<T> hs;     // all: (T + 1, B, H) states, slot t holds h_{t-1}; sqrt: one per segment
    Buffer<T> cs;     // LSTM cell states, same layout as hs
    Buffer<T> gates;  // all: (T, B, G) gate activations; sqrt: unused
    Buffer<T> ghn;    // GRU: (T, B, H) W_hn h_{t-1} + b_hn (all mode)
  };
  std::vector<Cell> cells;
  // The time loop splits the hidden units into slices, one per thread; a slice [u0, u0 + hs)
  // keeps its own packed parts of W_hh and its gate scratch.
  struct Slice {
    index_t u0 = 0, hs = 0;
    Buffer<T> w, b;  // (q hs, H): the slice's rows of each of the q gate blocks of W_hh; b_hh's
    Buffer<T> gh;    // (B, q hs): the step's h_{t-1} w^T + b
    PackedB<T> fwd;  // w^T, for h_{t-1} W_hh^T restricted to the slice's gate columns
    PackedB<T> bwd;  // W_hh[:, u0:u0+hs], for dh_{t-1} restricted to the slice's units
  };
  std::vector<Slice> slices;
  // > 1: the time loop runs in this many groups of batch rows, each every step of its rows
  // with one slice of all hidden units (no barrier between steps); 1: slices of hidden units,
  // one phase per step.
  index_t row_groups = 1;
  // Per segment: seg_* its states and gates (sqrt), gx / dgx / dgh its gate pre-activations and
  // their gradients, xseg / dxseg its rows of x and dL/dx, time-major (S, B, I). dh, dc the
  // gradients carried from step to step; dtm, dtm2 (T, B, H) a stacked cell's input gradient.
  Buffer<T> seg_hs, seg_cs, seg_gates, seg_ghn, gx, dgx, dgh, xseg, dxseg, dh, dc, dtm, dtm2;
  std::vector<double> row_sq;  // (S, B): ||dL/dh_t||^2 per batch row, for step_norms
  BpttMemory allocated_for = BpttMemory::all;

  // Frees every internal buffer (when the memory mode changes, so "sqrt" really holds less).
  void release_workspace() {
    cells.clear();
    slices.clear();
    for (Buffer<T>* b : {&seg_hs, &seg_cs, &seg_gates, &seg_ghn, &gx, &dgx, &dgh, &xseg, &dxseg,
                         &dh, &dc, &dtm, &dtm2})
      *b = Buffer<T>();
    peak_workspace_bytes = 0;
  }
};

}  // namespace chainrule
