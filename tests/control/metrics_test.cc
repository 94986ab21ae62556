#include "kvwire/control/metrics.h"

#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvwire::control {
namespace {

using ::testing::HasSubstr;

TEST(MetricsRegistry, RendersCountersAndGaugesWithHelpAndType) {
  MetricsRegistry registry;
  Counter* requests =
      *registry.AddCounter("kvwire_requests_total", "Requests served.", {{"node", "decode"}});
  Gauge* grants = *registry.AddGauge("kvwire_live_grants", "Grants alive now.");
  requests->Increment();
  requests->Increment(2);
  grants->Set(5);
  grants->Add(-2);
  const std::string text = registry.RenderText();
  EXPECT_THAT(text, HasSubstr("# HELP kvwire_requests_total Requests served.\n"
                              "# TYPE kvwire_requests_total counter\n"
                              "kvwire_requests_total{node=\"decode\"} 3\n"));
  EXPECT_THAT(text, HasSubstr("# TYPE kvwire_live_grants gauge\nkvwire_live_grants 3\n"));
}

TEST(MetricsRegistry, HistogramBucketsAreCumulativeWithInfSumAndCount) {
  MetricsRegistry registry;
  Histogram* h = *registry.AddHistogram("kvwire_transfer_ms", "Transfer time.", {1, 10, 100});
  for (double v : {0.5, 1.0, 5.0, 50.0, 500.0}) h->Observe(v);
  const std::string text = registry.RenderText();
  EXPECT_THAT(text, HasSubstr("kvwire_transfer_ms_bucket{le=\"1\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("kvwire_transfer_ms_bucket{le=\"10\"} 3\n"));
  EXPECT_THAT(text, HasSubstr("kvwire_transfer_ms_bucket{le=\"100\"} 4\n"));
  EXPECT_THAT(text, HasSubstr("kvwire_transfer_ms_bucket{le=\"+Inf\"} 5\n"));
  EXPECT_THAT(text, HasSubstr("kvwire_transfer_ms_sum 556.5\n"));
  EXPECT_THAT(text, HasSubstr("kvwire_transfer_ms_count 5\n"));
}

TEST(MetricsRegistry, OneFamilyBlockForSeveralLabelSets) {
  MetricsRegistry registry;
  ASSERT_TRUE(registry.AddCounter("kvwire_errors_total", "Errors.", {{"code", "a"}}).ok());
  ASSERT_TRUE(registry.AddGauge("kvwire_aaa", "First.").ok());
  ASSERT_TRUE(registry.AddCounter("kvwire_errors_total", "Errors.", {{"code", "b"}}).ok());
  const std::string text = registry.RenderText();
  const size_t first = text.find("# TYPE kvwire_errors_total");
  EXPECT_NE(first, std::string::npos);
  EXPECT_EQ(text.find("# TYPE kvwire_errors_total", first + 1), std::string::npos);
  EXPECT_THAT(text,
              HasSubstr("kvwire_errors_total{code=\"a\"} 0\nkvwire_errors_total{code=\"b\"} 0\n"));
}

TEST(MetricsRegistry, RejectsBadNamesDuplicatesAndKindClashes) {
  MetricsRegistry registry;
  EXPECT_EQ(registry.AddCounter("9bad", "x").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(registry.AddCounter("a-b", "x").status().code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(registry.AddCounter("ok_total", "x").ok());
  EXPECT_EQ(registry.AddCounter("ok_total", "x").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(registry.AddGauge("ok_total", "x", {{"a", "b"}}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(registry.AddHistogram("h", "x", {10, 1}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(MetricsRegistry, ConcurrentIncrementsAreNotLost) {
  MetricsRegistry registry;
  Counter* c = *registry.AddCounter("c_total", "x");
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([c] {
      for (int i = 0; i < 10000; ++i) c->Increment();
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(c->value(), 40000);
}

TEST(MetricsHttpServer, ServesMetricsAndRejectsOtherPaths) {
  MetricsRegistry registry;
  (*registry.AddCounter("kvwire_up_total", "x"))->Increment(7);
  auto server = MetricsHttpServer::Start("127.0.0.1:0", &registry);
  ASSERT_TRUE(server.ok()) << server.status();
  ASSERT_GT((*server)->port(), 0);
  auto body = HttpGet("127.0.0.1", (*server)->port(), "/metrics", Deadline::In(absl::Seconds(5)));
  ASSERT_TRUE(body.ok()) << body.status();
  EXPECT_THAT(*body, HasSubstr("kvwire_up_total 7\n"));
  auto missing = HttpGet("127.0.0.1", (*server)->port(), "/nope", Deadline::In(absl::Seconds(5)));
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(missing.status().message(), HasSubstr("404"));
}

TEST(MetricsHttpServer, NobodyListeningIsUnavailable) {
  MetricsRegistry registry;
  auto server = MetricsHttpServer::Start("127.0.0.1:0", &registry);
  ASSERT_TRUE(server.ok());
  const int port = (*server)->port();
  server->reset();
  auto body = HttpGet("127.0.0.1", port, "/metrics", Deadline::In(absl::Seconds(5)));
  EXPECT_EQ(body.status().code(), absl::StatusCode::kUnavailable);
}

TEST(SplitHostPort, ParsesAndRejects) {
  auto hp = SplitHostPort("[::1]:8080");
  ASSERT_TRUE(hp.ok());
  EXPECT_EQ(hp->first, "::1");
  EXPECT_EQ(hp->second, 8080);
  EXPECT_FALSE(SplitHostPort("nohost").ok());
  EXPECT_FALSE(SplitHostPort("h:99999").ok());
}

}  // namespace
}  // namespace kvwire::control
