// kernels/cpu/blocks.h — byte layouts of the GGML quantization blocks (internal to the CPU
// kernels). Every struct is packed exactly as in GGUF files; sizes are static_asserted.
#ifndef KVWIRE_KERNELS_CPU_BLOCKS_H_
#define KVWIRE_KERNELS_CPU_BLOCKS_H_

#include <cstdint>

#if defined(__F16C__)
#include <immintrin.h>
#endif

#include "kvwire/kernels/quant.h"

namespace kvwire::kernels::internal {

inline constexpr int kQk = 32;    // elements per block of the legacy types
inline constexpr int kQkK = 256;  // elements per super-block of the K types

struct BlockQ4_0 {
  uint16_t d;           // fp16 scale
  uint8_t qs[kQk / 2];  // nibbles: element j in low half of qs[j], element j+16 in high half
};
struct BlockQ4_1 {
  uint16_t d, m;  // fp16 scale and minimum
  uint8_t qs[kQk / 2];
};
struct BlockQ5_0 {
  uint16_t d;
  uint8_t qh[4];  // fifth bits, bit j for element j
  uint8_t qs[kQk / 2];
};
struct BlockQ5_1 {
  uint16_t d, m;
  uint8_t qh[4];
  uint8_t qs[kQk / 2];
};
struct BlockQ8_0 {
  uint16_t d;
  int8_t qs[kQk];
};
struct BlockQ4_K {
  uint16_t d, dmin;    // super-block scale for the 6-bit scales and minimums
  uint8_t scales[12];  // 8 x (6-bit scale, 6-bit min), packed
  uint8_t qs[kQkK / 2];
};
struct BlockQ5_K {
  uint16_t d, dmin;
  uint8_t scales[12];
  uint8_t qh[kQkK / 8];
  uint8_t qs[kQkK / 2];
};
struct BlockQ6_K {
  uint8_t ql[kQkK / 2];  // low 4 bits
  uint8_t qh[kQkK / 4];  // high 2 bits
  int8_t scales[kQkK / 16];
  uint16_t d;
};

static_assert(sizeof(BlockQ4_0) == 18);
static_assert(sizeof(BlockQ4_1) == 20);
static_assert(sizeof(BlockQ5_0) == 22);
static_assert(sizeof(BlockQ5_1) == 24);
static_assert(sizeof(BlockQ8_0) == 34);
static_assert(sizeof(BlockQ4_K) == 144);
static_assert(sizeof(BlockQ5_K) == 176);
static_assert(sizeof(BlockQ6_K) == 210);

// fp16 -> fp32 for block scales: one instruction with F16C, the portable conversion otherwise.
inline float LoadHalf(uint16_t h) {
#if defined(__F16C__)
  return _cvtsh_ss(h);
#else
  return HalfToFloat(h);
#endif
}

// Scale and minimum j (0..7) of a Q4_K/Q5_K super-block, 6 bits each.
inline void ScaleMinK4(int j, const uint8_t* q, uint8_t* scale, uint8_t* min) {
  if (j < 4) {
    *scale = q[j] & 63;
    *min = q[j + 4] & 63;
  } else {
    *scale = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    *min = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

}  // namespace kvwire::kernels::internal

#endif  // KVWIRE_KERNELS_CPU_BLOCKS_H_
