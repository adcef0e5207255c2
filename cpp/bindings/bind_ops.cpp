// Binds the kernels as plain functions over NumPy arrays (chainrule.ops wraps them).
#include "common.hpp"

void bind_ops(py::module_& m) {}
