// Picks the elementwise kernel table (elementwise.hpp) that matches the GEMM's current ISA path,
// so that gemm_set_isa / CHAINRULE_ISA switch the GEMM and the elementwise work together.
#include "elementwise.hpp"

#include <atomic>
#include <cstring>

#include "chainrule/finite.hpp"
#include "chainrule/gemm.hpp"
#include "chainrule/threads.hpp"

namespace chainrule {
namespace elem {

const ElemKernels& kernels() {
#if CHAINRULE_X86_KERNELS
  // The GEMM's path is one the CPU supports (gemm.cpp checks before it switches). Called per
  // layer and per parameter in every training step, so by number, not by name.
  const int level = gemm_isa_level();
  if (level == 2) return x86_v4::kernels;
  if (level == 1) return x86_v3::kernels;
#endif
  return baseline::kernels;
}

template <> const ElemOps<float>& ops<float>() { return kernels().f32; }
template <> const ElemOps<double>& ops<double>() { return kernels().f64; }

}  // namespace elem

template <class T>
bool all_finite(const T* x, index_t n) {
  const elem::ElemOps<T>& ops = elem::ops<T>();
  // One thread up to 1 M elements (~100 us of scanning): below that, waking a sleeping pool
  // worker (20-40 us) costs more than it saves (digits' 115 K inputs, checked on every fit call).
  if (n < (1 << 20)) return ops.all_finite(x, n);
  std::atomic<bool> bad{false};
  // Slices of whole cache lines, one per thread, each at least 512 K elements.
  parallel_ranges(n, 16, n / 524288, [&](std::int64_t lo, std::int64_t hi) {
    if (!bad.load(std::memory_order_relaxed) && !ops.all_finite(x + lo, hi - lo))
      bad.store(true, std::memory_order_relaxed);
  });
  return !bad.load(std::memory_order_relaxed);
}

template <class T>
int max_exponent(const T* x, index_t n) {
  const elem::ElemOps<T>& ops = elem::ops<T>();
  if (n < (1 << 20)) return ops.max_exponent(x, n);  // as all_finite
  std::atomic<int> mx{0};
  parallel_ranges(n, 16, n / 524288, [&](std::int64_t lo, std::int64_t hi) {
    atomic_max(mx, ops.max_exponent(x + lo, hi - lo));
  });
  return mx.load(std::memory_order_relaxed);
}

template int max_exponent<float>(const float*, index_t);
template int max_exponent<double>(const double*, index_t);
template bool all_finite<float>(const float*, index_t);
template bool all_finite<double>(const double*, index_t);

}  // namespace chainrule
