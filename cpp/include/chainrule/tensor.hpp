// Row-major matrix views with a leading dimension, and owning, 64-byte aligned buffers.
// A view never owns; a Buffer owns and never shares. Sizes are index_t (signed 64-bit) so that
// products of dimensions are checked for overflow before anything is allocated.
#pragma once
#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>
#include <stdexcept>
#include <string>
#include <utility>

#if defined(__SANITIZE_ADDRESS__)  // gcc -fsanitize=address (CMake: CHAINRULE_SANITIZE)
#include <sanitizer/asan_interface.h>
#endif

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
namespace detail {
[[noreturn]] [[gnu::cold]] [[gnu::noinline]] inline void throw_bad_product(index_t a, index_t b) {
  if (a < 0 || b < 0) throw std::invalid_argument("negative size");
  throw std::length_error("size " + std::to_string(a) + " x " + std::to_string(b) + " overflows");
}
}  // namespace detail

// a * b for sizes, or an exception for a negative size or an overflow. The check inlines to a
// few instructions; the message is built out of line (a tiny training step calls this often).
inline index_t checked_mul(index_t a, index_t b) {
  index_t r;
  if (a < 0 || b < 0 || __builtin_mul_overflow(a, b, &r)) detail::throw_bad_product(a, b);
  return r;
}

// ---- memory the machine can back -----------------------------------------------------------
// Linux overcommits: a huge malloc often succeeds, and the zero fill below then touches every page
// until the OOM killer ends the process (or a neighbour). So requests are compared with the memory
// available first, and refused with OutOfMemory (a std::bad_alloc; Python sees MemoryError).

// std::bad_alloc with a message that says how much was asked for and how much there is.
class OutOfMemory : public std::bad_alloc {
 public:
  OutOfMemory(std::size_t requested, std::size_t available) {
    std::snprintf(msg_, sizeof msg_,
                  "cannot allocate %.3g GiB: only %.3g GiB of memory is available; use smaller "
                  "batches, shorter sequences or smaller layers",
                  double(requested) / 1073741824.0, double(available) / 1073741824.0);
  }
  const char* what() const noexcept override { return msg_; }

 private:
  char msg_[200];
};

namespace detail {

inline std::size_t read_number(const char* path) {  // 0 when absent or not a number ("max")
  std::FILE* f = std::fopen(path, "r");
  if (!f) return 0;
  unsigned long long v = 0;
  if (std::fscanf(f, "%llu", &v) != 1) v = 0;
  std::fclose(f);
  return std::size_t(v);
}

}  // namespace detail

// Bytes the process can still allocate and touch: MemAvailable + SwapFree, or less when the
// cgroup (container) limit leaves less; 0 when unknown (then nothing is refused).
inline std::size_t available_memory() {
  std::size_t avail = 0;
#if defined(__linux__)
  if (std::FILE* f = std::fopen("/proc/meminfo", "r")) {
    char line[128];
    unsigned long long kb = 0, mem = 0, swap = 0;
    bool have_mem = false;
    while (std::fgets(line, sizeof line, f)) {
      if (std::sscanf(line, "MemAvailable: %llu kB", &kb) == 1) { mem = kb; have_mem = true; }
      else if (std::sscanf(line, "SwapFree: %llu kB", &kb) == 1) swap = kb;
    }
    std::fclose(f);
    if (have_mem) avail = std::size_t((mem + swap) * 1024);
  }
  const std::size_t pairs[2][2] = {
      {detail::read_number("/sys/fs/cgroup/memory.max"),
       detail::read_number("/sys/fs/cgroup/memory.current")},
      {detail::read_number("/sys/fs/cgroup/memory/memory.limit_in_bytes"),
       detail::read_number("/sys/fs/cgroup/memory/memory.usage_in_bytes")}};
  for (const auto& p : pairs)
    if (p[0] > 0 && p[0] < (std::size_t(1) << 60))  // v1 says "unlimited" with a huge number
      avail = std::min(avail ? avail : p[0], p[0] > p[1] ? p[0] - p[1] : 0);
#endif
  return avail;
}

// Throws OutOfMemory unless `bytes` more, plus 64 MiB of headroom, fit in the memory available.
// Requests of 1 MiB or more are checked one by one; smaller ones once per 64 MiB of them (reading
// /proc/meminfo takes ~10 us, a steady training loop allocates nothing).
inline void check_available_memory(std::size_t bytes) {
  constexpr std::size_t big = std::size_t(1) << 20, headroom = std::size_t(64) << 20;
  static std::atomic<std::size_t> small_since_check{0};
  std::size_t need = bytes;
  if (bytes < big) {
    if (small_since_check.fetch_add(bytes, std::memory_order_relaxed) + bytes < headroom) return;
    small_since_check.store(0, std::memory_order_relaxed);
    need = 0;  // the small ones together: is there still headroom?
  }
  const std::size_t avail = available_memory();
  if (avail > 0 && (need > avail || avail - need < headroom)) throw OutOfMemory(bytes, avail);
}

namespace detail {

// Marks bytes [p, p + n) unaddressable (poison) or addressable again for AddressSanitizer; no-ops
// in other builds. A Buffer's allocation is rounded up to 64 bytes and kept when it shrinks, so
// without this an access just past size() would land in memory ASan considers valid.
inline void asan_poison(const void* p, std::size_t n) {
#if defined(__SANITIZE_ADDRESS__)
  if (p && n) __asan_poison_memory_region(p, n);
#else
  (void)p, (void)n;
#endif
}
inline void asan_unpoison(const void* p, std::size_t n) {
#if defined(__SANITIZE_ADDRESS__)
  if (p && n) __asan_unpoison_memory_region(p, n);
#else
  (void)p, (void)n;
#endif
}

}  // namespace detail

// Owning, zero-initialised, 64-byte aligned array of T (one cache line, one zmm register).
// Under ASan everything past size() is poisoned, so an off-by-one access is reported.
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
      check_available_memory(b);
      p_ = static_cast<T*>(std::aligned_alloc(64, b));
      if (!p_) throw std::bad_alloc();
      cap_ = n;
    }
    n_ = n;
    detail::asan_unpoison(p_, bytes());
    detail::asan_poison(reinterpret_cast<char*>(p_) + bytes(), allocated_bytes() - bytes());
    if (n_) std::memset(static_cast<void*>(p_), 0, bytes());
  }
  // Resizes to n elements whose values are unspecified (the caller writes every one before it
  // reads any): the hot paths, which would otherwise zero megabytes per step for nothing.
  void resize_for_overwrite(index_t n) {
    if (n > cap_) {
      resize(n);
      return;
    }
    if (n < 0) throw std::invalid_argument("negative buffer size");
    n_ = n;
    detail::asan_unpoison(p_, bytes());
    detail::asan_poison(reinterpret_cast<char*>(p_) + bytes(), allocated_bytes() - bytes());
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
  std::size_t allocated_bytes() const { return (std::size_t(cap_) * sizeof(T) + 63) / 64 * 64; }
  void release() {
    detail::asan_unpoison(p_, allocated_bytes());
    std::free(p_);
    p_ = nullptr; n_ = 0; cap_ = 0;
  }
  T* p_ = nullptr;
  index_t n_ = 0;
  index_t cap_ = 0;
};

}  // namespace chainrule
