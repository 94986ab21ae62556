// kernels/cuda/compress.h — the compression arithmetic of kvwire/kernels/compress.h on the device
// (ALGORITHMS.md §1, §4), plus the pooled observation-window scores built from it.
//
// Same contracts as the CPU functions of the same names, with every pointer in device memory:
// QueryBlock::q and ::positions, StridedRows::base, key positions and outputs. Additionally rows
// must be 16-byte aligned (head_dim and strides multiples of 4 floats, bases aligned) and
// head_dim <= 256.
//
// Differences from the CPU, all within rounding: sums run in other orders; log_score uses a
// per-key max shift (the CPU shares one shift per call and reports -700 for a key whose terms all
// underflow in double; the device never underflows there).
//
// Errors: INVALID_ARGUMENT for unsupported shapes or misaligned rows; CUDA failures as statuses.
// Scratch: AttentionStats uses slot 0, WindowScores slot 1, CosineArgmax slot 2.
#ifndef KVWIRE_KERNELS_CUDA_COMPRESS_H_
#define KVWIRE_KERNELS_CUDA_COMPRESS_H_

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/cuda/device.h"
#include "kvwire/kernels/compress.h"

namespace kvwire::kernels::cuda {

absl::Status AttentionStats(Context& ctx, const QueryBlock& queries, int kv_head,
                            const StridedRows& keys, const int32_t* key_positions,
                            const HeadAttentionStats& out);

absl::Status LogMeanExpScores(Context& ctx, const QueryBlock& queries, int kv_head,
                              const StridedRows& keys, float* out);

// kernel odd and >= 1.
absl::Status AveragePool1d(Context& ctx, const float* in, int64_t n, int kernel, float* out);

// How window scores aggregate over the window queries and the group (ALGORITHMS.md §1):
// snapkv takes the mean, defensive the max and then clamps each score from below at the head's
// mean score (after pooling).
enum class WindowAggregate { kMean, kMaxClamped };

// The score of every key of one KV head, as kvwire/compress computes it for snapkv / defensive:
// AttentionStats (mean_prob or max_prob) under the window queries, AveragePool1d with
// `pool_kernel`, then the defensive clamp. `log_score` (nullable) receives the unmasked
// log-mean-exp scores for merging. Outputs fp32 [keys.n].
absl::Status WindowScores(Context& ctx, const QueryBlock& window, int kv_head,
                          const StridedRows& keys, const int32_t* key_positions,
                          WindowAggregate aggregate, int pool_kernel, float* score,
                          float* log_score);

absl::Status CosineArgmax(Context& ctx, const StridedRows& query_rows,
                          const StridedRows& candidates, int dim, int32_t* best_index,
                          float* best_cosine);

}  // namespace kvwire::kernels::cuda

#endif  // KVWIRE_KERNELS_CUDA_COMPRESS_H_
