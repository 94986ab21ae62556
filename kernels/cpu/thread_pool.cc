// Fork-join pool: workers sleep on a condition variable between ParallelFor calls; a generation
// counter tells them a new job started. Chunk k of a job runs on worker k-1; chunk 0 on the caller.
#include "kvwire/kernels/thread_pool.h"

#include <algorithm>

namespace kvwire::kernels {
namespace {

std::pair<int64_t, int64_t> ChunkRange(int64_t n, int chunks, int k) {
  const int64_t base = n / chunks, extra = n % chunks;
  const int64_t begin = k * base + std::min<int64_t>(k, extra);
  return {begin, begin + base + (k < extra ? 1 : 0)};
}

}  // namespace

ThreadPool::ThreadPool(int n_threads) {
  if (n_threads <= 0) n_threads = std::max(1u, std::thread::hardware_concurrency());
  for (int i = 1; i < n_threads; ++i) workers_.emplace_back([this, i] { WorkerLoop(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  start_cv_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::WorkerLoop(int index) {
  int64_t seen = 0;
  for (;;) {
    std::unique_lock<std::mutex> lock(mu_);
    start_cv_.wait(lock, [&] { return stop_ || generation_ != seen; });
    if (stop_) return;
    seen = generation_;
    if (index >= chunks_) continue;
    const auto* body = body_;
    const auto [begin, end] = ChunkRange(n_, chunks_, index);
    lock.unlock();
    (*body)(begin, end);
    lock.lock();
    if (--pending_ == 0) done_cv_.notify_one();
  }
}

void ThreadPool::ParallelFor(int64_t n, int64_t min_chunk,
                             const std::function<void(int64_t, int64_t)>& body) {
  if (n <= 0) return;
  const int64_t by_size = std::max<int64_t>(1, n / std::max<int64_t>(1, min_chunk));
  const int chunks = static_cast<int>(std::min<int64_t>(size(), by_size));
  if (chunks == 1) {
    body(0, n);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    body_ = &body;
    n_ = n;
    chunks_ = chunks;
    pending_ = chunks - 1;
    ++generation_;
  }
  start_cv_.notify_all();
  const auto [begin, end] = ChunkRange(n, chunks, 0);
  body(begin, end);
  std::unique_lock<std::mutex> lock(mu_);
  done_cv_.wait(lock, [&] { return pending_ == 0; });
  body_ = nullptr;
}

void ParallelFor(ThreadPool* pool, int64_t n, int64_t min_chunk,
                 const std::function<void(int64_t, int64_t)>& body) {
  if (pool == nullptr) {
    if (n > 0) body(0, n);
    return;
  }
  pool->ParallelFor(n, min_chunk, body);
}

}  // namespace kvwire::kernels
