// Reference quantizers (round to nearest with per-block range), used to build test models.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>

#include "kernels/cpu/blocks.h"
#include "kvwire/kernels/quant.h"

namespace kvwire::kernels {
namespace {

using namespace internal;  // NOLINT: block type names

struct Range {
  float min, max, signed_max;  // signed_max: the element with the largest magnitude
};

Range RangeOf(const float* x, int n) {
  Range r{x[0], x[0], x[0]};
  for (int i = 1; i < n; ++i) {
    r.min = std::min(r.min, x[i]);
    r.max = std::max(r.max, x[i]);
    if (std::fabs(x[i]) > std::fabs(r.signed_max)) r.signed_max = x[i];
  }
  return r;
}

float Inverse(float d) { return d != 0.0f ? 1.0f / d : 0.0f; }

int Clamp(int v, int lo, int hi) { return std::min(hi, std::max(lo, v)); }

// Symmetric 4/5-bit types: element = (q - offset) * d with d = signed_max / -offset.
template <typename Block>
void QuantizeSymmetric(const float* x, Block* b, int offset, uint8_t* codes) {
  const float d = RangeOf(x, kQk).signed_max / static_cast<float>(-offset);
  const float id = Inverse(d);
  b->d = FloatToHalf(d);
  for (int j = 0; j < kQk; ++j) {
    codes[j] = static_cast<uint8_t>(
        Clamp(static_cast<int>(std::floor(x[j] * id + offset + 0.5f)), 0, 2 * offset - 1));
  }
}

// Affine 4/5-bit types: element = q * d + m with m = block minimum.
template <typename Block>
void QuantizeAffine(const float* x, Block* b, int levels, uint8_t* codes) {
  const Range r = RangeOf(x, kQk);
  const float d = (r.max - r.min) / static_cast<float>(levels - 1);
  const float id = Inverse(d);
  b->d = FloatToHalf(d);
  b->m = FloatToHalf(r.min);
  for (int j = 0; j < kQk; ++j) {
    codes[j] = static_cast<uint8_t>(
        Clamp(static_cast<int>(std::floor((x[j] - r.min) * id + 0.5f)), 0, levels - 1));
  }
}

void PackNibbles(const uint8_t* codes, uint8_t* qs) {
  for (int j = 0; j < kQk / 2; ++j) qs[j] = (codes[j] & 0xF) | ((codes[j + kQk / 2] & 0xF) << 4);
}

void PackFifthBits(const uint8_t* codes, uint8_t* qh) {
  uint32_t bits = 0;
  for (int j = 0; j < kQk; ++j) bits |= static_cast<uint32_t>((codes[j] >> 4) & 1) << j;
  std::memcpy(qh, &bits, 4);
}

template <typename Block>
void QuantizeLegacy(const float* x, Block* b) {
  uint8_t codes[kQk];
  if constexpr (std::is_same_v<Block, BlockQ4_0>) QuantizeSymmetric(x, b, 8, codes);
  if constexpr (std::is_same_v<Block, BlockQ5_0>) QuantizeSymmetric(x, b, 16, codes);
  if constexpr (std::is_same_v<Block, BlockQ4_1>) QuantizeAffine(x, b, 16, codes);
  if constexpr (std::is_same_v<Block, BlockQ5_1>) QuantizeAffine(x, b, 32, codes);
  PackNibbles(codes, b->qs);
  if constexpr (std::is_same_v<Block, BlockQ5_0> || std::is_same_v<Block, BlockQ5_1>) {
    PackFifthBits(codes, b->qh);
  }
}

void QuantizeQ8_0(const float* x, BlockQ8_0* b) {
  const float d = std::fabs(RangeOf(x, kQk).signed_max) / 127.0f;
  const float id = Inverse(d);
  b->d = FloatToHalf(d);
  for (int j = 0; j < kQk; ++j) b->qs[j] = static_cast<int8_t>(std::lround(x[j] * id));
}

// Q4_K: eight sub-blocks of 32 with a 6-bit scale and 6-bit minimum each (element =
// d*sc*q - dmin*m), the scales themselves scaled by the fp16 super-block d and dmin.
void PackScalesK4(const uint8_t* sc, const uint8_t* m, uint8_t* out) {
  for (int j = 0; j < 4; ++j) {
    out[j] = (sc[j] & 63) | ((sc[j + 4] >> 4) << 6);
    out[j + 4] = (m[j] & 63) | ((m[j + 4] >> 4) << 6);
    out[j + 8] = (sc[j + 4] & 0xF) | ((m[j + 4] & 0xF) << 4);
  }
}

void QuantizeQ4_K(const float* x, BlockQ4_K* b) {
  float scale[8], neg_min[8];
  for (int j = 0; j < 8; ++j) {
    const Range r = RangeOf(x + 32 * j, 32);
    neg_min[j] = -std::min(r.min, 0.0f);
    scale[j] = (r.max + neg_min[j]) / 15.0f;
  }
  const float d = *std::max_element(scale, scale + 8) / 63.0f;
  const float dmin = *std::max_element(neg_min, neg_min + 8) / 63.0f;
  b->d = FloatToHalf(d);
  b->dmin = FloatToHalf(dmin);
  const float d_used = LoadHalf(b->d), dmin_used = LoadHalf(b->dmin);
  uint8_t sc[8], m[8], codes[kQkK];
  for (int j = 0; j < 8; ++j) {
    sc[j] = static_cast<uint8_t>(
        Clamp(static_cast<int>(std::lround(scale[j] * Inverse(d_used))), 0, 63));
    m[j] = static_cast<uint8_t>(
        Clamp(static_cast<int>(std::lround(neg_min[j] * Inverse(dmin_used))), 0, 63));
    const float step = d_used * sc[j], offset = dmin_used * m[j];
    for (int l = 0; l < 32; ++l) {
      const float q = (x[32 * j + l] + offset) * Inverse(step);
      codes[32 * j + l] = static_cast<uint8_t>(Clamp(static_cast<int>(std::lround(q)), 0, 15));
    }
  }
  PackScalesK4(sc, m, b->scales);
  for (int k = 0; k < 4; ++k) {
    for (int l = 0; l < 32; ++l)
      b->qs[32 * k + l] = codes[64 * k + l] | (codes[64 * k + 32 + l] << 4);
  }
}

// Q6_K: sixteen sub-blocks of 16 with an int8 scale each, 6-bit codes stored as 4 + 2 bits.
void QuantizeQ6_K(const float* x, BlockQ6_K* b) {
  float scale[16];
  for (int j = 0; j < 16; ++j) scale[j] = RangeOf(x + 16 * j, 16).signed_max / -32.0f;
  float amax = 0;
  for (float s : scale) amax = std::max(amax, std::fabs(s));
  const float d = amax / 127.0f;
  b->d = FloatToHalf(d);
  const float d_used = LoadHalf(b->d);
  uint8_t codes[kQkK];
  for (int j = 0; j < 16; ++j) {
    b->scales[j] = static_cast<int8_t>(
        Clamp(static_cast<int>(std::lround(scale[j] * Inverse(d_used))), -127, 127));
    const float step = d_used * b->scales[j];
    for (int l = 0; l < 16; ++l) {
      const int q = static_cast<int>(std::lround(x[16 * j + l] * Inverse(step)));
      codes[16 * j + l] = static_cast<uint8_t>(Clamp(q, -32, 31) + 32);
    }
  }
  for (int h = 0; h < 2; ++h) {
    const uint8_t* q = codes + 128 * h;
    for (int l = 0; l < 32; ++l) {
      b->ql[64 * h + l] = (q[l] & 0xF) | ((q[l + 64] & 0xF) << 4);
      b->ql[64 * h + l + 32] = (q[l + 32] & 0xF) | ((q[l + 96] & 0xF) << 4);
      b->qh[32 * h + l] =
          (q[l] >> 4) | ((q[l + 32] >> 4) << 2) | ((q[l + 64] >> 4) << 4) | ((q[l + 96] >> 4) << 6);
    }
  }
}

template <typename Block, int kElems, typename Fn>
void QuantizeBlocks(const float* x, void* dst, int64_t n, Fn fn) {
  auto* blocks = static_cast<Block*>(dst);
  for (int64_t i = 0; i < n / kElems; ++i) fn(x + i * kElems, &blocks[i]);
}

template <typename T, typename Fn>
void ConvertElements(const float* x, void* dst, int64_t n, Fn fn) {
  auto* out = static_cast<T*>(dst);
  for (int64_t i = 0; i < n; ++i) out[i] = fn(x[i]);
}

}  // namespace

bool CanQuantize(QuantType type) { return type != QuantType::kQ5_K; }

bool QuantizeRow(QuantType type, const float* x, void* dst, int64_t n) {
  if (RowBytes(type, n) < 0) return false;
  switch (type) {
    case QuantType::kF32:
      std::memcpy(dst, x, n * sizeof(float));
      return true;
    case QuantType::kF16:
      ConvertElements<uint16_t>(x, dst, n, FloatToHalf);
      return true;
    case QuantType::kBF16:
      ConvertElements<uint16_t>(x, dst, n, FloatToBf16);
      return true;
    case QuantType::kQ4_0:
      QuantizeBlocks<BlockQ4_0, kQk>(x, dst, n, QuantizeLegacy<BlockQ4_0>);
      return true;
    case QuantType::kQ4_1:
      QuantizeBlocks<BlockQ4_1, kQk>(x, dst, n, QuantizeLegacy<BlockQ4_1>);
      return true;
    case QuantType::kQ5_0:
      QuantizeBlocks<BlockQ5_0, kQk>(x, dst, n, QuantizeLegacy<BlockQ5_0>);
      return true;
    case QuantType::kQ5_1:
      QuantizeBlocks<BlockQ5_1, kQk>(x, dst, n, QuantizeLegacy<BlockQ5_1>);
      return true;
    case QuantType::kQ8_0:
      QuantizeBlocks<BlockQ8_0, kQk>(x, dst, n, QuantizeQ8_0);
      return true;
    case QuantType::kQ4_K:
      QuantizeBlocks<BlockQ4_K, kQkK>(x, dst, n, QuantizeQ4_K);
      return true;
    case QuantType::kQ6_K:
      QuantizeBlocks<BlockQ6_K, kQkK>(x, dst, n, QuantizeQ6_K);
      return true;
    case QuantType::kQ5_K:
      return false;
  }
  return false;
}

}  // namespace kvwire::kernels
