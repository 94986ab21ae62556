// kvwire/compress/scorer.h — per-entry importance scores for one layer (ALGORITHMS.md §1).
//
// Input is the prefill's view of one layer: post-RoPE keys and values of all L prompt positions
// (fp32 [L][n_kv_heads][head_dim]) and post-RoPE queries of the last n_queries positions
// (fp32 [n_queries][n_heads][head_dim]; h2o needs all L, the others spec.window). Scores are
// per KV head, aggregated over the query heads of its group; the cache is never expanded.
// The recon and gate scorers use caller-supplied scores (external_scores) instead; with merging
// they still take the merge weights (log-scores) from the window queries.
//
// Thread-safety: pure; `pool` may be null. Errors: INVALID_ARGUMENT for inconsistent shapes, and
// for a recon or gate spec without external scores (or with non-finite ones).
#ifndef KVWIRE_COMPRESS_SCORER_H_
#define KVWIRE_COMPRESS_SCORER_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "kvwire/compress/spec.h"
#include "kvwire/kernels/compress.h"

namespace kvwire::compress {

struct LayerInput {
  int layer = 0;
  int64_t n_tokens = 0;  // L, the prompt length
  int n_heads = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
  float scale = 0;                 // the model's attention scale, 1/sqrt(head_dim)
  const float* keys = nullptr;     // fp32 [L][n_kv_heads][head_dim], post-RoPE
  const float* values = nullptr;   // fp32 [L][n_kv_heads][head_dim]
  const float* queries = nullptr;  // fp32 [n_queries][n_heads][head_dim], positions L-n_queries..L-1
  int64_t n_queries = 0;
  const float* wo = nullptr;       // fp32 [hidden][n_heads*head_dim]; needed by +critical
  int hidden = 0;
  // fp32 [n_kv_heads][L] (head-major), finite, higher = keep: the score of the recon and gate
  // scorers (e.g. one layer of compress::ReconScores); required by them, ignored by the others.
  const float* external_scores = nullptr;

  kernels::StridedRows KeyRows(int kv_head) const;
  kernels::StridedRows ValueRows(int kv_head) const;
  absl::Status Validate(const CompressionSpec& spec) const;
  absl::Status ValidateExternalScores(const CompressionSpec& spec) const;
};

// Per KV head, fp32 [L] each.
struct HeadScores {
  std::vector<float> score;       // the scorer's importance (higher = keep)
  std::vector<float> log_score;   // ln mean_{j,g} exp(z): merge weights (only when merging)
  std::vector<float> value_norm;  // nu_i for +critical (only then)
};

// The window queries and their positions, as the kernels take them. `positions` must outlive it.
kernels::QueryBlock WindowQueries(const LayerInput& input, std::vector<int32_t>* positions);

// `qb` restricted to its last `rows` queries (rows <= qb.n_queries).
kernels::QueryBlock LastRows(kernels::QueryBlock qb, int64_t rows);

absl::StatusOr<std::vector<HeadScores>> ScoreLayer(const CompressionSpec& spec,
                                                   const LayerInput& input,
                                                   kernels::ThreadPool* pool);

}  // namespace kvwire::compress

#endif  // KVWIRE_COMPRESS_SCORER_H_
