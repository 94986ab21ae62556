// The kernels the device compressor added to kernels/cuda: position and recency fills (exact) and
// the +critical value-output norms against kvwire::kernels::ValueOutputNorms (sgemm on the CPU,
// per-thread fma chains on the device: 1e-4 relative + 1e-5 absolute).
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <vector>

#include "kernels/cuda/sequence.h"
#include "kernels/cuda/value_norms.h"
#include "kvwire/kernels/compress.h"
#include "tests/kernels_gpu/gpu_test_util.h"

namespace kvwire::kernels::cuda {
namespace {

using testing::RandomNormal;
using testing::ToleranceRatio;

using DeviceFills = testing::GpuTest;

TEST_F(DeviceFills, PositionsAndRecencyScores) {
  const int64_t n = 1000;
  DeviceBuffer pos = Zeros<int32_t>(n);
  ASSERT_TRUE(FillPositions(ctx(), pos.as<int32_t>(), n, 17).ok());
  ASSERT_TRUE(OffsetPositions(ctx(), pos.as<int32_t>(), n, 3).ok());
  std::vector<int32_t> want(n);
  for (int64_t i = 0; i < n; ++i) want[i] = static_cast<int32_t>(20 + i);
  EXPECT_EQ(Down<int32_t>(pos, n), want);
  DeviceBuffer rec = Zeros<float>(3 * n);
  ASSERT_TRUE(FillRecencyScores(ctx(), rec.as<float>(), 3, n).ok());
  std::vector<float> want_rec(3 * n);
  for (int64_t k = 0; k < 3 * n; ++k) {
    want_rec[k] = static_cast<float>(k % n + 1) / static_cast<float>(n);
  }
  EXPECT_EQ(Down<float>(rec, 3 * n), want_rec);
  EXPECT_EQ(FillPositions(ctx(), pos.as<int32_t>(), n, INT32_MAX - 10).code(),
            absl::StatusCode::kInvalidArgument);
}

struct NormCase {
  int n_heads, n_kv_heads, head_dim, hidden;
  int64_t length;
};

class ValueNormParity : public testing::GpuParamTest<NormCase> {};

TEST_P(ValueNormParity, MatchesTheCpu) {
  const NormCase& c = GetParam();
  std::mt19937 rng(static_cast<unsigned>(c.length + c.head_dim));
  const std::vector<float> values = RandomNormal(c.length * c.n_kv_heads * c.head_dim, rng);
  const std::vector<float> wo =
      RandomNormal(static_cast<size_t>(c.hidden) * c.n_heads * c.head_dim, rng, 0.05f);
  DeviceBuffer d_values = Up(values), d_wo = Up(wo), d_out = Zeros<float>(c.length);
  const int64_t stride = int64_t{c.n_kv_heads} * c.head_dim;
  for (int h = 0; h < c.n_kv_heads; ++h) {
    std::vector<float> want(c.length);
    kernels::ValueOutputNorms({values.data() + h * c.head_dim, stride, c.length}, wo.data(),
                              c.hidden, c.n_heads, c.n_kv_heads, c.head_dim, h, want.data(),
                              nullptr);
    ASSERT_TRUE(ValueOutputNorms(ctx(), {d_values.as<float>() + h * c.head_dim, stride, c.length},
                                 d_wo.as<float>(), c.hidden, c.n_heads, c.n_kv_heads, c.head_dim, h,
                                 d_out.as<float>())
                    .ok());
    EXPECT_LE(ToleranceRatio(Down<float>(d_out, c.length), want, 1e-5, 1e-4), 1.0) << "head " << h;
  }
}

INSTANTIATE_TEST_SUITE_P(DeviceFills, ValueNormParity,
                         ::testing::Values(NormCase{9, 3, 64, 576, 301},
                                           NormCase{32, 8, 128, 4096, 130},
                                           NormCase{4, 4, 256, 100, 17}));

}  // namespace
}  // namespace kvwire::kernels::cuda
