// chainrule._core: the pybind11 module. It only binds the C++ core; each area has its own file.
#include <pybind11/pybind11.h>

#include <stdexcept>

namespace py = pybind11;

void bind_ops(py::module_& m);
void bind_network(py::module_& m);

PYBIND11_MODULE(_core, m) {
  m.doc() = "chainrule's C++ core: kernels (ops) and the Network the Model API wraps";
  // A non-finite total gradient norm (clip with error_if_nonfinite) is a floating-point fault.
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const std::domain_error& e) {
      PyErr_SetString(PyExc_FloatingPointError, e.what());
    }
  });
  bind_ops(m);
  bind_network(m);
}
