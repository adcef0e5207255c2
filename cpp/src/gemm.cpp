// GEMM: C = alpha op(A) op(B) + beta C on row-major operands, op(A) (M, K), op(B) (K, N), C (M, N).
// A BLIS-style blocked driver: five loops around a register-tile micro-kernel, operands packed
// into contiguous micro-panels (gemm_pack.cpp) sized by the run-time block table below. Large
// products are split over the thread pool; the same inputs and block sizes give the same bits for
// every thread count and every ISA path.
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <limits>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include "chainrule/gemm.hpp"
#include "chainrule/threads.hpp"
#include "gemm_internal.hpp"
#include "gemm_skinny.hpp"

namespace chainrule {

// ---------------------------------------------------------------------------------------------
// Block sizes, in elements, one table for float and double. What each block keeps in cache
// (the CI machines are Zen 4: 32 KiB L1d and 1 MiB L2 per core, 32 MiB L3 shared):
//   KC: depth of a packed panel, and how often the C tile is read and written back: once per KC
//       of depth. At KC = 1024 a kc x NR micro-panel of B (128 KiB float) is read from L2 rather
//       than L1, which the kernels absorb (one 128-byte B row per 16 or 28 FMAs), while each
//       halving of the C traffic measured faster at n = 2048 on 2 threads: KC 256 -> 512 -> 1024
//       gave 193 -> 200 -> 210 GFLOP/s float and 90 -> 99 -> 103 double; the training shapes of
//       bench/ (K <= 1024) stayed within the noise.
//   MC: rows of the packed A block, mc x kc = 1 MiB float / 2 MiB double: streamed through L2
//       (one MR x kc micro-panel at a time) while every micro-panel of the B panel passes it.
//   NC: columns of the packed B panel, kc x nc = 8 MiB float / 16 MiB double, in L3 while all
//       of A streams past it; NC 4096 measured no faster and doubles the per-thread buffer.
// Any positive sizes are correct (the driver handles partial blocks); tests shrink them to reach
// every edge with small matrices. The three values are separate atomics: a reader racing a writer
// can see a mix of old and new sizes, which is still a valid table.
namespace {
constexpr index_t kDefaultMC = 256;
constexpr index_t kDefaultKC = 1024;
constexpr index_t kDefaultNC = 2048;
std::atomic<index_t> g_mc{kDefaultMC};
std::atomic<index_t> g_kc{kDefaultKC};
std::atomic<index_t> g_nc{kDefaultNC};
}  // namespace

GemmBlocking gemm_get_blocking() {
  return GemmBlocking{g_mc.load(std::memory_order_relaxed), g_kc.load(std::memory_order_relaxed),
                      g_nc.load(std::memory_order_relaxed)};
}

void gemm_set_blocking(index_t mc, index_t kc, index_t nc) {
  if (mc < 0 || kc < 0 || nc < 0)
    throw std::invalid_argument("gemm block sizes must be positive (0 restores the default), got "
                                "mc=" + std::to_string(mc) + ", kc=" + std::to_string(kc) +
                                ", nc=" + std::to_string(nc));
  g_mc.store(mc > 0 ? mc : kDefaultMC, std::memory_order_relaxed);
  g_kc.store(kc > 0 ? kc : kDefaultKC, std::memory_order_relaxed);
  g_nc.store(nc > 0 ? nc : kDefaultNC, std::memory_order_relaxed);
}

namespace gemm_detail {

// ---------------------------------------------------------------------------------------------
// Portable micro-kernels. The MR x NR accumulator tile is a local array that gcc keeps in vector
// registers: the j loop (NR contiguous values of the packed B row) vectorises, the i loop unrolls
// into MR broadcasts of the packed A column. No intrinsics, so the same source serves every ISA
// the compiler targets. At the x86-64 baseline (SSE2, 16 xmm registers) float 4x8 and double 4x4
// hold 8 accumulator vectors, leaving room for the B row and the broadcasts; 8x8 / 8x4 tiles
// spill accumulators to the stack and measured no faster (about 33 GFLOP/s float and 15 double on
// Zen 5, n = 512), while a 4-row tile wastes less on the small batches of training.
namespace {

template <class T, int MR, int NR>
inline void ukernel_generic(index_t kc, T alpha, const T* __restrict a, const T* __restrict b,
                            T beta, T* __restrict c, index_t ldc, index_t m, index_t n) {
  // acc (MR, NR) = sum over k of a[:, k] b[k, :], KC rank-1 updates of the register tile.
  T acc[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) acc[i][j] = T(0);
  for (index_t k = 0; k < kc; ++k, a += MR, b += NR) {
    T bk[NR];
    for (int j = 0; j < NR; ++j) bk[j] = b[j];
    for (int i = 0; i < MR; ++i) {
      const T ai = a[i];
      // Fused, as the ISA kernels' FMA instructions: the same bits on every path. Without FMA
      // hardware (the x86-64 baseline) this is a library call: that path is a slow fallback.
      for (int j = 0; j < NR; ++j) acc[i][j] = fused(ai, bk[j], acc[i][j]);
    }
  }
  // C = alpha acc + beta C; beta == 0 must not read C (it may hold NaN or garbage).
  if (m == MR && n == NR) {
    if (beta == T(0)) {
      for (int i = 0; i < MR; ++i)
        for (int j = 0; j < NR; ++j) c[i * ldc + j] = alpha * acc[i][j];
    } else {
      for (int i = 0; i < MR; ++i)
        for (int j = 0; j < NR; ++j) c[i * ldc + j] = alpha * acc[i][j] + beta * c[i * ldc + j];
    }
  } else {
    for (index_t i = 0; i < m; ++i)
      for (index_t j = 0; j < n; ++j)
        c[i * ldc + j] =
            beta == T(0) ? alpha * acc[i][j] : alpha * acc[i][j] + beta * c[i * ldc + j];
  }
}

}  // namespace

void ukernel_generic_f32_4x8(index_t kc, float alpha, const float* a, const float* b, float beta,
                             float* c, index_t ldc, index_t m, index_t n) {
  ukernel_generic<float, 4, 8>(kc, alpha, a, b, beta, c, ldc, m, n);
}

void ukernel_generic_f64_4x4(index_t kc, double alpha, const double* a, const double* b,
                             double beta, double* c, index_t ldc, index_t m, index_t n) {
  ukernel_generic<double, 4, 4>(kc, alpha, a, b, beta, c, ldc, m, n);
}

// ---------------------------------------------------------------------------------------------
// Kernel choice: one table per instruction set, picked once from the CPU (or the environment
// variable CHAINRULE_ISA = baseline | avx2 | avx512) and switchable at run time so that tests can
// run every path the machine supports.
namespace {

// Each path has a main kernel and a "short" one with the same NR (so the same packed B) and
// fewer rows, used when M is divided better by its MR (a batch of 32 rows: 4 x 8 rather than
// 3 x 14). Every kernel computes each element the same way, so the choice never changes a bit.
struct KernelTable {
  const char* isa;
  MicroKernel<float> f32, f32_short;
  MicroKernel<double> f64, f64_short;
};

constexpr KernelTable kBaseline{
    "baseline",
    {4, 8, &ukernel_generic_f32_4x8, &pack_panels<float>, "generic_f32_4x8"},
    {4, 8, &ukernel_generic_f32_4x8, &pack_panels<float>, "generic_f32_4x8"},
    {4, 4, &ukernel_generic_f64_4x4, &pack_panels<double>, "generic_f64_4x4"},
    {4, 4, &ukernel_generic_f64_4x4, &pack_panels<double>, "generic_f64_4x4"}};
#if CHAINRULE_X86_KERNELS
constexpr KernelTable kAvx2{
    "avx2",
    {6, 16, &isa_v3::ukernel_avx2_f32_6x16, &isa_v3::pack_panels_f32, "avx2_f32_6x16"},
    {6, 16, &isa_v3::ukernel_avx2_f32_6x16, &isa_v3::pack_panels_f32, "avx2_f32_6x16"},
    {6, 8, &isa_v3::ukernel_avx2_f64_6x8, &isa_v3::pack_panels_f64, "avx2_f64_6x8"},
    {6, 8, &isa_v3::ukernel_avx2_f64_6x8, &isa_v3::pack_panels_f64, "avx2_f64_6x8"}};
constexpr KernelTable kAvx512{
    "avx512",
    {14, 32, &isa_v4::ukernel_avx512_f32_14x32, &isa_v4::pack_panels_f32, "avx512_f32_14x32"},
    {8, 32, &isa_v4::ukernel_avx512_f32_8x32, &isa_v4::pack_panels_f32, "avx512_f32_8x32",
     &isa_v4::ukernel_avx512_f32_8x32_sa, &isa_v4::ukernel_avx512_f32_1x32_sa},
    {14, 16, &isa_v4::ukernel_avx512_f64_14x16, &isa_v4::pack_panels_f64, "avx512_f64_14x16"},
    {8, 16, &isa_v4::ukernel_avx512_f64_8x16, &isa_v4::pack_panels_f64, "avx512_f64_8x16",
     &isa_v4::ukernel_avx512_f64_8x16_sa, &isa_v4::ukernel_avx512_f64_1x16_sa}};
constexpr const KernelTable* kTables[] = {&kBaseline, &kAvx2, &kAvx512};
#else
constexpr const KernelTable* kTables[] = {&kBaseline};
#endif

bool cpu_supports(const KernelTable* t) {
#if CHAINRULE_X86_KERNELS
  __builtin_cpu_init();
  if (t == &kAvx2) return __builtin_cpu_supports("x86-64-v3");
  if (t == &kAvx512) return __builtin_cpu_supports("x86-64-v4");
#endif
  return t == &kBaseline;
}

const KernelTable* find_table(const std::string& name) {
  for (const KernelTable* t : kTables)
    if (name == t->isa) return t;
  return nullptr;
}

const KernelTable* best_table() {
  const KernelTable* best = &kBaseline;
  for (const KernelTable* t : kTables)
    if (cpu_supports(t)) best = t;  // the tables are listed from oldest to newest
  if (const char* env = std::getenv("CHAINRULE_ISA")) {
    const KernelTable* forced = find_table(env);
    // An unknown or unsupported name is ignored: the best path is always correct.
    if (forced && cpu_supports(forced)) best = forced;
  }
  return best;
}

std::atomic<const KernelTable*> g_table{nullptr};

const KernelTable& kernel_table() {
  const KernelTable* t = g_table.load(std::memory_order_acquire);
  if (!t) {
    t = best_table();
    g_table.store(t, std::memory_order_release);
  }
  return *t;
}

// The main kernel of the current path, or its short twin when that computes fewer padded rows
// for M (ties go to the main kernel, whose larger tile reuses each B load more).
template <class T>
const MicroKernel<T>& pick(const MicroKernel<T>& main, const MicroKernel<T>& shorter, index_t M) {
  auto padded = [M](index_t mr) { return (M + mr - 1) / mr * mr; };
  return padded(shorter.mr) < padded(main.mr) ? shorter : main;
}

template <class T>
const MicroKernel<T>& main_kernel();
template <>
const MicroKernel<float>& main_kernel<float>() { return kernel_table().f32; }
template <>
const MicroKernel<double>& main_kernel<double>() { return kernel_table().f64; }

template <class T>
const MicroKernel<T>& select_kernel(index_t M);
template <>
const MicroKernel<float>& select_kernel<float>(index_t M) {
  const KernelTable& t = kernel_table();
  return pick(t.f32, t.f32_short, M);
}
template <>
const MicroKernel<double>& select_kernel<double>(index_t M) {
  const KernelTable& t = kernel_table();
  return pick(t.f64, t.f64_short, M);
}

// Per-thread packing space: grown on demand, kept for the thread's next call, never shared, so
// concurrent gemm calls from several threads are safe and a steady loop allocates nothing.
// Packing overwrites every element it uses (padding included), so no zero-fill is needed.
template <class T>
class PackSpace {
 public:
  PackSpace() = default;
  PackSpace(const PackSpace&) = delete;
  PackSpace& operator=(const PackSpace&) = delete;
  ~PackSpace() {
    detail::asan_unpoison(p_, allocated_bytes());
    std::free(p_);
  }

