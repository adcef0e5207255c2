// Binds the kernels as plain functions over NumPy arrays (chainrule.ops wraps them).
// Every function exists for float32 and float64; pybind11 picks the overload from the dtype, and
// with noconvert an array of another dtype (or layout) is a TypeError, never a silent copy.
// Outputs are written in place. Shapes are checked here, once, and a mismatch is a ValueError
// naming both shapes. Compute runs with the GIL released.
#include <pybind11/stl.h>

#include <algorithm>
#include <cstdint>
#include <new>
#if !defined(_WIN32)
#include <fcntl.h>
#include <unistd.h>
#endif
#include <optional>
#include <string>

#include "chainrule/activations.hpp"
#include "chainrule/dense.hpp"
#include "chainrule/finite.hpp"
#include "chainrule/gemm.hpp"
#include "chainrule/losses.hpp"
#include "chainrule/threads.hpp"
#include "common.hpp"

using namespace chainrule;

namespace {

[[noreturn]] void fail(const std::string& msg) { throw std::invalid_argument(msg); }

std::string dims_str(const py::array& a) { return std::to_string(a.ndim()) + "-D"; }

void expect_ndim(const py::array& a, py::ssize_t ndim, const char* fn, const char* name) {
  if (a.ndim() != ndim)
    fail(std::string(fn) + ": expected " + name + " to be a " + std::to_string(ndim) +
         "-D array, got a " + dims_str(a) + " array of shape " + shape_str(a) + " instead");
}

void expect_shape(const py::array& a, const std::vector<py::ssize_t>& shape, const char* fn,
                  const char* name, const py::array& ref, const char* ref_name) {
  bool ok = a.ndim() == py::ssize_t(shape.size());
  for (std::size_t i = 0; ok && i < shape.size(); ++i) ok = a.shape(py::ssize_t(i)) == shape[i];
  if (!ok) {
    std::string want = "(";
    for (std::size_t i = 0; i < shape.size(); ++i)
      want += (i ? ", " : "") + std::to_string(shape[i]);
    want += shape.size() == 1 ? ",)" : ")";
    fail(std::string(fn) + ": " + name + " has shape " + shape_str(a) + " but " + ref_name +
         " has shape " + shape_str(ref) + "; expected " + name + " of shape " + want);
  }
}

// Outputs must be writeable. Checked here because pybind11's own check throws std::domain_error,
// which this module maps to FloatingPointError.
void expect_writeable(const py::array& a, const char* fn, const char* name) {
  if (!a.writeable()) fail(std::string(fn) + ": " + name + " is read-only; pass a writeable array");
}

// Byte range [lo, hi) spanned by an array (empty arrays span nothing).
std::pair<const char*, const char*> extent(const py::array& a) {
  const char* p = static_cast<const char*>(a.data());
  if (a.size() == 0) return {p, p};
  const char *lo = p, *hi = p + a.itemsize();
  for (py::ssize_t d = 0; d < a.ndim(); ++d) {
    const py::ssize_t span = (a.shape(d) - 1) * a.strides(d);
    if (span < 0) lo += span;
    else hi += span;
  }
  return {lo, hi};
}

bool overlaps(const py::array& a, const py::array& b) {
  auto [alo, ahi] = extent(a);
  auto [blo, bhi] = extent(b);
  return alo < bhi && blo < ahi;
}

void expect_disjoint(const py::array& out, const py::array& in, const char* fn, const char* out_name,
                     const char* in_name) {
  if (overlaps(out, in))
    fail(std::string(fn) + ": " + out_name + " overlaps the memory of " + in_name +
         "; pass a separate output array");
}

// ---- gemm ----------------------------------------------------------------------------------
// A 2-D operand whose rows are contiguous (unit column stride), such as a C-contiguous array or a
// column slice of one; returns its leading dimension (row stride in elements).
template <class T>
index_t leading_dim(const py::array_t<T>& a, const char* name) {
  if (a.ndim() != 2)
    fail(std::string("gemm: expected ") + name + " to be a 2-D array, got a " + dims_str(a) +
         " array of shape " + shape_str(a) + " instead");
  const py::ssize_t rows = a.shape(0), cols = a.shape(1), isz = py::ssize_t(sizeof(T));
  // An empty array is never read or written (NumPy gives it arbitrary strides). Otherwise the
  // columns must be unit-stride, and the row stride matters when there are rows to step over.
  const bool empty = rows == 0 || cols == 0;
  const bool single_row = empty || rows == 1;
  const bool unit_cols = empty || cols == 1 || a.strides(1) == isz;
  const bool rows_ok = single_row || (a.strides(0) > 0 && a.strides(0) % isz == 0 &&
                                      a.strides(0) / isz >= cols);
  if (!unit_cols || !rows_ok)
    fail(std::string("gemm: ") + name + " of shape " + shape_str(a) + " has strides (" +
         std::to_string(a.strides(0)) + ", " + std::to_string(a.strides(1)) +
         ") bytes; expected row-major storage with contiguous rows (np.ascontiguousarray gives "
         "that)");
  if (single_row) return std::max<index_t>(cols, 1);
  return index_t(a.strides(0) / isz);
}

template <class T>
void bind_gemm(py::module_& m) {
  // c = alpha op(a) op(b) + beta c; returns nothing, c is written in place.
  auto make = [](bool reference) {
    return [reference](const py::array_t<T>& a, const py::array_t<T>& b, py::array_t<T>& c,
                       bool trans_a, bool trans_b, double alpha, double beta) {
      const char* fn = "gemm";
      const index_t lda = leading_dim(a, "a"), ldb = leading_dim(b, "b"),
                    ldc = leading_dim(c, "c");
      const index_t M = trans_a ? a.shape(1) : a.shape(0), K = trans_a ? a.shape(0) : a.shape(1);
      const index_t Kb = trans_b ? b.shape(1) : b.shape(0), N = trans_b ? b.shape(0) : b.shape(1);
      const std::string sa = std::string(trans_a ? "a.T" : "a") + " has shape (" +
                             std::to_string(M) + ", " + std::to_string(K) + ")";
      const std::string sb = std::string(trans_b ? "b.T" : "b") + " has shape (" +
                             std::to_string(Kb) + ", " + std::to_string(N) + ")";
      if (K != Kb) fail("gemm: inner dimensions differ: " + sa + " but " + sb);
      if (c.shape(0) != M || c.shape(1) != N)
        fail("gemm: c has shape " + shape_str(c) + " but the product of " + sa + " and " + sb +
             " has shape (" + std::to_string(M) + ", " + std::to_string(N) + ")");
      expect_writeable(c, fn, "c");
      expect_disjoint(c, a, fn, "c", "a");
      expect_disjoint(c, b, fn, "c", "b");
      const T* pa = a.data();
      const T* pb = b.data();
      T* pc = static_cast<T*>(c.mutable_data());
      py::gil_scoped_release nogil;
      if (reference)
        gemm_ref<T>(trans_a, trans_b, M, N, K, T(alpha), pa, lda, pb, ldb, T(beta), pc, ldc);
      else
        gemm<T>(trans_a, trans_b, M, N, K, T(alpha), pa, lda, pb, ldb, T(beta), pc, ldc);
    };
  };
  const char* doc =
      "c = alpha * op(a) @ op(b) + beta * c, in place. Operands are 2-D with contiguous rows "
      "(C-contiguous, or a column slice of a C-contiguous array); their row strides are the BLAS "
      "leading dimensions. beta == 0 never reads c.";
  m.def("gemm", make(false), doc, py::arg("a").noconvert(), py::arg("b").noconvert(),
        py::arg("c").noconvert(), py::arg("trans_a") = false, py::arg("trans_b") = false,
        py::arg("alpha") = 1.0, py::arg("beta") = 0.0);
  m.def("gemm_ref", make(true), "The plain triple loop with the contract of gemm (for tests).",
        py::arg("a").noconvert(), py::arg("b").noconvert(), py::arg("c").noconvert(),
        py::arg("trans_a") = false, py::arg("trans_b") = false, py::arg("alpha") = 1.0,
        py::arg("beta") = 0.0);
}

// ---- gemm fast path ------------------------------------------------------------------------
// chainrule.ops.gemm on small matrices is dominated by the call itself (a matmul of 8 x 8 takes
// ~0.1 us; NumPy's whole call ~1 us). This entry point is a raw METH_FASTCALL function: no
// pybind11 overload resolution, no argument casters, no strings built. It handles only what a
// caller in a loop passes (C-contiguous 2-D ndarrays of one float dtype, plain bool/float/int
// scalars, no out or a fitting one) and returns None for everything else, so that ops.gemm takes
// its checked path, which also owns every error message.
namespace gemm_fast_detail {

// a is exactly an ndarray (not a subclass), 2-D and C-contiguous, of dtype number `num`
// (or any of float32 / float64 when num < 0).
bool plain_matrix(PyObject* o, int num) {
  if (Py_TYPE(o) != reinterpret_cast<PyTypeObject*>(py::detail::npy_api::get().PyArray_Type_))
    return false;
  const auto* p = py::detail::array_proxy(o);
  if (p->nd != 2 || !(p->flags & py::detail::npy_api::NPY_ARRAY_C_CONTIGUOUS_)) return false;
  // Byte-swapped data ('>f8' here) has the same type number: it goes the checked way, which
  // converts it (read as native, its bytes were garbage numbers).
  const auto* d = py::detail::array_descriptor_proxy(p->descr);
  const std::uint16_t probe = 1;
  const char swapped = *reinterpret_cast<const unsigned char*>(&probe) == 1 ? '>' : '<';
  if (d->byteorder == swapped) return false;
  const int t = d->type_num;
  if (num >= 0) return t == num;
  return t == py::detail::npy_api::NPY_FLOAT_ || t == py::detail::npy_api::NPY_DOUBLE_;
}

// A flag: 1 for True, 0 for False, -1 for anything else (NumPy's bools, or a wrong type, which
// the checked path accepts or refuses by name).
int flag(PyObject* o) {
  if (o == Py_True) return 1;
  if (o == Py_False) return 0;
  return -1;
}

// A scalar that is exactly a float or an int (not bool, not a NumPy scalar) that fits a double.
bool plain_real(PyObject* o, double& v) {
  if (PyFloat_CheckExact(o)) {
    v = PyFloat_AS_DOUBLE(o);
    return true;
  }
  if (PyLong_CheckExact(o)) {
    v = PyLong_AsDouble(o);
    if (v == -1.0 && PyErr_Occurred()) {
      PyErr_Clear();
      return false;
    }
    return true;
  }
  return false;
}

template <class T>
PyObject* run(PyObject* a, PyObject* b, PyObject* out, bool ta, bool tb, double alpha,
              double beta) {
  const auto* pa = py::detail::array_proxy(a);
  const auto* pb = py::detail::array_proxy(b);
  const index_t ar = pa->dimensions[0], ac = pa->dimensions[1];
  const index_t br = pb->dimensions[0], bc = pb->dimensions[1];
  const index_t M = ta ? ac : ar, K = ta ? ar : ac, Kb = tb ? bc : br, N = tb ? br : bc;
  if (K != Kb) Py_RETURN_NONE;
  py::object c;
  if (out == Py_None) {
    if (beta != 0.0) Py_RETURN_NONE;
    c = carray<T>({py::ssize_t(M), py::ssize_t(N)});
  } else {
    const auto* pc = py::detail::array_proxy(out);
    if (pc->dimensions[0] != M || pc->dimensions[1] != N ||
        !(pc->flags & py::detail::npy_api::NPY_ARRAY_WRITEABLE_))
      Py_RETURN_NONE;
    const py::array ca = py::reinterpret_borrow<py::array>(out);
    if (overlaps(ca, py::reinterpret_borrow<py::array>(a)) ||
        overlaps(ca, py::reinterpret_borrow<py::array>(b)))
      Py_RETURN_NONE;
    c = ca;
  }
  const T* A = static_cast<const T*>(static_cast<const void*>(pa->data));
  const T* B = static_cast<const T*>(static_cast<const void*>(pb->data));
  T* C = static_cast<T*>(static_cast<void*>(py::detail::array_proxy(c.ptr())->data));
  const index_t lda = std::max<index_t>(ac, 1), ldb = std::max<index_t>(bc, 1),
                ldc = std::max<index_t>(N, 1);
  // Below ~32^3 multiply-adds the product takes about a microsecond: releasing and re-taking
  // the GIL would cost a fifth of that, and no other thread could use the time.
  if (double(M) * double(N) * double(K) < 32768.0) {
    gemm<T>(ta, tb, M, N, K, T(alpha), A, lda, B, ldb, T(beta), C, ldc);
  } else {
    py::gil_scoped_release nogil;
    gemm<T>(ta, tb, M, N, K, T(alpha), A, lda, B, ldb, T(beta), C, ldc);
  }
  return c.release().ptr();
}

// gemm_fast(a, b, out, trans_a, trans_b, alpha, beta) -> out, a new array, or None.
PyObject* gemm_fast(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  if (nargs != 7) {
    PyErr_SetString(PyExc_TypeError, "gemm_fast takes 7 positional arguments");
    return nullptr;
  }
  try {
    PyObject *a = args[0], *b = args[1], *out = args[2];
    if (!plain_matrix(a, -1)) Py_RETURN_NONE;
    const int num = py::detail::array_descriptor_proxy(py::detail::array_proxy(a)->descr)->type_num;
    if (!plain_matrix(b, num) || (out != Py_None && !plain_matrix(out, num))) Py_RETURN_NONE;
    const int ta = flag(args[3]), tb = flag(args[4]);
    if (ta < 0 || tb < 0) Py_RETURN_NONE;
    double alpha = 0, beta = 0;
    if (!plain_real(args[5], alpha) || !plain_real(args[6], beta)) Py_RETURN_NONE;
    if (num == py::detail::npy_api::NPY_FLOAT_)
      return run<float>(a, b, out, ta != 0, tb != 0, alpha, beta);
    return run<double>(a, b, out, ta != 0, tb != 0, alpha, beta);
  } catch (py::error_already_set& e) {
    e.restore();
  } catch (const std::bad_alloc&) {
    PyErr_NoMemory();
  } catch (const std::exception& e) {
    PyErr_SetString(PyExc_ValueError, e.what());
  }
  return nullptr;
}

PyMethodDef gemm_fast_def = {
    "gemm_fast", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(&gemm_fast)),
    METH_FASTCALL,
    "gemm_fast(a, b, out, trans_a, trans_b, alpha, beta) -> out, a new array, or None.\n\n"
    "out = alpha * op(a) @ op(b) + beta * out when a, b (and out, when not None) are "
    "C-contiguous 2-D ndarrays of one dtype, float32 or float64, out has the product's shape, is "
    "writeable and overlaps neither input, alpha and beta are float or int, and beta == 0 when "
    "out is None; otherwise None, with nothing computed (the caller takes the checked path)."};

}  // namespace gemm_fast_detail

