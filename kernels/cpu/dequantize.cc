// Row dequantization: one function per block type, dispatched by DequantizeRow.
#include <cassert>
#include <cstring>

#include "kernels/cpu/dequantize_block.h"
#include "kvwire/kernels/quant.h"

namespace kvwire::kernels {

namespace {

template <typename Block, int kElems>
void DequantizeBlocks(const void* src, float* dst, int64_t n) {
  const auto* blocks = static_cast<const Block*>(src);
  for (int64_t i = 0; i < n / kElems; ++i) internal::DequantizeBlock(blocks[i], dst + i * kElems);
}

void DequantizeHalf(const void* src, float* dst, int64_t n, float (*convert)(uint16_t)) {
  const auto* h = static_cast<const uint16_t*>(src);
  for (int64_t i = 0; i < n; ++i) dst[i] = convert(h[i]);
}

}  // namespace

void DequantizeRow(QuantType type, const void* src, float* dst, int64_t n) {
  using namespace internal;  // NOLINT: block type names
  assert(RowBytes(type, n) >= 0);
  switch (type) {
    case QuantType::kF32:
      std::memcpy(dst, src, n * sizeof(float));
      return;
    case QuantType::kF16:
      DequantizeHalf(src, dst, n, HalfToFloat);
      return;
    case QuantType::kBF16:
      DequantizeHalf(src, dst, n, Bf16ToFloat);
      return;
    case QuantType::kQ4_0:
      DequantizeBlocks<BlockQ4_0, kQk>(src, dst, n);
      return;
    case QuantType::kQ4_1:
      DequantizeBlocks<BlockQ4_1, kQk>(src, dst, n);
      return;
    case QuantType::kQ5_0:
      DequantizeBlocks<BlockQ5_0, kQk>(src, dst, n);
      return;
    case QuantType::kQ5_1:
      DequantizeBlocks<BlockQ5_1, kQk>(src, dst, n);
      return;
    case QuantType::kQ8_0:
      DequantizeBlocks<BlockQ8_0, kQk>(src, dst, n);
      return;
    case QuantType::kQ4_K:
      DequantizeBlocks<BlockQ4_K, kQkK>(src, dst, n);
      return;
    case QuantType::kQ5_K:
      DequantizeBlocks<BlockQ5_K, kQkK>(src, dst, n);
      return;
    case QuantType::kQ6_K:
      DequantizeBlocks<BlockQ6_K, kQkK>(src, dst, n);
      return;
  }
}

}  // namespace kvwire::kernels
