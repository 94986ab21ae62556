// kvwire/compress/compressor.h — the compression pipeline: score -> allocate -> select -> merge.
//
// A Compressor is built from a spec (spec.h) and a kept fraction b in (0, 1]. With the uniform
// and adaptive allocators it works layer by layer, so a prefill node can stream each layer as
// soon as it is compressed; the global allocator needs every layer scored first (CompressAll).
// b = 1 returns the uncompressed layer bit for bit, whatever the method.
//
// Thread-safety: a Compressor is immutable after Create; calls may run concurrently if their
// pools differ (or pool is null). Errors: INVALID_ARGUMENT for bad specs, budgets or shapes.
#ifndef KVWIRE_COMPRESS_COMPRESSOR_H_
#define KVWIRE_COMPRESS_COMPRESSOR_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kvwire/cache/kv_cache.h"
#include "kvwire/compress/merge.h"
#include "kvwire/compress/scorer.h"
#include "kvwire/compress/spec.h"

namespace kvwire::compress {

struct LayerStats {
  int layer = 0;
  int64_t prompt_length = 0;
  int64_t kept = 0;  // entries in the compressed layer, all heads
  MergeCounts merge;
  std::vector<int64_t> head_budgets;
  double seconds = 0;  // score + allocate + select + merge
};

class Compressor {
 public:
  static absl::StatusOr<Compressor> Create(const CompressionSpec& spec, float kept_fraction);

  const CompressionSpec& spec() const { return spec_; }
  float kept_fraction() const { return kept_fraction_; }
  // False for the global allocator, which must see every layer before choosing.
  bool streams_layers() const { return spec_.allocator != AllocatorKind::kGlobal; }
  // Query rows (trailing prompt positions) a LayerInput must carry.
  int64_t QueryRows(int64_t prompt_length) const { return spec_.QueryRows(prompt_length); }

  // One layer; FAILED_PRECONDITION for the global allocator.
  absl::StatusOr<cache::LayerCache> CompressLayer(const LayerInput& input,
                                                  kernels::ThreadPool* pool,
                                                  LayerStats* stats = nullptr) const;
  // Every layer (any allocator). inputs[l].layer must be l.
  absl::StatusOr<std::vector<cache::LayerCache>> CompressAll(absl::Span<const LayerInput> inputs,
                                                             kernels::ThreadPool* pool,
                                                             std::vector<LayerStats>* stats = nullptr) const;

 private:
  Compressor(const CompressionSpec& spec, float kept_fraction)
      : spec_(spec), kept_fraction_(kept_fraction) {}
  cache::LayerCache Build(const LayerInput& input, absl::Span<const HeadScores> scores,
                          absl::Span<const int64_t> budgets, kernels::ThreadPool* pool,
                          LayerStats* stats) const;

  CompressionSpec spec_;
  float kept_fraction_;
};

// The uncompressed layer (every entry, log-vote 0), as the budget-1 path returns it.
cache::LayerCache FullLayer(const LayerInput& input);

}  // namespace kvwire::compress

#endif  // KVWIRE_COMPRESS_COMPRESSOR_H_
