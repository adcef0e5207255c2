// The core's thread pool: persistent workers that spin briefly between jobs (an RNN issues a
// GEMM every few microseconds; waking a sleeping thread costs 20-40 us) and then sleep.
//
// Results never depend on the thread count: callers split work so that every output element is
// computed by exactly one task with the same arithmetic. A call made while the pool is busy (from
// another application thread, or from inside a task) runs its tasks inline, in order.
// Exceptions thrown by tasks are caught in the worker and the first one is rethrown in the caller.
// After fork(), the child gets a fresh pool (its workers are started on first use).
#pragma once
#include <functional>

namespace chainrule {

// Threads the core may use, the caller included (>= 1). Default: the CHAINRULE_NUM_THREADS
// environment variable, else the hardware's concurrency.
int get_num_threads();
// Sets it (n >= 1; std::invalid_argument otherwise). Takes effect for the next parallel call.
void set_num_threads(int n);

// Runs task(i) for i in [0, n) on up to get_num_threads() threads; returns when all are done.
void parallel_for(int n, const std::function<void(int)>& task);

}  // namespace chainrule
