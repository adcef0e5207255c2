// A small persistent thread pool (see threads.hpp for the contract).
//
// A job is a task function and a count; workers and the caller take task indices from an atomic
// counter. Workers wait for the next job by spinning on the job generation for a short while, then
// on a condition variable. Only one job runs at a time; a caller that finds the pool busy runs its
// tasks inline. parallel_phases runs a sequence of phases as one job: each thread claims parts of
// the current phase and spins until the phase is complete.
#include "chainrule/threads.hpp"

#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CHAINRULE_PAUSE() _mm_pause()
#else
#define CHAINRULE_PAUSE() std::this_thread::yield()
#endif

namespace chainrule {

namespace {

int default_threads() {
  if (const char* env = std::getenv("CHAINRULE_NUM_THREADS")) {
    char* end = nullptr;
    const long v = std::strtol(env, &end, 10);
    if (end != env && *end == '\0' && v >= 1 && v <= kMaxThreads) return int(v);
  }
  const unsigned hw = std::thread::hardware_concurrency();
  return hw == 0 ? 1 : int(hw);
}

thread_local bool t_in_task = false;  // a task calling parallel_for runs it inline

class Pool {
 public:
  Pool() : threads_(default_threads()) {}
  ~Pool() { stop(); }

  int threads() const { return threads_.load(std::memory_order_relaxed); }
  void set_threads(int n) {
    std::lock_guard<std::mutex> busy(run_mutex_);  // not while a job runs
    threads_.store(n, std::memory_order_relaxed);
    if (int(workers_.size()) > n - 1) stop();  // shrink: restart with fewer on next use
  }

  void run(int n, const std::function<void(int)>& task) {
    const int want = std::min(threads(), n);
    std::unique_lock<std::mutex> busy(run_mutex_, std::try_to_lock);
    if (want <= 1 || t_in_task || !busy.owns_lock()) {
      for (int i = 0; i < n; ++i) task(i);
      return;
    }
    ensure_workers(want - 1);
    Job job(&task, n);
    job_.store(&job);  // seq_cst, like every access to job_ and inside_ below
    {
      std::lock_guard<std::mutex> lk(wake_mutex_);
      generation_.fetch_add(1, std::memory_order_release);
    }
    wake_.notify_all();
    work(job);
    while (job.pending.load(std::memory_order_acquire) != 0) CHAINRULE_PAUSE();
    // No worker may still hold a pointer to the job when it goes out of scope: withdraw it, then
    // wait for any worker between loading it and leaving work().
    job_.store(nullptr);
    while (inside_.load() != 0) CHAINRULE_PAUSE();
    if (job.error) std::rethrow_exception(job.error);
  }

 private:
  struct Job {
    Job(const std::function<void(int)>* t, int n) : task(t), count(n), pending(n) {}
    const std::function<void(int)>* task;
    const int count;
    std::atomic<int> next{0};
    std::atomic<int> pending;
    std::mutex error_mutex;
    std::exception_ptr error;
  };

  // Takes task indices until none are left; the first exception is kept, later tasks still run so
  // that pending reaches zero.
  static void work(Job& job) {
    t_in_task = true;
    for (;;) {
      const int i = job.next.fetch_add(1, std::memory_order_relaxed);
      if (i >= job.count) break;
      try {
        (*job.task)(i);
      } catch (...) {
        std::lock_guard<std::mutex> lk(job.error_mutex);
        if (!job.error) job.error = std::current_exception();
      }
      job.pending.fetch_sub(1, std::memory_order_acq_rel);
    }
    t_in_task = false;
  }

  // seen: the generation when the worker was created, before the job that needs it is published
  // (a worker that read it on starting could take that job's generation for an old one and sleep
  // through the job, which would then run on fewer threads).
  void worker_loop(std::uint64_t seen) {
    for (;;) {
      // Poll ~200 us for the next job before sleeping, yielding between polls rather than
      // spinning on PAUSE. mnist on 2 threads measured 585 steps/s with PAUSE and 984 with
      // yield (1 thread: 600) on the 2-vCPU KVM development machine; the likely cause is KVM's
      // pause-loop exiting, which deschedules a vCPU that loops on PAUSE.
      const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(200);
      bool got = false;
      while (!got) {
        for (int s = 0; s < 256 && !got; ++s) {
          got = generation_.load(std::memory_order_acquire) != seen || stopping_.load();
          if (!got) std::this_thread::yield();
        }
        if (!got && std::chrono::steady_clock::now() > until) {
          std::unique_lock<std::mutex> lk(wake_mutex_);
          wake_.wait(lk, [&] {
            return generation_.load(std::memory_order_acquire) != seen || stopping_.load();
          });
          got = true;
        }
      }
      if (stopping_.load()) return;
      seen = generation_.load(std::memory_order_acquire);
      inside_.fetch_add(1);
      if (Job* job = job_.load()) work(*job);
      inside_.fetch_sub(1);
    }
  }

