#include "kvwire/format/dtype.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>

namespace kvwire::format {
namespace {

TEST(DType, EveryHalfRoundTripsThroughFloat) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = HalfToFloat(static_cast<uint16_t>(h));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(HalfToFloat(FloatToHalf(f)))) << h;
      continue;
    }
    EXPECT_EQ(FloatToHalf(f), h) << "half 0x" << std::hex << h;
  }
}

TEST(DType, HalfRoundsToNearestEven) {
  // 1 + 2^-11 lies exactly between 1 and 1 + 2^-10: ties to the even mantissa (1.0).
  EXPECT_EQ(FloatToHalf(1.0f + std::ldexp(1.0f, -11)), 0x3c00);
  // 1 + 3*2^-11 lies between 1+2^-10 (odd) and 1+2^-9 (even): rounds up to even.
  EXPECT_EQ(FloatToHalf(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);
  EXPECT_EQ(FloatToHalf(65504.0f), 0x7bff);
  EXPECT_EQ(FloatToHalf(65520.0f), 0x7c00);  // Ties to even -> overflows to +inf.
  EXPECT_EQ(FloatToHalf(-std::numeric_limits<float>::infinity()), 0xfc00);
  EXPECT_EQ(FloatToHalf(std::ldexp(1.0f, -24)), 0x0001);  // Smallest subnormal.
  EXPECT_EQ(FloatToHalf(std::ldexp(1.0f, -26)), 0x0000);  // Below half of it: zero.
}

TEST(DType, HalfMatchesReferenceRoundingOnRandomFloats) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> dist(-70000.0f, 70000.0f);
  for (int i = 0; i < 100000; ++i) {
    const float f = dist(rng) * std::ldexp(1.0f, static_cast<int>(rng() % 30) - 20);
    const float back = HalfToFloat(FloatToHalf(f));
    if (std::isinf(back)) {
      EXPECT_GE(std::fabs(f), 65520.0f);
      continue;
    }
    // Round-to-nearest: the error is at most half a unit in the last place of the half result.
    const float ulp = std::fabs(back) >= std::ldexp(1.0f, -14)
                          ? std::ldexp(1.0f, std::ilogb(back) - 10)
                          : std::ldexp(1.0f, -24);
    EXPECT_LE(std::fabs(back - f), ulp / 2 * 1.0001f) << f;
  }
}

TEST(DType, BFloat16RoundsToNearestEvenAndKeepsNaN) {
  EXPECT_EQ(FloatToBf16(1.0f), 0x3f80);
  // 1 + 2^-8 is a tie between 1 and 1 + 2^-7: to even (1.0).
  EXPECT_EQ(FloatToBf16(1.0f + std::ldexp(1.0f, -8)), 0x3f80);
  EXPECT_EQ(FloatToBf16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3f82);
  EXPECT_TRUE(std::isnan(Bf16ToFloat(FloatToBf16(std::nanf("")))));
  for (uint32_t b = 0; b < 0x10000; ++b) {
    const float f = Bf16ToFloat(static_cast<uint16_t>(b));
    if (!std::isnan(f)) {
      EXPECT_EQ(FloatToBf16(f), b);
    }
  }
}

TEST(DType, PackUnpackRoundTrips) {
  const float in[] = {0.0f, -1.5f, 3.25f, 1e-3f, 12345.0f};
  for (DType t : {DType::kF32, DType::kF16, DType::kBF16}) {
    std::vector<uint8_t> bytes(sizeof(in) / 4 * DTypeSize(t));
    PackFloats(in, 5, t, bytes.data());
    float out[5];
    UnpackFloats(bytes.data(), 5, t, out);
    for (int i = 0; i < 5; ++i) EXPECT_NEAR(out[i], in[i], std::fabs(in[i]) * 0.01f) << DTypeName(t);
  }
}

TEST(DType, ParsesNames) {
  DType t;
  EXPECT_TRUE(ParseDType("fp16", &t));
  EXPECT_EQ(t, DType::kF16);
  EXPECT_TRUE(ParseDType("int8", &t));
  EXPECT_EQ(t, DType::kI8);
  EXPECT_FALSE(ParseDType("f64", &t));
  EXPECT_FALSE(IsValidDType(4));
}

}  // namespace
}  // namespace kvwire::format
