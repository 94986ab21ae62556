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

namespace {

template <uint16_t (*kEncode)(float)>
void Pack16(const float* in, size_t n, uint8_t* out) {
  for (size_t i = 0; i < n; ++i) {
    const uint16_t v = kEncode(in[i]);
    std::memcpy(out + 2 * i, &v, 2);
  }
}

template <float (*kDecode)(uint16_t)>
void Unpack16(const uint8_t* in, size_t n, float* out) {
  for (size_t i = 0; i < n; ++i) {
    uint16_t v;
    std::memcpy(&v, in + 2 * i, 2);
    out[i] = kDecode(v);
  }
}

}  // namespace

void PackFloats(const float* in, size_t n, DType t, uint8_t* out) {
  if (n == 0) return;  // Empty spans may carry null pointers; memcpy must not see them.
  switch (t) {
    case DType::kF32:
      std::memcpy(out, in, n * 4);
      return;
    case DType::kF16:
      return Pack16<FloatToHalf>(in, n, out);
    case DType::kBF16:
      return Pack16<FloatToBf16>(in, n, out);
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
      return Unpack16<HalfToFloat>(in, n, out);
    case DType::kBF16:
      return Unpack16<Bf16ToFloat>(in, n, out);
    case DType::kI8:
      break;
  }
  __builtin_trap();
}

}  // namespace kvwire::format
