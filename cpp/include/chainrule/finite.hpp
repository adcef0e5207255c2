// Finiteness checks over whole arrays, on the current ISA path and the thread pool.
#pragma once
#include "chainrule/tensor.hpp"

namespace chainrule {

// True when none of x[0], ..., x[n - 1] is NaN or +-inf. Arrays of 1 M elements and more are
// split over the pool; the answer does not depend on the split.
template <class T>
bool all_finite(const T* x, index_t n);

// The largest biased exponent field among x[0..n) (0 for none; 255 for float, 2047 for double
// when one is NaN or +-inf), split over the pool likewise: |x_i| < 2^(e - bias + 1).
template <class T>
int max_exponent(const T* x, index_t n);

}  // namespace chainrule
