// The fully connected layer y = x W^T + b, W of shape (O, I) as in torch.nn.Linear.
// Accumulation rule: parameter gradients accumulate (+=), input gradients overwrite (=).
#pragma once
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

}  // namespace chainrule
