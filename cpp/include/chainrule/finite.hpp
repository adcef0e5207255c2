// Finiteness checks over whole arrays, on the current ISA path and the thread pool.
#pragma once
#include "chainrule/tensor.hpp"

namespace chainrule {

// True when none of x[0], ..., x[n - 1] is NaN or +-inf. Arrays of 1 M elements and more are
// split over the pool; the answer does not depend on the split.
template <class T>
bool all_finite(const T* x, index_t n);

}  // namespace chainrule
