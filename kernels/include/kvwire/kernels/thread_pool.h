// kvwire/kernels/thread_pool.h — a small fork-join pool for the CPU kernels.
//
// ParallelFor splits [0, n) into contiguous chunks that the calling thread and the workers claim
// from a shared counter, and returns when all are done. Claiming (rather than a fixed split)
// keeps a pass fast when another process preempts one of our threads on a busy machine: the
// others take over its share. Idle workers spin briefly before sleeping because decode issues
// hundreds of small jobs per token.
// Thread-safety: one ParallelFor at a time per pool (the runtime owns one pool per runner); the
// body must be safe to run concurrently on disjoint ranges. Errors: none.
#ifndef KVWIRE_KERNELS_THREAD_POOL_H_
#define KVWIRE_KERNELS_THREAD_POOL_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace kvwire::kernels {

class ThreadPool {
 public:
  // n_threads counts the calling thread: ThreadPool(2) starts one worker. 0 means
  // std::thread::hardware_concurrency().
  explicit ThreadPool(int n_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return static_cast<int>(workers_.size()) + 1; }
  // body(begin, end) over disjoint chunks covering [0, n), each of >= min_chunk indices (except
  // when n < min_chunk), a few per thread.
  void ParallelFor(int64_t n, int64_t min_chunk,
                   const std::function<void(int64_t begin, int64_t end)>& body);

 private:
  void WorkerLoop();
  void RunChunks();

  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable start_cv_;
  std::condition_variable done_cv_;
  // The current job; written under mu_ before generation_ is bumped.
  const std::function<void(int64_t, int64_t)>* body_ = nullptr;
  int64_t n_ = 0;
  int64_t chunk_ = 0;
  int64_t n_chunks_ = 0;
  std::atomic<int64_t> next_chunk_{0};
  std::atomic<int64_t> generation_{0};
  bool open_ = false;  // workers may still join the current job
  int active_ = 0;     // workers inside the current job
  bool stop_ = false;
};

// Runs body over [0, n) on `pool`, or inline when pool is null.
void ParallelFor(ThreadPool* pool, int64_t n, int64_t min_chunk,
                 const std::function<void(int64_t begin, int64_t end)>& body);

}  // namespace kvwire::kernels

#endif  // KVWIRE_KERNELS_THREAD_POOL_H_
