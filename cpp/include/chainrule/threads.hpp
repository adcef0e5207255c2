// The core's thread pool: persistent workers that spin briefly between jobs (an RNN issues a
// GEMM every few microseconds; waking a sleeping thread costs 20-40 us) and then sleep.
//
// Results never depend on the thread count: callers split work so that every output element is
// computed by exactly one task with the same arithmetic. A call made while the pool is busy (from
// another application thread, or from inside a task) runs its tasks inline, in order.
// Exceptions thrown by tasks are caught in the worker and the first one is rethrown in the caller.
// After fork(), the child gets a fresh pool (its workers are started on first use).
//
// parallel_phases is the other shape of parallelism: a sequence of short phases of parallel
// tasks run by one pool job, with no hand-off between phases.
#pragma once
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <functional>

namespace chainrule {

// a = max(a, v) from any thread: how tasks combine their maxima (exact in any order).
inline void atomic_max(std::atomic<int>& a, int v) {
  int cur = a.load(std::memory_order_relaxed);
  while (v > cur && !a.compare_exchange_weak(cur, v, std::memory_order_relaxed)) {
  }
}

// The most threads the core will start: more would exhaust the process's thread limit long
// before they could help (each needs a stack), and fail at the next parallel call instead.
constexpr int kMaxThreads = 1024;

// Threads the core may use, the caller included (>= 1). Default: the CHAINRULE_NUM_THREADS
// environment variable (1 .. kMaxThreads), else the hardware's concurrency.
int get_num_threads();
// Sets it (1 <= n <= kMaxThreads; std::invalid_argument otherwise). Takes effect for the next
// parallel call.
void set_num_threads(int n);

// Runs task(i) for i in [0, n) on up to get_num_threads() threads; returns when all are done.
void parallel_for(int n, const std::function<void(int)>& task);

// Runs task(phase, part) for every phase in [0, phases) and part in [0, parts): all parts of a
// phase after all parts of the one before, the parts of one phase concurrently on up to
// min(parts, get_num_threads()) threads (a recurrent layer's time loop: a phase per step, a few
// microseconds each). Threads wait for a phase's stragglers by spinning, never sleeping. Parts
// are claimed dynamically (each thread first tries the same ones every phase, for its caches),
// so a thread that starts late or is preempted only costs the time of the part it holds, and a
// busy pool (n = 1, inline) runs everything on the caller. Tasks must not depend on which thread
// runs them. After a task throws, the remaining tasks are skipped and the first exception is
// rethrown here.
void parallel_phases(int phases, int parts, const std::function<void(int, int)>& task);

// Runs run(begin, end) over [0, units) in at most max_pieces pieces (and no more than there are
// threads), each starting at a multiple of align units; in one call run(0, units) when that makes
// fewer than two pieces. For elementwise work whose result does not depend on the split.
template <class F>
void parallel_ranges(std::int64_t units, std::int64_t align, std::int64_t max_pieces,
                     const F& run) {
  const std::int64_t pieces =
      std::min<std::int64_t>({std::int64_t(get_num_threads()), max_pieces, units / align});
  if (pieces < 2) {
    if (units > 0) run(std::int64_t(0), units);
    return;
  }
  const std::int64_t per = ((units + pieces - 1) / pieces + align - 1) / align * align;
  parallel_for(int(pieces), [&](int t) {
    const std::int64_t begin = std::int64_t(t) * per, end = std::min(units, begin + per);
    if (begin < end) run(begin, end);
  });
}

}  // namespace chainrule
