// The fully connected layer y = x W^T + b, W of shape (O, I) as in torch.nn.Linear.
// Accumulation rule: parameter gradients accumulate (+=), input gradients overwrite (=).
#pragma once
#include <cstdint>
#include <mutex>

#include "chainrule/gemm.hpp"
#include "chainrule/tensor.hpp"

namespace chainrule {

// x (B, I), W (O, I), b (O) or nullptr -> y (B, O)
template <class T>
void dense_forward(T* y, const T* x, const T* W, const T* b, index_t B, index_t I, index_t O);

// dy (B, O), x (B, I), W (O, I) -> dx (B, I) = dy W (overwritten; skipped when nullptr),
// dW (O, I) += dy^T x, db (O) += sum over B of dy (each skipped when nullptr).
template <class T>
void dense_backward(T* dx, T* dW, T* db, const T* dy, const T* x, const T* W, index_t B, index_t I,
                    index_t O);

// dense_backward with a choice for the parameter gradients: accumulate (+=, as dense_backward),
// or overwrite (=, the same bits as zeroing them first and accumulating): the training loop
// starts each step this way and skips a pass that zeroes them.
template <class T>
void dense_backward_impl(T* dx, T* dW, T* db, const T* dy, const T* x, const T* W, index_t B,
                         index_t I, index_t O, bool accumulate);

// dense_forward for a weight that many forwards share between writes: a layer's weight, read by
// every predict chunk, every single-sample predict and every training step's forward. W is kept
// in the layouts the forward kernels stream (W^T in column panels for a few rows and the small
// path, the GEMM's packed panels for the larger products), made by the second forward after W
// changed: once for any number of predict calls. The first forward of a version lays W out in
// per-thread scratch that every layer shares, so training, one forward per write, keeps no
// copies: they measured 2 % slower on wide (12 MiB more data in the caches, for nothing). version
// names W's contents; the caller changes it with every write of W (Param<T>::version). Weights
// under ~16 K elements, cheaper to lay out again than to look up, take dense_forward directly.
// Same bits as dense_forward. Concurrent forwards (predict on many threads) share one packing;
// W must not be written while a forward runs.
template <class T>
class DenseWeightCache {
 public:
  void forward(T* y, const T* x, const T* W, const T* b, index_t B, index_t I, index_t O,
               std::uint64_t version) const;
  std::size_t bytes() const;  // held by the laid-out copies

 private:
  struct Key {
    const T* w = nullptr;
    index_t I = 0, O = 0;
    std::uint64_t version = 0;
    int isa = -1;  // the packed panels' ISA path and block sizes (their layout depends on them)
    index_t kc = 0, nc = 0;
    bool operator==(const Key& k) const {
      return w == k.w && I == k.I && O == k.O && version == k.version && isa == k.isa &&
             kc == k.kc && nc == k.nc;
    }
  };
  mutable std::mutex mutex_;
  mutable Key panels_key_, packed_key_;
  mutable Key panels_seen_, packed_seen_;  // the last forward's key of each kind
  mutable Buffer<T> panels_;      // W^T (I, O) in panels of 256 bytes of columns
  mutable PackedB<T> packed_[2];  // op(B) = W^T in two column halves, for the pool
  mutable index_t n0_ = 0;        // columns of the first half
};

}  // namespace chainrule
