#include "kvwire/compress/spec.h"

#include <gtest/gtest.h>

namespace kvwire::compress {
namespace {

TEST(CompressionSpec, ParsesAndPrintsEveryCombination) {
  for (const char* text :
       {"window/uniform", "h2o/adaptive", "snapkv/uniform/merge",
        "defensive+critical/adaptive/merge", "snapkv+critical/global/merge:zip", "defensive/global",
        "defensive+recent/uniform/merge", "snapkv+critical+recent=0.25/adaptive"}) {
    auto spec = CompressionSpec::Parse(text);
    ASSERT_TRUE(spec.ok()) << text << ": " << spec.status();
    EXPECT_EQ(spec->ToString(), text);
  }
  auto guarded = CompressionSpec::Parse("snapkv/adaptive/merge:guarded");
  ASSERT_TRUE(guarded.ok());
  EXPECT_EQ(guarded->merge, MergeMode::kGuarded);
}

TEST(CompressionSpec, RejectsUnknownPartsWithClearMessages) {
  for (const char* text :
       {"", "snapkv", "snapkv/", "magic/uniform", "snapkv+fast/uniform", "snapkv/greedy",
        "snapkv/uniform/squash", "a/b/c/d", "snapkv+critical+critical/uniform",
        "snapkv+recent=0/uniform", "snapkv+recent=1.5/uniform", "snapkv+recent=x/uniform",
        "snapkv+recent+recent/uniform", "snapkv+recent=0.5+recent/uniform", "snapkv+recently/uniform"}) {
    auto spec = CompressionSpec::Parse(text);
    ASSERT_FALSE(spec.ok()) << text;
    EXPECT_EQ(spec.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(spec.status().message().find("expected SCORER"), absl::string_view::npos);
  }
}

TEST(CompressionSpec, QueryRowsFollowTheScorer) {
  CompressionSpec s = *CompressionSpec::Parse("snapkv/uniform");
  EXPECT_EQ(s.QueryRows(1000), 32);
  EXPECT_EQ(s.QueryRows(10), 10);
  s.scorer = ScorerKind::kH2O;
  EXPECT_EQ(s.QueryRows(1000), 1000);
}

TEST(CompressionSpec, ValidatesParameters) {
  CompressionSpec s;
  s.pool_kernel = 4;
  EXPECT_FALSE(s.Validate().ok());
  s = CompressionSpec{};
  s.merge_threshold = 2;
  EXPECT_FALSE(s.Validate().ok());
  s = CompressionSpec{};
  s.recent_share = -0.1f;
  EXPECT_FALSE(s.Validate().ok());
  EXPECT_TRUE(CompressionSpec{}.Validate().ok());
  EXPECT_FLOAT_EQ(CompressionSpec::Parse("defensive+recent=0.3/uniform")->recent_share, 0.3f);
  EXPECT_TRUE(CompressionSpec::Parse("defensive+recent/uniform")->recent_by_budget);
  EXPECT_NE(CompressionSpec::Parse("defensive+recent+recent/uniform").status().message().find(
                "repeated scorer modifier '+recent'"),
            absl::string_view::npos);
  EXPECT_FLOAT_EQ(CompressionSpec::Parse("defensive+recent/uniform")->RecentShareFor(0.3), 0.5f);
}

}  // namespace
}  // namespace kvwire::compress
