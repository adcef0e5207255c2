// Picks the elementwise kernel table (elementwise.hpp) that matches the GEMM's current ISA path,
// so that gemm_set_isa / CHAINRULE_ISA switch the GEMM and the elementwise work together.
#include "elementwise.hpp"

#include <cstring>

#include "chainrule/gemm.hpp"

namespace chainrule {
namespace elem {

const ElemKernels& kernels() {
#if CHAINRULE_X86_KERNELS
  // gemm_isa() names a path the CPU supports (gemm.cpp checks before it switches).
  const char* isa = gemm_isa();
  if (std::strcmp(isa, x86_v4::kernels.isa) == 0) return x86_v4::kernels;
  if (std::strcmp(isa, x86_v3::kernels.isa) == 0) return x86_v3::kernels;
#endif
  return baseline::kernels;
}

template <> const ElemOps<float>& ops<float>() { return kernels().f32; }
template <> const ElemOps<double>& ops<double>() { return kernels().f64; }

}  // namespace elem
}  // namespace chainrule
