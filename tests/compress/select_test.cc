#include "kvwire/compress/select.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <random>

namespace kvwire::compress {
namespace {

HeadScores RandomScores(int64_t L, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::exponential_distribution<float> e(1.0f);
  HeadScores s;
  s.score.resize(L);
  for (auto& x : s.score) x = e(rng) * scale;
  s.value_norm.assign(L, 1.0f);
  return s;
}

TEST(Budget, CeilOfFractionClampedToPrompt) {
  EXPECT_EQ(HeadBudget(0.2f, 100), 20);
  EXPECT_EQ(HeadBudget(0.201f, 100), 21);
  EXPECT_EQ(HeadBudget(0.001f, 100), 1);
  EXPECT_EQ(HeadBudget(1.0f, 100), 100);
}

TEST(SelectHead, KeepsSinksWindowAndTopScoresSorted) {
  CompressionSpec spec;
  spec.sinks = 4;
  spec.window = 8;
  HeadScores s = RandomScores(100, 1);
  s.score[50] = 100.0f;
  s.score[51] = 99.0f;
  const std::vector<int32_t> keep = SelectHead(spec, s, 100, 20);
  ASSERT_EQ(keep.size(), 20u);
  EXPECT_TRUE(std::is_sorted(keep.begin(), keep.end()));
  for (int i : {0, 1, 2, 3, 92, 99, 50, 51}) {
    EXPECT_TRUE(std::binary_search(keep.begin(), keep.end(), i)) << i;
  }
  // The 8 free slots hold the 8 best non-forced scores.
  std::vector<int32_t> rest(88);
  std::iota(rest.begin(), rest.end(), 4);
  std::sort(rest.begin(), rest.end(), [&](int a, int b) { return s.score[a] > s.score[b]; });
  for (int k = 0; k < 8; ++k) EXPECT_TRUE(std::binary_search(keep.begin(), keep.end(), rest[k]));
}

TEST(SelectHead, RecentShareWidensTheForcedWindow) {
  CompressionSpec spec;
  spec.sinks = 4;
  spec.window = 8;
  spec.recent_share = 0.5f;
  HeadScores s = RandomScores(1000, 3);
  s.score[10] = 100.0f;
  const std::vector<int32_t> keep = SelectHead(spec, s, 1000, 100);
  ASSERT_EQ(keep.size(), 100u);
  // 50 most recent positions forced, the sinks, and 46 by score (position 10 among them).
  for (int i = 950; i < 1000; ++i)
    EXPECT_TRUE(std::binary_search(keep.begin(), keep.end(), i)) << i;
  EXPECT_TRUE(std::binary_search(keep.begin(), keep.end(), 10));
  EXPECT_EQ(Forced(spec, 1000, 100).window, 50);
  // "+recent": 0.9 of a 10 % budget, 0.6 of a 20 % one, never below half.
  spec.recent_share = 0;
  spec.recent_by_budget = true;
  EXPECT_EQ(Forced(spec, 1000, 100).window, 90);
  EXPECT_EQ(Forced(spec, 1000, 200).window, 120);
  EXPECT_EQ(Forced(spec, 1000, 500).window, 250);
  spec.recent_by_budget = false;
  spec.recent_share = 0.5f;
  // The observation window still wins when it is larger than the share.
  EXPECT_EQ(Forced(spec, 1000, 12).window, 8);
  EXPECT_EQ(Forced(spec, 1000, 6).window, 2);
}

TEST(SelectHead, TinyBudgetShrinksWindowThenSinks) {
  CompressionSpec spec;
  const HeadScores s = RandomScores(100, 2);
  EXPECT_EQ(SelectHead(spec, s, 100, 6), (std::vector<int32_t>{0, 1, 2, 3, 98, 99}));
  EXPECT_EQ(SelectHead(spec, s, 100, 2), (std::vector<int32_t>{0, 1}));
  EXPECT_EQ(SelectHead(spec, s, 100, 100).size(), 100u);
}

TEST(SelectHead, CriticalPrefersHighValueNormInSecondStage) {
  CompressionSpec spec;
  spec.sinks = 0;
  spec.window = 1;
  spec.critical = true;
  HeadScores s;
  s.score = {0.9f, 0.8f, 0.5f, 0.4f, 0.3f, 0.0f};
  s.value_norm = {1, 1, 1, 10, 1, 1};
  // Budget 4: window {5}; stage 1 takes round(0.5*4)-1 = 1 by score -> {0};
  // stage 2 takes 2 by (score+1e-4)*nu -> 3 (4.0) and 1 (0.8).
  EXPECT_EQ(SelectHead(spec, s, 6, 4), (std::vector<int32_t>{0, 1, 3, 5}));
  spec.critical = false;
  EXPECT_EQ(SelectHead(spec, s, 6, 4), (std::vector<int32_t>{0, 1, 2, 5}));
}

TEST(AllocateAdaptive, RaggedBudgetsSumToLayerTotalAboveFloor) {
  CompressionSpec spec;
  std::vector<HeadScores> heads = {RandomScores(200, 3, 10.0f), RandomScores(200, 4, 0.1f),
                                   RandomScores(200, 5, 1.0f)};
  const int64_t B = 50;
  const std::vector<int64_t> budgets = AllocateAdaptive(spec, heads, 200, B);
  ASSERT_EQ(budgets.size(), 3u);
  EXPECT_EQ(budgets[0] + budgets[1] + budgets[2], 3 * B);
  EXPECT_GT(budgets[0], B);  // The head with the strongest scores wins budget.
  EXPECT_LT(budgets[1], B);
  // Floor: alpha * B plus forced entries are always left to every head.
  EXPECT_GE(budgets[1], static_cast<int64_t>(spec.adaptive_floor * B));
  for (int64_t b : budgets) EXPECT_GE(b, spec.sinks + spec.window);
}

TEST(AllocateAdaptive, EqualScoresGiveEqualBudgets) {
  CompressionSpec spec;
  std::vector<HeadScores> heads(4);
  for (auto& h : heads) h.score.assign(120, 1.0f);
  for (int64_t b : AllocateAdaptive(spec, heads, 120, 60)) EXPECT_NEAR(b, 60, 1);
}

TEST(AllocateGlobal, OneThresholdAcrossLayers) {
  CompressionSpec spec;
  std::vector<std::vector<HeadScores>> layers = {
      {RandomScores(100, 6, 5.0f), RandomScores(100, 7, 5.0f)},
      {RandomScores(100, 8, 0.2f), RandomScores(100, 9, 0.2f)}};
  const auto budgets = AllocateGlobal(spec, layers, 100, 40);
  ASSERT_EQ(budgets.size(), 2u);
  EXPECT_EQ(budgets[0][0] + budgets[0][1] + budgets[1][0] + budgets[1][1], 160);
  EXPECT_GT(budgets[0][0] + budgets[0][1], budgets[1][0] + budgets[1][1]);
  for (const auto& l : budgets) {
    for (int64_t b : l) EXPECT_GE(b, spec.sinks + spec.window);
  }
}

}  // namespace
}  // namespace kvwire::compress
