#include "kvwire/compress/decode_compactor.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "kvwire/kernels/attention.h"

namespace kvwire::compress {
namespace {

constexpr int kDim = 8;

std::vector<float> Attend(const cache::HeadSegment& seg, const float* q) {
  kernels::KvHeadView view{seg.keys.data(), seg.values.data(), seg.log_votes.data(),
                           static_cast<int64_t>(seg.size())};
  std::vector<float> out(kDim);
  kernels::Attention({1, 1, 1, kDim, 1.0f / std::sqrt(float{kDim})}, q, &view, out.data(), nullptr);
  return out;
}

// 12 random entries; entries 5 and 6 are identical and point away from the query, so they are
// the least attended and each other's most similar key.
cache::LayerCache MakeLayer(const std::vector<float>& query) {
  std::mt19937 rng(3);
  std::normal_distribution<float> normal;
  cache::LayerCache layer;
  layer.heads.resize(1);
  std::vector<float> k(kDim), v(kDim), twin_k(kDim), twin_v(kDim);
  for (int c = 0; c < kDim; ++c) twin_k[c] = -3.0f * query[c], twin_v[c] = normal(rng);
  for (int i = 0; i < 12; ++i) {
    for (int c = 0; c < kDim; ++c) k[c] = normal(rng) * 0.3f, v[c] = normal(rng);
    const bool twin = i == 5 || i == 6;
    layer.heads[0].Append(i, 0.0f, twin ? twin_k.data() : k.data(), twin ? twin_v.data() : v.data(), kDim);
  }
  return layer;
}

TEST(DecodeCompactor, MergesLeastAttendedIntoTwinExactly) {
  std::vector<float> q(kDim, 0.5f);
  cache::LayerCache layer = MakeLayer(q);
  const std::vector<float> before = Attend(layer.heads[0], q.data());
  CompressionSpec spec;
  spec.sinks = 2;
  spec.window = 3;
  DecodeCompactor compactor(spec, /*n_heads=*/1, /*max_entries=*/11);
  ASSERT_TRUE(compactor.OnStep(0, q.data(), &layer).ok());
  const cache::HeadSegment& seg = layer.heads[0];
  ASSERT_EQ(seg.size(), 11u);
  EXPECT_EQ(compactor.merges(), 1);
  // One of the twins is gone; the survivor carries ln 2 and the output did not move.
  const bool has5 = std::count(seg.positions.begin(), seg.positions.end(), 5) == 1;
  const bool has6 = std::count(seg.positions.begin(), seg.positions.end(), 6) == 1;
  EXPECT_NE(has5, has6);
  const size_t survivor = std::find(seg.positions.begin(), seg.positions.end(), has5 ? 5 : 6) - seg.positions.begin();
  EXPECT_NEAR(seg.log_votes[survivor], std::log(2.0f), 1e-5);
  const std::vector<float> after = Attend(seg, q.data());
  for (int c = 0; c < kDim; ++c) EXPECT_NEAR(after[c], before[c], 1e-5);
  EXPECT_TRUE(std::is_sorted(seg.positions.begin(), seg.positions.end()));
}

TEST(DecodeCompactor, KeepsEveryHeadWithinBudgetOverManySteps) {
  std::mt19937 rng(4);
  std::normal_distribution<float> normal;
  CompressionSpec spec;
  spec.sinks = 2;
  spec.window = 4;
  const int n_heads = 4, n_kv = 2;
  cache::LayerCache layer;
  layer.heads.resize(n_kv);
  DecodeCompactor compactor(spec, n_heads, 20);
  std::vector<float> k(kDim), v(kDim), q(n_heads * kDim);
  for (int step = 0; step < 60; ++step) {
    for (auto& seg : layer.heads) {
      for (int c = 0; c < kDim; ++c) k[c] = normal(rng), v[c] = normal(rng);
      seg.Append(step, 0.0f, k.data(), v.data(), kDim);
    }
    for (float& x : q) x = normal(rng);
    ASSERT_TRUE(compactor.OnStep(0, q.data(), &layer).ok());
    for (const auto& seg : layer.heads) {
      ASSERT_LE(seg.size(), 20u);
      EXPECT_EQ(seg.positions.front(), 0);     // sinks survive
      EXPECT_EQ(seg.positions.back(), step);   // the newest entry survives
      for (float lv : seg.log_votes) ASSERT_TRUE(std::isfinite(lv));
    }
  }
  EXPECT_EQ(compactor.merges(), 2 * 40);
}

TEST(DecodeCompactor, RejectsBudgetBelowProtectedEntries) {
  CompressionSpec spec;  // 4 sinks + 32 window
  DecodeCompactor compactor(spec, 1, 10);
  std::vector<float> q(kDim, 1.0f);
  cache::LayerCache layer = MakeLayer(q);
  EXPECT_EQ(compactor.OnStep(0, q.data(), &layer).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kvwire::compress
