// The externally scored methods (recon, gate): spelling, the scores they take from
// LayerInput::external_scores, and the errors when those are missing or bad.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>

#include "kvwire/compress/compressor.h"
#include "kvwire/compress/spec.h"
#include "tests/compress/layer_fixture.h"

namespace kvwire::compress {
namespace {

using testing::RandomLayer;

std::vector<float> RandomScores(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  std::vector<float> s(n);
  for (float& x : s) x = u(rng);
  return s;
}

TEST(ExternalScores, SpecsSpellReconAndGateWithEveryModifier) {
  for (const char* text :
       {"recon/uniform", "gate/uniform", "recon+critical/adaptive/merge",
        "gate+critical/global/merge:zip", "recon/global", "gate/adaptive/merge"}) {
    auto spec = CompressionSpec::Parse(text);
    ASSERT_TRUE(spec.ok()) << text << ": " << spec.status();
    EXPECT_EQ(spec->ToString(), text);
    EXPECT_TRUE(spec->external_scores()) << text;
    EXPECT_EQ(spec->QueryRows(1000), 32) << text;  // the window, for merge weights
  }
  EXPECT_FALSE(CompressionSpec::Parse("snapkv/uniform")->external_scores());
  auto bad = CompressionSpec::Parse("recall/uniform");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("recon|gate"), absl::string_view::npos);
}

TEST(ExternalScores, MissingScoresAreAClearInvalidArgument) {
  RandomLayer layer(100, 6, 3, 8, 32, 21);
  for (const char* text : {"recon/uniform", "gate/adaptive/merge", "recon/global"}) {
    auto c = Compressor::Create(*CompressionSpec::Parse(text), 0.3f);
    ASSERT_TRUE(c.ok());
    auto out = c->CompressAll({&layer.input, 1}, nullptr);
    ASSERT_FALSE(out.ok()) << text;
    EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(out.status().message().find("external scores"), absl::string_view::npos)
        << out.status();
  }
}

TEST(ExternalScores, NonFiniteScoresAreRejected) {
  RandomLayer layer(100, 6, 3, 8, 32, 22);
  std::vector<float> scores = RandomScores(300, 1);
  scores[150] = std::numeric_limits<float>::quiet_NaN();
  layer.input.external_scores = scores.data();
  auto c = Compressor::Create(*CompressionSpec::Parse("gate/uniform"), 0.3f);
  auto out = c->CompressLayer(layer.input, nullptr);
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(out.status().message().find("external score 150"), absl::string_view::npos);
}

TEST(ExternalScores, TheScoreIsTheCallersRowOfItsKvHead) {
  RandomLayer layer(80, 6, 3, 8, 32, 23);
  const std::vector<float> scores = RandomScores(240, 2);
  layer.input.external_scores = scores.data();
  auto s = ScoreLayer(*CompressionSpec::Parse("recon/uniform"), layer.input, nullptr);
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_EQ(s->size(), 3u);
  for (int h = 0; h < 3; ++h) {
    EXPECT_EQ((*s)[h].score,
              std::vector<float>(scores.begin() + h * 80, scores.begin() + (h + 1) * 80));
    EXPECT_TRUE((*s)[h].log_score.empty());  // no merging, no merge weights
  }
}

TEST(ExternalScores, MergeWeightsStillComeFromTheWindowQueries) {
  RandomLayer layer(80, 6, 3, 8, 32, 24);
  const std::vector<float> scores = RandomScores(240, 3);
  layer.input.external_scores = scores.data();
  auto gate = ScoreLayer(*CompressionSpec::Parse("gate/uniform/merge"), layer.input, nullptr);
  auto snap = ScoreLayer(*CompressionSpec::Parse("snapkv/uniform/merge"), layer.input, nullptr);
  ASSERT_TRUE(gate.ok() && snap.ok());
  for (int h = 0; h < 3; ++h) {
    ASSERT_EQ((*gate)[h].log_score.size(), 80u);
    EXPECT_EQ((*gate)[h].log_score, (*snap)[h].log_score);
  }
}

TEST(ExternalScores, BudgetOneIsTheUncompressedLayerBitForBit) {
  RandomLayer layer(60, 6, 3, 8, 32, 25);
  const std::vector<float> scores = RandomScores(180, 4);
  layer.input.external_scores = scores.data();
  for (const char* text : {"recon/uniform/merge", "gate+critical/global"}) {
    auto c = Compressor::Create(*CompressionSpec::Parse(text), 1.0f);
    auto out = c->CompressAll({&layer.input, 1}, nullptr);
    ASSERT_TRUE(out.ok()) << out.status();
    EXPECT_TRUE((*out)[0] == FullLayer(layer.input)) << text;
  }
}

TEST(ExternalScores, CriticalAndMergingWorkOnTopOfExternalScores) {
  RandomLayer layer(200, 6, 3, 8, 32, 26);
  const std::vector<float> scores = RandomScores(600, 5);
  layer.input.external_scores = scores.data();
  auto c = Compressor::Create(*CompressionSpec::Parse("recon+critical/adaptive/merge"), 0.2f);
  std::vector<LayerStats> stats;
  auto out = c->CompressAll({&layer.input, 1}, nullptr, &stats);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(stats[0].kept, 3 * 40);
  EXPECT_GT(stats[0].merge.merged + stats[0].merge.dropped, 0);
}

}  // namespace
}  // namespace kvwire::compress
