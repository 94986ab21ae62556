// kvwire/kernels/quant.h — GGML block quantization formats: type table, row dequantization,
// reference quantizers and fused dequantize+dot on quantized rows.
//
// A "row" of n elements in type T occupies RowBytes(T, n) bytes: n / BlockElems(T) consecutive
// blocks laid out exactly as in GGML/GGUF files (little-endian, fp16 scales). n must be a multiple
// of the block size; callers (the GGUF loader) validate shapes before calling these functions, so
// the kernels only assert it.
//
// Thread-safety: all functions are pure and may be called concurrently.
// Errors: none; preconditions are programmer invariants (checked with assert in debug builds).
#ifndef KVWIRE_KERNELS_QUANT_H_
#define KVWIRE_KERNELS_QUANT_H_

#include <cstdint>

#include "kvwire/base/half.h"

namespace kvwire::kernels {

// Numeric ids are GGML's (ggml_type), as stored in GGUF tensor infos.
enum class QuantType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ8_0 = 8,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kBF16 = 30,
};

struct QuantTypeInfo {
  QuantType type;
  const char* name;  // GGML spelling: "Q4_1", "F32", ...
  int block_elems;   // elements per block (1 for float types)
  int block_bytes;   // bytes per block
};

// The table entry for a GGML type id this library implements, or nullptr.
const QuantTypeInfo* FindQuantType(uint32_t ggml_type_id);
// True for ids GGML defines (even ones kvwire does not implement, e.g. IQ2_XXS); lets a loader
// tell "unsupported" from "garbage".
bool IsKnownGgmlTypeId(uint32_t ggml_type_id);
const QuantTypeInfo& Info(QuantType type);
// Bytes of a row of n elements; -1 when n is negative or not a multiple of the block size.
int64_t RowBytes(QuantType type, int64_t n);

// fp16 / bf16 scalar conversions (round-to-nearest-even on the way down).
using ::kvwire::Bf16ToFloat;
using ::kvwire::FloatToBf16;
using ::kvwire::FloatToHalf;
using ::kvwire::HalfToFloat;

// dst fp32 [n] <- src row of n elements in `type`.
void DequantizeRow(QuantType type, const void* src, float* dst, int64_t n);

// Writes RowBytes(type, n) bytes to dst. Simple round-to-nearest quantizers (not llama.cpp's
// error-minimising search); used to build test models. K types: Q4_K and Q6_K only; returns false
// for a type without a quantizer.
bool QuantizeRow(QuantType type, const float* src, void* dst, int64_t n);
bool CanQuantize(QuantType type);

// sum_i row[i] * x[i] over n elements, dequantizing block by block without materialising the row.
float DotRow(QuantType type, const void* row, const float* x, int64_t n);
// The same product through the portable (non-SIMD) path of every type; lets tests compare the
// SIMD kernels against it on any build.
float DotRowPortable(QuantType type, const void* row, const float* x, int64_t n);

}  // namespace kvwire::kernels

#endif  // KVWIRE_KERNELS_QUANT_H_
