#include "kvwire/kernels/matmul.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "tests/kernels/reference_quant.h"

namespace kvwire::kernels {
namespace {

class MatMulTest : public ::testing::TestWithParam<std::tuple<QuantType, int64_t>> {};

TEST_P(MatMulTest, MatchesDequantizedReferenceOnBothPaths) {
  const auto [type, n_tokens] = GetParam();
  const int64_t rows = 70, cols = 512;
  std::mt19937 rng(13);
  std::vector<uint8_t> w;
  for (int64_t r = 0; r < rows; ++r) {
    const auto row = testing::RandomRow(type, cols, rng);
    w.insert(w.end(), row.begin(), row.end());
  }
  std::uniform_real_distribution<float> u(-1, 1);
  std::vector<float> x(n_tokens * cols), y(n_tokens * rows);
  for (auto& v : x) v = u(rng);
  ThreadPool pool(2);
  MatMul({type, w.data(), rows, cols}, x.data(), n_tokens, y.data(), &pool);
  const int64_t row_bytes = RowBytes(type, cols);
  for (int64_t t = 0; t < n_tokens; ++t) {
    for (int64_t r = 0; r < rows; ++r) {
      double expected = 0, magnitude = 0;
      for (int64_t c = 0; c < cols; ++c) {
        const double p =
            testing::ReferenceElement(type, w.data() + r * row_bytes, c) * x[t * cols + c];
        expected += p;
        magnitude += std::fabs(p);
      }
      ASSERT_NEAR(y[t * rows + r], expected, 1e-5 * magnitude + 1e-6) << "t=" << t << " r=" << r;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    TypesAndBatch, MatMulTest,
    ::testing::Combine(::testing::Values(QuantType::kF32, QuantType::kF16, QuantType::kQ4_1,
                                         QuantType::kQ8_0, QuantType::kQ4_K, QuantType::kQ6_K),
                       ::testing::Values(int64_t{1}, int64_t{3}, kGemmMinTokens + 5)));

TEST(ThreadPool, CoversEveryIndexExactlyOnce) {
  ThreadPool pool(3);
  for (int64_t n : {0, 1, 2, 7, 1000}) {
    std::vector<int> hits(n, 0);
    pool.ParallelFor(n, 1, [&](int64_t a, int64_t b) {
      for (int64_t i = a; i < b; ++i) ++hits[i];
    });
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[i], 1) << "n=" << n << " i=" << i;
  }
}

TEST(ThreadPool, ManyBackToBackJobsEachCompleteBeforeReturning) {
  ThreadPool pool(2);
  std::vector<int64_t> sums(64);
  for (int job = 0; job < 20000; ++job) {
    const int64_t n = 1 + job % 64;
    std::fill(sums.begin(), sums.end(), 0);
    pool.ParallelFor(n, 1, [&](int64_t a, int64_t b) {
      for (int64_t i = a; i < b; ++i) sums[i] += i + 1;
    });
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(sums[i], i + 1) << "job " << job;
  }
}

}  // namespace
}  // namespace kvwire::kernels
