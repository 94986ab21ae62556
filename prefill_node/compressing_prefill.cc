#include "prefill_node/compressing_prefill.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "kvwire/base/status.h"
#include "kvwire/compress/select.h"
#include "kvwire/kernels/quant.h"
#include "prefill_node/stage_clock.h"

namespace kvwire::prefill {
struct CompressingPrefill::HeldLayer {
  std::vector<float> keys, values, queries;
  std::vector<float> scores;  // external scores, fp32 [n_kv_heads][L]; empty when not used
  compress::LayerInput input;
};

CompressingPrefill::HeldLayer CompressingPrefill::Hold(const runtime::PrefillLayer& pl,
                                                       const compress::LayerInput& in,
                                                       std::vector<float> scores) {
  const runtime::ModelConfig& cfg = runner_->model().config();
  HeldLayer h;
  const size_t kv = static_cast<size_t>(pl.n_tokens) * cfg.n_kv_heads * cfg.head_dim;
  h.keys.assign(pl.keys, pl.keys + kv);
  h.values.assign(pl.values, pl.values + kv);
  h.queries.assign(pl.window_queries,
                   pl.window_queries + static_cast<size_t>(pl.window) * cfg.n_heads * cfg.head_dim);
  h.scores = std::move(scores);
  h.input = in;
  h.input.keys = h.keys.data();
  h.input.values = h.values.data();
  h.input.queries = h.queries.data();
  if (!h.scores.empty()) h.input.external_scores = h.scores.data();
  return h;
}

CompressingPrefill::CompressingPrefill(runtime::Runner* runner)
    : runner_(runner), wo_(runner->model().config().n_layers) {}

std::vector<float> DequantizeOutputProjection(const runtime::Model& model, int layer) {
  const kernels::WeightView& w = model.layer(layer).wo;
  std::vector<float> wo(w.rows * w.cols);
  const size_t row_bytes = kernels::RowBytes(w.type, w.cols);
  for (int64_t r = 0; r < w.rows; ++r) {
    kernels::DequantizeRow(w.type, static_cast<const uint8_t*>(w.data) + r * row_bytes,
                           wo.data() + r * w.cols, w.cols);
  }
  return wo;
}

const float* CompressingPrefill::OutputProjection(int layer) {
  if (wo_[layer].empty()) wo_[layer] = DequantizeOutputProjection(runner_->model(), layer);
  return wo_[layer].data();
}

compress::LayerInput CompressingPrefill::Input(const runtime::PrefillLayer& pl, bool critical) {
  const runtime::ModelConfig& cfg = runner_->model().config();
  compress::LayerInput in;
  in.layer = pl.layer;
  in.n_tokens = pl.n_tokens;
  in.n_heads = cfg.n_heads;
  in.n_kv_heads = cfg.n_kv_heads;
  in.head_dim = cfg.head_dim;
  in.scale = 1.0f / std::sqrt(static_cast<float>(cfg.head_dim));
  in.keys = pl.keys;
  in.values = pl.values;
  in.queries = pl.window_queries;
  in.n_queries = pl.window;
  if (critical) {
    in.wo = OutputProjection(pl.layer);
    in.hidden = cfg.hidden;
  }
  return in;
}

absl::StatusOr<std::vector<float>> CompressingPrefill::GateScores(const runtime::PrefillLayer& pl) {
  const runtime::ModelConfig& cfg = runner_->model().config();
  KVWIRE_ASSIGN_OR_RETURN(std::vector<float> scores, gate_scorer_(pl));
  const size_t want = static_cast<size_t>(pl.n_tokens) * cfg.n_kv_heads;
  if (scores.size() != want) {
    return absl::InvalidArgumentError(absl::StrCat("gate scores of layer ", pl.layer, " hold ",
                                                   scores.size(),
                                                   " values, want n_kv_heads * L = ", want));
  }
  return scores;
}

absl::Status CompressingPrefill::ReconScore(absl::Span<const int32_t> prompt, cache::KvCache* full,
                                            std::vector<std::vector<float>>* scores) {
  if (recon_options_.prompt.empty()) {
    KVWIRE_ASSIGN_OR_RETURN(recon_options_.prompt,
                            compress::BuildReconPrompt(runner_->model(), recon_options_.turn));
  }
  KVWIRE_ASSIGN_OR_RETURN(*scores,
                          compress::ReconScoresForCache(*runner_, runner_->model(), prompt, full,
                                                        recon_options_, runner_->pool()));
  return absl::OkStatus();
}

absl::StatusOr<PrefillResult> CompressingPrefill::Run(absl::Span<const int32_t> prompt,
                                                      const compress::Compressor& compressor,
                                                      const LayerSink& sink) {
  const compress::CompressionSpec& spec = compressor.spec();
  const int64_t L = static_cast<int64_t>(prompt.size());
  // At budget 1 every method returns the uncompressed cache: no external scores are needed.
  const bool full_budget = compress::HeadBudget(compressor.kept_fraction(), L) >= L;
  const bool gate = spec.scorer == compress::ScorerKind::kGate && !full_budget;
  const bool recon = spec.scorer == compress::ScorerKind::kRecon && !full_budget;
  if (gate && !gate_scorer_) {
    return absl::InvalidArgumentError(
        absl::StrCat("the ", spec.ToString(),
                     " method needs gate scores per layer and none are "
                     "configured (CompressingPrefill::set_gate_scorer)"));
  }
  PrefillResult result;
  result.original_length = static_cast<int32_t>(L);
  std::vector<HeldLayer> held;  // every layer, when not streaming
  const bool streaming = compressor.streams_layers() && !recon;
  auto hook = [&](const runtime::PrefillLayer& pl) -> absl::Status {
    const auto start = Clock::now();
    compress::LayerInput in = Input(pl, spec.critical);
    std::vector<float> gate_scores;
    if (gate) {
      KVWIRE_ASSIGN_OR_RETURN(gate_scores, GateScores(pl));
      in.external_scores = gate_scores.data();
      result.external_score_seconds += SecondsSince(start);
    }
    if (!streaming) {
      held.push_back(Hold(pl, in, std::move(gate_scores)));
      result.compress_seconds += SecondsSince(start);
      return absl::OkStatus();
    }
    compress::LayerStats stats;
    KVWIRE_ASSIGN_OR_RETURN(cache::LayerCache layer,
                            compressor.CompressLayer(in, runner_->pool(), &stats));
    result.compress_seconds += SecondsSince(start);
    result.kept_entries += stats.kept;
    const auto sink_start = Clock::now();
    absl::Status sunk = sink(pl.layer, std::move(layer), stats);
    result.sink_seconds += SecondsSince(sink_start);
    return sunk;
  };
  if (device_ != nullptr && !gate && !recon && device_->CompressesOnDevice(compressor).ok()) {
    // Scored, selected and merged where the layer was computed: only kept entries reach the host.
    DevicePrefillTimes times;
    const auto start = Clock::now();
    KVWIRE_ASSIGN_OR_RETURN(result.last_logits,
                            device_->RunCompressed(prompt, compressor, sink, &times));
    result.compress_seconds = times.compress_seconds;
    result.sink_seconds = times.sink_seconds;
    result.kept_entries = times.kept_entries;
    result.prefill_seconds = SecondsSince(start) - result.compress_seconds - result.sink_seconds;
    result.compressed_on_device = true;
    return result;
  }
  runtime::ForwardOptions options;
  options.window = static_cast<int>(compressor.QueryRows(L));
  options.on_layer = hook;
  cache::KvCache full;
  const auto start = Clock::now();
  // On a device the hook sees host copies of each layer; the whole cache comes back only for
  // recon, the one method that reads it.
  KVWIRE_ASSIGN_OR_RETURN(result.last_logits,
                          device_ != nullptr
                              ? device_->Prefill(prompt, options, recon ? &full : nullptr)
                              : runner_->Prefill(prompt, options, &full));
  result.prefill_seconds = SecondsSince(start) - result.compress_seconds - result.sink_seconds;
  if (streaming) return result;

  KVWIRE_RETURN_IF_ERROR(CompressHeld(prompt, compressor, recon, &full, &held, sink, &result));
  return result;
}

absl::Status CompressingPrefill::CompressHeld(absl::Span<const int32_t> prompt,
                                              const compress::Compressor& compressor, bool recon,
                                              cache::KvCache* full, std::vector<HeldLayer>* held,
                                              const LayerSink& sink, PrefillResult* result) {
  const auto start = Clock::now();
  if (recon) {
    std::vector<std::vector<float>> scores;
    KVWIRE_RETURN_IF_ERROR(ReconScore(prompt, full, &scores));
    result->external_score_seconds += SecondsSince(start);
    for (size_t l = 0; l < held->size(); ++l) {
      (*held)[l].scores = std::move(scores[l]);
      (*held)[l].input.external_scores = (*held)[l].scores.data();
    }
  }
  std::vector<compress::LayerInput> inputs;
  for (const HeldLayer& h : *held) inputs.push_back(h.input);
  std::vector<compress::LayerStats> stats;
  KVWIRE_ASSIGN_OR_RETURN(std::vector<cache::LayerCache> layers,
                          compressor.CompressAll(inputs, runner_->pool(), &stats));
  result->compress_seconds += SecondsSince(start);
  for (size_t l = 0; l < layers.size(); ++l) {
    result->kept_entries += stats[l].kept;
    KVWIRE_RETURN_IF_ERROR(sink(static_cast<int>(l), std::move(layers[l]), stats[l]));
  }
  return absl::OkStatus();
}

absl::StatusOr<cache::KvCache> CompressingPrefill::CompressPrompt(
    absl::Span<const int32_t> prompt, const compress::Compressor& compressor,
    PrefillResult* result) {
  const runtime::ModelConfig& cfg = runner_->model().config();
  cache::KvCache cache = cache::KvCache::Empty({cfg.n_layers, cfg.n_kv_heads, cfg.head_dim},
                                               static_cast<int32_t>(prompt.size()));
  auto sink = [&cache](int layer, cache::LayerCache layer_cache, const compress::LayerStats&) {
    cache.layers[layer] = std::move(layer_cache);
    return absl::OkStatus();
  };
  KVWIRE_ASSIGN_OR_RETURN(PrefillResult r, Run(prompt, compressor, sink));
  if (result != nullptr) *result = std::move(r);
  return cache;
}

}  // namespace kvwire::prefill
