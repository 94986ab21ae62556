// Block operations and 16-bit weight products on the device against kernels/cpu.
//
// Tolerances: RmsNorm/Softmax/SwiGlu/Rope 1e-5 relative + 1e-6 absolute (fp32, other summation
// order and exp); AddInPlace exact; dequantization exact (the device value before 16-bit
// rounding equals DequantizeRow's); MatMul within 2^-9 (fp16) or 2^-6 (bf16) of sum |W x|,
// covering the activations' rounding to 16 bits.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "kernels/cuda/matmul.h"
#include "kernels/cuda/ops.h"
#include "kvwire/kernels/matmul.h"
#include "kvwire/kernels/ops.h"
#include "kvwire/kernels/quant.h"
#include "tests/kernels/reference_quant.h"
#include "tests/kernels_gpu/gpu_test_util.h"

namespace kvwire::kernels::cuda {
namespace {

using testing::RandomNormal;
using testing::ToleranceRatio;

class OpsParity : public testing::GpuTest {};

TEST_F(OpsParity, RmsNormSoftmaxSwiGluAddMatchCpu) {
  std::mt19937 rng(3);
  for (int64_t n : {1, 64, 576, 1537}) {
    const int64_t rows = 5;
    const std::vector<float> x = RandomNormal(rows * n, rng), w = RandomNormal(n, rng);
    std::vector<float> want(rows * n);
    kernels::RmsNorm(x.data(), w.data(), rows, n, 1e-5f, want.data());
    DeviceBuffer dx = Up(x), dw = Up(w), dy = Zeros<float>(rows * n);
    ASSERT_TRUE(
        RmsNorm(ctx(), dx.as<float>(), dw.as<float>(), rows, n, 1e-5f, dy.as<float>()).ok());
    EXPECT_LE(ToleranceRatio(Down<float>(dy, rows * n), want, 1e-6, 1e-5), 1.0) << "RmsNorm " << n;

    std::vector<float> sm = RandomNormal(n, rng, 4.0f);
    DeviceBuffer dsm = Up(sm);
    kernels::Softmax(sm.data(), n);
    ASSERT_TRUE(Softmax(ctx(), dsm.as<float>(), n).ok());
    EXPECT_LE(ToleranceRatio(Down<float>(dsm, n), sm, 1e-7, 1e-5), 1.0) << "Softmax " << n;

    const std::vector<float> g = RandomNormal(n, rng, 3.0f), u = RandomNormal(n, rng);
    std::vector<float> glu(n);
    kernels::SwiGlu(g.data(), u.data(), n, glu.data());
    DeviceBuffer dg = Up(g), du = Up(u), dglu = Zeros<float>(n);
    ASSERT_TRUE(SwiGlu(ctx(), dg.as<float>(), du.as<float>(), n, dglu.as<float>()).ok());
    EXPECT_LE(ToleranceRatio(Down<float>(dglu, n), glu, 1e-6, 1e-5), 1.0) << "SwiGlu " << n;

    std::vector<float> acc = g;
    kernels::AddInPlace(acc.data(), u.data(), n);
    ASSERT_TRUE(AddInPlace(ctx(), dg.as<float>(), du.as<float>(), n).ok());
    EXPECT_EQ(Down<float>(dg, n), acc) << "AddInPlace " << n;
  }
}

TEST_F(OpsParity, RopeMatchesCpuInBothStyles) {
  std::mt19937 rng(4);
  for (RopeStyle style : {RopeStyle::kAdjacent, RopeStyle::kHalves}) {
    for (int head_dim : {64, 128}) {
      const int64_t tokens = 37;
      const int heads = 9;
      std::vector<float> x = RandomNormal(tokens * heads * head_dim, rng);
      std::vector<int32_t> pos(tokens);
      for (int64_t t = 0; t < tokens; ++t) pos[t] = static_cast<int32_t>(t * 211 + 5);
      DeviceBuffer dx = Up(x), dp = Up(pos);
      kernels::Rope(x.data(), tokens, heads, head_dim, pos.data(), 100000.0f, style);
      ASSERT_TRUE(
          Rope(ctx(), dx.as<float>(), tokens, heads, head_dim, dp.as<int32_t>(), 100000.0f, style)
              .ok());
      EXPECT_LE(ToleranceRatio(Down<float>(dx, x.size()), x, 1e-6, 1e-5), 1.0);
    }
  }
}

class MatMulParity : public testing::GpuParamTest<std::tuple<QuantType, HalfType>> {};

TEST_P(MatMulParity, DequantizesExactlyAndMultipliesWithinHalfPrecision) {
  const auto [type, half] = GetParam();
  const int64_t rows = 96, cols = 512;
  std::mt19937 rng(static_cast<unsigned>(type) * 17 + 1);
  std::vector<uint8_t> w;
  for (int64_t r = 0; r < rows; ++r) {
    const std::vector<uint8_t> row = kernels::testing::RandomRow(type, cols, rng);
    w.insert(w.end(), row.begin(), row.end());
  }
  const bool bf16 = half == HalfType::kBF16;
  std::vector<uint16_t> want16(rows * cols);
  std::vector<float> row_f(cols);
  for (int64_t r = 0; r < rows; ++r) {
    DequantizeRow(type, w.data() + r * RowBytes(type, cols), row_f.data(), cols);
    for (int64_t c = 0; c < cols; ++c) {
      want16[r * cols + c] = bf16 ? FloatToBf16(row_f[c]) : FloatToHalf(row_f[c]);
    }
  }
  absl::StatusOr<DeviceMatrix> m = DeviceMatrix::Upload(ctx(), {type, w.data(), rows, cols}, half);
  ASSERT_TRUE(m.ok()) << m.status();
  std::vector<uint16_t> got16(rows * cols);
  ASSERT_TRUE(
      FromCuda(cudaMemcpy(got16.data(), m->data(), got16.size() * 2, cudaMemcpyDeviceToHost),
               "cudaMemcpy")
          .ok());
  EXPECT_EQ(got16, want16);

  for (int64_t n_tokens : {1, 7, 33}) {
    const std::vector<float> x = testing::RandomUniform(n_tokens * cols, rng, -1.0f, 1.0f);
    std::vector<float> want(n_tokens * rows);
    kernels::MatMul({type, w.data(), rows, cols}, x.data(), n_tokens, want.data(), nullptr);
    DeviceBuffer dx = Up(x), dy = Zeros<float>(n_tokens * rows);
    ASSERT_TRUE(MatMul(ctx(), *m, dx.as<float>(), n_tokens, dy.as<float>()).ok());
    const std::vector<float> got = Down<float>(dy, n_tokens * rows);
    const double tol = bf16 ? 1.0 / 64 : 1.0 / 512;
    for (int64_t t = 0; t < n_tokens; ++t) {
      for (int64_t r = 0; r < rows; ++r) {
        double magnitude = 0;
        for (int64_t c = 0; c < cols; ++c) {
          const uint16_t h = want16[r * cols + c];
          magnitude += std::fabs((bf16 ? Bf16ToFloat(h) : HalfToFloat(h)) * x[t * cols + c]);
        }
        ASSERT_NEAR(got[t * rows + r], want[t * rows + r], tol * magnitude + 1e-5)
            << "t=" << t << " r=" << r;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllTypes, MatMulParity,
                         ::testing::Combine(::testing::ValuesIn(kernels::testing::AllTypes()),
                                            ::testing::Values(HalfType::kF16, HalfType::kBF16)),
                         [](const auto& info) {
                           return std::string(Info(std::get<0>(info.param)).name) +
                                  (std::get<1>(info.param) == HalfType::kBF16 ? "_bf16" : "_f16");
                         });

}  // namespace
}  // namespace kvwire::kernels::cuda
