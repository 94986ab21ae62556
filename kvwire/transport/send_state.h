// kvwire/transport/send_state.h — the completion cell behind a SendOperation, shared by the
// transport implementations. Finish() sets the final status once (later calls are ignored);
// Wait() blocks until then or until the deadline. Implementation detail; thread-safe.
#ifndef KVWIRE_TRANSPORT_SEND_STATE_H_
#define KVWIRE_TRANSPORT_SEND_STATE_H_

#include <sched.h>

#include <atomic>
#include <chrono>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "kvwire/base/deadline.h"

namespace kvwire::transport {

class SendCompletion {
 public:
  // Returns true if this call set the status.
  bool Finish(absl::Status status) {
    absl::MutexLock lock(&mu_);
    if (done_.load(std::memory_order_relaxed)) return false;
    status_ = std::move(status);
    done_.store(true, std::memory_order_release);
    return true;
  }
  bool Done() const { return done_.load(std::memory_order_acquire); }
  absl::Status Wait(Deadline deadline, absl::string_view what) {
    // Completions usually follow within microseconds of each other while a stream is busy: poll
    // (yielding the core) for a short while before paying for a futex sleep and wake-up.
    const auto spin_until = std::chrono::steady_clock::now() + kSpinBeforeSleep;
    while (!Done() && std::chrono::steady_clock::now() < spin_until) sched_yield();
    absl::MutexLock lock(&mu_);
    auto done = [this] { return done_.load(std::memory_order_relaxed); };
    if (!mu_.AwaitWithDeadline(absl::Condition(&done), deadline.ToAbslTime())) {
      return absl::DeadlineExceededError(absl::StrCat(what, ": deadline exceeded"));
    }
    return status_;
  }

 private:
  static constexpr std::chrono::microseconds kSpinBeforeSleep{20};

  absl::Mutex mu_;
  std::atomic<bool> done_{false};
  absl::Status status_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kvwire::transport

#endif  // KVWIRE_TRANSPORT_SEND_STATE_H_
