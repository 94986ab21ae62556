// kvwire/compress/decode_compactor.h — continuous KeepKV merging during decode (ALGORITHMS.md §4).
//
// A decode cache grows by one entry per head per generated token. When a head holds more than
// `max_entries`, the entry with the lowest exponential moving average of attention from recent
// decode queries (sinks and the most recent `spec.window` entries excepted) is merged into the
// entry of the same head whose key is most similar, with the spec's merge rule; the merge weights
// and l(k̄) use a ring of the last `kRecentQueries` decode queries of the layer. Positions of
// surviving entries are unchanged.
//
// Use: after each decode step, per layer, call OnStep with that layer's query of the step.
// Thread-safety: one compactor per request (it holds per-entry state). Errors: INVALID_ARGUMENT
// when the cache's shape changes under it or max_entries cannot hold the protected entries.
#ifndef KVWIRE_COMPRESS_DECODE_COMPACTOR_H_
#define KVWIRE_COMPRESS_DECODE_COMPACTOR_H_

#include <cstdint>
#include <deque>
#include <vector>

#include "absl/status/status.h"
#include "kvwire/cache/kv_cache.h"
#include "kvwire/compress/spec.h"
#include "kvwire/kernels/compress.h"

namespace kvwire::compress {

class DecodeCompactor {
 public:
  static constexpr int kRecentQueries = 8;

  // `max_entries` per KV head; `decay` of the score EMA (weight of the past).
  DecodeCompactor(const CompressionSpec& spec, int n_heads, int64_t max_entries, float decay = 0.9f);

  // `query` fp32 [n_heads][head_dim] post-RoPE, the step's query for `layer`; `layer_cache` is
  // that layer, already holding the step's new entry.
  absl::Status OnStep(int layer, const float* query, cache::LayerCache* layer_cache);

  int64_t merges() const { return merges_; }

 private:
  struct HeadState {
    std::vector<float> ema;  // per entry, aligned with the segment
  };
  struct LayerState {
    std::vector<HeadState> heads;
    std::deque<std::vector<float>> recent;  // last queries, each [n_heads][head_dim]
  };

  void UpdateScores(LayerState& st, const float* query, const cache::LayerCache& layer, int d);
  void MergeOne(LayerState& st, int h, cache::HeadSegment& seg, int d);
  kernels::QueryBlock RecentBlock(const LayerState& st, std::vector<float>* rows,
                                  std::vector<int32_t>* positions, int n_kv_heads, int d) const;

  CompressionSpec spec_;
  int n_heads_;
  int64_t max_entries_;
  float decay_;
  std::vector<LayerState> layers_;
  int64_t merges_ = 0;
};

}  // namespace kvwire::compress

#endif  // KVWIRE_COMPRESS_DECODE_COMPACTOR_H_