// ---- activations ---------------------------------------------------------------------------
template <class T>
void bind_activations(py::module_& m) {
  m.def(
      "activation_forward",
      [](carray<T>& y, const carray<T>& x, const std::string& name, double negative_slope) {
        const char* fn = "activation_forward";
        const Activation act = activation_from_name(name);
        expect_ndim(x, 2, fn, "x");
        expect_shape(y, {x.shape(0), x.shape(1)}, fn, "y", x, "x");
        expect_writeable(y, fn, "y");
        if (y.data() != x.data()) expect_disjoint(y, x, fn, "y", "x");
        const T* px = x.data();
        T* py_ = static_cast<T*>(y.mutable_data());
        const index_t R = x.shape(0), C = x.shape(1);
        py::gil_scoped_release nogil;
        activation_forward<T>(py_, px, R, C, act, T(negative_slope));
      },
      "y = f(x) for a 2-D x (R, C), written into y (may be x itself); softmax and log_softmax "
      "act along each row.",
      py::arg("y").noconvert(), py::arg("x").noconvert(), py::arg("name"),
      py::arg("negative_slope") = 0.01);
  m.def(
      "activation_backward",
      [](carray<T>& dx, const carray<T>& dy, const carray<T>& x, const carray<T>& y,
         const std::string& name, double negative_slope) {
        const char* fn = "activation_backward";
        const Activation act = activation_from_name(name);
        expect_ndim(dy, 2, fn, "dy");
        const std::vector<py::ssize_t> s{dy.shape(0), dy.shape(1)};
        expect_shape(x, s, fn, "x", dy, "dy");
        expect_shape(y, s, fn, "y", dy, "dy");
        expect_shape(dx, s, fn, "dx", dy, "dy");
        expect_writeable(dx, fn, "dx");
        if (dx.data() != dy.data()) expect_disjoint(dx, dy, fn, "dx", "dy");
        expect_disjoint(dx, x, fn, "dx", "x");
        expect_disjoint(dx, y, fn, "dx", "y");
        T* pdx = static_cast<T*>(dx.mutable_data());
        const T *pdy = dy.data(), *px = x.data(), *py_ = y.data();
        const index_t R = dy.shape(0), C = dy.shape(1);
        py::gil_scoped_release nogil;
        activation_backward<T>(pdx, pdy, px, py_, R, C, act, T(negative_slope));
      },
      "dx = dL/dx from dy = dL/dy and the forward input x and output y, all 2-D (R, C); dx is "
      "overwritten (it may be dy itself).",
      py::arg("dx").noconvert(), py::arg("dy").noconvert(), py::arg("x").noconvert(),
      py::arg("y").noconvert(), py::arg("name"), py::arg("negative_slope") = 0.01);
}

