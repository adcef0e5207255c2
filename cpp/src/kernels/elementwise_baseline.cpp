// Elementwise kernels: the portable copy, compiled with the core's flags (SSE2 on x86-64).
// The loops are elementwise_impl.hpp; elem::kernels() calls this copy when the GEMM path is
// "baseline". Nothing but the table baseline::kernels is exported (checked by ctest: no weak symbols).
#define CHAINRULE_ELEM_NS baseline
#define CHAINRULE_ELEM_ISA_NAME "baseline"
#include "../elementwise_impl.hpp"