  T* get(index_t n) {
    if (n > cap_) {
      detail::asan_unpoison(p_, allocated_bytes());
      std::free(p_);
      p_ = nullptr;
      cap_ = 0;
      const std::size_t bytes = (std::size_t(n) * sizeof(T) + 63) / 64 * 64;
      p_ = static_cast<T*>(std::aligned_alloc(64, bytes));
      if (!p_) throw std::bad_alloc();
      cap_ = n;
    }
    // Under ASan only the n elements asked for are addressable (tensor.hpp).
    detail::asan_unpoison(p_, std::size_t(n) * sizeof(T));
    detail::asan_poison(p_ + n, allocated_bytes() - std::size_t(n) * sizeof(T));
    return p_;
  }

 private:
  std::size_t allocated_bytes() const { return (std::size_t(cap_) * sizeof(T) + 63) / 64 * 64; }
  T* p_ = nullptr;
  index_t cap_ = 0;
};

template <class T>
PackSpace<T>& pack_space() {
  thread_local PackSpace<T> space;
  return space;
}

// The B panel that the threads of one tall product share (gemm_shared_b): the caller's, apart
// from its pack_space, which the caller uses for its own A blocks while the workers read this.
template <class T>
PackSpace<T>& shared_b_space() {
  thread_local PackSpace<T> space;
  return space;
}

inline index_t round_up(index_t x, index_t m) { return (x + m - 1) / m * m; }

// Argument check shared by gemm and gemm_ref: negative sizes, or leading dimensions shorter than
// a row, are caller bugs that would otherwise read or write out of bounds.
void check_args(bool ta, bool tb, index_t M, index_t N, index_t K, index_t lda, index_t ldb,
                index_t ldc) {
  auto fail = [](const std::string& what) { throw std::invalid_argument("gemm: " + what); };
  if (M < 0 || N < 0 || K < 0)
    fail("sizes must be >= 0, got M=" + std::to_string(M) + ", N=" + std::to_string(N) +
         ", K=" + std::to_string(K));
  if (M == 0 || N == 0) return;  // nothing is read or written
  if (ldc < N) fail("ldc=" + std::to_string(ldc) + " is smaller than N=" + std::to_string(N));
  if (K == 0) return;  // A and B are not read
  const index_t a_cols = ta ? M : K, b_cols = tb ? K : N;
  if (lda < a_cols)
    fail("lda=" + std::to_string(lda) + " is smaller than the " + std::to_string(a_cols) +
         " columns of A as stored");
  if (ldb < b_cols)
    fail("ldb=" + std::to_string(ldb) + " is smaller than the " + std::to_string(b_cols) +
         " columns of B as stored");
}

// C (M, N) = beta C, without reading C when beta == 0: the whole GEMM when K == 0.
template <class T>
void scale_c(index_t M, index_t N, T beta, T* C, index_t ldc) {
  for (index_t i = 0; i < M; ++i) {
    T* c = C + i * ldc;
    if (beta == T(0)) std::fill(c, c + N, T(0));
    else
      for (index_t j = 0; j < N; ++j) c[j] *= beta;
  }
}

template <class T>
void gemm_blocked(const MicroKernel<T>& uk, const GemmBlocking& blk, bool ta, bool tb, index_t M,
                  index_t N, index_t K, T alpha, const T* A, index_t lda, const T* B, index_t ldb,
                  T beta, T* C, index_t ldc) {
  const index_t MR = uk.mr, NR = uk.nr;
  const index_t mc = std::min(blk.mc, M), kc = std::min(blk.kc, K), nc = std::min(blk.nc, N);
  // Packed A block (L2) then packed B panel (L3), in one per-thread allocation; the B part starts
  // on a 64-byte boundary.
  const index_t a_size = round_up(checked_mul(round_up(mc, MR), kc), index_t(64 / sizeof(T)));
  const index_t b_size = checked_mul(round_up(nc, NR), kc);
  T* const Ap = pack_space<T>().get(a_size + b_size);
  T* const Bp = Ap + a_size;
  // Addresses of op(A)(i, k) and op(B)(k, j) in the caller's storage.
  auto a_at = [&](index_t i, index_t k) { return ta ? A + k * lda + i : A + i * lda + k; };
  auto b_at = [&](index_t k, index_t j) { return tb ? B + j * ldb + k : B + k * ldb + j; };

  // loop 5: jc over N in steps of NC (one packed B panel, kept in L3)
  for (index_t jc = 0; jc < N; jc += nc) {
    const index_t nb = std::min(nc, N - jc);
    // loop 4: pc over K in steps of KC (pack op(B)(pc:pc+kb, jc:jc+nb) into NR-wide panels)
    for (index_t pc = 0; pc < K; pc += kc) {
      const index_t kb = std::min(kc, K - pc);
      pack_b(uk.pack, NR, tb, kb, nb, b_at(pc, jc), ldb, Bp);
      // The first depth block applies the caller's beta; later ones add onto the partial sums.
      const T beta_k = pc == 0 ? beta : T(1);
      // loop 3: ic over M in steps of MC (pack op(A)(ic:ic+mb, pc:pc+kb) into MR-tall panels, L2)
      for (index_t ic = 0; ic < M; ic += mc) {
        const index_t mb = std::min(mc, M - ic);
        pack_a(uk.pack, MR, ta, mb, kb, a_at(ic, pc), lda, Ap);
        // loop 2: jr over the panel's columns in steps of NR (one B micro-panel, in L1)
        for (index_t jr = 0; jr < nb; jr += NR) {
          const T* b = Bp + jr * kb;
          const index_t n = std::min(NR, nb - jr);
          // loop 1: ir over the block's rows in steps of MR (one A micro-panel)
          for (index_t ir = 0; ir < mb; ir += MR) {
            const index_t m = std::min(MR, mb - ir);
            uk.run(kb, alpha, Ap + ir * kb, b, beta_k, C + (ic + ir) * ldc + jc + jr, ldc, m, n);
          }
        }
      }
    }
  }
}

// A tall product in `parts` row slabs that share one packed B panel (BLIS's ic-loop
// parallelism): for each (jc, pc) block, one phase in which each part packs a slice of the
// panel's NR-wide micro-panels, then one in which each multiplies its own rows of A (whole MR
// tiles) by the whole panel; parallel_phases runs the parts on the pool's threads. Splitting M
// with a panel per thread (gemm_blocked on each slab) packs all of op(B) once per thread and
// keeps one 8 MiB (float) panel per thread in L3. Each element of C is computed exactly as
// gemm_blocked computes it: the same kernel, depth blocks and beta_k.
template <class T>
void gemm_shared_b(const MicroKernel<T>& uk, const GemmBlocking& blk, int parts, bool ta, bool tb,
                   index_t M, index_t N, index_t K, T alpha, const T* A, index_t lda, const T* B,
                   index_t ldb, T beta, T* C, index_t ldc) {
  const index_t MR = uk.mr, NR = uk.nr;
  const index_t mc = std::min(blk.mc, M), kc = std::min(blk.kc, K), nc = std::min(blk.nc, N);
  const index_t tiles = (M + MR - 1) / MR;
  const index_t rows_per = (tiles + parts - 1) / parts * MR;
  parts = int((M + rows_per - 1) / rows_per);
  T* const Bp = shared_b_space<T>().get(checked_mul(round_up(nc, NR), kc));
  auto a_at = [&](index_t i, index_t k) { return ta ? A + k * lda + i : A + i * lda + k; };
  auto b_at = [&](index_t k, index_t j) { return tb ? B + j * ldb + k : B + k * ldb + j; };
  const index_t k_blocks = (K + kc - 1) / kc, j_blocks = (N + nc - 1) / nc;
  const index_t phases = 2 * j_blocks * k_blocks;
  if (phases > index_t(std::numeric_limits<int>::max()))
    throw std::length_error("gemm: too many blocks for the threaded driver");
  parallel_phases(int(phases), parts, [&](int phase, int part) {
    const index_t block = phase / 2;
    const index_t jc = block / k_blocks * nc, pc = block % k_blocks * kc;
    const index_t nb = std::min(nc, N - jc), kb = std::min(kc, K - pc);
    if (phase % 2 == 0) {  // pack this part's slice of the block's micro-panels
      const index_t panels = (nb + NR - 1) / NR;
      const index_t per = (panels + parts - 1) / parts * NR;
      const index_t j0 = part * per, j1 = std::min(nb, j0 + per);
      if (j0 < j1) pack_b(uk.pack, NR, tb, kb, j1 - j0, b_at(pc, jc + j0), ldb, Bp + j0 * kb);
      return;
    }
    const index_t m0 = part * rows_per, m1 = std::min(M, m0 + rows_per);
    const T beta_k = pc == 0 ? beta : T(1);
    T* const Ap = pack_space<T>().get(checked_mul(round_up(std::min(mc, m1 - m0), MR), kb));
    for (index_t ic = m0; ic < m1; ic += mc) {
      const index_t mb = std::min(mc, m1 - ic);
      pack_a(uk.pack, MR, ta, mb, kb, a_at(ic, pc), lda, Ap);
      for (index_t jr = 0; jr < nb; jr += NR) {
        const T* b = Bp + jr * kb;
        const index_t n = std::min(NR, nb - jr);
        for (index_t ir = 0; ir < mb; ir += MR)
          uk.run(kb, alpha, Ap + ir * kb, b, beta_k, C + (ic + ir) * ldc + jc + jr, ldc,
                 std::min(MR, mb - ir), n);
      }
    }
  });
}

}  // namespace
}  // namespace gemm_detail

template <class T>
void gemm_ref(bool ta, bool tb, index_t M, index_t N, index_t K, T alpha, const T* A, index_t lda,
              const T* B, index_t ldb, T beta, T* C, index_t ldc) {
  gemm_detail::check_args(ta, tb, M, N, K, lda, ldb, ldc);
  if (alpha == T(0)) {  // the same contract: A and B not read
    gemm_detail::scale_c(M, N, beta, C, ldc);
    return;
  }
  for (index_t i = 0; i < M; ++i)
    for (index_t j = 0; j < N; ++j) {
      T acc = 0;
      for (index_t k = 0; k < K; ++k)
        acc += (ta ? A[k * lda + i] : A[i * lda + k]) * (tb ? B[j * ldb + k] : B[k * ldb + j]);
      C[i * ldc + j] = beta == T(0) ? alpha * acc : alpha * acc + beta * C[i * ldc + j];
    }
}

template <class T>
void gemm(bool ta, bool tb, index_t M, index_t N, index_t K, T alpha, const T* A, index_t lda,
          const T* B, index_t ldb, T beta, T* C, index_t ldc) {
  gemm_detail::check_args(ta, tb, M, N, K, lda, ldb, ldc);
  if (M == 0 || N == 0) return;
  if (K == 0 || alpha == T(0)) {  // BLAS: no product to form, A and B not read
    gemm_detail::scale_c(M, N, beta, C, ldc);
    return;
  }
  // M or N of a few: vectors along the long side, no padded tile (gemm_skinny.cpp), same bits.
  if (gemm_detail::gemm_skinny(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc)) return;
  const gemm_detail::MicroKernel<T>& uk = gemm_detail::select_kernel<T>(M);
  const GemmBlocking blk = gemm_get_blocking();
  // Threads split C into slabs of whole register tiles, along N for wide products and along M
  // for tall ones, each slab an independent blocked GEMM; large tall ones share the packed B
  // panels instead (gemm_shared_b). Every element still accumulates over k in the same depth
  // blocks, so the result is the same bits for any thread count. Below ~64^3 multiply-adds a
  // hand-off costs more than it saves.
  const int threads = get_num_threads();
  const double work = double(M) * double(N) * double(K);
  if (threads > 1 && work >= 262144.0 && (M >= 2 * uk.mr || N >= 2 * uk.nr)) {
    // Tall products share the packed B panels from 2^22 multiply-adds (n ~ 160); below, the
    // extra phase and the small slabs cost more than one pass of packing B per thread (n = 64
    // measured 0.93x NumPy shared against 1.6x with a slab per thread).
    if (N / uk.nr < M / uk.mr && work >= 4194304.0) {
      const index_t tiles = (M + uk.mr - 1) / uk.mr;
      // Four row slabs per thread, claimed as threads come free: a thread slowed by another
      // process (a shared machine) hands its remaining slabs to the others.
      const int parts = int(std::min<index_t>(index_t(4) * threads, tiles));
      gemm_detail::gemm_shared_b(uk, blk, parts, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C,
                                 ldc);
      return;
    }
    const bool split_n = N / uk.nr >= M / uk.mr;
    const index_t tile = split_n ? uk.nr : uk.mr, total = split_n ? N : M;
    const index_t tiles = (total + tile - 1) / tile;
    const index_t parts = std::min<index_t>(threads, tiles);
    const index_t per = (tiles + parts - 1) / parts * tile;
    const int tasks = int((total + per - 1) / per);
    parallel_for(tasks, [&](int t) {
      const index_t lo = index_t(t) * per, len = std::min(per, total - lo);
      if (split_n)
        gemm_detail::gemm_blocked(uk, blk, ta, tb, M, len, K, alpha, A, lda,
                                  tb ? B + lo * ldb : B + lo, ldb, beta, C + lo, ldc);
      else
        gemm_detail::gemm_blocked(uk, blk, ta, tb, len, N, K, alpha, ta ? A + lo : A + lo * lda,
                                  lda, B, ldb, beta, C + lo * ldc, ldc);
    });
    return;
  }
  gemm_detail::gemm_blocked(uk, blk, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

// ---------------------------------------------------------------------------------------------
// Pre-packed B. The panels are stored block after block in the driver's order (jc blocks of nc
// columns, each as pc blocks of kc rows), nc rounded down to a multiple of NR so that micro-panel
// boundaries fall on multiples of NR across the whole matrix and threads can split N there.
namespace gemm_detail {
namespace {

template <class T>
index_t prepacked_nc(const MicroKernel<T>& uk, const GemmBlocking& blk) {
  return std::max(uk.nr, blk.nc / uk.nr * uk.nr);
}

// Rows [m0, m1) and micro-panel columns [n0, n1) (multiples of NR, n1 may be N) of the product.
template <class T>
void gemm_prepacked_range(const MicroKernel<T>& uk, index_t mc, bool ta, index_t m0, index_t m1,
                          index_t n0, index_t n1, index_t K, index_t N, index_t kc, index_t nc,
                          T alpha, const T* A, index_t lda, const T* packed, T beta, T* C,
                          index_t ldc) {
  const index_t MR = uk.mr, NR = uk.nr;
  const index_t M = m1 - m0;
  mc = std::min(mc, M);
  // Small blocks of op(A) (up to 64 KiB: a minibatch's rows, or one time step's h in BPTT) are
  // read in place by the strided kernel where the path has one: packing them would cost as much
  // as the few B micro-panels each is multiplied by. Only a last partial tile is packed.
  const bool in_place =
      uk.run_sa && checked_mul(mc, std::min(kc, K)) * index_t(sizeof(T)) <= 65536;
  const index_t ars = ta ? 1 : lda, acs = ta ? lda : 1;
  T* const Ap = pack_space<T>().get(checked_mul(in_place ? MR : round_up(mc, MR), std::min(kc, K)));
  const T* block = packed;
  // loop 5: jc over N in steps of NC
  for (index_t jc = 0; jc < N; jc += nc) {
    const index_t nb = std::min(nc, N - jc);
    // loop 4: pc over K in steps of KC (the B panel is already packed)
    for (index_t pc = 0; pc < K; pc += kc) {
      const index_t kb = std::min(kc, K - pc);
      const T beta_k = pc == 0 ? beta : T(1);
      const index_t j_lo = std::max(n0, jc), j_hi = std::min(n1, jc + nb);
      if (j_lo < j_hi) {
        // loop 3: ic over this range's rows in steps of MC
        for (index_t ic = m0; ic < m1; ic += mc) {
          const index_t mb = std::min(mc, m1 - ic);
          auto a_at = [&](index_t i) { return A + i * ars + pc * acs; };
          const index_t full = in_place ? mb / MR * MR : 0;  // rows read in place
          // A last 1-3 rows read in place one at a time too, where the path has a one-row
          // kernel: padded to MR rows they cost MR rows of multiply-adds (a batch of one in
          // the recurrent time loop: 8 times the work). Same arithmetic per element.
          const bool rows_in_place = in_place && uk.run_row && mb - full <= 3;
          if (full < mb && !rows_in_place)
            pack_a(uk.pack, MR, ta, mb - full, kb, a_at(ic + full), lda, Ap);
          // loop 2: jr over this range's micro-panels; loop 1: ir over MR rows
          for (index_t jr = j_lo - jc; jr < j_hi - jc; jr += NR) {
            const index_t n = std::min(NR, nb - jr);
            for (index_t ir = 0; ir < mb; ir += MR) {
              T* const c = C + (ic + ir) * ldc + jc + jr;
              if (ir < full)
                uk.run_sa(kb, alpha, a_at(ic + ir), ars, acs, block + jr * kb, beta_k, c, ldc,
                          MR, n);
              else if (rows_in_place)
                for (index_t i = ir; i < mb; ++i)
                  uk.run_row(kb, alpha, a_at(ic + i), ars, acs, block + jr * kb, beta_k,
                             c + (i - ir) * ldc, ldc, 1, n);
              else
                uk.run(kb, alpha, Ap + (ir - full) * kb, block + jr * kb, beta_k, c, ldc,
                       std::min(MR, mb - ir), n);
            }
          }
        }
      }
      block += round_up(nb, NR) * kb;
    }
  }
}

}  // namespace
}  // namespace gemm_detail

template <class T>
void PackedB<T>::pack(bool trans_b, index_t K, index_t N, const T* B, index_t ldb) {
  using namespace gemm_detail;
  check_args(false, trans_b, 1, N, K, K, ldb, N);
  const MicroKernel<T>& uk = main_kernel<T>();  // the packed layout depends on NR alone
  const GemmBlocking blk = gemm_get_blocking();
  K_ = K;
  N_ = N;
  kc_ = std::max<index_t>(1, std::min(blk.kc, K));
  nc_ = prepacked_nc(uk, blk);
  kernel_ = reinterpret_cast<const void*>(uk.run);
  trans_ = trans_b;
  src_ = B;
  ld_ = ldb;
  // nc_ is a multiple of NR, so only the last jc block has a partial micro-panel to pad.
  data_.resize_for_overwrite(checked_mul(round_up(N, uk.nr), K));
  T* dst = data_.data();
  for (index_t jc = 0; jc < N; jc += nc_) {
    const index_t nb = std::min(nc_, N - jc);
    for (index_t pc = 0; pc < K; pc += kc_) {
      const index_t kb = std::min(kc_, K - pc);
      pack_b(uk.pack, uk.nr, trans_b, kb, nb, trans_b ? B + jc * ldb + pc : B + pc * ldb + jc,
             ldb, dst);
      dst += round_up(nb, uk.nr) * kb;
    }
  }
}

template <class T>
void gemm_prepacked(bool ta, index_t M, T alpha, const T* A, index_t lda, const PackedB<T>& Bp,
                    T beta, T* C, index_t ldc) {
  using namespace gemm_detail;
  const index_t N = Bp.N_, K = Bp.K_;
  check_args(ta, false, M, N, K, lda, N, ldc);
  if (M == 0 || N == 0) return;
  if (K == 0 || alpha == T(0)) {
    scale_c(M, N, beta, C, ldc);
    return;
  }
  const MicroKernel<T>& main = main_kernel<T>();
  const MicroKernel<T>& uk = select_kernel<T>(M);
  const GemmBlocking blk = gemm_get_blocking();
  if (reinterpret_cast<const void*>(main.run) != Bp.kernel_ ||
      std::max<index_t>(1, std::min(blk.kc, K)) != Bp.kc_ || prepacked_nc(uk, blk) != Bp.nc_) {
    gemm<T>(ta, Bp.trans_, M, N, K, alpha, A, lda, Bp.src_, Bp.ld_, beta, C, ldc);
    return;
  }
  const T* packed = Bp.data_.data();
  // Threads split along N at micro-panel boundaries when there are enough panels, else along M;
  // either way every element keeps its k order (same bits for any thread count).
  const int threads = get_num_threads();
  const double work = double(M) * double(N) * double(K);
  const index_t n_panels = (N + uk.nr - 1) / uk.nr, m_tiles = (M + uk.mr - 1) / uk.mr;
  if (threads > 1 && work >= 262144.0 && (n_panels >= 2 || m_tiles >= 2)) {
    const bool split_n = n_panels >= 2;
    const index_t units = split_n ? n_panels : m_tiles;
    const index_t parts = std::min<index_t>(threads, units);
    const index_t per = (units + parts - 1) / parts;
    const int tasks = int((units + per - 1) / per);
    parallel_for(tasks, [&](int t) {
      const index_t u0 = index_t(t) * per, u1 = std::min(units, u0 + per);
      if (split_n)
        gemm_prepacked_range(uk, blk.mc, ta, 0, M, u0 * uk.nr, std::min(N, u1 * uk.nr), K, N,
                             Bp.kc_, Bp.nc_, alpha, A, lda, packed, beta, C, ldc);
      else
        gemm_prepacked_range(uk, blk.mc, ta, u0 * uk.mr, std::min(M, u1 * uk.mr), 0, N, K, N,
                             Bp.kc_, Bp.nc_, alpha, A, lda, packed, beta, C, ldc);
    });
    return;
  }
  gemm_prepacked_range(uk, blk.mc, ta, 0, M, 0, N, K, N, Bp.kc_, Bp.nc_, alpha, A, lda, packed,
                       beta, C, ldc);
}

template class PackedB<float>;
template class PackedB<double>;
template void gemm_prepacked<float>(bool, index_t, float, const float*, index_t,
                                    const PackedB<float>&, float, float*, index_t);
template void gemm_prepacked<double>(bool, index_t, double, const double*, index_t,
                                     const PackedB<double>&, double, double*, index_t);

const char* gemm_isa() { return gemm_detail::kernel_table().isa; }

int gemm_isa_level() {
  const gemm_detail::KernelTable* t = &gemm_detail::kernel_table();
#if CHAINRULE_X86_KERNELS
  if (t == &gemm_detail::kAvx512) return 2;
  if (t == &gemm_detail::kAvx2) return 1;
#endif
  (void)t;
  return 0;
}

std::vector<std::string> gemm_supported_isas() {
  std::vector<std::string> out;
  for (const auto* t : gemm_detail::kTables)
    if (gemm_detail::cpu_supports(t)) out.push_back(t->isa);
  return out;
}

void gemm_set_isa(const std::string& name) {
  const auto* t = gemm_detail::find_table(name);
  if (!t || !gemm_detail::cpu_supports(t)) {
    std::string ok;
    for (const std::string& s : gemm_supported_isas()) ok += (ok.empty() ? "" : ", ") + s;
    throw std::invalid_argument("ISA path '" + name + "' is not available on this CPU; "
                                "supported: " + ok);
  }
  gemm_detail::g_table.store(t, std::memory_order_release);
}

template void gemm<float>(bool, bool, index_t, index_t, index_t, float, const float*, index_t,
                          const float*, index_t, float, float*, index_t);
template void gemm<double>(bool, bool, index_t, index_t, index_t, double, const double*, index_t,
                           const double*, index_t, double, double*, index_t);
template void gemm_ref<float>(bool, bool, index_t, index_t, index_t, float, const float*, index_t,
                              const float*, index_t, float, float*, index_t);
template void gemm_ref<double>(bool, bool, index_t, index_t, index_t, double, const double*,
                               index_t, const double*, index_t, double, double*, index_t);

}  // namespace chainrule
