// KeepKV merging on the device against kvwire::compress::BuildHeadSegment.
//
// Keys are drawn as tight clusters (member-to-centre cosine ~0.98) and isolated outliers (|cosine|
// well under 0.8 with everything), and exactly one member of each cluster is kept, so every
// merge/drop decision and every target is far from a rounding tie. Tolerance for merged keys,
// values and log-votes: 1e-4 absolute + 1e-4 relative (fp32 sums in the same member order, log-
// mean-exp of the mean keys in a different order); positions and merge counts exactly.
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>
#include <random>
#include <set>
#include <vector>

#include "kernels/cuda/merge.h"
#include "kvwire/compress/merge.h"
#include "kvwire/kernels/compress.h"
#include "tests/kernels_gpu/gpu_test_util.h"

namespace kvwire::kernels::cuda {
namespace {

using testing::RandomNormal;
using testing::ToleranceRatio;

struct MergeCase {
  const char* name;
  int n_heads, n_kv_heads, head_dim;
  int64_t length;
  bool zip;
};

void PrintTo(const MergeCase& c, std::ostream* os) { *os << c.name; }

class MergeParity : public testing::GpuParamTest<MergeCase> {};

TEST_P(MergeParity, MatchesBuildHeadSegment) {
  const MergeCase& c = GetParam();
  const int d = c.head_dim, H = c.n_kv_heads;
  const int64_t L = c.length;
  std::mt19937 rng(static_cast<unsigned>(L + d));
  compress::CompressionSpec spec;
  spec.merge = c.zip ? compress::MergeMode::kZip : compress::MergeMode::kGuarded;
  spec.window = 8;
  std::vector<float> keys(L * H * d), values = RandomNormal(L * H * d, rng);
  std::vector<std::vector<int32_t>> keep(H);
  std::uniform_int_distribution<int> pick(0, 11);
  for (int h = 0; h < H; ++h) {
    const std::vector<float> centres = RandomNormal(12 * d, rng);
    std::set<int> represented;
    for (int64_t i = 0; i < L; ++i) {
      float* k = &keys[(i * H + h) * d];
      const bool forced = i < spec.sinks || i >= L - spec.window;
      const int cluster = pick(rng);
      const bool outlier = forced || i % 7 == 3;
      const std::vector<float> noise = RandomNormal(d, rng, outlier ? 1.0f : 0.15f);
      for (int j = 0; j < d; ++j) k[j] = (outlier ? 0.0f : centres[cluster * d + j]) + noise[j];
      const bool first = !outlier && represented.insert(cluster).second;
      if (forced || first || (outlier && i % 3 == 0)) keep[h].push_back(static_cast<int32_t>(i));
    }
  }
  const std::vector<float> q = RandomNormal(spec.window * c.n_heads * d, rng);
  compress::LayerInput in;
  in.n_tokens = L;
  in.n_heads = c.n_heads;
  in.n_kv_heads = H;
  in.head_dim = d;
  in.scale = 1.0f / std::sqrt(float(d));
  in.keys = keys.data();
  in.values = values.data();
  in.queries = q.data();
  in.n_queries = spec.window;
  std::vector<int32_t> qpos;
  const QueryBlock window = compress::WindowQueries(in, &qpos);

  DeviceBuffer d_keys = Up(keys), d_values = Up(values), d_q = Up(q);
  QueryBlock d_window = window;
  d_window.q = d_q.as<float>();
  d_window.positions = nullptr;
  for (int h = 0; h < H; ++h) {
    compress::HeadScores scores;
    scores.log_score.resize(L);
    kernels::LogMeanExpScores(window, h, in.KeyRows(h), scores.log_score.data());
    compress::MergeCounts want_counts;
    const cache::HeadSegment want =
        compress::BuildHeadSegment(spec, in, h, scores, keep[h], nullptr, &want_counts);
    ASSERT_GT(want_counts.merged, 0) << "the case should merge something";
    ASSERT_GT(want_counts.dropped, 0) << "the case should drop something";

    std::vector<int32_t> evicted;
    for (int64_t i = 0, j = 0; i < L; ++i) {
      if (j < static_cast<int64_t>(keep[h].size()) && keep[h][j] == i)
        ++j;
      else
        evicted.push_back(static_cast<int32_t>(i));
    }
    const int64_t B = keep[h].size();
    DeviceBuffer d_keep = Up(keep[h]), d_evicted = Up(evicted), d_lse = Up(scores.log_score);
    DeviceBuffer pos = Zeros<int32_t>(B), votes = Zeros<float>(B);
    DeviceBuffer out_k = Zeros<float>(B * d), out_v = Zeros<float>(B * d);
    MergeParams params;
    params.zip = c.zip;
    MergeHeadInput mi;
    mi.keys = {d_keys.as<float>() + h * d, int64_t{H} * d, L};
    mi.values = {d_values.as<float>() + h * d, int64_t{H} * d, L};
    mi.log_score = d_lse.as<float>();
    mi.keep = d_keep.as<int32_t>();
    mi.n_keep = B;
    mi.evicted = d_evicted.as<int32_t>();
    mi.n_evicted = static_cast<int64_t>(evicted.size());
    MergeTally tally;
    ASSERT_TRUE(
        MergeHead(ctx(), params, d_window, h, mi,
                  {pos.as<int32_t>(), votes.as<float>(), out_k.as<float>(), out_v.as<float>()},
                  &tally)
            .ok());
    EXPECT_EQ(Down<int32_t>(pos, B), want.positions);
    EXPECT_LE(ToleranceRatio(Down<float>(votes, B), want.log_votes, 1e-4, 1e-4), 1.0);
    EXPECT_LE(ToleranceRatio(Down<float>(out_k, B * d), want.keys, 1e-4, 1e-4), 1.0);
    EXPECT_LE(ToleranceRatio(Down<float>(out_v, B * d), want.values, 1e-4, 1e-4), 1.0);
    EXPECT_EQ(tally.merged, want_counts.merged);
    EXPECT_EQ(tally.dropped, want_counts.dropped);
    EXPECT_EQ(tally.zip, want_counts.zip);
  }
}

const MergeCase kMergeCases[] = {
    {"smollm2_guarded", 9, 3, 64, 700, false},
    {"smollm2_zip", 9, 3, 64, 700, true},
    {"g1_dim128_guarded", 2, 2, 128, 1500, false},
    {"g4_dim32_zip", 8, 2, 32, 333, true},
};

INSTANTIATE_TEST_SUITE_P(Shapes, MergeParity, ::testing::ValuesIn(kMergeCases),
                         [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace kvwire::kernels::cuda
