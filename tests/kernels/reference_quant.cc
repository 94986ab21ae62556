#include "tests/kernels/reference_quant.h"

#include <cmath>
#include <cstring>

namespace kvwire::kernels::testing {
namespace {

double Half(const uint8_t* p) {
  const int bits = p[0] | (p[1] << 8);
  const int sign = bits >> 15, exp = (bits >> 10) & 31, mant = bits & 1023;
  double v = exp == 0 ? std::ldexp(mant, -24) : std::ldexp(1024 + mant, exp - 25);
  if (exp == 31) v = mant ? NAN : INFINITY;
  return sign ? -v : v;
}

double Bf16(const uint8_t* p) {
  const uint32_t bits = static_cast<uint32_t>(p[0] | (p[1] << 8)) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

int Nibble(const uint8_t* qs, int j) {  // legacy layout: j < 16 low nibbles, j >= 16 high
  return j < 16 ? (qs[j] & 15) : (qs[j - 16] >> 4);
}

int Bit(const uint8_t* bytes, int k) { return (bytes[k / 8] >> (k % 8)) & 1; }

// Q4_K / Q5_K 6-bit scale (which = 0) or minimum (which = 1) of sub-block s.
int KScale(const uint8_t* sc, int s, int which) {
  if (s < 4) return sc[s + 4 * which] & 63;
  const int low = which == 0 ? (sc[s + 4] & 15) : (sc[s + 4] >> 4);
  const int high = sc[s - 4 + 4 * which] >> 6;
  return low | (high << 4);
}

// Code of element j within a K super-block's 4-bit array: groups of 64 share 32 bytes.
int KNibble(const uint8_t* qs, int j) {
  const uint8_t byte = qs[(j / 64) * 32 + j % 32];
  return (j % 64) < 32 ? (byte & 15) : (byte >> 4);
}

double LegacyElement(QuantType type, const uint8_t* b, int j) {
  switch (type) {
    case QuantType::kQ4_0:
      return Half(b) * (Nibble(b + 2, j) - 8);
    case QuantType::kQ4_1:
      return Half(b) * Nibble(b + 4, j) + Half(b + 2);
    case QuantType::kQ5_0:
      return Half(b) * ((Nibble(b + 6, j) | (Bit(b + 2, j) << 4)) - 16);
    case QuantType::kQ5_1:
      return Half(b) * (Nibble(b + 8, j) | (Bit(b + 4, j) << 4)) + Half(b + 2);
    case QuantType::kQ8_0:
      return Half(b) * static_cast<int8_t>(b[2 + j]);
    default:
      return NAN;
  }
}

double KElement(QuantType type, const uint8_t* b, int j) {
  if (type == QuantType::kQ6_K) {
    // ql: 4 bits of element j; qh: 2 bits; groups of 128 with 64 ql bytes and 32 qh bytes.
    const int g = j / 128, r = j % 128, quarter = r / 32, l = r % 32;
    const uint8_t lbyte = b[g * 64 + l + (quarter % 2) * 32];
    const int low = quarter < 2 ? (lbyte & 15) : (lbyte >> 4);
    const int high = (b[128 + g * 32 + l] >> (2 * quarter)) & 3;
    const int scale = static_cast<int8_t>(b[192 + j / 16]);
    return Half(b + 208) * scale * ((low | (high << 4)) - 32);
  }
  const int s = j / 32;
  int q = KNibble(b + (type == QuantType::kQ4_K ? 16 : 48), j);
  if (type == QuantType::kQ5_K) q |= ((b[16 + j % 32] >> s) & 1) << 4;
  return Half(b) * KScale(b + 4, s, 0) * q - Half(b + 2) * KScale(b + 4, s, 1);
}

void FillHalf(uint8_t* p, float v) {
  const uint16_t h = FloatToHalf(v);
  std::memcpy(p, &h, 2);
}

}  // namespace

double ReferenceElement(QuantType type, const uint8_t* row, int64_t i) {
  const QuantTypeInfo& info = Info(type);
  if (type == QuantType::kF32) {
    float f;
    std::memcpy(&f, row + 4 * i, 4);
    return f;
  }
  if (type == QuantType::kF16) return Half(row + 2 * i);
  if (type == QuantType::kBF16) return Bf16(row + 2 * i);
  const uint8_t* block = row + (i / info.block_elems) * info.block_bytes;
  const int j = static_cast<int>(i % info.block_elems);
  return info.block_elems == 32 ? LegacyElement(type, block, j) : KElement(type, block, j);
}

std::vector<uint8_t> RandomRow(QuantType type, int64_t n, std::mt19937& rng) {
  std::vector<uint8_t> bytes(static_cast<size_t>(RowBytes(type, n)));
  std::uniform_int_distribution<int> byte(0, 255);
  for (auto& b : bytes) b = static_cast<uint8_t>(byte(rng));
  std::uniform_real_distribution<float> scale(0.001f, 0.1f), value(-2.0f, 2.0f);
  const QuantTypeInfo& info = Info(type);
  if (info.block_elems == 1) {
    std::vector<float> v(static_cast<size_t>(n));
    for (auto& x : v) x = value(rng);
    QuantizeRow(type, v.data(), bytes.data(), n);
    return bytes;
  }
  for (int64_t b = 0; b < n / info.block_elems; ++b) {
    uint8_t* block = bytes.data() + b * info.block_bytes;
    if (type == QuantType::kQ6_K) {
      FillHalf(block + 208, scale(rng));
      continue;
    }
    FillHalf(block, scale(rng));
    const bool has_min = type == QuantType::kQ4_1 || type == QuantType::kQ5_1 ||
                         type == QuantType::kQ4_K || type == QuantType::kQ5_K;
    if (has_min) FillHalf(block + 2, value(rng) * 0.1f);
  }
  return bytes;
}

std::vector<QuantType> AllTypes() {
  return {QuantType::kF32,  QuantType::kF16,  QuantType::kBF16, QuantType::kQ4_0,
          QuantType::kQ4_1, QuantType::kQ5_0, QuantType::kQ5_1, QuantType::kQ8_0,
          QuantType::kQ4_K, QuantType::kQ5_K, QuantType::kQ6_K};
}

}  // namespace kvwire::kernels::testing
