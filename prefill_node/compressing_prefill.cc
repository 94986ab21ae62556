#include "prefill_node/compressing_prefill.h"

#include <chrono>
#include <cmath>

#include "kvwire/base/status.h"
#include "kvwire/kernels/quant.h"

namespace kvwire::prefill {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// Keeps a layer's hook data alive until the global allocator has seen every layer.
struct HeldLayer {
  std::vector<float> keys, values, queries;
  compress::LayerInput input;
};

}  // namespace

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

absl::StatusOr<PrefillResult> CompressingPrefill::Run(absl::Span<const int32_t> prompt,
                                                      const compress::Compressor& compressor,
                                                      const LayerSink& sink) {
  const runtime::ModelConfig& cfg = runner_->model().config();
  const int64_t L = static_cast<int64_t>(prompt.size());
  PrefillResult result;
  result.original_length = static_cast<int32_t>(L);
  std::vector<HeldLayer> held;  // global allocator only
  const bool streaming = compressor.streams_layers();
  auto hook = [&](const runtime::PrefillLayer& pl) -> absl::Status {
    const auto start = Clock::now();
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
    if (compressor.spec().critical) {
      in.wo = OutputProjection(pl.layer);
      in.hidden = cfg.hidden;
    }
    if (!streaming) {
      HeldLayer& h = held.emplace_back();
      const size_t kv = static_cast<size_t>(L) * cfg.n_kv_heads * cfg.head_dim;
      h.keys.assign(pl.keys, pl.keys + kv);
      h.values.assign(pl.values, pl.values + kv);
      h.queries.assign(pl.window_queries,
                       pl.window_queries + static_cast<size_t>(pl.window) * cfg.n_heads * cfg.head_dim);
      h.input = in;
      h.input.keys = h.keys.data();
      h.input.values = h.values.data();
      h.input.queries = h.queries.data();
      result.compress_seconds += SecondsSince(start);
      return absl::OkStatus();
    }
    compress::LayerStats stats;
    KVWIRE_ASSIGN_OR_RETURN(cache::LayerCache layer, compressor.CompressLayer(in, runner_->pool(), &stats));
    result.compress_seconds += SecondsSince(start);
    result.kept_entries += stats.kept;
    const auto sink_start = Clock::now();
    absl::Status sunk = sink(pl.layer, std::move(layer), stats);
    result.sink_seconds += SecondsSince(sink_start);
    return sunk;
  };
  runtime::ForwardOptions options;
  options.window = static_cast<int>(compressor.QueryRows(L));
  options.on_layer = hook;
  cache::KvCache full;
  const auto start = Clock::now();
  KVWIRE_ASSIGN_OR_RETURN(result.last_logits, runner_->Prefill(prompt, options, &full));
  result.prefill_seconds = SecondsSince(start) - result.compress_seconds - result.sink_seconds;
  if (streaming) return result;

  const auto global_start = Clock::now();
  std::vector<compress::LayerInput> inputs;
  for (const HeldLayer& h : held) inputs.push_back(h.input);
  std::vector<compress::LayerStats> stats;
  KVWIRE_ASSIGN_OR_RETURN(std::vector<cache::LayerCache> layers,
                          compressor.CompressAll(inputs, runner_->pool(), &stats));
  result.compress_seconds += SecondsSince(global_start);
  for (size_t l = 0; l < layers.size(); ++l) {
    result.kept_entries += stats[l].kept;
    KVWIRE_RETURN_IF_ERROR(sink(static_cast<int>(l), std::move(layers[l]), stats[l]));
  }
  return result;
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