// ---- losses --------------------------------------------------------------------------------
template <class T>
void bind_losses(py::module_& m) {
  m.def(
      "loss",
      [](std::optional<carray<T>>& grad, const carray<T>& pred, const carray<T>& target,
         const std::string& name, const std::string& reduction) {
        const char* fn = "loss";
        const LossKind kind = loss_from_name(name);
        const Reduction red = reduction_from_name(reduction);
        expect_ndim(pred, 2, fn, "pred");
        const std::vector<py::ssize_t> s{pred.shape(0), pred.shape(1)};
        expect_shape(target, s, fn, "target", pred, "pred");
        T* pg = nullptr;
        if (grad) {
          expect_shape(*grad, s, fn, "grad", pred, "pred");
          expect_writeable(*grad, fn, "grad");
          expect_disjoint(*grad, pred, fn, "grad", "pred");
          expect_disjoint(*grad, target, fn, "grad", "target");
          pg = static_cast<T*>(grad->mutable_data());
        }
        const T *pp = pred.data(), *pt = target.data();
        const index_t R = pred.shape(0), C = pred.shape(1);
        py::gil_scoped_release nogil;
        return loss_forward_backward<T>(pg, pp, pt, R, C, kind, red);
      },
      "Loss of pred (R, C) against target (R, C) ('mse', 'bce', 'bce_with_logits', or "
      "'cross_entropy' with probability targets); writes dLoss/dpred into grad unless it is None.",
      py::arg("grad").noconvert().none(true), py::arg("pred").noconvert(),
      py::arg("target").noconvert(), py::arg("name"), py::arg("reduction") = "mean");
  m.def(
      "cross_entropy_index",
      [](std::optional<carray<T>>& grad, const carray<T>& logits,
         const carray<std::int64_t>& target, const std::string& reduction) {
        const char* fn = "cross_entropy_index";
        const Reduction red = reduction_from_name(reduction);
        expect_ndim(logits, 2, fn, "logits");
        expect_shape(target, {logits.shape(0)}, fn, "target", logits, "logits");
        T* pg = nullptr;
        if (grad) {
          expect_shape(*grad, {logits.shape(0), logits.shape(1)}, fn, "grad", logits, "logits");
          expect_writeable(*grad, fn, "grad");
          expect_disjoint(*grad, logits, fn, "grad", "logits");
          expect_disjoint(*grad, target, fn, "grad", "target");
          pg = static_cast<T*>(grad->mutable_data());
        }
        const T* pl = logits.data();
        const std::int64_t* pt = target.data();
        const index_t R = logits.shape(0), C = logits.shape(1);
        py::gil_scoped_release nogil;
        return cross_entropy_index<T>(pg, pl, pt, R, C, red);
      },
      "Cross entropy of logits (R, C) against class indices target (R,) of int64; writes "
      "dLoss/dlogits into grad unless it is None.",
      py::arg("grad").noconvert().none(true), py::arg("logits").noconvert(),
      py::arg("target").noconvert(), py::arg("reduction") = "mean");
}

