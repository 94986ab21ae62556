// ALGORITHMS.md §6: merging identical entries is exact; a merge leaves the observed query's
// attention output unchanged.
#include "kvwire/compress/merge.h"

#include <gtest/gtest.h>

#include <cmath>
#include <numeric>

#include "kvwire/compress/select.h"
#include "kvwire/kernels/attention.h"
#include "tests/compress/layer_fixture.h"

namespace kvwire::compress {
namespace {

using testing::RandomLayer;

// Decode attention of the last window query (head 0) over a segment with log-vote biases.
std::vector<float> AttendSegment(const LayerInput& in, const cache::HeadSegment& seg,
                                 const float* q) {
  kernels::AttentionShape shape{1, 1, 1, in.head_dim, in.scale};
  kernels::KvHeadView view{seg.keys.data(), seg.values.data(), seg.log_votes.data(),
                           static_cast<int64_t>(seg.size())};
  std::vector<float> out(in.head_dim);
  kernels::Attention(shape, q, &view, out.data(), nullptr);
  return out;
}

float RelDiff(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) num += (a[i] - b[i]) * (a[i] - b[i]), den += a[i] * a[i];
  return static_cast<float>(std::sqrt(num / den));
}

TEST(Merge, IdenticalEntriesMergeExactlyIntoLogVoteLnP) {
  const std::vector<float> k = {0.3f, -1.2f, 2.0f, 0.7f}, v = {1, 2, 3, 4};
  for (int p : {2, 3, 7}) {
    std::vector<MergeMember> group(p, MergeMember{k.data(), v.data(), 0.0f, 1.37f});
    for (MergeMode mode : {MergeMode::kGuarded, MergeMode::kZip}) {
      CompressionSpec spec;
      spec.merge = mode;
      GroupMoments g = ComputeMoments(group, 4);
      const float l_of_mean = 1.37f;  // k̄ = k, so its log-score is the members'.
      const MergedEntry e = FinishMerge(spec, g, l_of_mean);
      for (int c = 0; c < 4; ++c) {
        EXPECT_FLOAT_EQ(e.key[c], k[c]);
        EXPECT_FLOAT_EQ(e.value[c], v[c]);
      }
      EXPECT_NEAR(e.log_vote, std::log(static_cast<float>(p)), 1e-6) << p;
    }
  }
}

TEST(Merge, GroupOfPCopiesAttendsLikeOneEntryWithVote) {
  // p identical entries in a cache == one entry with log-vote ln p.
  const int d = 8;
  RandomLayer layer(6, 1, 1, d, 1, 3);
  cache::HeadSegment copies, voted;
  const kernels::StridedRows k = layer.input.KeyRows(0), v = layer.input.ValueRows(0);
  for (int i = 0; i < 5; ++i) copies.Append(i, 0.0f, k.row(i), v.row(i), d);
  for (int r = 0; r < 3; ++r) copies.Append(5 + r, 0.0f, k.row(5), v.row(5), d);
  for (int i = 0; i < 5; ++i) voted.Append(i, 0.0f, k.row(i), v.row(i), d);
  voted.Append(5, std::log(3.0f), k.row(5), v.row(5), d);
  const float* q = layer.queries.data();
  EXPECT_LT(RelDiff(AttendSegment(layer.input, copies, q), AttendSegment(layer.input, voted, q)), 1e-6);
}

class ObservedQueryTest : public ::testing::TestWithParam<MergeMode> {};

TEST_P(ObservedQueryTest, MergeLeavesObservedQueryOutputUnchanged) {
  // One query head, one KV head, one observed query: l_i is exactly that query's logit.
  const int64_t L = 64;
  const int d = 16;
  RandomLayer layer(L, 1, 1, d, 1, 4);
  CompressionSpec spec;
  spec.merge = GetParam();
  spec.window = 1;              // the single observed query is the window
  spec.merge_threshold = -1.0f;  // merge every evicted entry somewhere
  spec.zip_min_abs = 0.0f;       // and take the paper key whatever l̄ is
  spec.zip_max_ratio = 1e30f;
  auto scores = ScoreLayer(spec, layer.input, nullptr);
  ASSERT_TRUE(scores.ok()) << scores.status();
  const std::vector<int32_t> keep = SelectHead(spec, (*scores)[0], L, 16);
  MergeCounts counts;
  const cache::HeadSegment seg = BuildHeadSegment(spec, layer.input, 0, (*scores)[0], keep, nullptr, &counts);
  EXPECT_EQ(counts.merged, L - 16);
  EXPECT_EQ(seg.size(), 16u);
  if (GetParam() == MergeMode::kZip) {
    EXPECT_GT(counts.zip, 0);
  }
  // Full cache output for the observed query.
  cache::HeadSegment full;
  for (int64_t i = 0; i < L; ++i) full.Append(i, 0.0f, layer.input.KeyRows(0).row(i), layer.input.ValueRows(0).row(i), d);
  const float* q = layer.queries.data();
  EXPECT_LT(RelDiff(AttendSegment(layer.input, full, q), AttendSegment(layer.input, seg, q)), 1e-5);
  // Eviction without merging changes it: the test is sensitive.
  CompressionSpec evict = spec;
  evict.merge = MergeMode::kNone;
  const cache::HeadSegment dropped = BuildHeadSegment(evict, layer.input, 0, (*scores)[0], keep, nullptr, nullptr);
  EXPECT_GT(RelDiff(AttendSegment(layer.input, full, q), AttendSegment(layer.input, dropped, q)), 1e-3);
}

INSTANTIATE_TEST_SUITE_P(Modes, ObservedQueryTest,
                         ::testing::Values(MergeMode::kGuarded, MergeMode::kZip),
                         [](const auto& info) { return info.param == MergeMode::kZip ? "zip" : "guarded"; });

TEST(Merge, MergedEntryKeepsTargetPositionAndFiniteVotes) {
  RandomLayer layer(80, 4, 2, 8, 32, 5);
  CompressionSpec spec;
  spec.merge = MergeMode::kGuarded;
  spec.merge_threshold = 0.3f;
  auto scores = ScoreLayer(spec, layer.input, nullptr);
  ASSERT_TRUE(scores.ok());
  const std::vector<int32_t> keep = SelectHead(spec, (*scores)[1], 80, 40);
  MergeCounts counts;
  const cache::HeadSegment seg = BuildHeadSegment(spec, layer.input, 1, (*scores)[1], keep, nullptr, &counts);
  EXPECT_EQ(std::vector<int32_t>(keep.begin(), keep.end()), seg.positions);
  EXPECT_EQ(counts.merged + counts.dropped, 40);
  EXPECT_GT(counts.merged, 0);
  for (float lv : seg.log_votes) EXPECT_TRUE(std::isfinite(lv));
}

}  // namespace
}  // namespace kvwire::compress
