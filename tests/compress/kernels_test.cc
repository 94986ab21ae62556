// The compression kernels against naive double-precision references.
#include "kvwire/kernels/compress.h"

#include <gtest/gtest.h>

#include <cmath>
#include <numeric>
#include <random>

#include "tests/compress/layer_fixture.h"

namespace kvwire::kernels {
namespace {

using compress::testing::RandomLayer;

struct NaiveStats {
  std::vector<double> mean, max, sum, log_score;
};

// Straight from ALGORITHMS.md: z = q·k / sqrt(d), causal softmax per (query, head).
NaiveStats Naive(const compress::LayerInput& in, int h) {
  const int64_t L = in.n_tokens, nq = in.n_queries;
  const int group = in.n_heads / in.n_kv_heads, d = in.head_dim;
  NaiveStats s{std::vector<double>(L, 0), std::vector<double>(L, 0), std::vector<double>(L, 0),
               std::vector<double>(L, 0)};
  std::vector<double> exp_sum(L, 0);
  for (int64_t j = 0; j < nq; ++j) {
    const int64_t qpos = L - nq + j;
    for (int g = h * group; g < (h + 1) * group; ++g) {
      std::vector<double> z(L);
      for (int64_t i = 0; i < L; ++i) {
        double dot = 0;
        for (int c = 0; c < d; ++c) dot += double{in.queries[(j * in.n_heads + g) * d + c]} * in.keys[(i * in.n_kv_heads + h) * d + c];
        z[i] = dot / std::sqrt(static_cast<double>(d));
        exp_sum[i] += std::exp(z[i]);
      }
      double denom = 0;
      for (int64_t i = 0; i <= qpos; ++i) denom += std::exp(z[i]);
      for (int64_t i = 0; i < L; ++i) {
        const double a = i <= qpos ? std::exp(z[i]) / denom : 0.0;
        s.mean[i] += a / (nq * group);
        s.max[i] = std::max(s.max[i], a);
        s.sum[i] += a / group;
      }
    }
  }
  for (int64_t i = 0; i < L; ++i) s.log_score[i] = std::log(exp_sum[i] / (nq * group));
  return s;
}

TEST(CompressKernels, AttentionStatsMatchNaivePostRopeScaledSoftmax) {
  RandomLayer layer(70, 6, 2, 16, 9, 1);
  std::vector<int32_t> qpos(9), kpos(70);
  std::iota(qpos.begin(), qpos.end(), 61);
  std::iota(kpos.begin(), kpos.end(), 0);
  const QueryBlock qb{layer.queries.data(), 9, qpos.data(), 6, 2, 16, layer.input.scale};
  ThreadPool pool(2);
  for (int h = 0; h < 2; ++h) {
    std::vector<float> mean(70), max(70), sum(70), lse(70);
    AttentionStats(qb, h, layer.input.KeyRows(h), kpos.data(), {mean.data(), max.data(), sum.data(), lse.data()}, &pool);
    const NaiveStats want = Naive(layer.input, h);
    for (int i = 0; i < 70; ++i) {
      EXPECT_NEAR(mean[i], want.mean[i], 1e-6) << i;
      EXPECT_NEAR(max[i], want.max[i], 1e-6) << i;
      EXPECT_NEAR(sum[i], want.sum[i], 1e-5) << i;
      EXPECT_NEAR(lse[i], want.log_score[i], 1e-4) << i;
    }
    // Each query's causal row sums to 1, so mean_prob sums to 1 over keys.
    EXPECT_NEAR(std::accumulate(mean.begin(), mean.end(), 0.0), 1.0, 1e-5);
  }
}

TEST(CompressKernels, AveragePoolKeepsMass) {
  const std::vector<float> in = {0, 0, 9, 0, 0, 0, 1, 1, 0, 3};
  std::vector<float> out(in.size());
  AveragePool1d(in.data(), 10, 5, out.data());
  EXPECT_NEAR(std::accumulate(out.begin(), out.end(), 0.0f), 14.0f, 1e-5);
  EXPECT_GT(out[1], 0.0f);  // Spread to neighbours.
  EXPECT_GT(out[2], out[8]);
}

TEST(CompressKernels, ValueOutputNormsMatchNaive) {
  RandomLayer layer(20, 4, 2, 8, 4, 2, /*hidden=*/12);
  std::vector<float> nu(20);
  ValueOutputNorms(layer.input.ValueRows(1), layer.wo.data(), 12, 4, 2, 8, 1, nu.data(), nullptr);
  for (int i = 0; i < 20; ++i) {
    double want = 0;
    for (int g = 2; g < 4; ++g) {
      for (int o = 0; o < 12; ++o) {
        double p = 0;
        for (int c = 0; c < 8; ++c) p += double{layer.values[(i * 2 + 1) * 8 + c]} * layer.wo[o * 32 + g * 8 + c];
        want += std::fabs(p) / 2;
      }
    }
    EXPECT_NEAR(nu[i], want, 1e-4 * want) << i;
  }
}

TEST(CompressKernels, CosineArgmaxFindsMostSimilarAndHandlesZero) {
  const std::vector<float> cand = {1, 0, 0, 1, -1, 0};  // three 2-d rows
  const std::vector<float> q = {0.1f, 2.0f, -3, 0.2f, 0, 0};
  int32_t idx[3];
  float cos[3];
  CosineArgmax({q.data(), 2, 3}, {cand.data(), 2, 3}, 2, idx, cos, nullptr);
  EXPECT_EQ(idx[0], 1);
  EXPECT_EQ(idx[1], 2);
  EXPECT_NEAR(cos[1], 3 / std::sqrt(9.04), 1e-6);
  EXPECT_EQ(cos[2], 0.0f);  // Zero query: similarity 0.
}

}  // namespace
}  // namespace kvwire::kernels
