// Elementwise exp, expm1-based tanh and sigmoid written as straight-line arithmetic, so that gcc
// vectorises the loops that call them (libm's scalar calls cost ~20 ns each and dominated the
// recurrent cells). Accuracy: within a few ulp of the correctly rounded result in float and in
// double (the float64 paths keep double accuracy, which finite-difference checks need).
//
// exp(x) = 2^n (1 + p(r)), x = n ln2 + r, |r| <= ln2/2, p the Taylor polynomial of expm1 (degree 8
// for float, 14 for double: truncation below 1e-9 resp. 1e-17 relative); ln2 split Cody-Waite.
// tanh(x) = sign(x) e / (e + 2) with e = expm1(2|x|) (no cancellation for small x, saturates to 1).
// sigmoid(x) = 1 / (1 + exp(-x)) (exp(-x) = inf gives exactly 0).
//
// Everything here has internal linkage: each translation unit (and later each ISA variant of one)
// gets its own copy, so no copy compiled for a newer ISA can be linked into another path.
#pragma once
#include <cstdint>

// The ISA kernel files (elementwise_impl.hpp) include no STL header at all; everyone else gets
// tensor.hpp as before. index_t is declared here too (the same alias: a mismatch would not compile).
#ifndef CHAINRULE_ISA_FILE
#include "chainrule/tensor.hpp"
#endif

namespace chainrule {
using index_t = std::int64_t;
namespace {

template <class T> struct ExpConst;
template <> struct ExpConst<float> {
  using I = std::int32_t;
  using U = std::uint32_t;
  static constexpr float magic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  static constexpr float log2e = 1.44269504088896341f;
  static constexpr float ln2_hi = 0.693359375f;
  static constexpr float ln2_lo = -2.12194440e-4f;
  static constexpr float lo = -104.0f, hi = 89.0f;  // beyond: 0 and inf
  static constexpr float tanh_cap = 44.0f;  // expm1(44) makes e / (e + 2) round to 1
  static constexpr int mant = 23, bias = 127, degree = 8;
};
template <> struct ExpConst<double> {
  using I = std::int64_t;
  using U = std::uint64_t;
  static constexpr double magic = 6755399441055744.0;  // 1.5 * 2^52
  static constexpr double log2e = 1.44269504088896338700e+00;
  static constexpr double ln2_hi = 6.93147180369123816490e-01;
  static constexpr double ln2_lo = 1.90821492927058770002e-10;
  static constexpr double lo = -746.0, hi = 710.0;
  static constexpr double tanh_cap = 44.0;
  static constexpr int mant = 52, bias = 1023, degree = 14;
};

constexpr double inv_factorial(int j) {
  double f = 1;
  for (int i = 2; i <= j; ++i) f *= i;
  return 1.0 / f;
}

// sum_{j=J..D} r^(j-J) / j!, unrolled at compile time (a loop here would stop vectorisation).
template <class T, int J, int D>
struct Horner {
  static T eval(T r) { return Horner<T, J + 1, D>::eval(r) * r + T(inv_factorial(J)); }
};
template <class T, int D>
struct Horner<T, D, D> {
  static T eval(T) { return T(inv_factorial(D)); }
};

// 2^m for an integer-valued m within the normal exponent range. Unsigned arithmetic: a NaN input
// reaches here with a meaningless m (its result is NaN times these bits, still NaN), and shifting
// that m as a signed value would be undefined behaviour (UBSan: left shift of negative value).
template <class T>
inline T pow2i(typename ExpConst<T>::I m) {
  using C = ExpConst<T>;
  using U = typename C::U;
  return __builtin_bit_cast(T, U((U(m) + U(C::bias)) << C::mant));
}

// x = n ln2 + r; returns expm1(r) = r + r^2/2! + ... + r^d/d! and sets n.
template <class T>
inline T expm1_reduced(T x, typename ExpConst<T>::I& n) {
  using C = ExpConst<T>;
  using I = typename C::I;
  const T k = x * C::log2e + C::magic;
  const T nf = k - C::magic;
  n = __builtin_bit_cast(I, k) - __builtin_bit_cast(I, C::magic);
  const T r = (x - nf * C::ln2_hi) - nf * C::ln2_lo;
  // expm1(r) = r (1 + r/2! + r^2/3! + ... + r^(d-1)/d!), Horner from the innermost term.
  return r * Horner<T, 1, C::degree>::eval(r);
}

template <class T>
inline T vexp1(T x) {
  using C = ExpConst<T>;
  using I = typename C::I;
  // T(...) makes each branch a value: selecting between an lvalue x and the static constant would
  // select an address, which gcc does not vectorise.
  x = x < C::lo ? T(C::lo) : T(x);
  x = x > C::hi ? T(C::hi) : T(x);  // NaN passes both comparisons unchanged
  I n;
  const T p = expm1_reduced(x, n) + T(1);
  // Scale in two halves so that 2^n never leaves the normal range (subnormal results included).
  const I n1 = n >> 1;
  return p * pow2i<T>(n1) * pow2i<T>(n - n1);
}

template <class T>
inline T vtanh1(T x) {
  using C = ExpConst<T>;
  using I = typename C::I;
  T u = (x < T(0) ? -x : x) * T(2);
  u = u > C::tanh_cap ? T(C::tanh_cap) : T(u);
  I n;
  const T em_r = expm1_reduced(u, n);
  const T scale = pow2i<T>(n);
  const T e = scale * em_r + (scale - T(1));  // expm1(u) = 2^n expm1(r) + (2^n - 1), both >= 0
  const T t = e / (e + T(2));
  // t >= 0 takes the sign bit of x (so tanh(-0) = -0); bit operations, as copysign does not
  // vectorise here.
  const I sign = __builtin_bit_cast(I, x) & (I(1) << (8 * sizeof(T) - 1));
  const T y = __builtin_bit_cast(T, __builtin_bit_cast(I, t) | sign);
  // A NaN comes back as itself: through the arithmetic above its sign bit depended on operand
  // order, which differs between the vector and the scalar code (and so between ISA paths).
  return x != x ? x : y;
}

template <class T>
inline T vsigmoid1(T x) { return T(1) / (T(1) + vexp1(-x)); }

template <class T>
void vexp(T* y, const T* x, index_t n) {
  for (index_t i = 0; i < n; ++i) y[i] = vexp1(x[i]);
}
template <class T>
void vtanh(T* y, const T* x, index_t n) {
  for (index_t i = 0; i < n; ++i) y[i] = vtanh1(x[i]);
}
template <class T>
void vsigmoid(T* y, const T* x, index_t n) {
  for (index_t i = 0; i < n; ++i) y[i] = vsigmoid1(x[i]);
}

}  // namespace
}  // namespace chainrule
