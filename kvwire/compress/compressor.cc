#include "kvwire/compress/compressor.h"

#include <chrono>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "kvwire/base/status.h"
#include "kvwire/compress/select.h"

namespace kvwire::compress {
namespace {

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

}  // namespace

absl::StatusOr<Compressor> Compressor::Create(const CompressionSpec& spec, float kept_fraction) {
  KVWIRE_RETURN_IF_ERROR(spec.Validate());
  if (!(kept_fraction > 0.0f && kept_fraction <= 1.0f)) {
    return absl::InvalidArgumentError(
        absl::StrCat("kept fraction must be in (0, 1], got ", kept_fraction));
  }
  return Compressor(spec, kept_fraction);
}

cache::LayerCache FullLayer(const LayerInput& in) {
  cache::LayerCache layer;
  layer.heads.resize(in.n_kv_heads);
  for (int h = 0; h < in.n_kv_heads; ++h) {
    const kernels::StridedRows k = in.KeyRows(h), v = in.ValueRows(h);
    layer.heads[h].Reserve(in.n_tokens, in.head_dim);
    for (int64_t i = 0; i < in.n_tokens; ++i) {
      layer.heads[h].Append(static_cast<int32_t>(i), 0.0f, k.row(i), v.row(i), in.head_dim);
    }
  }
  return layer;
}

cache::LayerCache Compressor::Build(const LayerInput& in, absl::Span<const HeadScores> scores,
                                    absl::Span<const int64_t> budgets, kernels::ThreadPool* pool,
                                    LayerStats* stats) const {
  cache::LayerCache layer;
  layer.heads.resize(in.n_kv_heads);
  MergeCounts counts;
  for (int h = 0; h < in.n_kv_heads; ++h) {
    const std::vector<int32_t> keep = SelectHead(spec_, scores[h], in.n_tokens, budgets[h]);
    layer.heads[h] = BuildHeadSegment(spec_, in, h, scores[h], keep, pool, &counts);
  }
  if (stats) {
    stats->merge = counts;
    stats->head_budgets.assign(budgets.begin(), budgets.end());
    stats->kept = 0;
    for (const auto& seg : layer.heads) stats->kept += static_cast<int64_t>(seg.size());
  }
  return layer;
}

absl::StatusOr<cache::LayerCache> Compressor::CompressLayer(const LayerInput& in,
                                                            kernels::ThreadPool* pool,
                                                            LayerStats* stats) const {
  if (!streams_layers()) {
    return absl::FailedPreconditionError("the global allocator compresses all layers at once");
  }
  const auto start = std::chrono::steady_clock::now();
  const int64_t B = HeadBudget(kept_fraction_, in.n_tokens);
  if (stats) *stats = LayerStats{in.layer, in.n_tokens};
  if (B >= in.n_tokens) {
    cache::LayerCache full = FullLayer(in);
    if (stats) {
      stats->kept = in.n_tokens * in.n_kv_heads;
      stats->head_budgets.assign(in.n_kv_heads, in.n_tokens);
      stats->seconds = Seconds(start);
    }
    return full;
  }
  KVWIRE_ASSIGN_OR_RETURN(const std::vector<HeadScores> scores, ScoreLayer(spec_, in, pool));
  std::vector<int64_t> budgets(in.n_kv_heads, B);
  if (spec_.allocator == AllocatorKind::kAdaptive) {
    budgets = AllocateAdaptive(spec_, scores, in.n_tokens, B);
  }
  cache::LayerCache layer = Build(in, scores, budgets, pool, stats);
  if (stats) stats->seconds = Seconds(start);
  return layer;
}

absl::StatusOr<std::vector<cache::LayerCache>> Compressor::CompressAll(
    absl::Span<const LayerInput> inputs, kernels::ThreadPool* pool,
    std::vector<LayerStats>* stats) const {
  if (stats) stats->assign(inputs.size(), LayerStats{});
  std::vector<cache::LayerCache> out;
  if (streams_layers()) {
    for (size_t l = 0; l < inputs.size(); ++l) {
      KVWIRE_ASSIGN_OR_RETURN(cache::LayerCache layer,
                              CompressLayer(inputs[l], pool, stats ? &(*stats)[l] : nullptr));
      out.push_back(std::move(layer));
    }
    return out;
  }
  const int64_t L = inputs.empty() ? 0 : inputs[0].n_tokens;
  const int64_t B = HeadBudget(kept_fraction_, L);
  std::vector<std::vector<HeadScores>> scores;
  for (const LayerInput& in : inputs) {
    if (in.n_tokens != L) return absl::InvalidArgumentError("layers disagree on the prompt length");
    if (B >= L) {
      out.push_back(FullLayer(in));
      continue;
    }
    KVWIRE_ASSIGN_OR_RETURN(std::vector<HeadScores> s, ScoreLayer(spec_, in, pool));
    scores.push_back(std::move(s));
  }
  if (B >= L) return out;
  const std::vector<std::vector<int64_t>> budgets = AllocateGlobal(spec_, scores, L, B);
  for (size_t l = 0; l < inputs.size(); ++l) {
    LayerStats* st = stats ? &(*stats)[l] : nullptr;
    if (st) *st = LayerStats{inputs[l].layer, L};
    out.push_back(Build(inputs[l], scores[l], budgets[l], pool, st));
  }
  return out;
}

}  // namespace kvwire::compress
