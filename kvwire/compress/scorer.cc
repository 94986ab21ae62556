#include "kvwire/compress/scorer.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"

namespace kvwire::compress {

kernels::StridedRows LayerInput::KeyRows(int kv_head) const {
  return {keys + static_cast<int64_t>(kv_head) * head_dim, int64_t{n_kv_heads} * head_dim, n_tokens};
}

kernels::StridedRows LayerInput::ValueRows(int kv_head) const {
  return {values + static_cast<int64_t>(kv_head) * head_dim, int64_t{n_kv_heads} * head_dim, n_tokens};
}

absl::Status LayerInput::Validate(const CompressionSpec& spec) const {
  if (n_tokens <= 0 || n_heads <= 0 || n_kv_heads <= 0 || head_dim <= 0 || n_heads % n_kv_heads) {
    return absl::InvalidArgumentError(absl::StrCat("layer ", layer, ": bad shape L=", n_tokens,
                                                   " heads=", n_heads, " kv_heads=", n_kv_heads,
                                                   " head_dim=", head_dim));
  }
  if (keys == nullptr || values == nullptr || queries == nullptr || !(scale > 0)) {
    return absl::InvalidArgumentError(absl::StrCat("layer ", layer, ": missing keys/values/queries"));
  }
  if (n_queries < spec.QueryRows(n_tokens) || n_queries > n_tokens) {
    return absl::InvalidArgumentError(absl::StrCat("layer ", layer, ": ", spec.ToString(), " needs ",
                                                   spec.QueryRows(n_tokens), " query rows, got ",
                                                   n_queries));
  }
  if (spec.critical && (wo == nullptr || hidden <= 0)) {
    return absl::InvalidArgumentError("+critical needs the layer's output projection (wo)");
  }
  if (spec.external_scores()) return ValidateExternalScores(spec);
  return absl::OkStatus();
}

absl::Status LayerInput::ValidateExternalScores(const CompressionSpec& spec) const {
  if (external_scores == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "layer ", layer, ": the ", spec.ToString(),
        " method scores with external scores (fp32 [n_kv_heads][L] in LayerInput::external_scores: "
        "reconstruction scores or gate scores) and none were given"));
  }
  const int64_t n = n_tokens * n_kv_heads;
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isfinite(external_scores[i])) {
      return absl::InvalidArgumentError(absl::StrCat("layer ", layer, ": external score ", i,
                                                     " is not finite (", external_scores[i], ")"));
    }
  }
  return absl::OkStatus();
}

kernels::QueryBlock WindowQueries(const LayerInput& in, std::vector<int32_t>* positions) {
  positions->resize(in.n_queries);
  std::iota(positions->begin(), positions->end(), static_cast<int32_t>(in.n_tokens - in.n_queries));
  return {in.queries, in.n_queries, positions->data(), in.n_heads, in.n_kv_heads, in.head_dim, in.scale};
}

kernels::QueryBlock LastRows(kernels::QueryBlock qb, int64_t rows) {
  const int64_t skip = qb.n_queries - rows;
  qb.q += skip * qb.n_heads * qb.head_dim;
  qb.positions += skip;
  qb.n_queries = rows;
  return qb;
}

namespace {

void ScoreHead(const CompressionSpec& spec, const LayerInput& in, int h,
               const kernels::QueryBlock& all_queries, const std::vector<int32_t>& key_pos,
               HeadScores& out, kernels::ThreadPool* pool) {
  const int64_t L = in.n_tokens;
  out.score.assign(L, 0.0f);
  std::vector<float> raw(L);
  kernels::HeadAttentionStats stats;
  const bool merging = spec.merge != MergeMode::kNone;
  if (merging) out.log_score.resize(L);
  switch (spec.scorer) {
    case ScorerKind::kWindow:
    case ScorerKind::kRecon:
    case ScorerKind::kGate:
      if (spec.external_scores()) {
        const float* row = in.external_scores + static_cast<int64_t>(h) * L;
        out.score.assign(row, row + L);
      } else {
        for (int64_t i = 0; i < L; ++i) {
          out.score[i] = static_cast<float>(i + 1) / static_cast<float>(L);
        }
      }
      if (merging) {
        stats.log_score = out.log_score.data();
        kernels::AttentionStats(LastRows(all_queries, spec.QueryRows(L)), h, in.KeyRows(h),
                                key_pos.data(), stats, pool);
      }
      return;
    case ScorerKind::kH2O:
      stats.sum_prob = out.score.data();
      break;
    case ScorerKind::kSnapKV:
      stats.mean_prob = raw.data();
      break;
    case ScorerKind::kDefensive:
      stats.max_prob = raw.data();
      break;
  }
  // For h2o the log-scores still come from the observation window, computed separately below.
  const bool h2o = spec.scorer == ScorerKind::kH2O;
  if (merging && !h2o) stats.log_score = out.log_score.data();
  kernels::AttentionStats(h2o ? all_queries : LastRows(all_queries, spec.QueryRows(L)), h,
                          in.KeyRows(h), key_pos.data(), stats, pool);
  if (merging && h2o) {
    kernels::HeadAttentionStats window_stats;
    window_stats.log_score = out.log_score.data();
    kernels::AttentionStats(LastRows(all_queries, std::min<int64_t>(spec.window, L)), h,
                            in.KeyRows(h), key_pos.data(), window_stats, pool);
  }
  if (h2o) return;
  kernels::AveragePool1d(raw.data(), L, spec.pool_kernel, out.score.data());
  if (spec.scorer == ScorerKind::kDefensive) {
    const float mean = std::accumulate(out.score.begin(), out.score.end(), 0.0f) / static_cast<float>(L);
    for (float& s : out.score) s = std::max(s, mean);
  }
}

}  // namespace

absl::StatusOr<std::vector<HeadScores>> ScoreLayer(const CompressionSpec& spec,
                                                   const LayerInput& input,
                                                   kernels::ThreadPool* pool) {
  if (auto s = input.Validate(spec); !s.ok()) return s;
  std::vector<int32_t> query_pos, key_pos(input.n_tokens);
  std::iota(key_pos.begin(), key_pos.end(), 0);
  const kernels::QueryBlock queries = WindowQueries(input, &query_pos);
  std::vector<HeadScores> scores(input.n_kv_heads);
  for (int h = 0; h < input.n_kv_heads; ++h) {
    ScoreHead(spec, input, h, queries, key_pos, scores[h], pool);
    if (spec.critical) {
      scores[h].value_norm.resize(input.n_tokens);
      kernels::ValueOutputNorms(input.ValueRows(h), input.wo, input.hidden, input.n_heads,
                                input.n_kv_heads, input.head_dim, h, scores[h].value_norm.data(),
                                pool);
    }
  }
  return scores;
}

}  // namespace kvwire::compress
