// kvwire/compress/gpu/device_compressor.h — the prefill compressor (score -> allocate -> select
// -> merge, compressor.h) on a CUDA device, composed from the kernels of kernels/cuda, for a
// layer whose keys, values and window queries are already in device memory.
//
// What runs where:
//   scoring   device: WindowScores (snapkv: mean, defensive: max + clamp, pooled) or recency
//             scores (window); merge log-scores from the same pass (LogMeanExpScores for window);
//             +critical value-output norms (kernels/cuda/value_norms.h).
//   allocate  uniform: host arithmetic only. adaptive: the per-head scores, fp32 [n_kv_heads][L]
//             (1 / (2 * head_dim) of the layer's K/V bytes), are downloaded and
//             compress::AllocateAdaptive runs on the host, so budgets equal the CPU's for equal
//             scores.
//   select    device: SelectTopK (sinks and recent window forced, ties to the lower index;
//             +critical in its two stages).
//   merge     device: MergeHead per KV head (none / guarded / zip), into one compact buffer.
//   result    CompressLayer downloads only the kept entries (positions, log-votes, keys,
//             values); CompressAndEncode packs them into the wire payload on the device
//             (kernels::cuda::EncodeLayer, byte for byte format::EncodeLayer).
// Kept fraction 1 (budget >= L) skips scoring and returns the uncompressed layer bit for bit
// (every entry, log-vote 0), like compress::FullLayer.
//
// Supported specs: scorers window, snapkv, defensive; +critical; +recent[=SHARE]; allocators
// uniform and adaptive; merge none, guarded, zip. Not on the device (Supports/Create say
// UNIMPLEMENTED and name the part, so callers can fall back to compress::Compressor): scorers h2o,
// recon, gate; allocator global.
//
// Results equal compress::Compressor::CompressLayer up to floating rounding: scores are summed in
// other orders, so kept positions may differ where two scores are within rounding of each other
// (near-ties); merged keys/values/log-votes agree to ~1e-4 relative (tests/compress_gpu).
//
// Device memory per call: one work allocation (positions, scores, indices: about 5 * H * L
// 4-byte words), the compact kept entries and, for CompressAndEncode, the payload; all freed or
// handed over before the call returns (cudaFree synchronises the device).
//
// Thread-safety: a DeviceCompressor is immutable; calls may run concurrently on different
// Contexts. Errors: INVALID_ARGUMENT for bad specs, budgets or inputs (null or misaligned
// pointers, head_dim not a multiple of 4 in [4, 256], too few window queries, +critical without
// wo); UNIMPLEMENTED for the unsupported parts above; CUDA failures as statuses (UNAVAILABLE
// without a device, RESOURCE_EXHAUSTED out of device memory).
#ifndef KVWIRE_COMPRESS_GPU_DEVICE_COMPRESSOR_H_
#define KVWIRE_COMPRESS_GPU_DEVICE_COMPRESSOR_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/cuda/device.h"
#include "kvwire/cache/kv_cache.h"
#include "kvwire/compress/compressor.h"
#include "kvwire/compress/spec.h"
#include "kvwire/format/messages.h"

namespace kvwire::compress::gpu {

// One prefill layer in device memory. Pointers are 16-byte aligned.
struct DeviceLayerInput {
  int layer = 0;
  int64_t n_tokens = 0;        // L, the prompt length
  int32_t first_position = 0;  // position of the layer's first token; kept positions are
                               // first_position + index (0 gives the CPU compressor's positions)
  int n_heads = 0;
  int n_kv_heads = 0;
  int head_dim = 0;               // multiple of 4, at most 256
  float scale = 0;                // the attention scale; 0 means 1 / sqrt(head_dim)
  const float* keys = nullptr;    // fp32 [L][n_kv_heads][head_dim], post-RoPE
  const float* values = nullptr;  // fp32 [L][n_kv_heads][head_dim]
  // fp32 [window][n_heads][head_dim], post-RoPE queries of the last `window` prompt tokens;
  // window >= QueryRows(L). Not read when the kept fraction keeps the whole layer.
  int64_t window = 0;
  const float* window_queries = nullptr;
  // +critical only: the layer's output projection, fp32 [hidden][n_heads * head_dim] (row-major
  // as the model stores attn_output), for the value-output norms.
  const float* wo = nullptr;
  int hidden = 0;
};

// A layer's wire payload in device memory: `size` bytes at bytes.data(), laid out by `layout`.
struct DevicePayload {
  kernels::cuda::DeviceBuffer bytes;
  uint64_t size = 0;
  format::LayerLayout layout;
};

// The wire options of a layer, as cache::CacheStreamEncoder takes them from the manifest
// (kv_dtype, vote_dtype, quant_group) and cache::EncodeOptions (fp16_tail).
struct DeviceEncodeOptions {
  format::DType kv_dtype = format::DType::kF16;
  format::DType vote_dtype = format::DType::kF32;
  uint16_t quant_group = 0;  // required (16..1024) for i8, 0 otherwise
  uint32_t fp16_tail = 0;    // with i8, the most recent entries of each head kept fp16
};

class DeviceCompressor {
 public:
  // OK, or UNIMPLEMENTED naming the part of the spec the device does not run.
  static absl::Status Supports(const CompressionSpec& spec);
  // INVALID_ARGUMENT for an invalid spec or kept fraction outside (0, 1]; UNIMPLEMENTED as
  // Supports. Needs no device.
  static absl::StatusOr<DeviceCompressor> Create(const CompressionSpec& spec, float kept_fraction);

  const CompressionSpec& spec() const { return spec_; }
  float kept_fraction() const { return kept_fraction_; }
  // Window queries a DeviceLayerInput must carry (as Compressor::QueryRows).
  int64_t QueryRows(int64_t prompt_length) const { return spec_.QueryRows(prompt_length); }

  // One layer on ctx's stream; downloads only the kept entries. Returns when they are on the host.
  absl::StatusOr<cache::LayerCache> CompressLayer(kernels::cuda::Context& ctx,
                                                  const DeviceLayerInput& in,
                                                  LayerStats* stats = nullptr) const;
  // Same selection and merge, then the wire payload encoded on the device: byte for byte
  // format::EncodeLayer of the layer CompressLayer returns, with counts from the selection and
  // tails min(count, fp16_tail) for i8. Returns after ctx's stream finished the payload, so any
  // stream or transport may read it. stats->seconds includes the encoding.
  absl::StatusOr<DevicePayload> CompressAndEncode(kernels::cuda::Context& ctx,
                                                  const DeviceLayerInput& in,
                                                  const DeviceEncodeOptions& options,
                                                  LayerStats* stats = nullptr) const;

 private:
  struct Compressed;  // the merged layer in device memory (device_compressor.cc)

  DeviceCompressor(const CompressionSpec& spec, float kept_fraction)
      : spec_(spec), kept_fraction_(kept_fraction) {}
  absl::StatusOr<Compressed> Run(kernels::cuda::Context& ctx, const DeviceLayerInput& in,
                                 LayerStats* stats) const;

  CompressionSpec spec_;
  float kept_fraction_;
};

}  // namespace kvwire::compress::gpu

#endif  // KVWIRE_COMPRESS_GPU_DEVICE_COMPRESSOR_H_
