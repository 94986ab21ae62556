// kvwire/compress/select.h — budget allocation across heads and per-head selection
// (ALGORITHMS.md §2, §3).
//
// Budgets count kept entries per KV head and always include the forced entries: the first
// `sinks` positions and the last `window` positions. When a budget is smaller than sinks +
// window, the window shrinks first, then the sinks.
//
// Thread-safety: pure. Errors: INVALID_ARGUMENT for inconsistent inputs.
#ifndef KVWIRE_COMPRESS_SELECT_H_
#define KVWIRE_COMPRESS_SELECT_H_

#include <cstdint>
#include <vector>

#include "absl/types/span.h"
#include "kvwire/compress/scorer.h"
#include "kvwire/compress/spec.h"

namespace kvwire::compress {

// B = ceil(b * L), clamped to [1, L].
int64_t HeadBudget(float kept_fraction, int64_t prompt_length);

// The forced entries for a head of length L with budget `budget`: [0, sinks) and [L - window, L).
struct ForcedRange {
  int64_t sinks = 0;
  int64_t window = 0;
  bool Contains(int64_t i, int64_t L) const { return i < sinks || i >= L - window; }
  int64_t count() const { return sinks + window; }
};
ForcedRange Forced(const CompressionSpec& spec, int64_t L, int64_t budget);

// Ada-KV: the top H*B scores of the layer (forced entries counted as winners) give c_h per head;
// B_h = round((1 - floor) c_h + floor * B), adjusted so the heads sum to exactly H*B and each
// stays within [forced, L].
std::vector<int64_t> AllocateAdaptive(const CompressionSpec& spec,
                                      absl::Span<const HeadScores> heads, int64_t L, int64_t B);

// One threshold over all layers and heads: budgets[l][h], summing to n_layers * H * B.
std::vector<std::vector<int64_t>> AllocateGlobal(
    const CompressionSpec& spec, absl::Span<const std::vector<HeadScores>> layers, int64_t L,
    int64_t B);

// Keep = forced ∪ top-(budget - forced) by score among the rest; with +critical, the first
// critical_alpha * budget by base score and the rest by (score + 1e-4) * value_norm.
// Returns sorted indices.
std::vector<int32_t> SelectHead(const CompressionSpec& spec, const HeadScores& scores, int64_t L,
                                int64_t budget);

}  // namespace kvwire::compress

#endif  // KVWIRE_COMPRESS_SELECT_H_
