// Elementwise kernels: the x86-64-v3 (AVX2, FMA unused: contraction off) copy, compiled with -march=x86-64-v3.
// The loops are elementwise_impl.hpp; elem::kernels() calls this copy when the GEMM path is
// "avx2". Nothing but the table x86_v3::kernels is exported (checked by ctest: no weak symbols).
#define CHAINRULE_ELEM_NS x86_v3
#define CHAINRULE_ELEM_ISA_NAME "avx2"
#include "../elementwise_impl.hpp"
