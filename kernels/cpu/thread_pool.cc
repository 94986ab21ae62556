// Fork-join pool with claimed chunks. A job is published under mu_ (open_ = true, generation_
// bumped); workers join it by incrementing active_ under mu_ and claim chunks from next_chunk_.
// The caller claims chunks too, then closes the job and waits until every joined worker has left,
// so no worker can touch a job after ParallelFor returns.
#include "kvwire/kernels/thread_pool.h"

#include <algorithm>
#include <chrono>

namespace kvwire::kernels {
namespace {

// How long an idle worker polls for the next job before sleeping on the condition variable.
constexpr auto kSpin = std::chrono::microseconds(100);
constexpr int64_t kChunksPerThread = 4;

}  // namespace

ThreadPool::ThreadPool(int n_threads) {
  if (n_threads <= 0) n_threads = std::max(1u, std::thread::hardware_concurrency());
  for (int i = 1; i < n_threads; ++i) workers_.emplace_back([this] { WorkerLoop(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    generation_.fetch_add(1);
  }
  start_cv_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::RunChunks() {
  for (;;) {
    const int64_t c = next_chunk_.fetch_add(1, std::memory_order_relaxed);
    if (c >= n_chunks_) return;
    (*body_)(c * chunk_, std::min(n_, (c + 1) * chunk_));
  }
}

void ThreadPool::WorkerLoop() {
  int64_t seen = 0;
  for (;;) {
    const auto spin_until = std::chrono::steady_clock::now() + kSpin;
    while (generation_.load(std::memory_order_acquire) == seen &&
           std::chrono::steady_clock::now() < spin_until) {
    }
    std::unique_lock<std::mutex> lock(mu_);
    start_cv_.wait(lock, [&] { return stop_ || generation_.load() != seen; });
    if (stop_) return;
    seen = generation_.load();
    if (!open_) continue;
    ++active_;
    lock.unlock();
    RunChunks();
    lock.lock();
    if (--active_ == 0) done_cv_.notify_one();
  }
}

void ThreadPool::ParallelFor(int64_t n, int64_t min_chunk,
                             const std::function<void(int64_t, int64_t)>& body) {
  if (n <= 0) return;
  min_chunk = std::max<int64_t>(1, min_chunk);
  const int64_t max_chunks = std::max<int64_t>(1, n / min_chunk);
  const int64_t n_chunks = std::min<int64_t>(max_chunks, size() * kChunksPerThread);
  if (n_chunks == 1 || workers_.empty()) {
    body(0, n);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    body_ = &body;
    n_ = n;
    chunk_ = (n + n_chunks - 1) / n_chunks;
    n_chunks_ = (n + chunk_ - 1) / chunk_;
    next_chunk_.store(0, std::memory_order_relaxed);
    open_ = true;
    generation_.fetch_add(1, std::memory_order_release);
  }
  start_cv_.notify_all();
  RunChunks();
  std::unique_lock<std::mutex> lock(mu_);
  open_ = false;
  done_cv_.wait(lock, [&] { return active_ == 0; });
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
