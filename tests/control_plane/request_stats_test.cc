#include "control_plane/request_stats.h"

#include <gtest/gtest.h>

namespace kvwire::control_plane {
namespace {

RequestRecord Record(uint64_t id, double ttft_ms) {
  RequestRecord r;
  r.request_id = id;
  r.ttft_ms = ttft_ms;
  r.raw_kv_bytes = 1000;
  r.wire_bytes = 250;
  return r;
}

TEST(Percentile, NearestRank) {
  EXPECT_EQ(Percentile({}, 0.5), 0);
  EXPECT_EQ(Percentile({3, 1, 2}, 0.5), 2);
  EXPECT_EQ(Percentile({1, 2, 3, 4}, 0.5), 2);
  EXPECT_EQ(Percentile({1, 2, 3, 4}, 0.99), 4);
  EXPECT_EQ(Percentile({7}, 0.0), 7);
}

TEST(RequestStatsCollector, CountsTotalsFailuresAndInFlight) {
  RequestStatsCollector stats;
  stats.Started();
  stats.Started();
  stats.Started();
  EXPECT_EQ(stats.Snapshot().requests_in_flight, 3u);
  stats.Succeeded(Record(1, 10));
  stats.Failed();
  StatsSnapshot s = stats.Snapshot();
  EXPECT_EQ(s.requests_total, 3u);
  EXPECT_EQ(s.requests_failed, 1u);
  EXPECT_EQ(s.requests_in_flight, 1u);
  EXPECT_EQ(s.raw_kv_bytes_total, 1000u);
  EXPECT_EQ(s.wire_bytes_total, 250u);
}

TEST(RequestStatsCollector, KeepsRecentNewestFirstAndTtftPercentiles) {
  RequestStatsCollector stats(/*recent_capacity=*/3, /*ttft_window=*/100);
  for (uint64_t i = 1; i <= 100; ++i) {
    stats.Started();
    stats.Succeeded(Record(i, static_cast<double>(i)));
  }
  StatsSnapshot s = stats.Snapshot();
  ASSERT_EQ(s.recent.size(), 3u);
  EXPECT_EQ(s.recent[0].request_id, 100u);
  EXPECT_EQ(s.recent[2].request_id, 98u);
  EXPECT_EQ(s.ttft_p50_ms, 50);
  EXPECT_EQ(s.ttft_p99_ms, 99);
  EXPECT_EQ(s.requests_in_flight, 0u);
}

TEST(RequestStatsCollector, TtftWindowForgetsOldRequests) {
  RequestStatsCollector stats(4, /*ttft_window=*/2);
  for (double t : {1000.0, 1.0, 2.0}) {
    stats.Started();
    stats.Succeeded(Record(1, t));
  }
  EXPECT_EQ(stats.Snapshot().ttft_p99_ms, 2);
}

}  // namespace
}  // namespace kvwire::control_plane
