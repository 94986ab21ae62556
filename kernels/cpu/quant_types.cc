// Type table and scalar fp16/bf16 conversions.
#include <cassert>
#include <cstring>

#include "kernels/cpu/blocks.h"
#include "kvwire/kernels/quant.h"

namespace kvwire::kernels {
namespace {

using internal::kQk;
using internal::kQkK;

constexpr QuantTypeInfo kTypes[] = {
    {QuantType::kF32, "F32", 1, 4},
    {QuantType::kF16, "F16", 1, 2},
    {QuantType::kBF16, "BF16", 1, 2},
    {QuantType::kQ4_0, "Q4_0", kQk, sizeof(internal::BlockQ4_0)},
    {QuantType::kQ4_1, "Q4_1", kQk, sizeof(internal::BlockQ4_1)},
    {QuantType::kQ5_0, "Q5_0", kQk, sizeof(internal::BlockQ5_0)},
    {QuantType::kQ5_1, "Q5_1", kQk, sizeof(internal::BlockQ5_1)},
    {QuantType::kQ8_0, "Q8_0", kQk, sizeof(internal::BlockQ8_0)},
    {QuantType::kQ4_K, "Q4_K", kQkK, sizeof(internal::BlockQ4_K)},
    {QuantType::kQ5_K, "Q5_K", kQkK, sizeof(internal::BlockQ5_K)},
    {QuantType::kQ6_K, "Q6_K", kQkK, sizeof(internal::BlockQ6_K)},
};

}  // namespace

const QuantTypeInfo* FindQuantType(uint32_t ggml_type_id) {
  for (const auto& info : kTypes) {
    if (static_cast<uint32_t>(info.type) == ggml_type_id) return &info;
  }
  return nullptr;
}

bool IsKnownGgmlTypeId(uint32_t id) {
  // GGML ids 0..39, minus 4 and 5 (Q4_2/Q4_3, removed long ago).
  return id <= 39 && id != 4 && id != 5;
}

const QuantTypeInfo& Info(QuantType type) {
  const QuantTypeInfo* info = FindQuantType(static_cast<uint32_t>(type));
  assert(info != nullptr);
  return *info;
}

int64_t RowBytes(QuantType type, int64_t n) {
  const QuantTypeInfo& info = Info(type);
  if (n < 0 || n % info.block_elems != 0) return -1;
  return n / info.block_elems * info.block_bytes;
}

float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  const uint32_t exp = (h >> 10) & 0x1F;
  uint32_t mant = h & 0x3FF;
  uint32_t bits;
  if (exp == 0x1F) {
    bits = sign | 0x7F800000 | (mant << 13);
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (mant << 13);
  } else if (mant == 0) {
    bits = sign;
  } else {
    // Subnormal half: normalise the mantissa.
    int e = 113;
    while ((mant & 0x400) == 0) {
      mant <<= 1;
      --e;
    }
    bits = sign | (static_cast<uint32_t>(e) << 23) | ((mant & 0x3FF) << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t FloatToHalf(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint16_t sign = (x >> 16) & 0x8000;
  const uint32_t abs = x & 0x7FFFFFFF;
  if (abs >= 0x7F800000) return sign | 0x7C00 | (abs > 0x7F800000 ? 0x200 : 0);  // inf / nan
  if (abs >= 0x477FF000) return sign | 0x7C00;  // rounds past the largest half: inf
  if (abs < 0x38800000) {
    // Result is subnormal (or zero): scale into the 10-bit mantissa with rounding.
    if (abs < 0x33000000) return sign;
    const uint32_t mant = (abs & 0x7FFFFF) | 0x800000;
    const int shift = 126 - static_cast<int>(abs >> 23);  // 14..24
    uint32_t half = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1);
    const uint32_t mid = 1u << (shift - 1);
    if (rem > mid || (rem == mid && (half & 1))) ++half;
    return sign | static_cast<uint16_t>(half);
  }
  uint32_t half = ((abs >> 13) - (112u << 10));
  const uint32_t rem = abs & 0x1FFF;
  if (rem > 0x1000 || (rem == 0x1000 && (half & 1))) ++half;
  return sign | static_cast<uint16_t>(half);
}

float Bf16ToFloat(uint16_t h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t FloatToBf16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  if ((x & 0x7FFFFFFF) > 0x7F800000) return static_cast<uint16_t>((x >> 16) | 0x40);  // quiet nan
  const uint32_t rounding = 0x7FFF + ((x >> 16) & 1);
  return static_cast<uint16_t>((x + rounding) >> 16);
}

}  // namespace kvwire::kernels
