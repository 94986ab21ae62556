#include "kvwire/kernels/attention.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

namespace kvwire::kernels {
namespace {

constexpr int kHeads = 6, kKvHeads = 2, kDim = 32;

struct Segment {
  std::vector<float> keys, values, bias;
  KvHeadView View(bool with_bias) const {
    return {keys.data(), values.data(), with_bias ? bias.data() : nullptr,
            static_cast<int64_t>(bias.size())};
  }
};

std::vector<float> Random(size_t n, std::mt19937& rng, float sd = 1) {
  std::normal_distribution<float> d(0, sd);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

Segment RandomSegment(int64_t n, std::mt19937& rng) {
  return {Random(n * kDim, rng), Random(n * kDim, rng), Random(n, rng, 0.5f)};
}

// Straight from the definition, in double: query t of head g sees the first n - nq + t + 1
// entries of KV head g / group.
std::vector<double> Naive(const std::vector<float>& q, int64_t nq, const std::vector<Segment>& kv,
                          bool with_bias) {
  std::vector<double> out(nq * kHeads * kDim, 0.0);
  const double scale = 1 / std::sqrt(double(kDim));
  for (int64_t t = 0; t < nq; ++t) {
    for (int g = 0; g < kHeads; ++g) {
      const Segment& s = kv[g / (kHeads / kKvHeads)];
      const int64_t visible = int64_t(s.bias.size()) - nq + t + 1;
      std::vector<double> logit(visible);
      double max = -INFINITY, sum = 0;
      for (int64_t i = 0; i < visible; ++i) {
        double dot = 0;
        for (int j = 0; j < kDim; ++j)
          dot += double(q[(t * kHeads + g) * kDim + j]) * s.keys[i * kDim + j];
        logit[i] = dot * scale + (with_bias ? s.bias[i] : 0.0);
        max = std::max(max, logit[i]);
      }
      for (auto& l : logit) sum += (l = std::exp(l - max));
      for (int64_t i = 0; i < visible; ++i) {
        for (int j = 0; j < kDim; ++j) {
          out[(t * kHeads + g) * kDim + j] += logit[i] / sum * s.values[i * kDim + j];
        }
      }
    }
  }
  return out;
}

std::vector<float> RunAttention(const std::vector<float>& q, int64_t nq,
                                const std::vector<Segment>& kv, bool with_bias, ThreadPool* pool) {
  std::vector<KvHeadView> views;
  for (const auto& s : kv) views.push_back(s.View(with_bias));
  std::vector<float> out(nq * kHeads * kDim);
  const AttentionShape shape{nq, kHeads, kKvHeads, kDim, 1 / std::sqrt(float(kDim))};
  Attention(shape, q.data(), views.data(), out.data(), pool);
  return out;
}

void ExpectClose(const std::vector<float>& got, const std::vector<double>& want, double tol) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) ASSERT_NEAR(got[i], want[i], tol) << i;
}

class AttentionTest : public ::testing::TestWithParam<int64_t> {};  // queries per step

TEST_P(AttentionTest, RaggedBiasedMatchesNaive) {
  const int64_t nq = GetParam();
  std::mt19937 rng(21);
  std::vector<Segment> kv = {RandomSegment(nq + 40, rng), RandomSegment(nq + 3, rng)};
  const auto q = Random(nq * kHeads * kDim, rng);
  ThreadPool pool(2);
  ExpectClose(RunAttention(q, nq, kv, true, &pool), Naive(q, nq, kv, true), 1e-5);
  ExpectClose(RunAttention(q, nq, kv, false, nullptr), Naive(q, nq, kv, false), 1e-5);
}

TEST_P(AttentionTest, FullCacheWithZeroBiasIsCausalAttention) {
  const int64_t nq = GetParam();
  std::mt19937 rng(22);
  std::vector<Segment> kv = {RandomSegment(nq, rng), RandomSegment(nq, rng)};
  for (auto& s : kv) std::fill(s.bias.begin(), s.bias.end(), 0.0f);
  const auto q = Random(nq * kHeads * kDim, rng);
  ThreadPool pool(2);
  // An explicit zero bias and no bias at all are the same computation, bit for bit.
  EXPECT_EQ(RunAttention(q, nq, kv, true, &pool), RunAttention(q, nq, kv, false, &pool));
  ExpectClose(RunAttention(q, nq, kv, false, &pool), Naive(q, nq, kv, false), 1e-5);
}

TEST_P(AttentionTest, LongRaggedSegmentsSplitIntoSlicesMatchNaive) {
  const int64_t nq = GetParam();
  std::mt19937 rng(24);
  // 1000 entries split into slices; the 3-entry head leaves most of its slices empty.
  std::vector<Segment> kv = {RandomSegment(nq + 1000, rng), RandomSegment(nq + 3, rng)};
  const auto q = Random(nq * kHeads * kDim, rng);
  ThreadPool pool(2);
  ExpectClose(RunAttention(q, nq, kv, true, &pool), Naive(q, nq, kv, true), 1e-5);
}

INSTANTIATE_TEST_SUITE_P(QueriesPerStep, AttentionTest, ::testing::Values(1, 2, 37, 150));

TEST(Attention, EntryRepeatedPTimesEqualsOneEntryWithLogP) {
  std::mt19937 rng(23);
  const int p = 5, n = 20, dup = 7;
  Segment base = RandomSegment(n, rng);
  std::fill(base.bias.begin(), base.bias.end(), 0.0f);
  Segment repeated = base, voted = base;
  voted.bias[dup] = std::log(float(p));
  for (int k = 1; k < p; ++k) {  // p - 1 extra copies, inserted before the decode entry
    repeated.keys.insert(repeated.keys.begin(), base.keys.begin() + dup * kDim,
                         base.keys.begin() + (dup + 1) * kDim);
    repeated.values.insert(repeated.values.begin(), base.values.begin() + dup * kDim,
                           base.values.begin() + (dup + 1) * kDim);
    repeated.bias.insert(repeated.bias.begin(), 0.0f);
  }
  const auto q = Random(kHeads * kDim, rng);
  const auto a = RunAttention(q, 1, {repeated, repeated}, true, nullptr);
  const auto b = RunAttention(q, 1, {voted, voted}, true, nullptr);
  for (size_t i = 0; i < a.size(); ++i) {
    ASSERT_NEAR(a[i], b[i], 1e-6 * std::fabs(b[i]) + 1e-7) << i;
  }
}

}  // namespace
}  // namespace kvwire::kernels
