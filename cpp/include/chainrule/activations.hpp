// Activation functions, forward and backward, on a row-major (R, C) block.
// Elementwise ones ignore the row structure; softmax and log_softmax act along each row of C.
// Backward computes dx from dy and the stored forward values (x and/or y), using the forward
// outputs where that is exact and cheaper: tanh' = 1 - y^2, sigmoid' = y (1 - y).
// dx may alias dy. Inputs are never modified.
#pragma once
#include <string>
#include "chainrule/tensor.hpp"

namespace chainrule {

enum class Activation { identity, sigmoid, tanh, relu, leaky_relu, softmax, log_softmax };

// Parses "identity", "sigmoid", "tanh", "relu", "leaky_relu", "softmax", "log_softmax";
// std::invalid_argument naming the accepted names otherwise.
Activation activation_from_name(const std::string& name);
const char* activation_name(Activation a);
// std::invalid_argument unless a is one of the enumerators (the functions below check it).
void check_activation(Activation a);

// x (R, C) -> y (R, C). negative_slope is used by leaky_relu only. y may alias x.
// mapped_output: y is a buffer the caller reuses (a layer's output: the training tape, predict's
// chunk buffers), so its pages are mapped but on first use; then the cheap maps (relu, ...)
// split over the pool too above 2^14 elements, not only the exp-bound ones (into a fresh array,
// as ops returns, both threads would fault pages in at once, which measured slower). The split
// never changes a value.
template <class T>
void activation_forward(T* y, const T* x, index_t R, index_t C, Activation a, T negative_slope,
                        bool mapped_output = false);

// dy (R, C), x (R, C), y (R, C) -> dx (R, C) = dL/dx (overwritten). mapped_output: as above,
// for dx.
template <class T>
void activation_backward(T* dx, const T* dy, const T* x, const T* y, index_t R, index_t C,
                         Activation a, T negative_slope, bool mapped_output = false);

// Plain scalar twins: the references for tests.
template <class T>
void activation_forward_ref(T* y, const T* x, index_t R, index_t C, Activation a, T negative_slope);
template <class T>
void activation_backward_ref(T* dx, const T* dy, const T* x, const T* y, index_t R, index_t C,
                             Activation a, T negative_slope);

}  // namespace chainrule
