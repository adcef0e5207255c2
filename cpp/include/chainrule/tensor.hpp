// Row-major matrix views with a leading dimension, and owning, 64-byte aligned buffers.
// A view never owns; a Buffer owns and never shares. Sizes are index_t (signed 64-bit) so that
// products of dimensions are checked for overflow before anything is allocated.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>
#include <stdexcept>
#include <string>
#include <utility>

namespace chainrule {

using index_t = std::int64_t;

// Row-major view: element (r, c) lives at data[r * ld + c], with ld >= cols.
template <class T>
struct MatrixView {
  T* data = nullptr;
  index_t rows = 0;
  index_t cols = 0;
  index_t ld = 0;
  T& operator()(index_t r, index_t c) const { return data[r * ld + c]; }
};

// a * b, or std::length_error when it does not fit in index_t (no wrap-around, no huge malloc).
inline index_t checked_mul(index_t a, index_t b) {
  if (a < 0 || b < 0) throw std::invalid_argument("negative size");
  if (a != 0 && b > std::numeric_limits<index_t>::max() / a)
    throw std::length_error("size " + std::to_string(a) + " x " + std::to_string(b) + " overflows");
  return a * b;
}

// Owning, zero-initialised, 64-byte aligned array of T (one cache line, one zmm register).
template <class T>
class Buffer {
 public:
  Buffer() = default;
  explicit Buffer(index_t n) { resize(n); }
  Buffer(const Buffer& o) : Buffer(o.n_) { if (n_) std::memcpy(p_, o.p_, bytes()); }
  Buffer& operator=(const Buffer& o) {
    if (this != &o) { resize(o.n_); if (n_) std::memcpy(p_, o.p_, bytes()); }
    return *this;
  }
  // A move takes the capacity along: a moved-from buffer must be empty with no capacity, or its
  // next resize would "keep" an allocation it no longer has and zero-fill through a null pointer.
  Buffer(Buffer&& o) noexcept
      : p_(std::exchange(o.p_, nullptr)), n_(std::exchange(o.n_, 0)),
        cap_(std::exchange(o.cap_, 0)) {}
  Buffer& operator=(Buffer&& o) noexcept {
    if (this != &o) {
      release();
      p_ = std::exchange(o.p_, nullptr);
      n_ = std::exchange(o.n_, 0);
      cap_ = std::exchange(o.cap_, 0);
    }
    return *this;
  }
  ~Buffer() { release(); }

  // Resizes to n elements, all zero. Keeps the allocation when it is already large enough.
  void resize(index_t n) {
    if (n < 0) throw std::invalid_argument("negative buffer size");
    if (n > cap_) {
      release();
      const index_t max_elems = std::numeric_limits<index_t>::max() / index_t(sizeof(T)) - 64;
      if (n > max_elems) throw std::bad_alloc();
      std::size_t b = (std::size_t(n) * sizeof(T) + 63) / 64 * 64;
      p_ = static_cast<T*>(std::aligned_alloc(64, b));
      if (!p_) throw std::bad_alloc();
      cap_ = n;
    }
    n_ = n;
    if (n_) std::memset(static_cast<void*>(p_), 0, bytes());
  }
  void fill_zero() { if (n_) std::memset(static_cast<void*>(p_), 0, bytes()); }

  T* data() { return p_; }
  const T* data() const { return p_; }
  index_t size() const { return n_; }
  std::size_t bytes() const { return std::size_t(n_) * sizeof(T); }
  std::size_t capacity_bytes() const { return std::size_t(cap_) * sizeof(T); }
  T& operator[](index_t i) { return p_[i]; }
  const T& operator[](index_t i) const { return p_[i]; }

 private:
  void release() { std::free(p_); p_ = nullptr; n_ = 0; cap_ = 0; }
  T* p_ = nullptr;
  index_t n_ = 0;
  index_t cap_ = 0;
};

}  // namespace chainrule
