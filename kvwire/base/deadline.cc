#include "kvwire/base/deadline.h"

#include <algorithm>
#include <limits>

#include "absl/strings/str_cat.h"

namespace kvwire {

Deadline::Clock::duration Deadline::ToChrono(absl::Duration d) {
  // Saturate so that absl::InfiniteDuration() or huge values never overflow the chrono rep.
  constexpr int64_t kMaxNanos = std::numeric_limits<int64_t>::max() / 4;
  int64_t nanos = absl::ToInt64Nanoseconds(d);
  nanos = std::clamp<int64_t>(nanos, -kMaxNanos, kMaxNanos);
  return std::chrono::duration_cast<Clock::duration>(std::chrono::nanoseconds(nanos));
}

absl::Duration Deadline::Remaining() const {
  const auto left = when_ - Clock::now();
  if (left <= Clock::duration::zero()) return absl::ZeroDuration();
  return absl::Nanoseconds(std::chrono::duration_cast<std::chrono::nanoseconds>(left).count());
}

int Deadline::RemainingMillisForPoll() const {
  const int64_t ms = absl::ToInt64Milliseconds(Remaining() + absl::Microseconds(999));
  return static_cast<int>(std::min<int64_t>(ms, std::numeric_limits<int32_t>::max()));
}

absl::Status Deadline::Check(absl::string_view what) const {
  if (!Expired()) return absl::OkStatus();
  return absl::DeadlineExceededError(absl::StrCat(what, ": deadline exceeded"));
}

}  // namespace kvwire
