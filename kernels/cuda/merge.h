// kernels/cuda/merge.h — KeepKV merging of one KV head on the device (ALGORITHMS.md §4; the
// semantics of kvwire::compress::BuildHeadSegment for a fresh prefill cache, log-votes 0).
//
// Kept entries are gathered into the output segment. Each evicted entry finds the kept key with
// the highest cosine similarity (ties: lowest index); at or above `threshold` it joins that
// entry's group, otherwise it is dropped. Every group {target} ∪ members (members in increasing
// index, as on the CPU) collapses with weights exp(l_i - max l): value and mean key are the
// weighted means; the guarded rule keeps the mean key and sets the log-vote to
// ln sum_S exp(l_i) - l(mean key), l(mean key) being its log-mean-exp score under `window`; the ZIP
// rule (zip = true) scales the key by l*/l̄ with log-vote ln |S| where that is stable.
//
// Kernels: gather, cosine argmax (compress.h), one block building the groups with a stable
// counting sort (deterministic, so results do not depend on scheduling), one warp per group for
// the weighted moments (double weights, like the CPU), log-scores of the mean keys, one warp per
// group to finish.
//
// Errors: INVALID_ARGUMENT for unsupported shapes (compress.h rules). Scratch: slot 3 (and the
// slots of CosineArgmax / LogMeanExpScores).
#ifndef KVWIRE_KERNELS_CUDA_MERGE_H_
#define KVWIRE_KERNELS_CUDA_MERGE_H_

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/cuda/device.h"
#include "kvwire/kernels/compress.h"

namespace kvwire::kernels::cuda {

struct MergeParams {
  bool zip = false;
  float threshold = 0.8f;      // minimum key cosine to merge instead of drop
  float zip_min_abs = 0.5f;    // ZIP key only when |mean log-score| >= this ...
  float zip_max_ratio = 2.0f;  // ... and l*/l̄ within [1/r, r]
};

// One KV head of a prefill layer, all device memory. keys/values: the prompt's L rows (strided,
// 16-byte aligned); log_score fp32 [L]; keep int32 [n_keep] and evicted int32 [n_evicted] the
// sorted complementary index lists (SelectTopK writes both).
struct MergeHeadInput {
  StridedRows keys, values;
  const float* log_score = nullptr;
  const int32_t* keep = nullptr;
  int64_t n_keep = 0;
  const int32_t* evicted = nullptr;
  int64_t n_evicted = 0;
};

// The compressed segment (device): positions int32 [n_keep], log_votes fp32 [n_keep], keys and
// values fp32 [n_keep][head_dim], rows 16-byte aligned.
struct MergeHeadOutput {
  int32_t* positions = nullptr;
  float* log_votes = nullptr;
  float* keys = nullptr;
  float* values = nullptr;
};

struct MergeTally {
  int64_t merged = 0, dropped = 0, zip = 0;
};

// `window`: the observation-window queries (device) that produced log_score. When `tally` is not
// null the counts are added to it, which waits for the device.
absl::Status MergeHead(Context& ctx, const MergeParams& params, const QueryBlock& window,
                       int kv_head, const MergeHeadInput& in, const MergeHeadOutput& out,
                       MergeTally* tally);

}  // namespace kvwire::kernels::cuda

#endif  // KVWIRE_KERNELS_CUDA_MERGE_H_
