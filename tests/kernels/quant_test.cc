#include "kvwire/kernels/quant.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "tests/kernels/reference_quant.h"

namespace kvwire::kernels {
namespace {

using testing::AllTypes;
using testing::RandomRow;
using testing::ReferenceElement;

class QuantTypeTest : public ::testing::TestWithParam<QuantType> {};

std::string TypeName(const ::testing::TestParamInfo<QuantType>& info) {
  return Info(info.param).name;
}

constexpr int64_t kRowElems = 1024;

TEST_P(QuantTypeTest, DequantizeMatchesSpecReference) {
  std::mt19937 rng(7);
  const auto row = RandomRow(GetParam(), kRowElems, rng);
  std::vector<float> out(kRowElems);
  DequantizeRow(GetParam(), row.data(), out.data(), kRowElems);
  for (int64_t i = 0; i < kRowElems; ++i) {
    const double ref = ReferenceElement(GetParam(), row.data(), i);
    ASSERT_NEAR(out[i], ref, 1e-6 * std::fabs(ref) + 1e-7) << "element " << i;
  }
}

double ReferenceDot(QuantType type, const uint8_t* row, const float* x, int64_t n) {
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += ReferenceElement(type, row, i) * x[i];
  return sum;
}

TEST_P(QuantTypeTest, FusedDotMatchesDequantizeThenDot) {
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> u(-1, 1);
  const auto row = RandomRow(GetParam(), kRowElems, rng);
  std::vector<float> x(kRowElems), w(kRowElems);
  for (auto& v : x) v = u(rng);
  DequantizeRow(GetParam(), row.data(), w.data(), kRowElems);
  double expected = 0, magnitude = 0;
  for (int64_t i = 0; i < kRowElems; ++i) {
    expected += static_cast<double>(w[i]) * x[i];
    magnitude += std::fabs(static_cast<double>(w[i]) * x[i]);
  }
  const double tol = 1e-5 * magnitude;
  EXPECT_NEAR(DotRow(GetParam(), row.data(), x.data(), kRowElems), expected, tol);
  EXPECT_NEAR(DotRowPortable(GetParam(), row.data(), x.data(), kRowElems), expected, tol);
  EXPECT_NEAR(ReferenceDot(GetParam(), row.data(), x.data(), kRowElems), expected, tol);
}

TEST_P(QuantTypeTest, QuantizeRoundTripStaysWithinOneStep) {
  std::mt19937 rng(3);
  std::normal_distribution<float> n(0, 1);
  std::vector<float> x(kRowElems), back(kRowElems);
  float amax = 0;
  for (auto& v : x) {
    v = n(rng);
    amax = std::max(amax, std::fabs(v));
  }
  std::vector<uint8_t> bytes(RowBytes(GetParam(), kRowElems));
  if (!CanQuantize(GetParam())) {  // no quantizer: says so instead of writing garbage
    EXPECT_FALSE(QuantizeRow(GetParam(), x.data(), bytes.data(), kRowElems));
    return;
  }
  ASSERT_TRUE(QuantizeRow(GetParam(), x.data(), bytes.data(), kRowElems));
  DequantizeRow(GetParam(), bytes.data(), back.data(), kRowElems);
  // 4-bit codes over a block range of at most 2*amax: the step is <= 2*amax/15; K types add the
  // rounding of their 6/8-bit scales, hence the slack.
  double max_err = 0;
  for (int64_t i = 0; i < kRowElems; ++i)
    max_err = std::max(max_err, double(std::fabs(x[i] - back[i])));
  EXPECT_LT(max_err, 2.5 * amax / 15) << Info(GetParam()).name;
}

INSTANTIATE_TEST_SUITE_P(AllTypes, QuantTypeTest, ::testing::ValuesIn(AllTypes()), TypeName);

TEST(HalfConversion, EveryHalfRoundTripsAndMatchesCompiler) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = HalfToFloat(static_cast<uint16_t>(h));
    _Float16 hf;
    const uint16_t bits = static_cast<uint16_t>(h);
    std::memcpy(&hf, &bits, 2);
    if (std::isnan(f)) {
      ASSERT_TRUE(std::isnan(static_cast<float>(hf)));
      continue;
    }
    ASSERT_EQ(f, static_cast<float>(hf)) << h;
    ASSERT_EQ(FloatToHalf(f), h) << h;
  }
}

TEST(HalfConversion, RoundsToNearestEvenLikeCompiler) {
  std::mt19937 rng(5);
  std::uniform_int_distribution<uint32_t> bits(0, 0xFFFFFFFF);
  for (int i = 0; i < 200000; ++i) {
    uint32_t b = bits(rng);
    float f;
    std::memcpy(&f, &b, 4);
    if (std::isnan(f)) continue;
    const _Float16 expected = static_cast<_Float16>(f);
    uint16_t expected_bits;
    std::memcpy(&expected_bits, &expected, 2);
    ASSERT_EQ(FloatToHalf(f), expected_bits) << f;
  }
}

TEST(Bf16Conversion, RoundsToNearestEven) {
  EXPECT_EQ(FloatToBf16(1.0f), 0x3F80);
  EXPECT_EQ(Bf16ToFloat(0x3F80), 1.0f);
  // 1 + 2^-8 is exactly halfway between two bf16 values: ties to the even mantissa (1.0).
  EXPECT_EQ(FloatToBf16(1.0f + std::ldexp(1.0f, -8)), 0x3F80);
  EXPECT_EQ(FloatToBf16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3F82);
}

TEST(QuantTypeTable, RowBytesRejectsPartialBlocks) {
  EXPECT_EQ(RowBytes(QuantType::kQ4_1, 64), 40);
  EXPECT_EQ(RowBytes(QuantType::kQ6_K, 256), 210);
  EXPECT_EQ(RowBytes(QuantType::kQ4_0, 33), -1);
  EXPECT_EQ(RowBytes(QuantType::kF32, -1), -1);
  EXPECT_EQ(FindQuantType(16), nullptr);  // IQ2_XXS: known to GGML, not implemented
  EXPECT_TRUE(IsKnownGgmlTypeId(16));
  EXPECT_FALSE(IsKnownGgmlTypeId(4));
  EXPECT_FALSE(IsKnownGgmlTypeId(1000));
}

}  // namespace
}  // namespace kvwire::kernels
