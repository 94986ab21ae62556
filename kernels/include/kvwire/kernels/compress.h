// kvwire/kernels/compress.h — the arithmetic of KV-cache compression (ALGORITHMS.md §1, §4).
//
// Keys of one KV head are addressed through a strided view so both layouts in use work without a
// copy: the prefill's interleaved [L][n_kv_heads][head_dim] (stride n_kv_heads*head_dim, base
// offset h*head_dim) and a cache segment's [n][head_dim] (stride head_dim).
// Queries are fp32 [n_queries][n_heads][head_dim], post-RoPE. Query head g belongs to KV head
// g / (n_heads / n_kv_heads). Logits use the model's own scale: z = scale * q·k.
//
// Thread-safety: pure functions over caller buffers; `pool` may be null (run inline).
// Errors: none; shapes are preconditions checked by the callers in kvwire/compress.
#ifndef KVWIRE_KERNELS_COMPRESS_H_
#define KVWIRE_KERNELS_COMPRESS_H_

#include <cstdint>

#include "kvwire/kernels/thread_pool.h"

namespace kvwire::kernels {

struct StridedRows {
  const float* base = nullptr;  // row i starts at base + i * stride
  int64_t stride = 0;           // in floats
  int64_t n = 0;                // rows
  const float* row(int64_t i) const { return base + i * stride; }
};

struct QueryBlock {
  const float* q = nullptr;         // fp32 [n_queries][n_heads][head_dim]
  int64_t n_queries = 0;
  const int32_t* positions = nullptr;  // [n_queries] position of each query (for the causal mask)
  int n_heads = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
  float scale = 0;
};

// Attention statistics of one KV head's keys under the query heads of its group.
// Outputs are fp32 [keys.n], any may be null:
//   mean_prob[i] = mean over queries j and group heads g of A_{j,g,i}, where A is the causal
//                  softmax (query j sees keys whose position <= positions[j]);
//   max_prob[i]  = max over j, g of A_{j,g,i};
//   sum_prob[i]  = sum over j of mean over g of A_{j,g,i}  (cumulative attention, H2O);
//   log_score[i] = ln mean over j, g of exp(z_{j,g,i}), no mask (what a later query predicts).
// key_positions int32 [keys.n]: original positions of the keys.
struct HeadAttentionStats {
  float* mean_prob = nullptr;
  float* max_prob = nullptr;
  float* sum_prob = nullptr;
  float* log_score = nullptr;
};
void AttentionStats(const QueryBlock& queries, int kv_head, const StridedRows& keys,
                    const int32_t* key_positions, const HeadAttentionStats& out, ThreadPool* pool);

// ln mean over j, g of exp(scale * q_{j,g}·k) for each row k of `keys` (no mask).
void LogMeanExpScores(const QueryBlock& queries, int kv_head, const StridedRows& keys, float* out);

// 1-D average pooling with the given odd kernel and zero padding, rescaled so the output sums to
// the input's sum. out may not alias in.
void AveragePool1d(const float* in, int64_t n, int kernel, float* out);

// nu_i = mean over the group's query heads g of || v_i · W_O^(g) ||_1, where W_O^(g) is the
// head_dim x hidden slice of the output projection. wo is fp32 [hidden][n_heads * head_dim]
// (row-major, as the model stores attn_output). out fp32 [values.n].
void ValueOutputNorms(const StridedRows& values, const float* wo, int hidden, int n_heads,
                      int n_kv_heads, int head_dim, int kv_head, float* out, ThreadPool* pool);

// For each row of `queries_rows`, the index of the row of `candidates` with the highest cosine
// similarity and that similarity. Zero vectors have similarity 0 with everything.
void CosineArgmax(const StridedRows& query_rows, const StridedRows& candidates, int dim,
                  int32_t* best_index, float* best_cosine, ThreadPool* pool);

}  // namespace kvwire::kernels

#endif  // KVWIRE_KERNELS_COMPRESS_H_
