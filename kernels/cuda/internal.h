// kernels/cuda/internal.h — helpers shared by the .cu files of kernels/cuda (internal; includes
// CUDA headers, so never included from a public header).
#ifndef KVWIRE_KERNELS_CUDA_INTERNAL_H_
#define KVWIRE_KERNELS_CUDA_INTERNAL_H_

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <mutex>
#include <utility>

#include "kernels/cuda/device.h"
#include "kvwire/base/status.h"

// Evaluates a CUDA runtime call; returns a Status naming the call when it fails.
#define KVWIRE_CUDA_RETURN_IF_ERROR(call) \
  KVWIRE_RETURN_IF_ERROR(::kvwire::kernels::cuda::FromCuda(static_cast<int>(call), #call))

namespace kvwire::kernels::cuda::internal {

inline int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

inline bool Aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

// Blocks for a 1-D grid-stride launch over n elements: enough to fill the device, no more.
inline unsigned GridFor(int64_t n, int threads, const Context& ctx) {
  const int64_t needed = CeilDiv(n, threads);
  const int64_t cap = int64_t{ctx.properties().sm_count} * 8;
  return static_cast<unsigned>(needed < 1 ? 1 : (needed < cap ? needed : cap));
}

// The static shared memory of `kernel` on the current device. cudaFuncGetAttributes is asked
// once per (kernel, device) and the answer kept for the process: the figure belongs to the code
// the device runs for the kernel, which does not change while the process lives. Two threads
// missing at once both ask and get the same answer. The cache is never destroyed, so calls
// during exit stay valid.
inline absl::StatusOr<size_t> StaticSharedBytes(const void* kernel) {
  int device = 0;
  KVWIRE_CUDA_RETURN_IF_ERROR(cudaGetDevice(&device));
  static std::mutex* const mu = new std::mutex;
  static auto* const cache = new std::map<std::pair<const void*, int>, size_t>;
  const std::pair<const void*, int> key(kernel, device);
  {
    const std::lock_guard<std::mutex> lock(*mu);
    if (const auto it = cache->find(key); it != cache->end()) return it->second;
  }
  cudaFuncAttributes attributes{};
  KVWIRE_CUDA_RETURN_IF_ERROR(cudaFuncGetAttributes(&attributes, kernel));
  const std::lock_guard<std::mutex> lock(*mu);
  cache->emplace(key, attributes.sharedSizeBytes);
  return attributes.sharedSizeBytes;
}

// Lets `kernel` use `bytes` of dynamic shared memory. Without an opt-in a block gets 48 KiB of
// static and dynamic shared memory together, so the kernel's static arrays count too.
template <typename Kernel>
absl::Status AllowSharedMemory(Kernel* kernel, size_t bytes) {
  KVWIRE_ASSIGN_OR_RETURN(const size_t static_bytes,
                          StaticSharedBytes(reinterpret_cast<const void*>(kernel)));
  if (static_bytes + bytes <= 48 * 1024) return absl::OkStatus();
  return FromCuda(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       static_cast<int>(bytes)),
                  "cudaFuncSetAttribute(MaxDynamicSharedMemorySize)");
}

// Scratch slots, so that functions calling each other never share one.
inline constexpr int kSlotAttention = 0;
inline constexpr int kSlotRowStats = 0;
inline constexpr int kSlotSelect = 0;
inline constexpr int kSlotWindowScores = 1;
inline constexpr int kSlotCosine = 2;
inline constexpr int kSlotMerge = 3;
inline constexpr int kSlotMatMul = 1;

#if defined(__CUDACC__)
// kvwire::FloatToHalf: round to nearest even, overflow to infinity, NaN -> quiet NaN 0x7E00.
__device__ __forceinline__ uint16_t ToHalfBits(float f) {
  if (isnan(f)) return static_cast<uint16_t>(((__float_as_uint(f) >> 16) & 0x8000) | 0x7E00);
  return __half_as_ushort(__float2half_rn(f));
}

// kvwire::FloatToBf16: round to nearest even on the bits; NaN keeps its payload, made quiet.
__device__ __forceinline__ uint16_t ToBf16Bits(float f) {
  const uint32_t x = __float_as_uint(f);
  if ((x & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((x >> 16) | 0x40);
  return static_cast<uint16_t>((x + 0x7FFFu + ((x >> 16) & 1)) >> 16);
}

__device__ __forceinline__ float WarpMax(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

__device__ __forceinline__ float WarpSum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ double WarpSumDouble(double v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float Dot4(float4 a, float4 b) {
  return a.x * b.x + a.y * b.y + a.z * b.z + a.w * b.w;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
// `shared` holds 32 doubles. Contains __syncthreads: call from every thread.
__device__ inline double BlockSumDouble(double v, double* shared) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  v = WarpSumDouble(v);
  __syncthreads();
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  double total = 0;
  for (int w = 0; w < warps; ++w) total += shared[w];
  return total;
}
#endif  // __CUDACC__

}  // namespace kvwire::kernels::cuda::internal

#endif  // KVWIRE_KERNELS_CUDA_INTERNAL_H_