  void ensure_workers(int n) {
    const std::uint64_t now = generation_.load(std::memory_order_acquire);
    while (int(workers_.size()) < n) workers_.emplace_back([this, now] { worker_loop(now); });
  }

  void stop() {
    {
      std::lock_guard<std::mutex> lk(wake_mutex_);
      stopping_.store(true);
    }
    wake_.notify_all();
    for (std::thread& t : workers_)
      if (t.joinable()) t.join();
    workers_.clear();
    stopping_.store(false);
  }

  std::atomic<int> threads_;
  std::vector<std::thread> workers_;
  std::mutex run_mutex_, wake_mutex_;
  std::condition_variable wake_;
  std::atomic<std::uint64_t> generation_{0};
  std::atomic<bool> stopping_{false};
  std::atomic<Job*> job_{nullptr};
  std::atomic<int> inside_{0};  // workers between loading job_ and leaving work()
};

// The pool lives on the heap and is never destroyed at exit (workers may still be spinning while
// static destructors run). After fork() the child's copy is abandoned, not destroyed: its threads
// do not exist there and its mutexes may be held.
std::atomic<Pool*> g_pool{nullptr};
std::once_flag g_atfork_once;

void reset_after_fork_in_child() { g_pool.store(nullptr); }

Pool& pool() {
  // Fast path first: libstdc++'s call_once sets thread-locals on every call, which cost about 7 %
  // of an xor training step (get_num_threads runs several times per step). The fork handler is
  // registered below, before the first pool exists, so the child always sees it.
  Pool* p = g_pool.load(std::memory_order_acquire);
  if (p) return *p;
  std::call_once(g_atfork_once,
                 [] { pthread_atfork(nullptr, nullptr, &reset_after_fork_in_child); });
  p = g_pool.load(std::memory_order_acquire);
  if (!p) {
    static std::mutex create;
    std::lock_guard<std::mutex> lk(create);
    p = g_pool.load(std::memory_order_acquire);
    if (!p) {
      p = new Pool();
      g_pool.store(p, std::memory_order_release);
    }
  }
  return *p;
}

}  // namespace

void parallel_phases(int phases, int parts, const std::function<void(int, int)>& task) {
  if (phases <= 0 || parts <= 0) return;
  // stamp[p]: the last phase whose part p has been claimed; done: tasks finished, all phases.
  struct alignas(64) Claim {
    std::atomic<int> phase{-1};
  };
  std::unique_ptr<Claim[]> stamp(new Claim[std::size_t(parts)]);
  alignas(64) std::atomic<long> done{0};
  std::atomic<bool> failed{false};
  const int threads = std::min(parts, get_num_threads());
  parallel_for(threads, [&](int r) {
    const int home = int(long(r) * parts / threads);
    for (int k = 0; k < phases; ++k) {
      // Wait until phase k - 1 is complete (then every part of phase k is unclaimed or taken).
      // Spin a few hundred us (phases take microseconds), then yield too: with more threads
      // than free cores the part we wait for may need this core.
      const long need = long(k) * parts;
      long d = done.load(std::memory_order_acquire);
      for (unsigned spins = 0; d < need; ++spins) {
        if (failed.load(std::memory_order_relaxed)) return;
        if (spins < (1u << 14)) CHAINRULE_PAUSE();
        else std::this_thread::yield();
        d = done.load(std::memory_order_acquire);
      }
      if (d >= need + parts) {  // a late thread: phase k is over, catch up
        k = int(d / parts) - 1;
        continue;
      }
      for (int j = 0; j < parts; ++j) {
        const int p = (home + j) % parts;
        int expected = k - 1;
        if (stamp[std::size_t(p)].phase.load(std::memory_order_relaxed) != expected ||
            !stamp[std::size_t(p)].phase.compare_exchange_strong(expected, k,
                                                                 std::memory_order_acq_rel))
          continue;
        try {
          task(k, p);
        } catch (...) {
          failed.store(true, std::memory_order_relaxed);
          throw;
        }
        done.fetch_add(1, std::memory_order_acq_rel);
      }
    }
  });
}

int get_num_threads() { return pool().threads(); }

void set_num_threads(int n) {
  if (n < 1 || n > kMaxThreads)
    throw std::invalid_argument("the number of threads must be in [1, " +
                                std::to_string(kMaxThreads) + "], got " + std::to_string(n));
  pool().set_threads(n);
}

void parallel_for(int n, const std::function<void(int)>& task) {
  if (n <= 0) return;
  pool().run(n, task);
}

}  // namespace chainrule
