// kernels/cuda/internal.h — helpers shared by the .cu files of kernels/cuda (internal; includes
// CUDA headers, so never included from a public header).
#ifndef KVWIRE_KERNELS_CUDA_INTERNAL_H_
#define KVWIRE_KERNELS_CUDA_INTERNAL_H_

#include <cuda_runtime_api.h>

#include <cstdint>

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

}  // namespace kvwire::kernels::cuda::internal

#endif  // KVWIRE_KERNELS_CUDA_INTERNAL_H_