// ---- dense ---------------------------------------------------------------------------------
template <class T>
void bind_dense(py::module_& m) {
  m.def(
      "dense_forward",
      [](carray<T>& y, const carray<T>& x, const carray<T>& W, const std::optional<carray<T>>& b) {
        const char* fn = "dense_forward";
        expect_ndim(x, 2, fn, "x");
        expect_ndim(W, 2, fn, "weight");
        const py::ssize_t B = x.shape(0), I = x.shape(1), O = W.shape(0);
        if (W.shape(1) != I)
          fail("dense_forward: x has shape " + shape_str(x) + " but weight has shape " +
               shape_str(W) + "; x has " + std::to_string(I) + " features, but weight is "
               "expecting " + std::to_string(W.shape(1)));
        if (b) expect_shape(*b, {O}, fn, "bias", W, "weight");
        expect_shape(y, {B, O}, fn, "y", x, "x");
        expect_writeable(y, fn, "y");
        expect_disjoint(y, x, fn, "y", "x");
        expect_disjoint(y, W, fn, "y", "weight");
        if (b) expect_disjoint(y, *b, fn, "y", "bias");
        T* py_ = static_cast<T*>(y.mutable_data());
        const T *px = x.data(), *pW = W.data(), *pb = b ? b->data() : nullptr;
        py::gil_scoped_release nogil;
        dense_forward<T>(py_, px, pW, pb, B, I, O);
      },
      "y = x @ W.T + b for x (B, I), W (O, I), b (O,) or None; y (B, O) is overwritten.",
      py::arg("y").noconvert(), py::arg("x").noconvert(), py::arg("weight").noconvert(),
      py::arg("bias").noconvert().none(true));
  m.def(
      "dense_backward",
      [](std::optional<carray<T>>& dx, std::optional<carray<T>>& dW,
         std::optional<carray<T>>& db, const carray<T>& dy, const carray<T>& x,
         const carray<T>& W) {
        const char* fn = "dense_backward";
        expect_ndim(x, 2, fn, "x");
        expect_ndim(W, 2, fn, "weight");
        expect_ndim(dy, 2, fn, "dy");
        const py::ssize_t B = x.shape(0), I = x.shape(1), O = W.shape(0);
        if (W.shape(1) != I)
          fail("dense_backward: x has shape " + shape_str(x) + " but weight has shape " +
               shape_str(W) + "; x has " + std::to_string(I) + " features, but weight is "
               "expecting " + std::to_string(W.shape(1)));
        expect_shape(dy, {B, O}, fn, "dy", x, "x");
        // Each output must be writeable and apart from every input (the GEMMs read them while
        // writing) and from the other outputs.
        std::vector<std::pair<const py::array*, const char*>> ins{{&dy, "dy"}, {&x, "x"},
                                                                   {&W, "weight"}};
        std::vector<std::pair<const py::array*, const char*>> outs;
        if (dx) { expect_shape(*dx, {B, I}, fn, "dx", x, "x"); outs.push_back({&*dx, "dx"}); }
        if (dW) { expect_shape(*dW, {O, I}, fn, "dweight", W, "weight"); outs.push_back({&*dW, "dweight"}); }
        if (db) { expect_shape(*db, {O}, fn, "dbias", W, "weight"); outs.push_back({&*db, "dbias"}); }
        for (std::size_t i = 0; i < outs.size(); ++i) {
          expect_writeable(*outs[i].first, fn, outs[i].second);
          for (auto& in : ins) expect_disjoint(*outs[i].first, *in.first, fn, outs[i].second, in.second);
          for (std::size_t j = 0; j < i; ++j)
            expect_disjoint(*outs[i].first, *outs[j].first, fn, outs[i].second, outs[j].second);
        }
        T* pdx = dx ? static_cast<T*>(dx->mutable_data()) : nullptr;
        T* pdW = dW ? static_cast<T*>(dW->mutable_data()) : nullptr;
        T* pdb = db ? static_cast<T*>(db->mutable_data()) : nullptr;
        const T *pdy = dy.data(), *px = x.data(), *pW = W.data();
        py::gil_scoped_release nogil;
        dense_backward<T>(pdx, pdW, pdb, pdy, px, pW, B, I, O);
      },
      "Backward of y = x @ W.T + b: dx = dy @ W (overwritten), dweight += dy.T @ x, "
      "dbias += dy.sum(0); each output may be None to skip it.",
      py::arg("dx").noconvert().none(true), py::arg("dweight").noconvert().none(true),
      py::arg("dbias").noconvert().none(true), py::arg("dy").noconvert(),
      py::arg("x").noconvert(), py::arg("weight").noconvert());
}

