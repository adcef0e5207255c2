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

// x (R, C) -> y (R, C). negative_slope is used by leaky_relu only. y may alias x.
template <class T>
void activation_forward(T* y, const T* x, index_t R, index_t C, Activation a, T negative_slope);

// dy (R, C), x (R, C), y (R, C) -> dx (R, C) = dL/dx (overwritten).
template <class T>
void activation_backward(T* dx, const T* dy, const T* x, const T* y, index_t R, index_t C,
                         Activation a, T negative_slope);

// Plain scalar twins: the references for tests.
template <class T>
void activation_forward_ref(T* y, const T* x, index_t R, index_t C, Activation a, T negative_slope);
template <class T>
void activation_backward_ref(T* dx, const T* dy, const T* x, const T* y, index_t R, index_t C,
                             Activation a, T negative_slope);

}  // namespace chainrule
