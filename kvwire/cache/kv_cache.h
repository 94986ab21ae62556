// kvwire/cache/kv_cache.h — the compressed-KV data model.
//
// A request's cache is, per layer and per KV head, a ragged segment of entries. Each entry has
// its original prompt position, a log-vote (ALGORITHMS.md §4: lambda = ln p, 0 for an unmerged
// entry; real-valued under the guarded merge), and its post-RoPE key and value. Heads of the same
// layer may hold different numbers of entries (Ada-KV budgets). In memory everything is fp32;
// the wire format chooses fp16/bf16/int8 when packing.
//
// `original_length` is the prompt length before compression: decode positions continue from it,
// never from the compressed length.
//
// Thread-safety: plain values; not synchronised.
#ifndef KVWIRE_CACHE_KV_CACHE_H_
#define KVWIRE_CACHE_KV_CACHE_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/status/status.h"

namespace kvwire::cache {

struct CacheShape {
  int n_layers = 0;
  int n_kv_heads = 0;
  int head_dim = 0;

  bool operator==(const CacheShape&) const = default;
  // INVALID_ARGUMENT unless every dimension is in (0, limit]: layers <= 1024, heads <= 1024,
  // head_dim <= 1024.
  absl::Status Validate() const;
};

// One KV head of one layer. Invariant: positions, log_votes have size n; keys, values have size
// n * head_dim (row-major [n][head_dim]).
struct HeadSegment {
  std::vector<int32_t> positions;  // int32 [n]: original token positions
  std::vector<float> log_votes;    // fp32 [n]: additive logit bias
  std::vector<float> keys;         // fp32 [n][head_dim], post-RoPE
  std::vector<float> values;       // fp32 [n][head_dim]

  size_t size() const { return positions.size(); }
  void Reserve(size_t n, int head_dim);
  void Append(int32_t position, float log_vote, const float* key, const float* value, int head_dim);
  const float* key(size_t i, int head_dim) const { return keys.data() + i * head_dim; }
  const float* value(size_t i, int head_dim) const { return values.data() + i * head_dim; }
  bool operator==(const HeadSegment&) const = default;
};

struct LayerCache {
  std::vector<HeadSegment> heads;  // [n_kv_heads]
  bool operator==(const LayerCache&) const = default;
};

struct KvCache {
  CacheShape shape;
  int32_t original_length = 0;  // prompt length before compression
  std::vector<LayerCache> layers;  // [n_layers]

  // An empty cache of the given shape (every segment empty).
  static KvCache Empty(const CacheShape& shape, int32_t original_length);
  // Total entries over all layers and heads.
  size_t TotalEntries() const;
  // Raw bytes the same entries would occupy as fp16 keys+values (the transfer baseline).
  size_t Fp16KvBytes() const;
  // INVALID_ARGUMENT when the layer/head counts or per-segment array sizes disagree with shape.
  absl::Status Validate() const;
  bool operator==(const KvCache&) const = default;
};

}  // namespace kvwire::cache

#endif  // KVWIRE_CACHE_KV_CACHE_H_
