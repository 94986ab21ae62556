// kvwire/compress/decode_compactor.h — continuous KeepKV merging during decode (ALGORITHMS.md §4).
//
// A decode cache grows by one entry per head per generated token. When a head holds more than
// `max_entries`, the entry with the lowest exponential moving average of attention from recent
// decode queries (sinks and the most recent `spec.window` entries excepted) is merged into the
// entry of the same head whose key is most similar, with the spec's merge rule; the merge weights
// and l(k̄) use a ring of the last `kRecentQueries` decode queries of the layer. Positions of
// surviving entries are unchanged.
//
// With learned gates (UseGates, gate.h), generated entries are also compressed by the ratio the
// request asked for, Fast KVzip-style: each step's attention input is buffered per layer and
// scored in batches of min(16, spec.window) rows (still inside the protected window when they are
// scored, so no decision waits for them); after each batch, of the generated entries that have
// left the window at most ceil(kept_fraction · generated tokens that left the window) stay, the
// lowest gate scores merged into their most similar neighbours. Prompt entries (already chosen by
// the prefill node) carry no gate score and follow the EMA rule above, which still bounds every
// head by `max_entries`.
//
// Use: after each decode step, per layer, call OnStep with that layer's query of the step (and its
// attention input when gates are used).
// Thread-safety: one compactor per request (it holds per-entry state). Errors: INVALID_ARGUMENT
// when the cache's shape changes under it or max_entries cannot hold the protected entries.
#ifndef KVWIRE_COMPRESS_DECODE_COMPACTOR_H_
#define KVWIRE_COMPRESS_DECODE_COMPACTOR_H_

#include <cstdint>
#include <deque>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "kvwire/cache/kv_cache.h"
#include "kvwire/compress/gate.h"
#include "kvwire/compress/spec.h"
#include "kvwire/kernels/compress.h"

namespace kvwire::compress {

class DecodeCompactor {
 public:
  static constexpr int kRecentQueries = 8;

  // `max_entries` per KV head; `decay` of the score EMA (weight of the past).
  DecodeCompactor(const CompressionSpec& spec, int n_heads, int64_t max_entries,
                  float decay = 0.9f);

  // Gate scores for generated entries; `gates` must outlive the compactor and match the model
  // (GateModel::CheckModel); kept_fraction in (0, 1]. `pool` (may be null) runs the batches.
  void UseGates(const GateModel* gates, float kept_fraction, kernels::ThreadPool* pool = nullptr);

  // `query` fp32 [n_heads][head_dim] post-RoPE, the step's query for `layer`; `layer_cache` is
  // that layer, already holding the step's new entry; `attn_input` fp32 [hidden] the step's
  // attention input of `layer` (required after UseGates, else ignored).
  absl::Status OnStep(int layer, const float* query, cache::LayerCache* layer_cache,
                      const float* attn_input = nullptr);

  int64_t merges() const { return merges_; }
  int64_t gate_merges() const { return gate_merges_; }  // of merges(), those chosen by gate score

 private:
  struct HeadState {
    std::vector<float> ema;   // per entry, aligned with the segment
    std::vector<float> gate;  // per entry: gate score of a generated entry, NaN otherwise
  };
  struct LayerState {
    std::vector<HeadState> heads;
    std::deque<std::vector<float>> recent;  // last queries, each [n_heads][head_dim]
    int64_t generated = 0;                  // decode steps seen (gates only)
  };

  void UpdateScores(LayerState& st, const float* query, const cache::LayerCache& layer, int d);
  int64_t LowestEma(const LayerState& st, int h, const cache::HeadSegment& seg) const;
  void MergeOne(LayerState& st, int h, cache::HeadSegment& seg, int d, int64_t victim);
  absl::Status GateStep(int layer, LayerState& st, const float* attn_input,
                        cache::LayerCache* layer_cache, int d);
  void GateEvict(LayerState& st, int h, cache::HeadSegment& seg, int d);
  kernels::QueryBlock RecentBlock(const LayerState& st, std::vector<float>* rows,
                                  std::vector<int32_t>* positions, int n_kv_heads, int d) const;

  CompressionSpec spec_;
  int n_heads_;
  int64_t max_entries_;
  float decay_;
  std::vector<LayerState> layers_;
  int64_t merges_ = 0;
  int64_t gate_merges_ = 0;
  std::unique_ptr<GateRowBuffer> gate_rows_;  // null without gates
  float gate_kept_fraction_ = 1.0f;
  kernels::ThreadPool* gate_pool_ = nullptr;
};

}  // namespace kvwire::compress

#endif  // KVWIRE_COMPRESS_DECODE_COMPACTOR_H_
