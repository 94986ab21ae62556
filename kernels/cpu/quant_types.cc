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

}  // namespace kvwire::kernels
