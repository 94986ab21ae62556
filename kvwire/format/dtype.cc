#include "kvwire/format/dtype.h"

#include <cmath>
#include <cstring>

namespace kvwire::format {

size_t DTypeSize(DType t) {
  switch (t) {
    case DType::kF32: return 4;
    case DType::kF16: return 2;
    case DType::kBF16: return 2;
    case DType::kI8: return 1;
  }
  return 0;
}

bool IsValidDType(uint8_t raw) { return raw <= static_cast<uint8_t>(DType::kI8); }

absl::string_view DTypeName(DType t) {
  switch (t) {
    case DType::kF32: return "f32";
    case DType::kF16: return "f16";
    case DType::kBF16: return "bf16";
    case DType::kI8: return "i8";
  }
  return "invalid";
}

bool ParseDType(absl::string_view text, DType* out) {
  if (text == "f32" || text == "fp32") *out = DType::kF32;
  else if (text == "f16" || text == "fp16") *out = DType::kF16;
  else if (text == "bf16") *out = DType::kBF16;
  else if (text == "i8" || text == "int8") *out = DType::kI8;
  else return false;
  return true;
}

uint16_t FloatToHalf(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t abs = x & 0x7fffffffu;
  if (abs >= 0x7f800000u) {  // Inf or NaN; keep NaN quiet and non-zero.
    return static_cast<uint16_t>(sign | 0x7c00u | (abs > 0x7f800000u ? 0x200u : 0u));
  }
  if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // Rounds to Inf.
  if (abs < 0x38800000u) {  // Subnormal half or zero: scale by 2^24 and round.
    const float scaled = std::ldexp(std::fabs(f), 24);
    const auto m = static_cast<uint32_t>(std::nearbyint(scaled));  // RNE in default mode.
    return static_cast<uint16_t>(sign | m);
  }
  // Normal: rebias exponent, round mantissa 23 -> 10 bits to nearest even.
  uint32_t h = ((abs - 0x38000000u) >> 13);
  const uint32_t rest = abs & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;
  return static_cast<uint16_t>(sign | h);
}

float HalfToFloat(uint16_t h) {
  const uint32_t sign = (static_cast<uint32_t>(h) & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  uint32_t x;
  if (exp == 0) {
    const float v = std::ldexp(static_cast<float>(mant), -24);
    std::memcpy(&x, &v, 4);
    x |= sign;
  } else if (exp == 31) {
    x = sign | 0x7f800000u | (mant << 13);
  } else {
    x = sign | ((exp + 112u) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}

uint16_t FloatToBFloat16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40u);  // NaN
  x += 0x7fffu + ((x >> 16) & 1u);
  return static_cast<uint16_t>(x >> 16);
}

float BFloat16ToFloat(uint16_t b) {
  const uint32_t x = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}

void PackFloats(const float* in, size_t n, DType t, uint8_t* out) {
  if (n == 0) return;  // Empty spans may carry null pointers; memcpy must not see them.
  switch (t) {
    case DType::kF32:
      std::memcpy(out, in, n * 4);
      return;
    case DType::kF16:
      for (size_t i = 0; i < n; ++i) {
        const uint16_t h = FloatToHalf(in[i]);
        std::memcpy(out + 2 * i, &h, 2);
      }
      return;
    case DType::kBF16:
      for (size_t i = 0; i < n; ++i) {
        const uint16_t b = FloatToBFloat16(in[i]);
        std::memcpy(out + 2 * i, &b, 2);
      }
      return;
    case DType::kI8:
      break;
  }
  __builtin_trap();  // int8 needs scales: callers use the quantizing paths.
}

void UnpackFloats(const uint8_t* in, size_t n, DType t, float* out) {
  if (n == 0) return;
  switch (t) {
    case DType::kF32:
      std::memcpy(out, in, n * 4);
      return;
    case DType::kF16:
      for (size_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, in + 2 * i, 2);
        out[i] = HalfToFloat(h);
      }
      return;
    case DType::kBF16:
      for (size_t i = 0; i < n; ++i) {
        uint16_t b;
        std::memcpy(&b, in + 2 * i, 2);
        out[i] = BFloat16ToFloat(b);
      }
      return;
    case DType::kI8:
      break;
  }
  __builtin_trap();
}

}  // namespace kvwire::format
