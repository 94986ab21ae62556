// kernels/cuda/pack.h — a layer's wire payload (kvwire/format/messages.h, v1) assembled on the
// device from device-resident fp32 segments, byte for byte what format::EncodeLayer writes on the
// host: positions, log-votes (f32/f16), keys and values as f32/f16/bf16 with round-to-nearest-
// even, or int8 with per-channel key scales over groups of quant_group entries, per-entry value
// scales (symmetric, fp16 scales, the stored scale used to quantise) and an fp16 tail.
//
// The fixed fields and head table are written from the host; each head's sections by one kernel
// (two more for int8). Any byte offset works: the kernels store unaligned values bytewise.
//
// Errors: INVALID_ARGUMENT for an inconsistent layout (format's rules), a head count mismatch or a
// payload buffer smaller than LayerPayloadSize; CUDA failures as statuses.
#ifndef KVWIRE_KERNELS_CUDA_PACK_H_
#define KVWIRE_KERNELS_CUDA_PACK_H_

#include <cstddef>
#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kernels/cuda/device.h"
#include "kvwire/format/messages.h"

namespace kvwire::kernels::cuda {

// One head's data in device memory, fp32: positions int32 [count], log_votes [count], keys and
// values [count][head_dim].
struct DeviceHeadInput {
  const int32_t* positions = nullptr;
  const float* log_votes = nullptr;
  const float* keys = nullptr;
  const float* values = nullptr;
};

// Writes the payload into `payload` (device, `capacity` bytes) and returns its size.
absl::StatusOr<uint64_t> EncodeLayer(Context& ctx, const format::LayerLayout& layout,
                                     absl::Span<const DeviceHeadInput> heads, uint8_t* payload,
                                     size_t capacity);

}  // namespace kvwire::kernels::cuda

#endif  // KVWIRE_KERNELS_CUDA_PACK_H_
