// Shared helpers for the binding files: array access without silent copies.
// Arrays arrive C-contiguous and of the right dtype (the Python layer converts once); the
// bindings take them with noconvert, so a wrong array is a TypeError, never a hidden copy.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "chainrule/tensor.hpp"

namespace py = pybind11;

template <class T>
using carray = py::array_t<T, py::array::c_style>;

// A new C-contiguous array of the given shape; MemoryError when the machine cannot back it (NumPy
// would get it from an overcommitting kernel, and filling it would wake the OOM killer).
template <class T>
carray<T> new_array(const std::vector<chainrule::index_t>& shape) {
  chainrule::index_t n = sizeof(T);
  for (chainrule::index_t d : shape) n = chainrule::checked_mul(n, d);
  chainrule::check_available_memory(std::size_t(n));
  std::vector<py::ssize_t> s(shape.begin(), shape.end());
  return carray<T>(s);
}

inline std::string shape_str(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) {
    if (i) s += ", ";
    s += std::to_string(a.shape(i));
  }
  if (a.ndim() == 1) s += ",";
  return s + ")";
}
