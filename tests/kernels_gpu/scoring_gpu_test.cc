// Window scoring, pooling and cosine matching on the device against kernels/cpu.
//
// Tolerances: both sides use fp32 logits summed in different orders (about 1e-6 relative), so
// probabilities agree to 1e-4 relative (+1e-7 absolute for the tiny ones) and log-scores to 1e-4
// absolute. Pooling before its rescale follows the CPU's order exactly; after the rescale (sums in
// other orders) 1e-5 relative.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "kernels/cuda/compress.h"
#include "kvwire/kernels/compress.h"
#include "tests/kernels_gpu/gpu_test_util.h"

namespace kvwire::kernels::cuda {
namespace {

using testing::GpuParamTest;
using testing::RandomNormal;
using testing::ToleranceRatio;

struct ScoreCase {
  const char* name;
  int n_heads, n_kv_heads, head_dim;
  int64_t length, n_queries;
  bool interleaved;  // keys in the prefill's [L][n_kv_heads][d] layout rather than [L][d]
};

void PrintTo(const ScoreCase& c, std::ostream* os) { *os << c.name; }

struct Layer {
  std::vector<float> keys, q;
  std::vector<int32_t> key_pos, q_pos;
  int64_t stride;
};

Layer MakeLayer(const ScoreCase& c, std::mt19937& rng) {
  Layer l;
  const int d = c.head_dim;
  l.stride = c.interleaved ? int64_t{c.n_kv_heads} * d : d;
  l.keys = RandomNormal(c.length * l.stride, rng, 1.5f);
  l.q = RandomNormal(c.n_queries * c.n_heads * d, rng, 1.5f);
  l.key_pos.resize(c.length);
  std::iota(l.key_pos.begin(), l.key_pos.end(), 0);
  l.q_pos.resize(c.n_queries);
  std::iota(l.q_pos.begin(), l.q_pos.end(), static_cast<int32_t>(c.length - c.n_queries));
  return l;
}

class ScoringParity : public GpuParamTest<ScoreCase> {};

TEST_P(ScoringParity, AttentionStatsMatchCpu) {
  const ScoreCase& c = GetParam();
  std::mt19937 rng(77 + c.head_dim + c.n_heads);
  const Layer l = MakeLayer(c, rng);
  const int kv_head = c.n_kv_heads - 1;
  const int64_t n = c.length;
  const float scale = 1.0f / std::sqrt(float(c.head_dim));
  QueryBlock cpu_q{l.q.data(),   c.n_queries, l.q_pos.data(), c.n_heads,
                   c.n_kv_heads, c.head_dim,  scale};
  const int64_t head_off = c.interleaved ? int64_t{kv_head} * c.head_dim : 0;
  std::vector<float> mean(n), max(n), sum(n), lse(n);
  kernels::AttentionStats(cpu_q, kv_head, {l.keys.data() + head_off, l.stride, n}, l.key_pos.data(),
                          {mean.data(), max.data(), sum.data(), lse.data()}, nullptr);

  DeviceBuffer keys = Up(l.keys), q = Up(l.q), kp = Up(l.key_pos), qp = Up(l.q_pos);
  DeviceBuffer out = Zeros<float>(4 * n);
  QueryBlock gpu_q = cpu_q;
  gpu_q.q = q.as<float>();
  gpu_q.positions = qp.as<int32_t>();
  float* o = out.as<float>();
  ASSERT_TRUE(AttentionStats(ctx(), gpu_q, kv_head, {keys.as<float>() + head_off, l.stride, n},
                             kp.as<int32_t>(), {o, o + n, o + 2 * n, o + 3 * n})
                  .ok());
  const std::vector<float> got = Down<float>(out, 4 * n);
  auto part = [&](int i) {
    return std::vector<float>(got.begin() + i * n, got.begin() + (i + 1) * n);
  };
  EXPECT_LE(ToleranceRatio(part(0), mean, 1e-7, 1e-4), 1.0) << "mean_prob";
  EXPECT_LE(ToleranceRatio(part(1), max, 1e-7, 1e-4), 1.0) << "max_prob";
  EXPECT_LE(ToleranceRatio(part(2), sum, 1e-7, 1e-4), 1.0) << "sum_prob";
  EXPECT_LE(ToleranceRatio(part(3), lse, 1e-4, 0), 1.0) << "log_score";

  // The unmasked log-scores alone (what merging asks for) take the no-position path.
  DeviceBuffer lse_only = Zeros<float>(n);
  ASSERT_TRUE(LogMeanExpScores(ctx(), gpu_q, kv_head, {keys.as<float>() + head_off, l.stride, n},
                               lse_only.as<float>())
                  .ok());
  std::vector<float> want_lse(n);
  kernels::LogMeanExpScores(cpu_q, kv_head, {l.keys.data() + head_off, l.stride, n},
                            want_lse.data());
  EXPECT_LE(ToleranceRatio(Down<float>(lse_only, n), want_lse, 1e-4, 0), 1.0);
}

TEST_P(ScoringParity, WindowScoresMatchTheCpuPipeline) {
  const ScoreCase& c = GetParam();
  std::mt19937 rng(99 + c.head_dim);
  const Layer l = MakeLayer(c, rng);
  const int64_t n = c.length;
  const float scale = 1.0f / std::sqrt(float(c.head_dim));
  QueryBlock cpu_q{l.q.data(),   c.n_queries, l.q_pos.data(), c.n_heads,
                   c.n_kv_heads, c.head_dim,  scale};
  DeviceBuffer keys = Up(l.keys), q = Up(l.q), kp = Up(l.key_pos), qp = Up(l.q_pos);
  QueryBlock gpu_q = cpu_q;
  gpu_q.q = q.as<float>();
  gpu_q.positions = qp.as<int32_t>();
  for (WindowAggregate agg : {WindowAggregate::kMean, WindowAggregate::kMaxClamped}) {
    for (int h = 0; h < c.n_kv_heads; ++h) {
      const int64_t off = c.interleaved ? int64_t{h} * c.head_dim : 0;
      std::vector<float> raw(n), want(n), want_lse(n);
      HeadAttentionStats stats;
      (agg == WindowAggregate::kMean ? stats.mean_prob : stats.max_prob) = raw.data();
      stats.log_score = want_lse.data();
      kernels::AttentionStats(cpu_q, h, {l.keys.data() + off, l.stride, n}, l.key_pos.data(), stats,
                              nullptr);
      kernels::AveragePool1d(raw.data(), n, 5, want.data());
      if (agg == WindowAggregate::kMaxClamped) {
        const float mean = std::accumulate(want.begin(), want.end(), 0.0f) / float(n);
        for (float& s : want) s = std::max(s, mean);
      }
      DeviceBuffer score = Zeros<float>(n), lse = Zeros<float>(n);
      ASSERT_TRUE(WindowScores(ctx(), gpu_q, h, {keys.as<float>() + off, l.stride, n},
                               kp.as<int32_t>(), agg, 5, score.as<float>(), lse.as<float>())
                      .ok());
      EXPECT_LE(ToleranceRatio(Down<float>(score, n), want, 1e-7, 2e-4), 1.0) << "head " << h;
      EXPECT_LE(ToleranceRatio(Down<float>(lse, n), want_lse, 1e-4, 0), 1.0) << "head " << h;
    }
  }
}

const ScoreCase kScoreCases[] = {
    {"smollm2_window32_g3", 9, 3, 64, 1000, 32, true},
    {"g1_dim128_ragged_tail", 4, 4, 128, 77, 32, false},
    {"g4_llama_shape", 32, 8, 128, 2113, 32, true},
    {"h2o_all_queries_g4", 8, 2, 32, 301, 301, true},
    {"short_prompt_fewer_keys_than_a_tile", 6, 2, 64, 9, 9, false},
    {"dim256_opt_in_shared_memory", 4, 2, 256, 300, 32, true},
    // Dynamic shared memory just under 48 KiB: over it only with the kernels' static arrays.
    {"dim248_static_and_dynamic_shared_memory", 4, 2, 248, 300, 32, false},
};

INSTANTIATE_TEST_SUITE_P(Shapes, ScoringParity, ::testing::ValuesIn(kScoreCases),
                         [](const auto& info) { return std::string(info.param.name); });

class PoolAndCosine : public testing::GpuTest {};

TEST_F(PoolAndCosine, AveragePoolMatchesCpu) {
  std::mt19937 rng(5);
  for (int64_t n : {1, 2, 3, 1000, 4097}) {
    for (int kernel : {1, 3, 5, 7}) {
      const std::vector<float> in = testing::RandomUniform(n, rng, 0.0f, 1.0f);
      std::vector<float> want(n);
      kernels::AveragePool1d(in.data(), n, kernel, want.data());
      DeviceBuffer d_in = Up(in), d_out = Zeros<float>(n);
      ASSERT_TRUE(AveragePool1d(ctx(), d_in.as<float>(), n, kernel, d_out.as<float>()).ok());
      EXPECT_LE(ToleranceRatio(Down<float>(d_out, n), want, 0, 1e-5), 1.0)
          << "n=" << n << " kernel=" << kernel;
    }
  }
  EXPECT_EQ(AveragePool1d(ctx(), nullptr, 4, 4, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
}

double Cosine(const float* a, const float* b, int dim) {
  double ab = 0, aa = 0, bb = 0;
  for (int i = 0; i < dim; ++i) ab += a[i] * b[i], aa += a[i] * a[i], bb += b[i] * b[i];
  return aa > 0 && bb > 0 ? ab / std::sqrt(aa * bb) : 0.0;
}

// The device may pick a different candidate only when its cosine ties the CPU's best within
// rounding (1e-5), which random keys make vanishingly rare but not impossible.
TEST_F(PoolAndCosine, CosineArgmaxMatchesCpu) {
  std::mt19937 rng(11);
  for (int dim : {32, 64, 128, 256}) {
    for (auto [nq, nc] : {std::pair<int64_t, int64_t>{1000, 300}, {33, 1}, {5, 0}, {64, 97}}) {
      std::vector<float> qs = RandomNormal(nq * dim, rng), cs = RandomNormal(nc * dim, rng);
      if (nc > 1) std::fill(cs.begin(), cs.begin() + dim, 0.0f);    // a zero candidate
      if (nc > 0) std::copy(cs.end() - dim, cs.end(), qs.begin());  // an exact match
      std::vector<int32_t> want_i(nq);
      std::vector<float> want_c(nq);
      kernels::CosineArgmax({qs.data(), dim, nq}, {cs.data(), dim, nc}, dim, want_i.data(),
                            want_c.data(), nullptr);
      DeviceBuffer dq = Up(qs), dc = Up(cs.empty() ? std::vector<float>(4) : cs);
      DeviceBuffer di = Zeros<int32_t>(nq), dcos = Zeros<float>(nq);
      ASSERT_TRUE(CosineArgmax(ctx(), {dq.as<float>(), dim, nq}, {dc.as<float>(), dim, nc}, dim,
                               di.as<int32_t>(), dcos.as<float>())
                      .ok());
      const std::vector<int32_t> got_i = Down<int32_t>(di, nq);
      const std::vector<float> got_c = Down<float>(dcos, nq);
      for (int64_t r = 0; r < nq; ++r) {
        EXPECT_NEAR(got_c[r], want_c[r], 1e-5) << "row " << r;
        ASSERT_EQ(got_i[r] < 0, want_i[r] < 0) << "row " << r;
        if (got_i[r] != want_i[r]) {
          EXPECT_NEAR(Cosine(&qs[r * dim], &cs[got_i[r] * dim], dim), want_c[r], 1e-5)
              << "row " << r << " picked " << got_i[r] << " instead of " << want_i[r];
        }
      }
    }
  }
}

}  // namespace
}  // namespace kvwire::kernels::cuda
