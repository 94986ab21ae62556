// kvwire/format/dtype.h — element types on the wire and their conversions.
//
// fp16 is IEEE binary16, bf16 the upper half of binary32; both converted from fp32 with
// round-to-nearest-even. int8 uses symmetric scales: value = q * scale, q in [-127, 127].
// All functions are pure and thread-safe.
#ifndef KVWIRE_FORMAT_DTYPE_H_
#define KVWIRE_FORMAT_DTYPE_H_

#include <cstddef>
#include <cstdint>

#include "absl/strings/string_view.h"
#include "kvwire/base/half.h"

namespace kvwire::format {

enum class DType : uint8_t { kF32 = 0, kF16 = 1, kBF16 = 2, kI8 = 3 };

// Bytes per element; 0 for values that are not a DType.
size_t DTypeSize(DType t);
bool IsValidDType(uint8_t raw);
absl::string_view DTypeName(DType t);
// Parses "f32"/"fp32", "f16"/"fp16", "bf16", "i8"/"int8". False otherwise.
bool ParseDType(absl::string_view text, DType* out);

using ::kvwire::Bf16ToFloat;
using ::kvwire::FloatToBf16;
using ::kvwire::FloatToHalf;
using ::kvwire::HalfToFloat;

// Converts n fp32 values into `out` (n * DTypeSize(t) bytes) for t in {F32, F16, BF16}.
void PackFloats(const float* in, size_t n, DType t, uint8_t* out);
// The inverse of PackFloats; `in` need not be aligned.
void UnpackFloats(const uint8_t* in, size_t n, DType t, float* out);

}  // namespace kvwire::format

#endif  // KVWIRE_FORMAT_DTYPE_H_
