// kernels/cuda/sequence.h — small fills the device compressor needs so that positions and
// recency scores are made on the device instead of uploaded (kvwire/compress/gpu).
//
// Every pointer is device memory; work is enqueued on ctx's stream. Errors: INVALID_ARGUMENT for
// negative sizes or positions that overflow int32; launch failures as statuses.
#ifndef KVWIRE_KERNELS_CUDA_SEQUENCE_H_
#define KVWIRE_KERNELS_CUDA_SEQUENCE_H_

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/cuda/device.h"

namespace kvwire::kernels::cuda {

// out int32 [n]: out[i] = first + i.
absl::Status FillPositions(Context& ctx, int32_t* out, int64_t n, int32_t first);

// data int32 [n]: data[i] += delta.
absl::Status OffsetPositions(Context& ctx, int32_t* data, int64_t n, int32_t delta);

// out fp32 [heads][length]: out[h][i] = float(i + 1) / float(length), the `window` scorer's
// recency score, computed with the same correctly rounded float division as the CPU.
absl::Status FillRecencyScores(Context& ctx, float* out, int heads, int64_t length);

}  // namespace kvwire::kernels::cuda

#endif  // KVWIRE_KERNELS_CUDA_SEQUENCE_H_
