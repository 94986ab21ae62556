// Fused dequantize+dot on quantized rows. The generic path dequantizes one block into registers
// (the block dequantizers are inline) and accumulates with several independent lanes so the
// compiler vectorises it; Q4_0, Q4_1 and Q8_0 — the types of the reference model — have
// hand-written AVX2/FMA paths when the build enables them (KVWIRE_KERNELS_AVX2).
#include <cstring>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define KVWIRE_DOT_AVX2 1
#else
#define KVWIRE_DOT_AVX2 0
#endif

#include "kernels/cpu/dequantize_block.h"
#include "kvwire/kernels/ops.h"
#include "kvwire/kernels/quant.h"

namespace kvwire::kernels {
namespace {

using namespace internal;  // NOLINT: block type names

// Lanes of partial sums: enough independent accumulators for the vectoriser without
// -ffast-math (a plain float reduction may not be reordered).
inline constexpr int kLanes = 16;

template <typename Block, int kElems>
float DotBlocksGeneric(const void* row, const float* x, int64_t n) {
  const auto* blocks = static_cast<const Block*>(row);
  float lanes[kLanes] = {};
  float tmp[kElems];
  for (int64_t b = 0; b < n / kElems; ++b) {
    DequantizeBlock(blocks[b], tmp);
    const float* xb = x + b * kElems;
    for (int j = 0; j < kElems; j += kLanes) {
      for (int l = 0; l < kLanes; ++l) lanes[l] += tmp[j + l] * xb[j + l];
    }
  }
  float sum = 0;
  for (float v : lanes) sum += v;
  return sum;
}

template <float (*kConvert)(uint16_t)>
float DotHalfRow(const void* row, const float* x, int64_t n) {
  const auto* h = static_cast<const uint16_t*>(row);
  float sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += kConvert(h[i]) * x[i];
  return sum;
}

#if KVWIRE_DOT_AVX2
inline float HorizontalSum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline __m256 BytesToFloats(__m128i eight_bytes_low) {
  return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(eight_bytes_low));
}

// sum_j code[j] * x[j] for a 32-element nibble block; also returns sum_j x[j] in *xsum.
inline __m256 NibbleDot(const uint8_t* qs, const float* x, __m256* xsum) {
  const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  const __m128i mask = _mm_set1_epi8(0x0F);
  const __m128i lo = _mm_and_si128(packed, mask);
  const __m128i hi = _mm_and_si128(_mm_srli_epi16(packed, 4), mask);
  const __m256 x0 = _mm256_loadu_ps(x), x1 = _mm256_loadu_ps(x + 8);
  const __m256 x2 = _mm256_loadu_ps(x + 16), x3 = _mm256_loadu_ps(x + 24);
  __m256 s = _mm256_mul_ps(BytesToFloats(lo), x0);
  s = _mm256_fmadd_ps(BytesToFloats(_mm_srli_si128(lo, 8)), x1, s);
  s = _mm256_fmadd_ps(BytesToFloats(hi), x2, s);
  s = _mm256_fmadd_ps(BytesToFloats(_mm_srli_si128(hi, 8)), x3, s);
  *xsum = _mm256_add_ps(_mm256_add_ps(x0, x1), _mm256_add_ps(x2, x3));
  return s;
}

float DotQ4_1Avx2(const void* row, const float* x, int64_t n) {
  const auto* blocks = static_cast<const BlockQ4_1*>(row);
  __m256 acc = _mm256_setzero_ps(), acc_min = _mm256_setzero_ps();
  for (int64_t b = 0; b < n / kQk; ++b) {
    __m256 xsum;
    const __m256 s = NibbleDot(blocks[b].qs, x + b * kQk, &xsum);
    acc = _mm256_fmadd_ps(_mm256_set1_ps(LoadHalf(blocks[b].d)), s, acc);
    acc_min = _mm256_fmadd_ps(_mm256_set1_ps(LoadHalf(blocks[b].m)), xsum, acc_min);
  }
  return HorizontalSum(_mm256_add_ps(acc, acc_min));
}

float DotQ4_0Avx2(const void* row, const float* x, int64_t n) {
  const auto* blocks = static_cast<const BlockQ4_0*>(row);
  __m256 acc = _mm256_setzero_ps();
  const __m256 eight = _mm256_set1_ps(8.0f);
  for (int64_t b = 0; b < n / kQk; ++b) {
    __m256 xsum;
    const __m256 s = NibbleDot(blocks[b].qs, x + b * kQk, &xsum);
    acc = _mm256_fmadd_ps(_mm256_set1_ps(LoadHalf(blocks[b].d)), _mm256_fnmadd_ps(eight, xsum, s),
                          acc);
  }
  return HorizontalSum(acc);
}

inline __m256 SignedBytesToFloats(const int8_t* p) {
  const __m128i v = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v));
}

float DotQ8_0Avx2(const void* row, const float* x, int64_t n) {
  const auto* blocks = static_cast<const BlockQ8_0*>(row);
  __m256 acc = _mm256_setzero_ps();
  for (int64_t b = 0; b < n / kQk; ++b) {
    const int8_t* q = blocks[b].qs;
    const float* xb = x + b * kQk;
    __m256 s = _mm256_mul_ps(SignedBytesToFloats(q), _mm256_loadu_ps(xb));
    for (int k = 8; k < kQk; k += 8) {
      s = _mm256_fmadd_ps(SignedBytesToFloats(q + k), _mm256_loadu_ps(xb + k), s);
    }
    acc = _mm256_fmadd_ps(_mm256_set1_ps(LoadHalf(blocks[b].d)), s, acc);
  }
  return HorizontalSum(acc);
}
#endif  // KVWIRE_DOT_AVX2

}  // namespace

float DotRowPortable(QuantType type, const void* row, const float* x, int64_t n) {
  switch (type) {
    case QuantType::kF32:
      return Dot(static_cast<const float*>(row), x, n);
    case QuantType::kF16:
      return DotHalfRow<HalfToFloat>(row, x, n);
    case QuantType::kBF16:
      return DotHalfRow<Bf16ToFloat>(row, x, n);
    case QuantType::kQ4_0:
      return DotBlocksGeneric<BlockQ4_0, kQk>(row, x, n);
    case QuantType::kQ4_1:
      return DotBlocksGeneric<BlockQ4_1, kQk>(row, x, n);
    case QuantType::kQ8_0:
      return DotBlocksGeneric<BlockQ8_0, kQk>(row, x, n);
    case QuantType::kQ5_0:
      return DotBlocksGeneric<BlockQ5_0, kQk>(row, x, n);
    case QuantType::kQ5_1:
      return DotBlocksGeneric<BlockQ5_1, kQk>(row, x, n);
    case QuantType::kQ4_K:
      return DotBlocksGeneric<BlockQ4_K, kQkK>(row, x, n);
    case QuantType::kQ5_K:
      return DotBlocksGeneric<BlockQ5_K, kQkK>(row, x, n);
    case QuantType::kQ6_K:
      return DotBlocksGeneric<BlockQ6_K, kQkK>(row, x, n);
  }
  return 0;
}

float DotRow(QuantType type, const void* row, const float* x, int64_t n) {
#if KVWIRE_DOT_AVX2
  switch (type) {
    case QuantType::kQ4_0:
      return DotQ4_0Avx2(row, x, n);
    case QuantType::kQ4_1:
      return DotQ4_1Avx2(row, x, n);
    case QuantType::kQ8_0:
      return DotQ8_0Avx2(row, x, n);
    default:
      break;
  }
#endif
  return DotRowPortable(type, row, x, n);
}

}  // namespace kvwire::kernels
