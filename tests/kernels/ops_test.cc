#include "kvwire/kernels/ops.h"

#include <gtest/gtest.h>

#include <cmath>
#include <complex>
#include <random>
#include <vector>

namespace kvwire::kernels {
namespace {

std::vector<float> Random(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0, 1);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

TEST(RmsNorm, MatchesDefinition) {
  const int n = 96, rows = 3;
  auto x = Random(rows * n, 1), w = Random(n, 2);
  std::vector<float> y(rows * n);
  RmsNorm(x.data(), w.data(), rows, n, 1e-5f, y.data());
  for (int r = 0; r < rows; ++r) {
    double ss = 0;
    for (int i = 0; i < n; ++i) ss += double(x[r * n + i]) * x[r * n + i];
    const double inv = 1 / std::sqrt(ss / n + 1e-5);
    for (int i = 0; i < n; ++i) ASSERT_NEAR(y[r * n + i], x[r * n + i] * inv * w[i], 1e-5);
  }
}

// Rotation of pair (a, b) as multiplication of the complex number a + ib by e^{i pos freq}.
void NaiveRope(std::vector<float>& v, int head_dim, int pos, float theta, bool adjacent) {
  for (int i = 0; i < head_dim / 2; ++i) {
    const int a = adjacent ? 2 * i : i, b = adjacent ? 2 * i + 1 : i + head_dim / 2;
    const double angle = pos / std::pow(double(theta), 2.0 * i / head_dim);
    const std::complex<double> z = std::complex<double>(v[a], v[b]) * std::polar(1.0, angle);
    v[a] = float(z.real());
    v[b] = float(z.imag());
  }
}

TEST(Rope, MatchesComplexRotationInBothStyles) {
  const int heads = 2, d = 64, tokens = 3;
  const int32_t positions[tokens] = {0, 17, 4000};
  for (bool adjacent : {true, false}) {
    auto x = Random(tokens * heads * d, 3);
    auto expected = x;
    Rope(x.data(), tokens, heads, d, positions, 100000.0f,
         adjacent ? RopeStyle::kAdjacent : RopeStyle::kHalves);
    for (int t = 0; t < tokens; ++t) {
      for (int h = 0; h < heads; ++h) {
        std::vector<float> v(expected.begin() + (t * heads + h) * d,
                             expected.begin() + (t * heads + h + 1) * d);
        NaiveRope(v, d, positions[t], 100000.0f, adjacent);
        for (int i = 0; i < d; ++i) ASSERT_NEAR(x[(t * heads + h) * d + i], v[i], 2e-5);
      }
    }
  }
}

TEST(Rope, PositionZeroIsIdentity) {
  auto x = Random(64, 4);
  auto y = x;
  const int32_t pos = 0;
  Rope(y.data(), 1, 1, 64, &pos, 10000.0f, RopeStyle::kAdjacent);
  EXPECT_EQ(x, y);
}

TEST(Softmax, SumsToOneAndIsShiftInvariant) {
  std::vector<float> a = {1000.0f, 1001.0f, 999.0f}, b = {0.0f, 1.0f, -1.0f};
  Softmax(a.data(), 3);
  Softmax(b.data(), 3);
  for (int i = 0; i < 3; ++i) EXPECT_NEAR(a[i], b[i], 1e-6);
  EXPECT_NEAR(a[0] + a[1] + a[2], 1.0, 1e-6);
}

TEST(SwiGlu, IsSiluOfGateTimesUp) {
  auto g = Random(40, 5), u = Random(40, 6);
  std::vector<float> out(40);
  SwiGlu(g.data(), u.data(), 40, out.data());
  for (int i = 0; i < 40; ++i) {
    ASSERT_NEAR(out[i], g[i] / (1 + std::exp(-double(g[i]))) * u[i], 1e-5);
  }
}

TEST(Dot, HandlesTailsAndMatchesDouble) {
  for (int n : {0, 1, 15, 16, 17, 100}) {
    auto a = Random(n, 7), b = Random(n, 8);
    double e = 0;
    for (int i = 0; i < n; ++i) e += double(a[i]) * b[i];
    EXPECT_NEAR(Dot(a.data(), b.data(), n), e, 1e-4) << n;
  }
}

}  // namespace
}  // namespace kvwire::kernels
