// The recurrent cells' elementwise math (cells.hpp) compiled for x86-64-v3 (AVX2, FMA) into
// namespace cells_isa_v3, used only after the dispatcher (recurrent.cpp, which follows the GEMM
// path) has checked the CPU. The same source as the baseline table with FP contraction off, so
// every path gives the same bits. Nothing with external linkage is inlined here (cells.hpp and
// vmath.hpp are internal-linkage templates; no STL is used), and the tables are constant-
// initialised: no code from this file can run, or be linked into another path, unless chosen.
#include "../cells.hpp"

namespace chainrule {
namespace cells_isa_v3 {

extern const CellKernels<float> f32 = make_cell_kernels<float>();
extern const CellKernels<double> f64 = make_cell_kernels<double>();

}  // namespace cells_isa_v3
}  // namespace chainrule