template <class T>
void bind_finite(py::module_& m) {
  m.def(
      "all_finite",
      [](const carray<T>& x) {
        const T* p = x.data();
        const index_t n = index_t(x.size());
        py::gil_scoped_release nogil;
        return all_finite<T>(p, n);
      },
      "True when no element of x (C-contiguous, any shape) is NaN or +-inf.",
      py::arg("x").noconvert());
}

template <class T>
void bind_all(py::module_& m) {
  bind_finite<T>(m);
  bind_gemm<T>(m);
  bind_activations<T>(m);
  bind_losses<T>(m);
  bind_dense<T>(m);
}

}  // namespace

void bind_ops(py::module_& m) {
  bind_all<float>(m);
  bind_all<double>(m);
  PyObject* fast =
      PyCFunction_NewEx(&gemm_fast_detail::gemm_fast_def, nullptr, m.attr("__name__").ptr());
  if (!fast) throw py::error_already_set();
  m.add_object("gemm_fast", py::reinterpret_steal<py::object>(fast));
  m.def("gemm_set_blocking", &gemm_set_blocking,
        "Sets the GEMM cache block sizes (mc, kc, nc) in elements; 0 restores a default.",
        py::arg("mc"), py::arg("kc"), py::arg("nc"));
  m.def(
      "gemm_get_blocking",
      []() {
        const GemmBlocking b = gemm_get_blocking();
        return py::make_tuple(b.mc, b.kc, b.nc);
      },
      "The GEMM cache block sizes (mc, kc, nc) in elements.");
  m.def("gemm_set_skinny", &gemm_set_skinny,
        "Which products take the skinny GEMM path: -1 the tuned rule (default), 0 none, w > 0 "
        "every product with min(M, N) <= w (for tests; every choice gives the same bits).",
        py::arg("max_side"));
  m.def("gemm_get_skinny", &gemm_get_skinny, "The setting of gemm_set_skinny.");
  // Makes a rename in the folder durable. One call, so no interrupt can fall between opening
  // the folder and closing it (from Python, a Ctrl-C there leaked the descriptor).
  m.def("fsync_dir", [](const std::string& path) {
    py::gil_scoped_release nogil;
#if defined(_WIN32)
    (void)path;
    return false;
#else
    const int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return false;
    const bool ok = ::fsync(fd) == 0;
    ::close(fd);
    return ok;
#endif
  }, py::arg("path"), "fsync of a folder (after a rename in it); False where that fails.");
  m.def("available_memory", &available_memory,
        "Bytes this process can still allocate and touch (MemAvailable + SwapFree, within the "
        "cgroup limit); 0 when unknown.");
  m.def("get_num_threads", &get_num_threads, "Threads the C++ core may use.");
  m.attr("MAX_THREADS") = kMaxThreads;
  m.def("set_num_threads", &set_num_threads,
        "Sets the threads the C++ core may use (1 .. MAX_THREADS).",
        py::arg("n"));
  m.def("gemm_isa", &gemm_isa, "The instruction-set path GEMM runs on.");
  m.def("gemm_supported_isas", &gemm_supported_isas, "The ISA paths this CPU supports.");
  m.def("gemm_set_isa", &gemm_set_isa, "Switches the GEMM ISA path (tests run every one).",
        py::arg("name"));
}
