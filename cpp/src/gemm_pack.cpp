// GEMM packing: copies a block of op(A) or op(B) into the contiguous micro-panel layout the
// micro-kernels stream through (see gemm_internal.hpp). The transposes are absorbed here, so one
// micro-kernel serves A B, A^T B, A B^T and A^T B^T. Edges are zero-padded to the full panel width.
#include <algorithm>

#include "gemm_internal.hpp"

namespace chainrule {
namespace gemm_detail {

namespace {

// One micro-panel, full or partial (h <= w live rows), from X(r, k) = X[r * rs + k * cs].
template <class T>
void pack_one_panel(index_t w, index_t h, index_t depth, const T* X, index_t rs, index_t cs,
                    T* dst) {
  if (rs == 1) {
    // The w values of one k are contiguous in X (A^T, or B as stored): a short copy per k.
    for (index_t k = 0; k < depth; ++k) {
      const T* src = X + k * cs;
      T* d = dst + k * w;
      for (index_t r = 0; r < h; ++r) d[r] = src[r];
      for (index_t r = h; r < w; ++r) d[r] = T(0);
    }
  } else {
    // Each of the h rows is contiguous in k (A as stored, or B^T): stream the rows side by side,
    // which reads h sequential streams and writes dst in order.
    for (index_t k = 0; k < depth; ++k) {
      const T* src = X + k * cs;
      T* d = dst + k * w;
      for (index_t r = 0; r < h; ++r) d[r] = src[r * rs];
      for (index_t r = h; r < w; ++r) d[r] = T(0);
    }
  }
}

// The same for a full panel of compile-time width W: the compiler unrolls the row loop, which is
// where packing spends its time for the common case.
template <class T, int W>
void pack_full_panel(index_t depth, const T* X, index_t rs, index_t cs, T* dst) {
  if (rs == 1) {
    for (index_t k = 0; k < depth; ++k) {
      const T* src = X + k * cs;
      T* d = dst + k * W;
      for (int r = 0; r < W; ++r) d[r] = src[r];
    }
  } else {
    for (index_t k = 0; k < depth; ++k) {
      const T* src = X + k * cs;
      T* d = dst + k * W;
      for (int r = 0; r < W; ++r) d[r] = src[r * rs];
    }
  }
}

}  // namespace

template <class T>
void pack_panels(index_t w, index_t rows, index_t depth, const T* X, index_t rs, index_t cs,
                 T* dst) {
  for (index_t r0 = 0; r0 < rows; r0 += w, dst += w * depth) {
    const index_t h = std::min(w, rows - r0);
    const T* src = X + r0 * rs;
    // Full panels of every width a kernel uses (MR and NR of the portable, AVX2 and AVX-512
    // tiles) take an unrolled path; partial panels and other widths the generic one.
    if (h != w) pack_one_panel(w, h, depth, src, rs, cs, dst);
    else if (w == 4) pack_full_panel<T, 4>(depth, src, rs, cs, dst);
    else if (w == 6) pack_full_panel<T, 6>(depth, src, rs, cs, dst);
    else if (w == 8) pack_full_panel<T, 8>(depth, src, rs, cs, dst);
    else if (w == 14) pack_full_panel<T, 14>(depth, src, rs, cs, dst);
    else if (w == 16) pack_full_panel<T, 16>(depth, src, rs, cs, dst);
    else if (w == 32) pack_full_panel<T, 32>(depth, src, rs, cs, dst);
    else pack_one_panel(w, h, depth, src, rs, cs, dst);
  }
}

template void pack_panels<float>(index_t, index_t, index_t, const float*, index_t, index_t, float*);
template void pack_panels<double>(index_t, index_t, index_t, const double*, index_t, index_t,
                                  double*);

}  // namespace gemm_detail
}  // namespace chainrule
