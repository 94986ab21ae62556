#include "kvwire/base/deadline.h"

#include <gtest/gtest.h>

#include <thread>

namespace kvwire {
namespace {

TEST(Deadline, PastDeadlineIsExpiredWithZeroRemaining) {
  const Deadline d = Deadline::In(absl::Milliseconds(-5));
  EXPECT_TRUE(d.Expired());
  EXPECT_EQ(d.Remaining(), absl::ZeroDuration());
  EXPECT_EQ(d.RemainingMillisForPoll(), 0);
  EXPECT_EQ(d.Check("reserve").code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_NE(d.Check("reserve").message().find("reserve"), absl::string_view::npos);
}

TEST(Deadline, FutureDeadlineCountsDown) {
  const Deadline d = Deadline::In(absl::Seconds(10));
  EXPECT_FALSE(d.Expired());
  EXPECT_GT(d.Remaining(), absl::Seconds(9));
  EXPECT_LE(d.Remaining(), absl::Seconds(10));
  EXPECT_TRUE(d.Check("x").ok());
  EXPECT_GT(d.RemainingMillisForPoll(), 9000);
}

TEST(Deadline, InfiniteDurationSaturatesInsteadOfOverflowing) {
  const Deadline d = Deadline::In(absl::InfiniteDuration());
  EXPECT_FALSE(d.Expired());
  EXPECT_GT(d.Remaining(), absl::Hours(24 * 365));
  EXPECT_EQ(d.RemainingMillisForPoll(), std::numeric_limits<int32_t>::max());
}

TEST(Deadline, EarliestPicksSooner) {
  const Deadline a = Deadline::In(absl::Seconds(1));
  const Deadline b = Deadline::In(absl::Seconds(100));
  EXPECT_EQ(Deadline::Earliest(a, b).when(), a.when());
  EXPECT_EQ(Deadline::Earliest(b, a).when(), a.when());
}

TEST(Deadline, AbslTimeAgreesWithRemaining) {
  const Deadline d = Deadline::In(absl::Seconds(30));
  const absl::Duration diff = d.ToAbslTime() - absl::Now();
  EXPECT_GT(diff, absl::Seconds(29));
  EXPECT_LE(diff, absl::Seconds(30));
}

}  // namespace
}  // namespace kvwire
