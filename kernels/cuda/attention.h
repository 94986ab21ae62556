// kernels/cuda/attention.h — vote-biased GQA attention on the device (contract of
// kvwire/kernels/attention.h, every tensor in device memory).
//
// The KV head table `kv` is a host array of n_kv_heads views whose keys/values/bias point to device
// memory (fp32 [n][head_dim], fp32 [n][head_dim], fp32 [n] or null); it travels in the launch
// parameters, so no upload precedes a call. q fp32 [n_queries][n_heads][head_dim] and out fp32
// [n_queries][n_heads][head_dim] are device pointers.
//
// Kernel: flash-decoding. One block per (KV head, slice of its entries, query, chunk of up to 8
// group heads) stages key/value tiles in shared memory once for all the group's query heads,
// keeps an online softmax (max, sum, unnormalised output) and writes a partial; a second pass
// merges the slices per query head. Ragged heads are handled per block (each head splits its own
// length).
//
// Errors: INVALID_ARGUMENT for shapes outside the supported range (head_dim a multiple of 4 up to
// 256, n_kv_heads <= kMaxKvHeads, n_heads a multiple of n_kv_heads, n >= n_queries per head,
// key/value rows 16-byte aligned); launch failures as FromCuda statuses.
#ifndef KVWIRE_KERNELS_CUDA_ATTENTION_H_
#define KVWIRE_KERNELS_CUDA_ATTENTION_H_

#include "absl/status/status.h"
#include "kernels/cuda/device.h"
#include "kvwire/kernels/attention.h"

namespace kvwire::kernels::cuda {

inline constexpr int kMaxKvHeads = 64;
inline constexpr int kMaxHeadDim = 256;

// Forces a number of entry slices per head (0 = choose from the device size); tests use it to
// exercise the slice merge on short caches.
struct AttentionOptions {
  int slices = 0;
};

absl::Status Attention(Context& ctx, const AttentionShape& shape, const float* q,
                       const KvHeadView* kv, float* out, AttentionOptions options = {});

}  // namespace kvwire::kernels::cuda

#endif  // KVWIRE_KERNELS_CUDA_ATTENTION_H_
