#include "prefill_node/synthetic_prefill.h"

#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kvwire/base/status.h"
#include "prefill_node/stage_clock.h"

namespace kvwire::prefill {
namespace {

// SplitMix64 of a counter: element i of a stream is computed on its own, so threads can fill
// disjoint ranges and still produce the same tensor.
uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Fills `out` with numbers in [-1, 1) from stream `seed`.
void Fill(uint64_t seed, std::vector<float>& out, kernels::ThreadPool* pool) {
  const uint64_t base = Mix(seed);
  kernels::ParallelFor(pool, static_cast<int64_t>(out.size()), 1 << 16,
                       [&](int64_t begin, int64_t end) {
                         for (int64_t i = begin; i < end; ++i) {
                           const uint64_t bits = Mix(base ^ static_cast<uint64_t>(i)) >> 40;
                           out[i] = static_cast<float>(bits) * 0x1p-23f - 1.0f;
                         }
                       });
}

}  // namespace

absl::StatusOr<PrefillResult> RunSyntheticPrefill(const control::SyntheticKv& kv,
                                                  absl::Span<const int32_t> prompt,
                                                  const compress::Compressor& compressor,
                                                  kernels::ThreadPool* pool,
                                                  const LayerSink& sink) {
  if (prompt.empty()) return absl::InvalidArgumentError("synthetic prefill of an empty prompt");
  if (!compressor.streams_layers()) {
    return absl::InvalidArgumentError(
        absl::StrCat("synthetic KV streams layer by layer; method ", compressor.spec().ToString(),
                     " needs every layer first (use the uniform or adaptive allocator)"));
  }
  if (compressor.spec().critical) {
    return absl::InvalidArgumentError(
        "synthetic KV has no output projection for the +critical stage");
  }
  const cache::CacheShape& s = kv.shape;
  const int64_t L = static_cast<int64_t>(prompt.size());
  const int64_t window = std::min<int64_t>(compressor.QueryRows(L), L);
  std::vector<float> keys(static_cast<size_t>(L) * s.n_kv_heads * s.head_dim);
  std::vector<float> values(keys.size());
  std::vector<float> queries(static_cast<size_t>(window) * kv.n_query_heads * s.head_dim);
  PrefillResult result;
  result.original_length = static_cast<int32_t>(L);
  for (int layer = 0; layer < s.n_layers; ++layer) {
    auto start = Clock::now();
    const uint64_t seed = (static_cast<uint64_t>(layer) << 40) ^ (static_cast<uint64_t>(L) << 2);
    Fill(seed | 0, keys, pool);
    Fill(seed | 1, values, pool);
    Fill(seed | 2, queries, pool);
    result.prefill_seconds += SecondsSince(start);

    start = Clock::now();
    compress::LayerInput in;
    in.layer = layer;
    in.n_tokens = L;
    in.n_heads = kv.n_query_heads;
    in.n_kv_heads = s.n_kv_heads;
    in.head_dim = s.head_dim;
    in.scale = 1.0f / std::sqrt(static_cast<float>(s.head_dim));
    in.keys = keys.data();
    in.values = values.data();
    in.queries = queries.data();
    in.n_queries = window;
    compress::LayerStats stats;
    KVWIRE_ASSIGN_OR_RETURN(cache::LayerCache compressed,
                            compressor.CompressLayer(in, pool, &stats));
    result.compress_seconds += SecondsSince(start);
    result.kept_entries += stats.kept;

    start = Clock::now();
    KVWIRE_RETURN_IF_ERROR(sink(layer, std::move(compressed), stats));
    result.sink_seconds += SecondsSince(start);
  }
  return result;
}

}  // namespace kvwire::prefill
