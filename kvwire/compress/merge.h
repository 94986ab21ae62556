// kvwire/compress/merge.h — KeepKV merging with electoral votes (ALGORITHMS.md §4).
//
// A group S = {target} ∪ {evicted entries whose most similar kept key is the target, with cosine
// >= threshold} collapses into one entry at the target's position. Weights come from the
// unnormalised predicted log-scores l_i (ln mean exp of the window logits), combined with the
// members' log-votes: a_i = lambda_i + l_i, omega_i = exp(a_i - max a).
//   value  v_r = sum omega v / sum omega
//   guarded (default): key = k̄ = sum omega k / sum omega,
//                      lambda_r = ln sum_S p_i exp(l_i) - l(k̄)
//   zip:               key = (l*/l̄) k̄, lambda_r = ln sum_S p_i, with
//                      l* = max a + ln sum omega - ln sum p, used only when |l̄| >= zip_min_abs,
//                      l* and l̄ share a sign and l*/l̄ is within [1/zip_max_ratio, zip_max_ratio];
//                      otherwise the guarded formula.
// Thread-safety: pure. Errors: none (shapes are preconditions).
#ifndef KVWIRE_COMPRESS_MERGE_H_
#define KVWIRE_COMPRESS_MERGE_H_

#include <cstdint>
#include <functional>
#include <vector>

#include "absl/types/span.h"
#include "kvwire/cache/kv_cache.h"
#include "kvwire/compress/scorer.h"
#include "kvwire/compress/spec.h"

namespace kvwire::compress {

struct MergeMember {
  const float* key = nullptr;    // fp32 [head_dim]
  const float* value = nullptr;  // fp32 [head_dim]
  float log_vote = 0;            // lambda_i = ln p_i
  float log_score = 0;           // l_i
};

// The weighted statistics of a group, before the key/vote rule is applied.
struct GroupMoments {
  std::vector<float> mean_key;  // k̄
  std::vector<float> value;     // v_r
  float mean_log_score = 0;     // l̄
  float log_mass = 0;           // ln sum_S p_i exp(l_i)
  float log_votes = 0;          // ln sum_S p_i
};
GroupMoments ComputeMoments(absl::Span<const MergeMember> group, int head_dim);

struct MergedEntry {
  std::vector<float> key;
  std::vector<float> value;
  float log_vote = 0;
  bool zip = false;  // the paper key was used
};
// Applies the spec's key rule; `log_score_of_mean_key` is l(k̄) against the same queries.
MergedEntry FinishMerge(const CompressionSpec& spec, GroupMoments moments,
                        float log_score_of_mean_key);

struct MergeCounts {
  int64_t merged = 0;   // evicted entries folded into a kept one
  int64_t dropped = 0;  // evicted entries below the similarity threshold
  int64_t zip = 0;      // groups that used the paper key
};

// The compressed segment of KV head `h`: kept entries (sorted indices into the prompt) with
// evicted entries merged per spec.merge. `scores.log_score` is required when merging.
cache::HeadSegment BuildHeadSegment(const CompressionSpec& spec, const LayerInput& input, int h,
                                    const HeadScores& scores, absl::Span<const int32_t> keep,
                                    kernels::ThreadPool* pool, MergeCounts* counts);

}  // namespace kvwire::compress

#endif  // KVWIRE_COMPRESS_MERGE_H_
