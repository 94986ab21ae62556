// kernels/cpu/dequantize_block.h — per-block dequantizers shared by the row dequantizer and the
// generic fused dot (internal to the CPU kernels; inline so the dot loops can fuse them). y
// receives the block's fp32 elements; layouts follow the GGML spec in blocks.h.
#ifndef KVWIRE_KERNELS_CPU_DEQUANTIZE_BLOCK_H_
#define KVWIRE_KERNELS_CPU_DEQUANTIZE_BLOCK_H_

#include <cstring>

#include "kernels/cpu/blocks.h"

namespace kvwire::kernels::internal {

inline void DequantizeBlock(const BlockQ4_0& b, float* y) {
  const float d = LoadHalf(b.d);
  for (int j = 0; j < kQk / 2; ++j) {
    y[j] = static_cast<float>((b.qs[j] & 0xF) - 8) * d;
    y[j + kQk / 2] = static_cast<float>((b.qs[j] >> 4) - 8) * d;
  }
}

inline void DequantizeBlock(const BlockQ4_1& b, float* y) {
  const float d = LoadHalf(b.d);
  const float m = LoadHalf(b.m);
  for (int j = 0; j < kQk / 2; ++j) {
    y[j] = static_cast<float>(b.qs[j] & 0xF) * d + m;
    y[j + kQk / 2] = static_cast<float>(b.qs[j] >> 4) * d + m;
  }
}

inline uint32_t LoadU32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;  // GGUF is little-endian, as is every host we build for
}

inline void DequantizeBlock(const BlockQ5_0& b, float* y) {
  const float d = LoadHalf(b.d);
  const uint32_t qh = LoadU32(b.qh);
  for (int j = 0; j < kQk / 2; ++j) {
    const int lo = (b.qs[j] & 0xF) | (((qh >> j) & 1) << 4);
    const int hi = (b.qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4);
    y[j] = static_cast<float>(lo - 16) * d;
    y[j + kQk / 2] = static_cast<float>(hi - 16) * d;
  }
}

inline void DequantizeBlock(const BlockQ5_1& b, float* y) {
  const float d = LoadHalf(b.d);
  const float m = LoadHalf(b.m);
  const uint32_t qh = LoadU32(b.qh);
  for (int j = 0; j < kQk / 2; ++j) {
    const int lo = (b.qs[j] & 0xF) | (((qh >> j) & 1) << 4);
    const int hi = (b.qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4);
    y[j] = static_cast<float>(lo) * d + m;
    y[j + kQk / 2] = static_cast<float>(hi) * d + m;
  }
}

inline void DequantizeBlock(const BlockQ8_0& b, float* y) {
  const float d = LoadHalf(b.d);
  for (int j = 0; j < kQk; ++j) y[j] = static_cast<float>(b.qs[j]) * d;
}

// Q4_K and Q5_K share the scale layout; Q5_K adds a fifth bit per element from qh (bit j of
// qh[l] belongs to sub-block j), passed as null for Q4_K.
inline void DequantizeK4Or5(uint16_t d_half, uint16_t dmin_half, const uint8_t* scales,
                            const uint8_t* qs, const uint8_t* qh, float* y) {
  const float d = LoadHalf(d_half);
  const float dmin = LoadHalf(dmin_half);
  for (int j = 0; j < 8; j += 2, qs += 32, y += 64) {
    uint8_t sc0, m0, sc1, m1;
    ScaleMinK4(j, scales, &sc0, &m0);
    ScaleMinK4(j + 1, scales, &sc1, &m1);
    const float d0 = d * sc0, min0 = dmin * m0, d1 = d * sc1, min1 = dmin * m1;
    for (int l = 0; l < 32; ++l) {
      const int hi0 = qh ? ((qh[l] >> j) & 1) << 4 : 0;
      const int hi1 = qh ? ((qh[l] >> (j + 1)) & 1) << 4 : 0;
      y[l] = d0 * static_cast<float>((qs[l] & 0xF) | hi0) - min0;
      y[l + 32] = d1 * static_cast<float>((qs[l] >> 4) | hi1) - min1;
    }
  }
}

inline void DequantizeBlock(const BlockQ4_K& b, float* y) {
  DequantizeK4Or5(b.d, b.dmin, b.scales, b.qs, nullptr, y);
}

inline void DequantizeBlock(const BlockQ5_K& b, float* y) {
  DequantizeK4Or5(b.d, b.dmin, b.scales, b.qs, b.qh, y);
}

inline void DequantizeBlock(const BlockQ6_K& b, float* y) {
  const float d = LoadHalf(b.d);
  const uint8_t* ql = b.ql;
  const uint8_t* qh = b.qh;
  const int8_t* sc = b.scales;
  for (int half = 0; half < 2; ++half, ql += 64, qh += 32, sc += 8, y += 128) {
    for (int l = 0; l < 32; ++l) {
      const int is = l / 16;
      const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
      const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
      const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
      const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
      y[l] = d * sc[is] * static_cast<float>(q1);
      y[l + 32] = d * sc[is + 2] * static_cast<float>(q2);
      y[l + 64] = d * sc[is + 4] * static_cast<float>(q3);
      y[l + 96] = d * sc[is + 6] * static_cast<float>(q4);
    }
  }
}

}  // namespace kvwire::kernels::internal

#endif  // KVWIRE_KERNELS_CPU_DEQUANTIZE_BLOCK_H_
