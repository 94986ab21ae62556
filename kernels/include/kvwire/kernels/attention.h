// kvwire/kernels/attention.h — GQA attention over a ragged, vote-biased per-KV-head cache.
//
// For each KV head the cache is a segment of n_h entries with post-RoPE keys, values and an
// additive logit bias (the log-vote, ALGORITHMS.md §4). Query head g reads KV head
// g / (n_heads / n_kv_heads). For queries t = 0..n_queries-1 of a step, query t sees the first
// n_h - n_queries + 1 + t entries of head h (the last n_queries entries of every segment are the
// step's own tokens, appended in order), so:
//   * decode (n_queries = 1): every entry;
//   * prefill over an empty cache with zero bias: plain causal attention.
//   logit_i = scale * q·k_i + bias_i;  out = sum_i softmax(logit)_i v_i.
//
// Thread-safety: reentrant (thread-local scratch). Errors: none; n_h >= n_queries and finite
// inputs are preconditions (a dropped entry is absent from its segment, never a -inf bias).
#ifndef KVWIRE_KERNELS_ATTENTION_H_
#define KVWIRE_KERNELS_ATTENTION_H_

#include <cstdint>

#include "kvwire/kernels/thread_pool.h"

namespace kvwire::kernels {

struct KvHeadView {
  const float* keys = nullptr;    // fp32 [n][head_dim]
  const float* values = nullptr;  // fp32 [n][head_dim]
  const float* bias = nullptr;    // fp32 [n] finite values, or nullptr for all-zero bias
  int64_t n = 0;
};

struct AttentionShape {
  int64_t n_queries = 1;
  int n_heads = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
  float scale = 0;  // usually 1/sqrt(head_dim)
};

// q fp32 [n_queries][n_heads][head_dim]; kv[n_kv_heads]; out fp32 [n_queries][n_heads][head_dim].
void Attention(const AttentionShape& shape, const float* q, const KvHeadView* kv, float* out,
               ThreadPool* pool);

}  // namespace kvwire::kernels

#endif  // KVWIRE_KERNELS_ATTENTION_H_
