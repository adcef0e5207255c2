// Internal: the layer classes behind LayerSpec, and the factory the Network uses.
#pragma once
#include <memory>

#include "chainrule/network.hpp"

namespace chainrule {

// Builds the layer that spec describes; std::invalid_argument for an unknown kind or bad sizes.
template <class T>
std::unique_ptr<Layer<T>> make_layer(const LayerSpec& spec, std::size_t index);

// The recurrent layers (recurrent.cpp): spec.kind "rnn", "lstm" or "gru".
template <class T>
std::unique_ptr<Layer<T>> make_recurrent_layer(const LayerSpec& spec, std::size_t index);

}  // namespace chainrule
