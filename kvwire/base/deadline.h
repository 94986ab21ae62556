// kvwire/base/deadline.h — absolute deadlines on the monotonic clock.
//
// Every wait in kvwire takes a Deadline; there is deliberately no "wait forever". A Deadline is a
// value type (copyable, thread-compatible). Waits on absl::Mutex use ToAbslTime(); waits that
// need a relative timeout use Remaining().
#ifndef KVWIRE_BASE_DEADLINE_H_
#define KVWIRE_BASE_DEADLINE_H_

#include <chrono>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace kvwire {

class Deadline {
 public:
  using Clock = std::chrono::steady_clock;

  // A deadline `timeout` from now. Negative timeouts are already expired.
  static Deadline In(absl::Duration timeout) { return Deadline(Clock::now() + ToChrono(timeout)); }
  static Deadline InMillis(int64_t ms) { return In(absl::Milliseconds(ms)); }
  static Deadline At(Clock::time_point when) { return Deadline(when); }

  Clock::time_point when() const { return when_; }
  bool Expired() const { return Clock::now() >= when_; }
  // Time left, never negative.
  absl::Duration Remaining() const;
  // Milliseconds left, clamped to [0, INT32_MAX]: for poll()/epoll_wait()-style timeouts.
  int RemainingMillisForPoll() const;
  // The same instant on absl's wall clock, for absl::Mutex::AwaitWithDeadline and friends.
  absl::Time ToAbslTime() const { return absl::Now() + Remaining(); }
  // DEADLINE_EXCEEDED naming `what` if expired, else OK.
  absl::Status Check(absl::string_view what) const;

  // The earlier of two deadlines.
  static Deadline Earliest(const Deadline& a, const Deadline& b) { return a.when_ < b.when_ ? a : b; }

 private:
  explicit Deadline(Clock::time_point when) : when_(when) {}
  static Clock::duration ToChrono(absl::Duration d);
  Clock::time_point when_;
};

}  // namespace kvwire

#endif  // KVWIRE_BASE_DEADLINE_H_
