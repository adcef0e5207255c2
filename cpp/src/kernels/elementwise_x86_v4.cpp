// Elementwise kernels: the x86-64-v4 (AVX-512) copy, compiled with -march=x86-64-v4 -mprefer-vector-width=512.
// The loops are elementwise_impl.hpp; elem::kernels() calls this copy when the GEMM path is
// "avx512". Nothing but the table x86_v4::kernels is exported (checked by ctest: no weak symbols).
#define CHAINRULE_ELEM_NS x86_v4
#define CHAINRULE_ELEM_ISA_NAME "avx512"
#include "../elementwise_impl.hpp"
