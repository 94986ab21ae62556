#include "kvwire/compress/compressor.h"

#include <gtest/gtest.h>

#include "tests/compress/layer_fixture.h"

namespace kvwire::compress {
namespace {

using testing::RandomLayer;

const char* kAllSpecs[] = {
    "window/uniform", "h2o/uniform", "snapkv/uniform", "defensive/uniform",
    "snapkv+critical/uniform", "defensive+critical/adaptive/merge", "snapkv/adaptive/merge:zip",
    "h2o/adaptive/merge", "window/uniform/merge", "snapkv/global/merge", "defensive+critical/global"};

TEST(Compressor, BudgetOneIsTheUncompressedCacheBitForBit) {
  RandomLayer layer(90, 6, 2, 8, 90, 11);
  const cache::LayerCache full = FullLayer(layer.input);
  for (const char* text : kAllSpecs) {
    auto c = Compressor::Create(*CompressionSpec::Parse(text), 1.0f);
    ASSERT_TRUE(c.ok());
    auto all = c->CompressAll({&layer.input, 1}, nullptr);
    ASSERT_TRUE(all.ok()) << text << ": " << all.status();
    EXPECT_TRUE((*all)[0] == full) << text;
  }
}

TEST(Compressor, EveryMethodKeepsTheBudgetPerLayer) {
  RandomLayer layer(200, 6, 3, 8, 200, 12);
  for (const char* text : kAllSpecs) {
    auto c = Compressor::Create(*CompressionSpec::Parse(text), 0.2f);
    ASSERT_TRUE(c.ok());
    std::vector<LayerStats> stats;
    auto all = c->CompressAll({&layer.input, 1}, nullptr, &stats);
    ASSERT_TRUE(all.ok()) << text << ": " << all.status();
    size_t kept = 0;
    for (const auto& seg : (*all)[0].heads) {
      kept += seg.size();
      EXPECT_TRUE(std::is_sorted(seg.positions.begin(), seg.positions.end()));
      EXPECT_EQ(seg.positions.front(), 0) << text;   // sink
      EXPECT_EQ(seg.positions.back(), 199) << text;  // window
    }
    EXPECT_EQ(kept, 3u * 40u) << text;  // ceil(0.2 * 200) per head, summed over heads.
    EXPECT_EQ(stats[0].kept, 120);
  }
}

TEST(Compressor, GqaScoresOfAHeadDependOnlyOnItsGroup) {
  RandomLayer a(100, 6, 3, 8, 32, 13), b(100, 6, 3, 8, 32, 13);
  // Perturb the queries of group 2 (query heads 4, 5) only.
  for (int64_t j = 0; j < 32; ++j) {
    for (int c = 0; c < 16; ++c) b.queries[(j * 6 + 4) * 8 + c] += 3.0f;
  }
  const CompressionSpec spec = *CompressionSpec::Parse("snapkv/uniform");
  auto sa = ScoreLayer(spec, a.input, nullptr);
  auto sb = ScoreLayer(spec, b.input, nullptr);
  ASSERT_TRUE(sa.ok() && sb.ok());
  ASSERT_EQ(sa->size(), 3u);  // one score array per KV head, never per query head
  EXPECT_EQ((*sa)[0].score, (*sb)[0].score);
  EXPECT_EQ((*sa)[1].score, (*sb)[1].score);
  EXPECT_NE((*sa)[2].score, (*sb)[2].score);
}

TEST(Compressor, RejectsBadBudgetsShapesAndMissingInputs) {
  const CompressionSpec spec = *CompressionSpec::Parse("snapkv+critical/uniform");
  EXPECT_EQ(Compressor::Create(spec, 0.0f).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Compressor::Create(spec, 1.5f).status().code(), absl::StatusCode::kInvalidArgument);
  RandomLayer layer(50, 4, 2, 8, 8, 14);
  auto c = *Compressor::Create(spec, 0.5f);
  LayerInput bad = layer.input;
  bad.wo = nullptr;
  EXPECT_EQ(c.CompressLayer(bad, nullptr).status().code(), absl::StatusCode::kInvalidArgument);
  bad = layer.input;
  bad.n_queries = 4;  // fewer than the 32-query window (or L) the scorer needs
  EXPECT_EQ(c.CompressLayer(bad, nullptr).status().code(), absl::StatusCode::kInvalidArgument);
  auto global = *Compressor::Create(*CompressionSpec::Parse("snapkv/global"), 0.5f);
  EXPECT_EQ(global.CompressLayer(layer.input, nullptr).status().code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace kvwire::compress
